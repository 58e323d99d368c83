//! A node's agent (`supervisor::agent`) on a node of its own (real QUIC, a real registry):
//! what it reserves for an instance goes back when the instance cannot start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ensemble::cluster::Cluster;
use ensemble::prelude::*;
use ensemble::registry::Registry;
use ensemble::supervisor::agent::{
    AGENT_NAME, Agent, AgentMsg, NotStarted, StartInstance, start_on,
};
use ensemble::supervisor::placement::Requirements;
use ensemble::supervisor::program::{self, ProgramSpec};
use ensemble::supervisor::{ChildSpec, Placement, SupervisorError, SupervisorRef, SupervisorSpec};

use crate::solo::{node_in, node_s1};
use crate::util::{certificates, one_cluster_at_a_time};

struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// An actor whose start takes the given number of milliseconds.
struct Slow(u64);

impl Actor for Slow {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        Ok(())
    }

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// How many times `Gated` began to start.
static GATED_STARTS: AtomicUsize = AtomicUsize::new(0);
/// What `Gated` waits for in its `started` hook.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// An actor whose start waits until the test opens [`GATE`].
struct Gated;

impl Actor for Gated {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        GATED_STARTS.fetch_add(1, Ordering::SeqCst);
        GATE.acquire().await.expect("the gate").forget();
        Ok(())
    }

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// Waits up to ten seconds for `done`, saying `what` it waited for if it never came.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A node of its own with 1000 `cpu`, its registry, the modules `test.idle` and `test.slow`
/// and its agent.
async fn one_node(certs: &std::path::Path) -> (Node, Registry, ActorRef<AgentMsg>) {
    let (node, registry) = node_s1(certs).await;
    node.register_module("test.idle", |(): ()| Idle);
    node.register_module("test.slow", Slow);
    let agent = Agent::start(&node).await.unwrap();
    (node, registry, agent)
}

/// The cluster service of `node`.
fn cluster_of(node: &Node) -> Cluster {
    node.extension::<Cluster>().expect("the node's cluster")
}

fn cpu(amount: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([("cpu".to_owned(), amount)])
}

/// A start of `module` with these arguments, needing `amount` of `cpu`.
fn instance(module: &str, args: &impl serde::Serialize, amount: u64) -> StartInstance {
    StartInstance {
        instance: format!("test/{module}@s1#1"),
        module: module.into(),
        args: rmp_serde::to_vec(args).unwrap(),
        resources: cpu(amount),
        global_name: None,
        groups: Vec::new(),
        singleton: None,
        lock_timeout: Duration::ZERO,
        owner: None,
    }
}

/// A child `w` of the module `test.idle` that needs `amount` of `cpu` on any node.
fn placed_child(amount: u64) -> ChildSpec {
    ChildSpec::module("w", "test.idle", &())
        .unwrap()
        .placement(Placement::Any(Requirements {
            resources: cpu(amount),
            ..Requirements::default()
        }))
}

/// Two supervisors of these names on `node`.
async fn two_supervisors(node: &Node, names: [&str; 2]) -> (SupervisorRef, SupervisorRef) {
    (
        SupervisorRef::start(node, SupervisorSpec::new(names[0]))
            .await
            .unwrap(),
        SupervisorRef::start(node, SupervisorSpec::new(names[1]))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Held for the whole test on purpose, as in the other tests of this file's neighbours.
#[allow(clippy::await_holding_lock)]
async fn a_singleton_that_cannot_take_its_lease_frees_its_reservation() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, agent) = one_node(certs.path()).await;

    // Someone else holds the singleton's lock for the whole test.
    let _held = registry.try_lock("test.singleton").await.unwrap();
    let request = StartInstance {
        singleton: Some("test.singleton".into()),
        lock_timeout: Duration::from_millis(200),
        ..instance("test.idle", &(), 600)
    };
    let refused = start_on(&cluster_of(&node), &agent, request, Duration::from_secs(10)).await;
    let why = refused.expect_err("the lease is held by another");
    assert!(matches!(why, NotStarted::Failed(_)), "{why:?}");
    assert!(why.to_string().contains("test.singleton"), "{why}");
    assert_eq!(
        registry.reserved(node.id()),
        BTreeMap::new(),
        "the reservation of the instance that did not start is still there"
    );
    node.shutdown().await;
}

/// A module whose factory panics fails its start at once, with the panic in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_start_whose_module_panics_is_answered_at_once() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry) = start_a_module_that_panics(certs.path(), None).await;
    node.shutdown().await;
}

