//! Signals between nodes are not lost while both nodes live: a burst of monitors that
//! overflows the control queue still arrives whole, in order, and every monitor fires;
//! monitors, links, stops and unlinks outlive a connection that ends; and an actor spawned for
//! a node that gave up waiting does not live on unowned.
//!
//! Both nodes run in this process (real QUIC on loopback).

use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig, MemberEvent};
use ensemble::prelude::*;
use ensemble::{NodeId, SpawnError};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::util::*;

/// Actors watched, many times the control queue.
const WATCHED: usize = 300;
const ASK: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum IdleMsg {
    Stop,
    /// End with an error this many bytes long.
    Fail(usize),
    /// Remove the link with this actor.
    Unlink(ActorId),
}

/// An actor that waits until told to stop.
struct Idle;

impl Actor for Idle {
    type Msg = IdleMsg;

    async fn handle(&mut self, msg: IdleMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            IdleMsg::Stop => ctx.stop(),
            IdleMsg::Fail(length) => return Err(ActorError::new("x".repeat(length))),
            IdleMsg::Unlink(other) => {
                let other = UntypedRef::from_id(ctx.node(), &other);
                ctx.unlink(other);
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
enum FactoryMsg {
    Make(usize, ReplyTo<Vec<ActorRef<IdleMsg>>>),
}

/// Spawns idle actors on its node and answers their references.
struct Factory;

impl Actor for Factory {
    type Msg = FactoryMsg;

    async fn handle(&mut self, msg: FactoryMsg, ctx: &mut Context<Self>) -> ActorResult {
        let FactoryMsg::Make(count, reply) = msg;
        let made = (0..count)
            .map(|_| ctx.node().spawn(Idle).expect("idle"))
            .collect();
        let _ = reply.send(made);
        Ok(())
    }
}

enum WatcherMsg {
    Watch(Vec<ActorRef<IdleMsg>>, ReplyTo<()>),
}

/// Monitors every actor it is given in one turn, with no await in between, and reports each
/// `Down`.
struct Watcher {
    downs: mpsc::UnboundedSender<(ActorId, ExitReason)>,
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn handle(&mut self, msg: WatcherMsg, ctx: &mut Context<Self>) -> ActorResult {
        let WatcherMsg::Watch(targets, reply) = msg;
        for target in &targets {
            ctx.monitor(target);
        }
        let _ = reply.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.downs.send((down.actor, down.reason));
        Ok(())
    }
}

/// The watching node `n0` (its cluster settings tuned) and the watched node `n1`, in this
/// process, with `n1`'s factory as `n0` reaches it.
struct Pair {
    watching: Node,
    cluster: Cluster,
    watched: Node,
    _watched_cluster: Cluster,
    factory: ActorRef<FactoryMsg>,
}

async fn pair(certs: &std::path::Path, tune: impl FnOnce(&mut ClusterConfig)) -> Pair {
    let watching = Node::new(NodeConfig::new("n0")).expect("node");
    let mut config = test_config("test");
    tune(&mut config);
    let cert = ensemble::transport::certs::NodeCert::load(certs, "n0").expect("cert");
    let cluster = Cluster::start(&watching, config, &cert)
        .await
        .expect("cluster");
    let (watched, watched_cluster) = local_node_joining("n1", certs, cluster.local_addr()).await;
    let factory = watched.spawn(Factory).expect("factory");
    watched
        .register_remote("factory", &factory)
        .expect("register");
    wait_members(&cluster, &["n1"]).await;
    let factory = cluster
        .whereis::<FactoryMsg>(&member_id(&cluster, "n1"), "factory")
        .await
        .expect("the factory");
    Pair {
        watching,
        cluster,
        watched,
        _watched_cluster: watched_cluster,
        factory,
    }
}

impl Pair {
    /// Makes `count` idle actors on `n1` and a watcher on `n0` that monitors them all, and
    /// waits until `n1` has handled every monitor: a lookup answered on the control stream,
    /// where the monitors went before it (stops and failures go on data lanes). Answers the
    /// actors and the watcher's `Down`s.
    async fn watch(
        &self,
        count: usize,
    ) -> (
        Vec<ActorRef<IdleMsg>>,
        mpsc::UnboundedReceiver<(ActorId, ExitReason)>,
    ) {
        let targets = self
            .factory
            .ask(|reply| FactoryMsg::Make(count, reply), ASK)
            .await
            .expect("the actors");
        let (tx, downs) = mpsc::unbounded_channel();
        let watcher = self.watching.spawn(Watcher { downs: tx }).expect("watcher");
        watcher
            .ask(|reply| WatcherMsg::Watch(targets.clone(), reply), ASK)
            .await
            .expect("watching");
        let _ = self
            .cluster
            .whereis::<FactoryMsg>(&member_id(&self.cluster, "n1"), "factory")
            .await;
        (targets, downs)
    }
}

/// The watching node's control queue holds 4 frames, so that a burst from one handler
/// overflows it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_monitors_larger_than_the_control_queue_all_fire() {
    let certs = certificates(&["n0", "n1"]);
    let pair = pair(certs.path(), |config| config.control_queue = 4).await;
    let (targets, mut downs) = pair.watch(WATCHED).await;
    for target in &targets {
        target.tell(IdleMsg::Stop).await.expect("stop");
    }
    let mut fired = std::collections::HashSet::new();
    while fired.len() < WATCHED {
        match tokio::time::timeout(DEADLINE, downs.recv()).await {
            Ok(Some((actor, _))) => {
                fired.insert(actor);
            }
            _ => panic!(
                "{} of {WATCHED} monitors fired within {DEADLINE:?}",
                fired.len()
            ),
        }
    }
    pair.watched.shutdown().await;
    pair.watching.shutdown().await;
}

/// An actor that fails with a reason far over the watching node's frame limit: its `Down`
/// arrives with the reason cut, on the same connection (the watching node used to close it
/// over the frame, and the watched node sent it again on each new one, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_whose_reason_is_over_the_peers_frame_limit_arrives_cut() {
    let certs = certificates(&["n0", "n1"]);
    let pair = pair(certs.path(), |config| {
        config.max_frame_size = ensemble::cluster::MIN_MAX_FRAME;
    })
    .await;
    let mut events = pair.cluster.subscribe();
    let (targets, mut downs) = pair.watch(2).await;
    targets[0]
        .tell(IdleMsg::Fail(100_000))
        .await
        .expect("the failure");
    let (actor, reason) = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("the Down of the failed actor within the deadline")
        .expect("the watcher lives");
    assert_eq!(&actor, targets[0].id());
    let ExitReason::Failed(text) = reason else {
        panic!("the failed actor is down with {reason}");
    };
    assert!(text.starts_with("xxxx"), "{text:.40}");
    assert!(
        text.ends_with("more bytes cut)"),
        "{}",
        &text[text.len() - 40..]
    );
    assert!(
        text.len() < ensemble::cluster::MIN_MAX_FRAME / 2,
        "{}",
        text.len()
    );
    // The connection stayed: the next signal comes on it, and n1 never joined again.
    targets[1].tell(IdleMsg::Stop).await.expect("stop");
    let (actor, _) = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("the second Down within the deadline")
        .expect("the watcher lives");
    assert_eq!(&actor, targets[1].id());
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, MemberEvent::Joined(_)),
            "the connection to n1 was made again: {event:?}"
        );
    }
    pair.watched.shutdown().await;
    pair.watching.shutdown().await;
}

