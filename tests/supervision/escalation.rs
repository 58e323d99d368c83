//! Restart intensity exceeded at each level climbs a three-level tree until the root gives up.

use std::time::Duration;

use ensemble::prelude::*;
use ensemble::supervisor::{ChildSpec, SupervisorRef, SupervisorSpec};
use tokio::sync::mpsc;

use crate::util::*;

/// Walks root -> mid -> leaf -> worker, retrying while a level is being restarted.
async fn current(root: &SupervisorRef) -> (SupervisorRef, SupervisorRef, ActorRef<Work>) {
    within("a running worker at the bottom of the tree", async {
        loop {
            if let Some(mid) = child_supervisor(root, "mid").await
                && let Some(leaf) = child_supervisor(&mid, "leaf").await
                && let Ok(children) = leaf.which_children().await
                && let Some(worker) = children
                    .into_iter()
                    .find_map(|c| c.actor.and_then(|a| a.downcast::<Work>()))
                && worker.ask(Work::Ping, ASK).await.is_ok()
            {
                return (mid, leaf, worker);
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_climbs_the_tree_until_the_root_gives_up() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    // Every level allows one restart within a minute, as Erlang's default allows one in 5 s.
    let minute = Duration::from_secs(60);
    let leaf = SupervisorSpec::new("leaf")
        .intensity(1, minute)
        .child(ChildSpec::worker("worker", Worker::factory("worker", &tx)));
    let mid = SupervisorSpec::new("mid")
        .intensity(1, minute)
        .child(ChildSpec::supervisor("leaf", leaf));
    let root_spec = SupervisorSpec::new("root")
        .intensity(1, minute)
        .child(ChildSpec::supervisor("mid", mid));
    let root = start(&node, root_spec).await;

    // The leaf restarts the worker once and gives up at the second crash; the mid level
    // restarts the leaf once and gives up at the leaf's second failure (4 crashes); the root
    // restarts the mid level once and gives up at its second failure (8 crashes).
    let (mut mid, mut leaf, _) = current(&root).await;
    for crash in 1..=8 {
        let (now_mid, now_leaf, worker) = current(&root).await;
        // Which levels were replaced by the previous crash.
        let leaf_replaced = now_leaf != leaf;
        let mid_replaced = now_mid != mid;
        let previous = crash - 1;
        assert_eq!(
            leaf_replaced,
            previous > 0 && previous % 2 == 0,
            "leaf after crash {previous}"
        );
        assert_eq!(mid_replaced, previous == 4, "mid after crash {previous}");
        (mid, leaf) = (now_mid, now_leaf);

        worker.tell(Work::Crash).await.unwrap();
        within("the worker to crash", worker.wait_for_exit()).await;
        if crash < 8 {
            assert!(
                root.actor().is_alive(),
                "root gave up early, at crash {crash}"
            );
        }
    }
    let reason = within("the root to give up", root.wait_for_exit()).await;
    match reason {
        ExitReason::Failed(message) => {
            assert!(
                message.starts_with("supervisor root gave up: more than 1 restarts"),
                "{message}"
            );
            assert!(message.contains("child \"mid\""), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Giving up stopped everything below.
    within("the tree to be gone", async {
        while node.actor_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
