//! How `ActorRef` and `ReplyTo` cross nodes inside messages.

use std::sync::atomic::AtomicBool;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::actor::{ActorRef, ReplyInner, ReplyTo};
use crate::node::Node;

use super::router::{decoding_node, encode_with, with_encoding};
use super::wire::{WireRef, WireReply};
use super::{RemoteMessage, RemoteRef, RemoteReply};

impl<M: RemoteMessage> ActorRef<M> {
    /// How this reference travels between nodes: the actor's id and the type of its messages.
    /// A local actor becomes reachable from other nodes. Registries store references this way.
    pub fn to_wire(&self) -> WireRef {
        if let Some(cell) = self.local() {
            // Another node may now send to it.
            cell.core.node.inner.remote.export(cell);
        }
        WireRef {
            id: self.id().clone(),
            msg_type: std::any::type_name::<M>().to_owned(),
        }
    }

    /// The reference `wire` describes, as `node` sends through it; `None` if the actor takes
    /// messages of another type than `M`.
    pub fn from_wire(node: &Node, wire: &WireRef) -> Option<Self> {
        if wire.msg_type != std::any::type_name::<M>() {
            return None;
        }
        if wire.id.node() == node.id()
            && let Some(cell) = node.inner.cell(wire.id.seq())
            && let Ok(cell) = cell.into_any().downcast::<crate::actor::Cell<M>>()
        {
            return Some(ActorRef::from_cell(cell));
        }
        Some(ActorRef::from_remote(RemoteRef::new(
            wire.id.clone(),
            node.clone(),
        )))
    }
}

impl<M: RemoteMessage> Serialize for ActorRef<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(serializer)
    }
}

impl<'de, M: RemoteMessage> Deserialize<'de> for ActorRef<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireRef::deserialize(deserializer)?;
        let node = decoding_node().ok_or_else(|| {
            D::Error::custom(
                "an ActorRef can only be decoded by an Ensemble node receiving a message",
            )
        })?;
        ActorRef::from_wire(&node, &wire).ok_or_else(|| {
            D::Error::custom(format!(
                "actor {} takes messages of type {}, not {}",
                wire.id,
                wire.msg_type,
                std::any::type_name::<M>()
            ))
        })
    }
}

impl<T: RemoteMessage> Serialize for ReplyTo<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match &self.inner {
            ReplyInner::Local(slot) => with_encoding(|context| {
                let context = context.ok_or_else(|| {
                    S::Error::custom(
                        "a ReplyTo can only be encoded by an Ensemble node sending a message",
                    )
                })?;
                let tx = slot
                    .lock()
                    .take()
                    .ok_or_else(|| S::Error::custom("this ReplyTo was already used"))?;
                let remote = &context.node.inner.remote;
                let ask = remote.register_pending(context.target.clone(), tx);
                context.asks.push(ask);
                Ok(WireReply {
                    origin: context.node.id().clone(),
                    ask,
                    target: context.target.clone(),
                })
            })?,
            ReplyInner::Remote(remote) => {
                // Forwarded: whoever decodes it answers; this copy must not report a drop.
                remote
                    .done
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                WireReply {
                    origin: remote.origin.clone(),
                    ask: remote.ask,
                    target: remote.target.clone(),
                }
            }
        };
        wire.serialize(serializer)
    }
}

impl<'de, T: RemoteMessage> Deserialize<'de> for ReplyTo<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireReply::deserialize(deserializer)?;
        let node = decoding_node().ok_or_else(|| {
            D::Error::custom(
                "a ReplyTo can only be decoded by an Ensemble node receiving a message",
            )
        })?;
        if wire.origin == *node.id() {
            // Back home: answer the ask directly.
            let tx = node.inner.remote.take_pending::<T>(wire.ask);
            return Ok(ReplyTo {
                inner: ReplyInner::Local(parking_lot::Mutex::new(tx)),
            });
        }
        Ok(ReplyTo {
            inner: ReplyInner::Remote(Box::new(RemoteReply {
                node,
                origin: wire.origin,
                ask: wire.ask,
                target: wire.target,
                encode: encode_with::<T>,
                done: AtomicBool::new(false),
            })),
        })
    }
}
