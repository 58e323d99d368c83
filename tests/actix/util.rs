//! Two nodes with a registry, the actix actors and Ensemble actors the tests use, and waiting
//! with deadlines.

use std::time::Duration;

use actix::{
    ActorContext, ActorFutureExt, AsyncContext, Handler, Message, MessageResponse,
    ResponseActFuture,
};
use ensemble::actix::{ActixMsg, Lifeline, ask_ensemble, tell_ensemble};
use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::ClusterCa;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long any expectation waits.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// One node of the pair.
pub(crate) struct Member {
    pub(crate) node: Node,
    pub(crate) cluster: Cluster,
    pub(crate) registry: Registry,
}

/// Nodes `a` (the registry's first voter) and `b`, joined through `a`.
pub(crate) struct Pair {
    pub(crate) a: Member,
    pub(crate) b: Member,
    _data: tempfile::TempDir,
}

pub(crate) async fn two_nodes() -> Pair {
    let data = tempfile::tempdir().expect("temp dir");
    let ca = ClusterCa::generate("actix-test").expect("CA");
    let a = start("a", &ca, data.path(), None).await;
    let b = start("b", &ca, data.path(), Some(a.cluster.local_addr())).await;
    Pair { a, b, _data: data }
}

async fn start(
    name: &str,
    ca: &ClusterCa,
    data: &std::path::Path,
    seed: Option<std::net::SocketAddr>,
) -> Member {
    let node = Node::new(NodeConfig::new(name)).unwrap();
    let cert = ca.issue(name).expect("certificate");
    let mut config = ClusterConfig::new("actix-test");
    config.down = DownDecision::External;
    config.seeds = seed.into_iter().collect();
    let cluster = Cluster::start(&node, config, &cert).await.unwrap();
    let mut settings = RegistryConfig::new(data.join(name));
    settings.bootstrap = seed.is_none();
    let registry = Registry::start(&cluster, settings).await.unwrap();
    Member {
        node,
        cluster,
        registry,
    }
}

