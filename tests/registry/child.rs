//! A node in a child process running the registry, driven by commands on its standard input.
//!
//! Each command is a line `<id> <op> <args...>`; each answer a line `R <id> <words...>`, in
//! the order commands complete (commands run concurrently, so a waiting `lock` does not hold
//! up the others). Unprompted lines: `LISTENING <addr>` once its cluster endpoint listens,
//! `READY <addr>` once the registry started and its session is open, `DOWN <node>`
//! when a node is declared down, `LOST <lock> <token>` when a lease held here is lost. The
//! node exits when its standard input closes, so no child outlives its test.
//!
//! Operations: `register NAME`, `whereis NAME` (local copy), `whereis_lin NAME`, `join GROUP`,
//! `group GROUP`, `lock NAME MILLIS`, `trylock NAME`, `release NAME`, `put KEY VALUE`,
//! `get KEY`, `get_cached KEY` (local copy), `cas KEY EXPECTED VALUE`, `leader`, `raft` (this
//! node's term and log positions: `term T log I applied I snapshot I purged I`, `-` for
//! none, and its configuration's learners: `learners A,B` or `learners -`), `lockloop NAME
//! ROUNDS SEED` (acquire, hold a random few ms, release, ROUNDS times; answers
//! `R <id> held <token> <start> <end>...` in microseconds of the system clock), `leave`
//! (`Registry::leave`: a voter hands its vote over, then the session closes).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision, MemberEvent};
use ensemble::prelude::*;
use ensemble::registry::{Lease, Registry, RegistryConfig};
use ensemble::transport::certs::NodeCert;
use std::sync::Mutex;

use crate::util::{Sink, SinkMsg};

pub(crate) const ENV_NAME: &str = "ENSEMBLE_TEST_NODE";
pub(crate) const ENV_CERTS: &str = "ENSEMBLE_TEST_CERTS";
pub(crate) const ENV_DATA: &str = "ENSEMBLE_TEST_DATA";
pub(crate) const ENV_SEEDS: &str = "ENSEMBLE_TEST_SEEDS";
pub(crate) const ENV_BOOTSTRAP: &str = "ENSEMBLE_TEST_BOOTSTRAP";
pub(crate) const ENV_LOG: &str = "ENSEMBLE_TEST_LOG";
/// The node's `RegistryConfig::drift_margin`, if not the default.
pub(crate) const ENV_DRIFT_MARGIN: &str = "ENSEMBLE_TEST_DRIFT_MARGIN";
/// The node's `RegistryConfig::session_ttl` in milliseconds, if not the default.
pub(crate) const ENV_SESSION_TTL_MS: &str = "ENSEMBLE_TEST_SESSION_TTL_MS";
/// The node's `RegistryConfig::voter_grace` in milliseconds, if not the default.
pub(crate) const ENV_VOTER_GRACE_MS: &str = "ENSEMBLE_TEST_VOTER_GRACE_MS";
/// The node's `RegistryConfig::request_timeout` in milliseconds, if not the default.
pub(crate) const ENV_REQUEST_TIMEOUT_MS: &str = "ENSEMBLE_TEST_REQUEST_TIMEOUT_MS";
/// The node's `RegistryConfig::voters`, if not the default.
pub(crate) const ENV_VOTERS: &str = "ENSEMBLE_TEST_VOTERS";
/// The node's `RegistryConfig::snapshot_every`, if not the default.
pub(crate) const ENV_SNAPSHOT_EVERY: &str = "ENSEMBLE_TEST_SNAPSHOT_EVERY";
/// The node's `RegistryConfig::log_kept_after_snapshot`, if not the default.
pub(crate) const ENV_LOG_KEPT: &str = "ENSEMBLE_TEST_LOG_KEPT";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

