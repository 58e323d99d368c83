//! Signals between nodes are not dropped while the connection lives: a burst of monitors that
//! overflows the control queue still arrives whole, in order, and every monitor fires.
//!
//! Both nodes run in this process (real QUIC on loopback); the watching node's control queue
//! holds 4 frames, so that a burst from one handler overflows it at once.

use std::time::Duration;

use ensemble::cluster::Cluster;
use ensemble::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::util::*;

/// Actors watched, many times the control queue.
const WATCHED: usize = 300;
const ASK: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum IdleMsg {
    Stop,
}

/// An actor that waits until told to stop.
struct Idle;

impl Actor for Idle {
    type Msg = IdleMsg;

    async fn handle(&mut self, msg: IdleMsg, ctx: &mut Context<Self>) -> ActorResult {
        let IdleMsg::Stop = msg;
        ctx.stop();
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
enum FactoryMsg {
    Make(usize, ReplyTo<Vec<ActorRef<IdleMsg>>>),
}

/// Spawns idle actors on its node and answers their references.
struct Factory;

impl Actor for Factory {
    type Msg = FactoryMsg;

    async fn handle(&mut self, msg: FactoryMsg, ctx: &mut Context<Self>) -> ActorResult {
        let FactoryMsg::Make(count, reply) = msg;
        let made = (0..count)
            .map(|_| ctx.node().spawn(Idle).expect("idle"))
            .collect();
        let _ = reply.send(made);
        Ok(())
    }
}

enum WatcherMsg {
    Watch(Vec<ActorRef<IdleMsg>>, ReplyTo<()>),
}

/// Monitors every actor it is given in one turn, with no await in between, and reports each
/// `Down`.
struct Watcher {
    downs: mpsc::UnboundedSender<ActorId>,
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn handle(&mut self, msg: WatcherMsg, ctx: &mut Context<Self>) -> ActorResult {
        let WatcherMsg::Watch(targets, reply) = msg;
        for target in &targets {
            ctx.monitor(target);
        }
        let _ = reply.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.downs.send(down.actor);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_monitors_larger_than_the_control_queue_all_fire() {
    let certs = certificates(&["n0", "n1"]);
    let watching = Node::new(NodeConfig::new("n0")).expect("node");
    let mut config = test_config("test");
    config.control_queue = 4;
    let cert = ensemble::transport::certs::NodeCert::load(certs.path(), "n0").expect("cert");
    let cluster = Cluster::start(&watching, config, &cert)
        .await
        .expect("cluster");
    let (watched, other) = local_node_joining("n1", certs.path(), cluster.local_addr()).await;
    let factory = watched.spawn(Factory).expect("factory");
    watched
        .register_remote("factory", &factory)
        .expect("register");
    wait_members(&cluster, &["n1"]).await;
    let factory = cluster
        .whereis::<FactoryMsg>(&member_id(&cluster, "n1"), "factory")
        .await
        .expect("the factory");
    let targets = factory
        .ask(|reply| FactoryMsg::Make(WATCHED, reply), ASK)
        .await
        .expect("the actors");
    let (tx, mut downs) = mpsc::unbounded_channel();
    let watcher = watching.spawn(Watcher { downs: tx }).expect("watcher");
    watcher
        .ask(|reply| WatcherMsg::Watch(targets.clone(), reply), ASK)
        .await
        .expect("watching");
    // The monitors went out on the control stream, the stops go on data lanes: a lookup
    // answered on the control stream means n1 has handled every monitor before it.
    let _ = cluster
        .whereis::<FactoryMsg>(&member_id(&cluster, "n1"), "factory")
        .await;
    for target in &targets {
        target.tell(IdleMsg::Stop).await.expect("stop");
    }
    let mut fired = std::collections::HashSet::new();
    while fired.len() < WATCHED {
        match tokio::time::timeout(DEADLINE, downs.recv()).await {
            Ok(Some(actor)) => {
                fired.insert(actor);
            }
            _ => panic!(
                "{} of {WATCHED} monitors fired within {DEADLINE:?}",
                fired.len()
            ),
        }
    }
    drop(other);
    watched.shutdown().await;
    watching.shutdown().await;
}
