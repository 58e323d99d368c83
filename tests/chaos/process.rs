//! A child node process: started, read, paused, resumed and killed by the test; killed when
//! dropped, so no node outlives its test, even one that fails.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::child::{
    ENV_BOOTSTRAP, ENV_CERTS, ENV_DATA, ENV_HISTORY, ENV_LISTEN, ENV_LOG, ENV_NAME, ENV_NODES,
    ENV_SEEDS, ENV_WORK_SEED, micros,
};

/// How long a node may take to print an expected line. Generous: two cores are shared by
/// five nodes, the test and whatever else the machine builds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// How to start a node.
pub(crate) struct Launch<'a> {
    pub(crate) name: &'a str,
    /// Certificates, data dirs, logs and history files.
    pub(crate) dir: &'a Path,
    pub(crate) seeds: &'a [String],
    pub(crate) bootstrap: bool,
    /// Every node's name.
    pub(crate) nodes: &'a [String],
    pub(crate) work_seed: u64,
    /// The network namespace to run in and the address to listen on there, if any.
    pub(crate) netns: Option<(&'a str, &'a str)>,
}

/// A node in a child process.
pub(crate) struct NodeProcess {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Known once the node printed `READY`.
    pub(crate) incarnation: Option<u64>,
    process: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    skipped: VecDeque<String>,
    next: u64,
    paused: bool,
    /// When the process closed its standard output: when it exited, to within a read.
    closed_at: Arc<Mutex<Option<u128>>>,
}

impl NodeProcess {
    /// Starts a node and waits until it listens (not until its registry is ready: that may
    /// need nodes not started yet).
    pub(crate) fn spawn(launch: &Launch<'_>) -> NodeProcess {
        let exe = std::env::current_exe().expect("test binary");
        let dir = launch.dir;
        let name = launch.name;
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = match launch.netns {
            Some((netns, _)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
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
            .env(ENV_SEEDS, launch.seeds.join(","))
            .env(ENV_HISTORY, dir.join(format!("history-{name}")))
            .env(ENV_NODES, launch.nodes.join(","))
            .env(ENV_WORK_SEED, launch.work_seed.to_string())
            .env(
                ENV_LOG,
                std::env::var("ENSEMBLE_CHAOS_LOG").unwrap_or_else(|_| {
                    "ensemble_registry=info,ensemble_runtime=warn,openraft=warn".into()
                }),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some((_, listen)) = launch.netns {
            command.env(ENV_LISTEN, listen);
        }
        if launch.bootstrap {
            command.env(ENV_BOOTSTRAP, "1");
        }
        let mut process = command.spawn().expect("spawn a child node");
        let stdout = process.stdout.take().expect("stdout");
        let stdin = process.stdin.take();
        let (tx, lines) = mpsc::channel();
        let closed_at = Arc::new(Mutex::new(None));
        let closed = closed_at.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
            *closed.lock().expect("exit time") = Some(micros());
        });
        let mut node = NodeProcess {
            name: name.to_owned(),
            addr: String::new(),
            incarnation: None,
            process,
            stdin,
            lines,
            log,
            skipped: VecDeque::new(),
            next: 0,
            paused: false,
            closed_at,
        };
        node.addr = node.expect_line("LISTENING ")["LISTENING ".len()..].to_owned();
        node
    }

    /// Waits until the node's session is open and returns its incarnation, or `None` if the
    /// process ended first (its registry could not start).
    pub(crate) fn wait_ready(&mut self) -> Option<u64> {
        let Some(line) = self.wait_line("READY ", DEADLINE) else {
            if self.has_exited() {
                return None;
            }
            panic!(
                "node {} printed no READY line within {DEADLINE:?}; the end of its log:\n{}",
                self.name,
                self.log_tail(60)
            );
        };
        let incarnation = line
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .expect("READY <addr> <incarnation>");
        self.incarnation = Some(incarnation);
        Some(incarnation)
    }

    /// Waits for a line holding `prefix` and returns it from `prefix` on; lines skipped on the
    /// way are kept for later expectations.
    pub(crate) fn expect_line(&mut self, prefix: &str) -> String {
        self.wait_line(prefix, DEADLINE).unwrap_or_else(|| {
            panic!(
                "node {} printed no {prefix:?} line within {DEADLINE:?}; the end of its log:\n{}",
                self.name,
                self.log_tail(60)
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
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The process closed its output: it is exiting.
                    let _ = self.process.wait();
                    return None;
                }
            }
        }
    }

    /// The last `n` lines of the node's log (all its incarnations share one file).
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs a command and returns its answer, without the `R <id> ` prefix.
    pub(crate) fn run(&mut self, command: &str) -> String {
        self.next += 1;
        let id = self.next;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{id} {command}").expect("write a command");
        stdin.flush().expect("flush");
        let prefix = format!("R {id} ");
        self.expect_line(&prefix)[prefix.len()..].to_owned()
    }

    /// Runs `command` until its answer starts with `wanted`, or fails at the deadline.
    pub(crate) fn run_until(&mut self, command: &str, wanted: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answer = self.run(command);
            if answer.starts_with(wanted) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {command:?} answered {answer:?} until the deadline",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`; returns when the process is gone, with the time it was (microseconds of
    /// the system clock).
    pub(crate) fn kill(&mut self) -> u128 {
        if self.paused {
            self.resume();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        micros()
    }

    /// Whether the process has ended on its own (it does when its session expired).
    pub(crate) fn has_exited(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(Some(_)))
    }

    /// When an exited process ended: when its standard output closed, or now if the reader has
    /// not seen that yet.
    pub(crate) fn exit_time(&self) -> u128 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = *self.closed_at.lock().expect("exit time") {
                return at;
            }
            if Instant::now() > deadline {
                return micros();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pauses the process (`SIGSTOP`): to the others it looks cut off.
    pub(crate) fn pause(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.paused = true;
    }

    /// Resumes a paused process (`SIGCONT`).
    pub(crate) fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
        self.paused = false;
    }

    fn signal(&mut self, signal: Signal) {
        // The process may have exited already (its session expired): nothing to signal then,
        // and its pid may belong to another process by now.
        if !self.has_exited() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.process.id() as i32), signal);
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
