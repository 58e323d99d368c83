//! A node that leaves (`Registry::leave`) ends its session for good: its locks are released at
//! once, it stops renewing the session and never opens it again, and it stays fenced. Before,
//! its next keepalive found no session and opened a new one, so the node came back as live.
//!
//! A voter that leaves hands its vote to another node first, so that the registry keeps three
//! running voters and can lose one more at once: whether the voter leads or not.
//!
//! The tests are deterministic: a perfect network and paused time.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, leader_named_by, put_retrying, run};
use crate::{SimNode, until};

/// How long the node is watched after it left: ten keepalive intervals.
const WATCHED: Duration = Duration::from_secs(1);

/// How long a voter that left is watched, still running: several election timeouts.
const AFTER_LEAVING: Duration = Duration::from_secs(1);

fn defaults(_: &mut RegistryConfig) {}

#[test]
fn a_node_that_left_stays_gone() {
    run(41, left_stays_gone);
}

async fn left_stays_gone(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let leaving = &nodes[3];
    let me = leaving.node.id().clone();
    let other = &nodes[0].registry;
    let _lease = leaving
        .registry
        .try_lock("leave/lock")
        .await
        .map_err(|e| format!("the lock before leaving: {e}"))?;
    leaving
        .registry
        .leave()
        .await
        .map_err(|e| format!("leave failed: {e}"))?;
    if !leaving.registry.is_fenced() {
        return Err("the node is not fenced right after it left".into());
    }
    let has_session = || other.sessions().iter().any(|s| s.node == me);
    until(
        "the other nodes to see the session closed",
        Duration::from_secs(2),
        || !has_session(),
    )
    .await?;
    if other
        .lock_info("leave/lock")
        .is_some_and(|l| l.holder.is_some())
    {
        return Err("the lock of the node that left is still held".into());
    }
    let end = Instant::now() + WATCHED;
    while Instant::now() < end {
        if has_session() {
            return Err(format!(
                "node {me} has a session again {:?} after its session closed",
                WATCHED - (end - Instant::now())
            ));
        }
        if !leaving.registry.is_fenced() {
            return Err("the node that left is no longer fenced".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match leaving.registry.try_lock("leave/other").await {
        Err(RegistryError::NoSession(node)) if node == me => Ok(()),
        other => Err(format!(
            "a lock taken after leaving answered {other:?}, not that the node has no session"
        )),
    }
}

#[test]
fn a_voter_that_leaves_hands_its_vote_over_first() {
    run(43, |seed| voter_leaves(seed, false));
}

#[test]
fn a_leader_that_leaves_hands_its_vote_over_and_steps_down() {
    run(47, |seed| voter_leaves(seed, true));
}

/// A voter (the leader if `leader`) leaves: once `leave` returns, the client s3 votes in its
/// place. Then the node that left and another of the first voters stop, and the registry
/// still writes, with two of its three voters. Without the hand-over the vote would move only
/// after the voter grace (30 s by default), and the registry would have lost its quorum.
async fn voter_leaves(seed: u64, leader: bool) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = &nodes[3].registry;
    put_retrying(client, "leave/before", b"1", "the cluster").await?;
    let leading = leader_named_by(client, &nodes)?;
    let leaving = if leader {
        leading
    } else {
        (0..3)
            .find(|&i| i != leading)
            .expect("a voter that does not lead")
    };
    let stays: Vec<usize> = (0..3).filter(|&i| i != leaving).collect();
    nodes[leaving]
        .registry
        .leave()
        .await
        .map_err(|e| format!("leave failed: {e}"))?;
    let name = |i: usize| nodes[i].node.id().name().to_owned();
    let mut expected = vec![name(stays[0]), name(stays[1]), name(3)];
    expected.sort();
    let voters = client
        .voters()
        .await
        .map_err(|e| format!("the voters after the leave: {e}"))?;
    if voters != expected {
        return Err(format!(
            "right after {} left, the voters are {voters:?}, not {expected:?}",
            name(leaving)
        ));
    }
    // Still running, a follower that left does not stand for election: its log may still
    // name it a voter (the configuration without it need not reach it), and a term raised now
    // would stay on its disk, and make a leader step down when it is taken back one day. (A
    // leader that left has the configuration without it in its log: openraft does not let it
    // stand whatever it is told, so it is not watched.)
    if !leader {
        let term = nodes[leaving].registry.raft_status().term;
        let end = Instant::now() + AFTER_LEAVING;
        while Instant::now() < end {
            let now = nodes[leaving].registry.raft_status().term;
            if now != term {
                return Err(format!(
                    "{} stood for election after it left: its term went from {term} to {now}",
                    name(leaving)
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop(&nodes[leaving]).await;
    // One more of the first voters stops: one that does not lead now.
    put_retrying(client, "leave/between", b"2", "the three voters").await?;
    let now_leading = client.leader().ok_or("no leader named after a write")?;
    let second = *stays
        .iter()
        .find(|&&i| name(i) != now_leading)
        .expect("two first voters, one of them not leading");
    stop(&nodes[second]).await;
    put_retrying(client, "leave/after", b"3", "the two voters left").await?;
    let value = client
        .get("leave/before")
        .await
        .map_err(|e| format!("reading back: {e}"))?;
    match value {
        Some(kv) if kv.value == b"1" => Ok(()),
        other => Err(format!(
            "the write before the leave reads back as {other:?}"
        )),
    }
}

/// Makes a write, then the spare s3 (the one node without a vote) leaves and stops: no node
/// is left to take a vote. Returns the position of the leader among the voters.
async fn spare_gone(nodes: &[SimNode]) -> Result<usize, String> {
    put_retrying(&nodes[3].registry, "leave/before", b"1", "the cluster").await?;
    let leading = leader_named_by(&nodes[3].registry, nodes)?;
    nodes[3]
        .registry
        .leave()
        .await
        .map_err(|e| format!("the spare's leave: {e}"))?;
    stop(&nodes[3]).await;
    Ok(leading)
}

/// Stops a node without leaving the registry: its session expires, as after a crash.
async fn stop(node: &SimNode) {
    node.node.shutdown().await;
    node.cluster.leave().await;
}

#[test]
fn a_leave_cut_short_stops_the_node_s_lease_bound_actors_at_once() {
    run(63, leave_cut_short);
}

/// A voter that holds a lock leaves under a caller's timeout that ends the leave while its
/// vote is still being handed over. The node counts as left all the same and stops renewing
/// its session, whose expiry gives the lock away: its lease is lost at once, so that what the
/// lease guards stops a session TTL before. Before, nothing fenced the node after such a
/// leave: the lease stayed held, as far as its holder knew, after the lock was given away.
async fn leave_cut_short(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = &nodes[3].registry;
    put_retrying(client, "leave/before", b"1", "the cluster").await?;
    let leading = leader_named_by(client, &nodes)?;
    let voter = (0..3)
        .find(|&i| i != leading)
        .expect("a voter that does not lead");
    let leaving = &nodes[voter].registry;
    let lease = leaving
        .try_lock("leave/cut-short")
        .await
        .map_err(|e| format!("the lock before leaving: {e}"))?;
    // The hand-over to the spare s3 takes its catch-up: far more than this.
    let cut = tokio::time::timeout(Duration::from_millis(5), leaving.leave()).await;
    if let Ok(left) = cut {
        return Err(format!(
            "the leave ended within 5 ms ({left:?}): nothing was cut short"
        ));
    }
    tokio::time::timeout(Duration::from_millis(10), lease.lost())
        .await
        .map_err(|_| "the lease was not lost right after the leave was cut short".to_owned())?;
    // The registry gives the lock away once the session expires, and not before.
    let taken = client
        .lock("leave/cut-short", Duration::from_secs(10))
        .await
        .map_err(|e| format!("the lock after the leave was cut short: {e}"))?;
    if taken.token() <= lease.token() {
        return Err(format!(
            "the next holder's token {} is not above {}",
            taken.token(),
            lease.token()
        ));
    }
    Ok(())
}

#[test]
fn leaving_after_the_session_expired_says_so_at_once() {
    run(65, leave_after_expiry);
}

/// The spare s3 is cut off until its session expires, then the cut heals and it hears of the
/// expiry. Its leave then answers `SessionExpired` at once: before, it tried to close the
/// session with every member refusing the node, for a whole request timeout, and answered
/// `Timeout`.
async fn leave_after_expiry(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, defaults).await?;
    let spare = &nodes[3];
    put_retrying(&spare.registry, "leave/before", b"1", "the cluster").await?;
    net.isolate(spare.addr);
    until(
        "the registry expiring the cut-off spare's session",
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
    net.heal();
    until(
        "the spare to hear its session expired",
        Duration::from_secs(30),
        || spare.registry.is_expired(),
    )
    .await?;
    let started = Instant::now();
    let left = spare.registry.leave().await;
    let took = started.elapsed();
    match left {
        Err(RegistryError::SessionExpired(node)) if &node == spare.node.id() => {}
        other => return Err(format!("the leave after the expiry answered {other:?}")),
    }
    if took > Duration::from_millis(100) {
        return Err(format!("the leave after the expiry took {took:?}"));
    }
    Ok(())
}

#[test]
fn a_voter_and_a_spare_that_leave_together_do_not_hand_the_vote_to_each_other() {
    run(59, voter_and_spare_leave);
}

/// A voter that does not lead and the client s3, the one node that could take a vote, leave
/// at once (as when a cluster is stopped). The spare must not be given the vote: it is on its
/// way out too. Before nodes that do not vote told the leader they leave, it was: the spare
/// took the vote and left with it, and the registry was left with a voter that had gone.
async fn voter_and_spare_leave(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let client = nodes[3].registry.clone();
    put_retrying(&client, "leave/before", b"1", "the cluster").await?;
    let leading = leader_named_by(&client, &nodes)?;
    let voter = (0..3)
        .find(|&i| i != leading)
        .expect("a voter that does not lead");
    let (a, b) = (nodes[voter].registry.clone(), client.clone());
    let (first, second) = tokio::join!(a.leave(), b.leave());
    first.map_err(|e| format!("the voter's leave: {e}"))?;
    second.map_err(|e| format!("the spare's leave: {e}"))?;
    let voters = nodes[leading]
        .registry
        .voters()
        .await
        .map_err(|e| format!("the voters after both left: {e}"))?;
    if voters.iter().any(|v| v == "s3") {
        return Err(format!(
            "the spare that left was given a vote: the voters are {voters:?}"
        ));
    }
    Ok(())
}

#[test]
fn the_last_voters_that_leave_together_still_elect_a_leader_to_close_their_sessions() {
    run(61, last_voters_leave);
}

/// With the spare gone, the three voters leave at once: none can take another's vote, so
/// each keeps it. The leader closes its session and stops, as `Host::stop` does; the other
/// two must still elect a leader between them to close theirs. Before a voter that kept its
/// vote stood for election again, neither of them could stand, and their leaves failed.
async fn last_voters_leave(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let leading = spare_gone(&nodes).await?;
    let mut leaves = Vec::new();
    for (i, node) in nodes[..3].iter().enumerate() {
        let (registry, node_handle, cluster) = (
            node.registry.clone(),
            node.node.clone(),
            node.cluster.clone(),
        );
        leaves.push(tokio::spawn(async move {
            let left = registry.leave().await;
            if i == leading {
                node_handle.shutdown().await;
                cluster.leave().await;
            }
            left
        }));
    }
    for (i, leave) in leaves.into_iter().enumerate() {
        leave
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("s{i}'s leave (s{leading} led): {e}"))?;
    }
    Ok(())
}

#[test]
fn a_voter_told_it_keeps_its_vote_keeps_it_while_it_runs() {
    run(67, told_it_keeps_its_vote);
}

/// How long the voters are watched after the voter that kept its vote left: longer than the
/// leader remembers a node that left (2 s after its last word), far less than the voter grace.
const KEPT_WATCHED: Duration = Duration::from_secs(4);

/// With the spare gone, a voter that does not lead leaves while a new node, s4, joins: no
/// node may take its vote when it asks, so it keeps it and stands for election again, and it
/// goes on running (connected, its session closed). Its vote must stay with it until it is
/// gone for the voter grace. Before, the leader moved the vote of any node it remembered
/// leaving as soon as one could take it, here to s4 once its session opened: behind the back
/// of a voter that stood for election again, on a log that then still named it a voter.
async fn told_it_keeps_its_vote(seed: u64) -> Result<(), String> {
    let Cluster {
        net,
        nodes,
        ca,
        _dir: dir,
    } = four_nodes(seed, defaults).await?;
    let leading = spare_gone(&nodes).await?;
    let voter = (0..3)
        .find(|&i| i != leading)
        .expect("a voter that does not lead");
    let before = nodes[leading]
        .registry
        .voters()
        .await
        .map_err(|e| format!("the voters before the leave: {e}"))?;
    let seeds = vec![nodes[leading].addr];
    let (joined, left) = tokio::join!(
        crate::start_node(4, 0, 1.0, seeds, &net, &ca, dir.path(), defaults),
        nodes[voter].registry.leave()
    );
    let new = joined?;
    left.map_err(|e| format!("the voter's leave: {e}"))?;
    let name = nodes[voter].node.id().name().to_owned();
    let voters = nodes[leading]
        .registry
        .voters()
        .await
        .map_err(|e| format!("the voters right after the leave: {e}"))?;
    if voters != before {
        return Err(format!(
            "{name} kept its vote when it left, yet the voters right after are {voters:?}, not \
             {before:?}"
        ));
    }
    let end = Instant::now() + KEPT_WATCHED;
    let mut new_in_session = false;
    while Instant::now() < end {
        new_in_session |= nodes[leading]
            .registry
            .sessions()
            .iter()
            .any(|s| s.node == *new.node.id());
        let now = nodes[leading]
            .registry
            .voters()
            .await
            .map_err(|e| format!("the voters after the leave: {e}"))?;
        if now != before {
            return Err(format!(
                "{name} kept its vote when it left and still runs, yet {:?} after it left the \
                 voters are {now:?}, not {before:?}",
                KEPT_WATCHED - (end - Instant::now())
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Else the test shows nothing: no node could have taken the vote.
    if !new_in_session {
        return Err("s4's session never opened while the voters were watched".into());
    }
    Ok(())
}
