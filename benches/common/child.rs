//! A node in a child process (the benchmark binary started again), as the process
//! benchmarks run them: its standard output read line by line, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A child node process.
pub(crate) struct ChildProcess {
    pub(crate) name: String,
    pub(crate) process: Child,
    lines: Receiver<String>,
    /// The address it listens on, from its `LISTENING <addr>` line.
    pub(crate) addr: String,
}

impl ChildProcess {
    /// Spawns `command` (with piped standard input and output) and waits until it prints
    /// `LISTENING <addr>`.
    pub(crate) fn spawn(name: &str, mut command: Command) -> ChildProcess {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut process = command.spawn().expect("spawn a node");
        let stdout = process.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut child = ChildProcess {
            name: name.to_owned(),
            process,
            lines,
            addr: String::new(),
        };
        child.addr = child.wait("LISTENING ")["LISTENING ".len()..].to_owned();
        child
    }

    /// Waits (up to a minute) for a line starting with `prefix`, skipping others.
    pub(crate) fn wait(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("node {} printed no {prefix:?}", self.name),
            }
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
