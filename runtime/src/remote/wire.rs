//! Frames of remote messaging: user traffic on data streams, signals on the control stream.

use serde::{Deserialize, Serialize};

use crate::exit::ExitReason;
use crate::id::ActorId;

/// A data-stream frame. It borrows from the frame it is decoded from (and from the buffers
/// it is encoded from): no allocation per message for the type name and payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Data<'a> {
    /// A message for actor `to` (a sequence number on the receiving node).
    Tell {
        /// The receiver.
        to: u64,
        /// The Rust type name of the message, checked against the receiver's protocol.
        msg_type: &'a str,
        /// The message, MessagePack.
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
        /// The ask this message carries the reply handle of, so that a refusal reaches the
        /// asker even when the message cannot be decoded.
        ask: Option<u64>,
        /// The asks of the message's further reply handles, after `ask`, refused with it.
        /// Absent when there are none, so a node of an earlier build of this version (which
        /// ignores it) still reads the frame.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more_asks: Vec<u64>,
    },
    /// The outcome of an ask made from the receiving node.
    Reply {
        /// The ask.
        ask: u64,
        /// What came of it.
        #[serde(borrow)]
        outcome: Outcome<'a>,
    },
    /// Start an actor of a module registered on the receiving node with these (MessagePack)
    /// arguments; answered with the signal [`RemoteSignal::Spawned`]. A data frame because
    /// its arguments may take up to a frame: on the control stream they would hold heartbeats
    /// and signals back for as long as they take to send.
    Spawn {
        /// Numbers the answer.
        request: u64,
        /// The module's name.
        module: &'a str,
        /// Its arguments.
        #[serde(with = "serde_bytes")]
        args: &'a [u8],
    },
}

/// What came of a remote ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<'a> {
    /// The reply, MessagePack.
    Value(#[serde(with = "serde_bytes")] &'a [u8]),
    /// The actor dropped the reply handle without replying.
    Dropped,
    /// The request was refused (wrong type, undecodable, full mailbox), with the reason.
    Refused(std::borrow::Cow<'a, str>),
    /// No such actor (it has stopped, or never existed).
    NoActor,
}

/// The most of an exit reason's text a signal carries to another node: every signal fits
/// the smallest frame limit a node takes ([`MIN_MAX_FRAME`](crate::cluster::MIN_MAX_FRAME)),
/// whatever a failing actor said. A signal too large for its peer would be dropped, and a
/// monitor or link never fire.
pub(crate) const MAX_REASON_TEXT: usize = 4 * 1024;

/// A system signal between nodes (control stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteSignal {
    /// Stop actor `to` gracefully with the reason, or kill it when `reason` is `None`.
    Stop {
        /// The actor.
        to: u64,
        /// The exit reason; `None` to kill.
        reason: Option<ExitReason>,
    },
    /// Watch actor `to`; answer with `Down { monitor }` when it ends.
    Monitor {
        /// The actor.
        to: u64,
        /// The monitor, as the watching node numbers them.
        monitor: u64,
    },
    /// Stop watching.
    Demonitor {
        /// The actor.
        to: u64,
        /// The monitor.
        monitor: u64,
    },
    /// A watched actor ended.
    Down {
        /// The monitor.
        monitor: u64,
        /// The actor.
        actor: ActorId,
        /// Why.
        reason: ExitReason,
    },
    /// Link actor `to` with `from` (on the sending node).
    Link {
        /// The local actor.
        to: u64,
        /// The remote actor.
        from: ActorId,
    },
    /// Remove that link.
    Unlink {
        /// The local actor.
        to: u64,
        /// The remote actor.
        from: ActorId,
    },
    /// A linked actor on the sending node ended.
    Exit {
        /// The local actor.
        to: u64,
        /// The actor that ended.
        from: ActorId,
        /// Why.
        reason: ExitReason,
    },
    /// The answer to a spawn request of the receiver: the new actor, or why there is none.
    /// A signal, so that it outlives a connection that ends before it is read: the asker
    /// stops an actor whose answer came after it gave up, and one whose asker's node is
    /// gone is killed on the sending node, so none lives on unowned.
    Spawned {
        /// The request answered.
        request: u64,
        /// The actor, or the reason it could not be started.
        result: Result<WireRef, String>,
    },
}

impl RemoteSignal {
    /// This signal with its exit reason's text cut to [`MAX_REASON_TEXT`].
    pub(crate) fn fitted(self) -> RemoteSignal {
        match self {
            RemoteSignal::Stop {
                to,
                reason: Some(reason),
            } => RemoteSignal::Stop {
                to,
                reason: Some(reason.with_text_cut(MAX_REASON_TEXT)),
            },
            RemoteSignal::Down {
                monitor,
                actor,
                reason,
            } => RemoteSignal::Down {
                monitor,
                actor,
                reason: reason.with_text_cut(MAX_REASON_TEXT),
            },
            RemoteSignal::Exit { to, from, reason } => RemoteSignal::Exit {
                to,
                from,
                reason: reason.with_text_cut(MAX_REASON_TEXT),
            },
            RemoteSignal::Spawned {
                request,
                result: Err(why),
            } => RemoteSignal::Spawned {
                request,
                result: Err(crate::exit::cut_text(why, MAX_REASON_TEXT)),
            },
            other => other,
        }
    }
}

/// How an actor reference looks on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRef {
    /// The actor.
    pub id: ActorId,
    /// The Rust type name of its messages.
    pub msg_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireReply {
    pub(crate) origin: crate::id::NodeId,
    pub(crate) ask: u64,
    /// The actor asked, for error messages on the asking side.
    pub(crate) target: ActorId,
}
