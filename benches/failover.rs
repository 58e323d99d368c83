//! Singleton failover: the time from `kill -9` of the node process running an app's
//! singleton to a new instance answering under the same global name, with default settings
//! (session TTL 1 s, keepalive every 200 ms), and a check that two instances never lived at
//! once.
//!
//! Run: `cargo bench --bench failover`. Figures: docs/performance.md.
//!
//! # Layout
//!
//! Four nodes `a`, `b`, `c` and `d` run in child processes (this binary started again with
//! `ENSEMBLE_BENCH_NODE` set); `a`, `b` and `c` are the registry's voters, `d` is not. Each
//! runs the app machinery (`Apps::start`: an agent and a manager of the app controller) and
//! has the module `probe.boss`. This process is a fifth node that never votes and takes no
//! instances: it deploys an app whose only role is a singleton with the global name
//! `probe.boss`, and measures.
//!
//! # A trial
//!
//! 1. Ask `probe.boss` which node it runs on and its fencing token.
//! 2. Note whether that node leads the registry and whether it runs the app controller, then
//!    `kill -9` it; the clock starts here.
//! 3. Every 5 ms, resolve the name from this node's copy of the registry and ask it; the
//!    clock stops at the first answer from another node with a greater token. An entry that
//!    still names the killed node is not asked (its actor is known to be dead).
//! 4. Start the killed node again with its name and data dir (a voter rejoins with its log),
//!    wait until it is ready and the registry writes again, then two seconds more.
//!
//! Meanwhile this node's copy of the registry reports when it saw the killed node's session
//! expire, the singleton's lock granted again and the name bound to the new instance: the
//! steps the time is made of.
//!
//! # The check
//!
//! Every instance records when it started and stopped, with its token, in a file (an
//! instance on a killed node ends at the kill). At the end the benchmark checks that tokens
//! grow from one instance to the next and that each instance started after the previous one
//! ended.
//!
//! # Environment
//!
//! - `ENSEMBLE_BENCH_TRIALS`: how many kills (default 10).
//! - `ENSEMBLE_BENCH_LOG`: the nodes' log filter (default `warn,ensemble_supervisor=info,
//!   ensemble_registry=info`); each node logs to `<name>.log` in the working directory.
//! - `ENSEMBLE_BENCH_KEEP`: keep the working directory (logs, data, history) and print its
//!   path.
#![allow(missing_docs)]

#[path = "common/child.rs"]
mod child;
#[path = "common/child_env.rs"]
mod child_env;
#[path = "common/work_dir.rs"]
mod work_dir;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ensemble::NodeId;
use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig, RegistryEffect, VOTER_LABEL};
use ensemble::supervisor::app::{AppSpec, Apps, CONTROLLER};
use ensemble::supervisor::singleton::lock_name;
use ensemble::transport::certs::{ClusterCa, NodeCert};
use serde::{Deserialize, Serialize};

use child::ChildProcess;

const NODES: [&str; 4] = ["a", "b", "c", "d"];
const VOTERS: usize = 3;
const NAME: &str = "probe.boss";
const LOCK: &str = "ensemble.singleton/probe/boss";
/// How often the measuring loop resolves and asks the name.
const POLL: Duration = Duration::from_millis(5);
/// How long one ask may take.
const ASK: Duration = Duration::from_millis(250);
/// How long a failover may take before the trial counts as failed.
const GIVE_UP: Duration = Duration::from_secs(30);
/// How long the cluster runs undisturbed between trials.
const SETTLE: Duration = Duration::from_secs(2);
const DEFAULT_LOG: &str = "warn,ensemble_supervisor=info,ensemble_registry=info";

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

/// What the singleton takes.
#[derive(Serialize, Deserialize)]
enum ProbeMsg {
    /// Answers the instance's node name and fencing token.
    Ping(ReplyTo<(String, u64)>),
}

/// The singleton's arguments.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct ProbeArgs {
    /// The singleton's lock, whose token the instance reads.
    lock: String,
    /// Where to record starts and stops.
    history: PathBuf,
}

