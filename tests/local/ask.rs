//! Asks always complete: with a reply, or an error that says why, never a hang.

use std::time::Duration;

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn ask_gets_the_reply() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    assert_eq!(actor.ask(|r| Cmd::Echo(42, r), ASK).await.unwrap(), 42);
}

#[tokio::test]
async fn a_dropped_reply_handle_fails_the_ask_at_once() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    // An hour-long timeout: only the dropped handle can end this ask in time.
    let err = within(
        "the ask to fail",
        actor.ask(Cmd::DropReply, Duration::from_secs(3600)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        AskError::Dropped {
            actor: actor.id().clone()
        }
    );
    assert!(
        err.to_string().contains("dropped the reply handle"),
        "{err}"
    );
}

#[tokio::test]
async fn an_ask_queued_behind_the_actors_death_fails_at_once() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let release = block(&actor).await;
    actor.tell(Cmd::Fail("crashed")).await.unwrap();
    let ask = tokio::spawn({
        let actor = actor.clone();
        async move {
            actor
                .ask(|r| Cmd::Echo(1, r), Duration::from_secs(3600))
                .await
        }
    });
    // Wait until the ask sits in the mailbox, then let the actor crash.
    within("the ask to be queued", async {
        while actor.mailbox_len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    release.send(()).unwrap();
    let err = within("the ask to fail", ask).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        AskError::Stopped {
            actor: actor.id().clone(),
            reason: ExitReason::Failed("crashed".into())
        }
    );
}

/// A child asks its parent, and the request waits in the parent's queue as the parent fails.
/// The ask fails at once with the parent's reason: the parent's end waits for its children,
/// and used to wait for this one's ask to time out (an hour here).
#[tokio::test]
async fn a_child_s_ask_queued_at_its_parent_s_failure_holds_up_neither() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let parent = node.spawn(Probe::new("parent", &tx)).unwrap();
    let child = parent
        .ask(
            |reply| Cmd::SpawnChild {
                name: "child",
                linked: false,
                reply,
            },
            ASK,
        )
        .await
        .unwrap();
    let release = block(&parent).await;
    parent.tell(Cmd::Fail("crashed")).await.unwrap();
    let (answer_tx, answer) = tokio::sync::oneshot::channel();
    child
        .tell(Cmd::AskEcho {
            of: parent.clone(),
            answer: answer_tx,
        })
        .await
        .unwrap();
    within("the child's ask to be queued behind the failure", async {
        while parent.mailbox_len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    release.send(()).unwrap();
    let crashed = ExitReason::Failed("crashed".into());
    assert_eq!(
        within("the parent's end", parent.wait_for_exit()).await,
        crashed
    );
    assert_eq!(
        within("the child's ask to end", answer).await.unwrap(),
        Err(AskError::Stopped {
            actor: parent.id().clone(),
            reason: crashed,
        })
    );
}

#[tokio::test]
async fn asking_a_stopped_actor_fails_with_dead() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    actor.stop();
    within("exit", actor.wait_for_exit()).await;
    let err = actor.ask(|r| Cmd::Echo(1, r), ASK).await.unwrap_err();
    assert_eq!(
        err,
        AskError::Dead {
            actor: actor.id().clone()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_ask_times_out() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let actor = node.spawn(Probe::new("a", &tx)).unwrap();
    let err = actor
        .ask(Cmd::Hoard, Duration::from_millis(250))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AskError::Timeout {
            actor: actor.id().clone(),
            after: Duration::from_millis(250)
        }
    );
    assert!(actor.is_alive());
}

/// Asks another actor from inside its handler, as gen_server:call does.
struct Asker {
    target: ActorRef<Cmd>,
}

impl Actor for Asker {
    type Msg = (u64, ReplyTo<u64>);

    async fn handle(&mut self, (n, reply): Self::Msg, _ctx: &mut Context<Self>) -> ActorResult {
        let doubled = self.target.ask(|r| Cmd::Echo(n * 2, r), ASK).await?;
        let _ = reply.send(doubled);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_can_ask_another_actor() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    let asker = node.spawn(Asker { target }).unwrap();
    for n in 0..100 {
        assert_eq!(asker.ask(|r| (n, r), ASK).await.unwrap(), n * 2);
    }
}

#[tokio::test]
async fn an_ask_error_inside_a_handler_fails_the_asking_actor() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let target = node.spawn(Probe::new("target", &tx)).unwrap();
    target.stop();
    within("target", target.wait_for_exit()).await;
    let asker = node
        .spawn(Asker {
            target: target.clone(),
        })
        .unwrap();
    let err = asker.ask(|r| (1, r), ASK).await.unwrap_err();
    assert!(matches!(err, AskError::Stopped { .. }), "{err:?}");
    let reason = within("asker", asker.wait_for_exit()).await;
    assert_eq!(
        reason,
        ExitReason::Failed(format!(
            "actor {} is stopped; the request was not delivered",
            target.id()
        ))
    );
}

/// `Duration::MAX`, the usual "no timeout", waits as long as it takes (it overflowed an
/// `Instant` and panicked).
#[tokio::test]
async fn an_ask_without_a_timeout_is_answered() {
    let node = node();
    let echo = node.spawn(Echo).unwrap();
    let answer = within("the answer", echo.ask(|r| (7, r), Duration::MAX)).await;
    assert_eq!(answer.unwrap(), 7);
}

struct Echo;

impl Actor for Echo {
    type Msg = (u64, ReplyTo<u64>);

    async fn handle(
        &mut self,
        (n, reply): (u64, ReplyTo<u64>),
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = reply.send(n);
        Ok(())
    }
}
