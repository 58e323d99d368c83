//! `UntypedRef`: a reference to an actor whatever its message type.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::exit::ExitReason;
use crate::id::ActorId;

use super::ActorRef;
use super::cell::{Cell, CellHandle};

/// A reference to an actor of any message type: enough to identify, stop, kill and watch it,
/// and to get its typed [`ActorRef`] back with [`downcast`](UntypedRef::downcast).
///
/// Supervisors hold their children this way. Compared and hashed by the actor's id.
#[derive(Clone)]
pub struct UntypedRef {
    pub(crate) cell: CellHandle,
}

impl UntypedRef {
    /// The actor's id.
    pub fn id(&self) -> &ActorId {
        self.cell.id()
    }

    /// The Rust type of the actor.
    pub fn type_name(&self) -> &'static str {
        (self.cell.core().type_name)()
    }

    /// The typed reference, if the actor takes messages of type `M`.
    pub fn downcast<M: Send + 'static>(&self) -> Option<ActorRef<M>> {
        self.cell
            .clone()
            .into_any()
            .downcast::<Cell<M>>()
            .ok()
            .map(ActorRef::from_cell)
    }

    /// Stops the actor gracefully with [`ExitReason::Normal`] (see [`ActorRef::stop`]).
    pub fn stop(&self) {
        self.cell.stop(ExitReason::Normal);
    }

    /// Stops the actor gracefully with `reason` (see [`ActorRef::stop_with`]).
    pub fn stop_with(&self, reason: ExitReason) {
        self.cell.stop(reason);
    }

    /// Kills the actor (see [`ActorRef::kill`]).
    pub fn kill(&self) {
        self.cell.kill();
    }

    /// True until the actor has ended.
    pub fn is_alive(&self) -> bool {
        self.cell.core().is_alive()
    }

    /// Waits until the actor has ended and returns why.
    pub async fn wait_for_exit(&self) -> ExitReason {
        self.cell.core().wait_for_exit().await
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
