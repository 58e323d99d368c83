//! Remote actors across processes: tell, ask, references inside messages, wrong types, stop,
//! monitors, links and `NodeDown` after `kill -9`.

use std::time::Duration;

use ensemble::cluster::{Cluster, MemberEvent};
use ensemble::prelude::*;
use ensemble::transport::certs::NodeCert;
use ensemble::{AskError, LookupError};
use tokio::sync::mpsc;

use crate::protocol::{Echo, EchoMsg, OtherMsg, SinkMsg};
use crate::util::*;

const ASK: Duration = Duration::from_secs(10);

/// This node and one child node `n1` in a cluster; the child's echo actor, found by name.
async fn pair(certs: &tempfile::TempDir) -> (Node, Cluster, ChildNode, ActorRef<EchoMsg>) {
    let (node, cluster) = local_node("n0", certs.path()).await;
    let mut child = ChildNode::spawn("n1", certs.path(), "test", &[cluster.local_addr()]);
    child.expect_line("JOINED");
    wait_members(&cluster, &["n1"]).await;
    let n1 = member_id(&cluster, "n1");
    let echo = cluster
        .whereis::<EchoMsg>(&n1, "echo")
        .await
        .expect("echo on n1");
    (node, cluster, child, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_ask_an_actor_of_another_process() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster, _child, echo) = pair(&certs).await;
    assert!(!echo.is_local());
    assert_eq!(echo.id().node().name(), "n1");
    for i in 0..50 {
        let text = format!("hello {i}");
        let reply = echo
            .ask(|r| EchoMsg::Echo(text.clone(), r), ASK)
            .await
            .unwrap();
        assert_eq!(reply, text);
    }
    // Looking up with another protocol is refused, naming the type.
    let n1 = member_id(&cluster, "n1");
    let err = cluster.whereis::<OtherMsg>(&n1, "echo").await.unwrap_err();
    assert!(matches!(err, LookupError::WrongType { .. }), "{err}");
    assert!(err.to_string().contains("OtherMsg"), "{err}");
    let err = cluster.whereis::<EchoMsg>(&n1, "nobody").await.unwrap_err();
    assert!(matches!(err, LookupError::NotFound { .. }), "{err}");
}

/// An ask of `echo` that it never answers (with a timeout no test waits out), once it has
/// reached the echo actor: a later ask on the same lane is answered after it arrived.
async fn hanging_ask(
    echo: &ActorRef<EchoMsg>,
) -> tokio::task::JoinHandle<Result<String, AskError>> {
    let hanging = tokio::spawn({
        let echo = echo.clone();
        async move { echo.ask(EchoMsg::Hang, Duration::from_secs(3600)).await }
    });
    assert_eq!(
        echo.ask(|r| EchoMsg::Echo("sync".into(), r), ASK)
            .await
            .unwrap(),
        "sync"
    );
    hanging
}

