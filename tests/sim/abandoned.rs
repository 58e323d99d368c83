//! Lock holders whose release was lost: the caller's node must give the lock back once it
//! can, rather than leave it with a holder nobody will release for as long as its session
//! lives.
//!
//! Both tests are deterministic: the network is perfect (a fixed 100 µs per datagram) until a
//! cut the test makes at a chosen instant, and the session TTL is far longer than the cut.
//!
//! - An acquire the registry commits while its caller, cut off 150 µs after sending it, sees
//!   only an error: the lock call fails after the request timeout, and so does its first try
//!   to release the holder.
//! - A release sent to a leader just cut off: the call fails after the request timeout, the
//!   others elect a new leader that never saw the release, and the old one hears of it, if
//!   at all, only once it has been deposed.
//! - The same release dropped by its caller (a timeout around the call) before it answered.
//! - A grant that reaches a node while it is fenced (cut off past its session's validity,
//!   not yet past the TTL): the lease is lost at once, and the node must give the lock back.

use std::future::Future;
use std::time::Duration;

use ensemble::registry::{Lease, Registry, RegistryConfig, RegistryError};
use ensemble::transport::simnet::SimNet;
use tokio::time::Instant;

use crate::probes::{Echo, EchoMsg};
use crate::setup::{Cluster, four_nodes, holder_of, leader_named_by, put_retrying, run};
use crate::{SimNode, until};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
const SESSION_TTL: Duration = Duration::from_secs(3);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.session_ttl = SESSION_TTL;
}

