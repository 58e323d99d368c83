//! A node in a child process running the registry and a workload that records what it sees
//! in a history file, driven by commands on its standard input.
//!
//! # The workload
//!
//! Started as soon as the node's session is open, and run until the process dies:
//!
//! - **a mutex client**: takes lock `mutex`, holds it a random 5-150 ms, gives it back;
//! - **a singleton holder**: takes lock `singleton` and keeps it until it is lost;
//! - **a name**: registers `svc.<node>` for a local actor;
//! - **lookups**: every 100 ms, resolves every node's name from this node's copy;
//! - **a config writer**: puts a new key every 20-60 ms.
//!
//! A lock holder checks `Lease::is_lost` every 10 ms and records, when its hold ends, the
//! last instant it saw the lease valid (the clock is read before each check), so a hold's
//! recorded span is one the holder really relied on.
//!
//! # History lines
//!
//! Times are microseconds of the system clock, shared by every process of the machine.
//! Every line ends with ` .` (see `History`).
//!
//! - `acq LOCK TOKEN NODE INC START ASKED`: granted, valid at `START`; asked for at `ASKED`.
//! - `end LOCK TOKEN NODE INC LAST released|lost`: the hold ended; valid until `LAST`.
//! - `look AT OBSERVER NAME HOLDER HOLDER_INC`: `NAME` resolved to an actor of that node.
//! - `ack KEY VALUE REVISION`: a put acknowledged.
//!
//! # The protocol
//!
//! Commands are lines `<id> <op> <args...>`; answers `R <id> <words...>`. Unprompted lines:
//! `LISTENING <addr>`, then `READY <addr> <incarnation>` once the session is open, and
//! `EXPIRED` when the cluster declared this node down, after which the process exits (as
//! `ensemble node` does, so that its supervisor starts a new incarnation). The process also
//! exits when its standard input closes, or when the test that started it dies.
//!
//! Operations: `leader` (`leader NAME voters A,B,C`), `holder LOCK` (the holding node from
//! this node's copy, or `none`), `quiet` (the writer stops; answered once no put is in
//! flight, so every acknowledgement is recorded by then), `dump PREFIX PATH` (writes every key under `PREFIX` read
//! through the leader, one `KEY VALUE REVISION VERSION` a line; answers `ok COUNT`).

use std::fs::File;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::transport::certs::NodeCert;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub(crate) const ENV_NAME: &str = "ENSEMBLE_TEST_NODE";
pub(crate) const ENV_CERTS: &str = "ENSEMBLE_TEST_CERTS";
pub(crate) const ENV_DATA: &str = "ENSEMBLE_TEST_DATA";
pub(crate) const ENV_SEEDS: &str = "ENSEMBLE_TEST_SEEDS";
pub(crate) const ENV_BOOTSTRAP: &str = "ENSEMBLE_TEST_BOOTSTRAP";
pub(crate) const ENV_LOG: &str = "ENSEMBLE_TEST_LOG";
/// Where the node listens (default `127.0.0.1:0`).
pub(crate) const ENV_LISTEN: &str = "ENSEMBLE_TEST_LISTEN";
/// The history file, appended to.
pub(crate) const ENV_HISTORY: &str = "ENSEMBLE_TEST_HISTORY";
/// Every node's name, comma-separated: whose names the lookups resolve.
pub(crate) const ENV_NODES: &str = "ENSEMBLE_TEST_NODES";
/// Seeds the workload's random choices.
pub(crate) const ENV_WORK_SEED: &str = "ENSEMBLE_TEST_WORK_SEED";

/// The lock every node's mutex client takes and gives back.
pub(crate) const MUTEX: &str = "mutex";
/// The lock every node's singleton holder keeps until it is lost.
pub(crate) const SINGLETON: &str = "singleton";
/// Prefix of every key the writers put.
pub(crate) const KEYS: &str = "chaos/";

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

/// What the named actors take.
#[derive(Serialize, Deserialize)]
pub(crate) enum SinkMsg {
    Ping(ReplyTo<String>),
}

/// The actor behind a node's global name.
struct Sink;

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, msg: SinkMsg, ctx: &mut Context<Self>) -> ActorResult {
        let SinkMsg::Ping(reply) = msg;
        let _ = reply.send(ctx.node().id().name().to_owned());
        Ok(())
    }
}

/// The history file, appended to. Each record is one `write` of a whole line ending with
/// ` .`; a `kill -9` during a write that crosses a page can still cut a line short, which
/// the missing end mark shows (and the next incarnation starts on a line of its own).
struct History(Mutex<File>);

