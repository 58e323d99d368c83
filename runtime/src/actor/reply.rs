//! `ReplyTo<T>`: the one-shot reply channel carried inside a request message.

use std::fmt;

use tokio::sync::oneshot;

/// Where to send the reply to an `ask`. Put it in the request message; the actor calls
/// [`send`](ReplyTo::send) once. Dropping it unanswered completes the ask with an error at once.
pub struct ReplyTo<T> {
    tx: oneshot::Sender<T>,
}

impl<T> ReplyTo<T> {
    pub(crate) fn new(tx: oneshot::Sender<T>) -> Self {
        Self { tx }
    }

    /// Sends the reply. Hands the value back if the asker has given up (timed out or dropped).
    pub fn send(self, value: T) -> Result<(), T> {
        self.tx.send(value)
    }

    /// True if the asker no longer waits, so the work for the reply can be skipped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("closed", &self.is_closed())
            .finish()
    }
}
