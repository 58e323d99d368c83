//! A node in the test's own process, with its cluster service (real QUIC on loopback) and its
//! registry: for the test binaries that run several nodes in one process (`tests/apps`,
//! `tests/kv`, `tests/registry`); each includes this file as its `in_process` module.

use std::net::SocketAddr;
use std::path::Path;

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::NodeCert;

/// Starts node `name` with the certificates in `certs`, its registry's data there too; it
/// joins through `seeds`, or bootstraps the registry without any. `tune` adjusts the
/// registry's settings first.
pub(crate) async fn start_node(
    name: &str,
    certs: &Path,
    seeds: Vec<SocketAddr>,
    tune: impl FnOnce(&mut RegistryConfig),
) -> (Node, Cluster, Registry) {
    start_node_with(name, certs, seeds, |_| {}, tune).await
}

/// [`start_node`], with `cluster` adjusting the cluster's settings first too.
#[allow(dead_code)] // not every binary that includes this file needs it
pub(crate) async fn start_node_with(
    name: &str,
    certs: &Path,
    seeds: Vec<SocketAddr>,
    cluster: impl FnOnce(&mut ClusterConfig),
    tune: impl FnOnce(&mut RegistryConfig),
) -> (Node, Cluster, Registry) {
    let node = Node::new(NodeConfig::new(name)).unwrap();
    let cert = NodeCert::load(certs, name).unwrap();
    let mut config = ClusterConfig::new("test");
    config.down = DownDecision::External;
    cluster(&mut config);
    let bootstrap = seeds.is_empty();
    config.seeds = seeds;
    let cluster = Cluster::start(&node, config, &cert).await.unwrap();
    let mut settings = RegistryConfig::new(certs.join(format!("{name}-data")));
    settings.bootstrap = bootstrap;
    tune(&mut settings);
    let registry = Registry::start(&cluster, settings).await.unwrap();
    (node, cluster, registry)
}