/// The singleton: answers pings with its node and token, and records its life.
struct Probe {
    args: ProbeArgs,
    token: u64,
}

impl Probe {
    fn record(&self, event: &str, node: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.args.history)
            .expect("history file");
        writeln!(file, "{event} {} {node} {}", self.token, micros()).expect("record");
    }
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        // The agent took the lease before starting this instance; this node's copy of the
        // registry shows the grant once the leader's feed brings it.
        let registry = ctx.node().extension::<Registry>().expect("registry");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let held = registry
                .lock_info(&self.args.lock)
                .and_then(|l| l.holder)
                .filter(|(holder, _)| &holder.node == ctx.node().id());
            if let Some((_, token)) = held {
                self.token = token;
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ActorError::new(format!(
                    "started without holding {}",
                    self.args.lock
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
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

/// Starts a node with the cluster service and the registry. Nodes that may vote print
/// `LISTENING <addr>` once they listen.
async fn start_node(
    name: &str,
    dir: &Path,
    seeds: Vec<std::net::SocketAddr>,
    bootstrap: bool,
    voter: bool,
) -> (Node, Cluster, Registry) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    node.register_module("probe.boss", |args: ProbeArgs| Probe { args, token: 0 });
    let cert = NodeCert::load(dir, name).expect("cert");
    let mut config = ClusterConfig::new("bench");
    config.down = DownDecision::External;
    config.seeds = seeds;
    if !voter {
        config.labels.insert(VOTER_LABEL.into(), "no".into());
    }
    let cluster = Cluster::start(&node, config, &cert).await.expect("cluster");
    if voter {
        println!("LISTENING {}", cluster.local_addr());
        let _ = std::io::stdout().flush();
    }
    let mut settings = RegistryConfig::new(dir.join(format!("{name}-data")));
    settings.bootstrap = bootstrap;
    let registry = Registry::start(&cluster, settings).await.expect("registry");
    (node, cluster, registry)
}

/// A child node: runs until its standard input closes.
fn child(name: String) {
    let dir = PathBuf::from(std::env::var("ENSEMBLE_BENCH_DIR").expect("dir"));
    let seeds: Vec<std::net::SocketAddr> = child_env::seeds();
    child_env::log_if_asked();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let bootstrap = std::env::var_os("ENSEMBLE_BENCH_BOOTSTRAP").is_some();
        let (node, _cluster, _registry) = start_node(&name, &dir, seeds, bootstrap, true).await;
        let _apps = Apps::start(&node).await.expect("apps");
        println!("READY");
        let _ = std::io::stdout().flush();
        tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {})
            .await
            .ok();
    });
}

/// Starts node `name` in a child process and waits until it listens.
fn spawn_node(name: &str, dir: &Path, seeds: &[String], bootstrap: bool) -> ChildProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("log file");
    let filter = std::env::var("ENSEMBLE_BENCH_LOG").unwrap_or_else(|_| DEFAULT_LOG.into());
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command
        .env("ENSEMBLE_BENCH_NODE", name)
        .env("ENSEMBLE_BENCH_DIR", dir)
        .env("ENSEMBLE_BENCH_SEEDS", seeds.join(","))
        .env("ENSEMBLE_BENCH_LOG", filter)
        .stderr(log);
    if bootstrap {
        command.env("ENSEMBLE_BENCH_BOOTSTRAP", "1");
    }
    ChildProcess::spawn(name, command)
}

fn spec(history: &Path) -> String {
    format!(
        r#"
name = "probe"

[[roles]]
name = "boss"
module = "probe.boss"
singleton = true
global_name = "{NAME}"
args = {{ lock = "{LOCK}", history = "{history}" }}
# A kill every few seconds would exhaust the default intensity (10 restarts a minute).
restart = {{ max_restarts = 1000, within_secs = 60 }}
"#,
        history = history.display()
    )
}

/// The live instance, as reached through its name: its actor's node, node name and token.
async fn ping(registry: &Registry) -> Option<(NodeId, String, u64)> {
    let probe = registry.whereis::<ProbeMsg>(NAME).ok()??;
    let (name, token) = probe.ask(ProbeMsg::Ping, ASK).await.ok()?;
    Some((probe.id().node().clone(), name, token))
}

