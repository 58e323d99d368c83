//! Deciding whether to accept a peer: pure checks on what it says and what its certificate
//! says, each refusal with a reason both sides can log.

use std::time::Duration;

use crate::id::NodeId;

use super::service::MIN_MAX_FRAME;
use super::wire::{Hello, PROTOCOL_VERSION};

/// The longest heartbeat interval a peer may announce: a peer silent for longer between
/// heartbeats could not be told from a dead one for minutes.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Why a peer is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It speaks another protocol version.
    #[error(
        "protocol version {theirs} is not this node's version {ours}; run the same Ensemble release on every node"
    )]
    Version {
        /// The peer's.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// It belongs to another cluster.
    #[error("node {node} belongs to cluster {theirs:?}, not {ours:?}")]
    Cluster {
        /// The peer.
        node: NodeId,
        /// Its cluster.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Its certificate was issued for another node than it claims to be.
    #[error("the peer claims to be node {claimed} but its certificate is for {certified:?} (issue it a certificate with `ensemble cert issue {name}`)", name = claimed.name())]
    CertificateName {
        /// Who it claims to be.
        claimed: NodeId,
        /// Who the certificate names, if anyone.
        certified: Option<String>,
    },
    /// It claims this node's own name.
    #[error(
        "the peer claims to be node {claimed}, which is this node's name; node names must be unique"
    )]
    SameName {
        /// Who it claims to be.
        claimed: NodeId,
    },
    /// That incarnation was declared down; it must restart (a new incarnation) to rejoin.
    #[error("node {node} was declared down; restart it to rejoin as a new incarnation")]
    Downed {
        /// The peer.
        node: NodeId,
    },
    /// It announces heartbeats less often than [`MAX_HEARTBEAT_INTERVAL`].
    #[error(
        "node {node} sends heartbeats every {interval:?}, more than the {max:?} peers take; lower its phi.heartbeat_interval (100 ms by default)",
        max = MAX_HEARTBEAT_INTERVAL
    )]
    HeartbeatInterval {
        /// The peer.
        node: NodeId,
        /// What it announced.
        interval: Duration,
    },
    /// It takes frames smaller than any node may ([`MIN_MAX_FRAME`]): nothing but the
    /// smallest message could reach it (a faulty build, or a hand-made hello).
    #[error(
        "node {node} takes frames of at most {max_frame_size} bytes, less than the {min} every node takes; raise its max_frame_size",
        min = MIN_MAX_FRAME
    )]
    FrameLimit {
        /// The peer.
        node: NodeId,
        /// What it announced.
        max_frame_size: u64,
    },
    /// A newer incarnation of that node is already a member.
    #[error("node {node} is older than the incarnation {newer} already in the cluster")]
    Stale {
        /// The peer.
        node: NodeId,
        /// The newer incarnation.
        newer: NodeId,
    },
}