/// Runs `call` on `client` and cuts the client off 150 µs later, just after its request left:
/// a warm-up write first, so that the client knows the leader and the way to it and the
/// request goes out at once, then a quiet moment, so that nothing else is in flight. Answers
/// the call's task and when the cut was made.
async fn cut_off_after_sending<T: Send + 'static>(
    net: &SimNet,
    client: &SimNode,
    call: impl Future<Output = T> + Send + 'static,
) -> Result<(tokio::task::JoinHandle<T>, Instant), String> {
    client
        .registry
        .put("warm-up", b"1".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let call = tokio::spawn(call);
    tokio::time::sleep(Duration::from_micros(150)).await;
    net.isolate(client.addr);
    Ok((call, Instant::now()))
}

/// The client node's lease of lock `x`, the leader its call went to, and a voter that is not
/// the leader.
struct Held {
    lease: Lease,
    leader: usize,
    observer: Registry,
}

/// The client (`nodes[3]`) takes lock `x`; answers once a voter other than the leader shows
/// the grant, after a quiet moment, so that nothing else is in flight.
async fn held_by_the_client(nodes: &[SimNode]) -> Result<Held, String> {
    let client = &nodes[3].registry;
    let client_node = nodes[3].node.id().clone();
    let lease = client
        .lock("x", Duration::from_secs(5))
        .await
        .map_err(|e| format!("the client could not take the lock: {e}"))?;
    // The lock call went to the leader, so the client names it.
    let leader = leader_named_by(client, nodes)?;
    let observer = nodes[(leader + 1) % 3].registry.clone();
    until(
        "the grant in a voter's copy",
        Duration::from_secs(2),
        || holder_of(&observer, "x").as_ref() == Some(&client_node),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(Held {
        lease,
        leader,
        observer,
    })
}

/// Fails if the client's session ended (fenced or expired): its locks would then be freed
/// whatever its node does, and the test would show nothing.
fn session_lived(client: &Registry) -> Result<(), String> {
    if client.is_fenced() || client.is_expired() {
        return Err("the client's session ended: the test did not show what it is for".into());
    }
    Ok(())
}

#[test]
fn an_acquire_committed_while_its_caller_was_cut_off_is_given_back() {
    run(7, an_acquire_committed_while_cut_off);
}

async fn an_acquire_committed_while_cut_off(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let voter = nodes[0].registry.clone();
    let client_node = nodes[3].node.id().clone();
    let lock = {
        let client = client.clone();
        async move { client.lock("x", Duration::from_secs(5)).await }
    };
    let (call, cut) = cut_off_after_sending(&net, &nodes[3], lock).await?;

    // The request got through: the leader granted the lock to the client's holder.
    until(
        "the lock granted to the cut-off client",
        Duration::from_secs(2),
        || holder_of(&voter, "x").as_ref() == Some(&client_node),
    )
    .await?;
    // The client saw only its timeout (after its first release failed too).
    let answer = call.await.map_err(|e| e.to_string())?;
    if !matches!(answer, Err(RegistryError::Timeout { .. })) {
        return Err(format!(
            "the cut-off lock call answered {answer:?}, not a timeout"
        ));
    }
    if holder_of(&voter, "x").is_none() {
        return Err("the lock was freed while the client was cut off".into());
    }
    net.heal();
    let healed = Instant::now();
    if healed - cut >= SESSION_TTL / 2 {
        return Err(format!(
            "the client was cut off for {:?}: its session could end, which would free the lock \
             whatever its node does",
            healed - cut
        ));
    }

    // Well within the client's session: the lock is free again, and another node takes it.
    until("the abandoned grant given back", SESSION_TTL / 2, || {
        holder_of(&voter, "x").is_none()
    })
    .await?;
    eprintln!(
        "the abandoned grant was given back {:?} after the heal ({:?} after the cut)",
        healed.elapsed(),
        cut.elapsed()
    );
    voter
        .try_lock("x")
        .await
        .map_err(|e| format!("s0 could not take the freed lock: {e}"))?;
    session_lived(&client)?;
    Ok(())
}

#[test]
fn a_name_whose_unregister_was_lost_with_its_leader_is_released() {
    run(9, a_name_whose_unregister_was_lost);
}

/// An actor's name is unregistered when the actor ends; if that fails (here: sent to a leader
/// just cut off, which the others replace without ever seeing it), its node keeps trying,
/// rather than leave the name to a dead actor for as long as its session lives.
async fn a_name_whose_unregister_was_lost(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let named = |registry: &ensemble::registry::Registry| {
        registry
            .whereis::<EchoMsg>("named")
            .ok()
            .flatten()
            .is_some()
    };
    let actor = nodes[3]
        .node
        .spawn(Echo)
        .map_err(|e| format!("spawn: {e}"))?;
    client
        .register("named", &actor)
        .await
        .map_err(|e| format!("the client could not register its actor: {e}"))?;
    // The register went to the leader, so the client names it.
    let leader = leader_named_by(&client, &nodes)?;
    let observer = nodes[(leader + 1) % 3].registry.clone();
    until("the name in a voter's copy", Duration::from_secs(2), || {
        named(&observer)
    })
    .await?;
    // A quiet moment, so that nothing else is in flight.
    tokio::time::sleep(Duration::from_millis(50)).await;

    net.isolate(nodes[leader].addr);
    let cut = Instant::now();
    actor.stop();
    // The other voters elect a leader that never saw the unregister; only then does the old
    // leader hear from the others again.
    put_retrying(&observer, "elected", b"1", "the two voters left").await?;
    net.heal();
    until("the dead actor's name released", SESSION_TTL / 2, || {
        !named(&observer)
    })
    .await?;
    eprintln!(
        "the dead actor's name was released {:?} after the cut",
        cut.elapsed()
    );
    session_lived(&client)?;
    Ok(())
}

#[test]
fn a_release_lost_with_its_leader_is_given_back() {
    run(8, a_release_lost_with_its_leader);
}

async fn a_release_lost_with_its_leader(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let Held {
        lease,
        leader,
        observer,
    } = held_by_the_client(&nodes).await?;

    net.isolate(nodes[leader].addr);
    let answer = lease.release().await;
    let failed = Instant::now();
    if !matches!(answer, Err(RegistryError::Timeout { .. })) {
        return Err(format!(
            "the release sent to the cut-off leader answered {answer:?}, not a timeout"
        ));
    }
    // The other voters elect a leader that never saw the release: a write commits without
    // the old one. Only then does the old leader hear from the others again.
    put_retrying(&observer, "elected", b"1", "the two voters left").await?;
    net.heal();

    // Well within the client's session: the lock is free again, and another node takes it.
    until("the lost release made again", SESSION_TTL / 2, || {
        holder_of(&observer, "x").is_none()
    })
    .await?;
    eprintln!(
        "the lock was free {:?} after the release failed",
        failed.elapsed()
    );
    observer
        .try_lock("x")
        .await
        .map_err(|e| format!("a voter could not take the freed lock: {e}"))?;
    session_lived(&client)?;
    Ok(())
}

#[test]
fn a_release_whose_caller_stopped_waiting_is_made_all_the_same() {
    run(8, a_release_dropped_by_its_caller);
}

/// A release dropped by its caller while it waits for a leader just cut off (a timeout around
/// the call, shorter than the request timeout): the lock must still be given back, not kept
/// by a holder nobody will release for as long as the client's session lives.
async fn a_release_dropped_by_its_caller(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let Held {
        lease,
        leader,
        observer,
    } = held_by_the_client(&nodes).await?;

    net.isolate(nodes[leader].addr);
    let cut = Instant::now();
    if tokio::time::timeout(REQUEST_TIMEOUT / 3, lease.release())
        .await
        .is_ok()
    {
        return Err(
            "the release to the cut-off leader answered: the test did not show \
                    what it is for"
                .into(),
        );
    }
    put_retrying(&observer, "elected", b"1", "the two voters left").await?;
    net.heal();
    until("the dropped release made", SESSION_TTL / 2, || {
        holder_of(&observer, "x").is_none()
    })
    .await?;
    eprintln!(
        "the lock was free {:?} after the release was dropped",
        cut.elapsed()
    );
    session_lived(&client)?;
    Ok(())
}

/// A wide drift margin: the client fences itself 0.6 TTL after its last renewal, well
/// before the leader could expire its session.
fn tune_wide_margin(settings: &mut RegistryConfig) {
    tune(settings);
    settings.drift_margin = 0.4;
}

#[test]
fn a_grant_that_reaches_a_fenced_node_is_given_back() {
    run(9, a_grant_reaching_a_fenced_node);
}

async fn a_grant_reaching_a_fenced_node(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune_wide_margin).await?;
    let voter = nodes[0].registry.clone();
    let client = nodes[3].registry.clone();
    let client_node = nodes[3].node.id().clone();
    let first = voter
        .lock("x", Duration::from_secs(5))
        .await
        .map_err(|e| format!("s0 could not take the lock: {e}"))?;
    // The client waits in line.
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("x", Duration::from_secs(20)).await })
    };
    until("the client in line", Duration::from_secs(2), || {
        voter
            .lock_info("x")
            .is_some_and(|lock| lock.waiters.iter().any(|w| w.node == client_node))
    })
    .await?;

    // Cut off until it fences itself; then the lock is handed to it, and the network heals
    // before the leader could expire its session.
    net.isolate(nodes[3].addr);
    let cut = Instant::now();
    until("the client fenced", SESSION_TTL, || client.is_fenced()).await?;
    first
        .release()
        .await
        .map_err(|e| format!("s0 could not release the lock: {e}"))?;
    net.heal();
    if cut.elapsed() >= SESSION_TTL * 3 / 4 {
        return Err(format!(
            "the client was cut off for {:?}: its session could end, which would free the lock \
             whatever its node does",
            cut.elapsed()
        ));
    }
    // The call fails as one made while fenced does: a lease handed out already lost would
    // look held to a caller that does not look, with a token below its successor's.
    match call.await.map_err(|e| e.to_string())? {
        Err(RegistryError::Fenced(node)) if node == client_node => {}
        Ok(lease) if lease.is_lost() => {
            return Err(format!(
                "the client's lock call returned a lease that is already lost ({lease:?}) \
                 instead of failing"
            ));
        }
        Ok(lease) => {
            return Err(format!(
                "the grant reached the client after it renewed its session ({lease:?}): the \
                 test did not show what it is for"
            ));
        }
        Err(e) => return Err(format!("the client's lock call failed otherwise: {e}")),
    }
    let granted = Instant::now();

    // The client's session lives on, and the lock is free again.
    until("the grant given back", SESSION_TTL / 2, || {
        holder_of(&voter, "x").as_ref() != Some(&client_node)
    })
    .await?;
    eprintln!(
        "the grant that reached the fenced client was given back {:?} after it arrived",
        granted.elapsed()
    );
    until("the client unfenced", SESSION_TTL, || !client.is_fenced()).await?;
    if client.is_expired() {
        return Err("the client's session ended: the test did not show what it is for".into());
    }
    voter
        .try_lock("x")
        .await
        .map_err(|e| format!("s0 could not take the freed lock: {e}"))?;
    Ok(())
}