enum TrapperMsg {
    Watch(ActorRef<IdleMsg>, ActorRef<IdleMsg>, ReplyTo<()>),
}

/// Monitors one actor and links to another (trapping exits), reporting what fires.
struct Trapper {
    fired: mpsc::UnboundedSender<(&'static str, ActorId)>,
}

impl Actor for Trapper {
    type Msg = TrapperMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.trap_exit(true);
        Ok(())
    }

    async fn handle(&mut self, msg: TrapperMsg, ctx: &mut Context<Self>) -> ActorResult {
        let TrapperMsg::Watch(monitored, linked, reply) = msg;
        ctx.monitor(&monitored);
        ctx.link(&linked);
        let _ = reply.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.fired.send(("down", down.actor));
        Ok(())
    }

    async fn on_exit(
        &mut self,
        from: ActorId,
        _reason: ExitReason,
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = self.fired.send(("exit", from));
        Ok(())
    }
}

/// Two nodes whose connection ended while both live, and what n0 set up before: `made` are
/// actors of n1, the first monitored and the second linked by n0's `trapper`, which reports
/// on `fired` what reaches it.
struct Apart {
    watching: Node,
    watched: Node,
    cluster: Cluster,
    n1: NodeId,
    made: Vec<ActorRef<IdleMsg>>,
    trapper: ActorRef<TrapperMsg>,
    fired: mpsc::UnboundedReceiver<(&'static str, ActorId)>,
    /// The connection to n1 that n0 closed ([`Cluster::connection`]).
    closed: u64,
}

/// n0 closes its connection to n1 ([`Cluster::disconnect`]); the nodes then connect again,
/// both alive. Answers once n0 saw the connection end, with `count` actors made on n1.
async fn apart(certs: &std::path::Path, count: usize) -> Apart {
    let Pair {
        watching,
        cluster,
        watched,
        factory,
        ..
    } = pair(certs, |_| {}).await;
    let n1 = member_id(&cluster, "n1");
    let made = factory
        .ask(|reply| FactoryMsg::Make(count, reply), ASK)
        .await
        .expect("the actors");
    let (tx, fired) = mpsc::unbounded_channel();
    let trapper = watching.spawn(Trapper { fired: tx }).expect("trapper");
    trapper
        .ask(
            |reply| TrapperMsg::Watch(made[0].clone(), made[1].clone(), reply),
            ASK,
        )
        .await
        .expect("watching");
    // n1 has handled the monitor and the link once a lookup is answered on the same stream.
    let _ = cluster.whereis::<FactoryMsg>(&n1, "factory").await;

    let closed = cluster.connection(&n1).expect("a connection to n1");
    assert!(cluster.disconnect(&n1), "no connection to n1 to close");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while made[0].is_alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection to n1 did not end"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Apart {
        watching,
        watched,
        cluster,
        n1,
        made,
        trapper,
        fired,
        closed,
    }
}

