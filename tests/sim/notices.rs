//! Followers whose node waits on their copy of the state learn each commit at once, though the
//! leader no longer waits for their answer to the AppendEntries that tells them (a commit
//! notice, `registry/src/raft/network.rs`): a lock waiter on a voter learns of its grant from
//! that voter's state machine, and a write made on a voter is answered once that voter's copy
//! shows it, so both would otherwise wait for the next heartbeat, up to 50 ms. Followers whose
//! node waits on nothing are sent no notice: they learn of a commit with the leader's next
//! message.
//!
//! The tests are deterministic: a perfect network (100 µs a datagram) and paused time.

use std::time::Duration;

use ensemble::registry::{Registry, RegistryConfig};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};
use crate::{SimNode, until};

/// Lock hand-overs timed.
const ROUNDS: usize = 6;
/// The most a grant may take to reach a waiter on a follower: a few datagrams, where the next
/// heartbeat would come after 0 to 50 ms. If followers heard of commits only from heartbeats,
/// all six grants would come this early about once in 15,000 seeds.
const PROMPT: Duration = Duration::from_millis(10);

/// The registry of a voter that does not lead.
fn a_follower(nodes: &[SimNode]) -> Result<Registry, String> {
    nodes[..3]
        .iter()
        .find(|node| !node.registry.leads())
        .map(|node| node.registry.clone())
        .ok_or_else(|| "every voter leads".to_owned())
}

/// Waits a different while in each round (virtual time), so that what the round does next
/// falls at another point of the leader's heartbeat cycle than in the round before.
async fn next_point_of_the_heartbeat_cycle(round: usize) {
    tokio::time::sleep(Duration::from_millis(7 + 9 * round as u64)).await;
}

/// Settings of a healthy cluster: timeouts that no test here comes near.
pub(crate) fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_secs(1);
    settings.session_ttl = Duration::from_secs(5);
}

#[test]
fn a_waiter_on_a_follower_learns_of_its_grant_without_waiting_for_a_heartbeat() {
    run(21, a_waiter_on_a_follower_is_granted_promptly);
}

async fn a_waiter_on_a_follower_is_granted_promptly(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let waiter = a_follower(&nodes)?;
    let mut took = Vec::new();
    for round in 0..ROUNDS {
        let lease = client
            .try_lock("hand-over")
            .await
            .map_err(|e| format!("round {round}: the client could not take the lock: {e}"))?;
        let waiting = {
            let waiter = waiter.clone();
            tokio::spawn(async move {
                let lease = waiter.lock("hand-over", Duration::from_secs(5)).await;
                (Instant::now(), lease)
            })
        };
        until(
            "the follower's node waiting in line",
            Duration::from_secs(5),
            || {
                client
                    .lock_info("hand-over")
                    .is_some_and(|lock| !lock.waiters.is_empty())
            },
        )
        .await?;
        next_point_of_the_heartbeat_cycle(round).await;
        let released = Instant::now();
        lease
            .release()
            .await
            .map_err(|e| format!("round {round}: the release failed: {e}"))?;
        let (granted, lease) = waiting.await.map_err(|e| e.to_string())?;
        let lease =
            lease.map_err(|e| format!("round {round}: the follower's node got no lock: {e}"))?;
        took.push(granted - released);
        lease
            .release()
            .await
            .map_err(|e| format!("round {round}: the follower's release failed: {e}"))?;
    }
    eprintln!("grants reached the follower's node after {took:?}");
    if let Some(late) = took.iter().find(|took| **took > PROMPT) {
        return Err(format!(
            "a grant reached the waiter on a follower {late:?} after the release ({took:?} in \
             all): more than {PROMPT:?}, as if the follower learned of the commit only from a \
             heartbeat"
        ));
    }
    Ok(())
}

#[test]
fn a_write_on_a_follower_is_answered_without_waiting_for_a_heartbeat() {
    run(22, writes_on_a_follower_are_answered_promptly);
}

async fn writes_on_a_follower_are_answered_promptly(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let writer = a_follower(&nodes)?;
    let mut took = Vec::new();
    for round in 0..ROUNDS {
        next_point_of_the_heartbeat_cycle(round).await;
        let started = Instant::now();
        let revision = writer
            .put("follower/key", format!("value {round}"))
            .await
            .map_err(|e| format!("round {round}: the put failed: {e}"))?;
        took.push(started.elapsed());
        // Read your writes: the answer came once this node's copy showed the write.
        if writer.revision() < revision {
            return Err(format!(
                "round {round}: the follower's copy is at revision {} after its own write at \
                 {revision}",
                writer.revision()
            ));
        }
    }
    eprintln!("puts on a follower took {took:?}");
    if let Some(late) = took.iter().find(|took| **took > PROMPT) {
        return Err(format!(
            "a put on a follower took {late:?} ({took:?} in all): more than {PROMPT:?}, as if \
             the follower's copy learned of the commit only from a heartbeat"
        ));
    }
    Ok(())
}

#[test]
fn a_follower_that_waits_on_nothing_learns_of_a_commit_with_the_next_message() {
    run(23, an_idle_follower_is_sent_no_notice);
}

async fn an_idle_follower_is_sent_no_notice(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let idle = a_follower(&nodes)?;
    let mut behind = 0;
    for round in 0..ROUNDS {
        next_point_of_the_heartbeat_cycle(round).await;
        let revision = client
            .put("client/key", format!("value {round}"))
            .await
            .map_err(|e| format!("round {round}: the put failed: {e}"))?;
        // The client's copy, fed by the leader, shows the write now. A follower sent a notice
        // would show it too (it left with the leader's feed); one that waits for the next
        // message from the leader lags until then, a heartbeat at the latest.
        if idle.revision() < revision {
            behind += 1;
        }
        until(
            "the idle follower's copy showing the write",
            Duration::from_millis(100),
            || idle.revision() >= revision,
        )
        .await
        .map_err(|e| format!("round {round}: {e}"))?;
    }
    if behind == 0 {
        return Err(format!(
            "the idle follower's copy showed each of {ROUNDS} writes of another node as soon as \
             that node's own: it was sent a commit notice it had no use for"
        ));
    }
    Ok(())
}