/// A singleton's start whose module panics gives the singleton's lock back: kept, the lock
/// held by no instance would keep every other node's start of the singleton waiting in line
/// for as long as this node lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_singleton_start_whose_module_panics_gives_its_lock_back() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry) = start_a_module_that_panics(certs.path(), Some("test.singleton")).await;
    let lease = registry
        .try_lock("test.singleton")
        .await
        .expect("the singleton's lock is free again");
    lease.release().await.unwrap();
    node.shutdown().await;
}

/// Asks a one-node cluster to start a module whose factory panics (a singleton taking lock
/// `singleton`, if given): the start must fail at once, naming the panic, and give its
/// reservation back.
async fn start_a_module_that_panics(
    certs: &std::path::Path,
    singleton: Option<&str>,
) -> (Node, Registry) {
    let (node, registry, agent) = one_node(certs).await;
    node.register_module("test.panics", |(): ()| -> Idle {
        panic!("a faulty factory")
    });
    let cluster = cluster_of(&node);
    let asked = start_on(
        &cluster,
        &agent,
        StartInstance {
            singleton: singleton.map(str::to_owned),
            lock_timeout: Duration::from_secs(1),
            ..instance("test.panics", &(), 100)
        },
        Duration::from_secs(600),
    );
    let refused = tokio::time::timeout(Duration::from_secs(30), asked)
        .await
        .expect("answered at once, not at the timeout");
    assert!(
        matches!(refused, Err(NotStarted::Failed(ref why)) if why.contains("a faulty factory")),
        "{refused:?}"
    );
    assert_eq!(registry.reserved(node.id()), BTreeMap::new());
    (node, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn two_supervisors_of_one_name_reserve_each_for_its_own_child() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, _agent) = one_node(certs.path()).await;
    let child = || placed_child(300);
    // Two supervisors built from one spec, as a parent's children or a restarted one are.
    let (first, second) = two_supervisors(&node, ["shard", "shard"]).await;
    first.start_child(child()).await.unwrap();
    second.start_child(child()).await.unwrap();
    assert_eq!(
        registry.reserved(node.id()),
        cpu(600),
        "each child holds a reservation of its own"
    );
    // The first child's end frees its reservation only.
    first.terminate_child("w").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.reserved(node.id()) != cpu(300) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reserved after the first child ended: {:?}",
            registry.reserved(node.id())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_child_that_finds_no_room_left_waits_for_a_node_instead_of_failing() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, agent) = one_node(certs.path()).await;
    // An agent asked for more than the node has answers that there is no room, not a failure.
    let request = instance("test.idle", &(), 1200);
    let refused = start_on(&cluster_of(&node), &agent, request, Duration::from_secs(10)).await;
    assert!(
        matches!(refused, Err(NotStarted::NoRoom(ref why)) if why.contains("cpu")),
        "{refused:?}"
    );
    // Two supervisors place a child each at the same moment, 600 of the node's 1000 each:
    // both plan from the same copy of the registry, and one loses the race at the agent (or,
    // later, finds no room in its plan). Either way it waits for a node; it has not failed.
    let child = || placed_child(600);
    let (first, second) = two_supervisors(&node, ["a", "b"]).await;
    let (one, other) = tokio::join!(first.start_child(child()), second.start_child(child()));
    let outcomes = [one, other];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(SupervisorError::Unplaced { .. }))),
        "the child that found no room failed instead of waiting: {outcomes:?}"
    );
    assert_eq!(registry.reserved(node.id()), cpu(600));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_instance_that_starts_after_its_asker_gave_up_is_stopped_again() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, agent) = one_node(certs.path()).await;
    let before = node.actor_count();
    let request = StartInstance {
        global_name: Some("test.slow".into()),
        ..instance("test.slow", &800_u64, 100)
    };
    // The asker gives up after 400 ms; the instance is up after 800.
    let asked = start_on(
        &cluster_of(&node),
        &agent,
        request,
        Duration::from_millis(400),
    )
    .await;
    assert!(
        matches!(asked, Err(NotStarted::Failed(ref why)) if why.contains("did not answer")),
        "{asked:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reserved = registry.reserved(node.id());
        let named = registry.whereis::<()>("test.slow").ok().flatten();
        if reserved.is_empty() && named.is_none() && node.actor_count() == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance nobody waits for still runs: {} actors against {before}, reserved \
             {reserved:?}, name {named:?}",
            node.actor_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await;
}

