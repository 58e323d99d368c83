//! etcd 3.4 on this machine, as the registry's figures are compared with: three members in
//! three processes on loopback, with their data dirs on the same disk and fsync on (etcd's
//! default), driven from this process through etcd's Rust client with the workloads of
//! `cargo bench --bench registry`, printed the same way (rate, p50, p99, and the CPU time per
//! operation of the three members and this process together).
//!
//! The issue that set the registry's targets measured etcd on a machine of this kind once. The
//! machines' speed moves from day to day, so this runs the reference again, beside the
//! registry's benchmark, on the machine of the day.
//!
//! Needs `etcd` 3.4 and `protoc` (Debian: `apt-get install etcd-server protobuf-compiler`),
//! which is why it is a crate of its own, outside the workspace: neither the build nor the
//! tests need them. Run:
//!
//! ```text
//! cargo run --release --manifest-path benches/etcd/Cargo.toml
//! ```
//!
//! `ETCD_BIN=<path>` runs another etcd binary; `ENSEMBLE_BENCH_ONLY=<text>` runs only the
//! workloads whose name contains the text, as in the registry's benchmark.
//!
//! The workloads talk to the leader's endpoint only, which is etcd at its fastest: a
//! follower would forward each write to the leader, one hop more. The registry's client node
//! sends its writes to the leader too. The failover measure uses a client of all three
//! endpoints, as an application would, with the registry client's 250 ms per attempt.
#![allow(missing_docs)]

#[path = "../../common/cpu.rs"]
mod cpu;
#[path = "../../common/runtime.rs"]
mod runtime;
#[path = "../../common/workload.rs"]
mod workload;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LockOptions, PutOptions, Txn, TxnOp,
};

use workload::{
    CONCURRENT_PUTS, CONTENDERS, FAILOVERS, IN_FLIGHT, SEQUENTIAL, concurrent, selected, sequential,
};

/// Fewer than the registry's 4,000: etcd hands a lock over through a watch, about 80 times
/// a second here.
const CONTENDED_CYCLES: usize = 800;
/// How long one attempt of a put may take while the leader is being replaced.
const FAILOVER_ATTEMPT: Duration = Duration::from_millis(250);
const MEMBERS: [&str; 3] = ["a", "b", "c"];

/// One etcd member: its URLs, its data dir, and its process while it runs.
struct Member {
    name: &'static str,
    client_url: String,
    peer_url: String,
    dir: PathBuf,
    process: Option<Child>,
}

impl Member {
    fn new(name: &'static str, root: &Path) -> Member {
        Member {
            name,
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir: root.join(name),
            process: None,
        }
    }

    /// Starts the member; `initial_cluster` is `name=peer_url,…` of all three. A member that
    /// restarts on its data dir ignores it and rejoins with its log.
    fn start(&mut self, initial_cluster: &str) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("etcd's log file");
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let process = Command::new(&bin)
            .args(["--name", self.name])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-token", "bench"])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start `{bin}` ({e}): install etcd 3.4 \
                     (Debian: apt-get install etcd-server) or set ETCD_BIN"
                )
            });
        self.process = Some(process);
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").id()
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port the OS had free a moment ago (etcd takes its ports on the command line).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn options() -> Option<ConnectOptions> {
    options_timing_out_after(Duration::from_secs(2))
}

/// A call that meets a dead member waits out its timeout before the client tries another.
fn options_timing_out_after(timeout: Duration) -> Option<ConnectOptions> {
    Some(
        ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout),
    )
}

