//! An operator sets how many voters the registry keeps (`Registry::set_voter_count`): the
//! leader shrinks or grows the voter set to that count, one voter at a time, and every leader
//! after it keeps the count rather than its node's own `voters` setting. Counts the registry
//! does not keep are refused before anything is sent.
//!
//! Deterministic: a perfect network and paused time.

use std::time::Duration;

use ensemble::registry::{MAX_VOTERS, Registry, RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, leader_named_by, nodes, put_retrying, run};

fn defaults(_: &mut RegistryConfig) {}

/// How long growing may take: a catch-up per voter added, with room.
const GROWN: Duration = Duration::from_secs(30);

/// How long shrinking may take: a few of the leader's duty ticks per voter removed, well
/// within the voter grace (30 s), after which a gone voter's vote would move anyway.
const SHRUNK: Duration = Duration::from_secs(5);

#[test]
fn the_voters_shrink_and_grow_to_the_count_an_operator_sets() {
    run(81, shrink_then_grow);
}

#[test]
fn a_new_leader_keeps_the_count_set_and_shrinks_by_the_voter_it_cannot_reach() {
    run(83, kept_by_the_next_leader);
}

#[test]
fn a_voter_that_leaves_is_the_one_to_go_when_the_count_drops() {
    run(85, the_voter_that_leaves_goes);
}

/// Refused counts first (the voters stay three). Then one voter, asked through the client
/// s3: the leader keeps its vote and its lead, the two others give theirs up and do not
/// stand for election; both stop (a crash) and the registry still writes, on the leader's
/// vote alone. Then two voters: s3, the only node left that may vote, takes the second vote.
async fn shrink_then_grow(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = &nodes[3].registry;
    put_retrying(client, "count/before", b"1", "the cluster").await?;
    for asked in [0, MAX_VOTERS as usize + 1] {
        match client.set_voter_count(asked).await {
            Err(RegistryError::BadVoterCount { asked: said, max })
                if said == asked && max == MAX_VOTERS as usize => {}
            other => return Err(format!("a count of {asked} voters answered {other:?}")),
        }
    }
    let leading = leader_named_by(client, &nodes)?;
    let leader = nodes[leading].node.id().name().to_owned();
    let term = nodes[leading].registry.raft_status().term;
    client
        .set_voter_count(1)
        .await
        .map_err(|e| format!("setting one voter: {e}"))?;
    voters_become(client, std::slice::from_ref(&leader), SHRUNK).await?;
    let others: Vec<usize> = (0..3).filter(|&i| i != leading).collect();
    // Several election timeouts: neither former voter stands, nor does the leader lose its
    // lead.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for &i in &others {
        let status = nodes[i].registry.raft_status();
        if status.voter || status.term != term {
            return Err(format!(
                "{} after giving its vote up: its log names it a voter: {}, term {} (was {term})",
                nodes[i].node.id(),
                status.voter,
                status.term
            ));
        }
    }
    if nodes[leading].registry.raft_status().term != term || client.leader() != Some(leader.clone())
    {
        return Err(format!(
            "the leader {leader} lost its lead as the voters shrank (term {} after {term})",
            nodes[leading].registry.raft_status().term
        ));
    }
    if nodes.iter().any(|n| n.registry.voter_count() != Some(1)) {
        return Err("a node's copy does not show the count of one voter".into());
    }
    for &i in &others {
        nodes[i].node.shutdown().await;
        nodes[i].cluster.leave().await;
    }
    put_retrying(client, "count/one", b"2", "the leader voting alone").await?;
    client
        .set_voter_count(2)
        .await
        .map_err(|e| format!("setting two voters: {e}"))?;
    let mut two = vec![leader.clone(), "s3".to_owned()];
    two.sort();
    voters_become(client, &two, GROWN).await?;
    put_retrying(client, "count/two", b"3", "the leader and s3").await?;
    match client.get("count/before").await {
        Ok(Some(kv)) if kv.value == b"1" => Ok(()),
        other => Err(format!(
            "the write before the changes reads back as {other:?}"
        )),
    }
}

