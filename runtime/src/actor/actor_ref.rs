//! `ActorRef<M>`: the handle through which everything talks to an actor, on this node or
//! another.

use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{AskError, TellError};
use crate::exit::ExitReason;
use crate::id::ActorId;
use crate::node::{Deadlines, Node};
use crate::remote::RemoteRef;

use super::cell::{Cell, CellHandle};
use super::mailbox::Push;
use super::reply::ReplyTo;
use super::untyped::UntypedRef;

/// A reference to an actor taking messages of type `M`, on this node or another.
///
/// Cheap to clone, `Send + Sync`, compared and hashed by the actor's id, and used the same way
/// whether the actor is local or remote. Holding one does not keep the actor running: once the
/// actor stops, sends fail with [`TellError::Dead`] and asks with an [`AskError`].
///
/// A reference can travel inside messages to other nodes when `M` can (`M: Serialize +
/// DeserializeOwned`, see [`RemoteMessage`](crate::remote::RemoteMessage)).
///
/// # Ordering and delivery
///
/// Messages from one sender to one actor are handled in the order they were sent, locally and
/// across nodes. Delivery is at most once: a message accepted but not handled when the actor
/// stops is dropped and counted as a dead letter.
pub struct ActorRef<M> {
    pub(crate) target: Target<M>,
}

