//! A node cut off while its session expired learns that the cluster declared it down from the
//! first peer it reaches again: the peer refuses it (or the registry answers its keepalive
//! that the session is gone), and whoever runs it restarts it as a new incarnation.
//!
//! Here every other node stops and starts again on a new address while the client is cut off,
//! so that it knows no address of the cluster any more: it keeps dialing the old ones. The
//! restarted nodes were given its address as a seed, but a node joins through the first seed
//! that accepts it and meets the rest through member lists, which do not name a node none of
//! them counts as a member. Until joining also dialed the seeds after the first, the client
//! never heard that it was down (and so was never restarted), for as long as it ran. The chaos
//! simulation met this with seed 59.
//!
//! Deterministic: a perfect network (a fixed 100 µs per datagram) and paused time. The first
//! voter starts again alone; the other two, 10 ms later, join through it first and the
//! client's address second.

use std::time::Duration;

use ensemble::registry::RegistryConfig;

use crate::setup::{Cluster, four_nodes, run};
use crate::{incarnation_addr, start_node, until};

/// Sessions that expire soon after the client is cut off.
fn tune(settings: &mut RegistryConfig) {
    settings.session_ttl = Duration::from_secs(2);
}

#[test]
fn a_node_cut_off_while_every_peer_restarted_elsewhere_learns_it_was_declared_down() {
    run(23, cut_off_while_all_restarted);
}

async fn cut_off_while_all_restarted(seed: u64) -> Result<(), String> {
    let Cluster {
        net,
        mut nodes,
        ca,
        _dir: dir,
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].addr;
    net.isolate(client);
    until(
        "the registry expiring the cut-off client's session",
        Duration::from_secs(30),
        || {
            nodes[0]
                .registry
                .sessions()
                .iter()
                .all(|s| s.node.name() != "s3")
        },
    )
    .await?;
    for voter in &nodes[..3] {
        voter.node.shutdown().await;
        voter.cluster.leave().await;
    }
    if nodes[3].registry.is_expired() {
        return Err("the client heard of its expiry while it was cut off".into());
    }
    net.heal();

    // The voters start again on their data dirs, as their second incarnations, each on a new
    // address. The first alone; the others once it listens, through it and the client.
    let first = incarnation_addr(0, 1);
    let mut starting = Vec::new();
    for i in 0..3u8 {
        let seeds = if i == 0 { vec![] } else { vec![first, client] };
        let (net, ca, dir) = (net.clone(), ca.clone(), dir.path().to_path_buf());
        starting.push(tokio::spawn(async move {
            start_node(i, 1, 1.0, seeds, &net, &ca, &dir, tune).await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, start) in starting.into_iter().enumerate() {
        nodes[i] = start.await.map_err(|e| e.to_string())??;
    }

    until(
        "the cut-off client hearing that it was declared down",
        Duration::from_secs(30),
        || nodes[3].registry.is_expired(),
    )
    .await
}
