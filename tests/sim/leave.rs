//! A node that leaves (`Registry::leave`) ends its session for good: its locks are released at
//! once, it stops renewing the session and never opens it again, and it stays fenced. Before,
//! its next keepalive found no session and opened a new one, so the node came back as live.
//!
//! The test is deterministic: a perfect network and paused time.

use std::time::Duration;

use ensemble::registry::{RegistryConfig, RegistryError};
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};
use crate::until;

/// How long the node is watched after it left: ten keepalive intervals.
const WATCHED: Duration = Duration::from_secs(1);

fn defaults(_: &mut RegistryConfig) {}

#[test]
fn a_node_that_left_stays_gone() {
    run(41, left_stays_gone);
}

async fn left_stays_gone(seed: u64) -> Result<(), String> {
    let Cluster { nodes, _dir, .. } = four_nodes(seed, defaults).await?;
    let leaving = &nodes[3];
    let me = leaving.node.id().clone();
    let other = &nodes[0].registry;
    let _lease = leaving
        .registry
        .try_lock("leave/lock")
        .await
        .map_err(|e| format!("the lock before leaving: {e}"))?;
    leaving
        .registry
        .leave()
        .await
        .map_err(|e| format!("leave failed: {e}"))?;
    if !leaving.registry.is_fenced() {
        return Err("the node is not fenced right after it left".into());
    }
    let has_session = || other.sessions().iter().any(|s| s.node == me);
    until(
        "the other nodes to see the session closed",
        Duration::from_secs(2),
        || !has_session(),
    )
    .await?;
    if other
        .lock_info("leave/lock")
        .is_some_and(|l| l.holder.is_some())
    {
        return Err("the lock of the node that left is still held".into());
    }
    let end = Instant::now() + WATCHED;
    while Instant::now() < end {
        if has_session() {
            return Err(format!(
                "node {me} has a session again {:?} after its session closed",
                WATCHED - (end - Instant::now())
            ));
        }
        if !leaving.registry.is_fenced() {
            return Err("the node that left is no longer fenced".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match leaving.registry.try_lock("leave/other").await {
        Err(RegistryError::NoSession(node)) if node == me => Ok(()),
        other => Err(format!(
            "a lock taken after leaving answered {other:?}, not that the node has no session"
        )),
    }
}
