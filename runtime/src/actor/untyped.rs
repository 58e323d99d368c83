//! `UntypedRef`: a reference to an actor whatever its message type, on this node or another.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::exit::ExitReason;
use crate::id::ActorId;
use crate::node::Node;

use super::ActorRef;
use super::cell::{Cell, CellHandle};

/// A reference to an actor of any message type: enough to identify, stop, kill and watch it,
/// and to get its typed [`ActorRef`] back with [`downcast`](UntypedRef::downcast).
///
/// Supervisors hold their children this way. Compared and hashed by the actor's id.
#[derive(Clone)]
pub struct UntypedRef {
    pub(crate) target: UntypedTarget,
}

#[derive(Clone)]
pub(crate) enum UntypedTarget {
    Local(CellHandle),
    Remote(Arc<(ActorId, Node)>),
}

impl UntypedRef {
    pub(crate) fn local(cell: CellHandle) -> Self {
        Self {
            target: UntypedTarget::Local(cell),
        }
    }

    pub(crate) fn remote(id: ActorId, node: Node) -> Self {
        Self {
            target: UntypedTarget::Remote(Arc::new((id, node))),
        }
    }

    pub(crate) fn cell(&self) -> Option<&CellHandle> {
        match &self.target {
            UntypedTarget::Local(cell) => Some(cell),
            UntypedTarget::Remote(_) => None,
        }
    }

    /// A reference to the actor with this id, on this node or another (a remote one is
    /// reached through `node`'s connections). Enough to stop, kill, link to and monitor it,
    /// whatever its message type.
    pub fn from_id(node: &Node, id: &ActorId) -> Self {
        if id.node() == node.id()
            && let Some(cell) = node.inner.cell(id.seq())
        {
            return Self::local(cell);
        }
        Self::remote(id.clone(), node.clone())
    }

    /// The actor's id.
    pub fn id(&self) -> &ActorId {
        match &self.target {
            UntypedTarget::Local(cell) => cell.id(),
            UntypedTarget::Remote(remote) => &remote.0,
        }
    }

    /// The Rust type of the actor (`"remote"` for an actor on another node).
    pub fn type_name(&self) -> &'static str {
        match &self.target {
            UntypedTarget::Local(cell) => (cell.core().type_name)(),
            UntypedTarget::Remote(_) => "remote",
        }
    }

    /// The typed reference, if the actor is local and takes messages of type `M`. (A typed
    /// reference to a remote actor comes from a message or a lookup, which know its type.)
    pub fn downcast<M: Send + 'static>(&self) -> Option<ActorRef<M>> {
        self.cell()?
            .clone()
            .into_any()
            .downcast::<Cell<M>>()
            .ok()
            .map(ActorRef::from_cell)
    }

    /// Stops the actor gracefully with [`ExitReason::Normal`] (see [`ActorRef::stop`]).
    pub fn stop(&self) {
        self.stop_with(ExitReason::Normal);
    }

    /// Stops the actor gracefully with `reason` (see [`ActorRef::stop_with`]).
    pub fn stop_with(&self, reason: ExitReason) {
        match &self.target {
            UntypedTarget::Local(cell) => cell.stop(reason),
            UntypedTarget::Remote(remote) => remote.1.inner.remote.stop(&remote.0, Some(reason)),
        }
    }

    /// Kills the actor (see [`ActorRef::kill`]).
    pub fn kill(&self) {
        match &self.target {
            UntypedTarget::Local(cell) => cell.kill(),
            UntypedTarget::Remote(remote) => remote.1.inner.remote.stop(&remote.0, None),
        }
    }

    /// True until the actor is known to have ended (for a remote actor: while its node is
    /// connected).
    pub fn is_alive(&self) -> bool {
        match &self.target {
            UntypedTarget::Local(cell) => cell.core().is_alive(),
            UntypedTarget::Remote(remote) => remote.1.inner.remote.is_connected(remote.0.node()),
        }
    }

    /// Waits until the actor has ended and returns why.
    pub async fn wait_for_exit(&self) -> ExitReason {
        match &self.target {
            UntypedTarget::Local(cell) => cell.core().wait_for_exit().await,
            UntypedTarget::Remote(remote) => {
                let own = remote.1.id();
                remote.1.inner.remote.wait_for_exit(own, &remote.0).await
            }
        }
    }
}

impl PartialEq for UntypedRef {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for UntypedRef {}

impl Hash for UntypedRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl fmt::Debug for UntypedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UntypedRef({})", self.id())
    }
}

impl<M: Send + 'static> From<&ActorRef<M>> for UntypedRef {
    fn from(actor: &ActorRef<M>) -> Self {
        actor.untyped()
    }
}

impl<M: Send + 'static> From<ActorRef<M>> for UntypedRef {
    fn from(actor: ActorRef<M>) -> Self {
        actor.untyped()
    }
}

impl From<&UntypedRef> for UntypedRef {
    fn from(actor: &UntypedRef) -> Self {
        actor.clone()
    }
}
