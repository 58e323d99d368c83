//! A node of its own in this process, `s1`, for the tests of one node's agent and controller:
//! its cluster service (real QUIC on loopback, 1000 `cpu` to place on) and its registry, the
//! only voter.

use std::collections::BTreeMap;

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::NodeCert;

/// Starts `s1` with the certificates in `certs`, its registry's data there too.
pub(crate) async fn node_s1(certs: &std::path::Path) -> (Node, Registry) {
    let node = Node::new(NodeConfig::new("s1")).unwrap();
    let mut config = ClusterConfig::new("test");
    config.down = DownDecision::External;
    config.resources = BTreeMap::from([("cpu".to_owned(), 1000)]);
    let cluster = Cluster::start(&node, config, &NodeCert::load(certs, "s1").unwrap())
        .await
        .unwrap();
    let mut settings = RegistryConfig::new(certs.join("s1-data"));
    settings.bootstrap = true;
    let registry = Registry::start(&cluster, settings).await.unwrap();
    (node, registry)
}
