//! Running the `ensemble` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const ENSEMBLE: &str = env!("CARGO_BIN_EXE_ensemble");

/// Runs `ensemble args...` to its end, with no `ENSEMBLE_*` variables from the environment
/// except those in `env`.
pub(crate) fn run(args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Output {
    let mut command = command(args, env);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.output().expect("run ensemble")
}

/// A command for `ensemble args...` with a clean `ENSEMBLE_*` environment.
pub(crate) fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(ENSEMBLE);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ENSEMBLE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// Runs `ensemble app deploy SPEC --admin ADMIN extra...` to its end.
pub(crate) fn app_deploy(spec: &Path, admin: &str, extra: &[&str]) -> Output {
    let spec = spec.to_str().expect("a UTF-8 path");
    let mut args = vec!["app", "deploy", spec, "--admin", admin];
    args.extend_from_slice(extra);
    run(&args, &[], None)
}

/// A file `name` holding `text` in a new temporary directory, which lives as long as the
/// returned handle.
pub(crate) fn temp_file(name: &str, text: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write a temporary file");
    (dir, path)
}

/// Standard error of a finished run, as text.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Standard output of a finished run, as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A process whose standard output lines arrive on a channel as they are printed.
pub(crate) struct Running {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub(crate) seen: Vec<String>,
}

impl Running {
    /// Starts `command` with its standard output piped to the test.
    pub(crate) fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ensemble");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` (up to `within`) and returns it.
    pub(crate) fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no line with {needle:?} within {within:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the process closed its output ({:?}) before a line with {needle:?}; output so far:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads the remaining output until the process closes it.
    pub(crate) fn rest(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            rest.push(line);
        }
        rest
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal the process");
    }

    /// Waits for the process to exit (up to `within`).
    pub(crate) fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {within:?}; output so far:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process with this pid exists (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
