//! Remote messaging between two processes on loopback (QUIC with mutual TLS): tell throughput
//! with 64-byte payloads from 1 and 8 senders, sequential ask latency (p50, p99), and the time
//! from `kill -9` of a node to `Down` at its peer with default settings.
//!
//! Run: `cargo bench --bench remote`. The benchmark starts its peer nodes by running itself
//! again as a child process. With `ENSEMBLE_BENCH_RUNTIME=current_thread` both processes use a
//! current-thread tokio runtime instead of a multi-thread one (no wake-ups across threads).
//! Figures: docs/performance.md.
#![allow(missing_docs)]

#[path = "common/runtime.rs"]
mod runtime;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ensemble::NodeId;
use ensemble::cluster::{Cluster, ClusterConfig, MemberEvent};
use ensemble::prelude::*;
use ensemble::transport::certs::{ClusterCa, NodeCert};
use serde::{Deserialize, Serialize};

const TELLS: u64 = 200_000;
const ASKS: usize = 20_000;
const KILLS: usize = 5;

#[derive(Serialize, Deserialize)]
enum SinkMsg {
    /// Start counting from zero; acknowledged at once.
    Reset(ReplyTo<()>),
    Item(String),
    /// Answer once `n` items have arrived since the reset.
    Done(u64, ReplyTo<u64>),
}

/// Counts items and answers once the expected number has arrived.
struct Sink {
    seen: u64,
    expected: u64,
    done: Option<ReplyTo<u64>>,
}

impl Sink {
    fn check(&mut self) {
        if self.seen >= self.expected
            && let Some(done) = self.done.take()
        {
            let _ = done.send(self.seen);
        }
    }
}

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, msg: SinkMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            SinkMsg::Reset(ack) => {
                self.seen = 0;
                self.expected = u64::MAX;
                let _ = ack.send(());
            }
            SinkMsg::Item(payload) => {
                std::hint::black_box(payload);
                self.seen += 1;
                self.check();
            }
            SinkMsg::Done(n, reply) => {
                self.expected = n;
                self.done = Some(reply);
                self.check();
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Ping(u64, ReplyTo<u64>);

struct Echo;

impl Actor for Echo {
    type Msg = Ping;

    async fn handle(&mut self, Ping(n, reply): Ping, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = reply.send(n);
        Ok(())
    }
}

/// The child: a node with a sink and an echo, joined to the parent, until stdin closes.
fn child(name: String) {
    let certs = std::env::var("ENSEMBLE_BENCH_CERTS").expect("certs");
    let seed: SocketAddr = std::env::var("ENSEMBLE_BENCH_SEED")
        .expect("seed")
        .parse()
        .expect("seed");
    let rt = runtime::runtime();
    rt.block_on(async move {
        let node = Node::new(NodeConfig::new(&name)).expect("node");
        let cert = NodeCert::load(std::path::Path::new(&certs), &name).expect("cert");
        let sink = node
            .spawn_with(
                Sink {
                    seen: 0,
                    expected: u64::MAX,
                    done: None,
                },
                SpawnOptions::new().mailbox_capacity(1 << 16),
            )
            .expect("sink");
        node.register_remote("sink", &sink).expect("register");
        let echo = node.spawn(Echo).expect("echo");
        node.register_remote("echo", &echo).expect("register");
        let mut config = ClusterConfig::new("bench");
        config.seeds = vec![seed];
        let _cluster = Cluster::start(&node, config, &cert).await.expect("join");
        println!("JOINED");
        let _ = std::io::stdout().flush();
        tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {})
            .await
            .ok();
    });
}

struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a peer node and waits (without blocking the runtime) until it has joined.
async fn start_peer(name: &str, certs: &std::path::Path, seed: SocketAddr) -> Peer {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("ENSEMBLE_BENCH_CHILD", name)
        .env("ENSEMBLE_BENCH_CERTS", certs)
        .env("ENSEMBLE_BENCH_SEED", seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peer");
    let stdout = child.stdout.take().expect("stdout");
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("JOINED") => break,
                Some(_) => {}
                None => panic!("peer {name} exited before joining"),
            }
        }
    })
    .await
    .expect("peer start");
    Peer(child)
}

