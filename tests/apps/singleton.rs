//! Cluster singletons on three nodes in this process (real QUIC, a real registry): one
//! instance, handed over at once when its manager stops (its node leaving gracefully), with a
//! greater fencing token, and never two at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble::prelude::*;
use ensemble::registry::Registry;
use ensemble::supervisor::singleton::{Singleton, SingletonMsg};
use serde::{Deserialize, Serialize};

use crate::solo::node_in;
use crate::util::{certificates, one_cluster_at_a_time};

type History = Arc<Mutex<Vec<(&'static str, u64, String)>>>;

#[derive(Serialize, Deserialize)]
enum CounterMsg {
    Whoami(ReplyTo<(String, u64)>),
}

struct Counter {
    token: u64,
    history: History,
    /// Fails in `started` instead.
    fail_start: bool,
}

impl Actor for Counter {
    type Msg = CounterMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if self.fail_start {
            return Err(ActorError::new("this instance fails to start"));
        }
        let node = ctx.node().id().name().to_owned();
        self.history.lock().unwrap().push(("up", self.token, node));
        Ok(())
    }

    async fn handle(&mut self, msg: CounterMsg, ctx: &mut Context<Self>) -> ActorResult {
        let CounterMsg::Whoami(reply) = msg;
        let _ = reply.send((ctx.node().id().name().to_owned(), self.token));
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        let node = ctx.node().id().name().to_owned();
        self.history
            .lock()
            .unwrap()
            .push(("down", self.token, node));
    }
}

/// Waits until `registry` resolves the name to an instance answering from another node than
/// `not_on`, and returns its node and token.
async fn holder(registry: &Registry, not_on: Option<&str>) -> (String, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(counter)) = registry.whereis::<CounterMsg>("counter")
            && let Ok((node, token)) = counter
                .ask(CounterMsg::Whoami, Duration::from_secs(1))
                .await
            && Some(node.as_str()) != not_on
        {
            return (node, token);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no singleton answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The turn is held for the whole test on purpose: the other holders are the process tests,
// on their own threads, so no task of this runtime ever waits for it.
#[allow(clippy::await_holding_lock)]
async fn a_singleton_is_handed_over_when_its_manager_stops() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1", "s2", "s3"]);
    let (n1, c1, r1) = node_in("s1", certs.path(), vec![]).await;
    let (n2, _c2, _r2) = node_in("s2", certs.path(), vec![c1.local_addr()]).await;
    let (n3, _c3, _r3) = node_in("s3", certs.path(), vec![c1.local_addr()]).await;
    let history: History = Arc::default();
    let mut managers: Vec<(String, ActorRef<SingletonMsg>)> = Vec::new();
    for node in [&n1, &n2, &n3] {
        let history = history.clone();
        let manager = Singleton::new("counter", move |token| Counter {
            token,
            history: history.clone(),
            fail_start: false,
        })
        .global_name("counter");
        managers.push((
            node.id().name().to_owned(),
            node.start(manager).await.unwrap(),
        ));
    }

    let (first, first_token) = holder(&r1, None).await;
    assert_eq!(
        history
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == "up")
            .count(),
        1,
        "one instance only: {:?}",
        history.lock().unwrap()
    );

    // The holder's manager stops (as when its node leaves): the instance stops, the lease is
    // released, and the next manager in line starts a new instance with a greater token.
    let (_, manager) = managers.iter().find(|(n, _)| *n == first).unwrap();
    manager.stop();
    manager.wait_for_exit().await;
    let (second, second_token) = holder(&r1, Some(&first)).await;
    assert_ne!(second, first);
    assert!(second_token > first_token);

    let events = history.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            ("up", first_token, first.clone()),
            ("down", first_token, first.clone()),
            ("up", second_token, second.clone()),
        ]
    );
    for node in [n1, n2, n3] {
        node.shutdown().await;
    }
}

/// A manager whose instance failed (`fail_first`: to start; otherwise: to take its global name,
/// held by another actor until the manager has tried once) on a node of its own, and how many
/// instances it made.
async fn after_a_failed_instance(fail_first: bool) {
    let certs = certificates(&["s1"]);
    let (node, _cluster, registry) = node_in("s1", certs.path(), vec![]).await;
    let history: History = Arc::default();
    let squatter = node
        .spawn(Counter {
            token: 0,
            history: Arc::default(),
            fail_start: false,
        })
        .unwrap();
    if !fail_first {
        registry.register("counter", &squatter).await.unwrap();
    }
    let made = Arc::new(AtomicUsize::new(0));
    let manager = {
        let (history, made) = (history.clone(), made.clone());
        Singleton::new("counter", move |token| Counter {
            token,
            history: history.clone(),
            fail_start: made.fetch_add(1, Ordering::SeqCst) == 0 && fail_first,
        })
        .global_name("counter")
    };
    let manager = node.start(manager).await.unwrap();
    if !fail_first {
        // The first instance found the name taken and was stopped, and the manager made
        // another; now the name is free.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while made.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the manager made no second instance"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        registry.unregister("counter", squatter.id()).await.unwrap();
    }
    // The manager gave the lock back and queued again: the next instance runs.
    let (_, token) = holder(&registry, None).await;
    assert!(token > 0, "the name resolves to the squatter");
    assert!(made.load(Ordering::SeqCst) >= 2);
    let (tx, rx) = tokio::sync::oneshot::channel();
    manager.tell(SingletonMsg::Instance(tx)).await.unwrap();
    assert!(rx.await.unwrap().is_some(), "the manager runs the instance");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_instance_that_fails_to_start_gives_the_lock_back_for_the_next() {
    let _turn = one_cluster_at_a_time();
    after_a_failed_instance(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_instance_whose_name_is_taken_gives_the_lock_back_for_the_next() {
    let _turn = one_cluster_at_a_time();
    after_a_failed_instance(false).await;
}

/// A manager killed outright (a brutal shutdown, or a supervisor's shutdown timer that ran out
/// while it handed over) never runs its `stopping` hook: it must give the lock back all the
/// same, once its instance has ended, or the singleton runs nowhere while the node lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_killed_manager_gives_the_lock_back_once_its_instance_ended() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _cluster, registry) = node_in("s1", certs.path(), vec![]).await;
    let history: History = Arc::default();
    let manager = {
        let history = history.clone();
        Singleton::new("counter", move |token| Counter {
            token,
            history: history.clone(),
            fail_start: false,
        })
        .global_name("counter")
    };
    let manager = node.start(manager).await.unwrap();
    let (_, token) = holder(&registry, None).await;
    let instance = registry
        .whereis::<CounterMsg>("counter")
        .unwrap()
        .expect("the instance's name");

    manager.kill();
    manager.wait_for_exit().await;
    let lease = registry
        .lock(
            &ensemble::supervisor::singleton::lock_name("counter"),
            Duration::from_secs(10),
        )
        .await
        .expect("the killed manager's lock, given back");
    assert!(lease.token() > token);
    assert!(
        !instance.is_alive(),
        "the lock was given back while the instance ran"
    );
    node.shutdown().await;
}
