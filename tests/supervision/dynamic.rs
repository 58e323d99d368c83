//! Children added and removed at run time, many of one spec.

use std::collections::HashSet;
use std::time::Duration;

use ensemble::supervisor::{ChildSpec, ChildState, SupervisorError, SupervisorSpec};
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn start_terminate_restart_and_delete_children_at_run_time() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("dyn")).await;

    let first = sup
        .start_child(ChildSpec::worker("job", Worker::factory("job", &tx)))
        .await
        .unwrap();
    let err = sup
        .start_child(ChildSpec::worker("job", Worker::factory("job", &tx)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SupervisorError::ChildExists { ref id, .. } if id == "job"),
        "{err}"
    );

    assert!(matches!(
        sup.delete_child("job").await.unwrap_err(),
        SupervisorError::ChildRunning { .. }
    ));
    sup.terminate_child("job").await.unwrap();
    assert!(!first.is_alive());
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Stopped
    );

    let second = sup.restart_child("job").await.unwrap();
    assert_ne!(second, first);
    assert!(matches!(
        sup.restart_child("job").await.unwrap_err(),
        SupervisorError::ChildRunning { .. }
    ));
    sup.terminate_child("job").await.unwrap();
    sup.delete_child("job").await.unwrap();
    assert!(sup.which_children().await.unwrap().is_empty());
    let err = sup.terminate_child("job").await.unwrap_err();
    assert!(
        err.to_string().contains("no child with id \"job\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_children_of_one_spec_each_restarted_after_a_crash() {
    const N: usize = 200;
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(
        &node,
        SupervisorSpec::new("pool").intensity(N as u32, Duration::from_secs(60)),
    )
    .await;
    let template = ChildSpec::worker("template", Worker::factory("pooled", &tx));
    for i in 0..N {
        sup.start_child(template.clone().with_id(format!("worker-{i}")))
            .await
            .unwrap();
    }
    let before: Vec<_> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.actor.unwrap())
        .collect();
    let before_ids: HashSet<_> = before.iter().map(|a| a.id().clone()).collect();
    assert_eq!(before_ids.len(), N);
    for actor in &before {
        actor
            .downcast::<Work>()
            .unwrap()
            .tell(Work::Crash)
            .await
            .unwrap();
    }
    for actor in &before {
        within("a crash", actor.wait_for_exit()).await;
    }
    // Each exit reached the supervisor before `wait_for_exit` returned (also for an actor
    // found dead while it was still telling its links), and signals overtake requests: the
    // answer shows every restart.
    let after = sup.which_children().await.unwrap();
    assert_eq!(after.len(), N);
    for info in &after {
        let actor = info.actor.as_ref().expect("restarted");
        assert!(!before_ids.contains(actor.id()));
        assert!(actor.is_alive());
    }
    assert_eq!(sup.count_children().await.unwrap().active, N);
}

/// A negotiated start that accepts no fewer than it could ever get is refused before anything
/// starts, saying why.
#[tokio::test]
async fn a_negotiated_start_whose_minimum_exceeds_its_count_starts_nothing() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let sup = start(&node, SupervisorSpec::new("negotiated")).await;
    let before = node.actor_count();
    let err = sup
        .start_children(ChildSpec::worker("w", Worker::factory("w", &tx)), 2, 3)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SupervisorError::NotEnough {
                placed: 0,
                min: 3,
                asked: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("at least 3 accepted of 2 asked for"),
        "{err}"
    );
    assert_eq!(node.actor_count(), before, "a copy was started");
    assert!(sup.which_children().await.unwrap().is_empty());
}