/// Checks a peer's hello against this node and the name in the peer's certificate. Membership
/// checks (downed or stale incarnations) are made by the member table.
///
/// Public (hidden) only so that the fuzz targets in `fuzz/` can run the node's own decision.
pub fn check(
    local_cluster: &str,
    local: &NodeId,
    hello: &Hello,
    certified: Option<&str>,
) -> Result<(), Refusal> {
    if hello.version != PROTOCOL_VERSION {
        return Err(Refusal::Version {
            theirs: hello.version,
            ours: PROTOCOL_VERSION,
        });
    }
    if hello.cluster != local_cluster {
        return Err(Refusal::Cluster {
            node: hello.node.clone(),
            theirs: hello.cluster.clone(),
            ours: local_cluster.to_owned(),
        });
    }
    if certified != Some(hello.node.name()) {
        return Err(Refusal::CertificateName {
            claimed: hello.node.clone(),
            certified: certified.map(str::to_owned),
        });
    }
    if hello.node.name() == local.name() {
        return Err(Refusal::SameName {
            claimed: hello.node.clone(),
        });
    }
    let interval = Duration::from_micros(hello.heartbeat_interval_us);
    if interval > MAX_HEARTBEAT_INTERVAL {
        return Err(Refusal::HeartbeatInterval {
            node: hello.node.clone(),
            interval,
        });
    }
    // 0: an earlier build that did not say; its frames are limited by this node's.
    if hello.max_frame_size != 0 && hello.max_frame_size < MIN_MAX_FRAME as u64 {
        return Err(Refusal::FrameLimit {
            node: hello.node.clone(),
            max_frame_size: hello.max_frame_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn hello(name: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster: "prod".into(),
            node: NodeId::new(name, 1),
            listen: "127.0.0.1:1".parse().unwrap(),
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
            heartbeat_interval_us: 100_000,
            max_frame_size: 8 << 20,
        }
    }

    #[test]
    fn a_matching_peer_is_accepted() {
        assert_eq!(
            check("prod", &NodeId::new("n1", 1), &hello("n2"), Some("n2")),
            Ok(())
        );
    }

    /// A hello of version 2, which had no heartbeat interval, still decodes far enough to be
    /// refused for its version, with the message that says what to do.
    #[test]
    fn an_earlier_version_s_hello_is_refused_for_its_version() {
        #[derive(serde::Serialize)]
        struct HelloV2 {
            version: u32,
            cluster: String,
            node: NodeId,
            listen: std::net::SocketAddr,
            resources: BTreeMap<String, u64>,
            labels: BTreeMap<String, String>,
        }
        #[derive(serde::Serialize)]
        enum ControlV2 {
            Hello(HelloV2),
        }
        let old = ControlV2::Hello(HelloV2 {
            version: 2,
            cluster: "prod".into(),
            node: NodeId::new("n2", 1),
            listen: "127.0.0.1:1".parse().unwrap(),
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
        });
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let super::super::wire::Control::Hello(hello) =
            crate::transport::frame::decode(&bytes).expect("a version 2 hello decodes")
        else {
            panic!("not a hello");
        };
        assert_eq!(hello.heartbeat_interval_us, 0);
        let err = check("prod", &NodeId::new("n1", 1), &hello, Some("n2")).unwrap_err();
        assert_eq!(
            err,
            Refusal::Version {
                theirs: 2,
                ours: PROTOCOL_VERSION
            }
        );
    }

    #[test]
    fn each_mismatch_is_refused_with_its_reason() {
        let me = NodeId::new("n1", 1);
        let mut old = hello("n2");
        old.version = 0;
        let err = check("prod", &me, &old, Some("n2")).unwrap_err();
        assert!(err.to_string().contains("protocol version 0"), "{err}");

        let err = check("test", &me, &hello("n2"), Some("n2")).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to cluster \"prod\", not \"test\""),
            "{err}"
        );

        let err = check("prod", &me, &hello("n2"), Some("n3")).unwrap_err();
        assert!(
            err.to_string().contains("certificate is for Some(\"n3\")"),
            "{err}"
        );
        assert!(err.to_string().contains("ensemble cert issue n2"), "{err}");
        assert!(check("prod", &me, &hello("n2"), None).is_err());

        let err = check("prod", &me, &hello("n1"), Some("n1")).unwrap_err();
        assert!(matches!(err, Refusal::SameName { .. }));

        let mut slow = hello("n2");
        slow.heartbeat_interval_us = 3_600_000_000;
        let err = check("prod", &me, &slow, Some("n2")).unwrap_err();
        assert!(
            err.to_string().contains("sends heartbeats every 3600s"),
            "{err}"
        );
        slow.heartbeat_interval_us = 60_000_000;
        assert_eq!(check("prod", &me, &slow, Some("n2")), Ok(()));

        let mut tiny = hello("n2");
        tiny.max_frame_size = 100;
        let err = check("prod", &me, &tiny, Some("n2")).unwrap_err();
        assert!(
            err.to_string()
                .contains("takes frames of at most 100 bytes, less than the 16384"),
            "{err}"
        );
        tiny.max_frame_size = 0;
        assert_eq!(check("prod", &me, &tiny, Some("n2")), Ok(()));
    }
}