/// An ask whose connection ends while both nodes live fails at once with `ConnectionLost`,
/// as Erlang's `gen_server:call` does on a lost connection, rather than waiting out its
/// timeout; the nodes connect again, and the next ask is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_whose_connection_ends_fails_at_once() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster, _child, echo) = pair(&certs).await;
    let n1 = member_id(&cluster, "n1");
    let hanging = hanging_ask(&echo).await;
    assert!(cluster.disconnect(&n1), "no connection to n1 to close");
    let answer = tokio::time::timeout(DEADLINE, hanging)
        .await
        .expect("the ask ended with its connection, not its timeout")
        .unwrap();
    assert_eq!(
        answer,
        Err(AskError::ConnectionLost {
            actor: echo.id().clone()
        })
    );
    assert!(
        cluster.members().iter().any(|m| m.node == n1),
        "n1 was declared down: the test needs it alive"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match echo.ask(|r| EchoMsg::Echo("after".into(), r), ASK).await {
            Ok(reply) => {
                assert_eq!(reply, "after");
                break;
            }
            // Refused while the nodes are apart, until they connect again.
            Err(err) => assert!(
                tokio::time::Instant::now() < deadline,
                "n1 did not answer again within {DEADLINE:?}: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A reply over the frame limit is not sent; the asker hears why at once, not at its timeout,
/// and the connection carries the next ask as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_too_large_for_a_frame_is_refused_to_the_asker() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, _cluster, _child, echo) = pair(&certs).await;
    // 9 MiB against the default 8 MiB frames; the timeout only bounds a failing run.
    let err = echo
        .ask(
            |r| EchoMsg::Repeat("x".into(), 9 << 20, r),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("over the maximum"), "{err}");
    let reply = echo
        .ask(|r| EchoMsg::Echo("after".into(), r), ASK)
        .await
        .unwrap();
    assert_eq!(reply, "after");
}

/// A sink on `node` expecting `count` items, with a mailbox that takes them all, and where
/// it reports.
fn sink(
    node: &Node,
    count: u64,
) -> (
    ActorRef<SinkMsg>,
    mpsc::UnboundedReceiver<Result<u64, String>>,
) {
    let (tx, done) = mpsc::unbounded_channel();
    let sink = Sink {
        next: 0,
        expected: count,
        done: tx,
    };
    let options = SpawnOptions::new().mailbox_capacity(100_000);
    (node.spawn_with(sink, options).unwrap(), done)
}

/// Checks that items arrive 0, 1, 2, ... and reports when all have.
struct Sink {
    next: u64,
    expected: u64,
    done: mpsc::UnboundedSender<Result<u64, String>>,
}

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, SinkMsg::Item(i): SinkMsg, _ctx: &mut Context<Self>) -> ActorResult {
        if i != self.next {
            let _ = self
                .done
                .send(Err(format!("got item {i}, expected {}", self.next)));
        }
        self.next = i + 1;
        if self.next == self.expected {
            let _ = self.done.send(Ok(self.next));
        }
        Ok(())
    }
}

/// Nodes with different frame limits: a message over the receiver's smaller limit is refused
/// to its sender, naming the limit, and the connection carries the next one as before (the
/// receiver would close it over such a frame, losing every frame in flight with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_peers_smaller_frame_limit_is_refused_to_its_sender() {
    let certs = certificates(&["n0", "n1"]);
    let node = Node::new(NodeConfig::new("n0")).unwrap();
    let mut config = test_config("test");
    config.max_frame_size = 16 << 20;
    let cert = NodeCert::load(certs.path(), "n0").unwrap();
    let cluster = Cluster::start(&node, config, &cert).await.unwrap();
    let mut events = cluster.subscribe();
    let (other, _other_cluster) =
        local_node_joining("n1", certs.path(), cluster.local_addr()).await;
    let echo = other.spawn(Echo::new(String::new())).unwrap();
    other.register_remote("echo", &echo).unwrap();
    wait_members(&cluster, &["n1"]).await;
    let n1 = member_id(&cluster, "n1");
    let echo = cluster.whereis::<EchoMsg>(&n1, "echo").await.unwrap();
    // 10 MiB: within this node's 16 MiB, over n1's default 8 MiB.
    let big = "x".repeat(10 << 20);
    let err = echo.ask(|r| EchoMsg::Echo(big, r), ASK).await.unwrap_err();
    assert!(matches!(err, AskError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("over the maximum of 8388608 bytes"),
        "{err}"
    );
    let reply = echo
        .ask(|r| EchoMsg::Echo("after".into(), r), ASK)
        .await
        .unwrap();
    assert_eq!(reply, "after");
    // The connection that n1 joined on is the one still up: it never closed (a new one
    // would say n1 joined again).
    let mut joined = 0;
    while let Ok(event) = events.try_recv() {
        joined += usize::from(matches!(&event, MemberEvent::Joined(m) if m.node.name() == "n1"));
    }
    assert_eq!(joined, 1, "the connection to n1 closed and was made again");
    assert_eq!(
        node.dead_letters(),
        1,
        "the refused message is a dead letter"
    );
}

