//! Supervisor children waiting for a node, on a node of its own (`s1`, 1000 `cpu`): a child
//! that waited for room and then fails to start once there is some fails, counted against
//! the restart intensity, instead of waiting for good; children given up on, and those of a
//! supervisor that stopped, are no longer counted as waiting.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use ensemble::prelude::*;
use ensemble::supervisor::agent::Agent;
use ensemble::supervisor::placement::Requirements;
use ensemble::supervisor::{ChildSpec, Placement, SupervisorError, SupervisorRef, SupervisorSpec};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::solo::node_s1;
use crate::util::{DEADLINE, certificates, one_cluster_at_a_time};

struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// An actor whose start always fails.
struct Failing;

impl Actor for Failing {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        Err(ActorError::new("cannot open the database"))
    }

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// `s1` with the modules `test.idle` and `test.failing`, and its agent.
async fn one_node(certs: &std::path::Path) -> Node {
    let (node, _registry) = node_s1(certs).await;
    node.register_module("test.idle", |(): ()| Idle);
    node.register_module("test.failing", |(): ()| Failing);
    Agent::start(&node).await.unwrap();
    node
}

/// A child `id` of `module` that needs `amount` of `cpu` on any node.
fn needing(id: &str, module: &str, amount: u64) -> ChildSpec {
    ChildSpec::module(id, module, &())
        .unwrap()
        .placement(Placement::Any(Requirements {
            resources: BTreeMap::from([("cpu".to_owned(), amount)]),
            ..Requirements::default()
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Held for the whole test on purpose, as in the other tests of this file's neighbours.
#[allow(clippy::await_holding_lock)]
async fn a_child_that_waited_for_room_and_then_fails_to_start_counts_against_the_intensity() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let node = one_node(certs.path()).await;
    let hog = SupervisorRef::start(&node, SupervisorSpec::new("hog"))
        .await
        .unwrap();
    hog.start_child(needing("room", "test.idle", 600))
        .await
        .unwrap();
    let spec = SupervisorSpec::new("waiter").intensity(2, Duration::from_secs(60));
    let waiter = SupervisorRef::start(&node, spec).await.unwrap();
    let waiting = waiter.start_child(needing("db", "test.failing", 600)).await;
    assert!(
        matches!(waiting, Err(SupervisorError::Unplaced { .. })),
        "{waiting:?}"
    );

    // Room frees up: the waiting child is started, and fails, at every try. Each failure
    // counts; the third within the period is over the intensity.
    hog.terminate_child("room").await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, waiter.wait_for_exit())
        .await
        .unwrap_or_else(|_| {
            panic!("the child's failed starts were taken for waiting for a node, for {DEADLINE:?}")
        });
    match reason {
        ExitReason::Failed(message) => {
            assert!(
                message.starts_with("supervisor waiter gave up: more than 2 restarts"),
                "{message}"
            );
            assert!(message.contains("cannot open the database"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    node.shutdown().await;
}

/// The metrics of this test process, recorded from the first call on (no other test of this
/// binary installs a recorder).
fn recorded() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only metrics recorder");
        handle
    })
}

/// The gauge of the children supervisor `name` has waiting for a node, once set.
fn waiting_children(name: &str) -> Option<f64> {
    let series = format!("ensemble_supervisor_unplaced_children{{supervisor=\"{name}\"}} ");
    recorded()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn children_given_up_on_and_those_of_a_stopped_supervisor_no_longer_count_as_waiting() {
    let _turn = one_cluster_at_a_time();
    recorded();
    let certs = certificates(&["s1"]);
    let node = one_node(certs.path()).await;
    let sup = SupervisorRef::start(&node, SupervisorSpec::new("gauged"))
        .await
        .unwrap();
    // It needs more than the node has: it waits.
    let too_big = || needing("big", "test.idle", 2000);
    let waiting = sup.start_child(too_big()).await;
    assert!(
        matches!(waiting, Err(SupervisorError::Unplaced { .. })),
        "{waiting:?}"
    );
    assert_eq!(waiting_children("gauged"), Some(1.0));

    sup.delete_child("big").await.unwrap();
    assert_eq!(
        waiting_children("gauged"),
        Some(0.0),
        "a child given up on is still counted as waiting"
    );

    let waiting = sup.start_child(too_big()).await;
    assert!(
        matches!(waiting, Err(SupervisorError::Unplaced { .. })),
        "{waiting:?}"
    );
    assert_eq!(waiting_children("gauged"), Some(1.0));
    sup.stop();
    sup.wait_for_exit().await;
    assert_eq!(
        waiting_children("gauged"),
        Some(0.0),
        "the child of a supervisor that stopped is still counted as waiting"
    );
    node.shutdown().await;
}
