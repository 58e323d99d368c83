//! An operator moves a registry vote by hand (`Registry::move_vote`): the node named takes the
//! vote, the node it moved from keeps running without standing for election, and is dropped
//! from the Raft group once its log holds the configuration without its vote. Refusals name
//! what was wrong and leave the voters as they were.
//!
//! Deterministic: a perfect network and paused time.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::SimNode;
use crate::setup::{Cluster, four_nodes, leader_named_by, put_retrying, run};

/// How long the node whose vote moved is watched, still running: several election timeouts.
const WATCHED: Duration = Duration::from_secs(1);

fn defaults(_: &mut RegistryConfig) {}

#[test]
fn a_vote_moved_by_hand_goes_to_the_node_named() {
    run(71, |seed| moved(seed, false));
}

#[test]
fn the_leaders_vote_moved_by_hand_goes_and_another_leads() {
    run(73, |seed| moved(seed, true));
}

/// The vote of a voter (the leader if `leader`) moves to the client s3, asked through the
/// other node that does not lead. Right after, the voters are the two others and s3; the node
/// it moved from does not raise its term while it runs (it stays a learner until its log holds
/// the configuration without its vote: removed outright, the leader would stop sending it the
/// log and it would stand for election on a log that still names it a voter); then it is
/// dropped (its log falls behind the writes). Then one of the two first voters that kept their
/// votes stops, and the registry still writes: s3's vote counts.
async fn moved(seed: u64, leader: bool) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = &nodes[3].registry;
    put_retrying(client, "moved/before", b"1", "the cluster").await?;
    let leading = leader_named_by(client, &nodes)?;
    let from = if leader {
        leading
    } else {
        (0..3).find(|&i| i != leading).expect("a follower")
    };
    let stays: Vec<usize> = (0..3).filter(|&i| i != from).collect();
    let name = |i: usize| nodes[i].node.id().name().to_owned();
    let asker = stays
        .iter()
        .copied()
        .find(|&i| i != leading)
        .expect("a voter that neither leads nor loses its vote");
    let term = nodes[from].registry.raft_status().term;
    nodes[asker]
        .registry
        .move_vote(&name(from), "s3")
        .await
        .map_err(|e| format!("moving the vote of {} to s3: {e}", name(from)))?;
    let mut expected = vec![name(stays[0]), name(stays[1]), "s3".to_owned()];
    expected.sort();
    let voters = client
        .voters()
        .await
        .map_err(|e| format!("the voters after the move: {e}"))?;
    if voters != expected {
        return Err(format!(
            "right after the vote of {} moved to s3, the voters are {voters:?}, not {expected:?}",
            name(from)
        ));
    }
    if !leader {
        // A leader that gave its vote away has stepped down in this term and is a learner.
        unchanged_term(&nodes[from], term).await?;
    }
    dropped(&nodes, from, client).await?;
    // Asked again, through any node, the move is refused: the node it was from does not vote.
    for node in &nodes {
        match node.registry.move_vote(&name(from), "s3").await {
            Err(RegistryError::VoteNotMoved { why, tried: false })
                if why.contains("does not vote") => {}
            other => {
                return Err(format!(
                    "the move asked again once done, through {}, answered {other:?}",
                    node.node.id().name()
                ));
            }
        }
    }
    put_retrying(client, "moved/between", b"2", "the voters after the move").await?;
    let now_leading = client.leader().ok_or("no leader named after a write")?;
    let second = *stays
        .iter()
        .find(|&&i| name(i) != now_leading)
        .expect("two first voters kept their votes, one of them not leading");
    nodes[second].node.shutdown().await;
    nodes[second].cluster.leave().await;
    put_retrying(client, "moved/after", b"3", "s3 and one first voter").await?;
    match client.get("moved/before").await {
        Ok(Some(kv)) if kv.value == b"1" => Ok(()),
        other => Err(format!("the write before the move reads back as {other:?}")),
    }
}

/// Watches `node`'s term for [`WATCHED`]: it must not stand for election.
async fn unchanged_term(node: &SimNode, term: u64) -> Result<(), String> {
    let end = Instant::now() + WATCHED;
    while Instant::now() < end {
        let now = node.registry.raft_status().term;
        if now != term {
            return Err(format!(
                "{} stood for election after its vote moved: its term went from {term} to {now}",
                node.node.id()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Waits until node `from` no longer gets the log (the leader dropped it from the Raft group,
/// its log holding the configuration without its vote) while `client` writes.
async fn dropped(
    nodes: &[SimNode],
    from: usize,
    client: &ensemble::registry::Registry,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut writes = 0;
    loop {
        let before = nodes[from].registry.raft_status();
        if before.voter {
            return Err(format!(
                "{}'s own log still names it a voter after its vote moved",
                nodes[from].node.id()
            ));
        }
        put_retrying(client, "moved/probe", b"p", "the voters after the move").await?;
        writes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if nodes[from].registry.raft_status().last_log_index == before.last_log_index {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} still gets the log 5 s after its vote moved ({writes} writes)",
                nodes[from].node.id()
            ));
        }
    }
}

#[test]
fn a_vote_move_that_cannot_be_made_is_refused_naming_why() {
    run(79, refused);
}

/// Each wrong move is refused with [`RegistryError::VoteNotMoved`], saying what was wrong, and
/// the voters stay as they were.
async fn refused(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = &nodes[3].registry;
    let before = client
        .voters()
        .await
        .map_err(|e| format!("the voters before: {e}"))?;
    let (voter, other) = (before[0].clone(), before[1].clone());
    let cases = [
        ("s3", "s2", "does not vote in the registry"),
        (
            voter.as_str(),
            other.as_str(),
            "votes in the registry already",
        ),
        (voter.as_str(), "s9", "is not a member of the cluster"),
        (voter.as_str(), voter.as_str(), "was named both"),
    ];
    for (from, to, why) in cases {
        match client.move_vote(from, to).await {
            Err(RegistryError::VoteNotMoved {
                why: reason,
                tried: false,
            }) if reason.contains(why) => {}
            other => {
                return Err(format!(
                    "moving the vote of {from} to {to} answered {other:?}, not that {why}"
                ));
            }
        }
    }
    // A node on its way out takes no vote.
    client
        .leave()
        .await
        .map_err(|e| format!("s3's leave: {e}"))?;
    match nodes[0].registry.move_vote(&voter, "s3").await {
        Err(RegistryError::VoteNotMoved {
            why: reason,
            tried: false,
        }) if reason.contains("leaving") || reason.contains("no open registry session") => {}
        other => {
            return Err(format!(
                "moving the vote of {voter} to s3, which left, answered {other:?}, not that it \
                 leaves"
            ));
        }
    }
    let after = nodes[0]
        .registry
        .voters()
        .await
        .map_err(|e| format!("the voters after: {e}"))?;
    if after != before {
        return Err(format!(
            "the refused moves changed the voters from {before:?} to {after:?}"
        ));
    }
    Ok(())
}
