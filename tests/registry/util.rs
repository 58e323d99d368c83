//! Certificates, a sink actor, child nodes, and waiting with deadlines.

use ensemble::prelude::*;
use serde::{Deserialize, Serialize};

pub(crate) use crate::common::certificates;

/// What a sink takes.
#[derive(Serialize, Deserialize)]
pub(crate) enum SinkMsg {
    Ping(ReplyTo<String>),
}

/// An actor that answers pings with its node's name.
#[derive(Default)]
pub(crate) struct Sink;

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, msg: SinkMsg, ctx: &mut Context<Self>) -> ActorResult {
        let SinkMsg::Ping(reply) = msg;
        let _ = reply.send(ctx.node().id().name().to_owned());
        Ok(())
    }
}

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::child::{ENV_BOOTSTRAP, ENV_CERTS, ENV_DATA, ENV_LOG, ENV_NAME, ENV_SEEDS};

/// How long any expectation waits.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// A node in a child process; killed when dropped.
pub(crate) struct ChildNode {
    pub(crate) name: String,
    pub(crate) addr: String,
    process: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    skipped: VecDeque<String>,
    next: u64,
}

impl ChildNode {
    /// Starts `name` with its data under `dir/<name>-data`, joining `seeds` (or starting a
    /// new registry if `seeds` is empty and `bootstrap`), and waits until it is ready.
    pub(crate) fn start(name: &str, dir: &Path, seeds: &[String], bootstrap: bool) -> ChildNode {
        Self::start_with(name, dir, seeds, bootstrap, &[])
    }

    /// [`start`](Self::start), with the environment variables `env` too (such as
    /// [`ENV_VOTERS`](crate::child::ENV_VOTERS)).
    pub(crate) fn start_with(
        name: &str,
        dir: &Path,
        seeds: &[String],
        bootstrap: bool,
        env: &[(&str, &str)],
    ) -> ChildNode {
        let mut child = Self::spawn(name, dir, seeds, bootstrap, env);
        child.wait_ready();
        child
    }

    /// Starts `name` without waiting for its registry (which may need nodes not started
    /// yet): only until it listens.
    pub(crate) fn start_detached(name: &str, dir: &Path, seeds: &[String]) -> ChildNode {
        Self::spawn(name, dir, seeds, false, &[])
    }

    /// Waits until the node's registry started and its session is open.
    pub(crate) fn wait_ready(&mut self) {
        self.expect_line("READY ");
    }