pub(crate) fn run() {
    let Ok(name) = std::env::var(ENV_NAME) else {
        return;
    };
    let certs = PathBuf::from(std::env::var(ENV_CERTS).expect("certificate dir"));
    let data = PathBuf::from(std::env::var(ENV_DATA).expect("data dir"));
    let seeds = crate::common::seeds_from_env(ENV_SEEDS);
    crate::common::log_from_env(ENV_LOG);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let node = Node::new(NodeConfig::new(&name)).expect("node");
        let cert = NodeCert::load(&certs, &name).expect("certificate");
        let mut config = ClusterConfig::new("test");
        config.down = DownDecision::External;
        config.seeds = seeds;
        let cluster = Cluster::start(&node, config, &cert)
            .await
            .expect("cluster service");
        say(&format!("LISTENING {}", cluster.local_addr()));
        let mut events = cluster.subscribe();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let MemberEvent::Down(node) = event {
                    say(&format!("DOWN {}", node.name()));
                }
            }
        });
        let mut settings = RegistryConfig::new(&data);
        settings.bootstrap = std::env::var(ENV_BOOTSTRAP).is_ok();
        if let Ok(margin) = std::env::var(ENV_DRIFT_MARGIN) {
            settings.drift_margin = margin.parse().expect("a drift margin such as 0.4");
        }
        let millis = |var| {
            std::env::var(var).ok().map(|ms: String| {
                Duration::from_millis(ms.parse().expect("a number of milliseconds"))
            })
        };
        if let Some(ttl) = millis(ENV_SESSION_TTL_MS) {
            settings.session_ttl = ttl;
        }
        if let Some(grace) = millis(ENV_VOTER_GRACE_MS) {
            settings.voter_grace = grace;
        }
        if let Some(timeout) = millis(ENV_REQUEST_TIMEOUT_MS) {
            settings.request_timeout = timeout;
        }
        if let Ok(voters) = std::env::var(ENV_VOTERS) {
            settings.voters = voters.parse().expect("a number of voters");
        }
        if let Ok(every) = std::env::var(ENV_SNAPSHOT_EVERY) {
            settings.snapshot_every = every.parse().expect("a number of entries");
        }
        if let Ok(kept) = std::env::var(ENV_LOG_KEPT) {
            settings.log_kept_after_snapshot = kept.parse().expect("a number of entries");
        }
        let registry = Registry::start(&cluster, settings).await.expect("registry");
        say(&format!("READY {}", cluster.local_addr()));
        let driver = Arc::new(Driver {
            node,
            registry,
            leases: Mutex::new(HashMap::new()),
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
            let driver = driver.clone();
            tokio::spawn(async move {
                let mut words = line.split_whitespace();
                let id = words.next().unwrap_or("?").to_owned();
                let op = words.next().unwrap_or("").to_owned();
                let args: Vec<String> = words.map(str::to_owned).collect();
                let answer = driver.run(&op, &args).await;
                say(&format!("R {id} {answer}"));
            });
        }
    });
}

struct Driver {
    node: Node,
    registry: Registry,
    leases: Mutex<HashMap<String, Lease>>,
}

impl Driver {
    async fn run(&self, op: &str, args: &[String]) -> String {
        match self.try_run(op, args).await {
            Ok(answer) => answer,
            Err(err) => format!("err {}", err.replace('\n', " ")),
        }
    }

    fn keep(&self, lease: Lease) -> String {
        let token = lease.token();
        let name = lease.lock().to_owned();
        self.leases.lock().expect("leases").insert(name, lease);
        format!("granted {token}")
    }

