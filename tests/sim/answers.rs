//! A write from a node whose copy the leader feeds costs the leader one datagram to that node:
//! the batch, sent early (`registry/src/client/early.rs`), from which the node's copy answers
//! the write. The leader's word that such batches committed, and the answers that go with it
//! (`registry/src/server/answers.rs`), follow for many writes at once; sent for each write, or
//! with an answer of its own apart from the batch, they would make two.
//!
//! The test is deterministic: a perfect network (100 µs a datagram) and paused time.

use std::time::Duration;

use crate::notices::tune;
use crate::setup::{Cluster, four_nodes, run};

/// Writes timed.
const WRITES: u64 = 20;

#[test]
fn a_write_from_a_client_node_costs_the_leader_one_datagram_to_that_node() {
    run(24, each_write_costs_one_datagram);
}

async fn each_write_costs_one_datagram(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = &nodes[3];
    let leader = nodes[..3]
        .iter()
        .find(|node| node.registry.leads())
        .ok_or("no voter leads")?;
    // One write first, so that the client's copy is fed and its connections settled.
    client
        .registry
        .put("answers/key", "first")
        .await
        .map_err(|e| format!("the first put failed: {e}"))?;
    net.record();
    for write in 0..WRITES {
        // Apart, so that nothing but this write is under way.
        tokio::time::sleep(Duration::from_millis(3)).await;
        client
            .registry
            .put("answers/key", format!("value {write}"))
            .await
            .map_err(|e| format!("put {write} failed: {e}"))?;
    }
    let to_client = format!("{} -> {} ", leader.addr, client.addr);
    let sent = net
        .journal()
        .iter()
        .filter(|line| line.contains(&to_client))
        .count() as u64;
    eprintln!("the leader sent the client node {sent} datagrams for {WRITES} writes");
    // One a write, and a few to spare for the leader's word of commits, acknowledgements and
    // heartbeats: with that word, or the answers, apart for each write, it is two a write.
    if sent > WRITES * 3 / 2 {
        return Err(format!(
            "the leader sent the client node {sent} datagrams for {WRITES} writes: the answers \
             or the word that the writes committed went apart for each write"
        ));
    }
    Ok(())
}
