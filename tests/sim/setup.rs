//! The deterministic scenarios' setup: a paused single-threaded runtime with every source of
//! chance seeded, and three voters and a client on a perfect network (a fixed 100 µs per
//! datagram) until the test cuts it.

use std::time::Duration;

use ensemble::NodeId;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::ClusterCa;
use ensemble::transport::simnet::SimNet;
use tokio::time::Instant;

use crate::{SimNode, start_node, until};

/// Runs `scenario` on a paused single-threaded runtime, with every source of chance seeded.
pub(crate) fn run<F: Future<Output = Result<(), String>>>(
    seed: u64,
    scenario: impl FnOnce(u64) -> F,
) {
    crate::log_if_asked();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(true);
    fastrand::seed(seed);
    ensemble::hashing::seed(seed);
    let runtime = builder.build().expect("runtime");
    if let Err(report) = runtime.block_on(scenario(seed)) {
        panic!("{report}");
    }
}

/// A scenario's nodes on a perfect network, every session open ([`four_nodes`], [`nodes`]).
pub(crate) struct Cluster {
    pub(crate) net: SimNet,
    pub(crate) nodes: Vec<SimNode>,
    /// The cluster's CA, to start nodes again.
    pub(crate) ca: ClusterCa,
    /// Where the nodes keep their data: `<dir>/<name>`.
    pub(crate) _dir: tempfile::TempDir,
}

/// Three voters (s0, s1, s2) and a client (s3).
pub(crate) async fn four_nodes(
    seed: u64,
    tune: fn(&mut RegistryConfig),
) -> Result<Cluster, String> {
    let cluster = nodes(seed, 4, tune).await?;
    let nodes = &cluster.nodes;
    // The voters are added one at a time after the first: wait for all three, so that losing
    // one leaves a majority.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[0].registry.voters().await.map_or(0, |v| v.len()) < 3 {
        if Instant::now() > deadline {
            return Err("the voters never grew to three".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(cluster)
}

/// `count` nodes (s0, s1, ...) on a perfect network, each joining through s0, every session
/// open and a leader known to each; `tune` sets their registries (how many voters, say).
pub(crate) async fn nodes(
    seed: u64,
    count: u8,
    tune: fn(&mut RegistryConfig),
) -> Result<Cluster, String> {
    let net = SimNet::new(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = ClusterCa::generate("sim").map_err(|e| e.to_string())?;
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..count {
        let seeds = nodes.first().map(|n| vec![n.addr]).unwrap_or_default();
        nodes.push(start_node(i, 0, 1.0, seeds, &net, &ca, dir.path(), tune).await?);
    }
    until("every node's session", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            n.registry.sessions().len() == usize::from(count) && n.registry.leader().is_some()
        })
    })
    .await?;
    Ok(Cluster {
        net,
        nodes,
        ca,
        _dir: dir,
    })
}

/// The node whose holder has `lock`, in `registry`'s copy.
pub(crate) fn holder_of(registry: &Registry, lock: &str) -> Option<NodeId> {
    let (holder, _) = registry.lock_info(lock)?.holder?;
    Some(holder.node)
}

/// The position among the voters (`nodes[..3]`) of the leader `client` names, which it
/// learned from its last call.
pub(crate) fn leader_named_by(client: &Registry, nodes: &[SimNode]) -> Result<usize, String> {
    let name = client
        .leader()
        .ok_or("the client names no leader after its call")?;
    nodes[..3]
        .iter()
        .position(|n| n.node.id().name() == name)
        .ok_or_else(|| format!("the leader {name} is not a voter"))
}

/// Writes `key` through `registry`, trying up to 20 times: its node may still name a leader
/// that was just cut off. Fails naming `side`.
pub(crate) async fn put_retrying(
    registry: &Registry,
    key: &str,
    value: &[u8],
    side: &str,
) -> Result<(), String> {
    let mut attempts = 0;
    while let Err(err) = registry.put(key, value.to_vec()).await {
        attempts += 1;
        if attempts == 20 {
            return Err(format!("{side} took no write in 20 attempts: {err}"));
        }
    }
    Ok(())
}
