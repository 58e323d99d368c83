//! The floor under a replicated write on this machine: the messages and the fsyncs of a
//! registry put, with nothing else. No Raft, no actors, no serialization: a client, a leader
//! and two followers in four processes on loopback, speaking QUIC with the nodes' own mutual
//! TLS settings (`ensemble::transport::tls`), each process on a one-worker tokio runtime like
//! the registry benchmark's, each durable append a `write` into a file sized ahead and an
//! `fdatasync` on a thread of its own, as the registry's log writer does.
//!
//! A write is one of six shapes, run in alternating rounds so that the machine's noise falls
//! on all of them alike:
//! - `hop`: the client's request and the leader's answer, nothing else;
//! - `durable, 1 voter`: the leader appends and syncs before it answers;
//! - `3 voters, sync then replicate`: the leader syncs, then sends the entry to both followers,
//!   each of which syncs and acknowledges; the leader answers after the first acknowledgement
//!   (openraft 0.9's order: its leader replicates only what its own log has made durable);
//! - `3 voters, sync while replicating`: the leader sends the entry to the followers and syncs
//!   its own copy at the same time (etcd's order, and openraft 0.10's);
//! - `3 voters, a follower answers`: as the last, but the leader tells the followers when its
//!   own copy is on disk, and each follower answers the client itself once its copy and the
//!   leader's are (with three voters, a majority); the client takes the first answer. One hop
//!   fewer on the way back (the follower's acknowledgement still goes to the leader), for three
//!   datagrams more: the two notices, and the second follower's answer;
//! - `3 voters, the client counts copies`: the leader answers the client as soon as its own
//!   copy is on disk, each follower as soon as its copy is; the client takes the write as
//!   committed once it has the leader's answer and a follower's (with three voters, a
//!   majority). For two datagrams more: both followers' answers.
//!
//! Run: `cargo bench --bench write_floor`. `ENSEMBLE_BENCH_WRITES=<n>` sets the writes per
//! shape and round (default 1,000). Figures: docs/performance.md, "The registry".
#![allow(missing_docs)]

#[path = "common/child.rs"]
mod child;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/runtime.rs"]
mod runtime;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ensemble::transport::certs::{ClusterCa, NodeCert};
use ensemble::transport::tls;
use tokio::sync::{mpsc, oneshot};

use child::ChildProcess;

/// A request: its shape, its index, a 64-byte value (the registry benchmark's put).
const REQUEST: usize = 1 + 8 + 64;
/// An answer or an acknowledgement: the index it answers.
const ANSWER: usize = 8;
const ROUNDS: usize = 3;
/// The client and the leader, then the two followers.
const PROCESSES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Hop = 0,
    Durable = 1,
    SyncThenReplicate = 2,
    SyncWhileReplicating = 3,
    FollowerAnswers = 4,
    ClientCounts = 5,
}

/// The first byte of a message from the leader to a follower that says the leader's copy is on
/// disk up to the index that follows (the rest of the message as long as a request).
const LEADER_DURABLE: u8 = 0xff;

const SHAPES: [Shape; 6] = [
    Shape::Hop,
    Shape::Durable,
    Shape::SyncThenReplicate,
    Shape::SyncWhileReplicating,
    Shape::FollowerAnswers,
    Shape::ClientCounts,
];

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Hop => "hop (request and answer only)",
            Shape::Durable => "durable, 1 voter",
            Shape::SyncThenReplicate => "3 voters, sync then replicate",
            Shape::SyncWhileReplicating => "3 voters, sync while replicating",
            Shape::FollowerAnswers => "3 voters, a follower answers",
            Shape::ClientCounts => "3 voters, the client counts copies",
        }
    }

    fn from_byte(byte: u8) -> Shape {
        *SHAPES
            .iter()
            .find(|s| **s as u8 == byte)
            .unwrap_or_else(|| panic!("no shape numbered {byte}"))
    }
}

/// How far ahead the log's file is sized, as fjall sizes its journal files (64 MiB).
const LOG_PREALLOCATED: u64 = 64 * 1024 * 1024;

/// A log on its own thread: writes a record and syncs it, as the registry's log writer does.
///
/// The file is sized ahead of the writes (`set_len`, then `sync_all`), as fjall creates its
/// journal files, so that an `fdatasync` need not also carry a new file size to the disk: on
/// ext4 an append that grows the file costs about half as much again (docs/performance.md).
#[derive(Clone)]
struct Log(std::sync::mpsc::Sender<(Vec<u8>, oneshot::Sender<()>)>);