/// The member `name`, once this node counts it in: a peer says it joined as soon as it has
/// sent its `Ready`, a moment before this node has read it.
async fn member_named(cluster: &Cluster, name: &str) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(member) = cluster
            .members()
            .into_iter()
            .find(|m| m.node.name() == name)
        {
            return member.node;
        }
        assert!(Instant::now() < deadline, "{name} never joined");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    if let Ok(name) = std::env::var("ENSEMBLE_BENCH_CHILD") {
        child(name);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ClusterCa::generate("bench").expect("CA");
    ca.save(dir.path()).expect("save");
    let mut names = vec!["bench-a".to_owned(), "bench-b".to_owned()];
    names.extend((0..KILLS).map(|i| format!("victim-{i}")));
    for name in &names {
        ca.issue(name)
            .expect("issue")
            .save(dir.path())
            .expect("save");
    }
    let rt = runtime::runtime();
    rt.block_on(async {
        let node = Node::new(NodeConfig::new("bench-a")).unwrap();
        let cert = NodeCert::load(dir.path(), "bench-a").unwrap();
        let cluster = Cluster::start(&node, ClusterConfig::new("bench"), &cert).await.unwrap();
        let _peer = start_peer("bench-b", dir.path(), cluster.local_addr()).await;
        let b = member_named(&cluster, "bench-b").await;
        let sink = cluster.whereis::<SinkMsg>(&b, "sink").await.unwrap();
        let echo = cluster.whereis::<Ping>(&b, "echo").await.unwrap();
        let payload = "x".repeat(64);

        for senders in [1u64, 8] {
            for round in 0..3 {
                sink.ask(SinkMsg::Reset, Duration::from_secs(10)).await.unwrap();
                let start = Instant::now();
                let mut tasks = Vec::new();
                for _ in 0..senders {
                    let sink = sink.clone();
                    let payload = payload.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..TELLS / senders {
                            sink.tell(SinkMsg::Item(payload.clone())).await.unwrap();
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                let seen = sink
                    .ask(|r| SinkMsg::Done(TELLS, r), Duration::from_secs(120))
                    .await
                    .unwrap();
                let elapsed = start.elapsed();
                println!(
                    "remote tell, {senders} sender(s), 64-byte payload: {:.0} msgs/s ({seen} in {elapsed:?}, round {round})",
                    seen as f64 / elapsed.as_secs_f64()
                );
            }
        }

        let mut latencies = Vec::with_capacity(ASKS);
        for i in 0..ASKS as u64 {
            let start = Instant::now();
            let n = echo.ask(|r| Ping(i, r), Duration::from_secs(5)).await.unwrap();
            latencies.push(start.elapsed());
            assert_eq!(n, i);
        }
        latencies.sort();
        println!(
            "remote ask round trip ({ASKS} sequential): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );

        let mut detections = Vec::new();
        for i in 0..KILLS {
            let name = format!("victim-{i}");
            let mut events = cluster.subscribe();
            let mut victim = start_peer(&name, dir.path(), cluster.local_addr()).await;
            let id = member_named(&cluster, &name).await;
            // Let heartbeats settle into their rhythm before the kill.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let killed = Instant::now();
            let _ = victim.0.kill();
            loop {
                match events.recv().await {
                    Ok(MemberEvent::Down(down)) if down == id => break,
                    Ok(_) => {}
                    Err(err) => panic!("events: {err}"),
                }
            }
            detections.push(killed.elapsed());
        }
        detections.sort();
        println!(
            "kill -9 to Down at the peer (default settings, {KILLS} trials): median {:?}, min {:?}, max {:?}",
            detections[detections.len() / 2],
            detections[0],
            detections[detections.len() - 1]
        );
    });
}