    /// Starts the child process, with the environment variables `env` besides its own (such as
    /// [`ENV_DRIFT_MARGIN`](crate::child::ENV_DRIFT_MARGIN)), and waits until it listens.
    fn spawn(
        name: &str,
        dir: &Path,
        seeds: &[String],
        bootstrap: bool,
        env: &[(&str, &str)],
    ) -> ChildNode {
        let exe = std::env::current_exe().expect("test binary");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(exe);
        command
            .args([
                "--ignored",
                "--exact",
                "child_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_NAME, name)
            .env(ENV_CERTS, dir)
            .env(ENV_DATA, dir.join(format!("{name}-data")))
            .env(ENV_SEEDS, seeds.join(","))
            .env(
                ENV_LOG,
                "ensemble_registry=debug,ensemble_runtime=info,openraft=warn",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if bootstrap {
            command.env(ENV_BOOTSTRAP, "1");
        }
        command.envs(env.iter().copied());
        let mut process = command.spawn().expect("spawn a child node");
        let stdout = process.stdout.take().expect("stdout");
        let stdin = process.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut child = ChildNode {
            name: name.to_owned(),
            addr: String::new(),
            process,
            stdin,
            lines,
            log,
            skipped: VecDeque::new(),
            next: 0,
        };
        child.addr = child.expect_line("LISTENING ")["LISTENING ".len()..].to_owned();
        child
    }

    /// Waits for a line holding `prefix` and returns it from `prefix` on. Lines skipped on the
    /// way are kept for later expectations.
    pub(crate) fn expect_line(&mut self, prefix: &str) -> String {
        self.wait_line(prefix, DEADLINE).unwrap_or_else(|| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "node {} printed no {prefix:?} line within {DEADLINE:?}; the end of its log:\n{}",
                self.name,
                tail.join("\n")
            )
        })
    }

    fn wait_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        let cut = |line: &str| line[line.find(prefix).expect("contains prefix")..].to_owned();
        if let Some(i) = self.skipped.iter().position(|line| line.contains(prefix)) {
            let line = self.skipped.remove(i).expect("in range");
            return Some(cut(&line));
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(prefix) => return Some(cut(&line)),
                Ok(line) => self.skipped.push_back(line),
                Err(_) => return None,
            }
        }
    }

    /// Sends a command without waiting; returns the id its answer will carry.
    pub(crate) fn send(&mut self, command: &str) -> u64 {
        self.next += 1;
        let id = self.next;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{id} {command}").expect("write a command");
        stdin.flush().expect("flush");
        id
    }

    /// The answer to command `id`, without the `R <id> ` prefix.
    pub(crate) fn answer(&mut self, id: u64) -> String {
        let prefix = format!("R {id} ");
        self.expect_line(&prefix)[prefix.len()..].to_owned()
    }

    /// Runs a command and returns its answer.
    pub(crate) fn run(&mut self, command: &str) -> String {
        let id = self.send(command);
        self.answer(id)
    }

    /// Runs `command` until its answer starts with `wanted` (or, for a `leader` command,
    /// ends with it), or fails at the deadline.
    pub(crate) fn run_until(&mut self, command: &str, wanted: &str) -> String {
        self.run_until_answer(command, |answer| {
            answer.starts_with(wanted) || (command == "leader" && answer.ends_with(wanted))
        })
    }

    /// Runs `command` until its answer satisfies `done` (or [`DEADLINE`] passes: a panic),
    /// and returns that answer.
    pub(crate) fn run_until_answer(
        &mut self,
        command: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answer = self.run(command);
            if done(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {command:?} answered {answer:?} until the deadline",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Pauses (`SIGSTOP`) or resumes (`SIGCONT`) the process.
    pub(crate) fn signal(&self, signal: &str) {
        if signal == "-STOP" {
            // Until each thread has stopped, not only until the signal is sent.
            crate::common::stop_process(self.process.id());
            return;
        }
        let status = Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.signal_quietly();
        self.kill();
    }
}

impl ChildNode {
    fn signal_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.process.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Process tests take turns: each runs three or four nodes whose sessions have a one-second
/// TTL, and a two-core machine running several such clusters at once could starve a node
/// long enough to fence it, which is not what these tests are about.
pub(crate) fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts three voters a, b and c (a bootstraps) and waits until all three vote.
pub(crate) fn three_voters(dir: &Path) -> Vec<ChildNode> {
    three_voters_with(dir, &[])
}

/// [`three_voters`], each child with the environment variables `env` too.
pub(crate) fn three_voters_with(dir: &Path, env: &[(&str, &str)]) -> Vec<ChildNode> {
    let start =
        |name, seeds: &[String], bootstrap| ChildNode::start_with(name, dir, seeds, bootstrap, env);
    let mut a = start("a", &[], true);
    let seeds = vec![a.addr.clone()];
    let b = start("b", &seeds, false);
    let c = start("c", &seeds, false);
    a.run_until("leader", "voters a,b,c");
    vec![a, b, c]
}

/// The current leader's name, as `node` hears it.
pub(crate) fn leader(node: &mut ChildNode) -> String {
    let answer = node.run_until("leader", "leader ");
    assert!(!answer.starts_with("leader  "), "no leader known: {answer}");
    answer
        .split_whitespace()
        .nth(1)
        .expect("leader name")
        .to_owned()
}
