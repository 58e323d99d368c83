//! A call's timeout bounds the call: a lock call ends by its own timeout when it is shorter
//! than the request timeout, and no lock call waits for the release that cleans up after it.
//!
//! Deterministic: a perfect network until the test cuts the client off; the client's session
//! outlives the cut.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.session_ttl = Duration::from_secs(20);
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
    let Cluster { net, nodes, _dir } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    client
        .put("warm-up", b"1".to_vec())
        .await
        .map_err(|e| e.to_string())?;
    net.isolate(nodes[3].addr);

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
