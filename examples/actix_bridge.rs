//! An actix actor in an Ensemble cluster: registered under a global name on node `n1`, asked
//! from node `n2`, asking an Ensemble actor on `n2` back from its own context, and watched by a
//! monitor on `n2` that fires when the actix actor stops.
//!
//! Both nodes run in this process for the sake of a one-command example; they talk over real
//! QUIC connections on 127.0.0.1 with mutual TLS (a throwaway CA), each with its own registry
//! data dir. The actix actor runs in an actix system on a thread of its own.
//!
//! Run: `cargo run --features actix --example actix_bridge`

use std::time::{Duration, Instant};

use actix::{ActorContext, ActorFutureExt, Handler, Message, ResponseActFuture};
use ensemble::actix::{ActixMsg, ActixRefExt, ActixSystem, Bridge, ask_ensemble};
use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::ClusterCa;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(10);

// ---- the actix actor ----

/// The actix protocol. It crosses nodes inside `ActixMsg`, so it (and its result) derive serde.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "String")]
enum Quote {
    /// Answers a price for an item.
    Price(String),
    /// Asks the Ensemble pricing actor it holds, and answers with its answer.
    Discounted(String),
    /// Stops the actix actor.
    Close,
}

/// An actix actor that knows an Ensemble actor on another node.
struct QuoteDesk {
    discounts: ActorRef<DiscountMsg>,
}

impl actix::Actor for QuoteDesk {
    type Context = actix::Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        println!("[actix] quote desk stopped");
    }
}

impl Handler<Quote> for QuoteDesk {
    type Result = ResponseActFuture<Self, String>;

    fn handle(&mut self, msg: Quote, ctx: &mut Self::Context) -> Self::Result {
        let answer = match msg {
            Quote::Price(item) => format!(
                "{item}: 100 (actix, {:?})",
                std::thread::current().name().unwrap_or("?")
            ),
            Quote::Discounted(item) => {
                // Ensemble from actix: an ask as an actor future, answered when it completes.
                return Box::pin(
                    ask_ensemble(
                        &self.discounts,
                        |reply| DiscountMsg::Percent(item, reply),
                        TIMEOUT,
                    )
                    .map(|percent, _desk, _ctx| match percent {
                        Ok(percent) => format!("100 less {percent}% = {}", 100 - percent),
                        Err(err) => format!("no discount: {err}"),
                    }),
                );
            }
            Quote::Close => {
                ctx.stop();
                "closing".to_owned()
            }
        };
        Box::pin(actix::fut::ready(answer))
    }
}

// ---- Ensemble actors on n2 ----

#[derive(Debug, Serialize, Deserialize)]
enum DiscountMsg {
    Percent(String, ReplyTo<u64>),
}

/// Answers discounts, on node n2.
struct Discounts;

impl Actor for Discounts {
    type Msg = DiscountMsg;

    async fn handle(&mut self, msg: DiscountMsg, ctx: &mut Context<Self>) -> ActorResult {
        let DiscountMsg::Percent(item, reply) = msg;
        println!("[{}] discount asked for {item}", ctx.node().id().name());
        let _ = reply.send(15);
        Ok(())
    }
}

/// Monitors the bridged actix actor from n2 and reports its `Down`.
struct Watcher {
    target: UntypedRef,
    downs: mpsc::UnboundedSender<Down>,
}

impl Actor for Watcher {
    type Msg = ReplyTo<()>;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.monitor(self.target.clone());
        Ok(())
    }

    async fn handle(&mut self, ready: ReplyTo<()>, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = ready.send(());
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.downs.send(down);
        Ok(())
    }
}

// ---- the cluster ----

struct Member {
    node: Node,
    cluster: Cluster,
    registry: Registry,
}

async fn start(
    name: &str,
    ca: &ClusterCa,
    data: &std::path::Path,
    seed: Option<std::net::SocketAddr>,
) -> Result<Member, Box<dyn std::error::Error>> {
    let node = Node::new(NodeConfig::new(name))?;
    let mut config = ClusterConfig::new("example");
    config.down = DownDecision::External;
    config.seeds = seed.into_iter().collect();
    let cluster = Cluster::start(&node, config, &ca.issue(name)?).await?;
    let mut settings = RegistryConfig::new(data.join(name));
    settings.bootstrap = seed.is_none();
    let registry = Registry::start(&cluster, settings).await?;
    Ok(Member {
        node,
        cluster,
        registry,
    })
}

/// Waits until `check` gives a value, up to 30 s.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = tempfile::tempdir()?;
    let ca = ClusterCa::generate("example")?;
    let n1 = start("n1", &ca, data.path(), None).await?;
    let n2 = start("n2", &ca, data.path(), Some(n1.cluster.local_addr())).await?;
    println!("two nodes up, with the registry on both");

    // An Ensemble actor on n2, which the actix actor on n1's side will ask.
    let discounts = n2.node.spawn(Discounts)?;
    n2.registry.register("discounts", &discounts).await?;
    let discounts_from_n1 = until("discounts to resolve on n1", || {
        n1.registry
            .whereis::<DiscountMsg>("discounts")
            .ok()
            .flatten()
    })
    .await?;

    // The actix actor, in an actix system on its own thread, bridged and named on n1.
    let actix = ActixSystem::start("quotes")?;
    let (desk, lifeline) = actix
        .start_actor(move |_ctx| QuoteDesk {
            discounts: discounts_from_n1,
        })
        .await?;
    let proxy = Bridge::<Quote>::new(desk)
        .lifeline(lifeline)
        .register(&n1.node, &n1.registry, "quotes")
        .await?;
    println!(
        "actix actor registered as \"quotes\" on n1 (proxy {})",
        proxy.id()
    );

    // n2 finds it by name: an ordinary ActorRef to an actor on n1.
    let quotes = until("quotes to resolve on n2", || {
        n2.registry
            .whereis::<ActixMsg<Quote>>("quotes")
            .ok()
            .flatten()
    })
    .await?;
    println!(
        "[n2] asked: {}",
        quotes
            .ask_actix(Quote::Price("tea".into()), TIMEOUT)
            .await?
    );
    println!(
        "[n2] asked: {}",
        quotes
            .ask_actix(Quote::Discounted("tea".into()), TIMEOUT)
            .await?
    );

    // A monitor on n2.
    let (tx, mut downs) = mpsc::unbounded_channel();
    let watcher = n2.node.spawn(Watcher {
        target: quotes.untyped(),
        downs: tx,
    })?;
    watcher.ask(|ready| ready, TIMEOUT).await?;

    // The actix actor stops; its proxy ends, the monitor fires, the name is released.
    // (A tell: an answer from a handler that stops its actix actor may be lost with it.)
    println!("[n2] telling the quote desk to close");
    quotes.tell_actix(Quote::Close).await?;
    let down = tokio::time::timeout(Duration::from_secs(30), downs.recv())
        .await?
        .ok_or("the watcher is gone")?;
    println!("[n2] monitor fired: {} ended ({})", down.actor, down.reason);
    until("the name to be released on n2", || {
        n2.registry
            .whereis::<ActixMsg<Quote>>("quotes")
            .ok()
            .and_then(|found| found.is_none().then_some(()))
    })
    .await?;
    println!("[n2] \"quotes\" no longer resolves");
    match quotes.ask_actix(Quote::Price("tea".into()), TIMEOUT).await {
        Err(err) => println!("[n2] an ask to the old reference fails: {err}"),
        Ok(answer) => return Err(format!("the stopped actor answered: {answer}").into()),
    }

    actix.shutdown().await;
    n2.cluster.leave().await;
    n1.cluster.leave().await;
    Ok(())
}
