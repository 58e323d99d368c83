//! `ensemble demo`: the guided tour, and the README's first command.
//!
//! 1. Makes a throwaway CA, node certificates and data dirs in a temp dir.
//! 2. Starts three nodes as child processes of this one (`ensemble node`, QUIC with mutual
//!    TLS on 127.0.0.1, each with its own Raft log on disk), and joins them itself as a
//!    fourth member that takes no app instances and never votes: the client.
//! 3. Deploys the example key-value app ([`ensemble::kv`]): a master singleton and three
//!    workers on three nodes.
//! 4. Writes keys through the app without pause, then kills the node running the master with
//!    `kill -9`, and records what the cluster does: the failure suspected, the session
//!    expired, the master's lease taken over (with a greater fencing token), its name
//!    re-resolved, writes acknowledged again to the partitions whose primary was on the
//!    killed node.
//! 5. Reads back every acknowledged write, prints the timeline and a summary, stops the nodes
//!    and removes the temp dir. Ctrl-C at any point does the same.
//!
//! It exits 0 when every acknowledged write reads back, the master runs again on another
//! node under a lease with a greater fencing token, and a write to a partition whose primary
//! was on the killed node was acknowledged after the kill.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ensemble::cluster::MemberEvent;
use ensemble::host::{Host, HostConfig};
use ensemble::kv::{self, KvClient};
use ensemble::supervisor::app::{AppSpec, Apps};
use ensemble::supervisor::singleton;
use ensemble::transport::certs::ClusterCa;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::CliResult;
use super::progress::{PROGRESS_EVERY, with_progress};

/// `ensemble demo`.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the temp dir (certificates, data dirs, node logs) to look at afterwards.
    #[arg(long)]
    keep: bool,
    /// How long to write before the kill, in seconds (at most 300: every write is kept to be
    /// read back).
    #[arg(long, default_value_t = 3, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=300))]
    warmup_secs: u64,
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The client member this process runs.
const CLIENT: &str = "demo-client";
/// The worker threads of each process: the three nodes and this one share the machine, and a
/// node with more threads than its share of the cores spends its time waking them
/// (docs/operations.md, "Several nodes on one machine").
fn threads_per_process() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / (NODES.len() + 1)).max(1)
}

/// How long each stage may take before the demo gives up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The keys the demo writes, `key-0` to `key-499`, overwritten in turn.
const KEYS: usize = 500;

pub(crate) fn run(args: DemoArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads_per_process())
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let dir = tempfile::Builder::new()
            .prefix("ensemble-demo-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut demo = Demo {
            started: Instant::now(),
            dir: dir.path().to_owned(),
            nodes: Vec::new(),
            client: None,
        };
        let outcome = tokio::select! {
            outcome = demo.run(&args) => outcome,
            _ = tokio::signal::ctrl_c() => {
                demo.say("interrupted: stopping every node and removing the temp dir");
                Err("interrupted".to_owned())
            }
        };
        tokio::select! {
            () = demo.clean_up() => {}
            _ = tokio::signal::ctrl_c() => {
                println!(
                    "interrupted again: exiting at once; the nodes stop as their standard input closes, and their temp dir {} stays (remove it once they have)",
                    demo.dir.display()
                );
                std::process::exit(130);
            }
        }
        if args.keep {
            let kept = dir.keep();
            demo.say(&format!(
                "kept {} (certificates, data dirs, node logs)",
                kept.display()
            ));
        } else {
            drop(dir);
        }
        outcome
    })
}

/// A node running as a child process.
struct NodeProcess {
    name: String,
    process: Child,
    /// Closing it makes the node leave and stop (`--exit-with-stdin`).
    stdin: Option<ChildStdin>,
    pid: u32,
    cluster: SocketAddr,
    admin: String,
}

struct Demo {
    started: Instant,
    dir: PathBuf,
    nodes: Vec<NodeProcess>,
    client: Option<Host>,
}

/// One write's outcome.
struct Write {
    key: String,
    value: String,
    sent: Instant,
    done: Instant,
    ok: bool,
}

impl Demo {
    fn say(&self, line: &str) {
        println!("[{:>6.2}s] {line}", self.started.elapsed().as_secs_f64());
    }

