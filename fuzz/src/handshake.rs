//! A connection's first control frame, through the node's acceptance decision.
//!
//! # Input
//!
//! The payload of the first frame on a connection's control stream (what the frame decoder
//! yields; the framing itself is the `frame_decoder` target's).
//!
//! # Properties
//!
//! - Decoding it never panics, whatever it is.
//! - A `Hello` (what the accepting node reads) or a `Welcome` (what the dialing node reads) is
//!   accepted exactly when its version, cluster and certificate name match, it does not
//!   claim the local node's name, it announces heartbeats at least every
//!   `MAX_HEARTBEAT_INTERVAL`, and a frame limit of at least `MIN_MAX_FRAME` (or none);
//!   this is checked against a few local configurations and
//!   certificate names so that every branch is reached from any decoded hello.
//! - Every refusal renders a non-empty reason, and the `Refused` frame carrying it back to the
//!   peer encodes and decodes to the same reason.
//! - Anything else (a `Refused` answer, a frame that is not a handshake) renders as the node
//!   logs it.

use ensemble_runtime::NodeId;
use ensemble_runtime::cluster::{
    Control, Hello, MAX_HEARTBEAT_INTERVAL, MIN_MAX_FRAME, PROTOCOL_VERSION, check_hello,
};
use ensemble_runtime::transport::frame::{self, HEADER_LEN};

/// The cluster the local node belongs to, in the seeds.
pub const CLUSTER: &str = "prod";

/// The local node, in the seeds.
pub fn local() -> NodeId {
    NodeId::new("n1", 1)
}

/// Runs one input; panics if a property fails.
pub fn check(data: &[u8]) {
    let Ok(control) = frame::decode::<Control>(data) else {
        return;
    };
    match &control {
        Control::Hello(hello) | Control::Welcome(hello) => {
            let me = local();
            let same_name = NodeId::new(hello.node.name(), hello.node.incarnation() ^ 1);
            for cluster in [CLUSTER, hello.cluster.as_str()] {
                for local in [&me, &same_name] {
                    for certified in [Some(hello.node.name()), None, Some("n2"), Some("")] {
                        decide(cluster, local, hello, certified);
                    }
                }
            }
        }
        Control::Refused { reason, downed } => {
            // The dialing node logs the reason; `downed` tells it to restart.
            let logged =
                format!("the node at 127.0.0.1:1 refused this node: {reason} (down: {downed})");
            assert!(logged.contains(reason.as_str()));
        }
        other => {
            let logged = format!("127.0.0.1:1 sent {other:?} instead of a hello");
            assert!(!logged.is_empty());
        }
    }
}

/// One acceptance decision, checked against what it must be.
fn decide(cluster: &str, local: &NodeId, hello: &Hello, certified: Option<&str>) {
    let verdict = check_hello(cluster, local, hello, certified);
    let expected = hello.version == PROTOCOL_VERSION
        && hello.cluster == cluster
        && certified == Some(hello.node.name())
        && hello.node.name() != local.name()
        && u128::from(hello.heartbeat_interval_us) <= MAX_HEARTBEAT_INTERVAL.as_micros()
        // 0: a peer that did not say; anything else takes at least the smallest limit.
        && (hello.max_frame_size == 0 || hello.max_frame_size >= MIN_MAX_FRAME as u64);
    assert_eq!(
        verdict.is_ok(),
        expected,
        "{hello:?} from a peer certified as {certified:?} to {local} of {cluster:?}: {verdict:?}"
    );
    let Err(refusal) = verdict else {
        return;
    };
    let reason = refusal.to_string();
    assert!(!reason.trim().is_empty(), "{refusal:?} renders empty");
    let answer = Control::Refused {
        reason,
        downed: false,
    };
    let framed = frame::encode_one(&answer, usize::MAX).expect("a refusal encodes");
    assert_eq!(
        frame::decode::<Control>(&framed[HEADER_LEN..]).as_ref(),
        Ok(&answer)
    );
}