impl History {
    fn open(path: &std::path::Path) -> History {
        let torn = std::fs::read(path).is_ok_and(|text| text.last().is_some_and(|&b| b != b'\n'));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("history file");
        if torn {
            file.write_all(b"\n").expect("write to the history file");
        }
        History(Mutex::new(file))
    }

    fn record(&self, line: String) {
        let mut file = self.0.lock();
        file.write_all(format!("{line} .\n").as_bytes())
            .expect("write to the history file");
    }
}

/// What the workload's tasks share.
struct Work {
    node: Node,
    registry: Registry,
    history: History,
    me: String,
    incarnation: u64,
    /// Set by `quiet`: the writer puts nothing more.
    quiet: AtomicBool,
    /// Held by the writer across each put, so `quiet` can wait for the one in flight.
    writing: tokio::sync::Mutex<()>,
}

pub(crate) fn run() {
    let Ok(name) = std::env::var(ENV_NAME) else {
        return;
    };
    // Die with the test: a paused or busy child must not outlive a test that was killed.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let certs = PathBuf::from(std::env::var(ENV_CERTS).expect("certificate dir"));
    let data = PathBuf::from(std::env::var(ENV_DATA).expect("data dir"));
    let seeds = crate::common::seeds_from_env(ENV_SEEDS);
    let listen = std::env::var(ENV_LISTEN)
        .ok()
        .map(|s| s.parse().expect("listen address"));
    let history = PathBuf::from(std::env::var(ENV_HISTORY).expect("history file"));
    let nodes: Vec<String> = std::env::var(ENV_NODES)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let seed: u64 = std::env::var(ENV_WORK_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    crate::common::log_from_env(ENV_LOG);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let node = Node::new(NodeConfig::new(&name)).expect("node");
        let cert = NodeCert::load(&certs, &name).expect("certificate");
        let mut config = ClusterConfig::new("chaos");
        config.down = DownDecision::External;
        config.seeds = seeds;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        let cluster = Cluster::start(&node, config, &cert)
            .await
            .expect("cluster service");
        say(&format!("LISTENING {}", cluster.local_addr()));
        let mut settings = RegistryConfig::new(&data);
        settings.bootstrap = std::env::var(ENV_BOOTSTRAP).is_ok();
        let registry = Registry::start(&cluster, settings).await.expect("registry");
        let incarnation = node.id().incarnation();
        let work = Arc::new(Work {
            node,
            registry: registry.clone(),
            history: History::open(&history),
            me: name.clone(),
            incarnation,
            quiet: AtomicBool::new(false),
            writing: tokio::sync::Mutex::new(()),
        });
        say(&format!("READY {} {incarnation}", cluster.local_addr()));

        let mut rng = fastrand::Rng::with_seed(seed ^ incarnation);
        tokio::spawn(hold(work.clone(), MUTEX, Some((5, 150)), rng.u64(..)));
        tokio::spawn(hold(work.clone(), SINGLETON, None, rng.u64(..)));
        tokio::spawn(name_and_lookups(work.clone(), nodes));
        tokio::spawn(write(work.clone(), rng.u64(..)));
        tokio::spawn(leadership(work.clone()));
        tokio::spawn(async move {
            // As `ensemble node`: a node the cluster declared down exits, to be started again
            // as a new incarnation.
            while !registry.is_expired() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            say("EXPIRED");
            std::process::exit(3);
        });

        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let work = work.clone();
            tokio::spawn(async move {
                let mut words = line.split_whitespace();
                let id = words.next().unwrap_or("?").to_owned();
                let op = words.next().unwrap_or("").to_owned();
                let args: Vec<String> = words.map(str::to_owned).collect();
                let answer = command(&work, &op, &args).await;
                say(&format!("R {id} {}", answer.replace('\n', " ")));
            });
        }
        // Standard input closed: the test is done with this node.
        std::process::exit(0);
    });
}

