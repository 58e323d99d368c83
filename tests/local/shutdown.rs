//! Node shutdown: children end before parents; what outlives the deadline is killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A parent that blocks in a handler, then fails; its child tells it `reports` times from
/// its own `started` hook.
struct Busy {
    reports: usize,
    entered: Option<tokio::sync::oneshot::Sender<ActorRef<()>>>,
}

enum BusyMsg {
    /// Blocks until `release` fires, then fails.
    BlockThenFail(tokio::sync::oneshot::Receiver<()>),
    Report,
}

impl Actor for Busy {
    type Msg = BusyMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        let child = ctx.spawn(Reporter {
            parent: ctx.myself(),
            reports: self.reports,
        })?;
        let _ = self.entered.take().expect("started once").send(child);
        Ok(())
    }

    async fn handle(&mut self, msg: BusyMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            BusyMsg::BlockThenFail(release) => {
                let _ = release.await;
                Err(ActorError::new("told to fail"))
            }
            BusyMsg::Report => Ok(()),
        }
    }
}

/// Tells its parent from its `started` hook, waiting for room each time.
struct Reporter {
    parent: ActorRef<BusyMsg>,
    reports: usize,
}

impl Actor for Reporter {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        for _ in 0..self.reports {
            if self.parent.tell(BusyMsg::Report).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

#[tokio::test]
async fn a_child_waiting_for_room_in_its_failing_parent_does_not_hold_up_its_end() {
    let node = node();
    let (entered, child) = tokio::sync::oneshot::channel();
    let parent = node
        .spawn_with(
            Busy {
                reports: 3,
                entered: Some(entered),
            },
            SpawnOptions::new().mailbox_capacity(1),
        )
        .unwrap();
    let (release, blocked) = tokio::sync::oneshot::channel();
    parent.tell(BusyMsg::BlockThenFail(blocked)).await.unwrap();
    let child = within("the child", child).await.unwrap();
    // The child fills the parent's one place and waits for room for its next report.
    within("a full mailbox", async {
        while parent.mailbox_len() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The parent fails and stops its child, which is still waiting for room.
    release.send(()).unwrap();
    assert_eq!(
        within("the parent's end", parent.wait_for_exit()).await,
        ExitReason::Failed("told to fail".into())
    );
    assert_eq!(child.wait_for_exit().await, ExitReason::Shutdown);
}

/// An actor whose `started` fails after it started a child.
struct FailsAfterAChild {
    events: mpsc::UnboundedSender<Event>,
}

impl Actor for FailsAfterAChild {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.spawn(Probe::new("child", &self.events))?;
        Err(ActorError::new("cannot start"))
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

#[tokio::test]
async fn children_of_a_failed_start_stop_with_shutdown() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let failed = node.spawn(FailsAfterAChild { events: tx }).unwrap();
    assert_eq!(
        within("the failed start", failed.wait_for_exit()).await,
        ExitReason::Failed("cannot start".into())
    );
    // Stopped, its hooks run, rather than killed.
    wait_for(&mut events, &Event::Stopped("child", ExitReason::Shutdown)).await;
}

enum Burst {
    /// Says it entered, then blocks its thread until told to go on.
    Hold(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>),
    Count,
}

struct Counting(Arc<AtomicUsize>);

impl Actor for Counting {
    type Msg = Burst;

    async fn handle(&mut self, msg: Burst, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Burst::Hold(entered, go_on) => {
                entered.send(()).unwrap();
                let _ = go_on.recv();
            }
            Burst::Count => {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

/// A kill while the actor runs on another thread takes effect at its next message, not when
/// its task next yields (after a whole batch of handlers that never wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_a_running_actor_before_its_next_message() {
    let node = node();
    let counted = Arc::new(AtomicUsize::new(0));
    let actor = node
        .spawn_with(
            Counting(counted.clone()),
            SpawnOptions::new().mailbox_capacity(128),
        )
        .unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (go_on, held) = std::sync::mpsc::channel();
    actor.tell(Burst::Hold(entered_tx, held)).await.unwrap();
    for _ in 0..100 {
        actor.tell(Burst::Count).await.unwrap();
    }
    // This thread is not one of the runtime's workers: waiting here blocks nothing.
    entered.recv().unwrap();
    actor.kill();
    go_on.send(()).unwrap();
    assert_eq!(
        within("the kill", actor.wait_for_exit()).await,
        ExitReason::Killed
    );
    assert_eq!(counted.load(Ordering::SeqCst), 0);
}
