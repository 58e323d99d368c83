//! A three-node cluster with the kv modules registered, and waiting with deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble::cluster::Cluster;
use ensemble::kv::{self, KvClient, MasterArgs, MasterMsg, Status, WorkerArgs};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryError};
use tokio::time::Instant;

use crate::common::certificates;

/// How long any expectation waits.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The partitions the tests' masters use.
pub(crate) const PARTITIONS: u32 = 8;

/// Tests take turns: three nodes with their registry and a kv service per test are plenty for
/// a two-core machine, and what is tested here is not how they fare when starved.
pub(crate) async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// One node of the cluster.
pub(crate) struct TestNode {
    pub(crate) node: Node,
    pub(crate) registry: Registry,
    _cluster: Cluster,
}

/// Three nodes, a, b and c, each a registry voter, with the kv modules registered.
pub(crate) struct KvCluster {
    pub(crate) nodes: Vec<TestNode>,
    /// The workers started, by id, to kill them.
    pub(crate) workers: BTreeMap<ActorId, UntypedRef>,
    _certs: tempfile::TempDir,
}

async fn start_node(
    name: &str,
    certs: &std::path::Path,
    seeds: Vec<std::net::SocketAddr>,
) -> TestNode {
    let (node, cluster, registry) = crate::in_process::start_node(name, certs, seeds, |registry| {
        // Generous sessions: no node is ever down in these tests, and a loaded machine must
        // not make one look so.
        registry.session_ttl = Duration::from_secs(5);
        registry.keepalive_interval = Duration::from_millis(500);
    })
    .await;
    kv::register_modules(&node);
    TestNode {
        node,
        registry,
        _cluster: cluster,
    }
}

impl KvCluster {
    pub(crate) async fn start() -> KvCluster {
        static LOG: std::sync::Once = std::sync::Once::new();
        LOG.call_once(|| crate::common::log_from_env("ENSEMBLE_TEST_LOG"));
        let certs = certificates(&["a", "b", "c"]);
        let a = start_node("a", certs.path(), vec![]).await;
        let seeds = vec![a._cluster.local_addr()];
        let b = start_node("b", certs.path(), seeds.clone()).await;
        let c = start_node("c", certs.path(), seeds).await;
        KvCluster {
            nodes: vec![a, b, c],
            workers: BTreeMap::new(),
            _certs: certs,
        }
    }

    /// Starts a master on node `i` as the platform would (module and arguments), and registers
    /// it under the master's name once the name is free.
    pub(crate) async fn start_master(&self, i: usize) -> ActorRef<MasterMsg> {
        let master = self.start_master_unnamed(i, PARTITIONS).await;
        let n = &self.nodes[i];
        let deadline = Instant::now() + DEADLINE;
        loop {
            match n.registry.register(kv::MASTER_NAME, &master).await {
                Ok(()) => return master,
                // The former master's name is released once its end reaches the registry.
                Err(RegistryError::NameTaken { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot register the master: {err}"),
            }
        }
    }

    /// Starts a master of `partitions` partitions on node `i`, without its name.
    pub(crate) async fn start_master_unnamed(
        &self,
        i: usize,
        partitions: u32,
    ) -> ActorRef<MasterMsg> {
        let args = MasterArgs {
            partitions,
            // A loaded machine must not make a worker miss a round: a partial first round of
            // a new master would rebuild a different (still correct) table than the one the
            // failover test expects.
            report_timeout_ms: 10_000,
            ..MasterArgs::default()
        };
        let n = &self.nodes[i];
        let started = n
            .node
            .start_module(kv::MASTER_MODULE, &rmp_serde::to_vec_named(&args).unwrap())
            .await
            .unwrap();
        started
            .actor
            .downcast::<MasterMsg>()
            .expect("a local kv master")
    }

    /// Starts a worker on node `i`, with no arguments (as an app spec without `args`) or
    /// explicit defaults, alternately.
    pub(crate) async fn start_worker(&mut self, i: usize) -> ActorId {
        let args = if self.workers.len() % 2 == 0 {
            rmp_serde::to_vec_named(&()).unwrap()
        } else {
            rmp_serde::to_vec_named(&WorkerArgs::default()).unwrap()
        };
        let started = self.nodes[i]
            .node
            .start_module(kv::WORKER_MODULE, &args)
            .await
            .unwrap();
        let id = started.actor.id().clone();
        self.workers.insert(id.clone(), started.actor);
        id
    }

    /// Starts a worker on each of `nodes`, in order.
    pub(crate) async fn start_workers(&mut self, nodes: &[usize]) {
        for &i in nodes {
            self.start_worker(i).await;
        }
    }

    /// Kills a worker started with `start_worker` and waits until it has ended.
    pub(crate) async fn kill_worker(&mut self, id: &ActorId) {
        let worker = self.workers.remove(id).expect("a worker of this test");
        worker.kill();
        tokio::time::timeout(DEADLINE, worker.wait_for_exit())
            .await
            .expect("the killed worker ends");
    }

    /// A client on node `i`.
    pub(crate) fn client(&self, i: usize) -> KvClient {
        KvClient::from_node(&self.nodes[i].node)
            .unwrap()
            .with_deadline(Duration::from_secs(20))
            .with_attempt_timeout(Duration::from_secs(2))
    }
}

/// Waits until `check` gives something, or fails naming `what`.
pub(crate) async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the master (as `client` finds it) knows `workers` workers and has every
/// partition assigned, replicated and confirmed by the workers.
pub(crate) async fn settled(client: &KvClient, workers: usize) -> Status {
    eventually(
        &format!("a settled table over {workers} workers"),
        async || {
            let status = client.status().await.ok()?;
            (status.workers.len() == workers
                && status.assigned == PARTITIONS
                && status.replicated == PARTITIONS
                && status.settled)
                .then_some(status)
        },
    )
    .await
}

/// The value the tests write under key `i`.
pub(crate) fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 7)).into_bytes()
}

/// The key `i`.
pub(crate) fn key(i: usize) -> String {
    format!("key-{i}")
}

/// Checks that every key in `keys` reads back its value.
pub(crate) async fn check_keys(client: &KvClient, keys: impl IntoIterator<Item = usize>) {
    for i in keys {
        let found = client
            .get(&key(i))
            .await
            .unwrap_or_else(|err| panic!("reading {}: {err}", key(i)));
        assert_eq!(found, Some(value(i)), "{}", key(i));
    }
}
