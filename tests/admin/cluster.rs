//! An in-process cluster for the admin API and dashboard tests.
//!
//! Each node has its own certificate from a throwaway CA, its own QUIC endpoint on 127.0.0.1,
//! a registry (data in a temporary directory), its part in running apps, and an admin server
//! on 127.0.0.1 with a free port. Once up, the cluster holds something of every kind the API
//! shows:
//!
//! - on `n1`, the top-level supervisor `services` (one for one) with a worker `cache` and a
//!   nested supervisor `storage` (rest for one) with a worker `writer`;
//! - the app `probe` (module `test.probe`): a singleton role `main` with the global name
//!   `probe.main` (so a name and a singleton lease), and a role `worker` of two instances;
//! - the lock `jobs.lock` held by `n2`, with `n1` waiting for it.

use std::future::Future;
use std::time::Duration;

use ensemble::admin::{AdminConfig, AdminServer};
use ensemble::cluster::{Cluster, ClusterConfig, DownDecision, MemberStatus};
use ensemble::prelude::*;
use ensemble::registry::{Lease, Registry, RegistryConfig};
use ensemble::supervisor::app::{AppSpec, Apps, AppsNode, role_group};
use ensemble::supervisor::{ChildSpec, Strategy, SupervisorRef, SupervisorSpec};
use ensemble::transport::certs::ClusterCa;
use serde::{Deserialize, Serialize};

/// The cluster's name.
pub(crate) const CLUSTER: &str = "admin-test";

/// The app every test cluster runs.
pub(crate) const APP_SPEC: &str = r#"
name = "probe"

[[roles]]
name = "main"
module = "test.probe"
singleton = true
global_name = "probe.main"

[[roles]]
name = "worker"
module = "test.probe"
instances = 2
"#;

/// The lock `n2` holds and `n1` waits for.
pub(crate) const LOCK: &str = "jobs.lock";

/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(60);

/// What the probe module's actors take.
#[derive(Serialize, Deserialize)]
pub(crate) enum ProbeMsg {
    /// Answers the probe's node name.
    Ping(ReplyTo<String>),
}

/// The app's module: answers pings.
struct Probe;

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn handle(&mut self, msg: ProbeMsg, ctx: &mut Context<Self>) -> ActorResult {
        let ProbeMsg::Ping(reply) = msg;
        let _ = reply.send(ctx.node().id().name().to_owned());
        Ok(())
    }
}

/// A worker of the supervision tree: does nothing.
struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// One node and everything it runs.
pub(crate) struct TestNode {
    pub(crate) node: Node,
    pub(crate) cluster: Cluster,
    pub(crate) registry: Registry,
    /// Kept so the node's agent and controller manager are not forgotten.
    _apps: AppsNode,
    pub(crate) admin: AdminServer,
}

impl TestNode {
    /// The admin server's base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.admin.local_addr())
    }
}

