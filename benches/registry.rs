//! The registry on three voters in three processes on loopback, driven by a fourth process
//! (this one, a client node that never votes), with the workloads etcd 3.4 was measured with:
//! sequential and concurrent 64-byte puts, name registrations, lock acquire+release cycles
//! (one client, eight contending), lease grant + keepalive, linearizable and cached `whereis`,
//! and the time from `kill -9` of the Raft leader to the next acknowledged put.
//!
//! Run: `cargo bench --bench registry`. The voters are this binary started again with
//! `ENSEMBLE_BENCH_VOTER` set; their data dirs are in a temporary directory on the same disk
//! as everything else, with fsync on. `ENSEMBLE_BENCH_VOTERS=1` runs one voter instead of
//! three, which shows what replication costs. The processes share the machine's cores: each
//! runs a multi-thread tokio runtime with its share of them as worker threads (one each on two
//! cores), as docs/operations.md advises for nodes sharing a machine;
//! `ENSEMBLE_BENCH_WORKERS=<n>` gives each `n` instead (`2` is tokio's default here), and
//! `ENSEMBLE_BENCH_RUNTIME=current_thread` a current-thread runtime. `ENSEMBLE_BENCH_ONLY=<text>`
//! runs only the workloads whose name contains the text (to profile one; `a|b` for those
//! that contain either). `ENSEMBLE_BENCH_LOG=<filter>` makes each voter log at that filter
//! (`openraft=debug`, say) to `<name>.log` in the working directory, a restarted voter
//! appending to its file, and this process to `client.log`; `ENSEMBLE_BENCH_KEEP` keeps that
//! directory and prints its path.
//! Figures: docs/performance.md.
#![allow(missing_docs)]

#[path = "common/child.rs"]
mod child;
#[path = "common/child_env.rs"]
mod child_env;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/runtime.rs"]
mod runtime;
#[path = "common/work_dir.rs"]
mod work_dir;
#[path = "common/workload.rs"]
mod workload;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig, VOTER_LABEL};
use ensemble::transport::certs::{ClusterCa, NodeCert};
use serde::{Deserialize, Serialize};

use child::ChildProcess;
use workload::{
    CONCURRENT_PUTS, CONTENDERS, FAILOVERS, IN_FLIGHT, SEQUENTIAL, concurrent, selected, sequential,
};

const CONTENDED_CYCLES: usize = 4_000;
const CACHED_LOOKUPS: usize = 1_000_000;
const VOTERS: [&str; 3] = ["a", "b", "c"];

#[derive(Serialize, Deserialize)]
struct Ping(ReplyTo<()>);

struct Target;

impl Actor for Target {
    type Msg = Ping;

    async fn handle(&mut self, Ping(reply): Ping, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = reply.send(());
        Ok(())
    }
}

/// Starts a node with the registry. Voters print `LISTENING <addr>` then `READY`.
async fn start_node(
    name: &str,
    dir: &Path,
    seeds: Vec<std::net::SocketAddr>,
    voter: bool,
) -> (Node, Cluster, Registry) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let cert = NodeCert::load(dir, name).expect("cert");
    let mut config = ClusterConfig::new("bench");
    config.down = DownDecision::External;
    let bootstrap = seeds.is_empty();
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
    settings.voters = voter_count();
    let registry = Registry::start(&cluster, settings).await.expect("registry");
    (node, cluster, registry)
}

