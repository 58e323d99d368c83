//! A call's timeout bounds the call: a lock call ends by its own timeout when it is shorter
//! than the request timeout, and no lock call waits for the release that cleans up after it.
//! And a call keeps its own timeout when it shares a request to the leader with other calls
//! of its node queued before it.
//!
//! Deterministic: a perfect network until the test cuts the client off; the client's session
//! outlives the cut.

use std::time::Duration;

use ensemble::registry::{Registry, RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.session_ttl = Duration::from_secs(20);
}

/// The cluster, and the client node's registry once it knows the leader (a warm-up write) and
/// is then cut off from every other node.
async fn cut_off_client(seed: u64) -> Result<(Cluster, Registry), String> {
    let cluster = four_nodes(seed, tune).await?;
    let client = cluster.nodes[3].registry.clone();
    client
        .put("warm-up", b"1".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    cluster.net.isolate(cluster.nodes[3].addr);
    Ok((cluster, client))
}

#[test]
fn a_lock_call_ends_by_its_own_timeout() {
    run(24, a_lock_call_ends_by_its_timeout);
}

/// The client, cut off, asks for a lock with a timeout a tenth of the request timeout, then
/// tries a lock. The first must end by its own timeout (it took the request timeout for the
/// request, then as long again for the release of its holder), the second by the request
/// timeout (it took twice that).
async fn a_lock_call_ends_by_its_timeout(seed: u64) -> Result<(), String> {
    let (_cluster, client) = cut_off_client(seed).await?;

    let timeout = REQUEST_TIMEOUT / 10;
    let asked = Instant::now();
    let answer = client.lock("x", timeout).await;
    let took = asked.elapsed();
    match answer {
        Err(RegistryError::Timeout { timeout: said, .. }) if said == timeout => {}
        other => {
            return Err(format!(
                "a cut-off lock call with a timeout of {timeout:?} answered {other:?}"
            ));
        }
    }
    if took >= REQUEST_TIMEOUT {
        return Err(format!(
            "a lock call with a timeout of {timeout:?} took {took:?}"
        ));
    }

    let asked = Instant::now();
    let answer = client.try_lock("y").await;
    let took = asked.elapsed();
    if !matches!(answer, Err(RegistryError::Timeout { .. })) {
        return Err(format!("a cut-off try_lock answered {answer:?}"));
    }
    if took >= REQUEST_TIMEOUT * 3 / 2 {
        return Err(format!(
            "a try_lock took {took:?}, past the request timeout of {REQUEST_TIMEOUT:?}"
        ));
    }
    Ok(())
}

#[test]
fn a_write_sharing_a_request_keeps_its_own_timeout() {
    run(25, a_write_sharing_a_request);
}

/// The client, cut off, has four writes on their way (as many as go at once); a fifth queues
/// at once, and a sixth most of a request timeout later. Once the four time out, the fifth
/// and the sixth leave in one request. The sixth must be given its own whole timeout, not end
/// at the fifth's deadline.
async fn a_write_sharing_a_request(seed: u64) -> Result<(), String> {
    let (_cluster, client) = cut_off_client(seed).await?;
    let put = |key: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            let answer = client.put(key, b"1".to_vec()).await;
            (answer, asked.elapsed())
        })
    };
    let _in_flight: Vec<_> = ["a", "b", "c", "d"].into_iter().map(put).collect();
    tokio::time::sleep(REQUEST_TIMEOUT / 20).await;
    let _first = put("e");
    tokio::time::sleep(REQUEST_TIMEOUT * 3 / 4).await;
    let (answer, took) = put("f").await.map_err(|e| e.to_string())?;
    match answer {
        Err(RegistryError::Timeout { timeout, .. }) if timeout == REQUEST_TIMEOUT => {}
        other => return Err(format!("the last write, cut off, answered {other:?}")),
    }
    if took < REQUEST_TIMEOUT {
        return Err(format!(
            "the last write timed out after {took:?}, short of its timeout of \
             {REQUEST_TIMEOUT:?}: it ended at the deadline of a write queued before it"
        ));
    }
    Ok(())
}
