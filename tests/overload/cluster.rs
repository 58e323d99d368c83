//! Ten `ensemble node` processes on this machine: they form a cluster in which every node
//! sees all ten with open sessions; one is killed with `kill -9` and every other node
//! declares it down; started again with its data dir, it joins, and all ten are back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const ENSEMBLE: &str = env!("CARGO_BIN_EXE_ensemble");
const NODES: usize = 10;
/// Generous: ten nodes share two cores with whatever else the machine runs.
const WAIT: Duration = Duration::from_secs(120);

/// An `ensemble node` process; killed when dropped. It also stops when the test dies (its
/// standard input closes).
struct NodeProcess {
    child: Child,
    _stdin: ChildStdin,
    cluster: String,
    admin: String,
}

impl NodeProcess {
    fn start(dir: &Path, name: &str, join: Option<&str>) -> NodeProcess {
        let data = dir.join(format!("{name}-data"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("log file");
        let mut command = Command::new(ENSEMBLE);
        command.args(["node", "--name", name, "--listen", "127.0.0.1:0"]);
        command.args(["--admin", "127.0.0.1:0", "--exit-with-stdin", "--no-apps"]);
        command.arg("--certs").arg(dir).arg("--data-dir").arg(&data);
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("ENSEMBLE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start ensemble node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| -> String {
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) if line.contains(needle) => return line,
                    Ok(line) => seen.push(line),
                    Err(_) => panic!(
                        "node {name} printed no {needle:?} within {WAIT:?}; its output: {seen:?}; \
                         its log is {}",
                        dir.join(format!("{name}.log")).display()
                    ),
                }
            }
        };
        let cluster = wait_for("cluster address");
        let admin = wait_for(": admin http://");
        wait_for(": ready");
        NodeProcess {
            child,
            _stdin: stdin,
            cluster: cluster.rsplit(' ').next().expect("address").to_owned(),
            admin: admin.rsplit(' ').next().expect("url").to_owned(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The members `admin`'s node lists, from `ensemble members --json`: name, incarnation,
/// status and whether it has a session. `None` if the command failed (a node busy starting).
fn members(admin: &str) -> Option<Vec<(String, u64, String, bool)>> {
    let output = Command::new(ENSEMBLE)
        .args(["members", "--json", "--admin", admin])
        .env_remove("ENSEMBLE_ADMIN_TOKEN")
        .output()
        .expect("run ensemble members");
    if !output.status.success() {
        return None;
    }
    let parsed: Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(
        parsed
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["node"].as_str().unwrap_or_default().to_owned(),
                    m["incarnation"].as_u64().unwrap_or_default(),
                    m["status"].as_str().unwrap_or_default().to_owned(),
                    m["session"].as_bool().unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// Waits until every node in `nodes` (by index; `None` = not running) satisfies `check` on
/// the members it lists.
fn until_every_node(
    nodes: &[Option<NodeProcess>],
    what: &str,
    check: impl Fn(&[(String, u64, String, bool)]) -> bool,
) -> Duration {
    let started = Instant::now();
    let deadline = started + WAIT;
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        loop {
            let seen = members(&node.admin);
            if seen.as_deref().is_some_and(&check) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node n{} never saw {what}; it lists {seen:?}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    started.elapsed()
}

fn all_with_sessions(members: &[(String, u64, String, bool)], n: usize) -> bool {
    members.len() == n
        && members
            .iter()
            .all(|(_, _, status, session)| *session && (status == "up" || status == "self"))
}

#[test]
fn ten_node_processes_form_a_cluster_lose_one_and_recover() {
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let certs = crate::common::certificates(&refs);
    let dir = certs.path();

    let began = Instant::now();
    let mut nodes: Vec<Option<NodeProcess>> = Vec::new();
    nodes.push(Some(NodeProcess::start(dir, &names[0], None)));
    let seed = nodes[0].as_ref().expect("n1").cluster.clone();
    for name in &names[1..] {
        nodes.push(Some(NodeProcess::start(dir, name, Some(&seed))));
    }
    until_every_node(&nodes, "all ten members with sessions", |m| {
        all_with_sessions(m, NODES)
    });
    let formed = began.elapsed();

    // A node that is not a registry voter (n1..n3 are): its death costs no election.
    let victim = 6;
    let old = members(&nodes[0].as_ref().expect("n1").admin)
        .expect("members")
        .into_iter()
        .find(|m| m.0 == names[victim])
        .expect("the victim is a member")
        .1;
    nodes[victim].as_mut().expect("running").kill();
    nodes[victim] = None;
    let killed = Instant::now();
    let gone = until_every_node(&nodes, "the killed node declared down", |m| {
        all_with_sessions(m, NODES - 1) && !m.iter().any(|(n, ..)| *n == names[victim])
    });
    let down_after = killed.elapsed();

    let restarted = Instant::now();
    nodes[victim] = Some(NodeProcess::start(dir, &names[victim], Some(&seed)));
    until_every_node(&nodes, "all ten back", |m| {
        all_with_sessions(m, NODES)
            && m.iter()
                .any(|(n, inc, ..)| *n == names[victim] && *inc != old)
    });
    eprintln!(
        "ten node processes: formed in {formed:.1?}; a killed node was down on all nine others \
         {down_after:.1?} after kill -9 (the check itself took {gone:.1?}); back to ten \
         {:.1?} after it was started again",
        restarted.elapsed()
    );
}
