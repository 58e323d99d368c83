//! Restart backoff, checked on tokio's paused clock.

use std::time::Duration;

use ensemble::supervisor::{Backoff, ChildSpec, SupervisorSpec};
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

/// When the next instance started (skipping the reports of instances ending).
async fn next_start(events: &mut mpsc::UnboundedReceiver<Ev>) -> Instant {
    loop {
        match events.recv().await.expect("events") {
            Ev::Started(_, _, at) => return at,
            Ev::Stopping(..) => {}
        }
    }
}
