//! Nodes in this process for the tests of agents, controllers and singletons: `s1` on its
//! own, with its cluster service (real QUIC on loopback, 1000 `cpu` to place on) and its
//! registry, the only voter; or nodes that form a cluster, each with its registry.

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

/// Starts node `name` with the certificates in `certs`, its registry's data there too; it
/// joins through `seeds`, or bootstraps the registry without any.
pub(crate) async fn node_in(
    name: &str,
    certs: &std::path::Path,
    seeds: Vec<std::net::SocketAddr>,
) -> (Node, Cluster, Registry) {
    crate::in_process::start_node(name, certs, seeds, |_| {}).await
}