#[test]
fn a_group_entry_committed_while_its_caller_was_cut_off_leaves_with_its_actor() {
    run(10, a_group_entry_committed_while_cut_off);
}

/// A join the registry commits while its caller, cut off just after sending it, sees only a
/// timeout: the entry is in, and when its actor ends it must go, not stay for as long as the
/// node's session lives.
async fn a_group_entry_committed_while_cut_off(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let voter = nodes[0].registry.clone();
    let actor = nodes[3]
        .node
        .spawn(Echo)
        .map_err(|e| format!("spawn: {e}"))?;
    let join = {
        let (client, actor) = (client.clone(), actor.clone());
        async move { client.join_group("workers", &actor).await }
    };
    let (call, cut) = cut_off_after_sending(&net, &nodes[3], join).await?;
    until(
        "the entry of the cut-off client",
        Duration::from_secs(2),
        || voter.group_members("workers").len() == 1,
    )
    .await?;
    let answer = call.await.map_err(|e| e.to_string())?;
    if !matches!(answer, Err(RegistryError::Timeout { .. })) {
        return Err(format!(
            "the cut-off join answered {answer:?}, not a timeout"
        ));
    }
    // Its caller gives up on the actor, which ends.
    actor.stop();
    net.heal();
    until("the ended actor's entry removed", SESSION_TTL / 2, || {
        voter.group_members("workers").is_empty()
    })
    .await?;
    eprintln!("the entry went {:?} after the cut", cut.elapsed());
    session_lived(&client)?;
    Ok(())
}
