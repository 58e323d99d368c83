//! Deterministic simulation: three nodes in this process, their QUIC endpoints over a
//! simulated network ([`SimNet`]) with seeded loss, duplication, delay and partitions, on
//! paused tokio time, running the real cluster service and registry. Lock clients on every
//! node take and give back one lock while a chaos schedule cuts nodes off and heals them; a
//! writer stores config keys. The invariants of DESIGN.md section 8 are checked as it runs
//! and at the end:
//!
//! 1. at no instant do two nodes hold an unlost lease on the lock, and fencing tokens
//!    strictly increase across grants;
//! 2. no global name resolves to an actor of a node whose session expired;
//! 3. every acknowledged config write reads back after the network heals.
//!
//! Seeds: `ENSEMBLE_SIM_SEED=N` runs one seed; `ENSEMBLE_SIM_SEEDS=N` runs seeds 0..N (the
//! default is a small number, for CI); a failure names its seed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Lease, Registry, RegistryConfig};
use ensemble::transport::certs::ClusterCa;
use ensemble::transport::simnet::{Faults, Network, SimNet, sim_addr};
use parking_lot::Mutex;
use tokio::time::Instant;

const NODES: u8 = 3;
const LOCK: &str = "sim-lock";
/// How long the chaos schedule runs, in virtual time.
const CHAOS: Duration = Duration::from_secs(30);
/// Seeds run by default (each takes a few seconds of real time in a debug build).
const DEFAULT_SEEDS: u64 = 4;

/// One grant of the lock, as its holder saw it.
#[derive(Clone, Debug)]
struct Grant {
    node: usize,
    token: u64,
    from: Instant,
    /// When the holder stopped relying on it (released, or found it lost).
    until: Option<Instant>,
}

#[derive(Default)]
struct History {
    grants: Vec<Grant>,
    /// The leases held right now, by node.
    live: BTreeMap<usize, Arc<Lease>>,
    /// Acknowledged config writes: key -> value.
    acked: BTreeMap<String, String>,
    violations: Vec<String>,
}

impl History {
    /// Invariant 1 at this instant: at most one unlost lease.
    fn check_now(&mut self, at: Instant, origin: Instant) {
        let holders: Vec<(usize, u64)> = self
            .live
            .iter()
            .filter(|(_, lease)| !lease.is_lost())
            .map(|(node, lease)| (*node, lease.token()))
            .collect();
        if holders.len() > 1 {
            self.violations.push(format!(
                "at {:?}: {} holders of {LOCK} at once: {holders:?}",
                at - origin,
                holders.len()
            ));
        }
    }

    /// Invariant 1 over the whole history: grants in token order never overlap.
    fn check_history(&self, origin: Instant) -> Vec<String> {
        let mut grants = self.grants.clone();
        grants.sort_by_key(|g| g.token);
        let mut problems = Vec::new();
        for pair in grants.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.token == b.token {
                problems.push(format!("token {} granted twice: {a:?} {b:?}", a.token));
            }
            if b.from < a.from {
                problems.push(format!(
                    "token {} granted at {:?}, before token {} at {:?}",
                    b.token,
                    b.from - origin,
                    a.token,
                    a.from - origin
                ));
            }
            match a.until {
                Some(until) if until <= b.from || a.node == b.node => {}
                _ => problems.push(format!(
                    "grant {} (node {}) still held at {:?} when grant {} (node {}) began",
                    a.token,
                    a.node,
                    b.from - origin,
                    b.token,
                    b.node
                )),
            }
        }
        problems
    }
}

struct SimNode {
    node: Node,
    cluster: Cluster,
    registry: Registry,
    /// Where it listens: `10.0.0.<i+1>`, a new port for each incarnation.
    addr: SocketAddr,
    /// Its lock client.
    client: Option<tokio::task::JoinHandle<()>>,
}

/// Starts node `i` (incarnation number `generation`, counting restarts), joining through
/// `seeds`.
async fn start_node(
    i: u8,
    generation: u16,
    seeds: Vec<SocketAddr>,
    net: &SimNet,
    ca: &ClusterCa,
    dir: &std::path::Path,
) -> Result<SimNode, String> {
    let name = format!("s{i}");
    let node = Node::new(NodeConfig::new(&name).incarnation(u64::from(generation) + 1))
        .map_err(|e| e.to_string())?;
    let mut config = ClusterConfig::new("sim");
    let addr = SocketAddr::new(sim_addr(i).ip(), 7000 + generation);
    config.listen = addr;
    config.network = Network::Simulated(net.clone());
    config.down = DownDecision::External;
    config.seeds = seeds;
    let cert = ca.issue(&name).map_err(|e| e.to_string())?;
    let cluster = Cluster::start(&node, config, &cert)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut settings = RegistryConfig::new(dir.join(&name));
    settings.bootstrap = i == 0 && generation == 0;
    settings.inline_storage = true;
    let registry = Registry::start(&cluster, settings)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(SimNode {
        node,
        cluster,
        registry,
        addr,
        client: None,
    })
}

