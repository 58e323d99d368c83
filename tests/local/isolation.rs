//! A failing actor ends alone: errors and panics never reach the node or unrelated actors.

use ensemble::SpawnError;
use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn handler_error_ends_only_that_actor_with_failed() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let bad = node.spawn(Probe::new("bad", &tx)).unwrap();
    let good = node.spawn(Probe::new("good", &tx)).unwrap();
    bad.tell(Cmd::Fail("disk full")).await.unwrap();
    assert_eq!(
        within("bad to end", bad.wait_for_exit()).await,
        ExitReason::Failed("disk full".into())
    );
    wait_for(
        &mut events,
        &Event::Stopped("bad", ExitReason::Failed("disk full".into())),
    )
    .await;
    assert_eq!(good.ask(|r| Cmd::Echo(7, r), ASK).await.unwrap(), 7);
    assert!(good.is_alive());
    assert_eq!(node.actor_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_handler_ends_only_that_actor_with_panicked() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let bad = node.spawn(Probe::new("bad", &tx)).unwrap();
    let good = node.spawn(Probe::new("good", &tx)).unwrap();
    bad.tell(Cmd::Panic("boom")).await.unwrap();
    assert_eq!(
        within("bad to end", bad.wait_for_exit()).await,
        ExitReason::Panicked("boom".into())
    );
    // The node and the other actor are untouched, and the node still spawns.
    assert_eq!(good.ask(|r| Cmd::Echo(1, r), ASK).await.unwrap(), 1);
    let another = node.spawn(Probe::new("another", &tx)).unwrap();
    assert_eq!(another.ask(|r| Cmd::Echo(2, r), ASK).await.unwrap(), 2);
}

struct FailsToStart {
    panic: bool,
}

impl Actor for FailsToStart {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        if self.panic {
            panic!("no config");
        }
        Err(ActorError::new("port in use"))
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        unreachable!("never started")
    }

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        panic!("stopped must not run after a failed start");
    }
}

#[tokio::test]
async fn start_reports_a_failing_started_hook_with_the_actor_and_reason() {
    let node = node();
    let err = node.start(FailsToStart { panic: false }).await.unwrap_err();
    match &err {
        SpawnError::StartFailed {
            reason, type_name, ..
        } => {
            assert_eq!(reason, &ExitReason::Failed("port in use".into()));
            assert!(type_name.ends_with("FailsToStart"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("failed to start: failed: port in use"),
        "{err}"
    );
    let err = node.start(FailsToStart { panic: true }).await.unwrap_err();
    assert!(
        matches!(err, SpawnError::StartFailed { reason: ExitReason::Panicked(ref m), .. } if m == "no config")
    );
    within("the failed actors to be gone", async {
        while node.actor_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

struct PanicsInStopped;

impl Actor for PanicsInStopped {
    type Msg = ();

    async fn handle(&mut self, _msg: (), ctx: &mut Context<Self>) -> ActorResult {
        ctx.stop_with(ExitReason::Failed("done badly".into()));
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        panic!("cleanup exploded");
    }
}

#[tokio::test]
async fn panic_in_stopped_keeps_the_original_exit_reason() {
    let node = node();
    let actor = node.spawn(PanicsInStopped).unwrap();
    actor.tell(()).await.unwrap();
    assert_eq!(
        within("exit", actor.wait_for_exit()).await,
        ExitReason::Failed("done badly".into())
    );
}

#[tokio::test]
async fn stop_after_current_message_drops_the_rest_as_dead_letters() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let release = block(&actor).await;
    actor.tell(Cmd::Stop).await.unwrap();
    for n in 0..3 {
        actor.tell(Cmd::Note(n)).await.unwrap();
    }
    release.send(()).unwrap();
    assert_eq!(
        within("exit", actor.wait_for_exit()).await,
        ExitReason::Normal
    );
    let seen = wait_for(&mut events, &Event::Stopped("a", ExitReason::Normal)).await;
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Handled(..))),
        "{seen:?}"
    );
    assert_eq!(node.dead_letters(), 3);
}
