//! What nodes say to each other on a connection's control stream.
//!
//! The dialing node opens one bidirectional stream and sends [`Control::Hello`]; the
//! accepting node answers [`Control::Welcome`] or [`Control::Refused`], and the dialer, having
//! checked the welcome, [`Control::Ready`] or [`Control::Refused`]. Then both sides send
//! heartbeats, member lists, signals and, when leaving, [`Control::Leaving`].
//! docs/protocol.md describes the whole exchange.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::remote::{RemoteSignal, WireRef};

/// The protocol version this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u32 = 9;

/// Who a node is, as told in the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its name and incarnation.
    pub node: NodeId,
    /// Where it accepts connections.
    pub listen: SocketAddr,
    /// Resources it offers for placement (e.g. `cpu`, `memory_mb`, custom counters).
    pub resources: BTreeMap<String, u64>,
    /// Labels for placement constraints (e.g. `zone`, `rack`, `role`).
    pub labels: BTreeMap<String, String>,
    /// How often it sends heartbeats, in microseconds: the receiver's failure detector
    /// expects them that often, whatever its own interval. 0 (or absent, as in the hellos of
    /// earlier versions, which then decode far enough to be refused for their version): the
    /// receiver's own interval.
    #[serde(default)]
    pub heartbeat_interval_us: u64,
    /// The largest frame it takes, in bytes (its `max_frame_size`): what this node sends it
    /// keeps to the smaller of that and its own limit, so that a message between the two is
    /// refused to its sender, naming its size, rather than closing the connection at the
    /// receiver. 0 (or absent): the receiver's own limit.
    #[serde(default)]
    pub max_frame_size: u64,
}

/// A member as one node tells the others (so that every node connects to every other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its name and incarnation.
    pub node: NodeId,
    /// Where it accepts connections.
    pub listen: SocketAddr,
}

/// A control-stream frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The dialer introduces itself.
    Hello(Hello),
    /// The acceptor accepts, introducing itself.
    Welcome(Hello),
    /// The dialer accepts the acceptor's welcome: only now does the acceptor count it a
    /// member, so that a dialer refusing the welcome never shows up as one.
    Ready,
    /// The peer refuses the connection, saying why (the acceptor, the dialer's hello; the
    /// dialer, the acceptor's welcome); it closes the connection next.
    Refused {
        /// Why, for the log on the refused side.
        reason: String,
        /// The refused node was declared down (as this incarnation): it learns it this way
        /// when it was cut off while the cluster decided, and must restart to rejoin.
        #[serde(default)]
        downed: bool,
    },
    /// I am alive (sent every heartbeat interval).
    Heartbeat,
    /// The members the sender is connected to.
    Members(Vec<MemberView>),
    /// The sender is leaving the cluster on purpose. It sends nothing more on its data
    /// lanes, of which it opened `lanes` on this connection: the receiver closes the
    /// connection once it has read each of them to its end (so that what the sender told
    /// before it left is not lost with the connection), or after a second.
    Leaving {
        /// The data lanes the sender opened on this connection.
        lanes: u32,
    },
    /// A system signal for one of the receiver's actors, or about one of the sender's,
    /// numbered per pair of nodes from 1. Sent again on a new connection until acknowledged;
    /// the receiver applies each number once.
    Signal {
        /// The signal's number.
        seq: u64,
        /// The signal.
        signal: RemoteSignal,
    },
    /// The sender applied every signal of the receiver up to this number (sent with
    /// heartbeats, when signals came since the last one).
    SignalsApplied {
        /// The last signal applied.
        through: u64,
    },
    /// Which actor holds this name on your node (if it can be reached from other nodes)?
    WhereIs {
        /// Numbers the answer.
        request: u64,
        /// The name.
        name: String,
    },
    /// The answer to a `WhereIs`.
    Found {
        /// The request answered.
        request: u64,
        /// The actor and its message type, if any.
        actor: Option<WireRef>,
    },
}

impl Control {
    /// The frame's kind, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Control::Hello(_) => "hello",
            Control::Welcome(_) => "welcome",
            Control::Ready => "ready",
            Control::Refused { .. } => "refused",
            Control::Heartbeat => "heartbeat",
            Control::Members(_) => "members",
            Control::Leaving { .. } => "leaving",
            Control::Signal { .. } => "signal",
            Control::SignalsApplied { .. } => "signals applied",
            Control::WhereIs { .. } => "where-is",
            Control::Found { .. } => "found",
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::transport::frame::{self, DEFAULT_MAX_FRAME, FrameDecoder};

    fn hello() -> impl Strategy<Value = Hello> {
        (
            any::<u32>(),
            "[a-z]{0,12}",
            "[a-z0-9._-]{1,12}",
            any::<u64>(),
            any::<u16>(),
            prop::collection::btree_map("[a-z]{1,6}", any::<u64>(), 0..4),
            prop::collection::btree_map("[a-z]{1,6}", "[a-z]{0,6}", 0..4),
            any::<u64>(),
        )
            .prop_map(
                |(version, cluster, name, incarnation, port, resources, labels, heartbeat)| Hello {
                    version,
                    cluster,
                    node: NodeId::new(name, incarnation),
                    listen: SocketAddr::from(([127, 0, 0, 1], port)),
                    resources,
                    labels,
                    heartbeat_interval_us: heartbeat,
                    max_frame_size: heartbeat % 10_000_000,
                },
            )
    }

    proptest! {
        /// Every hello survives the trip through a frame.
        #[test]
        fn hellos_round_trip(hello in hello()) {
            let bytes = frame::encode_one(&Control::Hello(hello.clone()), DEFAULT_MAX_FRAME).unwrap();
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            decoder.extend(&bytes);
            let payload = decoder.next_frame().unwrap().unwrap();
            prop_assert_eq!(frame::decode::<Control>(&payload).unwrap(), Control::Hello(hello));
        }

        /// Garbage where a handshake is expected is an error, never a panic.
        #[test]
        fn garbage_handshakes_are_errors(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = frame::decode::<Control>(&bytes);
            let _ = frame::decode_borrowed::<crate::remote::Data<'_>>(&bytes);
        }

        /// A valid hello with bytes flipped decodes to something or fails cleanly.
        #[test]
        fn corrupted_hellos_never_panic(hello in hello(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = rmp_serde::to_vec_named(&Control::Hello(hello)).unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = frame::decode::<Control>(&bytes);
        }
    }
}