/// Waits (virtual time) until `check` holds.
async fn until(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !check() {
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {within:?} (virtual) waiting for {what}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A node's lock client: takes the lock, holds it a while, gives it back; forever.
async fn lock_client(i: usize, registry: Registry, history: Arc<Mutex<History>>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9));
    loop {
        match registry.lock(LOCK, Duration::from_secs(2)).await {
            Ok(lease) => {
                let lease = Arc::new(lease);
                let from = Instant::now();
                {
                    let mut h = history.lock();
                    h.grants.push(Grant {
                        node: i,
                        token: lease.token(),
                        from,
                        until: None,
                    });
                    h.live.insert(i, lease.clone());
                    h.check_now(from, from);
                }
                let hold = Duration::from_millis(rng.u64(10..300));
                let lost = tokio::select! {
                    _ = lease.lost() => true,
                    () = tokio::time::sleep(hold) => false,
                };
                let until = Instant::now();
                {
                    let mut h = history.lock();
                    h.live.remove(&i);
                    if let Some(g) = h
                        .grants
                        .iter_mut()
                        .rev()
                        .find(|g| g.node == i && g.token == lease.token())
                    {
                        g.until = Some(until);
                    }
                }
                if !lost && let Ok(lease) = Arc::try_unwrap(lease) {
                    let _ = lease.release().await;
                }
            }
            Err(e) => {
                if trace() {
                    eprintln!("  s{i} lock: {e}");
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(5..50))).await;
            }
        }
    }
}