/// An instance started for an owner (a supervisor) that ends while the start runs, before
/// it could link to the instance, is stopped, and what it held goes back: nobody would
/// supervise it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_instance_whose_owner_ended_is_stopped() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, agent) = one_node(certs.path()).await;
    let owner = node.spawn(Idle).unwrap();
    let before = node.actor_count();
    let request = StartInstance {
        owner: Some(owner.id().clone()),
        ..instance("test.slow", &500_u64, 100)
    };
    let cluster = cluster_of(&node);
    let asked =
        tokio::spawn(
            async move { start_on(&cluster, &agent, request, Duration::from_secs(10)).await },
        );
    // The owner ends while the instance starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.actor_count() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance never began"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    owner.kill();
    let started = asked.await.unwrap().expect("the start itself succeeds");
    loop {
        let reserved = registry.reserved(node.id());
        if reserved.is_empty() && node.actor_count() == before - 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance {} of an owner that ended still runs: {} actors against {}, \
             reserved {reserved:?}",
            started.id,
            node.actor_count(),
            before - 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn supervisors_that_ended_leave_no_task_behind() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, _agent) = one_node(certs.path()).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    // Each supervisor on a node with a cluster listens for joining nodes.
    const STARTED: usize = 40;
    for i in 0..STARTED {
        let supervisor = SupervisorRef::start(&node, SupervisorSpec::new(format!("s{i}")))
            .await
            .unwrap();
        supervisor.stop();
        supervisor.wait_for_exit().await;
    }
    // The node's own tasks come and go (keepalives, the copy's feed): a margin, far below
    // one task per supervisor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks() > before + STARTED / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks alive against {before} before {STARTED} supervisors started and ended",
            tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await;
}

/// A start whose connection ends while the instance starts (both nodes live) is sent again
/// once the nodes are connected, and answered with the one instance the agent started: the
/// asker cannot tell whether the first request arrived, and the agent does each start once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_start_whose_connection_ends_is_answered_with_its_one_instance() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1", "s2"]);
    let (s1, c1, _r1) = node_in("s1", certs.path(), vec![]).await;
    s1.register_module("test.gated", |(): ()| Gated);
    Agent::start(&s1).await.unwrap();
    let (s2, c2, _r2) = node_in("s2", certs.path(), vec![c1.local_addr()]).await;
    let agent = c2
        .whereis::<AgentMsg>(s1.id(), AGENT_NAME)
        .await
        .expect("s1's agent");
    let request = StartInstance {
        resources: BTreeMap::new(),
        ..instance("test.gated", &(), 0)
    };
    let asked = tokio::spawn({
        let cluster = c2.clone();
        async move { start_on(&cluster, &agent, request, Duration::from_secs(60)).await }
    });
    wait_until("the instance never began to start", || {
        GATED_STARTS.load(Ordering::SeqCst) == 1
    })
    .await;
    let closed = c2.connection(s1.id()).expect("a connection to s1");
    assert!(c2.disconnect(s1.id()), "no connection to s1 to close");
    wait_until("s2 did not connect to s1 again", || {
        c2.connection(s1.id()).is_some_and(|now| now != closed)
    })
    .await;
    GATE.add_permits(16);
    let started = tokio::time::timeout(Duration::from_secs(30), asked)
        .await
        .expect("the start was answered")
        .unwrap()
        .expect("the start succeeded");
    assert_eq!(started.id.node(), s1.id());
    assert_eq!(
        GATED_STARTS.load(Ordering::SeqCst),
        1,
        "the request sent again started a second instance"
    );
    assert!(
        c2.members().iter().any(|m| &m.node == s1.id()),
        "s1 was declared down: the test needs it alive"
    );
    s2.shutdown().await;
    s1.shutdown().await;
}

/// Two program children of one supervisor, each kept apart from its own kind
/// (anti-affinity), are two roles: both run on the one node. Every program is a child of the
/// module `ensemble.program`, and the two were taken for one role, so the second waited for
/// another node for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Held for the whole test on purpose, as in the other tests of this file.
#[allow(clippy::await_holding_lock)]
async fn two_programs_kept_apart_from_their_own_kind_run_on_one_node() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, _agent) = one_node(certs.path()).await;
    program::register(&node);
    let apart = Placement::Any(Requirements {
        anti_affinity: true,
        ..Requirements::default()
    });
    let child = |id: &str, seconds: &str| {
        ChildSpec::program(id, &ProgramSpec::new("sleep", &[seconds])).placement(apart.clone())
    };
    let spec = SupervisorSpec::new("programs")
        .child(child("db", "1000"))
        .child(child("cache", "1001"));
    let supervisor = SupervisorRef::start(&node, spec).await.unwrap();
    for child in supervisor.which_children().await.unwrap() {
        assert!(
            child.actor.is_some(),
            "program {} does not run: {:?}",
            child.id,
            child.state
        );
    }
    supervisor.stop();
    supervisor.wait_for_exit().await;
    node.shutdown().await;
}