/// Waits until the name answers; returns what [`ping`] does.
async fn holder(registry: &Registry) -> (NodeId, String, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = ping(registry).await {
            return found;
        }
        assert!(Instant::now() < deadline, "the singleton never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When this node's copy of the registry saw the steps of a failover, since the kill.
#[derive(Default, Clone, Copy)]
struct Steps {
    expired: Option<Duration>,
    granted: Option<Duration>,
    named: Option<Duration>,
}

/// Records the steps of the failover of the instance on `victim`, as this node's copy applies
/// them, timed from the instant `killed` is set to; runs until the task is aborted.
fn watch_steps(
    registry: &Registry,
    victim: NodeId,
    killed: Arc<Mutex<Option<Instant>>>,
) -> (Arc<Mutex<Steps>>, tokio::task::JoinHandle<()>) {
    let steps = Arc::new(Mutex::new(Steps::default()));
    let mut effects = registry.subscribe();
    let out = steps.clone();
    let task = tokio::spawn(async move {
        while let Ok(effect) = effects.recv().await {
            let Some(killed) = *killed.lock().expect("lock") else {
                continue;
            };
            let at = Some(killed.elapsed());
            let mut steps = out.lock().expect("lock");
            match effect {
                RegistryEffect::SessionExpired(node) if node == victim => {
                    steps.expired = steps.expired.or(at);
                }
                RegistryEffect::Granted { lock, .. } if lock == LOCK => {
                    steps.granted = steps.granted.or(at);
                }
                RegistryEffect::Name {
                    name,
                    actor: Some(actor),
                } if name == NAME && actor.id.node() != &victim => {
                    steps.named = steps.named.or(at);
                }
                _ => {}
            }
        }
    });
    (steps, task)
}

/// One kill and what followed.
struct Trial {
    victim: String,
    leader: bool,
    controller: bool,
    token: u64,
    took: Option<Duration>,
    new_holder: String,
    new_token: u64,
    steps: Steps,
    /// When the killed instance ended, wall clock, microseconds.
    killed_at: u128,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

/// The median of sorted times: of an even count, the mean of the two middle ones.
fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn summary(what: &str, trials: &[&Trial]) {
    let mut times: Vec<Duration> = trials.iter().filter_map(|t| t.took).collect();
    times.sort();
    let failed = trials.len() - times.len();
    if trials.is_empty() {
        println!("{what:<26}  0 kills");
        return;
    }
    if times.is_empty() {
        println!("{what:<26} {:>2} kills, none answered", trials.len());
        return;
    }
    println!(
        "{what:<26} {:>2} kills   p50 {:>6.0} ms   max {:>6.0} ms   min {:>6.0} ms{}",
        trials.len(),
        median(&times).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        if failed > 0 {
            format!("   ({failed} never answered)")
        } else {
            String::new()
        }
    );
}

/// Instances as their history file records them: (token, node, up, down), wall clock in
/// microseconds; an instance on a killed node ends at the kill.
fn instances(history: &Path, trials: &[Trial]) -> Vec<(u64, String, u128, u128)> {
    let text = std::fs::read_to_string(history).unwrap_or_default();
    let mut ups: BTreeMap<u64, (String, u128)> = BTreeMap::new();
    let mut downs: BTreeMap<u64, u128> = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (token, at): (u64, u128) = (w[1].parse().expect("token"), w[3].parse().expect("time"));
        if w[0] == "up" {
            ups.insert(token, (w[2].to_owned(), at));
        } else {
            downs.insert(token, at);
        }
    }
    let kills: BTreeMap<u64, u128> = trials.iter().map(|t| (t.token, t.killed_at)).collect();
    let mut all: Vec<_> = ups
        .into_iter()
        .map(|(token, (node, up))| {
            let down = downs
                .get(&token)
                .or_else(|| kills.get(&token))
                .copied()
                .unwrap_or(u128::MAX);
            (token, node, up, down)
        })
        .collect();
    all.sort_by_key(|i| i.2);
    all
}

fn main() {
    if let Ok(name) = std::env::var("ENSEMBLE_BENCH_NODE") {
        child(name);
        return;
    }
    let trials: usize = std::env::var("ENSEMBLE_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (dir, keep) = work_dir::work_dir("ensemble-failover-");
    let ca = ClusterCa::generate("bench").expect("CA");
    ca.save(dir.path()).expect("save");
    for name in NODES.iter().chain(&["bench"]) {
        ca.issue(name)
            .expect("issue")
            .save(dir.path())
            .expect("save");
    }
    let history = dir.path().join("boss-history");

    // The voters first, so that they are the first three members; then `d`.
    let mut nodes = vec![spawn_node("a", dir.path(), &[], true)];
    let seeds = vec![nodes[0].addr.clone()];
    for name in &NODES[1..VOTERS] {
        nodes.push(spawn_node(name, dir.path(), &seeds, false));
    }
    for node in &mut nodes {
        node.wait("READY");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let seed = vec![seeds[0].parse().expect("addr")];
        let (node, _cluster, registry) = start_node("bench", dir.path(), seed, false, false).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while registry.voters().await.map(|v| v.len()).unwrap_or(0) < VOTERS {
            assert!(Instant::now() < deadline, "the voters never formed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in &NODES[VOTERS..] {
            let mut child = spawn_node(name, dir.path(), &seeds, false);
            child.wait("READY");
            nodes.push(child);
        }
        let apps = Apps::new(&node).expect("apps");
        let spec = AppSpec::from_toml(&spec(&history)).expect("spec");
        apps.deploy(&spec).await.expect("deploy");
        holder(&registry).await;
        tokio::time::sleep(SETTLE).await;
        let defaults = RegistryConfig::new(".");
        println!(
            "{} nodes in as many processes ({VOTERS} registry voters), this process a fifth \
             that never votes; default settings (session TTL {:?}, keepalive {:?}, election \
             timeout {:?}..{:?})\n",
            NODES.len(),
            defaults.session_ttl,
            defaults.keepalive_interval,
            defaults.election_timeout.0,
            defaults.election_timeout.1,
        );

        let mut results: Vec<Trial> = Vec::new();
        for trial in 0..trials {
            let (victim_id, victim, token) = holder(&registry).await;
            let leader = registry.leader().as_deref() == Some(victim.as_str());
            let controller = registry
                .lock_info(&lock_name(CONTROLLER))
                .and_then(|l| l.holder)
                .is_some_and(|(h, _)| h.node == victim_id);
            let at = nodes
                .iter()
                .position(|n| n.name == victim)
                .expect("a child node");
            let started = Arc::new(Mutex::new(None));
            let (steps, watcher) = watch_steps(&registry, victim_id.clone(), started.clone());

            let killed_at = micros();
            let killed = Instant::now();
            *started.lock().expect("lock") = Some(killed);
            nodes[at].kill();
            let mut outcome = None;
            while killed.elapsed() < GIVE_UP {
                if let Ok(Some(probe)) = registry.whereis::<ProbeMsg>(NAME)
                    && probe.id().node() != &victim_id
                    && let Ok((name, new_token)) = probe.ask(ProbeMsg::Ping, ASK).await
                    && name != victim
                    && new_token > token
                {
                    outcome = Some((killed.elapsed(), name, new_token));
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            // Let the watcher see a late step, if any, then stop it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            watcher.abort();
            let steps = *steps.lock().expect("lock");
            let (took, new_holder, new_token) = match outcome {
                Some((took, holder, token)) => (Some(took), holder, token),
                None => (None, "-".into(), 0),
            };
            println!(
                "kill {trial}: {victim}{}{} (token {token}) -> {new_holder} (token {new_token}) \
                 after {} ms; seen here: session expired {} ms, lock granted {} ms, name bound {} ms",
                if leader { ", the registry leader" } else { "" },
                if controller { ", the app controller" } else { "" },
                ms(took),
                ms(steps.expired),
                ms(steps.granted),
                ms(steps.named),
            );
            results.push(Trial {
                victim: victim.clone(),
                leader,
                controller,
                token,
                took,
                new_holder,
                new_token,
                steps,
                killed_at,
            });

            // Bring the node back: the same name and data dir, a new incarnation.
            let seeds: Vec<String> = nodes
                .iter()
                .filter(|n| n.name != victim)
                .map(|n| n.addr.clone())
                .collect();
            nodes[at] = spawn_node(&victim, dir.path(), &seeds, false);
            nodes[at].wait("READY");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let voters = registry.voters().await.map(|v| v.len()).unwrap_or(0);
                if voters == VOTERS
                    && registry.leader().is_some()
                    && registry.put("bench/alive", b"x".to_vec()).await.is_ok()
                    && ping(&registry).await.is_some()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not recover");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(SETTLE).await;
        }

        // The table.
        println!(
            "\n{:<6}{:<8}{:<8}{:<12}{:>7}{:>7}{:>10}{:>10}{:>10}{:>11}",
            "kill",
            "node",
            "leader",
            "controller",
            "token",
            "new",
            "expired",
            "granted",
            "named",
            "answered"
        );
        for (i, t) in results.iter().enumerate() {
            println!(
                "{:<6}{:<8}{:<8}{:<12}{:>7}{:>7}{:>10}{:>10}{:>10}{:>11}",
                i,
                format!("{}->{}", t.victim, t.new_holder),
                if t.leader { "yes" } else { "no" },
                if t.controller { "yes" } else { "no" },
                t.token,
                t.new_token,
                ms(t.steps.expired),
                ms(t.steps.granted),
                ms(t.steps.named),
                ms(t.took),
            );
        }
        println!("(milliseconds after the kill; expired/granted/named as this node's copy saw them)\n");
        summary("all kills", &results.iter().collect::<Vec<_>>());
        summary(
            "registry leader killed",
            &results.iter().filter(|t| t.leader).collect::<Vec<_>>(),
        );
        summary(
            "leader not killed",
            &results.iter().filter(|t| !t.leader).collect::<Vec<_>>(),
        );

        // Fencing: tokens grow and instances never overlap.
        let lived = instances(&history, &results);
        let mut problems = Vec::new();
        for pair in lived.windows(2) {
            let ((t1, n1, _, down1), (t2, n2, up2, _)) = (&pair[0], &pair[1]);
            if t2 <= t1 {
                problems.push(format!("token went back: {t1} on {n1}, then {t2} on {n2}"));
            }
            if up2 <= down1 {
                problems.push(format!(
                    "{t2} on {n2} started {} ms before {t1} on {n1} ended",
                    (down1 - up2) as f64 / 1e3
                ));
            }
        }
        let gaps: Vec<String> = lived
            .windows(2)
            .map(|p| format!("{:.0}", (p[1].2.saturating_sub(p[0].3)) as f64 / 1e3))
            .collect();
        println!(
            "\n{} instances lived, tokens {:?}; gap between one's end and the next one's start (ms): {}",
            lived.len(),
            lived.iter().map(|i| i.0).collect::<Vec<_>>(),
            gaps.join(", ")
        );
        if lived.len() != results.len() + 1 {
            problems.push(format!(
                "{} instances for {} kills: expected one more than kills",
                lived.len(),
                results.len()
            ));
        }
        if problems.is_empty() {
            println!("fencing: tokens strictly increase, no two instances lived at once");
        } else {
            println!("fencing problems:\n  {}", problems.join("\n  "));
        }

        // What the nodes logged: warnings and errors, and self-fencing of live nodes (a
        // fenced node stops its lease-bound actors, singletons included).
        println!("\nnode logs (all incarnations):");
        for name in NODES {
            let log = std::fs::read_to_string(dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
            println!(
                "  {name}: {:>4} WARN {:>4} ERROR   fenced itself {:>2} times, losing leases {:>2} times",
                count(" WARN "),
                count(" ERROR "),
                count("no session renewal in time"),
                count("fencing: leases lost"),
            );
        }
        if keep {
            println!("kept {}", dir.path().display());
        }
        drop(nodes);
    });
}
