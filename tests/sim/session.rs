//! What a node's calls see of its own session: a lock call waiting in line when the session
//! expires ends with `SessionExpired`, not with its timeout; and `Registry::renew` renews the
//! session as the periodic keepalive does: the session is valid for a while from when the
//! renewal was sent.
//!
//! Deterministic: a perfect network until the test cuts the client off.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};
use crate::until;

const SESSION_TTL: Duration = Duration::from_secs(1);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_millis(300);
    settings.session_ttl = SESSION_TTL;
}

#[test]
fn a_lock_call_in_line_when_the_session_expires_says_so_at_once() {
    run(23, a_lock_call_in_line_when_the_session_expires);
}

/// The client waits in line behind a voter's holder with a long timeout, and is cut off until
/// its session expires. The expiry takes it out of the line; once it hears of the expiry, its
/// call must end with `SessionExpired`, not wait out its timeout and report `Timeout`.
async fn a_lock_call_in_line_when_the_session_expires(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let voter = nodes[0].registry.clone();
    let client = nodes[3].registry.clone();
    let client_node = nodes[3].node.id().clone();
    let _held = voter
        .try_lock("x")
        .await
        .map_err(|e| format!("s0 could not take the lock: {e}"))?;
    const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("x", LOCK_TIMEOUT).await })
    };
    until("the client in line", Duration::from_secs(2), || {
        voter
            .lock_info("x")
            .is_some_and(|lock| lock.waiters.iter().any(|w| w.node == client_node))
    })
    .await?;

    net.isolate(nodes[3].addr);
    until("the client's session expired", SESSION_TTL * 5, || {
        !voter.sessions().iter().any(|s| s.node == client_node)
    })
    .await?;
    net.heal();
    until(
        "the client told its session expired",
        SESSION_TTL * 5,
        || client.is_expired(),
    )
    .await?;
    let answer = tokio::time::timeout(SESSION_TTL, call)
        .await
        .map_err(|_| {
            format!(
                "the lock call still waited {:?} after the client learned its session expired",
                SESSION_TTL
            )
        })?
        .map_err(|e| e.to_string())?;
    match answer {
        Err(RegistryError::SessionExpired(node)) if node == client_node => {}
        other => {
            return Err(format!(
                "the lock call in line when the session expired answered {other:?}"
            ));
        }
    }
    Ok(())
}

/// A keepalive interval near its limit (half the validity), so that the last periodic
/// renewal before the cut is likely well before the test's own.
fn tune_slow_keepalives(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_millis(300);
    settings.session_ttl = Duration::from_secs(3);
    settings.drift_margin = 0.4;
    settings.keepalive_interval = Duration::from_millis(800);
}

/// The session's validity after an acknowledged renewal: TTL x (1 - drift margin).
const VALIDITY: Duration = Duration::from_millis(1800);

#[test]
fn a_renewal_counts_as_the_periodic_keepalive_does() {
    run(26, a_renewal_counts);
}

/// The client renews its session and is cut off right after. `renew` works as the periodic
/// keepalive does: the node counts its session valid for the validity from when it sent the
/// renewal, so it must not fence itself before then (it did, counting only from the last
/// periodic renewal).
async fn a_renewal_counts(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune_slow_keepalives).await?;
    let client = nodes[3].registry.clone();
    let sent = Instant::now();
    client
        .renew()
        .await
        .map_err(|e| format!("the renewal failed: {e}"))?;
    net.isolate(nodes[3].addr);
    until("the client fenced", VALIDITY * 2, || client.is_fenced()).await?;
    let fenced = sent.elapsed();
    if fenced < VALIDITY {
        return Err(format!(
            "the client fenced itself {fenced:?} after it sent a renewal that was acknowledged, \
             before the {VALIDITY:?} of validity that renewal gave"
        ));
    }
    Ok(())
}
