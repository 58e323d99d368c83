//! A node's agent (`supervisor::agent`) on a node of its own (real QUIC, a real registry):
//! what it reserves for an instance goes back when the instance cannot start.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::supervisor::agent::{Agent, StartInstance, start_on};
use ensemble::transport::certs::NodeCert;

use crate::util::{certificates, one_cluster_at_a_time};

struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Held for the whole test on purpose, as in the other tests of this file's neighbours.
#[allow(clippy::await_holding_lock)]
async fn a_singleton_that_cannot_take_its_lease_frees_its_reservation() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let node = Node::new(NodeConfig::new("s1")).unwrap();
    let mut config = ClusterConfig::new("test");
    config.down = DownDecision::External;
    config.resources = BTreeMap::from([("cpu".to_owned(), 1000)]);
    let cluster = Cluster::start(&node, config, &NodeCert::load(certs.path(), "s1").unwrap())
        .await
        .unwrap();
    let mut settings = RegistryConfig::new(certs.path().join("s1-data"));
    settings.bootstrap = true;
    let registry = Registry::start(&cluster, settings).await.unwrap();
    node.register_module("test.idle", |(): ()| Idle);
    let agent = Agent::start(&node).await.unwrap();

    // Someone else holds the singleton's lock for the whole test.
    let _held = registry.try_lock("test.singleton").await.unwrap();
    let request = StartInstance {
        instance: "test/idle@s1#1".into(),
        module: "test.idle".into(),
        args: rmp_serde::to_vec(&()).unwrap(),
        resources: BTreeMap::from([("cpu".to_owned(), 600)]),
        global_name: None,
        groups: Vec::new(),
        singleton: Some("test.singleton".into()),
        lock_timeout: Duration::from_millis(200),
    };
    let refused = start_on(&agent, request, Duration::from_secs(10)).await;
    let why = refused.expect_err("the lease is held by another");
    assert!(why.contains("test.singleton"), "{why}");
    assert_eq!(
        registry.reserved(node.id()),
        BTreeMap::new(),
        "the reservation of the instance that did not start is still there"
    );
    node.shutdown().await;
}