/// Writes config keys through node 0..n in turn, recording the acknowledged ones.
async fn writer(registries: Arc<Mutex<Vec<Registry>>>, history: Arc<Mutex<History>>) {
    for i in 0u64.. {
        let registry = {
            let registries = registries.lock();
            registries[i as usize % registries.len()].clone()
        };
        let key = format!("sim/{}", i % 50);
        let value = format!("{i}");
        // While the write is in flight (and if it fails, or the writer is stopped during it)
        // its outcome is unknown: the key may hold this value or the last acknowledged one,
        // so it is not checked unless a later write is acknowledged.
        history.lock().acked.remove(&key);
        if registry.put(&key, value.clone()).await.is_ok() {
            history.lock().acked.insert(key, value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scenario(seed: u64) -> Result<String, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let net = SimNet::new(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = ClusterCa::generate("sim").map_err(|e| e.to_string())?;
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..NODES {
        let seeds = nodes.first().map(|n| vec![n.addr]).unwrap_or_default();
        nodes.push(start_node(i, 0, seeds, &net, &ca, dir.path()).await?);
    }
    let mut generations = vec![0u16; NODES as usize];
    let registries: Vec<Registry> = nodes.iter().map(|n| n.registry.clone()).collect();
    if std::env::var_os("ENSEMBLE_SIM_TRACE").is_some() {
        eprintln!("seed {seed}: nodes started");
    }
    until("every node's session", Duration::from_secs(30), || {
        registries
            .iter()
            .all(|r| r.sessions().len() == NODES as usize && r.leader().is_some())
    })
    .await?;

    // Faults from now on.
    let min_delay = Duration::from_micros(rng.u64(100..1000));
    let faults = Faults {
        loss: rng.f64() * 0.05,
        duplicate: rng.f64() * 0.02,
        min_delay,
        max_delay: min_delay + Duration::from_micros(rng.u64(0..5000)),
    };
    net.set_faults(faults);

    let origin = Instant::now();
    let real_start = std::time::Instant::now();
    let history: Arc<Mutex<History>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.client = Some(tokio::spawn(lock_client(
            i,
            node.registry.clone(),
            history.clone(),
            seed,
        )));
    }
    let writes = Arc::new(Mutex::new(registries.clone()));
    tasks.push(tokio::spawn(writer(writes.clone(), history.clone())));
    // Invariant 1, sampled every millisecond of virtual time.
    let checker = {
        let history = history.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                history.lock().check_now(Instant::now(), origin);
            }
        })
    };
    tasks.push(checker);

    // Chaos: cut one node off for a while, heal, repeat.
    let mut schedule = Vec::new();
    while origin.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..2000))).await;
        let victim = rng.usize(..NODES as usize);
        let cut_for = Duration::from_millis(rng.u64(300..3000));
        schedule.push(format!(
            "{:?}: isolate s{victim} for {cut_for:?}",
            origin.elapsed()
        ));
        if std::env::var_os("ENSEMBLE_SIM_TRACE").is_some() {
            eprintln!(
                "seed {seed}: {} (real {:?}, {} grants)",
                schedule.last().expect("just pushed"),
                real_start.elapsed(),
                history.lock().grants.len()
            );
        }
        net.isolate(nodes[victim].addr);
        tokio::time::sleep(cut_for).await;
        net.heal();
        // Time for a healed node to hear that its session expired.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A node whose session expired is down for good: like a supervised OS process, it is
        // started again as a new incarnation, with its data dir.
        for i in 0..nodes.len() {
            if !nodes[i].registry.is_expired() {
                continue;
            }
            generations[i] += 1;
            schedule.push(format!(
                "{:?}: s{i} expired; restarted as incarnation {}",
                origin.elapsed(),
                generations[i] + 1
            ));
            let old = &mut nodes[i];
            if let Some(client) = old.client.take() {
                client.abort();
            }
            history.lock().live.remove(&i);
            old.node.shutdown().await;
            old.cluster.leave().await;
            let seeds: Vec<SocketAddr> = nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.addr)
                .collect();
            let mut fresh =
                start_node(i as u8, generations[i], seeds, &net, &ca, dir.path()).await?;
            fresh.client = Some(tokio::spawn(lock_client(
                i,
                fresh.registry.clone(),
                history.clone(),
                seed,
            )));
            writes.lock()[i] = fresh.registry.clone();
            nodes[i] = fresh;
        }
        // Invariant 2: names never point at a node whose session expired.
        for r in nodes.iter().map(|n| &n.registry) {
            let sessions: Vec<_> = r.sessions().into_iter().map(|s| s.node).collect();
            for (name, wire) in r.names_with_prefix("") {
                if !sessions.contains(wire.id.node()) {
                    history.lock().violations.push(format!(
                        "name {name} resolves to {} whose session is gone",
                        wire.id
                    ));
                }
            }
        }
    }

    // Heal for good; the cluster settles; every acknowledged write reads back.
    net.heal();
    net.set_faults(Faults::default());
    for task in &tasks {
        task.abort();
    }
    for node in &mut nodes {
        if let Some(client) = node.client.take() {
            client.abort();
        }
    }
    if std::env::var_os("ENSEMBLE_SIM_TRACE").is_some() {
        eprintln!(
            "seed {seed}: chaos over; reading back (real {:?})",
            real_start.elapsed()
        );
    }
    let survivor = nodes
        .iter()
        .find(|n| !n.registry.is_fenced())
        .map(|n| n.registry.clone())
        .unwrap_or_else(|| nodes[0].registry.clone());
    let acked = history.lock().acked.clone();
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let mut last = String::new();
        let mut ok = false;
        for _ in 0..50 {
            match survivor.get(key).await {
                Ok(found) => {
                    last = format!(
                        "found {:?}",
                        found
                            .as_ref()
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    );
                    ok = found.is_some_and(|kv| kv.value == value.as_bytes());
                    break;
                }
                Err(e) => {
                    if trace() {
                        eprintln!("  read {key}: {e}");
                    }
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if !ok {
            lost.push(format!("{key}={value} ({last})"));
        }
    }

    let (mut problems, grants) = {
        let h = history.lock();
        let mut problems = h.violations.clone();
        problems.extend(h.check_history(origin));
        (problems, h.grants.len())
    };
    if !lost.is_empty() {
        problems.push(format!("acknowledged writes lost: {lost:?}"));
    }
    let stats = net.stats();
    let summary = format!(
        "seed {seed}: {grants} grants, {} acknowledged keys, faults {faults:?}, {} partitions, network {stats:?}",
        acked.len(),
        schedule.len()
    );
    for n in nodes {
        n.node.shutdown().await;
        n.cluster.leave().await;
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(format!(
            "{summary}\nschedule:\n  {}\nviolations:\n  {}",
            schedule.join("\n  "),
            problems.join("\n  ")
        ))
    }
}

fn trace() -> bool {
    std::env::var_os("ENSEMBLE_SIM_TRACE").is_some()
}

fn run_seed(seed: u64) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(scenario(seed))
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("ENSEMBLE_SIM_SEED") {
        return vec![seed.parse().expect("ENSEMBLE_SIM_SEED must be a number")];
    }
    let count = std::env::var("ENSEMBLE_SIM_SEEDS")
        .ok()
        .map(|n| n.parse().expect("ENSEMBLE_SIM_SEEDS must be a number"))
        .unwrap_or(DEFAULT_SEEDS);
    (0..count).collect()
}

#[test]
fn locks_names_and_config_hold_their_invariants_under_seeded_faults() {
    let mut failures = Vec::new();
    for seed in seeds() {
        match run_seed(seed) {
            Ok(summary) => eprintln!("{summary}"),
            Err(report) => {
                eprintln!("FAILED {report}");
                failures.push(seed);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seeds {failures:?} broke an invariant (rerun one with ENSEMBLE_SIM_SEED=<seed>)"
    );
}