impl Log {
    fn open(path: &Path) -> Log {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open the log {}: {e}", path.display()));
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("floor-log".into())
            .spawn(move || {
                let mut sized = 0;
                let mut end = 0;
                for (record, done) in rx {
                    if end + record.len() as u64 > sized {
                        sized += LOG_PREALLOCATED;
                        file.set_len(sized).expect("size the log");
                        file.sync_all().expect("sync the log's size");
                    }
                    file.write_all_at(&record, end).expect("write");
                    end += record.len() as u64;
                    file.sync_data().expect("fdatasync");
                    let _ = done.send(());
                }
            })
            .expect("log thread");
        Log(tx)
    }

    async fn append(&self, record: &[u8]) {
        let (done, synced) = oneshot::channel();
        self.0.send((record.to_vec(), done)).expect("log thread");
        synced.await.expect("log thread");
    }
}

fn cert_of(dir: &Path, name: &str) -> NodeCert {
    NodeCert::load(dir, name).unwrap_or_else(|e| panic!("certificate of {name}: {e}"))
}

/// A server endpoint on an address the OS picks, printed as `LISTENING <addr>`.
fn listen(cert: &NodeCert) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::server(
        tls::server_config(cert).expect("server config"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("endpoint");
    endpoint.set_default_client_config(tls::client_config(cert).expect("client config"));
    println!(
        "LISTENING {}",
        endpoint.local_addr().expect("local address")
    );
    let _ = std::io::stdout().flush();
    endpoint
}

/// Accepts the connection of `who`.
async fn accept_connection(endpoint: &quinn::Endpoint, who: &str) -> quinn::Connection {
    let incoming = endpoint
        .accept()
        .await
        .unwrap_or_else(|| panic!("{who} never connected"));
    incoming
        .await
        .unwrap_or_else(|e| panic!("handshake with {who}: {e}"))
}

/// Accepts the one stream `who` opens on `conn` (it is seen once `who` writes to it).
async fn accept_stream(
    conn: &quinn::Connection,
    who: &str,
) -> (quinn::SendStream, quinn::RecvStream) {
    conn.accept_bi()
        .await
        .unwrap_or_else(|e| panic!("the stream of {who}: {e}"))
}

/// A follower: syncs every entry the leader sends and acknowledges it. In the shape where a
/// follower answers, it also answers the client once its copy and the leader's are on disk;
/// in the shape where the client counts copies, once its own copy is.
async fn follower(dir: &Path, name: &str) {
    let cert = cert_of(dir, name);
    let endpoint = listen(&cert);
    let log = Log::open(&dir.join(format!("{name}.log")));
    // The leader connects while it starts, the client once the leader is ready; each stream
    // shows only once its opener writes, the leader's with the first entry.
    let leader = accept_connection(&endpoint, "the leader").await;
    let client = accept_connection(&endpoint, "the client").await;
    let ((mut send, mut recv), (mut to_client, _)) = tokio::join!(
        accept_stream(&leader, "the leader"),
        accept_stream(&client, "the client")
    );
    let mut entry = [0u8; REQUEST];
    // The last entry this follower synced that the client waits for, and how far the leader's
    // copy is on disk.
    let (mut synced, mut leader_durable) = (None::<u64>, 0u64);
    while recv.read_exact(&mut entry).await.is_ok() {
        let index = u64::from_le_bytes(entry[1..1 + ANSWER].try_into().expect("8 bytes"));
        if entry[0] == LEADER_DURABLE {
            leader_durable = leader_durable.max(index);
        } else {
            log.append(&entry).await;
            let shape = Shape::from_byte(entry[0]);
            // The client waits for this notice; the leader's acknowledgement can follow it.
            if shape == Shape::ClientCounts
                && to_client.write_all(&index.to_le_bytes()).await.is_err()
            {
                return;
            }
            if send.write_all(&entry[1..1 + ANSWER]).await.is_err() {
                return;
            }
            if shape == Shape::FollowerAnswers {
                synced = Some(index);
            }
        }
        if let Some(index) = synced.filter(|index| *index <= leader_durable) {
            synced = None;
            if to_client.write_all(&index.to_le_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// The leader: answers the client's requests in the shape each names.
async fn leader(dir: &Path, followers: Vec<SocketAddr>) {
    let cert = cert_of(dir, "leader");
    let endpoint = listen(&cert);
    let log = Log::open(&dir.join("leader.log"));
    // The followers' acknowledgements, from both, in one queue: (follower, index).
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<(usize, u64)>();
    let mut replicas = Vec::new();
    for (at, addr) in followers.into_iter().enumerate() {
        let (conn, send, recv) = open_to_follower(&endpoint, addr).await;
        collect_indices(at, recv, acks_tx.clone());
        replicas.push((conn, send));
    }
    println!("READY");
    let _ = std::io::stdout().flush();
    let client = accept_connection(&endpoint, "the client").await;
    let (mut send, mut recv) = accept_stream(&client, "the client").await;
    let mut request = [0u8; REQUEST];
    while recv.read_exact(&mut request).await.is_ok() {
        let index = u64::from_le_bytes(request[1..1 + ANSWER].try_into().expect("8 bytes"));
        match Shape::from_byte(request[0]) {
            Shape::Hop => {}
            Shape::Durable => log.append(&request).await,
            Shape::SyncThenReplicate => {
                log.append(&request).await;
                for (_, replica) in &mut replicas {
                    replica.write_all(&request).await.expect("to a follower");
                }
                first_ack(&mut acks, index).await;
            }
            Shape::SyncWhileReplicating => {
                for (_, replica) in &mut replicas {
                    replica.write_all(&request).await.expect("to a follower");
                }
                tokio::join!(log.append(&request), first_ack(&mut acks, index));
            }
            Shape::FollowerAnswers => {
                for (_, replica) in &mut replicas {
                    replica.write_all(&request).await.expect("to a follower");
                }
                log.append(&request).await;
                let mut durable = request;
                durable[0] = LEADER_DURABLE;
                for (_, replica) in &mut replicas {
                    replica.write_all(&durable).await.expect("to a follower");
                }
                // The client's answer comes from a follower; the leader still hears of the
                // commit, as a Raft leader would.
                first_ack(&mut acks, index).await;
                continue;
            }
            Shape::ClientCounts => {
                for (_, replica) in &mut replicas {
                    replica.write_all(&request).await.expect("to a follower");
                }
                // Answered as soon as its own copy is on disk; the commit, below, as before.
                log.append(&request).await;
                if send.write_all(&index.to_le_bytes()).await.is_err() {
                    return;
                }
                first_ack(&mut acks, index).await;
                continue;
            }
        }
        if send.write_all(&index.to_le_bytes()).await.is_err() {
            return;
        }
    }
}

/// Connects to the follower at `addr` and opens a stream to it.
async fn open_to_follower(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = endpoint
        .connect(addr, "follower")
        .expect("connect")
        .await
        .expect("handshake with a follower");
    let (send, recv) = conn.open_bi().await.expect("stream");
    (conn, send, recv)
}

/// Forwards the indices that follower number `follower` sends on `recv` into `into`.
fn collect_indices(
    follower: usize,
    mut recv: quinn::RecvStream,
    into: mpsc::UnboundedSender<(usize, u64)>,
) {
    tokio::spawn(async move {
        let mut index = [0u8; ANSWER];
        while recv.read_exact(&mut index).await.is_ok() {
            let _ = into.send((follower, u64::from_le_bytes(index)));
        }
    });
}

/// Waits for the first follower's acknowledgement of `index`, passing over the slower
/// follower's acknowledgements of earlier entries.
async fn first_ack(acks: &mut mpsc::UnboundedReceiver<(usize, u64)>, index: u64) {
    while let Some((_, acked)) = acks.recv().await {
        if acked == index {
            return;
        }
    }
    panic!("the followers are gone");
}

fn spawn(role: &str, name: &str, dir: &Path, followers: &[String]) -> ChildProcess {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command
        .env("ENSEMBLE_FLOOR_ROLE", role)
        .env("ENSEMBLE_FLOOR_NAME", name)
        .env("ENSEMBLE_FLOOR_DIR", dir)
        .env("ENSEMBLE_FLOOR_FOLLOWERS", followers.join(","))
        .stderr(Stdio::inherit());
    ChildProcess::spawn(name, command)
}

fn child(role: &str) {
    let dir = std::path::PathBuf::from(std::env::var("ENSEMBLE_FLOOR_DIR").expect("dir"));
    let name = std::env::var("ENSEMBLE_FLOOR_NAME").expect("name");
    let followers: Vec<SocketAddr> = std::env::var("ENSEMBLE_FLOOR_FOLLOWERS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("follower address"))
        .collect();
    let rt = runtime::sharing_with(PROCESSES);
    rt.block_on(async move {
        let work = async {
            match role {
                "follower" => follower(&dir, &name).await,
                _ => leader(&dir, followers).await,
            }
        };
        // Ends with the benchmark: when its standard input closes.
        let stdin = tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {});
        tokio::select! {
            () = work => {}
            _ = stdin => {}
        }
    });
}

fn writes_per_round() -> usize {
    std::env::var("ENSEMBLE_BENCH_WRITES")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1_000)
}

fn main() {
    if let Ok(role) = std::env::var("ENSEMBLE_FLOOR_ROLE") {
        child(&role);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ClusterCa::generate("floor").expect("CA");
    for name in ["leader", "f1", "f2", "client"] {
        ca.issue(name)
            .expect("issue")
            .save(dir.path())
            .expect("save");
    }
    let followers = [
        spawn("follower", "f1", dir.path(), &[]),
        spawn("follower", "f2", dir.path(), &[]),
    ];
    let addrs: Vec<String> = followers.iter().map(|f| f.addr.clone()).collect();
    let mut leader = spawn("leader", "leader", dir.path(), &addrs);
    leader.wait("READY");
    let pids: Vec<u32> = followers
        .iter()
        .chain([&leader])
        .map(|p| p.process.id())
        .chain([std::process::id()])
        .collect();
    let writes = writes_per_round();
    println!(
        "{PROCESSES} processes on loopback, QUIC with mutual TLS, fdatasync on; {}; \
         {ROUNDS} rounds of {writes} sequential writes per shape\n",
        runtime::describe_sharing(PROCESSES)
    );

    let rt = runtime::sharing_with(PROCESSES);
    rt.block_on(async move {
        let cert = cert_of(dir.path(), "client");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(tls::client_config(&cert).expect("client config"));
        let addr: SocketAddr = leader.addr.parse().expect("leader address");
        let follower_addrs: Vec<SocketAddr> = addrs
            .iter()
            .map(|a| a.parse().expect("follower address"))
            .collect();
        let conn = endpoint
            .connect(addr, "leader")
            .expect("connect")
            .await
            .expect("handshake with the leader");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        // The followers' answers to the client, in the shapes that have them: (follower, index).
        let (answers_tx, mut follower_answers) = mpsc::unbounded_channel::<(usize, u64)>();
        let mut to_followers = Vec::new();
        for (at, addr) in follower_addrs.iter().enumerate() {
            let (conn, mut hello, answers) = open_to_follower(&endpoint, *addr).await;
            // The follower sees the stream once something is written to it.
            hello.write_all(b"h").await.expect("to a follower");
            collect_indices(at, answers, answers_tx.clone());
            to_followers.push((conn, hello));
        }
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); SHAPES.len()];
        let mut elapsed = [Duration::ZERO; SHAPES.len()];
        let mut reports = vec![Vec::new(); SHAPES.len()];
        let mut index = 0u64;
        let mut request = [b'x'; REQUEST];
        let mut answer = [0u8; ANSWER];
        for _ in 0..ROUNDS {
            for (at, shape) in SHAPES.iter().enumerate() {
                let cpu_before = cpu::read(&pids);
                let started = Instant::now();
                for _ in 0..writes {
                    index += 1;
                    request[0] = *shape as u8;
                    request[1..1 + ANSWER].copy_from_slice(&index.to_le_bytes());
                    let sent = Instant::now();
                    send.write_all(&request).await.expect("to the leader");
                    if *shape == Shape::FollowerAnswers {
                        first_ack(&mut follower_answers, index).await;
                    } else if *shape == Shape::ClientCounts {
                        let leader_copy = async {
                            recv.read_exact(&mut answer)
                                .await
                                .expect("the leader's answer");
                        };
                        tokio::join!(leader_copy, first_ack(&mut follower_answers, index));
                        assert_eq!(u64::from_le_bytes(answer), index, "answers come in order");
                    } else {
                        recv.read_exact(&mut answer)
                            .await
                            .expect("the leader's answer");
                        assert_eq!(u64::from_le_bytes(answer), index, "answers come in order");
                    }
                    latencies[at].push(sent.elapsed());
                }
                elapsed[at] += started.elapsed();
                reports[at].push(format!(
                    "{:.0}/s ({})",
                    writes as f64 / started.elapsed().as_secs_f64(),
                    cpu_before.describe_until(&cpu::read(&pids), writes)
                ));
            }
        }
        for (at, shape) in SHAPES.iter().enumerate() {
            let lat = &mut latencies[at];
            lat.sort();
            let total = lat.len() as f64 / elapsed[at].as_secs_f64();
            println!(
                "{:<36} {:>7.0}/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
                shape.name(),
                total,
                lat[lat.len() / 2].as_secs_f64() * 1e3,
                lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
            );
            println!("{:<36} rounds: {}", "", reports[at].join("; "));
        }
        conn.close(0u32.into(), b"done");
        for (conn, _) in to_followers {
            conn.close(0u32.into(), b"done");
        }
        endpoint.wait_idle().await;
    });
    drop(followers);
}
