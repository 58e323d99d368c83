//! Failure detection over links that are slow or differently tuned, on a simulated network
//! and paused time (so a second of the link is a moment of the test, and the outcome does not
//! depend on the machine): a large remote spawn must not hold heartbeats back, and a peer that
//! sends heartbeats less often than this node must not be suspected between them.

use std::time::Duration;

use ensemble::NodeId;
use ensemble::cluster::{Cluster, ClusterConfig, DownDecision, MemberEvent};
use ensemble::prelude::*;
use ensemble::transport::certs::ClusterCa;
use ensemble::transport::simnet::{Faults, Network, SimNet, sim_addr};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// A node on `net` at `sim_addr(i)`, named `s{i}`, joining `seeds`.
async fn sim_node(
    i: u8,
    net: &SimNet,
    ca: &ClusterCa,
    seeds: Vec<std::net::SocketAddr>,
    tune: impl FnOnce(&mut ClusterConfig),
) -> (Node, Cluster) {
    let name = format!("s{i}");
    let node = Node::new(NodeConfig::new(&name).incarnation(1)).expect("node");
    let mut config = ClusterConfig::new("slow");
    config.listen = sim_addr(i);
    config.network = Network::Simulated(net.clone());
    config.down = DownDecision::External;
    config.seeds = seeds;
    tune(&mut config);
    let cert = ca.issue(&name).expect("certificate");
    let cluster = Cluster::start(&node, config, &cert).await.expect("cluster");
    (node, cluster)
}

/// The suspicions of `peer` among the events received so far.
fn suspicions(events: &mut broadcast::Receiver<MemberEvent>, peer: &str) -> usize {
    let mut count = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(&event, MemberEvent::Suspect(node) if node.name() == peer) {
            count += 1;
        }
    }
    count
}

/// Waits (virtual time) until `cluster` counts the node named `peer` a member; answers its id.
async fn until_member(cluster: &Cluster, peer: &str) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(member) = cluster
            .members()
            .into_iter()
            .find(|m| m.node.name() == peer)
        {
            return member.node;
        }
        assert!(Instant::now() < deadline, "{peer} never became a member");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Serialize, Deserialize)]
enum SinkMsg {}

/// Started with a large argument, which it drops.
struct Sink;

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, msg: SinkMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {}
    }
}

/// s0 starts an actor on s1 with 6 MiB of arguments over a link with 50 ms of delay each
/// way: QUIC takes about a second to send them. s0's heartbeats go on meanwhile, and s1 never
/// suspects it (on the control stream, behind the arguments, they waited for the whole
/// transfer).
#[tokio::test(start_paused = true)]
async fn a_large_remote_spawn_does_not_hold_heartbeats_back() {
    let net = SimNet::new(7);
    net.set_faults(Faults {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
        ..Faults::default()
    });
    let ca = ClusterCa::generate("slow").expect("CA");
    let (_n0, c0) = sim_node(0, &net, &ca, vec![], |_| {}).await;
    let (n1, c1) = sim_node(1, &net, &ca, vec![c0.local_addr()], |_| {}).await;
    until_member(&c1, "s0").await;
    let s1 = until_member(&c0, "s1").await;
    n1.register_module("sink", |_big: String| Sink);
    let mut events = c1.subscribe();

    let big = "x".repeat(6 << 20);
    let started = Instant::now();
    c0.spawn_remote::<SinkMsg>(&s1, "sink", &big)
        .await
        .expect("the spawn");
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(500),
        "the arguments took {took:?} to send: too fast for this test to show anything"
    );
    assert_eq!(
        suspicions(&mut events, "s0"),
        0,
        "s1 suspected s0 while a {took:?} spawn request came from it"
    );
}

/// s0 sends heartbeats every second, s1 every 100 ms. s1 expects s0's as often as s0 says
/// it sends them (the handshake tells), so it never suspects s0 between two.
#[tokio::test(start_paused = true)]
async fn a_peer_sending_heartbeats_less_often_is_not_suspected_between_them() {
    let net = SimNet::new(8);
    let ca = ClusterCa::generate("slow").expect("CA");
    let (_n0, c0) = sim_node(0, &net, &ca, vec![], |config| {
        config.phi.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let mut s0_events = c0.subscribe();
    let (_n1, c1) = sim_node(1, &net, &ca, vec![c0.local_addr()], |_| {}).await;
    let mut events = c1.subscribe();
    until_member(&c1, "s0").await;
    until_member(&c0, "s1").await;
    // Twenty of s0's heartbeats, the first ones included: the detector's history is short.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        suspicions(&mut events, "s0"),
        0,
        "s1 suspected s0, whose heartbeats come every second as it said"
    );
    // The other way round too: s0 does not suspect s1, which sends more often than it.
    assert_eq!(suspicions(&mut s0_events, "s1"), 0, "s0 suspected s1");
}
