//! Two nodes talking over QUIC with mutual TLS: `pinger` finds `ponger`'s actor by name and
//! plays ping-pong with it, then spawns a second actor on `ponger` by module name.
//!
//! Both nodes run in this process for the sake of a one-command example; they talk over real
//! QUIC connections on 127.0.0.1 exactly as nodes in separate processes or machines do (the
//! tests in `tests/cluster` run them as separate processes). A throwaway cluster CA is made in
//! memory.
//!
//! Run: `cargo run --example ping_pong_remote`

use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig};
use ensemble::prelude::*;
use ensemble::transport::certs::ClusterCa;
use serde::{Deserialize, Serialize};

/// The protocol crosses nodes, so it derives serde.
#[derive(Debug, Serialize, Deserialize)]
enum PongMsg {
    Ping(u32, ReplyTo<String>),
}

struct Ponger {
    greeting: String,
}

impl Actor for Ponger {
    type Msg = PongMsg;

    async fn handle(
        &mut self,
        PongMsg::Ping(n, reply): PongMsg,
        ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = reply.send(format!("{} pong {n} from {}", self.greeting, ctx.id()));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = ClusterCa::generate("example")?;
    let pinger_cert = ca.issue("pinger")?;
    let ponger_cert = ca.issue("ponger")?;

    // The ponger node: an actor registered for other nodes, and a module they may spawn.
    let ponger = Node::new(NodeConfig::new("ponger"))?;
    let ponger_cluster =
        Cluster::start(&ponger, ClusterConfig::new("example"), &ponger_cert).await?;
    let actor = ponger.spawn(Ponger {
        greeting: "hello,".into(),
    })?;
    ponger.register_remote("ponger", &actor)?;
    ponger.register_module("ponger", |greeting: String| Ponger { greeting });
    println!("ponger listens on {}", ponger_cluster.local_addr());

    // The pinger node joins through the ponger.
    let pinger = Node::new(NodeConfig::new("pinger"))?;
    let mut config = ClusterConfig::new("example");
    config.seeds = vec![ponger_cluster.local_addr()];
    let cluster = Cluster::start(&pinger, config, &pinger_cert).await?;
    let members = cluster.members();
    println!(
        "pinger joined; members: {:?}",
        members
            .iter()
            .map(|m| m.node.to_string())
            .collect::<Vec<_>>()
    );

    let remote = cluster.whereis::<PongMsg>(ponger.id(), "ponger").await?;
    for n in 1..=3 {
        let answer = remote
            .ask(|r| PongMsg::Ping(n, r), Duration::from_secs(5))
            .await?;
        println!("pinger got: {answer}");
    }

    let spawned = cluster
        .spawn_remote::<PongMsg>(ponger.id(), "ponger", &"good day,".to_owned())
        .await?;
    let answer = spawned
        .ask(|r| PongMsg::Ping(4, r), Duration::from_secs(5))
        .await?;
    println!("pinger got from a spawned actor: {answer}");

    cluster.leave().await;
    ponger_cluster.leave().await;
    Ok(())
}