/// A running test cluster.
pub(crate) struct TestCluster {
    pub(crate) nodes: Vec<TestNode>,
    /// The top-level supervisor on `n1`.
    pub(crate) supervisor: SupervisorRef,
    /// `n2`'s grant of [`LOCK`].
    lease: Option<Lease>,
    /// `n1` waiting in line for [`LOCK`].
    waiter: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl TestCluster {
    /// Starts nodes `n1` and `n2`, their admin servers (with `token`, if any) and what the
    /// module docs list, and waits until all of it shows on `n1`.
    pub(crate) async fn start(token: Option<&str>) -> TestCluster {
        let data = tempfile::Builder::new()
            .prefix("ensemble-admin-test-")
            .tempdir()
            .expect("temp dir");
        let ca = ClusterCa::generate(CLUSTER).expect("CA");
        let mut nodes: Vec<TestNode> = Vec::new();
        for name in ["n1", "n2"] {
            let seed = nodes.first().map(|n| n.cluster.local_addr());
            let node = Node::new(NodeConfig::new(name)).expect("node");
            node.register_module("test.probe", |(): ()| Probe);
            let mut config = ClusterConfig::new(CLUSTER);
            config.down = DownDecision::External;
            // Nothing here tests failure detection: generous timings, so that a loaded machine
            // never makes a member look suspect, expire a session or change the leader.
            config.phi.acceptable_pause = Duration::from_secs(5);
            config.seeds = seed.into_iter().collect();
            config.resources = [("cpu".to_owned(), 1000)].into();
            config.labels = [("zone".to_owned(), format!("zone-{name}"))].into();
            let cert = ca.issue(name).expect("certificate");
            let cluster = Cluster::start(&node, config, &cert).await.expect("cluster");
            let mut settings = RegistryConfig::new(data.path().join(name));
            settings.bootstrap = seed.is_none();
            settings.session_ttl = Duration::from_secs(20);
            settings.election_timeout = (Duration::from_secs(2), Duration::from_secs(4));
            settings.validate().expect("registry settings");
            let registry = Registry::start(&cluster, settings).await.expect("registry");
            let apps = Apps::start(&node).await.expect("apps");
            let admin = AdminServer::start(
                &node,
                AdminConfig {
                    listen: ([127, 0, 0, 1], 0).into(),
                    token: token.map(str::to_owned),
                    ..AdminConfig::default()
                },
            )
            .await
            .expect("admin server");
            nodes.push(TestNode {
                node,
                cluster,
                registry,
                _apps: apps,
                admin,
            });
        }

        let spec = SupervisorSpec::new("services")
            .child(ChildSpec::worker("cache", || Idle))
            .child(ChildSpec::supervisor(
                "storage",
                SupervisorSpec::new("storage")
                    .strategy(Strategy::RestForOne)
                    .child(ChildSpec::worker("writer", || Idle)),
            ));
        let supervisor = SupervisorRef::start(&nodes[0].node, spec)
            .await
            .expect("supervisor");

        let (n1, n2) = (&nodes[0], &nodes[1]);
        until("both nodes to see each other and hold sessions", || {
            let both_up = |c: &Cluster| c.members().iter().any(|m| m.status == MemberStatus::Up);
            let ok =
                both_up(&n1.cluster) && both_up(&n2.cluster) && n1.registry.sessions().len() == 2;
            async move { ok }
        })
        .await;

        let apps = Apps::new(&n1.node).expect("apps API");
        apps.deploy(&AppSpec::from_toml(APP_SPEC).expect("app spec"))
            .await
            .expect("deploy");

        let lease = n2.registry.try_lock(LOCK).await.expect("lock");
        let waiting = n1.registry.clone();
        let waiter = tokio::spawn(async move {
            let _ = waiting.lock(LOCK, Duration::from_secs(600)).await;
        });

        let cluster = TestCluster {
            nodes,
            supervisor,
            lease: Some(lease),
            waiter,
            _data: data,
        };
        cluster.settled().await;
        cluster
    }

    /// Waits until `n1`'s copy of the registry shows the app running, its name and the lock
    /// with its waiter.
    async fn settled(&self) {
        let registry = &self.nodes[0].registry;
        let apps = Apps::new(&self.nodes[0].node).expect("apps API");
        until("app probe to run all its instances", || {
            let ok = apps.status("probe").is_some_and(|s| {
                s.roles
                    .iter()
                    .all(|r| r.running_total() == r.wanted && r.wanted > 0)
            });
            async move { ok }
        })
        .await;
        until("the name probe.main to be registered", || {
            let ok = registry.name_holder("probe.main").is_some();
            async move { ok }
        })
        .await;
        until("n1 to wait in line for the lock", || {
            let ok = registry
                .lock_info(LOCK)
                .is_some_and(|l| l.holder.is_some() && l.waiters.len() == 1);
            async move { ok }
        })
        .await;
    }

    /// `n1`.
    pub(crate) fn first(&self) -> &TestNode {
        &self.nodes[0]
    }

    /// Stops everything: the app is removed and the sessions closed while the registry still
    /// has its quorum (both nodes are its voters), then the nodes stop.
    ///
    /// Removing the app first also keeps its controller from replacing the instances that
    /// end as the nodes stop, which it could not do without a quorum anyway.
    pub(crate) async fn stop(mut self) {
        self.waiter.abort();
        if let Some(lease) = self.lease.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), lease.release()).await;
        }
        self.supervisor.stop();
        let apps = Apps::new(&self.nodes[0].node).expect("apps API");
        let _ = tokio::time::timeout(Duration::from_secs(10), apps.remove("probe")).await;
        let registry = self.nodes[0].registry.clone();
        until("the app's instances to stop", || {
            let ok = ["main", "worker"].iter().all(|role| {
                registry
                    .group_members(&role_group("probe", role))
                    .is_empty()
            });
            async move { ok }
        })
        .await;
        for member in &self.nodes {
            let _ = tokio::time::timeout(Duration::from_secs(5), member.registry.leave()).await;
        }
        while let Some(member) = self.nodes.pop() {
            member.admin.shutdown().await;
            member.node.shutdown().await;
            member.cluster.leave().await;
        }
    }
}

/// Waits until `check` answers true, polling, for up to a minute; panics naming `what` then.
pub(crate) async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
