//! A voter restarted with its data dir while a leader leads waits for that leader's first
//! AppendEntries before it stands for election.
//!
//! A leader tries a follower it cannot reach every heartbeat interval for two seconds, then
//! every half second (`raft::network`), and openraft's election timer of a voter back from a
//! crash runs from its start: 150–250 ms for a former leader, whose vote comes back
//! uncommitted (`raft::log_store`). Until 2026-12-07 such a voter stood as soon as the leader
//! said it was among the voters, before that leader had replicated anything to it, and stood
//! on the log it came back with whenever its timer ran out first, or the leader stopped
//! before reaching it. The voters refused it for its shorter log; but openraft 0.9 keeps the
//! mark of a greater log seen until the node next stands, and that mark adds twice the
//! longest election timeout (500 ms) to its next wait, however long after and however far it
//! has caught up since. When that node was the one whose log could lead next, failover took
//! twice as long: `cargo bench --bench registry`, which starts the killed leader again before
//! it kills the next one, had such trials of 1.06–1.6 s against 0.5 s.
//!
//! In both tests the leader is stopped without leaving (a crash) for longer than the new
//! leader's quick retries, and started again. In the first, the voter back must not stand
//! before a leader has replicated to it, and no term may go past the new leader's until it
//! has caught up and stood, and a while after. In the second, the new leader is stopped as
//! soon as the voter back stands or hears from it, as the benchmark does: the third voter,
//! whose log is ahead, must win the next election alone, in the next term. Then the voter
//! back, caught up and standing, sees that leader stop too, and must stand within the
//! longest wait of a follower that heard a leader ([`FIRST_STANDING`]): with the mark left
//! by an election it had stood in on its old log, it took 0.92–1.0 s (30 seeds), without it
//! 0.40–0.48 s.
//!
//! Deterministic: a perfect network and paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, leader_named_by, put_retrying, run};
use crate::{SimNode, start_node};

/// How long the voter is away: past the leader's two seconds of quick retries, within the
/// voter grace (30 s), so that it keeps its vote.
const AWAY: Duration = Duration::from_secs(4);

/// How long the terms are watched after the restarted voter stands: several election
/// timeouts.
const WATCHED_AFTER: Duration = Duration::from_secs(2);

/// The longest a follower that heard a leader waits after it stops before it stands:
/// openraft's leader lease (the longest election timeout, 250 ms), the longest election
/// timeout again, and one of openraft's ticks (75 ms), with 25 ms to spare. openraft 0.9's
/// mark of a greater log seen adds twice the longest election timeout (500 ms).
const FIRST_STANDING: Duration = Duration::from_millis(600);

#[test]
fn a_restarted_voter_does_not_stand_before_the_leader_replicates_to_it() {
    run(11, stands_once_replicated_to);
}

#[test]
fn a_voter_restarted_as_the_leader_dies_leaves_the_next_election_to_one_with_the_log() {
    run(11, leader_dies_after_the_restart);
}

/// A cluster whose leader was stopped for [`AWAY`] and started again: the position of the
/// one back, and the term of the leader elected while it was away.
struct Back {
    cluster: Cluster,
    back: usize,
    term: u64,
}

