//! Remote messaging: actor references, asks and signals that cross nodes.
//!
//! An [`ActorRef`](crate::ActorRef) to an actor on another node sends through this node's
//! router (`Remote`):
//! the message is encoded (MessagePack), framed, and queued on one of the connection's data
//! lanes, chosen by the receiver so that messages from one sender to one receiver stay in
//! order. The receiving node checks the message's type against the actor's protocol before
//! decoding it: a message of the wrong type is refused, never misread.
//!
//! References and reply handles travel inside messages. Encoding a local `ActorRef` makes the
//! actor reachable from other nodes (it is *exported*); encoding a `ReplyTo` moves its sender
//! into this node's table of pending asks, so the reply can find its way back. Decoding needs
//! the receiving node, which is set for the duration of each decode.
//!
//! Signals (stop, kill, monitors, links, exits) travel on the control stream, numbered, and are
//! sent again on a new connection until the peer acknowledges them (`delivery`), so a
//! connection that ends while both nodes live loses none. When a node goes down, every monitor
//! and link to its actors fires with [`ExitReason::NodeDown`] and every ask waiting on it
//! fails.

mod delivery;
mod modules;
mod router;
mod serde_impls;
mod wire;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

pub use modules::ModuleActor;
pub(crate) use modules::{FactoryModule, Module};
pub(crate) use router::{Answer, PeerLinks, Remote, encode_with, frame_limit_to};
pub use wire::{Data, Outcome, RemoteSignal, WireRef};

use crate::error::TellError;
use crate::exit::ExitReason;
use crate::id::{ActorId, NodeId};
use crate::node::Node;

/// A message that can cross nodes: anything serde can encode and decode.
pub trait RemoteMessage: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> RemoteMessage for T {}

/// Data lanes (unidirectional QUIC streams) per connection and direction.
pub(crate) const LANES: usize = 4;

/// Frames queued per lane before `tell` waits and `try_tell` reports `Full`.
pub(crate) const LANE_CAPACITY: usize = 4096;

type Encoder<T> = fn(&Node, &ActorId, &T) -> Result<(Vec<u8>, Vec<u64>), String>;

/// The remote side of an `ActorRef`.
pub(crate) struct RemoteRef<M> {
    pub(crate) id: ActorId,
    /// The local node, whose router and connections carry the messages.
    pub(crate) node: Node,
    encode: Encoder<M>,
    _message: PhantomData<fn(M)>,
}

impl<M: Send + 'static> RemoteRef<M> {
    pub(crate) fn new(id: ActorId, node: Node) -> Self
    where
        M: RemoteMessage,
    {
        Self {
            id,
            node,
            encode: router::encode_with::<M>,
            _message: PhantomData,
        }
    }

    /// Encodes and frames a message, finding the lane it goes on.
    fn prepare(&self, msg: M) -> Result<Prepared<M>, TellError<M>> {
        if self.id.node() == self.node.id() {
            // A reference to an actor of this node that no longer exists.
            self.node
                .inner
                .dead_letters
                .record(1, &self.id, "the receiver is stopped");
            return Err(TellError::Dead {
                actor: self.id.clone(),
                message: msg,
            });
        }
        let remote = &self.node.inner.remote;
        let Some((lane, max_frame, connection)) =
            remote.lane_and_limit(self.id.node(), self.id.seq())
        else {
            return Err(self.unreachable(msg, format!("node {} is not connected", self.id.node())));
        };
        let (payload, asks) = match (self.encode)(&self.node, &self.id, &msg) {
            Ok(encoded) => encoded,
            Err(err) => {
                return Err(self.unreachable(msg, format!("cannot encode the message: {err}")));
            }
        };
        if !remote.carried_by(&asks, self.id.node(), connection) {
            router::recycle(payload);
            let reason = format!("the connection to node {} ended", self.id.node());
            return Err(self.failed(msg, &asks, reason));
        }
        let framed = router::frame_within(
            &Data::Tell {
                to: self.id.seq(),
                msg_type: std::any::type_name::<M>(),
                payload: &payload,
                // The receiver refuses them all if it refuses the message unread.
                ask: asks.first().copied(),
                more_asks: asks.get(1..).map(<[u64]>::to_vec).unwrap_or_default(),
            },
            max_frame,
        );
        router::recycle(payload);
        match framed {
            Ok(frame) => Ok(Prepared {
                msg,
                lane,
                frame,
                asks,
            }),
            Err(err) => Err(self.failed(msg, &asks, err)),
        }
    }

    /// Sends, waiting while the connection's outgoing lane is full.
    pub(crate) async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        let Prepared {
            msg,
            lane,
            frame,
            asks,
        } = self.prepare(msg)?;
        match lane.send(frame).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failed(
                msg,
                &asks,
                format!("the connection to node {} closed", self.id.node()),
            )),
        }
    }

    /// Sends if the connection's outgoing lane has room.
    pub(crate) fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        let Prepared {
            msg,
            lane,
            frame,
            asks,
        } = self.prepare(msg)?;
        match lane.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.node
                    .inner
                    .remote
                    .fail_pending(&asks, "the connection's outgoing queue is full");
                Err(TellError::Full {
                    actor: self.id.clone(),
                    message: msg,
                    capacity: LANE_CAPACITY,
                })
            }
            Err(TrySendError::Closed(_)) => Err(self.failed(
                msg,
                &asks,
                format!("the connection to node {} closed", self.id.node()),
            )),
        }
    }

    fn unreachable(&self, message: M, reason: String) -> TellError<M> {
        self.node
            .inner
            .dead_letters
            .record(1, &self.id, "the receiver's node is unreachable");
        TellError::Unreachable {
            actor: self.id.clone(),
            message,
            reason,
        }
    }

    /// The message was encoded (the asks in it registered) but cannot go out.
    fn failed(&self, message: M, asks: &[u64], reason: String) -> TellError<M> {
        self.node.inner.remote.fail_pending(asks, &reason);
        self.unreachable(message, reason)
    }
}