    async fn try_run(&self, op: &str, args: &[String]) -> Result<String, String> {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let registry = &self.registry;
        match op {
            "register" => {
                let sink = self.node.spawn(Sink).map_err(|e| e.to_string())?;
                registry
                    .register(&arg(0), &sink)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("ok {}", sink.id()))
            }
            "whereis" | "whereis_lin" => {
                let found = if op == "whereis" {
                    registry.whereis::<SinkMsg>(&arg(0))
                } else {
                    registry.whereis_linearizable::<SinkMsg>(&arg(0)).await
                };
                match found.map_err(|e| e.to_string())? {
                    None => Ok("none".into()),
                    Some(actor) => {
                        let answer = actor
                            .ask(SinkMsg::Ping, Duration::from_secs(2))
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(format!("found {answer}"))
                    }
                }
            }
            "join" => {
                let sink = self.node.spawn(Sink).map_err(|e| e.to_string())?;
                registry
                    .join_group(&arg(0), &sink)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok("ok".into())
            }
            "group" => Ok(format!(
                "members {}",
                registry.group::<SinkMsg>(&arg(0)).len()
            )),
            "lock" | "trylock" => {
                let lease = if op == "lock" {
                    let millis = arg(1).parse().unwrap_or(5000);
                    registry.lock(&arg(0), Duration::from_millis(millis)).await
                } else {
                    registry.try_lock(&arg(0)).await
                }
                .map_err(|e| e.to_string())?;
                let (lock, token) = (lease.lock().to_owned(), lease.token());
                let watched = lease.lost();
                tokio::spawn(async move {
                    watched.await;
                    say(&format!("LOST {lock} {token}"));
                });
                Ok(self.keep(lease))
            }
            "release" => {
                let lease = self
                    .leases
                    .lock()
                    .expect("leases")
                    .remove(&arg(0))
                    .ok_or("not held here")?;
                lease.release().await.map_err(|e| e.to_string())?;
                Ok("ok".into())
            }
            "put" => registry
                .put(&arg(0), arg(1).into_bytes())
                .await
                .map(|rev| format!("ok {rev}"))
                .map_err(|e| e.to_string()),
            "get" => match registry.get(&arg(0)).await.map_err(|e| e.to_string())? {
                Some(kv) => Ok(format!(
                    "value {} {}",
                    String::from_utf8_lossy(&kv.value),
                    kv.modified
                )),
                None => Ok("none".into()),
            },
            "get_cached" => Ok(match registry.get_cached(&arg(0)) {
                Some(kv) => format!("value {}", String::from_utf8_lossy(&kv.value)),
                None => "none".into(),
            }),
            "raft" => {
                let status = registry.raft_status();
                let index = |at: Option<u64>| at.map_or("-".to_owned(), |i| i.to_string());
                let learners = if status.learners.is_empty() {
                    "-".to_owned()
                } else {
                    status.learners.join(",")
                };
                Ok(format!(
                    "term {} log {} applied {} snapshot {} purged {} learners {learners}",
                    status.term,
                    index(status.last_log_index),
                    index(status.last_applied),
                    index(status.snapshot),
                    index(status.purged)
                ))
            }
            "cas" => registry
                .compare_and_set(
                    &arg(0),
                    arg(1).parse().unwrap_or(0),
                    Some(arg(2).into_bytes()),
                )
                .await
                .map(|rev| format!("ok {rev}"))
                .map_err(|e| e.to_string()),
            "leader" => {
                let voters = registry.voters().await.map_err(|e| e.to_string())?;
                Ok(format!(
                    "leader {} voters {}",
                    registry.leader().unwrap_or_default(),
                    voters.join(",")
                ))
            }
            "lockloop" => {
                let rounds: usize = arg(1).parse().unwrap_or(10);
                let mut rng = fastrand::Rng::with_seed(arg(2).parse().unwrap_or(1));
                let mut held = Vec::new();
                for _ in 0..rounds {
                    let lease = registry
                        .lock(&arg(0), Duration::from_secs(30))
                        .await
                        .map_err(|e| e.to_string())?;
                    let start = micros();
                    tokio::time::sleep(Duration::from_micros(rng.u64(0..3000))).await;
                    let end = micros();
                    held.push(format!("{} {start} {end}", lease.token()));
                    lease.release().await.map_err(|e| e.to_string())?;
                }
                Ok(format!("held {}", held.join(" ")))
            }
            "leave" => registry
                .leave()
                .await
                .map(|()| "ok".to_owned())
                .map_err(|e| e.to_string()),
            other => Err(format!("unknown op {other:?}")),
        }
    }
}
