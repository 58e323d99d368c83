//! A former voter that the leader begins to take back does not stand for election on its old
//! log. Its vote moved while it was away (a crash, then the voter grace); back with its data
//! dir, its log names it a voter of the configuration of before. When the leader then gives
//! it a vote again, it adds it as a learner and catches it up from where its log ends, which
//! is before the configuration that left it out; and the leader commits the configuration
//! that counts it again with the copies of the others, maybe before the former voter's log
//! holds it. Until 2026-12-07 it stood for election from the leader's first AppendEntries
//! on, and once it did, a leader that stopped then left it standing on its old log: it raised
//! its term above the voters' (which refuse it, their logs being ahead), and the next
//! leader's first AppendEntries to it met a later term and stepped down. Now it stands only
//! once the leader counts it among the voters and its own log holds that configuration.
//!
//! The leader is stopped while it catches the former voter up (each datagram takes 5 ms
//! then), and the one other voter that may stand is cut off for a while, so that no leader
//! comes: the former voter's term must stay put meanwhile. Each of the two conditions alone
//! lets it rise (checked by taking either out).
//!
//! Deterministic: a perfect network and paused time.

use std::time::Duration;

use ensemble::registry::RegistryConfig;
use ensemble::transport::simnet::Faults;
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, leader_named_by, put_retrying, run};
use crate::start_node;

/// Writes made while the former voter is away, before its vote moves: several AppendEntries'
/// worth (256 entries each) to catch up before its log holds the configuration that leaves
/// it out, so that the leader can be stopped in the middle.
const WRITES_AWAY: usize = 1_500;

/// How long a datagram takes while the leader catches the former voter up.
const SLOW_LINK: Duration = Duration::from_millis(5);

/// How long the former voter's term is watched after the leader stopped: several election
/// timeouts, and less than the five silences after which a node named a voter stands all
/// the same.
const WATCHED: Duration = Duration::from_secs(2);

/// A short voter grace, so that the former voter's vote moves soon after it stopped.
fn tune(settings: &mut RegistryConfig) {
    settings.voter_grace = Duration::from_secs(1);
}

#[test]
fn a_former_voter_being_taken_back_does_not_stand_on_its_old_log() {
    run(53, taken_back);
}

async fn taken_back(seed: u64) -> Result<(), String> {
    let Cluster {
        net,
        mut nodes,
        ca,
        _dir: dir,
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    put_retrying(&client, "back/first", b"1", "the cluster").await?;
    let leading = leader_named_by(&client, &nodes)?;
    let mut followers = (0..3).filter(|&i| i != leading);
    let (former, second) = (
        followers.next().expect("a follower"),
        followers.next().expect("two followers"),
    );

    // The former voter stops without leaving (a crash); writes go on, and once the grace
    // has passed its vote goes to s3. Its log ends before all of those writes.
    nodes[former].node.shutdown().await;
    nodes[former].cluster.leave().await;
    for i in 0..WRITES_AWAY {
        put_retrying(&client, &format!("back/{i}"), b"x", "two of three voters").await?;
    }
    let mut expected: Vec<String> = [leading, second, 3]
        .iter()
        .map(|&i| nodes[i].node.id().name().to_owned())
        .collect();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.voters().await.ok().as_ref() != Some(&expected) {
        if Instant::now() > deadline {
            return Err(format!(
                "the voters did not become {expected:?} within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Back on its data dir, its log names it a voter of the first configuration.
    let seeds = vec![nodes[3].addr];
    let back = start_node(former as u8, 1, 1.0, seeds, &net, &ca, dir.path(), tune).await?;
    let status = back.registry.raft_status();
    if !status.voter {
        return Err("the former voter's log does not name it a voter".into());
    }
    let restarted_at = status.last_log_index;
    nodes[former] = back;

    // The second follower leaves: its vote goes to the former voter, the one member without
    // one, which the leader first catches up as a learner.
    // Each datagram takes 5 ms meanwhile, so that the catch-up takes a round trip for each
    // AppendEntries and the leader can be stopped in the middle of it.
    net.set_faults(Faults {
        min_delay: SLOW_LINK,
        max_delay: SLOW_LINK,
        ..Faults::default()
    });
    let leaving = nodes[second].registry.clone();
    let second_leave = tokio::spawn(async move { leaving.leave().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[former].registry.raft_status().last_log_index <= restarted_at {
        if Instant::now() > deadline {
            return Err("the leader sent the former voter no entries within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if !nodes[former].registry.raft_status().voter {
        return Err("the former voter's log no longer names it a voter".into());
    }
    // Stopped in the middle of the catch-up: the configuration that counts the former voter
    // is appended only after it. And s3, the one voter left that may stand, is cut off for a
    // while, so that no leader comes: the second follower leaves, so it does not stand. The
    // only one that could raise its term now is the former voter, standing on its old log.
    // Cut off first, which stops it at once; its shutdown takes a while.
    net.isolate(nodes[leading].addr);
    net.isolate(nodes[3].addr);
    net.set_faults(Faults::default());
    let term_at_stop = nodes[former].registry.raft_status().term;
    nodes[leading].node.shutdown().await;
    nodes[leading].cluster.leave().await;
    let end = Instant::now() + WATCHED;
    while Instant::now() < end {
        let term = nodes[former].registry.raft_status().term;
        if term != term_at_stop {
            return Err(format!(
                "the former voter stood for election on its old log: its term went from \
                 {term_at_stop} to {term}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    net.heal();
    let _ = second_leave.await;
    put_retrying(&client, "back/after", b"2", "the voters left").await
}
