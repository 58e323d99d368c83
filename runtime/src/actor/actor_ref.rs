//! `ActorRef<M>`: the handle through which everything talks to an actor.

use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{AskError, TellError};
use crate::exit::ExitReason;
use crate::id::ActorId;
use crate::node::Deadlines;

use super::cell::{AnyCell, Cell, CellHandle};
use super::mailbox::Push;
use super::reply::ReplyTo;
use super::untyped::UntypedRef;

/// A reference to an actor taking messages of type `M`.
///
/// Cheap to clone, `Send + Sync`, compared and hashed by the actor's id. Holding one does not
/// keep the actor running: once the actor stops, sends fail with [`TellError::Dead`] and asks
/// with an [`AskError`].
///
/// # Ordering and delivery
///
/// Messages from one sender to one actor are handled in the order they were sent. Delivery is
/// at most once: a message accepted by the mailbox but not handled when the actor stops is
/// dropped and counted as a dead letter.
pub struct ActorRef<M> {
    pub(crate) cell: Arc<Cell<M>>,
}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn from_cell(cell: Arc<Cell<M>>) -> Self {
        Self { cell }
    }

    pub(crate) fn handle(&self) -> CellHandle {
        self.cell.clone()
    }

    /// The actor's id.
    pub fn id(&self) -> &ActorId {
        &self.cell.id
    }

    /// Sends a message, waiting while the mailbox is full.
    ///
    /// Fails only if the actor has stopped (or is stopping and no longer accepts messages); the
    /// message is handed back in the error.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        let mut slot = Some(msg);
        match poll_fn(|cx| self.cell.mailbox.poll_push(cx, &mut slot)).await {
            Ok(()) => Ok(()),
            Err(message) => Err(self.dead(message)),
        }
    }

    /// Sends a message if the mailbox has room, never waiting.
    pub fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        match self.cell.mailbox.try_push(msg) {
            Push::Accepted => Ok(()),
            Push::Full(message) => Err(TellError::Full {
                actor: self.id().clone(),
                message,
                capacity: self.cell.mailbox.capacity(),
            }),
            Push::Closed(message) => Err(self.dead(message)),
        }
    }

    fn dead(&self, message: M) -> TellError<M> {
        self.cell
            .core
            .node
            .inner
            .dead_letters
            .record(1, self.id(), "the receiver is stopped");
        TellError::Dead {
            actor: self.id().clone(),
            message,
        }
    }

    /// Sends a request built around a [`ReplyTo`] and waits for the reply.
    ///
    /// Always completes: with the reply, or an [`AskError`] when the actor is stopped, stops or
    /// drops the `ReplyTo` before replying, or does not reply within `timeout` (the timeout
    /// covers waiting for mailbox room too, and is checked every 10 ms: see
    /// docs/semantics.md).
    pub async fn ask<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let msg = request(ReplyTo::new(tx));
        let exchange = async {
            if self.tell(msg).await.is_err() {
                return Err(AskError::Dead {
                    actor: self.id().clone(),
                });
            }
            rx.await.map_err(|_| match self.cell.core.exit_reason() {
                Some(reason) => AskError::Stopped {
                    actor: self.id().clone(),
                    reason,
                },
                None => AskError::Dropped {
                    actor: self.id().clone(),
                },
            })
        };
        let mut exchange = std::pin::pin!(exchange);
        let node = &self.cell.core.node.inner;
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

    /// Stops the actor gracefully with [`ExitReason::Normal`]: from this call on its mailbox
    /// accepts no new messages; the actor handles those already queued, stops its children, runs its `stopped` hook and ends.
    pub fn stop(&self) {
        self.stop_with(ExitReason::Normal);
    }

    /// Like [`stop`](Self::stop), with the given exit reason (supervisors use `Shutdown`).
    pub fn stop_with(&self, reason: ExitReason) {
        AnyCell::stop(&*self.cell, reason);
    }

    /// Stops the actor now with [`ExitReason::Killed`]: whatever it is doing is abandoned at its
    /// next `.await`, queued messages are dropped and its `stopped` hook does not run.
    pub fn kill(&self) {
        AnyCell::kill(&*self.cell);
    }

    /// True until the actor has ended.
    pub fn is_alive(&self) -> bool {
        self.cell.core.is_alive()
    }

    /// Waits until the actor has ended and returns why (at once if it already has).
    pub async fn wait_for_exit(&self) -> ExitReason {
        self.cell.core.wait_for_exit().await
    }

    /// This reference without its message type.
    pub fn untyped(&self) -> UntypedRef {
        UntypedRef {
            cell: self.handle(),
        }
    }

    /// Number of messages waiting in the mailbox (not counting a batch being handled).
    pub fn mailbox_len(&self) -> usize {
        self.cell.mailbox.len()
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
            cell: self.cell.clone(),
        }
    }
}

impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell) || self.cell.id == other.cell.id
    }
}

impl<M> Eq for ActorRef<M> {}

impl<M> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.cell.id.hash(state);
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.cell.id)
    }
}