/// A message ready to go: the message itself (handed back if sending fails), its lane, its
/// frame, and the asks it carries.
struct Prepared<M> {
    msg: M,
    lane: Sender<Bytes>,
    frame: Bytes,
    asks: Vec<u64>,
}

/// A reply handle whose asker is on another node.
pub(crate) struct RemoteReply<T> {
    node: Node,
    origin: NodeId,
    ask: u64,
    target: ActorId,
    encode: Encoder<T>,
    /// Set once the reply (or the handle itself) has gone out; otherwise dropping the handle
    /// tells the asker it will get no reply.
    done: AtomicBool,
}

impl<T> RemoteReply<T> {
    /// The node that asked.
    pub(crate) fn origin(&self) -> &NodeId {
        &self.origin
    }

    pub(crate) fn send(self, value: T) -> Result<(), T> {
        self.done.store(true, Ordering::Relaxed);
        let remote = &self.node.inner.remote;
        match (self.encode)(&self.node, &self.target, &value) {
            Ok((bytes, _)) => {
                let sent = remote.reply(&self.origin, self.ask, wire::Outcome::Value(&bytes));
                router::recycle(bytes);
                if sent { Ok(()) } else { Err(value) }
            }
            Err(err) => {
                let reason = format!("the reply cannot be encoded: {err}");
                tracing::warn!(actor = %self.target, %reason, "reply not sent");
                remote.reply(
                    &self.origin,
                    self.ask,
                    wire::Outcome::Refused(reason.into()),
                );
                Err(value)
            }
        }
    }
}

impl<T> Drop for RemoteReply<T> {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.node
                .inner
                .remote
                .reply(&self.origin, self.ask, wire::Outcome::Dropped);
        }
    }
}

impl<T> fmt::Debug for RemoteReply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote ask {} of node {}", self.ask, self.origin)
    }
}

/// The reason monitors and links to actors of `node` fire with when it goes down.
pub(crate) fn node_down_reason(node: &NodeId) -> ExitReason {
    ExitReason::NodeDown(node.clone())
}

/// Why a monitor, link or wait set from node `own` on `target`, which no connection reaches,
/// fires at once: the target's node is not connected, or it is this node and the actor is
/// gone (a reference made from the id of an actor that had ended).
pub(crate) fn unreachable_reason(own: &NodeId, target: &ActorId) -> ExitReason {
    if target.node() == own {
        ExitReason::NoProc
    } else {
        node_down_reason(target.node())
    }
}
