//! Spawning child nodes, certificates, and waiting on membership with deadlines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig, MemberEvent};
use ensemble::{Node, NodeConfig, NodeId};
use tokio::sync::broadcast;

use crate::child::{ENV_CERTS, ENV_CLUSTER, ENV_LOG, ENV_NAME, ENV_SEEDS};

pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A node in a child process; killed when dropped.
pub(crate) struct ChildNode {
    pub(crate) name: String,
    pub(crate) process: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    /// Where the node's log goes (shown when an expectation fails).
    pub(crate) log: std::path::PathBuf,
    /// Lines read but not expected yet.
    skipped: std::collections::VecDeque<String>,
}

/// `line` from `prefix` on.
fn from(line: &str, prefix: &str) -> String {
    line[line.find(prefix).expect("contains the prefix")..].to_owned()
}

impl ChildNode {
    /// Starts `name` with its certificate from `certs`, joining `seeds`.
    pub(crate) fn spawn(
        name: &str,
        certs: &Path,
        cluster: &str,
        seeds: &[SocketAddr],
    ) -> ChildNode {
        let exe = std::env::current_exe().expect("test binary");
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let mut process = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "child_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_NAME, name)
            .env(ENV_CERTS, certs)
            .env(ENV_CLUSTER, cluster)
            .env(ENV_SEEDS, seeds.join(","))
            .env(ENV_LOG, "ensemble_runtime=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(certs.join(format!("{name}.log"))).expect("log file"))
            .spawn()
            .expect("spawn a child node");
        let stdout = process.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildNode {
            name: name.to_owned(),
            process,
            lines,
            log: certs.join(format!("{name}.log")),
            skipped: std::collections::VecDeque::new(),
        }
    }

    /// Waits for a line holding `prefix` and returns it from `prefix` on, failing after the
    /// deadline. Lines skipped on the way are kept for later expectations, so the order in
    /// which a test expects lines does not have to be the order they were printed in. (The
    /// child's test harness may print its own text in front of the child's first line.)
    pub(crate) fn expect_line(&mut self, prefix: &str) -> String {
        if let Some(i) = self.skipped.iter().position(|line| line.contains(prefix)) {
            let line = self.skipped.remove(i).expect("index in range");
            return from(&line, prefix);
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(prefix) => return from(&line, prefix),
                Ok(line) => self.skipped.push_back(line),
                Err(_) => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    panic!(
                        "node {} printed no {prefix:?} line within {DEADLINE:?}; its log:\n{log}",
                        self.name
                    )
                }
            }
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) use crate::common::certificates;

/// Cluster settings for test nodes: the default failure detector, but tolerating pauses of
/// a few seconds, so that a loaded machine running many test processes never makes a live
/// node look dead. (A killed node is then declared down after about 3.5 s instead of 0.7 s.)
pub(crate) fn test_config(cluster: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(cluster);
    config.phi.acceptable_pause = Duration::from_secs(3);
    config
}

/// An in-process node with a cluster service (no seeds).
pub(crate) async fn local_node(name: &str, certs: &Path) -> (Node, Cluster) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let cert = ensemble::transport::certs::NodeCert::load(certs, name).expect("certificate");
    let cluster = Cluster::start(&node, test_config("test"), &cert)
        .await
        .expect("cluster");
    (node, cluster)
}

/// An in-process node with a cluster service that joins through `seed`.
pub(crate) async fn local_node_joining(
    name: &str,
    certs: &Path,
    seed: std::net::SocketAddr,
) -> (Node, Cluster) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let cert = ensemble::transport::certs::NodeCert::load(certs, name).expect("certificate");
    let mut config = test_config("test");
    config.seeds = vec![seed];
    let cluster = Cluster::start(&node, config, &cert).await.expect("cluster");
    (node, cluster)
}

/// Waits for a membership event matching `wanted`, failing after the deadline.
pub(crate) async fn wait_event(
    events: &mut broadcast::Receiver<MemberEvent>,
    what: &str,
    wanted: impl Fn(&MemberEvent) -> bool,
) -> MemberEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// Waits until the cluster has exactly these member names.
pub(crate) async fn wait_members(cluster: &Cluster, names: &[&str]) {
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let done = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut now: Vec<String> = cluster
                .members()
                .into_iter()
                .map(|m| m.node.name().to_owned())
                .collect();
            now.sort();
            if now == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if done.is_err() {
        let now: Vec<String> = cluster
            .members()
            .into_iter()
            .map(|m| m.node.to_string())
            .collect();
        panic!("members are {now:?}, not {expected:?}, after {DEADLINE:?}");
    }
}

/// The node id of a member by name.
pub(crate) fn member_id(cluster: &Cluster, name: &str) -> NodeId {
    cluster
        .members()
        .into_iter()
        .find(|m| m.node.name() == name)
        .map(|m| m.node)
        .unwrap_or_else(|| panic!("{name} is not a member"))
}
