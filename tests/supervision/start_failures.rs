//! Children whose start fails after the supervisor's own start: one added, one restarted on
//! request, one restarted after a crash, a nested supervisor. The supervisor answers or
//! counts the failure and carries on: the failed instance was spawned linked, and its exit is
//! that failed start, not the end of some other actor linked to the supervisor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ensemble::SpawnError;
use ensemble::prelude::*;
use ensemble::supervisor::{ChildSpec, SupervisorError, SupervisorSpec};
use tokio::sync::mpsc;

use crate::util::*;

/// Workers named `name` whose instances numbered in `failing` (1 for the first) fail to start.
fn failing_at(
    name: &'static str,
    events: &mpsc::UnboundedSender<Ev>,
    failing: &'static [usize],
) -> impl Fn() -> Worker + Send + Sync + 'static {
    let (events, made) = (events.clone(), Arc::new(AtomicUsize::new(0)));
    move || Worker {
        name,
        events: events.clone(),
        fail_start: failing.contains(&(made.fetch_add(1, Ordering::Relaxed) + 1)),
    }
}

/// Waits until `node` runs at most `count` actors. An instance that failed to start has told
/// its links (the supervisor) that it ended once it no longer counts; the supervisor takes
/// that signal before any request sent afterwards.
async fn settled(node: &Node, count: usize) {
    within("the failed instances to end", async {
        while node.actor_count() > count {
            // A short sleep, not a yield: the paused clock moves on only while all tasks wait.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

fn assert_start_failed(result: Result<UntypedRef, SupervisorError>, child: &str) {
    match result {
        Err(SupervisorError::StartFailed {
            id,
            error: SpawnError::StartFailed { .. },
            ..
        }) if id == child => {}
        other => panic!("expected child {child:?} to fail to start, got {other:?}"),
    }
}

#[tokio::test]
async fn an_added_child_that_fails_to_start_is_refused_and_the_supervisor_runs_on() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("dyn")).await;
    let added = sup
        .start_child(ChildSpec::worker("db", failing_at("db", &tx, &[1])))
        .await;
    assert_start_failed(added, "db");
    settled(&node, 1).await;
    let counts = sup.count_children().await.expect("the supervisor answers");
    assert_eq!(
        (counts.specs, counts.active),
        (0, 0),
        "its spec is not kept"
    );
}

#[tokio::test]
async fn a_restart_asked_for_that_fails_to_start_is_refused_and_the_supervisor_runs_on() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("dyn")).await;
    sup.start_child(ChildSpec::worker("cache", failing_at("cache", &tx, &[2])))
        .await
        .unwrap();
    sup.terminate_child("cache").await.unwrap();
    assert_start_failed(sup.restart_child("cache").await, "cache");
    settled(&node, 1).await;
    let counts = sup.count_children().await.expect("the supervisor answers");
    assert_eq!((counts.specs, counts.active), (1, 0), "its spec is kept");
}

#[tokio::test]
async fn a_nested_supervisor_that_fails_to_start_is_refused_and_the_supervisor_runs_on() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("outer")).await;
    let inner = SupervisorSpec::new("inner")
        .child(ChildSpec::worker("leaf", failing_at("leaf", &tx, &[1])));
    assert_start_failed(
        sup.start_child(ChildSpec::supervisor("inner", inner)).await,
        "inner",
    );
    settled(&node, 1).await;
    let counts = sup.count_children().await.expect("the supervisor answers");
    assert_eq!((counts.specs, counts.active), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_restart_whose_start_fails_counts_against_the_intensity_and_is_made_again() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    // The second instance fails to start.
    let spec = SupervisorSpec::new("sup")
        .intensity(2, Duration::from_secs(60))
        .child(ChildSpec::worker("w", failing_at("w", &tx, &[2])));
    let sup = start(&node, spec).await;
    let first = child(&sup, "w").await.expect("running");
    first.tell(Work::Crash).await.unwrap();

    // The restart fails and is made again: a third instance runs.
    let third = within("an instance after the failed restart", async {
        loop {
            match events.recv().await.expect("events") {
                Ev::Started(_, id, _) if &id != first.id() => return id,
                _ => {}
            }
        }
    })
    .await;
    settled(&node, 2).await;
    let running = child(&sup, "w").await.expect("the supervisor answers");
    assert_eq!(running.id(), &third);

    // The crash and the failed restart made two restarts: one more crash is over the
    // intensity.
    running.tell(Work::Crash).await.unwrap();
    match within("the supervisor to give up", sup.wait_for_exit()).await {
        ExitReason::Failed(message) => assert!(
            message.starts_with("supervisor sup gave up: more than 2 restarts"),
            "{message}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}
