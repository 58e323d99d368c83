//! A lock request the registry commits while its caller, cut off, sees only an error: the
//! caller's node must give the grant back once it can, rather than hold the lock with nobody
//! to release it for as long as its session lives.
//!
//! Deterministic: the network is perfect (a fixed 100 µs per datagram) until the client is
//! cut off, 150 µs after it sent its request, so the request reaches the leader and commits
//! while every answer to the client is lost. Its lock call fails after the request timeout,
//! and so does its first try to release the holder; the network heals well within the
//! session TTL, so only the client's later tries can free the lock.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use ensemble::transport::certs::ClusterCa;
use ensemble::transport::simnet::SimNet;
use tokio::time::Instant;

use crate::{SimNode, start_node, until};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
const SESSION_TTL: Duration = Duration::from_secs(3);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.session_ttl = SESSION_TTL;
}

#[test]
fn an_acquire_committed_while_its_caller_was_cut_off_is_given_back() {
    let seed = 7;
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(true);
    fastrand::seed(seed);
    ensemble::hashing::seed(seed);
    let runtime = builder.build().expect("runtime");
    if let Err(report) = runtime.block_on(scenario(seed)) {
        panic!("{report}");
    }
}

async fn scenario(seed: u64) -> Result<(), String> {
    let net = SimNet::new(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = ClusterCa::generate("sim").map_err(|e| e.to_string())?;
    // s0, s1 and s2 vote; s3 is the client.
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..4 {
        let seeds = nodes.first().map(|n| vec![n.addr]).unwrap_or_default();
        nodes.push(start_node(i, 0, 1.0, seeds, &net, &ca, dir.path(), tune).await?);
    }
    until("every node's session", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| n.registry.sessions().len() == 4 && n.registry.leader().is_some())
    })
    .await?;
    let client = nodes[3].registry.clone();
    let voter = nodes[0].registry.clone();
    let client_node = nodes[3].node.id().clone();
    // Warm up: the client knows the leader and the way to it, so its next request goes out at
    // once; then a quiet moment, so that nothing else is in flight.
    client
        .put("warm-up", b"1".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("x", Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_micros(150)).await;
    net.isolate(nodes[3].addr);
    let cut = Instant::now();

    // The request got through: the leader granted the lock to the client's holder.
    until(
        "the lock granted to the cut-off client",
        Duration::from_secs(2),
        || {
            voter
                .lock_info("x")
                .and_then(|lock| lock.holder)
                .is_some_and(|(holder, _)| holder.node == client_node)
        },
    )
    .await?;
    // The client saw only its timeout (after its first release failed too).
    let answer = call.await.map_err(|e| e.to_string())?;
    if !matches!(answer, Err(RegistryError::Timeout { .. })) {
        return Err(format!(
            "the cut-off lock call answered {answer:?}, not a timeout"
        ));
    }
    if voter.lock_info("x").and_then(|lock| lock.holder).is_none() {
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
        voter.lock_info("x").and_then(|lock| lock.holder).is_none()
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
    if client.is_fenced() || client.is_expired() {
        return Err("the client's session ended: the test did not show what it is for".into());
    }
    Ok(())
}
