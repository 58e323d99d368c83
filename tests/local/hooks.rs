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
