//! A node that fences itself kills the actors bound to its leases and gives their locks back.
//! It must give them back only once those actors ended: the registry may be reachable again
//! at once (a keepalive answered late, a cut that healed before the session could expire),
//! and the next waiter would then be granted the lock while a killed actor still runs.
//!
//! Deterministic: a perfect network until the test cuts the client off. The client binds an
//! actor of a voter that does not lead to its lease; once the client fenced itself, the
//! network heals but for the link between the client and that voter, so the registry takes
//! the client's release while the kill cannot reach the actor. The link heals a little
//! later, well within the session TTL.

use std::time::Duration;

use ensemble::registry::RegistryConfig;
use tokio::time::Instant;

use crate::probes::{Echo, EchoMsg};
use crate::setup::{Cluster, four_nodes, leader_named_by, run};
use crate::until;

const SESSION_TTL: Duration = Duration::from_secs(3);

/// How long the client and the bound actor's node stay apart after the rest healed.
const APART: Duration = Duration::from_millis(500);

/// A wide drift margin: the client fences itself 0.6 TTL after its last renewal, well before
/// the leader could expire its session.
fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_millis(300);
    settings.session_ttl = SESSION_TTL;
    settings.drift_margin = 0.4;
}

#[test]
fn a_fenced_node_gives_its_locks_on_once_their_actors_ended() {
    run(21, a_fenced_node_gives_its_locks_on);
}

async fn a_fenced_node_gives_its_locks_on(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let lease = client
        .try_lock("x")
        .await
        .map_err(|e| format!("the client could not take the lock: {e}"))?;
    // The lock call went to the leader: the bound actor runs on another voter, so that the
    // registry can commit without it, and the waiter on the third.
    let leader = leader_named_by(&client, &nodes)?;
    let (host, waiter) = (&nodes[(leader + 1) % 3], &nodes[(leader + 2) % 3]);
    let actor = host.node.spawn(Echo).map_err(|e| format!("spawn: {e}"))?;
    host.registry
        .register("bound", &actor)
        .await
        .map_err(|e| format!("register: {e}"))?;
    until(
        "the bound actor's name on the client",
        Duration::from_secs(2),
        || client.whereis::<EchoMsg>("bound").ok().flatten().is_some(),
    )
    .await?;
    let bound = client
        .whereis::<EchoMsg>("bound")
        .map_err(|e| e.to_string())?
        .ok_or("the name went")?;
    lease.bind(&bound);

    // The waiter queues; once granted, it notes whether the bound actor still ran.
    let waiting = {
        let (registry, actor) = (waiter.registry.clone(), actor.clone());
        tokio::spawn(async move {
            let lease = registry.lock("x", Duration::from_secs(20)).await;
            (lease, actor.is_alive())
        })
    };
    let waiter_node = waiter.node.id().clone();
    until("the waiter in line", Duration::from_secs(2), || {
        client
            .lock_info("x")
            .is_some_and(|lock| lock.waiters.iter().any(|w| w.node == waiter_node))
    })
    .await?;

    net.isolate(nodes[3].addr);
    let cut = Instant::now();
    until("the client fenced", SESSION_TTL, || client.is_fenced()).await?;
    let fenced = Instant::now();
    // The registry can be reached again; the bound actor's node cannot.
    net.heal();
    net.partition(&[nodes[3].addr], &[host.addr]);
    until("the client renewed its session", SESSION_TTL, || {
        !client.is_fenced()
    })
    .await?;
    let mut waiting = waiting;
    let early = tokio::time::timeout(APART, &mut waiting).await.ok();
    net.heal();
    if fenced.elapsed() >= SESSION_TTL / 2 {
        return Err(format!(
            "the bound actor's node was out of reach for {:?} after the fence: the client may \
             stop waiting for the actor after a TTL",
            fenced.elapsed()
        ));
    }
    let (granted, alive) = match early {
        Some(done) => done,
        None => tokio::time::timeout(SESSION_TTL, waiting)
            .await
            .map_err(|_| "the waiter was never granted the lock".to_owned())?,
    }
    .map_err(|e| e.to_string())?;
    let granted = granted.map_err(|e| format!("the waiter's lock call failed: {e}"))?;
    if alive {
        return Err(format!(
            "the waiter was granted the lock (token {}) while the actor bound to the fenced \
             client's lease still ran",
            granted.token()
        ));
    }
    eprintln!(
        "the lock went on {:?} after the cut, once the bound actor ended",
        cut.elapsed()
    );
    if client.is_expired() {
        return Err("the client's session ended: the test did not show what it is for".into());
    }
    Ok(())
}
