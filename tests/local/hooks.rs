//! Hook order at the end of an actor, and untyped references.

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

/// Records whether its child was alive in `stopping` and in `stopped`.
struct Parent {
    child: Option<ActorRef<Cmd>>,
    events: mpsc::UnboundedSender<(&'static str, bool)>,
    probe_events: mpsc::UnboundedSender<Event>,
}

impl Actor for Parent {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        self.child = Some(ctx.spawn(Probe::new("child", &self.probe_events))?);
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }

    async fn stopping(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        let alive = self.child.as_ref().is_some_and(|c| c.is_alive());
        let _ = self.events.send(("stopping", alive));
    }

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        let alive = self.child.as_ref().is_some_and(|c| c.is_alive());
        let _ = self.events.send(("stopped", alive));
    }
}

#[tokio::test]
async fn stopping_runs_before_the_children_stop_and_stopped_after() {
    let node = node();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (probe_tx, _probe_rx) = mpsc::unbounded_channel();
    let parent = node
        .start(Parent {
            child: None,
            events: tx,
            probe_events: probe_tx,
        })
        .await
        .unwrap();
    parent.stop();
    within("exit", parent.wait_for_exit()).await;
    assert_eq!(rx.recv().await, Some(("stopping", true)));
    assert_eq!(rx.recv().await, Some(("stopped", false)));
}

#[tokio::test]
async fn untyped_refs_identify_stop_and_downcast() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let untyped = actor.untyped();
    assert_eq!(untyped.id(), actor.id());
    assert!(untyped.type_name().ends_with("Probe"));
    assert!(untyped.downcast::<String>().is_none());
    let typed = untyped.downcast::<Cmd>().expect("a probe takes Cmd");
    assert_eq!(typed.ask(|r| Cmd::Echo(4, r), ASK).await.unwrap(), 4);
    untyped.stop_with(ExitReason::Shutdown);
    assert_eq!(
        within("exit", untyped.wait_for_exit()).await,
        ExitReason::Shutdown
    );
    assert!(!untyped.is_alive());
}

/// Stops itself in `started`.
struct Quitter;

impl Actor for Quitter {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.stop_with(ExitReason::Failed("not today".into()));
        Ok(())
    }

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// A stop asked for in `started` stands whether the actor was spawned or started with a wait
/// for its hook (as supervisors start children).
#[tokio::test]
async fn a_stop_in_started_stands_when_started_with_a_wait() {
    let node = node();
    let spawned = node.spawn(Quitter).unwrap();
    let started = node.start(Quitter).await.unwrap();
    for actor in [spawned, started] {
        let reason = within("the actor to stop", actor.wait_for_exit()).await;
        assert_eq!(reason, ExitReason::Failed("not today".into()));
    }
}

/// Fails its start unless what runs before it (binding it to a lease, say) has run.
struct SeesWhatRanBefore(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Actor for SeesWhatRanBefore {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ActorError::new(
                "started ran before the hook that runs before the start",
            ))
        }
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// A hook that runs before an actor's start (`SpawnOptions::before_start`, or
/// `Node::start_module_with` for a module) runs before its `started` hook, on any worker
/// thread. The hooks take a while, so that a task that ran as soon as it was spawned, on the
/// other worker, would start first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_before_the_start_run_before_started() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let node = node();
    let slow_set = |flag: &Arc<AtomicBool>| {
        let flag = flag.clone();
        move |_: &UntypedRef| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            flag.store(true, Ordering::SeqCst);
        }
    };
    for _ in 0..3 {
        let ran = Arc::new(AtomicBool::new(false));
        let options = SpawnOptions::new().before_start(slow_set(&ran));
        within("a start", node.start_with(SeesWhatRanBefore(ran), options))
            .await
            .expect("started after the hook");
    }
    let ran = Arc::new(AtomicBool::new(false));
    let module_ran = ran.clone();
    node.register_module("sees", move |(): ()| SeesWhatRanBefore(module_ran.clone()));
    for _ in 0..3 {
        ran.store(false, Ordering::SeqCst);
        let nil = rmp_serde::to_vec(&()).unwrap();
        within(
            "a module start",
            node.start_module_with("sees", &nil, slow_set(&ran)),
        )
        .await
        .expect("started after the hook");
    }
}

/// A hook before the start that panics takes its panic to the caller, and leaves no actor
/// behind in the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_before_the_start_leaves_no_actor() {
    let node = node();
    let before = node.actor_count();
    let options = SpawnOptions::new().before_start(|_| panic!("the hook failed"));
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        node.spawn_with(SeesWhatRanBefore(Default::default()), options)
    }));
    assert!(spawned.is_err(), "the hook's panic reached the caller");
    within("the actor's end", async {
        while node.actor_count() != before {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Says whether its `started` hook ran.
struct RecordsItsStart(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Actor for RecordsItsStart {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// An actor that a hook before its start kills (its lease lost by then, say) never runs
/// `started`, however soon a worker thread takes its task, and a `start` waiting on it
/// fails with the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_killed_before_its_start_never_runs_started() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let node = node();
    let before = node.actor_count();
    let ran = Arc::new(AtomicBool::new(false));
    // Spawned from a thread that is no worker: each task goes to the queue that an idle
    // worker takes from at once, while the spawn is still setting it up.
    let spawns = tokio::task::spawn_blocking({
        let (node, ran) = (node.clone(), ran.clone());
        move || {
            for _ in 0..200 {
                let options = SpawnOptions::new().before_start(|actor| actor.kill());
                node.spawn_with(RecordsItsStart(ran.clone()), options)
                    .expect("spawned");
            }
        }
    });
    within("the spawns", spawns).await.unwrap();
    within("the actors' ends", async {
        while node.actor_count() != before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        !ran.load(Ordering::SeqCst),
        "a killed actor ran its started hook"
    );
    for _ in 0..100 {
        let options = SpawnOptions::new().before_start(|actor| actor.kill());
        let start = node.start_with(RecordsItsStart(ran.clone()), options);
        match within("a start", start).await {
            Err(ensemble::SpawnError::StartFailed { reason, .. }) => {
                assert_eq!(reason, ExitReason::Killed)
            }
            other => panic!("a start killed before it ran gave {other:?}"),
        }
    }
    assert!(!ran.load(Ordering::SeqCst));
}
