//! A write whose first attempt committed unanswered because the connection it went out on
//! ended, tried again on a new connection: the registry answers the second attempt
//! `Unchanged`, and the caller's node must still read its write from its own copy the moment
//! the call returns (read your writes).
//!
//! The copy lost the batch that carried the write with the same connection. It must see that
//! its subscription went with the connection and subscribe again at once: counting on silence
//! alone, it waited 2 s, past the 1 s a write waits for the copy, and the read missed the
//! name. With a copy that lags for another reason, the answer `Unchanged` names no revision to
//! wait for: the write waits for the copy to show what it asked for
//! (`RegistryState::shows`, tested in the state machine's unit tests).
//!
//! Deterministic: the network is perfect (a fixed 100 µs per datagram). 150 µs after the
//! client's request left, the test closes the client's connection to the leader (a cut alone
//! would not do: QUIC sends lost datagrams again once it heals). The second attempt goes out
//! when the first one's time is up, 750 ms later.

use std::time::Duration;

use ensemble::registry::RegistryConfig;

use crate::probes::{Echo, EchoMsg};
use crate::setup::{Cluster, four_nodes, leader_named_by, run};

/// One attempt of a call may take a quarter of the TTL: 750 ms, well within the call's 3 s.
fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_secs(3);
    settings.session_ttl = Duration::from_secs(3);
}

#[test]
fn a_register_retried_after_its_connection_ended_reads_back_at_once() {
    run(13, a_register_retried);
}

async fn a_register_retried(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let voter = nodes[0].registry.clone();
    let actor = nodes[3]
        .node
        .spawn(Echo)
        .map_err(|e| format!("spawn: {e}"))?;
    let register = {
        let (client, actor) = (client.clone(), actor.clone());
        async move { client.register("named", &actor).await }
    };
    client
        .put("warm-up", b"1".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let leader = leader_named_by(&client, &nodes)?;
    let leader = nodes[leader].node.id().clone();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let call = tokio::spawn(register);
    tokio::time::sleep(Duration::from_micros(150)).await;
    if !nodes[3].cluster.disconnect(&leader) {
        return Err(format!(
            "the client had no connection to the leader {leader}"
        ));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if voter.name_holder("named").map(|w| w.id) != Some(actor.id().clone()) {
        return Err("the first attempt did not commit".into());
    }
    call.await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the retried register failed: {e}"))?;
    // Read from the client node's own copy, right as the call returned.
    let found = client
        .whereis::<EchoMsg>("named")
        .map_err(|e| format!("whereis: {e}"))?;
    match found {
        Some(found) if found.id() == actor.id() => Ok(()),
        other => Err(format!(
            "right after its register returned, the client's copy resolved the name to {:?}",
            other.map(|a| a.id().clone())
        )),
    }
}
