//! A node in a child process taking part in apps, driven by commands on its standard input
//! (the protocol of the registry tests' child: `<id> <op> <args...>` in, `R <id> <answer>`
//! out, plus `LISTENING <addr>` and `READY <addr>`).
//!
//! Each node advertises 1000 `cpu` and a `zone` label from its name: `a` and `b` are in zone
//! `one`, every other node in zone `two`. Its modules: `probe.worker` (answers pings with its
//! node's name) and `probe.boss` (the same, and records when it starts and stops, with its
//! fencing token, in the file its arguments name).
//!
//! Operations: `deploy PATH` (an app spec in TOML), `remove APP`, `status APP` (JSON),
//! `ping NAME` (the node of the global name's holder, asked through the name), `leader`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::supervisor::app::{AppSpec, Apps};
use ensemble::supervisor::placement::{Requirements, Spread};
use ensemble::supervisor::{
    Backoff, ChildSpec, Placement, Strategy, SupervisorRef, SupervisorSpec,
};
use ensemble::transport::certs::NodeCert;
use serde::{Deserialize, Serialize};

pub(crate) const ENV_NAME: &str = "ENSEMBLE_TEST_NODE";
pub(crate) const ENV_CERTS: &str = "ENSEMBLE_TEST_CERTS";
pub(crate) const ENV_DATA: &str = "ENSEMBLE_TEST_DATA";
pub(crate) const ENV_SEEDS: &str = "ENSEMBLE_TEST_SEEDS";
pub(crate) const ENV_BOOTSTRAP: &str = "ENSEMBLE_TEST_BOOTSTRAP";
pub(crate) const ENV_LOG: &str = "ENSEMBLE_TEST_LOG";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

/// What probes take.
#[derive(Serialize, Deserialize)]
pub(crate) enum ProbeMsg {
    /// Answers the probe's node name and fencing token (0 if not a singleton).
    Ping(ReplyTo<(String, u64)>),
}

/// A probe's arguments.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ProbeArgs {
    /// The singleton lock whose token the probe reads, if any.
    lock: Option<String>,
    /// Where to record starts and stops, if anywhere.
    history: Option<PathBuf>,
    /// Fail to start (for restart intensity).
    fail: bool,
}

struct Probe {
    args: ProbeArgs,
    token: u64,
}

impl Probe {
    fn record(&self, event: &str, node: &str) {
        if let Some(path) = &self.args.history {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("history file");
            writeln!(file, "{event} {} {node} {}", self.token, micros()).expect("record");
        }
    }
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if self.args.fail {
            return Err(ActorError::new("told to fail"));
        }
        if let Some(lock) = &self.args.lock {
            // The agent took the lease before starting this instance; this node's copy of
            // the registry shows the grant once the leader's feed brings it.
            let registry = ctx.node().extension::<Registry>().expect("registry");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let held = registry
                    .lock_info(lock)
                    .and_then(|l| l.holder)
                    .filter(|(holder, _)| &holder.node == ctx.node().id());
                if let Some((_, token)) = held {
                    self.token = token;
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(ActorError::new(format!("started without holding {lock}")));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.record("up", ctx.node().id().name());
        Ok(())
    }

    async fn handle(&mut self, msg: ProbeMsg, ctx: &mut Context<Self>) -> ActorResult {
        let ProbeMsg::Ping(reply) = msg;
        let _ = reply.send((ctx.node().id().name().to_owned(), self.token));
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        self.record("down", ctx.node().id().name());
    }
}

/// The supervisors of `supervise-pair` and `supervise-rest`, by name, kept apart from the one
/// of `supervise`.
#[derive(Clone, Default)]
struct Others(Arc<Mutex<BTreeMap<String, SupervisorRef>>>);

/// Starts a supervisor kept in [`Others`].
async fn start_other(registry: &Registry, spec: SupervisorSpec) -> String {
    let node = registry_node(registry);
    let name = spec.name().to_owned();
    match SupervisorRef::start(&node, spec).await {
        Ok(sup) => {
            let others = node.extension::<Others>().unwrap_or_default();
            others.0.lock().unwrap().insert(name, sup);
            node.set_extension(others);
            "ok".into()
        }
        Err(e) => format!("err {e}"),
    }
}

pub(crate) fn run() {
    let Ok(name) = std::env::var(ENV_NAME) else {
        return;
    };
    let certs = PathBuf::from(std::env::var(ENV_CERTS).expect("certificate dir"));
    let data = PathBuf::from(std::env::var(ENV_DATA).expect("data dir"));
    let seeds = crate::common::seeds_from_env(ENV_SEEDS);
    if let Ok(filter) = std::env::var(ENV_LOG) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "{filter},ensemble_supervisor=debug"
            )))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let node = Node::new(NodeConfig::new(&name)).expect("node");
        let _ = NODE.set(node.clone());
        for module in ["probe.worker", "probe.boss"] {
            node.register_module(module, |args: ProbeArgs| Probe { args, token: 0 });
        }
        ensemble::kv::register_modules(&node);
        let cert = NodeCert::load(&certs, &name).expect("certificate");
        let mut config = ClusterConfig::new("test");
        config.down = DownDecision::External;
        config.seeds = seeds;
        config.resources = BTreeMap::from([("cpu".to_owned(), 1000)]);
        let zone = if name == "a" || name == "b" {
            "one"
        } else {
            "two"
        };
        config.labels = BTreeMap::from([("zone".to_owned(), zone.to_owned())]);
        let cluster = Cluster::start(&node, config, &cert)
            .await
            .expect("cluster service");
        say(&format!("LISTENING {}", cluster.local_addr()));
        let mut settings = RegistryConfig::new(&data);
        settings.bootstrap = std::env::var(ENV_BOOTSTRAP).is_ok();
        let registry = Registry::start(&cluster, settings).await.expect("registry");
        let apps = Apps::start(&node).await.expect("apps").apps;
        say(&format!("READY {}", cluster.local_addr()));
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let (apps, registry) = (apps.clone(), registry.clone());
            tokio::spawn(async move {
                let mut words = line.split_whitespace();
                let id = words.next().unwrap_or("?").to_owned();
                let op = words.next().unwrap_or("").to_owned();
                let args: Vec<String> = words.map(str::to_owned).collect();
                let answer = run_op(&apps, &registry, &op, &args).await;
                say(&format!("R {id} {answer}"));
            });
        }
    });
}

