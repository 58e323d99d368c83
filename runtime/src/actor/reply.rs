//! `ReplyTo<T>`: the one-shot reply channel carried inside a request message.

use std::fmt;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::AskError;
use crate::id::NodeId;
use crate::remote::RemoteReply;

/// Where to send the reply to an `ask`. Put it in the request message; the actor calls
/// [`send`](ReplyTo::send) once. Dropping it unanswered completes the ask with an error at once.
///
/// It crosses nodes inside messages: the reply then travels back to the asking node.
pub struct ReplyTo<T> {
    pub(crate) inner: ReplyInner<T>,
}

pub(crate) enum ReplyInner<T> {
    /// The asker is on this node. The sender sits in a slot so that encoding the request for
    /// another node can move it into the node's table of pending asks.
    Local(Mutex<Option<oneshot::Sender<Result<T, AskError>>>>),
    /// The asker is on another node. Boxed: a local handle is two words, a remote one ten,
    /// and every message type that carries a handle (and the task of every actor that takes
    /// one, which holds a message while handling it) would pay for the larger.
    Remote(Box<RemoteReply<T>>),
}

impl<T> ReplyTo<T> {
    pub(crate) fn local(tx: oneshot::Sender<Result<T, AskError>>) -> Self {
        Self {
            inner: ReplyInner::Local(Mutex::new(Some(tx))),
        }
    }

    /// Sends the reply. Hands the value back if the asker is known to have given up (timed out
    /// or dropped) or, for an asker on another node, if the reply cannot be encoded or the node
    /// is unreachable.
    pub fn send(self, value: T) -> Result<(), T> {
        match self.inner {
            ReplyInner::Local(slot) => match slot.lock().take() {
                Some(tx) => tx.send(Ok(value)).map_err(|rejected| match rejected {
                    Ok(value) => value,
                    Err(_) => unreachable!("only Ok is sent here"),
                }),
                None => Err(value),
            },
            ReplyInner::Remote(remote) => (*remote).send(value),
        }
    }

    /// The node of the asker if it is another node; `None` if it is this one.
    ///
    /// A `ReplyTo` may be passed on inside another message (to the asker's node, say, with
    /// other news for it): it answers the ask from wherever it is sent.
    pub fn origin(&self) -> Option<&NodeId> {
        match &self.inner {
            ReplyInner::Local(_) => None,
            ReplyInner::Remote(remote) => Some(remote.origin()),
        }
    }

    /// True if the asker no longer waits, so the work for the reply can be skipped. (Always
    /// false for an asker on another node: that is not known here.)
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            ReplyInner::Local(slot) => slot.lock().as_ref().is_none_or(|tx| tx.is_closed()),
            ReplyInner::Remote(_) => false,
        }
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            ReplyInner::Local(_) => f
                .debug_struct("ReplyTo")
                .field("closed", &self.is_closed())
                .finish(),
            ReplyInner::Remote(remote) => f.debug_tuple("ReplyTo").field(remote).finish(),
        }
    }
}
