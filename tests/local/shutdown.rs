//! Node shutdown: children end before parents; what outlives the deadline is killed.

use std::time::Duration;

use ensemble::SpawnError;
use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_children_before_parents() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let root = node.spawn(Probe::new("root", &tx)).unwrap();
    let child = spawn_child(&root, "child", true).await;
    spawn_child(&child, "grandchild", false).await;
    spawn_child(&root, "sibling", false).await;
    let other = node.spawn(Probe::new("other", &tx)).unwrap();
    assert_eq!(node.actor_count(), 5);
    let listed = node.actors();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[1].parent.as_ref(), Some(root.id()));

    let report = within("shutdown", node.shutdown()).await;
    assert_eq!(report.stopped, 5);
    assert_eq!(report.killed, 0);
    assert_eq!(node.actor_count(), 0);
    assert!(!other.is_alive());

    let mut order = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Stopped(name, reason) = event {
            assert_eq!(reason, ExitReason::Shutdown, "{name}");
            order.push(name);
        }
    }
    let pos = |name| order.iter().position(|n| *n == name).unwrap();
    assert!(pos("grandchild") < pos("child"), "{order:?}");
    assert!(pos("child") < pos("root"), "{order:?}");
    assert!(pos("sibling") < pos("root"), "{order:?}");

    let err = node.spawn(Probe::new("late", &tx)).unwrap_err();
    assert!(matches!(err, SpawnError::ShuttingDown { .. }));
    assert!(err.to_string().contains("is shutting down"));
}

#[tokio::test(start_paused = true)]
async fn actors_outliving_the_deadline_are_killed() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut stubborn = Probe::new("stubborn", &tx);
    stubborn.hang_in_stopped = true;
    let stubborn = node.spawn(stubborn).unwrap();
    let polite = node.spawn(Probe::new("polite", &tx)).unwrap();
    // Both have run `started`.
    stubborn.ask(|r| Cmd::Echo(0, r), ASK).await.unwrap();
    polite.ask(|r| Cmd::Echo(0, r), ASK).await.unwrap();

    let started = tokio::time::Instant::now();
    let report = node.shutdown_within(Duration::from_millis(500)).await;
    assert_eq!(report.stopped, 1);
    assert_eq!(report.killed, 1);
    assert_eq!(report.unresponsive, 0);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(stubborn.wait_for_exit().await, ExitReason::Killed);
    assert_eq!(polite.wait_for_exit().await, ExitReason::Shutdown);
    // The stubborn one got as far as its hook, which never finished.
    let seen = wait_for(
        &mut events,
        &Event::Stopped("stubborn", ExitReason::Shutdown),
    )
    .await;
    assert!(seen.contains(&Event::Started("stubborn")));
}

#[tokio::test]
async fn kill_abandons_a_blocked_handler() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let _release = block(&actor).await;
    actor.tell(Cmd::Note(1)).await.unwrap();
    actor.kill();
    assert_eq!(
        within("exit", actor.wait_for_exit()).await,
        ExitReason::Killed
    );
    assert_eq!(node.dead_letters(), 1);
    assert_eq!(node.actor_count(), 0);
    // No `stopped` after a kill.
    drop(tx);
    while let Some(event) = events.recv().await {
        assert!(!matches!(event, Event::Stopped(..)), "{event:?}");
    }
}