fn registry_node(_registry: &Registry) -> Node {
    NODE.get().expect("node set at start").clone()
}

static NODE: std::sync::OnceLock<Node> = std::sync::OnceLock::new();

/// The node's client of the example key-value app (one, so its table cache is shared).
fn kv(registry: &Registry) -> &'static ensemble::kv::KvClient {
    static CLIENT: std::sync::OnceLock<ensemble::kv::KvClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| ensemble::kv::KvClient::new(registry.clone()))
}

async fn run_op(apps: &Apps, registry: &Registry, op: &str, args: &[String]) -> String {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match op {
        "deploy" => {
            let text = std::fs::read_to_string(arg(0)).expect("spec file");
            match AppSpec::from_toml(&text) {
                Ok(spec) => match apps.deploy(&spec).await {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("err {e}"),
                },
                Err(e) => format!("err {e}"),
            }
        }
        "list" => match apps.list().await {
            Ok(specs) => {
                let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
                format!("ok {}", names.join(","))
            }
            Err(e) => format!("err {e}"),
        },
        "remove" => match apps.remove(arg(0)).await {
            Ok(found) => format!("ok {found}"),
            Err(e) => format!("err {e}"),
        },
        "status" => match apps.status(arg(0)) {
            Some(status) => serde_json::to_string(&status).expect("json"),
            None => "none".into(),
        },
        "ping" => match registry.whereis::<ProbeMsg>(arg(0)) {
            Ok(Some(probe)) => match probe.ask(ProbeMsg::Ping, Duration::from_secs(2)).await {
                Ok((node, token)) => format!("ok {node} {token}"),
                Err(e) => format!("err {e}"),
            },
            Ok(None) => "none".into(),
            Err(e) => format!("err {e}"),
        },
        "supervise" => {
            let needs = Requirements {
                labels: BTreeMap::from([("zone".to_owned(), "two".to_owned())]),
                ..Requirements::default()
            };
            let spec = SupervisorSpec::new("sup")
                .intensity(5, Duration::from_secs(10))
                .child(
                    ChildSpec::module("pinned", "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Node(arg(0).to_owned())),
                )
                .child(
                    ChildSpec::module("free", "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Any(needs))
                        .global_name("sup.free"),
                )
                .child(
                    ChildSpec::module("later", "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Node(arg(1).to_owned())),
                );
            let node = registry_node(registry);
            match SupervisorRef::start(&node, spec).await {
                Ok(sup) => {
                    node.set_extension(sup);
                    "ok".into()
                }
                Err(e) => format!("err {e}"),
            }
        }
        "supervise-pair" => {
            // Two children of one module packed on one node, with the default restart
            // intensity (1 in 5 s).
            let needs = Requirements {
                labels: BTreeMap::from([("zone".to_owned(), "two".to_owned())]),
                spread: Spread::Pack,
                ..Requirements::default()
            };
            let mut spec = SupervisorSpec::new("pair");
            for id in ["one", "two"] {
                spec = spec.child(
                    ChildSpec::module(id, "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Any(needs.clone())),
                );
            }
            start_other(registry, spec).await
        }
        "supervise-rest" => {
            // Rest-for-one: `first` placed in zone two, restarted after a 4 s backoff;
            // `second` pinned to node `arg(0)`, which has not joined yet.
            let needs = Requirements {
                labels: BTreeMap::from([("zone".to_owned(), "two".to_owned())]),
                ..Requirements::default()
            };
            let backoff = Backoff {
                initial: Duration::from_secs(4),
                max: Duration::from_secs(4),
                jitter: 0.0,
                ..Backoff::default()
            };
            let spec = SupervisorSpec::new("rest")
                .strategy(Strategy::RestForOne)
                .child(
                    ChildSpec::module("first", "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Any(needs))
                        .backoff(backoff),
                )
                .child(
                    ChildSpec::module("second", "probe.worker", &ProbeArgs::default())
                        .expect("args")
                        .placement(Placement::Node(arg(0).to_owned())),
                );
            start_other(registry, spec).await
        }
        "children" => {
            let node = registry_node(registry);
            let sup = match arg(0) {
                "" => node.extension::<SupervisorRef>().expect("a supervisor"),
                name => node
                    .extension::<Others>()
                    .expect("supervisors")
                    .0
                    .lock()
                    .unwrap()[name]
                    .clone(),
            };
            match sup.which_children().await {
                Ok(children) => children
                    .iter()
                    .map(|c| {
                        let at = c
                            .actor
                            .as_ref()
                            .map_or("-".to_owned(), |a| a.id().node().name().to_owned());
                        format!("{}@{at}/{:?}", c.id, c.state)
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("err {e}"),
            }
        }
        "negotiate" => {
            let node = registry_node(registry);
            let sup = node.extension::<SupervisorRef>().expect("a supervisor");
            let needs = Requirements {
                anti_affinity: true,
                ..Requirements::default()
            };
            let template = ChildSpec::module(arg(0), "probe.boss", &ProbeArgs::default())
                .expect("args")
                .placement(Placement::Any(needs));
            let (asked, min) = (arg(1).parse().unwrap_or(1), arg(2).parse().unwrap_or(1));
            match sup.start_children(template, asked, min).await {
                Ok(granted) => {
                    let mut nodes: Vec<String> = granted
                        .children
                        .iter()
                        .map(|(_, a)| a.id().node().name().to_owned())
                        .collect();
                    nodes.sort();
                    format!("granted {} {}", granted.children.len(), nodes.join(","))
                }
                Err(e) => format!("err {e}"),
            }
        }
        "kvput" => match kv(registry).put(arg(0), arg(1).as_bytes().to_vec()).await {
            Ok(_) => "ok".into(),
            Err(e) => format!("err {e}"),
        },
        "kvget" => match kv(registry).get(arg(0)).await {
            Ok(Some(value)) => format!("ok {}", String::from_utf8_lossy(&value)),
            Ok(None) => "none".into(),
            Err(e) => format!("err {e}"),
        },
        "kvstatus" => match kv(registry).status().await {
            Ok(s) => format!("ok {}/{} replicated", s.replicated, s.partitions),
            Err(e) => format!("err {e}"),
        },
        // The fencing token the master's orders carry, and its singleton lease's; the lock
        // the orders name must be that lease's.
        "kvtoken" => match kv(registry).status().await {
            Ok(s) => {
                let lock = ensemble::supervisor::singleton::lock_name("kv/master");
                match registry.lock_info(&lock).and_then(|l| l.holder) {
                    _ if s.master_lease != lock => format!(
                        "err the master's orders name lock {:?}, not its lease's {lock:?}",
                        s.master_lease
                    ),
                    Some((_, lease)) => format!("ok {} {lease}", s.master_token),
                    None => format!("err {lock:?} has no holder"),
                }
            }
            Err(e) => format!("err {e}"),
        },
        "kvmaster" => match registry.name_holder(ensemble::kv::MASTER_NAME) {
            Some(wire) => format!("ok {}", wire.id.node().name()),
            None => "none".into(),
        },
        "leader" => format!(
            "leader {} voters {}",
            registry.leader().unwrap_or_default(),
            registry
                .voters()
                .await
                .map(|v| v.join(","))
                .unwrap_or_default()
        ),
        other => format!("err unknown op {other:?}"),
    }
}
