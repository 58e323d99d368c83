//! A client node's copy applies its node's writes once it holds copies of a majority of the
//! voters (`registry/src/client/early.rs`): the leader's, sent as soon as it is on the leader's
//! disk, and a follower's notice. That takes a write three trips across the network (the
//! request, the AppendEntries, the notice), where waiting for the leader to hear of the commit
//! takes four. A copy that hears from no follower still gets its writes, on the leader's word
//! that they committed.
//!
//! The tests are deterministic: a perfect network and paused time. A trip's time is measured
//! as half a linearizable read (the request and its answer, on the leader's lease).

use std::time::Duration;

use ensemble::registry::Registry;
use tokio::time::Instant;

use crate::notices::tune;
use crate::setup::{Cluster, four_nodes, run};

/// Writes timed.
const WRITES: usize = 10;
/// How long the leader holds back its word that batches a client's copy was sent early
/// committed (`registry/src/server/early.rs`).
const HELD_BACK: Duration = Duration::from_millis(20);

/// One trip from a node to another: half a linearizable read from `client`.
async fn a_trip(client: &Registry) -> Result<Duration, String> {
    let start = Instant::now();
    client
        .get("early/any")
        .await
        .map_err(|e| format!("a linearizable read failed: {e}"))?;
    Ok(start.elapsed() / 2)
}

#[test]
fn a_client_nodes_write_is_applied_once_a_follower_holds_it() {
    run(31, writes_take_three_hops);
}

async fn writes_take_three_hops(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let client = &nodes[3].registry;
    // One write first, so that the client's copy is fed and its connections settled.
    client
        .put("early/key", "first")
        .await
        .map_err(|e| format!("the first put failed: {e}"))?;
    let trip = a_trip(client).await?;
    for write in 0..WRITES {
        // Apart, so that nothing but this write is under way.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let value = format!("value {write}");
        let start = Instant::now();
        client
            .put("early/key", value.clone())
            .await
            .map_err(|e| format!("put {write} failed: {e}"))?;
        let took = start.elapsed();
        // The request, the AppendEntries, the follower's notice; the leader's answer would
        // come a fourth datagram later.
        if took >= trip * 4 {
            return Err(format!(
                "put {write} took {took:?}, four trips of {trip:?} or more: the client's copy \
                 did not count the follower's notice"
            ));
        }
        let shown = client.get_cached("early/key").map(|kv| kv.value);
        if shown.as_deref() != Some(value.as_bytes()) {
            return Err(format!(
                "after put {write} the client's copy shows {shown:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn a_client_node_cut_off_from_the_followers_gets_its_writes_on_the_leaders_word() {
    run(32, writes_go_on_without_notices);
}

async fn writes_go_on_without_notices(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = &nodes[3];
    let followers: Vec<_> = nodes[..3]
        .iter()
        .filter(|node| !node.registry.leads())
        .map(|node| node.addr)
        .collect();
    if followers.len() != 2 {
        return Err(format!("{} voters follow, not two", followers.len()));
    }
    client
        .registry
        .put("early/cut", "first")
        .await
        .map_err(|e| format!("the first put failed: {e}"))?;
    let trip = a_trip(&client.registry).await?;
    net.partition(&[client.addr], &followers);
    for write in 0..WRITES {
        let value = format!("value {write}");
        let start = Instant::now();
        client
            .registry
            .put("early/cut", value.clone())
            .await
            .map_err(|e| format!("put {write}, with no follower reachable, failed: {e}"))?;
        let took = start.elapsed();
        // No notice comes: the copy waits for the leader's word that the batch committed, which
        // the leader holds back for a while. Far longer, and the copy had to be sent the whole
        // state again.
        if took <= trip * 4 || took > HELD_BACK + trip * 6 {
            return Err(format!(
                "put {write} took {took:?} with no follower reachable; the leader's word should \
                 have come within {HELD_BACK:?} and a few trips of {trip:?} after the request"
            ));
        }
        let shown = client.registry.get_cached("early/cut").map(|kv| kv.value);
        if shown.as_deref() != Some(value.as_bytes()) {
            return Err(format!(
                "after put {write} the client's copy shows {shown:?}"
            ));
        }
    }
    Ok(())
}