impl Apart {
    /// Checks that the test ran as meant (n1 stayed a member, and a new connection took the
    /// closed one's place, with an id of its own) and shuts both nodes down.
    async fn end(self) {
        assert!(
            self.cluster.members().iter().any(|m| m.node == self.n1),
            "n1 was declared down: the test needs it alive"
        );
        let connection = self.cluster.connection(&self.n1);
        assert!(
            connection.is_some_and(|id| id != self.closed),
            "the connection to n1 is {connection:?}, after {} was closed",
            self.closed
        );
        self.watched.shutdown().await;
        self.watching.shutdown().await;
    }
}

/// The actors watched on n1 end while the nodes are apart, when no connection carries their
/// `Down` and `Exit`: the monitor and the link fire all the same, once the nodes are connected
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_and_links_outlive_a_connection_that_ends() {
    let certs = certificates(&["n0", "n1"]);
    let mut apart = apart(certs.path(), 2).await;
    let (monitored, linked) = (apart.made[0].clone(), apart.made[1].clone());
    for actor in [&monitored, &linked] {
        UntypedRef::from_id(&apart.watched, actor.id()).stop();
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(DEADLINE, apart.fired.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => panic!("after the connection ended, only {seen:?} fired within {DEADLINE:?}"),
        }
    }
    seen.sort_by_key(|(what, _)| *what);
    assert_eq!(
        seen,
        vec![
            ("down", monitored.id().clone()),
            ("exit", linked.id().clone())
        ]
    );
    apart.end().await;
}

/// While the nodes are apart, n0 stops one actor of n1 and kills another, and the actor of n1
/// linked with n0's trapper unlinks. The stop and the kill arrive once the nodes are connected
/// again, and the unlink holds: the linked actor's end later sends the trapper no exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_and_unlinks_made_while_apart_arrive_once_connected_again() {
    let certs = certificates(&["n0", "n1"]);
    let mut apart = apart(certs.path(), 4).await;
    let made = apart.made.clone();
    let (monitored, linked, stopped, killed) = (&made[0], &made[1], &made[2], &made[3]);
    let watched = apart.watched.clone();
    let local = |actor: &ActorRef<IdleMsg>| UntypedRef::from_id(&watched, actor.id());
    let ends = [("stopped", local(stopped)), ("killed", local(killed))];
    stopped.stop();
    killed.kill();
    local(linked)
        .downcast::<IdleMsg>()
        .expect("an idle actor")
        .tell(IdleMsg::Unlink(apart.trapper.id().clone()))
        .await
        .expect("the unlink");
    for (what, actor) in ends {
        let reason = tokio::time::timeout(DEADLINE, actor.wait_for_exit())
            .await
            .unwrap_or_else(|_| panic!("the {what} actor still runs after {DEADLINE:?}"));
        let want = if what == "stopped" {
            ExitReason::Normal
        } else {
            ExitReason::Killed
        };
        assert_eq!(reason, want, "{what}");
    }
    // n1 sent the unlink before the `Down` of the monitored actor, on one ordered stream:
    // once that `Down` fired here, the unlink applied too.
    local(monitored).stop();
    match tokio::time::timeout(DEADLINE, apart.fired.recv()).await {
        Ok(Some(event)) => assert_eq!(event, ("down", monitored.id().clone())),
        other => panic!("the monitor did not fire: {other:?}"),
    }
    let linked_end = local(linked);
    linked_end.stop();
    linked_end.wait_for_exit().await;
    // A marker behind the linked actor's end on n1's control stream: a monitor of an actor
    // that ended answers `Down` with `NoProc` after any exit n1 sent before it.
    apart
        .trapper
        .ask(
            |reply| TrapperMsg::Watch(linked.clone(), stopped.clone(), reply),
            ASK,
        )
        .await
        .expect("watching again");
    let mut seen = Vec::new();
    while !seen.contains(&("down", linked.id().clone())) {
        match tokio::time::timeout(DEADLINE, apart.fired.recv()).await {
            Ok(Some(event)) => seen.push(event),
            other => panic!("no down for the linked actor: {other:?} after {seen:?}"),
        }
    }
    assert!(
        !seen.contains(&("exit", linked.id().clone())),
        "the unlinked actor's end reached the trapper: {seen:?}"
    );
    apart.end().await;
}