    async fn run(&mut self, args: &DemoArgs) -> CliResult {
        println!(
            "ensemble demo: three nodes on this machine, the example key-value app, and the node \
             running its master killed with kill -9.\n"
        );
        // 1. Certificates.
        let certs = self.dir.join("certs");
        let ca = ClusterCa::generate("demo").map_err(|e| e.to_string())?;
        for name in NODES.iter().chain([&CLIENT]) {
            ca.issue(name)
                .and_then(|cert| cert.save(&certs))
                .map_err(|e| e.to_string())?;
        }
        self.say(&format!(
            "made a throwaway CA and 4 node certificates in {}",
            certs.display()
        ));

        // 2. Three nodes, then this process as a client member.
        for name in NODES {
            let seed = self.nodes.first().map(|n| n.cluster);
            let node = self.start_node(name, seed).await?;
            self.say(&format!(
                "node {} up (pid {}): cluster {}, admin/dashboard {}",
                node.name, node.pid, node.cluster, node.admin
            ));
            self.nodes.push(node);
        }
        let mut config = HostConfig::new(
            CLIENT,
            ensemble::transport::certs::NodeCert::load(&certs, CLIENT)
                .map_err(|e| e.to_string())?,
            self.dir.join(CLIENT),
        );
        config.cluster = "demo".into();
        config.seeds = vec![self.nodes[0].cluster];
        config.apps = false;
        config.labels.insert("registry.voter".into(), "no".into());
        let client = Host::start(config, |_| {})
            .await
            .map_err(|e| e.to_string())?;
        let registry = client.registry.clone();
        let cluster = client.cluster.clone();
        let node = client.node.clone();
        self.client = Some(client);
        wait_for("all four members to see each other", || {
            cluster.members().len() >= NODES.len() && registry.sessions().len() > NODES.len()
        })
        .await?;
        self.say(&format!(
            "this process joined as member {CLIENT} (no app instances, not a voter); registry leader {}",
            registry.leader().unwrap_or_else(|| "unknown".into())
        ));

        // 3. The app.
        let spec = AppSpec::from_toml(kv::APP_SPEC).map_err(|e| e.to_string())?;
        Apps::new(&node)
            .map_err(|e| e.to_string())?
            .deploy(&spec)
            .await
            .map_err(|e| e.to_string())?;
        self.say("deployed app kv: a master singleton and 3 workers (examples/apps/kv.toml)");
        let kv = KvClient::new(registry.clone())
            .with_attempt_timeout(Duration::from_millis(500))
            .with_deadline(Duration::from_secs(15));
        let deadline = Instant::now() + STAGE_TIMEOUT;
        let settled = async {
            loop {
                match kv.status().await {
                    Ok(s) if s.assigned == s.partitions && s.replicated == s.partitions => {
                        return Ok(s);
                    }
                    _ if Instant::now() > deadline => {
                        return Err(format!(
                            "app kv did not settle in {STAGE_TIMEOUT:?}; node logs are in {} (run with --keep)",
                            self.dir.display()
                        ));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let status = with_progress(settled, PROGRESS_EVERY, |waited| {
            self.say(&format!(
                "still waiting for app kv to place every partition and its backup ({} s)",
                waited.as_secs()
            ))
        })
        .await?;
        let master = registry
            .name_holder(kv::MASTER_NAME)
            .ok_or("the kv master has no name")?;
        let master_node = master.id.node().name().to_owned();
        self.say(&format!(
            "app kv running: master on {master_node}, {} workers, {}/{} partitions with a backup",
            status.workers.len(),
            status.replicated,
            status.partitions
        ));

        // 4. Writes without pause, one writer per partition (so those whose primaries live
        // go on while the killed node's wait); the kill.
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let stop_writing = Arc::new(AtomicBool::new(false));
        let mut keys_of: BTreeMap<kv::PartitionId, Vec<String>> = BTreeMap::new();
        for n in 0..KEYS {
            let key = format!("key-{n}");
            keys_of
                .entry(kv::partition_of(&key, status.partitions))
                .or_default()
                .push(key);
        }
        let writers: Vec<_> = keys_of
            .into_values()
            .map(|keys| {
                tokio::spawn(write_loop(
                    kv.clone(),
                    keys,
                    writes.clone(),
                    stop_writing.clone(),
                ))
            })
            .collect();
        let warmup = Instant::now() + Duration::from_secs(args.warmup_secs);
        while Instant::now() < warmup {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let done = writes.lock().iter().filter(|w| w.ok).count();
            self.say(&format!("writing: {done} writes acknowledged"));
        }

        // The partitions whose primary runs on the node to be killed: a write to one of them
        // acknowledged after the kill shows their primaries were taken over (a write to any
        // other partition may go to a primary that was never touched).
        let table_deadline = Instant::now() + STAGE_TIMEOUT;
        let on_master_node = async {
            loop {
                let on_victim = match kv.table().await {
                    Ok(table) => Some((
                        table.partitions(),
                        table
                            .entries
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| {
                                e.primary
                                    .as_ref()
                                    .is_some_and(|p| p.id().node().name() == master_node)
                            })
                            .map(|(i, _)| i as kv::PartitionId)
                            .collect::<BTreeSet<_>>(),
                    )),
                    Err(_) => None,
                };
                match on_victim {
                    Some((partitions, on)) if !on.is_empty() => return Ok((partitions, on)),
                    _ if Instant::now() > table_deadline => {
                        return Err(format!(
                            "no partition of app kv had its primary on {master_node} within {STAGE_TIMEOUT:?}; node logs are in {} (run with --keep)",
                            self.dir.display()
                        ));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let (partitions, victim_partitions) =
            with_progress(on_master_node, PROGRESS_EVERY, |waited| {
                self.say(&format!(
                    "still waiting for a partition whose primary runs on {master_node} ({} s)",
                    waited.as_secs()
                ))
            })
            .await?;

        let lock = singleton::lock_name("kv/master");
        let old_token = registry
            .lock_info(&lock)
            .and_then(|l| l.holder)
            .map_or(0, |(_, token)| token);
        let led_registry = registry.leader().as_deref() == Some(master_node.as_str());
        let mut events = cluster.subscribe();
        let victim = self
            .nodes
            .iter_mut()
            .find(|n| n.name == master_node)
            .ok_or_else(|| format!("the master runs on {master_node}, not a node of the demo"))?;
        let victim_pid = victim.pid;
        victim
            .process
            .start_kill()
            .map_err(|e| format!("cannot kill node {master_node}: {e}"))?;
        let killed = Instant::now();
        self.say(&format!(
            "kill -9 node {master_node} (pid {victim_pid}), which runs the kv master (lease {lock}, token {old_token}) and the primaries of partitions {}",
            join_partitions(&victim_partitions)
        ));

        // What the cluster does, as this member sees it.
        let mut timeline: Vec<(Duration, String)> = Vec::new();
        let mut printed = 0;
        let mut seen = BTreeMap::new();
        // The fencing token of the lease's new grant, once another node holds it.
        let mut new_token = None;
        let deadline = killed + STAGE_TIMEOUT;
        loop {
            while let Ok(event) = events.try_recv() {
                match event {
                    MemberEvent::Suspect(id) if id.name() == master_node => {
                        seen.entry("suspect").or_insert_with(|| {
                            timeline.push((
                                killed.elapsed(),
                                format!(
                                    "failure detected: {master_node}'s heartbeats stopped; suspected (phi accrual)"
                                ),
                            ));
                        });
                    }
                    MemberEvent::Down(id) if id.name() == master_node => {
                        seen.entry("down").or_insert_with(|| {
                            timeline.push((
                                killed.elapsed(),
                                format!(
                                    "{master_node}'s registry session expired: down everywhere, its names and locks released"
                                ),
                            ));
                        });
                    }
                    _ => {}
                }
            }
            if let Some((holder, token)) = registry.lock_info(&lock).and_then(|l| l.holder)
                && holder.node.name() != master_node
            {
                seen.entry("lease").or_insert_with(|| {
                    new_token = Some(token);
                    timeline.push((
                        killed.elapsed(),
                        format!(
                            "lease {lock} taken over by {} with fencing token {token} (was {old_token})",
                            holder.node.name()
                        ),
                    ));
                });
            }
            if let Some(holder) = registry.name_holder(kv::MASTER_NAME)
                && holder.id.node().name() != master_node
            {
                seen.entry("name").or_insert_with(|| {
                    timeline.push((
                        killed.elapsed(),
                        format!(
                            "name {} re-resolved to {} on {}",
                            kv::MASTER_NAME,
                            holder.id,
                            holder.id.node().name()
                        ),
                    ));
                });
            }
            // The first write sent after the kill and acknowledged, to a partition whose
            // primary was on the killed node.
            let first_ack = writes
                .lock()
                .iter()
                .filter(|w| w.ok && w.sent > killed)
                .map(|w| (w.done, w.key.clone()))
                .filter(|(_, key)| victim_partitions.contains(&kv::partition_of(key, partitions)))
                .min();
            if let Some((at, key)) = first_ack {
                seen.entry("write").or_insert_with(|| {
                    timeline.push((
                        at.duration_since(killed),
                        format!(
                            "writes acknowledged again: {key} (partition {} of {partitions}, its primary was on {master_node}), sent after the kill",
                            kv::partition_of(&key, partitions)
                        ),
                    ));
                });
            }
            for (at, what) in &timeline[printed..] {
                self.say(&format!("  +{:>5.2}s  {what}", at.as_secs_f64()));
            }
            printed = timeline.len();
            if seen.len() == 5
                || (seen.contains_key("name")
                    && seen.contains_key("write")
                    && killed.elapsed() > Duration::from_secs(5))
            {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = victim_exit(&mut self.nodes, &master_node).await;
        // Write a little longer on the new master, then stop.
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop_writing.store(true, Ordering::Relaxed);
        for writer in writers {
            writer
                .await
                .map_err(|e| format!("a writer task failed: {e}"))?;
        }

        // 5. Read back every acknowledged write.
        let writes = std::mem::take(&mut *writes.lock());
        // Per key: the last acknowledged value, and the values of failed writes sent after
        // it (a write that timed out at the client may still have been applied).
        let mut latest: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
        for w in &writes {
            if w.ok {
                latest.insert(&w.key, (&w.value, Vec::new()));
            } else if let Some((_, later)) = latest.get_mut(w.key.as_str()) {
                later.push(&w.value);
            }
        }
        self.say(&format!("reading back {} acknowledged keys", latest.len()));
        // Acknowledged writes read back with another value (lost), and keys whose read
        // failed (not known to be lost: the service did not answer in time).
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        // Within one stage's time in all, however many reads fail (each is retried by the
        // client for up to 15 s), with progress as it goes.
        let read_deadline = Instant::now() + STAGE_TIMEOUT;
        let mut last_said = Instant::now();
        // Keys not read at all, the reads having run out of time (one entry in `lost`).
        let mut unread = 0;
        for (done, (key, (value, later))) in latest.iter().enumerate() {
            let left = read_deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, kv.get(key)).await {
                Ok(Ok(Some(found)))
                    if found == value.as_bytes() || later.iter().any(|v| found == v.as_bytes()) => {
                }
                Ok(Ok(other)) => lost.push(format!(
                    "{key}: expected {value:?}, found {:?}",
                    other.map(|v| String::from_utf8_lossy(&v).into_owned())
                )),
                Ok(Err(e)) => unreadable.push(format!("{key}: {e}")),
                Err(_) => {
                    unread = latest.len() - done;
                    unreadable.push(format!(
                        "{key} and the {} keys after it: not read back within {STAGE_TIMEOUT:?}",
                        unread - 1
                    ));
                    break;
                }
            }
            if last_said.elapsed() >= Duration::from_secs(2) {
                self.say(&format!("read back {} of {}", done + 1, latest.len()));
                last_said = Instant::now();
            }
        }

        let missing = lost.len() + unreadable.len() + unread.saturating_sub(1);
        // Writes to the partitions whose primaries lived, acknowledged while the killed
        // node's partitions waited for the new master: the client kept its table for them.
        let victim_back = writes
            .iter()
            .filter(|w| w.ok && w.sent > killed)
            .filter(|w| victim_partitions.contains(&kv::partition_of(&w.key, partitions)))
            .map(|w| w.done)
            .min();
        let meanwhile = writes
            .iter()
            .filter(|w| w.ok && w.sent > killed && victim_back.is_none_or(|back| w.done < back))
            .filter(|w| !victim_partitions.contains(&kv::partition_of(&w.key, partitions)))
            .count();
        let acked = writes.iter().filter(|w| w.ok).count();
        let failed = writes.len() - acked;
        let slowest = writes
            .iter()
            .map(|w| w.done.duration_since(w.sent))
            .max()
            .unwrap_or_default();
        let name_back = timeline
            .iter()
            .find(|(_, what)| what.starts_with("name "))
            .map(|(at, _)| *at);
        let new_master = registry
            .name_holder(kv::MASTER_NAME)
            .map(|h| h.id.node().name().to_owned());
        println!();
        println!("summary");
        println!(
            "  failover          kill -9 of {master_node} -> master's name held again, on {}: {}",
            new_master.as_deref().unwrap_or("nowhere"),
            name_back.map_or("did not happen".into(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            ))
        );
        if led_registry {
            println!(
                "                    ({master_node} also led the registry: a new leader was elected first, \
                 and it waits one session TTL before declaring anyone down)"
            );
        }
        println!(
            "  writes            {acked} acknowledged, {failed} failed (each retried by the client for up to 15 s); slowest {:.2} s",
            slowest.as_secs_f64()
        );
        println!(
            "                    {meanwhile} of them to the other partitions while {master_node}'s waited for the new master"
        );
        println!(
            "  read back         {} of {} acknowledged keys{}",
            latest.len() - missing,
            latest.len(),
            match (lost.is_empty(), missing > lost.len()) {
                (false, _) => " (LOST WRITES)",
                (true, true) => " (the others could not be read)",
                (true, false) => "",
            }
        );
        println!(
            "  dashboard         {} (while the demo runs; `ensemble node` keeps one up)",
            self.nodes
                .iter()
                .find(|n| n.name != master_node)
                .map_or("-", |n| n.admin.as_str())
        );
        println!();
        for problem in lost.iter().take(10) {
            self.say(&format!("lost: {problem}"));
        }
        for problem in unreadable.iter().take(10) {
            self.say(&format!("not read: {problem}"));
        }
        if !lost.is_empty() {
            return Err(format!(
                "{} acknowledged writes read back with another value",
                lost.len()
            ));
        }
        if missing > 0 {
            return Err(format!(
                "{missing} acknowledged keys could not be read back (the service did not answer in time; not known to be lost)"
            ));
        }
        // A failover that never took writes again is no failover, whatever read back.
        if acked == 0 {
            return Err("no write was acknowledged: the kv app never took writes".into());
        }
        if !seen.contains_key("write") {
            return Err(format!(
                "no write sent after the kill of {master_node} to its partitions ({}) was acknowledged within {STAGE_TIMEOUT:?}",
                join_partitions(&victim_partitions)
            ));
        }
        match new_token {
            Some(token) if token > old_token => {}
            Some(token) => {
                return Err(format!(
                    "lease {lock} was granted again with fencing token {token}, not greater than the killed holder's {old_token}"
                ));
            }
            None => {
                return Err(format!(
                    "lease {lock} was not taken over from {master_node} within {STAGE_TIMEOUT:?}"
                ));
            }
        }
        match new_master {
            Some(node) if node != master_node => Ok(()),
            _ => Err(format!(
                "the kv master did not come back on another node within {STAGE_TIMEOUT:?}"
            )),
        }
    }

    /// Starts `ensemble node` as a child process and waits until it is ready.
    async fn start_node(
        &self,
        name: &str,
        seed: Option<SocketAddr>,
    ) -> Result<NodeProcess, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the ensemble executable: {e}"))?;
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut command = Command::new(exe);
        // The demo's nodes take their settings from the flags below only: an ENSEMBLE_JOIN or
        // ENSEMBLE_NO_APPS of the user's shell would send them elsewhere or change the demo.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ENSEMBLE_") {
                command.env_remove(&key);
            }
        }
        command
            .args(["node", "--name", name, "--cluster", "demo"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--certs")
            .arg(self.dir.join("certs"))
            .arg("--data-dir")
            .arg(self.dir.join(name))
            .arg(format!("--threads={}", threads_per_process()))
            .arg("--exit-with-stdin")
            .args(seed.map(|s| format!("--join={s}")))
            .env("ENSEMBLE_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut process = command
            .spawn()
            .map_err(|e| format!("cannot start node {name}: {e}"))?;
        let pid = process.id().unwrap_or_default();
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut cluster, mut admin) = (None, None);
        let ready = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("cluster address ").nth(1) {
                    cluster = addr.trim().parse().ok();
                } else if let Some(url) = line.split(": admin ").nth(1) {
                    admin = Some(url.trim().to_owned());
                } else if line.contains(": ready") {
                    return true;
                }
            }
            false
        };
        let ready = with_progress(ready, PROGRESS_EVERY, |waited| {
            self.say(&format!(
                "still waiting for node {name} to be ready ({} s)",
                waited.as_secs()
            ))
        });
        let started = tokio::time::timeout(STAGE_TIMEOUT, ready).await;
        let fail = |why: &str| {
            format!(
                "node {name} {why}; its log: {} (run with --keep to look at it)",
                log_path.display()
            )
        };
        match started {
            Ok(true) => {}
            Ok(false) => return Err(fail("exited before it was ready")),
            Err(_) => return Err(fail(&format!("was not ready in {STAGE_TIMEOUT:?}"))),
        }
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(NodeProcess {
            name: name.to_owned(),
            process,
            stdin,
            pid,
            cluster: cluster.ok_or_else(|| fail("did not print its cluster address"))?,
            admin: admin.ok_or_else(|| fail("did not print its admin address"))?,
        })
    }

    /// Stops the client member and every node: their standard input closes, so they leave
    /// the cluster and stop; those still running after 10 s are killed.
    async fn clean_up(&mut self) {
        self.say("stopping the nodes (each leaves the cluster on purpose)");
        if let Some(client) = self.client.take() {
            client.stop().await;
        }
        for node in &mut self.nodes {
            node.stdin.take();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            if tokio::time::timeout_at(deadline, node.process.wait())
                .await
                .is_err()
            {
                let _ = node.process.start_kill();
                let _ = node.process.wait().await;
            }
        }
        self.say(&format!("stopped {} nodes", self.nodes.len()));
    }
}

/// Partitions as `3, 5, 7`.
fn join_partitions(partitions: &BTreeSet<kv::PartitionId>) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// Reaps the killed node's process.
async fn victim_exit(nodes: &mut [NodeProcess], name: &str) -> Option<std::process::ExitStatus> {
    let node = nodes.iter_mut().find(|n| n.name == name)?;
    tokio::time::timeout(Duration::from_secs(5), node.process.wait())
        .await
        .ok()?
        .ok()
}

/// Writes `key-<i>` = `value-<i>` without pause until told to stop, recording each outcome.
/// A write in flight when told to stop is finished and recorded, so that reading back knows
/// every value it may find.
/// Writes `keys` in turn, overwriting them, until told to stop: reading back checks the
/// latest values.
async fn write_loop(
    kv: KvClient,
    keys: Vec<String>,
    writes: Arc<Mutex<Vec<Write>>>,
    stop: Arc<AtomicBool>,
) {
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let key = keys[i as usize % keys.len()].clone();
        let value = format!("value-{i}-of-{key}");
        let sent = Instant::now();
        let ok = kv.put(key.clone(), value.clone()).await.is_ok();
        writes.lock().push(Write {
            key,
            value,
            sent,
            done: Instant::now(),
            ok,
        });
    }
}

/// Waits until `check` holds, for up to [`STAGE_TIMEOUT`], saying every few seconds that it
/// still waits.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> CliResult {
    let deadline = Instant::now() + STAGE_TIMEOUT;
    let holds = async {
        while !check() {
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {STAGE_TIMEOUT:?} waiting for {what}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    };
    with_progress(holds, PROGRESS_EVERY, |waited| {
        println!("         still waiting for {what} ({} s)", waited.as_secs())
    })
    .await
}