/// A reply handle of this node that comes home inside a reply completes its own ask here; the
/// reply carrying it is taken as any other (its decoding once waited on itself for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_handle_that_comes_home_inside_a_reply_answers_its_ask() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, _cluster, _child, echo) = pair(&certs).await;
    let kept = echo.clone();
    let first = tokio::spawn(async move { kept.ask(EchoMsg::Hang, ASK).await });
    // The handle reaches the echo actor after the ask starts: ask until it is handed back.
    let deadline = tokio::time::Instant::now() + ASK;
    let handles = loop {
        let handles = echo
            .ask(EchoMsg::GiveBack, Duration::from_secs(5))
            .await
            .expect("the reply carrying the handle");
        if !handles.is_empty() {
            break handles;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the echo actor never got the first ask's handle"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(handles.len(), 1);
    for handle in handles {
        handle
            .send("answered at home".to_owned())
            .expect("the first ask waits");
    }
    let answer = first.await.expect("the first ask's task");
    assert_eq!(answer.expect("the first ask"), "answered at home");
    // The node takes replies as before.
    let reply = echo
        .ask(|r| EchoMsg::Echo("after".into(), r), ASK)
        .await
        .expect("an ask after");
    assert_eq!(reply, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_sent_to_another_node_receives_its_messages_in_order() {
    let certs = certificates(&["n0", "n1"]);
    let (node, _cluster, _child, echo) = pair(&certs).await;
    let count = 20_000;
    let (sink, mut done) = sink(&node, count);
    echo.tell(EchoMsg::Flood { count, to: sink }).await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, done.recv())
        .await
        .expect("all items within the deadline")
        .unwrap();
    assert_eq!(outcome, Ok(count));
}

/// Messages told just before their sender's node leaves arrive, all of them in order: the
/// peer reads the leaving node's data lanes to their end before it closes the connection.
/// (It closed the connection as it read `Leaving`, which overtook the lanes, and what they
/// still carried was lost without a dead letter anywhere.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_told_just_before_a_node_leaves_all_arrive() {
    let certs = certificates(&["n0", "n1"]);
    let (node, cluster) = local_node("n0", certs.path()).await;
    let count = 20_000;
    let (sink, mut done) = sink(&node, count);
    node.register_remote("sink", &sink).unwrap();
    let (leaving, leaving_cluster) =
        local_node_joining("n1", certs.path(), cluster.local_addr()).await;
    wait_members(&leaving_cluster, &["n0"]).await;
    let n0 = member_id(&leaving_cluster, "n0");
    let sink = leaving_cluster
        .whereis::<SinkMsg>(&n0, "sink")
        .await
        .unwrap();
    for i in 0..count {
        sink.tell(SinkMsg::Item(i)).await.unwrap();
    }
    leaving_cluster.leave().await;
    let outcome = tokio::time::timeout(DEADLINE, done.recv())
        .await
        .expect("all items within the deadline")
        .unwrap();
    assert_eq!(outcome, Ok(count));
    assert_eq!(leaving.dead_letters(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_stop_monitors_links_and_exit_reasons() {
    let certs = certificates(&["n0", "n1"]);
    let (node, cluster, _child, echo) = pair(&certs).await;

    // A local actor linked to the remote echo dies with it, with its reason; a monitor fires.
    let linked = node
        .spawn(Linker {
            target: echo.clone(),
        })
        .unwrap();
    linked.ask(LinkerMsg::Ready, ASK).await.unwrap();
    let (tx, mut downs) = mpsc::unbounded_channel();
    let watcher = node
        .spawn(Watcher {
            target: echo.clone(),
            downs: tx,
        })
        .unwrap();
    watcher.ask(WatcherMsg::Ready, ASK).await.unwrap();
    // Link and monitor went out on the control stream; the crash goes on a data lane. A
    // lookup answered on the control stream means n1 has handled them.
    control_round_trip(&cluster, &echo).await;
    echo.tell(EchoMsg::Crash("remote failure".into()))
        .await
        .unwrap();
    let reason = ExitReason::Failed("remote failure".into());
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down, (echo.id().clone(), reason.clone()));
    assert_eq!(
        tokio::time::timeout(DEADLINE, linked.wait_for_exit())
            .await
            .unwrap(),
        reason
    );
    // Monitoring an actor that is gone: NoProc.
    assert_eq!(
        tokio::time::timeout(DEADLINE, echo.wait_for_exit())
            .await
            .unwrap(),
        ExitReason::NoProc
    );
    // Sending to it: refused by its node, the ask gets an error rather than hanging.
    let err = echo
        .ask(|r| EchoMsg::Echo("anyone?".into(), r), ASK)
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::Dead { .. }), "{err}");
}

/// Makes sure `n1` has handled every control frame sent to it so far.
async fn control_round_trip(cluster: &Cluster, echo: &ActorRef<EchoMsg>) {
    let _ = cluster.whereis::<EchoMsg>(echo.id().node(), "echo").await;
}

enum WatcherMsg {
    Ready(ReplyTo<()>),
}

/// Monitors `target` when started and reports its `Down`.
struct Watcher {
    target: ActorRef<EchoMsg>,
    downs: mpsc::UnboundedSender<(ActorId, ExitReason)>,
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.monitor(&self.target);
        Ok(())
    }

    async fn handle(
        &mut self,
        WatcherMsg::Ready(reply): WatcherMsg,
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = reply.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.downs.send((down.actor, down.reason));
        Ok(())
    }
}

