//! System signals: the priority lane of a mailbox.

use crate::exit::ExitReason;
use crate::id::ActorId;

use super::monitor::Down;

/// A system signal. Signals overtake user messages: the actor handles every pending signal
/// before its next user message.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Stop gracefully: accept no new messages, handle those already queued, then stop.
    Stop(ExitReason),
    /// Stop now, dropping what is queued, without running the `stopped` hook. Used only before
    /// the actor's task can be aborted directly (see `Cell::kill`).
    Kill,
    /// A linked actor exited.
    Exit { from: ActorId, reason: ExitReason },
    /// A monitored actor exited.
    Down(Down),
    /// A child finished; wakes a parent waiting for its children to stop.
    ChildTerminated,
}