async fn leader_stopped_and_back(seed: u64) -> Result<Back, String> {
    let mut cluster = four_nodes(seed, |_| {}).await?;
    let client = cluster.nodes[3].registry.clone();
    put_retrying(&client, "restart/first", b"1", "the cluster").await?;
    let back = leader_named_by(&client, &cluster.nodes)?;

    cluster.nodes[back].node.shutdown().await;
    cluster.nodes[back].cluster.leave().await;
    let until = Instant::now() + AWAY;
    let mut written = 0;
    while Instant::now() < until {
        put_retrying(&client, &format!("restart/{written}"), b"x", "two voters").await?;
        written += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = cluster.nodes[(back + 1) % 3].registry.raft_status().term;

    let seeds = vec![cluster.nodes[3].addr];
    let (net, ca, dir) = (&cluster.net, &cluster.ca, cluster._dir.path());
    cluster.nodes[back] = start_node(back as u8, 1, 1.0, seeds, net, ca, dir, |_| {}).await?;
    Ok(Back {
        cluster,
        back,
        term,
    })
}

/// Fails if the voter back stands while no leader has replicated to it. It knows of no
/// leader until one does: a former leader's vote comes back uncommitted, and openraft names
/// the leader of a committed vote only.
fn stands_unheard(nodes: &[SimNode], back: usize) -> Result<(), String> {
    let status = nodes[back].registry.raft_status();
    if status.stands && status.leader.is_none() {
        return Err(format!(
            "the restarted voter stands before a leader replicated to it (its log ends at {:?})",
            status.last_log_index
        ));
    }
    Ok(())
}

fn terms(nodes: &[SimNode]) -> Vec<u64> {
    nodes[..3]
        .iter()
        .map(|n| n.registry.raft_status().term)
        .collect()
}

async fn stands_once_replicated_to(seed: u64) -> Result<(), String> {
    let Back {
        cluster,
        back,
        term,
    } = leader_stopped_and_back(seed).await?;
    let nodes = &cluster.nodes;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stood_at = None;
    loop {
        let now = Instant::now();
        stands_unheard(nodes, back)?;
        if nodes[back].registry.raft_status().stands && stood_at.is_none() {
            stood_at = Some(now);
        }
        // The one that came back catches up to the leader's term as it hears from it; no
        // term may go past it.
        let now_terms = terms(nodes);
        let moved = |(i, &t): (usize, &u64)| if i == back { t > term } else { t != term };
        if now_terms.iter().enumerate().any(moved) {
            return Err(format!(
                "the voters' terms went from {term} to {now_terms:?} after voter {} came back",
                nodes[back].node.id().name(),
            ));
        }
        match stood_at {
            Some(at) if now >= at + WATCHED_AFTER => break,
            None if now > deadline => {
                return Err("the restarted voter did not stand within 20 s".into());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    put_retrying(&nodes[3].registry, "restart/after", b"2", "the voters").await
}

async fn leader_dies_after_the_restart(seed: u64) -> Result<(), String> {
    let Back {
        cluster,
        back,
        term,
    } = leader_stopped_and_back(seed).await?;
    let Cluster {
        net,
        mut nodes,
        ca,
        _dir: dir,
    } = cluster;
    let client = nodes[3].registry.clone();
    let leading = leader_named_by(&client, &nodes)?;
    let third = 3 - back - leading;
    stop_once_stood_or_heard(&nodes, back, leading).await?;
    put_watching(&nodes, back, &client, "restart/after").await?;
    let status = nodes[third].registry.raft_status();
    let winner = nodes[third].node.id().name();
    if status.leader.as_deref() != Some(winner) || status.term != term + 1 {
        return Err(format!(
            "the next leader was to be {winner}, elected in term {}; {winner} names {:?} in \
             term {} (the voter back is in term {})",
            term + 1,
            status.leader,
            status.term,
            nodes[back].registry.raft_status().term
        ));
    }

    // Then the voter back has to stand in its turn: once it has caught up and stands, the new
    // leader stops too. The voter back is the only one left, so its election fails, but it
    // must stand as soon as a follower does; then the first leader comes back, and it wins.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mine = nodes[back].registry.raft_status();
        if mine.stands && mine.last_log_index >= status.last_log_index {
            break;
        }
        if Instant::now() > deadline {
            return Err("the voter back did not catch up and stand within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stopped = Instant::now();
    nodes[third].node.shutdown().await;
    nodes[third].cluster.leave().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mine = nodes[back].registry.raft_status();
        if mine.term > term + 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the voter back did not stand within 20 s of the leader's stop".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = stopped.elapsed();
    if took > FIRST_STANDING {
        return Err(format!(
            "the voter back stood {took:?} after the leader stopped, more than the longest \
             wait for an election ({FIRST_STANDING:?})"
        ));
    }
    let seeds = vec![nodes[3].addr];
    nodes[leading] =
        start_node(leading as u8, 1, 1.0, seeds, &net, &ca, dir.path(), |_| {}).await?;
    put_watching(&nodes, leading, &client, "restart/last").await
}

/// Waits until voter `back` stands or hears a leader, then stops voter `leading`: a crash.
/// Returns when it stopped.
async fn stop_once_stood_or_heard(
    nodes: &[SimNode],
    back: usize,
    leading: usize,
) -> Result<Instant, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = nodes[back].registry.raft_status();
        if status.stands || status.leader.is_some() {
            break;
        }
        if Instant::now() > deadline {
            return Err("the restarted voter neither stood nor heard a leader within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stands_unheard(nodes, back)?;
    let stopped = Instant::now();
    nodes[leading].node.shutdown().await;
    nodes[leading].cluster.leave().await;
    Ok(stopped)
}

/// Writes `key` through `client`, checking every millisecond meanwhile that voter `back` does
/// not stand unheard.
async fn put_watching(
    nodes: &[SimNode],
    back: usize,
    client: &ensemble::registry::Registry,
    key: &str,
) -> Result<(), String> {
    let write = put_retrying(client, key, b"2", "the two voters left");
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written,
            _ = tokio::time::sleep(Duration::from_millis(1)) => stands_unheard(nodes, back)?,
        }
    }
}