pub(crate) enum Target<M> {
    Local(Arc<Cell<M>>),
    Remote(Arc<RemoteRef<M>>),
}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn from_cell(cell: Arc<Cell<M>>) -> Self {
        Self {
            target: Target::Local(cell),
        }
    }

    pub(crate) fn from_remote(remote: RemoteRef<M>) -> Self {
        Self {
            target: Target::Remote(Arc::new(remote)),
        }
    }

    /// The local cell, if the actor is on this node.
    pub(crate) fn local(&self) -> Option<&Arc<Cell<M>>> {
        match &self.target {
            Target::Local(cell) => Some(cell),
            Target::Remote(_) => None,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> &ActorId {
        match &self.target {
            Target::Local(cell) => &cell.id,
            Target::Remote(remote) => &remote.id,
        }
    }

    /// True if the actor runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// Sends a message, waiting while the mailbox (or, for a remote actor, the connection's
    /// outgoing queue) is full.
    ///
    /// Fails if the actor has stopped (or is stopping and no longer accepts messages), or its
    /// node cannot be reached; the message is handed back in the error.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        match &self.target {
            // Room at once, as a rule: the wait is set up only when the mailbox is full.
            Target::Local(cell) => match cell.mailbox.try_push(msg) {
                Push::Accepted => Ok(()),
                Push::Closed(message) => Err(dead(cell, message)),
                Push::Full(message) => match cell.mailbox.push(message).await {
                    Ok(()) => Ok(()),
                    Err(message) => Err(dead(cell, message)),
                },
            },
            Target::Remote(remote) => remote.tell(msg).await,
        }
    }

    /// Sends a message if there is room, never waiting.
    pub fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        match &self.target {
            Target::Local(cell) => match cell.mailbox.try_push(msg) {
                Push::Accepted => Ok(()),
                Push::Full(message) => Err(TellError::Full {
                    actor: cell.id.clone(),
                    message,
                    capacity: cell.mailbox.capacity(),
                }),
                Push::Closed(message) => Err(dead(cell, message)),
            },
            Target::Remote(remote) => remote.try_tell(msg),
        }
    }

    /// Sends a request built around a [`ReplyTo`] and waits for the reply.
    ///
    /// Always completes: with the reply, or an [`AskError`] when the actor is stopped, stops or
    /// drops the `ReplyTo` before replying, refuses the request (a message of the wrong type
    /// for a remote actor), its node goes down, the connection that carried the request ends
    /// before the reply came, or it does not reply within `timeout` (the timeout covers
    /// waiting for room too, and is checked every 10 ms: see docs/semantics.md).
    pub async fn ask<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let deadline = super::deadline_after(timeout);
        let (tx, rx) = oneshot::channel();
        let msg = request(ReplyTo::local(tx));
        let exchange = async {
            if let Err(err) = self.tell(msg).await {
                return Err(match err {
                    TellError::Unreachable { actor, reason, .. } => {
                        AskError::Unreachable { actor, reason }
                    }
                    other => AskError::Dead {
                        actor: other.actor().clone(),
                    },
                });
            }
            match rx.await {
                Ok(outcome) => outcome,
                Err(_) => Err(
                    match self.local().and_then(|cell| cell.core.exit_reason()) {
                        Some(reason) => AskError::Stopped {
                            actor: self.id().clone(),
                            reason,
                        },
                        None => AskError::Dropped {
                            actor: self.id().clone(),
                        },
                    },
                ),
            }
        };
        let mut exchange = std::pin::pin!(exchange);
        let node = &self.node().inner;
        let mut deadline_key = DeadlineKey {
            deadlines: &node.deadlines,
            key: None,
        };
        poll_fn(|cx| {
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // Registered only once the reply is not there at once.
            let expired = match deadline_key.key {
                None => {
                    deadline_key.key =
                        Some(node.deadlines.register(&node.runtime, deadline, cx.waker()));
                    false
                }
                Some(key) => node.deadlines.expired(key, cx.waker()),
            };
            if expired {
                return Poll::Ready(Err(AskError::Timeout {
                    actor: self.id().clone(),
                    after: timeout,
                }));
            }
            Poll::Pending
        })
        .await
    }

    /// The node this reference lives on (the local node, also for remote actors).
    fn node(&self) -> &Node {
        match &self.target {
            Target::Local(cell) => &cell.core.node,
            Target::Remote(remote) => &remote.node,
        }
    }

    /// Stops the actor gracefully with [`ExitReason::Normal`]: from this call on its mailbox
    /// accepts no new messages; the actor handles those already queued, stops its children,
    /// runs its `stopped` hook and ends. For a remote actor the request travels to its node.
    pub fn stop(&self) {
        self.stop_with(ExitReason::Normal);
    }

    /// Like [`stop`](Self::stop), with the given exit reason (supervisors use `Shutdown`).
    pub fn stop_with(&self, reason: ExitReason) {
        self.untyped().stop_with(reason);
    }

    /// Stops the actor now with [`ExitReason::Killed`]: whatever it is doing is abandoned at its
    /// next `.await`, queued messages are dropped and its `stopped` hook does not run.
    pub fn kill(&self) {
        self.untyped().kill();
    }

    /// True until the actor is known to have ended (for a remote actor: until its node is
    /// known to be down or its end was reported).
    pub fn is_alive(&self) -> bool {
        self.untyped().is_alive()
    }

    /// Waits until the actor has ended and returns why (at once if it already has). For a
    /// local actor it returns only once the actor's end has been told to its links, monitors
    /// and parent, so a supervisor has the exit signal queued by then. For a remote actor
    /// this sets a monitor on its node; if the node goes down the reason is
    /// [`ExitReason::NodeDown`].
    pub async fn wait_for_exit(&self) -> ExitReason {
        self.untyped().wait_for_exit().await
    }

    /// This reference without its message type.
    pub fn untyped(&self) -> UntypedRef {
        match &self.target {
            Target::Local(cell) => UntypedRef::local(cell.clone()),
            Target::Remote(remote) => UntypedRef::remote(remote.id.clone(), remote.node.clone()),
        }
    }

    pub(crate) fn handle(&self) -> Option<CellHandle> {
        self.local().map(|cell| cell.clone() as CellHandle)
    }

    /// Number of messages waiting in the mailbox (not counting a batch being handled); 0 for a
    /// remote actor.
    pub fn mailbox_len(&self) -> usize {
        self.local().map_or(0, |cell| cell.mailbox.len())
    }
}

fn dead<M>(cell: &Arc<Cell<M>>, message: M) -> TellError<M>
where
    M: Send + 'static,
{
    cell.core
        .node
        .inner
        .dead_letters
        .record(1, &cell.id, "the receiver is stopped");
    TellError::Dead {
        actor: cell.id.clone(),
        message,
    }
}

/// Removes an ask's deadline however the ask ends.
struct DeadlineKey<'a> {
    deadlines: &'a Deadlines,
    key: Option<usize>,
}

impl Drop for DeadlineKey<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.deadlines.remove(key);
        }
    }
}

impl<M> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        Self {
            target: match &self.target {
                Target::Local(cell) => Target::Local(cell.clone()),
                Target::Remote(remote) => Target::Remote(remote.clone()),
            },
        }
    }
}

impl<M> ActorRef<M> {
    fn raw_id(&self) -> &ActorId {
        match &self.target {
            Target::Local(cell) => &cell.id,
            Target::Remote(remote) => &remote.id,
        }
    }
}

impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.raw_id() == other.raw_id()
    }
}

impl<M> Eq for ActorRef<M> {}

impl<M> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw_id().hash(state);
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.raw_id())
    }
}
