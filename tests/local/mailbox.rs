//! Bounded mailboxes: `try_tell` reports Full, `tell` waits; graceful stop drains.

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn full_mailbox_refuses_try_tell_and_makes_tell_wait() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let actor = node
        .spawn_with(
            Probe::new("a", &tx),
            SpawnOptions::new().mailbox_capacity(4),
        )
        .unwrap();
    let release = block(&actor).await;
    for n in 0..4 {
        actor.try_tell(Cmd::Note(n)).unwrap();
    }
    let err = actor.try_tell(Cmd::Note(4)).unwrap_err();
    assert!(!err.is_dead());
    assert!(err.to_string().contains("is full (4 messages)"), "{err}");
    assert!(matches!(err.into_message(), Cmd::Note(4)));

    // `tell` waits while full...
    let waiting = tokio::spawn({
        let actor = actor.clone();
        async move { actor.tell(Cmd::Note(4)).await.is_ok() }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    assert_eq!(actor.mailbox_len(), 4);
    // ...and completes once the actor makes room.
    release.send(()).unwrap();
    assert!(within("the waiting tell", waiting).await.unwrap());
    let seen = wait_for(&mut events, &Event::Handled("a", 4)).await;
    let handled: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Handled(_, n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(handled, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn graceful_stop_handles_queued_messages_then_refuses_new_ones() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let release = block(&actor).await;
    for n in 0..20 {
        actor.tell(Cmd::Note(n)).await.unwrap();
    }
    actor.stop();
    // Closed at once, though still running.
    within("the mailbox to close", async {
        loop {
            match actor.try_tell(Cmd::Note(99)) {
                Err(err) if err.is_dead() => break,
                Err(err) => panic!("unexpected {err}"),
                Ok(()) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    release.send(()).unwrap();
    assert_eq!(
        within("exit", actor.wait_for_exit()).await,
        ExitReason::Normal
    );
    let seen = wait_for(&mut events, &Event::Stopped("a", ExitReason::Normal)).await;
    let handled: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Handled(_, n) => Some(*n),
            _ => None,
        })
        .collect();
    // Every message queued before `stop` was handled; the refused one was not.
    assert_eq!(handled, (0..20).collect::<Vec<_>>());
    let err = actor.tell(Cmd::Note(100)).await.unwrap_err();
    assert!(err.is_dead());
    assert!(err.to_string().contains(&actor.id().to_string()));
}

#[tokio::test]
async fn a_waiting_tell_gets_its_message_back_when_the_actor_stops() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node
        .spawn_with(
            Probe::new("a", &tx),
            SpawnOptions::new().mailbox_capacity(1),
        )
        .unwrap();
    let _release = block(&actor).await;
    actor.tell(Cmd::Note(0)).await.unwrap();
    let waiting = tokio::spawn({
        let actor = actor.clone();
        async move { actor.tell(Cmd::Note(1)).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    actor.kill();
    let err = within("the waiting tell", waiting)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_dead());
    assert!(matches!(err.into_message(), Cmd::Note(1)));
}

#[tokio::test]
async fn tell_to_a_stopped_actor_is_a_dead_letter() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    actor.stop();
    within("exit", actor.wait_for_exit()).await;
    assert!(actor.try_tell(Cmd::Note(1)).unwrap_err().is_dead());
    assert!(actor.tell(Cmd::Note(2)).await.unwrap_err().is_dead());
    assert_eq!(node.dead_letters(), 2);
}