/// The member that leads, once a leader is known and its endpoint answers.
async fn leader(members: &[Member]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (at, member) in members.iter().enumerate() {
            if member.process.is_none() {
                continue;
            }
            let Ok(mut client) = Client::connect([&member.client_url], options()).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return at;
            }
        }
        assert!(Instant::now() < deadline, "etcd elected no leader in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `member` answers with the leader's applied index, after a restart.
async fn caught_up(member: &Member, leader: &Member) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = |url: String| async move {
            let mut client = Client::connect([url], options()).await.ok()?;
            client.status().await.ok().map(|s| s.raft_index())
        };
        if let (Some(own), Some(lead)) = (
            status(member.client_url.clone()).await,
            status(leader.client_url.clone()).await,
        ) && own >= lead
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd member {} did not catch up in 60 s",
            member.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes lock `name` for `lease`'s holder (waiting for it), then lets it go.
async fn lock_cycle(mut c: Client, name: &'static str, lease: i64) {
    let lock = c
        .lock(name, Some(LockOptions::new().with_lease(lease)))
        .await
        .expect("lock");
    c.unlock(lock.key()).await.expect("unlock");
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut members: Vec<Member> = MEMBERS.iter().map(|n| Member::new(n, dir.path())).collect();
    let initial_cluster = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    for member in &mut members {
        member.start(&initial_cluster);
    }
    workload::count_cpu_of(members.iter().map(Member::pid));
    let rt = runtime::sharing_with(MEMBERS.len() + 1);
    rt.block_on(async move {
        let at = leader(&members).await;
        let leader_url = members[at].client_url.clone();
        let client = Client::connect([&leader_url], options())
            .await
            .expect("connect to the leader");
        println!(
            "etcd: {} members in as many processes, this client in this one; fsync on; {}\n",
            MEMBERS.len(),
            runtime::describe_sharing(MEMBERS.len() + 1)
        );
        workload::report_idle_cost().await;
        let value = vec![b'x'; 64];

        let c = client.clone();
        let v = value.clone();
        sequential("sequential puts, 64 B", SEQUENTIAL, |i| {
            let (mut c, v) = (c.clone(), v.clone());
            async move {
                c.put(format!("seq/{i}"), v, None).await.expect("put");
            }
        })
        .await;

        let c = client.clone();
        let v = value.clone();
        concurrent(
            &format!("puts, {IN_FLIGHT} in flight"),
            CONCURRENT_PUTS,
            IN_FLIGHT,
            move |_, i| {
                let (mut c, v) = (c.clone(), v.clone());
                async move {
                    c.put(format!("par/{i}"), v, None).await.expect("put");
                }
            },
        )
        .await;

        // A name: a key put only if absent, bound to the registering client's lease, as
        // etcd's own election and service registration do.
        let session = client
            .clone()
            .lease_grant(600, None)
            .await
            .expect("lease")
            .id();
        let c = client.clone();
        let v = value.clone();
        sequential("name registration, sequential", SEQUENTIAL, |i| {
            let (mut c, v) = (c.clone(), v.clone());
            async move {
                let name = format!("name/{i}");
                let txn = Txn::new()
                    .when([Compare::create_revision(name.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        name,
                        v,
                        Some(PutOptions::new().with_lease(session)),
                    )]);
                assert!(c.txn(txn).await.expect("txn").succeeded(), "name taken");
            }
        })
        .await;

        let c = client.clone();
        sequential("lock acquire+release, sequential", SEQUENTIAL, |_| {
            let c = c.clone();
            lock_cycle(c, "seq-lock", session)
        })
        .await;

        if selected("contending") {
            // Eight clients, each with a connection and a lease of its own.
            let mut contenders = Vec::new();
            for _ in 0..CONTENDERS {
                let mut c = Client::connect([&leader_url], options())
                    .await
                    .expect("connect");
                let lease = c.lease_grant(600, None).await.expect("lease").id();
                contenders.push((c, lease));
            }
            concurrent(
                &format!("lock acquire+release, {CONTENDERS} contending"),
                CONTENDED_CYCLES,
                CONTENDERS,
                move |task, _| {
                    let (c, lease) = contenders[task].clone();
                    lock_cycle(c, "hot-lock", lease)
                },
            )
            .await;
        }

        let c = client.clone();
        sequential("lease grant + keepalive, sequential", SEQUENTIAL, |_| {
            let mut c = c.clone();
            async move {
                let lease = c.lease_grant(10, None).await.expect("grant").id();
                // Opening the stream sends the first keepalive and waits for its answer.
                c.lease_keep_alive(lease).await.expect("keepalive");
            }
        })
        .await;

        let c = client.clone();
        sequential("get, linearizable", SEQUENTIAL, |i| {
            let mut c = c.clone();
            async move {
                let found = c.get(format!("name/{}", i % SEQUENTIAL), None).await;
                let found = found.expect("get").kvs().len();
                assert!(found == 1 || !selected("name registration"));
            }
        })
        .await;

        if !selected("kill -9") {
            return;
        }
        let endpoints: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
        // The registry's client gives an attempt at a voter 250 ms; this gives etcd's the same.
        let client = Client::connect(&endpoints, options_timing_out_after(FAILOVER_ATTEMPT))
            .await
            .expect("connect");
        let mut failovers = Vec::new();
        for trial in 0..FAILOVERS {
            let at = leader(&members).await;
            let mut c = client.clone();
            // The client may still hold a broken connection to the member restarted last.
            while c.put("probe", "x", None).await.is_err() {}
            let killed = Instant::now();
            members[at].kill();
            while c.put("probe", format!("{trial}"), None).await.is_err() {}
            let took = killed.elapsed();
            failovers.push(took);
            println!(
                "failover {trial}: leader {} killed, next put acknowledged after {took:?}",
                members[at].name
            );
            members[at].start(&initial_cluster);
            let now = leader(&members).await;
            caught_up(&members[at], &members[now]).await;
        }
        workload::report_failovers(failovers);
    });
}