/// Waits until `check` gives a value, failing the test after [`DEADLINE`].
pub(crate) async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `name` no longer resolves in `member`'s copy of the registry.
pub(crate) async fn released(member: &Member, name: &str) {
    until(
        &format!("{name} to be released on {}", member.node.id()),
        || {
            member
                .registry
                .whereis::<Bridged>(name)
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// Resolves a global name from `member`'s copy of the registry, waiting until it shows.
pub(crate) async fn resolve<M: ensemble::remote::RemoteMessage>(
    member: &Member,
    name: &str,
) -> ActorRef<M> {
    until(&format!("{name} to resolve"), || {
        member.registry.whereis::<M>(name).unwrap()
    })
    .await
}

/// Makes sure the node of `actor` has handled every control frame `member` sent it so far
/// (monitors): a lookup is answered on the same control stream.
pub(crate) async fn control_round_trip<M: ensemble::remote::RemoteMessage>(
    member: &Member,
    actor: &ActorRef<M>,
) {
    let _ = member
        .cluster
        .whereis::<M>(actor.id().node(), "no such name")
        .await;
}

// ---- the actix side ----

/// What the test actix actor takes.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Reply")]
pub(crate) enum Cmd {
    /// Answers a greeting.
    Greet(String),
    /// Adds to the total.
    Add(u64),
    /// Answers the total.
    Total,
    /// Asks the Ensemble echo actor it knows and answers with its answer.
    Relay(String),
    /// Tells the Ensemble collector it knows the number, in order.
    Forward(u64),
    /// Stops the actix actor.
    Stop,
}

/// What it answers.
#[derive(Debug, PartialEq, Eq, MessageResponse, Serialize, Deserialize)]
pub(crate) enum Reply {
    Text(String),
    Total(u64),
    Done,
}

/// A message type no bridge takes.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Other;

/// The test actix actor.
#[derive(Default)]
pub(crate) struct Greeter {
    pub(crate) total: u64,
    pub(crate) echo: Option<ActorRef<EchoMsg>>,
    pub(crate) collector: Option<ActorRef<CollectorMsg>>,
    /// Set when the actor holds its own lifeline: it reports this reason when it stops.
    pub(crate) lifeline: Option<(Lifeline, ExitReason)>,
}

impl actix::Actor for Greeter {
    type Context = actix::Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some((lifeline, reason)) = &self.lifeline {
            lifeline.exit_with(reason.clone());
        }
    }
}

impl Handler<Cmd> for Greeter {
    type Result = ResponseActFuture<Self, Reply>;

    fn handle(&mut self, cmd: Cmd, ctx: &mut Self::Context) -> Self::Result {
        let reply = match cmd {
            Cmd::Greet(name) => Reply::Text(format!("hello, {name} from actix")),
            Cmd::Add(n) => {
                self.total += n;
                Reply::Total(self.total)
            }
            Cmd::Total => Reply::Total(self.total),
            Cmd::Relay(text) => {
                let echo = self.echo.as_ref().expect("an echo actor");
                return Box::pin(
                    ask_ensemble(echo, |reply| EchoMsg::Echo(text, reply), DEADLINE).map(
                        |answer, _act, _ctx| match answer {
                            Ok(answer) => Reply::Text(answer),
                            Err(err) => Reply::Text(format!("ask failed: {err}")),
                        },
                    ),
                );
            }
            Cmd::Forward(n) => {
                let collector = self.collector.as_ref().expect("a collector");
                // `wait`: this actor handles nothing else until the message is accepted, so
                // its messages keep their order even behind a full mailbox.
                ctx.wait(tell_ensemble(collector, CollectorMsg::Push(n)).map(
                    |sent, _act, _ctx| {
                        // A lost number shows in the collector's list.
                        if let Err(err) = sent {
                            eprintln!("forward failed: {err}");
                        }
                    },
                ));
                Reply::Done
            }
            Cmd::Stop => {
                ctx.stop();
                Reply::Done
            }
        };
        Box::pin(actix::fut::ready(reply))
    }
}

/// The proxy's message type for the test actix actor.
pub(crate) type Bridged = ActixMsg<Cmd>;

// ---- the Ensemble side ----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EchoMsg {
    Echo(String, ReplyTo<String>),
}

/// Answers with the text and its node's name.
pub(crate) struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;

    async fn handle(&mut self, msg: EchoMsg, ctx: &mut Context<Self>) -> ActorResult {
        let EchoMsg::Echo(text, reply) = msg;
        let _ = reply.send(format!("echo {text} from {}", ctx.node().id().name()));
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CollectorMsg {
    Push(u64),
    Get(ReplyTo<Vec<u64>>),
}

/// Keeps what it is told, in order.
#[derive(Default)]
pub(crate) struct Collector(Vec<u64>);

impl Actor for Collector {
    type Msg = CollectorMsg;

    async fn handle(&mut self, msg: CollectorMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            CollectorMsg::Push(n) => self.0.push(n),
            CollectorMsg::Get(reply) => {
                let _ = reply.send(self.0.clone());
            }
        }
        Ok(())
    }
}

pub(crate) enum WatcherMsg {
    Ready(ReplyTo<()>),
}

/// Monitors `target` when started and reports its `Down`.
pub(crate) struct Watcher {
    target: UntypedRef,
    downs: mpsc::UnboundedSender<Down>,
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.monitor(self.target.clone());
        Ok(())
    }

    async fn handle(&mut self, msg: WatcherMsg, _ctx: &mut Context<Self>) -> ActorResult {
        let WatcherMsg::Ready(reply) = msg;
        let _ = reply.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.downs.send(down);
        Ok(())
    }
}

/// Monitors `target` from an actor on `member`'s node; the receiver gets its `Down`. Returns
/// once the monitor has reached the target's node.
pub(crate) async fn monitor<M: ensemble::remote::RemoteMessage>(
    member: &Member,
    target: &ActorRef<M>,
) -> mpsc::UnboundedReceiver<Down> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = member
        .node
        .spawn(Watcher {
            target: target.untyped(),
            downs: tx,
        })
        .unwrap();
    watcher.ask(WatcherMsg::Ready, DEADLINE).await.unwrap();
    control_round_trip(member, target).await;
    rx
}

/// The next `Down`, failing the test after [`DEADLINE`].
pub(crate) async fn next_down(downs: &mut mpsc::UnboundedReceiver<Down>) -> Down {
    tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("no Down within the deadline")
        .expect("the watcher is gone")
}