/// Waits until `node`'s actor count passes `check`, failing after the deadline.
async fn until_actors(node: &Node, check: impl Fn(usize) -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check(node.actor_count()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {DEADLINE:?} for {what} on {}: {} actors",
            node.id(),
            node.actor_count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An actor whose start takes the given number of milliseconds.
struct SlowStart(u64);

impl Actor for SlowStart {
    type Msg = IdleMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        Ok(())
    }

    async fn handle(&mut self, _msg: IdleMsg, _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// n0 waits 300 ms for a remote spawn whose actor takes 800 ms to start on n1: when the late
/// answer comes, n0 stops the actor, which nobody would own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_spawn_answered_after_its_asker_gave_up_is_stopped() {
    let certs = certificates(&["n0", "n1"]);
    let Pair {
        watching,
        cluster,
        watched,
        ..
    } = pair(certs.path(), |config| {
        config.request_timeout = Duration::from_millis(300)
    })
    .await;
    watched.register_module("slow", SlowStart);
    let before = watched.actor_count();
    let asked = cluster
        .spawn_remote::<IdleMsg>(&member_id(&cluster, "n1"), "slow", &800_u64)
        .await;
    assert!(
        matches!(asked, Err(SpawnError::Remote { ref reason, .. }) if reason.contains("no answer")),
        "{asked:?}"
    );
    until_actors(
        &watched,
        |n| n == before,
        "the actor spawned too late to end",
    )
    .await;
    watched.shutdown().await;
    watching.shutdown().await;
}

/// n0 asks n1 for an actor whose start takes 800 ms, and leaves the cluster while it starts:
/// n1 cannot answer, and stops the actor, which nobody would own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_spawn_whose_asker_left_while_it_started_is_stopped() {
    let certs = certificates(&["n0", "n1"]);
    let Pair {
        watching,
        cluster,
        watched,
        ..
    } = pair(certs.path(), |_| {}).await;
    watched.register_module("slow", SlowStart);
    let before = watched.actor_count();
    let n1 = member_id(&cluster, "n1");
    let asking = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.spawn_remote::<IdleMsg>(&n1, "slow", &800_u64).await })
    };
    until_actors(&watched, |n| n > before, "the actor to start").await;
    cluster.leave().await;
    let asked = asking.await.expect("the asking task");
    assert!(asked.is_err(), "{asked:?}");
    until_actors(
        &watched,
        |n| n == before,
        "the actor of a node that left to end",
    )
    .await;
    watched.shutdown().await;
    watching.shutdown().await;
}

/// An actor stopped by its node's shutdown ended because its node went away: a monitor on
/// another node hears `NodeDown` of that node, as it would had the node died, not the
/// `Shutdown` its own node stopped it with (which a supervisor there would take for a stop of
/// its own, or count once per child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_stopped_by_their_node_s_shutdown_are_down_with_the_node() {
    let certs = certificates(&["n0", "n1"]);
    let pair = pair(certs.path(), |_| {}).await;
    let n1 = member_id(&pair.cluster, "n1");
    let made = pair
        .factory
        .ask(|reply| FactoryMsg::Make(2, reply), ASK)
        .await
        .expect("the actors");
    // Polled once here, each wait sends its monitor before the lookup below.
    let mut waits: Vec<_> = made.iter().map(|a| Box::pin(a.wait_for_exit())).collect();
    for wait in &mut waits {
        assert!(wait.now_or_never().is_none(), "an actor ended already");
    }
    // The monitors are on n1 once a lookup sent after them on the same stream is answered.
    let _ = pair.cluster.whereis::<FactoryMsg>(&n1, "factory").await;

    // An actor that ends by itself on a node that lives says why.
    made[1].tell(IdleMsg::Stop).await.expect("told");
    assert_eq!(waits.pop().expect("two").await, ExitReason::Normal);

    pair.watched.shutdown().await;
    let reason = tokio::time::timeout(ASK, waits.pop().expect("one"))
        .await
        .expect("the monitor fired");
    assert_eq!(reason, ExitReason::NodeDown(n1));
    pair.watching.shutdown().await;
}