/// How many voters: 3, or `ENSEMBLE_BENCH_VOTERS` (1 shows what replication costs).
fn voter_count() -> usize {
    std::env::var("ENSEMBLE_BENCH_VOTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A voter process: runs until its standard input closes.
fn voter(name: String) {
    let dir = std::path::PathBuf::from(std::env::var("ENSEMBLE_BENCH_DIR").expect("dir"));
    let seeds = child_env::seeds();
    child_env::log_if_asked();
    let rt = runtime::sharing_with(voter_count() + 1);
    rt.block_on(async move {
        let _node = start_node(&name, &dir, seeds, true).await;
        println!("READY");
        let _ = std::io::stdout().flush();
        tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {})
            .await
            .ok();
    });
}

/// Starts voter `name` in a child process and waits until it listens.
fn start_voter(name: &str, dir: &Path, seeds: &[String]) -> ChildProcess {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command
        .env("ENSEMBLE_BENCH_VOTER", name)
        .env("ENSEMBLE_BENCH_DIR", dir)
        .env("ENSEMBLE_BENCH_SEEDS", seeds.join(","));
    // Logging costs time on the paths measured, so voters log only when asked to.
    if std::env::var_os("ENSEMBLE_BENCH_LOG").is_some() {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("log file");
        command.stderr(log);
    } else {
        command.stderr(Stdio::null());
    }
    ChildProcess::spawn(name, command)
}

fn main() {
    if let Ok(name) = std::env::var("ENSEMBLE_BENCH_VOTER") {
        voter(name);
        return;
    }
    let (dir, keep) = work_dir::work_dir("ensemble-registry-bench-");
    if keep {
        println!("working directory (kept): {}", dir.path().display());
    }
    if let Ok(filter) = std::env::var("ENSEMBLE_BENCH_LOG") {
        let log = std::fs::File::create(dir.path().join("client.log")).expect("log file");
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::sync::Mutex::new(log))
            .with_ansi(false)
            .init();
    }
    let ca = ClusterCa::generate("bench").expect("CA");
    ca.save(dir.path()).expect("save");
    for name in VOTERS.iter().chain(&["client"]) {
        ca.issue(name)
            .expect("issue")
            .save(dir.path())
            .expect("save");
    }
    let mut voters = vec![start_voter("a", dir.path(), &[])];
    let seeds = vec![voters[0].addr.clone()];
    for name in &VOTERS[1..voter_count()] {
        voters.push(start_voter(name, dir.path(), &seeds));
    }
    for voter in &mut voters {
        voter.wait("READY");
    }
    workload::count_cpu_of(voters.iter().map(|v| v.process.id()));
    let rt = runtime::sharing_with(voter_count() + 1);
    rt.block_on(async move {
        let seeds = vec![seeds[0].parse().expect("addr")];
        let (node, _cluster, registry) = start_node("client", dir.path(), seeds, false).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while registry.voters().await.map(|v| v.len()).unwrap_or(0) < voter_count() {
            assert!(Instant::now() < deadline, "the voters never formed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{} voter(s) in as many processes, a client node in this one; fsync on; {}\n",
            voter_count(),
            runtime::describe_sharing(voter_count() + 1)
        );
        workload::report_idle_cost().await;
        let value = vec![b'x'; 64];

        let r = registry.clone();
        let v = value.clone();
        sequential("sequential puts, 64 B", SEQUENTIAL, |i| {
            let (r, v) = (r.clone(), v.clone());
            async move {
                r.put(&format!("seq/{i}"), v).await.expect("put");
            }
        })
        .await;

        let r = registry.clone();
        concurrent(
            &format!("puts, {IN_FLIGHT} in flight"),
            CONCURRENT_PUTS,
            IN_FLIGHT,
            move |_, i| {
                let (r, v) = (r.clone(), value.clone());
                async move {
                    r.put(&format!("par/{i}"), v).await.expect("put");
                }
            },
        )
        .await;

        let target = node.spawn(Target).expect("target");
        let r = registry.clone();
        sequential("name registration, sequential", SEQUENTIAL, |i| {
            let (r, target) = (r.clone(), target.clone());
            async move {
                r.register(&format!("name/{i}"), &target)
                    .await
                    .expect("register");
            }
        })
        .await;

        let r = registry.clone();
        sequential("lock acquire+release, sequential", SEQUENTIAL, |_| {
            let r = r.clone();
            async move {
                let lease = r
                    .lock("seq-lock", Duration::from_secs(10))
                    .await
                    .expect("lock");
                lease.release().await.expect("release");
            }
        })
        .await;

        let r = registry.clone();
        concurrent(
            &format!("lock acquire+release, {CONTENDERS} contending"),
            CONTENDED_CYCLES,
            CONTENDERS,
            move |_, _| {
                let r = r.clone();
                async move {
                    let lease = r
                        .lock("hot-lock", Duration::from_secs(30))
                        .await
                        .expect("lock");
                    lease.release().await.expect("release");
                }
            },
        )
        .await;

        let r = registry.clone();
        sequential("lease grant + keepalive, sequential", SEQUENTIAL, |i| {
            let r = r.clone();
            async move {
                let lease = r.try_lock(&format!("lease/{i}")).await.expect("grant");
                r.renew().await.expect("keepalive");
                std::mem::forget(lease);
            }
        })
        .await;

        let r = registry.clone();
        sequential("whereis, linearizable", SEQUENTIAL, |i| {
            let r = r.clone();
            async move {
                let found = r
                    .whereis_linearizable::<Ping>(&format!("name/{}", i % SEQUENTIAL))
                    .await
                    .expect("whereis");
                assert!(found.is_some() || !selected("name registration"));
            }
        })
        .await;

        if selected("whereis, cached") {
            let start = Instant::now();
            for i in 0..CACHED_LOOKUPS {
                let found = registry
                    .whereis::<Ping>(&format!("name/{}", i % SEQUENTIAL))
                    .expect("whereis");
                std::hint::black_box(found);
            }
            let per = start.elapsed() / CACHED_LOOKUPS as u32;
            println!(
                "{:<44} {:>9.0}/s   mean {:>8.3} µs (name formatting included)",
                "whereis, cached (local copy)",
                1.0 / per.as_secs_f64(),
                per.as_secs_f64() * 1e6
            );
            let name = "name/7".to_owned();
            let start = Instant::now();
            for _ in 0..CACHED_LOOKUPS {
                std::hint::black_box(registry.whereis::<Ping>(&name).expect("whereis"));
            }
            let per = start.elapsed() / CACHED_LOOKUPS as u32;
            println!(
                "{:<44} {:>9.0}/s   mean {:>8.3} µs",
                "whereis, cached, one name",
                1.0 / per.as_secs_f64(),
                per.as_secs_f64() * 1e6
            );
        }

        // Failover: kill -9 the leader, time the next acknowledged put, bring it back.
        if voter_count() < 3 || !selected("kill -9") {
            return;
        }
        let mut failovers = Vec::new();
        for trial in 0..FAILOVERS {
            // The leader this node last heard of. A concurrent call (a keepalive) that met a
            // voter not knowing the leader yet, one just restarted say, forgets it until the
            // next call: write again then.
            let leader = loop {
                registry.put("probe", b"x".to_vec()).await.expect("put");
                if let Some(leader) = registry.leader() {
                    break leader;
                }
            };
            let at = voters
                .iter()
                .position(|v| v.name == leader)
                .expect("a voter");
            let killed = Instant::now();
            voters[at].kill();
            loop {
                if registry
                    .put("probe", format!("{trial}").into_bytes())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            let took = killed.elapsed();
            failovers.push(took);
            println!(
                "failover {trial}: leader {leader} killed, next put acknowledged after {took:?}"
            );
            let seeds: Vec<String> = voters
                .iter()
                .filter(|v| v.name != leader)
                .map(|v| v.addr.clone())
                .collect();
            voters[at] = start_voter(&leader, dir.path(), &seeds);
            voters[at].wait("READY");
        }
        workload::report_failovers(failovers);
        drop(voters);
    });
}