enum LinkerMsg {
    Ready(ReplyTo<()>),
}

/// Links itself to `target` when started.
struct Linker {
    target: ActorRef<EchoMsg>,
}

impl Actor for Linker {
    type Msg = LinkerMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.link(&self.target);
        Ok(())
    }

    async fn handle(
        &mut self,
        LinkerMsg::Ready(reply): LinkerMsg,
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        let _ = reply.send(());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_fires_node_down_at_monitors_links_and_asks() {
    let certs = certificates(&["n0", "n1"]);
    let (node, cluster, mut child, echo) = pair(&certs).await;
    let n1 = member_id(&cluster, "n1");
    let mut events = cluster.subscribe();

    let linked = node
        .spawn(Linker {
            target: echo.clone(),
        })
        .unwrap();
    linked.ask(LinkerMsg::Ready, ASK).await.unwrap();
    let waiting = tokio::spawn({
        let echo = echo.clone();
        async move { echo.wait_for_exit().await }
    });
    let hanging = hanging_ask(&echo).await;

    child.kill();
    let down = MemberEvent::Down(n1.clone());
    wait_event(&mut events, "n1 declared down", |e| e == &down).await;
    let node_down = ExitReason::NodeDown(n1.clone());
    assert_eq!(
        tokio::time::timeout(DEADLINE, waiting)
            .await
            .unwrap()
            .unwrap(),
        node_down
    );
    assert_eq!(
        tokio::time::timeout(DEADLINE, linked.wait_for_exit())
            .await
            .unwrap(),
        node_down
    );
    let err = tokio::time::timeout(DEADLINE, hanging)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        AskError::Stopped {
            actor: echo.id().clone(),
            reason: node_down.clone()
        }
    );
    // Afterwards: sends fail at once, naming the node.
    let err = echo.tell(EchoMsg::Crash("late".into())).await.unwrap_err();
    assert!(err.to_string().contains("is not connected"), "{err}");
    assert!(!echo.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_actor_stopped_from_here_ends_normally() {
    let certs = certificates(&["n0", "n1"]);
    let (node, _cluster, _child, echo) = pair(&certs).await;
    let (tx, mut downs) = mpsc::unbounded_channel();
    let watcher = node
        .spawn(Watcher {
            target: echo.clone(),
            downs: tx,
        })
        .unwrap();
    watcher.ask(WatcherMsg::Ready, ASK).await.unwrap();
    // The monitor and the stop travel in this order on the control stream.
    echo.stop();
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down, (echo.id().clone(), ExitReason::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_an_actor_of_a_registered_module_on_another_node() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster, _child, _echo) = pair(&certs).await;
    let n1 = member_id(&cluster, "n1");
    let greeter = cluster
        .spawn_remote::<EchoMsg>(&n1, "echo", &"hello, ".to_owned())
        .await
        .unwrap();
    assert_eq!(greeter.id().node(), &n1);
    let reply = greeter
        .ask(|r| EchoMsg::Echo("ada".into(), r), ASK)
        .await
        .unwrap();
    assert_eq!(reply, "hello, ada");

    // Arguments too large for one frame are refused at once, naming the setting; the largest
    // that pass the check do fit.
    let max = cluster.max_frame_size();
    let err = cluster
        .spawn_remote::<EchoMsg>(&n1, "echo", &"x".repeat(max))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_frame_size"), "{err}");
    let largest = "x".repeat(max - 5 - "echo".len() - 128);
    cluster
        .spawn_remote::<EchoMsg>(&n1, "echo", &largest)
        .await
        .expect("the largest arguments that pass the check fit in a frame");

    let err = cluster
        .spawn_remote::<EchoMsg>(&n1, "nope", &())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no module named \"nope\""),
        "{err}"
    );
    let err = cluster
        .spawn_remote::<EchoMsg>(&n1, "echo", &42u32)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot decode the arguments of module \"echo\""),
        "{err}"
    );
    let err = cluster
        .spawn_remote::<OtherMsg>(&n1, "echo", &String::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not "), "{err}");
    assert!(err.to_string().contains("OtherMsg"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_as_a_new_incarnation() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster, mut child, echo) = pair(&certs).await;
    let old = member_id(&cluster, "n1");
    let ended = tokio::spawn({
        let echo = echo.clone();
        async move { echo.wait_for_exit().await }
    });
    child.kill();
    let mut restarted = ChildNode::spawn("n1", certs.path(), "test", &[cluster.local_addr()]);
    restarted.expect_line("JOINED");
    // The old incarnation is down (its actors' watchers hear NodeDown), the new one a member.
    assert_eq!(
        tokio::time::timeout(DEADLINE, ended)
            .await
            .unwrap()
            .unwrap(),
        ExitReason::NodeDown(old.clone())
    );
    let new = tokio::time::timeout(DEADLINE, async {
        loop {
            let current = cluster
                .members()
                .into_iter()
                .find(|m| m.node.name() == "n1");
            match current {
                Some(member) if member.node != old => return member.node,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("the new incarnation joins");
    assert!(new.incarnation() > old.incarnation());
    let echo = cluster.whereis::<EchoMsg>(&new, "echo").await.unwrap();
    assert_eq!(
        echo.ask(|r| EchoMsg::Echo("again".into(), r), ASK)
            .await
            .unwrap(),
        "again"
    );
}

/// A lookup waiting on a node that goes down ends when it is declared down, saying so, not
/// after the whole request timeout with "no answer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_on_a_node_that_goes_down_ends_with_it() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster, mut child, _echo) = pair(&certs).await;
    let n1 = member_id(&cluster, "n1");
    let mut events = cluster.subscribe();
    // Frozen, it neither answers nor sends heartbeats: this node suspects it, then declares
    // it down (after a few seconds, with the tests' tolerant detector).
    let pid = child.process.id().to_string();
    // Every thread stopped before the lookup is sent: one still running could answer it.
    crate::common::stop_process(child.process.id());
    let lookup = {
        let cluster = cluster.clone();
        let n1 = n1.clone();
        tokio::spawn(async move { cluster.whereis::<EchoMsg>(&n1, "echo").await })
    };
    wait_event(
        &mut events,
        "n1 down",
        |e| matches!(e, MemberEvent::Down(id) if *id == n1),
    )
    .await;
    let err = tokio::time::timeout(DEADLINE, lookup)
        .await
        .expect("the lookup ended")
        .expect("the lookup task")
        .expect_err("a frozen node cannot answer");
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    child.kill();
    let message = err.to_string();
    assert!(message.contains("went down"), "{message}");
}
