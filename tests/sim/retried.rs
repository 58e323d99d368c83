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
//! A compare-and-set in the same place is sent again too, and takes effect once: the registry
//! remembers the node's requests while its session is open (`Command::Request`), and answers
//! the second attempt with the first one's outcome. Without that it would have to end with
//! `Unknown` (sent again, it would find the key at the revision it set itself and fail).
//!
//! Deterministic: the network is perfect (a fixed 100 µs per datagram). 150 µs after the
//! client's request left, the test closes the client's connection to the leader (a cut alone
//! would not do: QUIC sends lost datagrams again once it heals). The second attempt goes out
//! when the first one's time is up, 750 ms later.

use std::future::Future;
use std::time::Duration;

use ensemble::registry::RegistryConfig;
use tokio::task::JoinHandle;

use crate::SimNode;
use crate::probes::{Echo, EchoMsg};
use crate::setup::{Cluster, four_nodes, leader_named_by, run};

/// One attempt of a call may take a quarter of the TTL: 750 ms, well within the call's 3 s.
fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = Duration::from_secs(3);
    settings.session_ttl = Duration::from_secs(3);
}

/// Starts `call` on the client node (`nodes[3]`, whose last call named the leader), closes the
/// client's connection to the leader 150 µs later, with the request on its way, and gives
/// the first attempt 100 ms to commit.
async fn sent_then_cut<T: Send + 'static>(
    nodes: &[SimNode],
    call: impl Future<Output = T> + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    let leader = leader_named_by(&nodes[3].registry, nodes)?;
    let leader = nodes[leader].node.id().clone();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let call = tokio::spawn(call);
    tokio::time::sleep(Duration::from_micros(150)).await;
    if !nodes[3].cluster.disconnect(&leader) {
        return Err(format!(
            "the client had no connection to the leader {leader}"
        ));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(call)
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
    let call = sent_then_cut(&nodes, register).await?;
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

#[test]
fn a_compare_and_set_sent_again_after_its_connection_ended_takes_effect_once() {
    run(13, a_compare_and_set_sent_again);
}

async fn a_compare_and_set_sent_again(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    let voter = nodes[0].registry.clone();
    let created = client
        .put("counter", b"0".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let compare_and_set = {
        let client = client.clone();
        async move {
            client
                .compare_and_set("counter", created, Some(b"1".to_vec()))
                .await
        }
    };
    let call = sent_then_cut(&nodes, compare_and_set).await?;
    match voter.get_cached("counter") {
        Some(kv) if kv.value == b"1" => {}
        other => return Err(format!("the first attempt did not commit: {other:?}")),
    }
    let revision = call
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the compare-and-set sent again failed: {e}"))?;
    let kv = client
        .get("counter")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the key is gone")?;
    if kv.value != b"1" || kv.version != 2 || kv.modified != revision {
        return Err(format!(
            "applied once, the compare-and-set would leave version 2 at revision {revision}: \
             {kv:?}"
        ));
    }
    Ok(())
}
