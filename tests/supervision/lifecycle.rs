//! Start order, reverse stop order, failing starts, shutdown timeouts, placement, snapshots.

use std::time::Duration;

use ensemble::SpawnError;
use ensemble::prelude::*;
use ensemble::supervisor::{
    ChildKind, ChildSpec, ChildState, Placement, Shutdown, SupervisorError, SupervisorRef,
    SupervisorSpec,
};
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn children_start_in_order_and_stop_in_reverse() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new("ordered")
        .child(ChildSpec::worker("a", Worker::factory("a", &tx)))
        .child(ChildSpec::worker("b", Worker::factory("b", &tx)))
        .child(ChildSpec::worker("c", Worker::factory("c", &tx)));
    let sup = start(&node, spec).await;
    sup.stop();
    assert_eq!(
        within("exit", sup.wait_for_exit()).await,
        ExitReason::Shutdown
    );
    drop(tx);
    let mut order = Vec::new();
    while let Some(event) = events.recv().await {
        order.push(match event {
            Ev::Started(name, ..) => format!("start {name}"),
            Ev::Stopping(name, _) => format!("stop {name}"),
        });
    }
    assert_eq!(
        order,
        [
            "start a", "start b", "start c", "stop c", "stop b", "stop a"
        ]
    );
}

#[tokio::test]
async fn a_child_that_fails_to_start_fails_the_supervisor_start_naming_it() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let failing = tx.clone();
    let spec = SupervisorSpec::new("app")
        .child(ChildSpec::worker("cache", Worker::factory("cache", &tx)))
        .child(ChildSpec::worker("db", move || Worker {
            name: "db",
            events: failing.clone(),
            fail_start: true,
        }))
        .child(ChildSpec::worker("web", Worker::factory("web", &tx)));
    let err = SupervisorRef::start(&node, spec).await.unwrap_err();
    let SpawnError::StartFailed { reason, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    let ExitReason::Failed(message) = reason else {
        panic!("unexpected {reason:?}");
    };
    assert!(
        message.contains("child \"db\" failed to start"),
        "{message}"
    );
    assert!(message.contains("cannot open the database"), "{message}");
    // The child started before it was stopped again; the one after was never started.
    drop(tx);
    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        seen.push(event);
    }
    assert!(
        matches!(
            seen.as_slice(),
            [Ev::Started("cache", ..), Ev::Stopping("cache", _)]
        ),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_child_that_ignores_shutdown_is_killed_after_its_timeout() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new("sup").child(
        ChildSpec::worker("stubborn", Worker::factory("stubborn", &tx))
            .shutdown(Shutdown::Timeout(Duration::from_millis(300))),
    );
    let sup = start(&node, spec).await;
    let stubborn = child(&sup, "stubborn").await.unwrap();
    stubborn.tell(Work::Hang).await.unwrap();
    let began = tokio::time::Instant::now();
    sup.terminate_child("stubborn").await.unwrap();
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(stubborn.wait_for_exit().await, ExitReason::Killed);
    let children = sup.which_children().await.unwrap();
    assert_eq!(children[0].state, ChildState::Stopped);
}

#[tokio::test]
async fn brutal_shutdown_kills_at_once() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new("sup")
        .child(ChildSpec::worker("w", Worker::factory("w", &tx)).shutdown(Shutdown::Brutal));
    let sup = start(&node, spec).await;
    let w = child(&sup, "w").await.unwrap();
    sup.terminate_child("w").await.unwrap();
    assert_eq!(w.wait_for_exit().await, ExitReason::Killed);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Ev::Stopping(..)),
            "a killed child runs no hook: {event:?}"
        );
    }
}

#[tokio::test]
async fn placement_elsewhere_needs_a_module() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("sup")).await;
    let err = sup
        .start_child(
            ChildSpec::worker("far", Worker::factory("far", &tx))
                .placement(Placement::Node("n2".into())),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SupervisorError::PlacementUnsupported { ref id, .. } if id == "far"));
    assert!(err.to_string().contains("ChildSpec::module"), "{err}");
}

#[tokio::test]
async fn snapshots_show_the_whole_tree_and_serialize() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let inner =
        SupervisorSpec::new("inner").child(ChildSpec::worker("leaf", Worker::factory("leaf", &tx)));
    let spec = SupervisorSpec::new("outer")
        .child(ChildSpec::worker("w", Worker::factory("w", &tx)))
        .child(ChildSpec::supervisor("inner", inner));
    let sup = start(&node, spec).await;
    let counts = sup.count_children().await.unwrap();
    assert_eq!(
        (
            counts.specs,
            counts.active,
            counts.workers,
            counts.supervisors
        ),
        (2, 2, 1, 1)
    );

    let tree = sup.snapshot().await.unwrap();
    assert_eq!(tree.name, "outer");
    assert_eq!(tree.children.len(), 2);
    assert_eq!(tree.children[1].kind, ChildKind::Supervisor);
    let inner = tree.children[1].tree.as_ref().expect("the inner tree");
    assert_eq!(inner.name, "inner");
    assert_eq!(inner.children[0].id, "leaf");
    assert_eq!(inner.children[0].state, ChildState::Running);

    let json = serde_json::to_value(&tree).unwrap();
    assert_eq!(json["children"][1]["tree"]["children"][0]["id"], "leaf");
    let back: ensemble::supervisor::TreeSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, tree);
}
