//! Every strategy with every restart type, after a normal and an abnormal exit.

use std::time::Duration;

use ensemble::supervisor::{ChildSpec, ChildState, Restart, Strategy, SupervisorSpec};
use tokio::sync::mpsc;

use crate::util::*;

#[derive(Clone, Copy, Debug)]
enum How {
    Normal,
    Abnormal,
}

/// Supervises a, b, c (b with the restart type under test), ends b, and checks which children
/// got new instances.
async fn case(strategy: Strategy, restart: Restart, how: How) {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new("sup")
        .strategy(strategy)
        .intensity(10, Duration::from_secs(60))
        .child(ChildSpec::worker("a", Worker::factory("a", &tx)))
        .child(ChildSpec::worker("b", Worker::factory("b", &tx)).restart(restart))
        .child(ChildSpec::worker("c", Worker::factory("c", &tx)));
    let sup = start(&node, spec).await;
    let before = instances(&sup, &["a", "b", "c"]).await;
    let b = child(&sup, "b").await.expect("b runs");
    b.tell(match how {
        How::Normal => Work::Finish,
        How::Abnormal => Work::Crash,
    })
    .await
    .unwrap();
    within("b to end", b.wait_for_exit()).await;
    // b's exit signal reached the supervisor before its exit was observable here, and signals
    // overtake requests: this answer reflects the supervisor's decision.
    let after = instances(&sup, &["a", "b", "c"]).await;

    let restarted = match (restart, how) {
        (Restart::Permanent, _) | (Restart::Transient, How::Abnormal) => true,
        (Restart::Transient, How::Normal) | (Restart::Temporary, _) => false,
    };
    let label = format!("{strategy:?} {restart:?} {how:?}");
    if !restarted {
        assert_eq!(after[0], before[0], "{label}: a untouched");
        assert_eq!(after[1], None, "{label}: b not restarted");
        assert_eq!(after[2], before[2], "{label}: c untouched");
        let children = sup.which_children().await.unwrap();
        if restart == Restart::Temporary {
            assert!(
                children.iter().all(|c| c.id != "b"),
                "{label}: temporary spec dropped"
            );
        } else {
            let b = children.iter().find(|c| c.id == "b").unwrap();
            assert_eq!(b.state, ChildState::Stopped, "{label}");
        }
        return;
    }
    assert!(
        after[1].is_some() && after[1] != before[1],
        "{label}: b restarted"
    );
    let (a_new, c_new) = match strategy {
        Strategy::OneForOne => (false, false),
        Strategy::OneForAll => (true, true),
        Strategy::RestForOne => (false, true),
    };
    assert_eq!(after[0] != before[0], a_new, "{label}: a");
    assert_eq!(after[2] != before[2], c_new, "{label}: c");
    assert!(after.iter().all(Option::is_some), "{label}: all running");
    node.shutdown().await;
}

#[tokio::test]
async fn every_strategy_with_every_restart_type_and_exit() {
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
            for how in [How::Normal, How::Abnormal] {
                case(strategy, restart, how).await;
            }
        }
    }
}

#[tokio::test]
async fn the_restarted_child_answers_under_its_local_name() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new("named")
        .child(ChildSpec::worker("store", Worker::factory("store", &tx)).local_name("store"));
    let _sup = start(&node, spec).await;
    let first = node.whereis_local::<Work>("store").unwrap();
    first.tell(Work::Crash).await.unwrap();
    within("the crash", first.wait_for_exit()).await;
    let second = within("a new instance under the name", async {
        loop {
            if let Ok(found) = node.whereis_local::<Work>("store")
                && found != first
            {
                return found;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(second.ask(Work::Ping, ASK).await.unwrap(), *second.id());
}