/// Four voters by the nodes' own setting, three by an operator's count: the voter last by
/// name but the leader gives its vote up. Then the leader stops (a crash). The next leader's
/// own setting (four) would have it grow the voters back, the node that gave its vote up
/// being free to take one; it keeps three, the count being in the registry's state, and the
/// stopped node keeps its vote through the voter grace. Then two are set: the stopped
/// node's vote goes, the one the leader cannot reach, not the last by name.
async fn kept_by_the_next_leader(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, four_voters).await?;
    let client = &nodes[3].registry;
    let all: Vec<String> = nodes
        .iter()
        .map(|n| n.node.id().name().to_owned())
        .collect();
    voters_become(client, &all, GROWN).await?;
    put_retrying(client, "count/before", b"1", "the cluster").await?;
    client
        .set_voter_count(3)
        .await
        .map_err(|e| format!("setting three voters: {e}"))?;
    let leader = client.leader().ok_or("no leader named after a write")?;
    let out = all
        .iter()
        .filter(|n| **n != leader)
        .max()
        .expect("voters besides the leader")
        .clone();
    let three: Vec<String> = all.iter().filter(|n| **n != out).cloned().collect();
    voters_become(client, &three, SHRUNK).await?;
    let leading = nodes
        .iter()
        .position(|n| n.node.id().name() == leader)
        .expect("the leader is a node");
    nodes[leading].node.shutdown().await;
    nodes[leading].cluster.leave().await;
    let asker = &nodes[all.iter().position(|n| *n == out).expect("a node")].registry;
    put_retrying(asker, "count/after", b"2", "the two voters left").await?;
    let next = asker.leader().ok_or("no leader named after a write")?;
    if next == leader {
        return Err(format!("the stopped leader {leader} is still named"));
    }
    let watched = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watched {
        let voters = voters_of(asker).await?;
        if voters != three {
            return Err(format!(
                "under the new leader {next}, the voters became {voters:?}: the count of three \
                 was not kept"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    asker
        .set_voter_count(2)
        .await
        .map_err(|e| format!("setting two voters: {e}"))?;
    let running: Vec<String> = three.iter().filter(|n| **n != leader).cloned().collect();
    if running.iter().all(|n| *n == next || *n < leader) {
        return Err(format!(
            "the stopped leader {leader} is last by name of the voters but the next leader: \
             the test tells nothing of the rank of a voter that cannot be reached"
        ));
    }
    voters_become(asker, &running, SHRUNK).await?;
    put_retrying(asker, "count/later", b"3", "the two running voters").await
}

/// Three voters and no other node. The follower first by name leaves: told that no node may
/// take its vote, it leaves a voter. Two voters are set as its leave ends: its vote is the one
/// that goes, not the last by name's. Then it stops, and the two others still write: had its
/// vote stayed, they would be one of two.
async fn the_voter_that_leaves_goes(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = nodes(seed, 3, defaults).await?;
    let all: Vec<String> = nodes
        .iter()
        .map(|n| n.node.id().name().to_owned())
        .collect();
    let first = &nodes[0].registry;
    voters_become(first, &all, GROWN).await?;
    put_retrying(first, "count/before", b"1", "the cluster").await?;
    let leader = first.leader().ok_or("no leader named after a write")?;
    let leaves = all.iter().position(|n| *n != leader).expect("a follower");
    let stays: Vec<String> = all.iter().filter(|n| **n != all[leaves]).cloned().collect();
    if stays.iter().all(|n| *n == leader || *n < all[leaves]) {
        return Err("the follower that leaves is last by name: the test tells nothing".into());
    }
    nodes[leaves]
        .registry
        .leave()
        .await
        .map_err(|e| format!("{} leaving: {e}", all[leaves]))?;
    let asker = nodes
        .iter()
        .find(|n| n.node.id().name() == leader)
        .expect("the leader is a node");
    asker
        .registry
        .set_voter_count(2)
        .await
        .map_err(|e| format!("setting two voters: {e}"))?;
    voters_become(&asker.registry, &stays, SHRUNK).await?;
    nodes[leaves].node.shutdown().await;
    nodes[leaves].cluster.leave().await;
    put_retrying(&asker.registry, "count/after", b"2", "the two voters left").await
}

fn four_voters(config: &mut RegistryConfig) {
    config.voters = 4;
}

/// The registry's voters, sorted, as its leader answers.
async fn voters_of(client: &Registry) -> Result<Vec<String>, String> {
    let mut voters = client
        .voters()
        .await
        .map_err(|e| format!("reading the voters: {e}"))?;
    voters.sort();
    Ok(voters)
}

/// Waits up to `within` until the voters are `wanted` (sorted).
async fn voters_become(
    client: &Registry,
    wanted: &[String],
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let voters = voters_of(client).await?;
        if voters == wanted {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the voters are {voters:?} {within:?} after the count was set, not {wanted:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