async fn command(work: &Work, op: &str, args: &[String]) -> String {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let registry = &work.registry;
    match op {
        "leader" => match registry.voters().await {
            Ok(voters) => format!(
                "leader {} voters {}",
                registry.leader().unwrap_or_default(),
                voters.join(",")
            ),
            Err(e) => format!("err {e}"),
        },
        "holder" => {
            let lock = registry.lock_info(arg(0)).unwrap_or_default();
            let waiters: Vec<String> = lock
                .waiters
                .iter()
                .map(|w| format!("{}/{}", w.node, w.id))
                .collect();
            match lock.holder {
                Some((holder, token)) => format!(
                    "held {} {token} by {}/{} waiters [{}]",
                    holder.node.name(),
                    holder.node,
                    holder.id,
                    waiters.join(" ")
                ),
                None => format!("none waiters [{}]", waiters.join(" ")),
            }
        }
        "quiet" => {
            work.quiet.store(true, Ordering::SeqCst);
            let _idle = work.writing.lock().await;
            "ok".into()
        }
        "dump" => match registry.get_prefix(arg(0)).await {
            Ok(pairs) => {
                let mut text = String::new();
                for (key, kv) in &pairs {
                    let value = String::from_utf8_lossy(&kv.value);
                    text.push_str(&format!("{key} {value} {} {}\n", kv.modified, kv.version));
                }
                match std::fs::write(arg(1), text) {
                    Ok(()) => format!("ok {}", pairs.len()),
                    Err(e) => format!("err {e}"),
                }
            }
            Err(e) => format!("err {e}"),
        },
        other => format!("err unknown op {other:?}"),
    }
}

/// Takes `lock` over and over: holds it a random number of milliseconds in `hold_ms`, or
/// (`None`) until it is lost.
async fn hold(work: Arc<Work>, lock: &'static str, hold_ms: Option<(u64, u64)>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (me, inc) = (&work.me, work.incarnation);
    loop {
        let asked = micros();
        let lease = match work.registry.lock(lock, Duration::from_secs(3)).await {
            Ok(lease) => lease,
            Err(_) => {
                // No quorum, fenced, or the line was long: try again shortly.
                tokio::time::sleep(Duration::from_millis(rng.u64(20..100))).await;
                continue;
            }
        };
        let token = lease.token();
        let start = micros();
        if lease.is_lost() {
            // Fenced between the grant and now: never relied on.
            continue;
        }
        work.history
            .record(format!("acq {lock} {token} {me} {inc} {start} {asked}"));
        let until = hold_ms.map(|(lo, hi)| start + u128::from(rng.u64(lo..hi)) * 1000);
        let mut last = start;
        let reason = loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = micros();
            if lease.is_lost() {
                break "lost";
            }
            last = now;
            if until.is_some_and(|until| now >= until) {
                break "released";
            }
        };
        work.history
            .record(format!("end {lock} {token} {me} {inc} {last} {reason}"));
        if reason == "released" {
            // A release that fails is made again by this node (see docs/registry.md); the
            // holder goes on either way.
            let _ = lease.release().await;
        }
    }
}

/// Registers `svc.<me>`, then resolves every node's name every 100 ms from this node's copy,
/// recording what each resolves to. Skipped while this node is fenced (its copy may be
/// stale then, and it knows it).
async fn name_and_lookups(work: Arc<Work>, nodes: Vec<String>) {
    let sink = work.node.spawn(Sink).expect("spawn the named actor");
    let own = format!("svc.{}", work.me);
    while work.registry.register(&own, &sink).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if work.registry.is_fenced() {
            continue;
        }
        for node in &nodes {
            let name = format!("svc.{node}");
            let at = micros();
            if let Ok(Some(actor)) = work.registry.whereis::<SinkMsg>(&name) {
                let holder = actor.id().node();
                work.history.record(format!(
                    "look {at} {} {name} {} {}",
                    work.me,
                    holder.name(),
                    holder.incarnation()
                ));
            }
        }
    }
}

/// Records when this node starts and stops leading the registry (polled every 10 ms, so a
/// start is recorded up to 10 ms late, and so is a stop).
async fn leadership(work: Arc<Work>) {
    let (me, inc) = (&work.me, work.incarnation);
    let mut leading = false;
    loop {
        let now = work.registry.leads();
        if now != leading {
            leading = now;
            let what = if now { "lead" } else { "unlead" };
            work.history
                .record(format!("{what} {} {me} {inc}", micros()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Puts a new key every 20-60 ms, recording those acknowledged.
async fn write(work: Arc<Work>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for seq in 0u64.. {
        tokio::time::sleep(Duration::from_millis(rng.u64(20..60))).await;
        let _writing = work.writing.lock().await;
        if work.quiet.load(Ordering::SeqCst) {
            return;
        }
        let key = format!("{KEYS}{}-{}-{seq}", work.me, work.incarnation);
        let value = format!("v{}", rng.u32(..));
        if let Ok(revision) = work.registry.put(&key, value.clone()).await {
            work.history.record(format!("ack {key} {value} {revision}"));
        }
    }
}
