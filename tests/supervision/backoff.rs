//! Restart backoff, checked on tokio's paused clock.

use std::time::Duration;

use ensemble::supervisor::{
    Backoff, ChildSpec, ChildState, Strategy, SupervisorError, SupervisorSpec,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::util::*;

#[tokio::test(start_paused = true)]
async fn restarts_back_off_exponentially_and_reset_after_a_stable_run() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(350),
        multiplier: 2.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(10),
    };
    let spec = SupervisorSpec::new("slow")
        .intensity(10, Duration::from_secs(60))
        .child(ChildSpec::worker("w", Worker::factory("w", &tx)).backoff(backoff));
    let sup = start(&node, spec).await;
    next_start(&mut events).await;

    let mut delays = Vec::new();
    for _ in 0..4 {
        let w = child(&sup, "w").await.expect("running");
        w.tell(Work::Crash).await.unwrap();
        w.wait_for_exit().await;
        let crashed = Instant::now();
        let at = next_start(&mut events).await;
        delays.push(at - crashed);
    }
    // 100, 200, 400 capped at 350, 350; the paused clock only moves when everything waits.
    let expected = [100, 200, 350, 350].map(Duration::from_millis);
    for (got, want) in delays.iter().zip(expected) {
        assert!(
            *got >= want && *got < want + Duration::from_millis(20),
            "{delays:?}"
        );
    }

    // A run longer than reset_after starts the backoff over.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let w = child(&sup, "w").await.expect("running");
    w.tell(Work::Crash).await.unwrap();
    w.wait_for_exit().await;
    let crashed = Instant::now();
    let at = next_start(&mut events).await;
    let delay = at - crashed;
    assert!(
        delay >= Duration::from_millis(100) && delay < Duration::from_millis(120),
        "{delay:?}"
    );
}

/// A child waiting out its backoff is being restarted: `restart_child` and `delete_child`
/// refuse it, as Erlang/OTP answers `{error, restarting}`, and the restart due starts it. A
/// child terminated meanwhile stays stopped until asked, and then starts once.
#[tokio::test(start_paused = true)]
async fn a_child_in_its_backoff_is_restarting_until_terminated() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(10),
        multiplier: 1.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(60),
    };
    let spec = SupervisorSpec::new("slow")
        .child(ChildSpec::worker("w", Worker::factory("w", &tx)).backoff(backoff));
    let sup = start(&node, spec).await;
    next_start(&mut events).await;
    let crash = || async {
        let w = child(&sup, "w").await.expect("running");
        w.tell(Work::Crash).await.unwrap();
        w.wait_for_exit().await;
        Instant::now()
    };

    let crashed = crash().await;
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Restarting
    );
    for refused in [
        sup.restart_child("w").await.map(|_| ()),
        sup.delete_child("w").await,
    ] {
        assert!(
            matches!(refused, Err(SupervisorError::ChildRestarting { ref id, .. }) if id == "w"),
            "{refused:?}"
        );
    }
    // The backoff's restart starts it, not the refused calls.
    let at = next_start(&mut events).await;
    assert!(
        at - crashed >= Duration::from_secs(10),
        "{:?}",
        at - crashed
    );

    // Terminated in its backoff, it is stopped: the restart due passes it by.
    crash().await;
    sup.terminate_child("w").await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Stopped
    );
    sup.restart_child("w").await.unwrap();
    next_start(&mut events).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        events.try_recv().is_err(),
        "a second instance started after the restart asked for"
    );
}

/// Rest-for-one with backoff: b fails, so b and c wait out b's backoff; then a fails, which
/// b and c depend on. a's restart takes theirs over: they start after a, in order, and the
/// restart b's failure scheduled starts nothing when it comes due first.
#[tokio::test(start_paused = true)]
async fn a_restart_in_its_backoff_is_taken_over_by_the_restart_of_a_child_before_it() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        multiplier: 1.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(60),
    };
    let mut spec = SupervisorSpec::new("chain")
        .strategy(Strategy::RestForOne)
        .intensity(10, Duration::from_secs(60));
    for name in ["a", "b", "c"] {
        spec = spec.child(ChildSpec::worker(name, Worker::factory(name, &tx)).backoff(backoff));
    }
    let sup = start(&node, spec).await;
    for _ in 0..3 {
        next_start(&mut events).await;
    }
    for (name, then) in [("b", Duration::from_millis(200)), ("a", Duration::ZERO)] {
        let worker = child(&sup, name).await.expect("running");
        worker.tell(Work::Crash).await.unwrap();
        worker.wait_for_exit().await;
        tokio::time::sleep(then).await;
    }
    let mut order = Vec::new();
    while order.len() < 3 {
        match within("the children's restarts", events.recv()).await {
            Some(Ev::Started(name, _, _)) => order.push(name),
            Some(Ev::Stopping(..)) => {}
            None => panic!("the workers' events ended"),
        }
    }
    assert_eq!(
        order,
        ["a", "b", "c"],
        "the restarts started children out of order"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        events.try_recv().is_err(),
        "a child started twice after the restarts"
    );
}

/// When the next instance started (skipping the reports of instances ending).
async fn next_start(events: &mut mpsc::UnboundedReceiver<Ev>) -> Instant {
    loop {
        match events.recv().await.expect("events") {
            Ev::Started(_, _, at) => return at,
            Ev::Stopping(..) => {}
        }
    }
}
