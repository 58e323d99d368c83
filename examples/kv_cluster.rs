//! The example key-value app on a three-node cluster: deployed from a TOML spec, used through
//! its client, and kept running when the node holding its master leaves.
//!
//! The three nodes run in this process for the sake of a one-command example, each with its
//! own QUIC endpoint on 127.0.0.1 (mutual TLS with a throwaway CA), its own registry data dir
//! and its own agent; `tests/apps` runs the same app on separate processes and kills them with
//! `kill -9`.
//!
//! Run: `cargo run --example kv_cluster`

use std::time::{Duration, Instant};

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::kv::{self, KvClient};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::supervisor::app::{AppSpec, Apps};
use ensemble::transport::certs::{ClusterCa, NodeCert};

struct Member {
    node: Node,
    cluster: Cluster,
    registry: Registry,
}

async fn start(
    name: &str,
    cert: &NodeCert,
    data: &std::path::Path,
    seed: Option<std::net::SocketAddr>,
) -> Result<Member, Box<dyn std::error::Error>> {
    let node = Node::new(NodeConfig::new(name))?;
    kv::register_modules(&node);
    let mut config = ClusterConfig::new("example");
    // The registry decides when a node is down (its session expired), the same everywhere.
    config.down = DownDecision::External;
    config.seeds = seed.into_iter().collect();
    let cluster = Cluster::start(&node, config, cert).await?;
    let mut settings = RegistryConfig::new(data.join(name));
    settings.bootstrap = seed.is_none();
    let registry = Registry::start(&cluster, settings).await?;
    Apps::start(&node).await?;
    Ok(Member {
        node,
        cluster,
        registry,
    })
}

/// Waits until `check` holds, up to 30 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = tempfile::tempdir()?;
    let ca = ClusterCa::generate("example")?;
    let first = start("n1", &ca.issue("n1")?, data.path(), None).await?;
    let seed = Some(first.cluster.local_addr());
    let mut members = vec![first];
    for name in ["n2", "n3"] {
        members.push(start(name, &ca.issue(name)?, data.path(), seed).await?);
    }
    println!("three nodes up; the registry runs on all three");

    let apps = Apps::new(&members[0].node)?;
    apps.deploy(&AppSpec::from_toml(kv::APP_SPEC)?).await?;
    let client = KvClient::new(members[1].registry.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match client.status().await {
            Ok(status)
                if status.assigned == status.partitions
                    && status.replicated == status.partitions =>
            {
                break status;
            }
            _ if Instant::now() > deadline => return Err("the app did not settle in 30 s".into()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    println!("deployed app kv: {status}");

    for i in 0..100 {
        client.put(format!("key-{i}"), format!("value-{i}")).await?;
    }
    println!("wrote 100 keys");

    // The node holding the master leaves (its registry session closes at once).
    let master = members[0]
        .registry
        .name_holder(kv::MASTER_NAME)
        .ok_or("the master has no name")?;
    let leaving = members
        .iter()
        .position(|m| m.node.id() == master.id.node())
        .ok_or("the master's node is not a member")?;
    let gone = members.remove(leaving);
    println!("node {} (running the master) leaves", gone.node.id().name());
    let started = Instant::now();
    gone.registry.leave().await?;
    gone.node.shutdown().await;
    gone.cluster.leave().await;

    let registry = members[0].registry.clone();
    until("the master to come back on another node", || {
        registry
            .name_holder(kv::MASTER_NAME)
            .is_some_and(|m| m.id.node() != master.id.node())
    })
    .await?;
    let moved = registry
        .name_holder(kv::MASTER_NAME)
        .ok_or("the master has no name")?;
    println!(
        "master back on {} after {:?}",
        moved.id.node().name(),
        started.elapsed()
    );

    let client = KvClient::new(members[0].registry.clone());
    let mut found = 0;
    for i in 0..100 {
        if client.get(&format!("key-{i}")).await?.as_deref()
            == Some(format!("value-{i}").as_bytes())
        {
            found += 1;
        }
    }
    println!(
        "read back {found} of 100 keys; client stats: {:?}",
        client.stats()
    );
    let apps = Apps::new(&members[0].node)?;
    if let Some(status) = apps.status("kv") {
        for role in status.roles {
            println!(
                "role {}: {} wanted, running {:?}{}",
                role.name,
                role.wanted,
                role.running,
                role.problem.map(|p| format!(" ({p})")).unwrap_or_default()
            );
        }
    }
    for member in members {
        member.registry.leave().await.ok();
        member.node.shutdown().await;
    }
    if found != 100 {
        return Err(format!("only {found} of 100 keys read back").into());
    }
    Ok(())
}
