//! Monitors: one `Down` per monitor, exactly once; `NoProc` for the already dead.

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn each_monitor_fires_exactly_once_with_the_reason() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let watcher = node.spawn(Probe::new("watcher", &tx)).unwrap();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    // Two monitors on the same target: two Downs.
    watcher
        .ask(|r| Cmd::Monitor(target.clone(), r), ASK)
        .await
        .unwrap();
    watcher
        .ask(|r| Cmd::Monitor(target.clone(), r), ASK)
        .await
        .unwrap();
    target.tell(Cmd::Fail("gone")).await.unwrap();
    let reason = ExitReason::Failed("gone".into());
    let down = Event::Down("watcher", target.id().clone(), reason);
    wait_for(&mut events, &down).await;
    wait_for(&mut events, &down).await;
    // Nothing more arrives: stop the watcher and check everything it reported before.
    watcher.stop();
    let rest = wait_for(&mut events, &Event::Stopped("watcher", ExitReason::Normal)).await;
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Down(..))),
        "{rest:?}"
    );
}

#[tokio::test]
async fn monitoring_a_dead_actor_gives_noproc_at_once() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    target.stop();
    within("target", target.wait_for_exit()).await;
    let watcher = node.spawn(Probe::new("watcher", &tx)).unwrap();
    watcher
        .ask(|r| Cmd::Monitor(target.clone(), r), ASK)
        .await
        .unwrap();
    wait_for(
        &mut events,
        &Event::Down("watcher", target.id().clone(), ExitReason::NoProc),
    )
    .await;
}

#[tokio::test]
async fn no_down_after_demonitor() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let watcher = node.spawn(Probe::new("watcher", &tx)).unwrap();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    let monitor = watcher
        .ask(|r| Cmd::Monitor(target.clone(), r), ASK)
        .await
        .unwrap();
    assert!(
        watcher
            .ask(|r| Cmd::Demonitor(monitor, r), ASK)
            .await
            .unwrap()
    );
    assert!(
        !watcher
            .ask(|r| Cmd::Demonitor(monitor, r), ASK)
            .await
            .unwrap()
    );
    target.tell(Cmd::Fail("gone")).await.unwrap();
    within("target", target.wait_for_exit()).await;
    watcher.stop();
    let seen = wait_for(&mut events, &Event::Stopped("watcher", ExitReason::Normal)).await;
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Down(..))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_monitors_and_exits_still_fire_exactly_once() {
    // Monitors set while the target is ending either see it alive (and get its reason) or dead
    // (and get NoProc): never both, never neither.
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let watcher = node.spawn(Probe::new("watcher", &tx)).unwrap();
    let rounds = 200;
    for _ in 0..rounds {
        let target = node.spawn(Probe::new("target", &tx)).unwrap();
        target.tell(Cmd::Stop).await.unwrap();
        watcher
            .ask(|r| Cmd::Monitor(target.clone(), r), ASK)
            .await
            .unwrap();
    }
    let mut downs = 0;
    while downs < rounds {
        if let Event::Down("watcher", _, reason) = next_event(&mut events).await {
            assert!(
                matches!(reason, ExitReason::Normal | ExitReason::NoProc),
                "{reason:?}"
            );
            downs += 1;
        }
    }
    watcher.stop();
    let rest = wait_for(&mut events, &Event::Stopped("watcher", ExitReason::Normal)).await;
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Down(..))),
        "{rest:?}"
    );
}

/// Watches and links to one actor when started, trapping exits, and reports what fires.
struct Watcher {
    target: UntypedRef,
    fired: mpsc::UnboundedSender<(&'static str, ExitReason)>,
}

impl Actor for Watcher {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.trap_exit(true);
        ctx.monitor(self.target.clone());
        ctx.link(self.target.clone());
        Ok(())
    }

    async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.fired.send(("down", down.reason));
        Ok(())
    }

    async fn on_exit(
        &mut self,
        _from: ActorId,
        reason: ExitReason,
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = self.fired.send(("exit", reason));
        Ok(())
    }
}

/// A reference made from the id of a local actor that has ended (as one taken from a
/// registry entry or a message is) reports `NoProc`, as the actor's own reference does; not
/// that this node is down.
#[tokio::test]
async fn a_reference_made_from_the_id_of_an_ended_actor_reports_noproc() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    target.stop();
    within("target", target.wait_for_exit()).await;
    let by_id = UntypedRef::from_id(&node, target.id());
    assert_eq!(
        within("the exit by id", by_id.wait_for_exit()).await,
        ExitReason::NoProc
    );
    let (fired, mut seen) = mpsc::unbounded_channel();
    node.spawn(Watcher {
        target: by_id,
        fired,
    })
    .unwrap();
    let mut got = vec![
        within("a signal", seen.recv()).await.unwrap(),
        within("a signal", seen.recv()).await.unwrap(),
    ];
    got.sort_by_key(|(what, _)| *what);
    assert_eq!(
        got,
        vec![("down", ExitReason::NoProc), ("exit", ExitReason::NoProc)]
    );
}
