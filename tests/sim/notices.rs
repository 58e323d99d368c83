//! Followers learn each commit at once, though the leader no longer waits for their answer to
//! the AppendEntries that tells them (a commit notice, `registry/src/raft/network.rs`): a lock
//! waiter on a voter learns of its grant from that voter's state machine, so it would otherwise
//! wait for the next heartbeat, up to 50 ms.
//!
//! The test is deterministic: a perfect network (100 µs a datagram) and paused time.

use std::time::Duration;

use ensemble::registry::RegistryConfig;
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};
use crate::until;

/// Lock hand-overs timed.
const ROUNDS: usize = 6;
/// The most a grant may take to reach a waiter on a follower: a few datagrams, where the next
/// heartbeat would come after 0 to 50 ms. If followers heard of commits only from heartbeats,
/// all six grants would come this early about once in 15,000 seeds.
const PROMPT: Duration = Duration::from_millis(10);

fn tune(settings: &mut RegistryConfig) {
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
    let follower = (0..3)
        .find(|&i| !nodes[i].registry.leads())
        .ok_or("every voter leads")?;
    let waiter = nodes[follower].registry.clone();
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
        // Apart from the write before, so that the release falls at another point of the
        // heartbeat cycle in each round.
        tokio::time::sleep(Duration::from_millis(7 + 9 * round as u64)).await;
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
