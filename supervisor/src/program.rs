//! Supervised OS processes: an external program run by an actor, like an Erlang port owner,
//! so that it is supervised, restarted and placed like any child.
//!
//! A [`ProgramSpec`] says what to run (command, arguments, environment, working directory),
//! how to tell it is healthy ([`HealthCheck`]: a TCP connect, an HTTP GET or a command) and how
//! to stop it (a signal, then `SIGKILL` after a timeout). The [`Program`] actor starts it when
//! it starts and ends when the program does:
//!
//! - exit status 0: the actor ends normally; anything else, or a signal, is a failure whose
//!   reason names the program and how it ended. Its supervisor restarts it by its restart type
//!   and intensity, as it would an actor.
//! - a health check failing `failures` times in a row: the actor fails with the check's
//!   last error, and the program is stopped.
//! - the actor stopping (its supervisor, its node shutting down): the program gets its stop
//!   signal, and `SIGKILL` after `stop_timeout_ms` if it is still running. The signals go to
//!   the program's process group, so children it started end with it, also when the program
//!   itself ended first.
//! - the node process dying (`kill -9`): the program gets `SIGKILL` from the kernel
//!   (`PR_SET_PDEATHSIG`), so it cannot outlive its node and run twice once its child is
//!   restarted elsewhere. Processes the program starts are not covered (the kernel clears
//!   the setting in them): docs/processes.md.
//!
//! Standard output and error are logged line by line through `tracing` (target
//! `ensemble_program`; error lines at warn level).
//!
//! The actor is registered as the module [`PROGRAM_MODULE`] (by [`register`], which
//! `Apps::start` calls), with the spec as its arguments: [`ChildSpec::program`] is a module
//! child, so it can be placed on other nodes, and app roles can be programs (`program = {...}`
//! instead of `module`).
//!
//! Arguments, environment values and health check targets may contain `{port}`, replaced by
//! a free TCP port picked at each start (so that two instances on one machine do not collide;
//! the port is free when picked, and another process could take it before the program binds
//! it), and `{node}`, replaced by the node's name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ensemble_runtime::prelude::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::spec::{ChildSpec, Shutdown};

/// The module name programs are registered under.
pub const PROGRAM_MODULE: &str = "ensemble.program";

/// How long a stop waits for `SIGKILL` to end the program's process group.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// The longest line of the program's output logged as one; a longer one is logged in pieces.
const MAX_LINE: u64 = 64 * 1024;

/// An external program to run and supervise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// The executable: a path, or a name looked up in `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for it (on top of the node's own environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory (default: the node's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// How to tell it is healthy; without one, running is healthy.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The signal that asks it to stop: `TERM` (default), `INT`, `HUP`, `QUIT`, `USR1`,
    /// `USR2` or `KILL`, with or without the `SIG` prefix.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// How long it has to exit after the stop signal before it is killed, in milliseconds.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
}

fn default_stop_signal() -> String {
    "TERM".to_owned()
}

fn default_stop_timeout_ms() -> u64 {
    5_000
}

/// A health check: exactly one of `tcp`, `http` or `exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Healthy if a TCP connection to this `HOST:PORT` succeeds.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Healthy if a GET of this `http://` URL answers a 2xx or 3xx status.
    #[serde(default)]
    pub http: Option<String>,
    /// Healthy if this command (program and arguments) exits with status 0.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    /// Time between checks, in milliseconds (default 1000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long one check may take, in milliseconds (default 1000).
    #[serde(default = "default_interval_ms")]
    pub timeout_ms: u64,
    /// How long after the start checks begin, in milliseconds (default 1000).
    #[serde(default = "default_interval_ms")]
    pub grace_ms: u64,
    /// Failures in a row that make the program unhealthy (default 3).
    #[serde(default = "default_failures")]
    pub failures: u32,
}

fn default_interval_ms() -> u64 {
    1_000
}

fn default_failures() -> u32 {
    3
}

impl ProgramSpec {
    /// A spec running `command` with `args`, with the defaults for everything else.
    pub fn new(command: impl Into<String>, args: &[&str]) -> ProgramSpec {
        ProgramSpec {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            health: None,
            stop_signal: default_stop_signal(),
            stop_timeout_ms: default_stop_timeout_ms(),
        }
    }

    /// Checks the spec; the error names the key at fault (relative to the spec).
    pub fn validate(&self) -> Result<(), String> {
        if self.command.trim().is_empty() {
            return Err("command: must name a program".into());
        }
        parse_signal(&self.stop_signal).map_err(|e| format!("stop_signal: {e}"))?;
        if let Some(health) = &self.health {
            let kinds = [
                health.tcp.is_some(),
                health.http.is_some(),
                health.exec.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err("health: give exactly one of tcp, http or exec".into());
            }
            if let Some(url) = &health.http
                && !url.starts_with("http://")
            {
                return Err(format!(
                    "health.http: {url:?} must be an http:// URL (the check speaks plain HTTP)"
                ));
            }
            if health.exec.as_ref().is_some_and(|e| e.is_empty()) {
                return Err("health.exec: must name a program".into());
            }
            if health.interval_ms == 0 || health.timeout_ms == 0 {
                return Err("health.interval_ms and health.timeout_ms must be at least 1".into());
            }
            if health.failures == 0 {
                return Err("health.failures: must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Reads a signal name: `TERM`, `SIGTERM`, ...
fn parse_signal(name: &str) -> Result<Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    match bare {
        "TERM" => Ok(Signal::SIGTERM),
        "INT" => Ok(Signal::SIGINT),
        "HUP" => Ok(Signal::SIGHUP),
        "QUIT" => Ok(Signal::SIGQUIT),
        "USR1" => Ok(Signal::SIGUSR1),
        "USR2" => Ok(Signal::SIGUSR2),
        "KILL" => Ok(Signal::SIGKILL),
        _ => Err(format!(
            "{name:?} is not a stop signal; use TERM, INT, HUP, QUIT, USR1, USR2 or KILL"
        )),
    }
}

impl ChildSpec {
    /// A worker child running an external program (see [`program`](crate::program)): a
    /// module child of [`PROGRAM_MODULE`], so it can be placed on any node that registered
    /// the module.
    ///
    /// Its shutdown timeout covers the program's own stop: `stop_timeout_ms`, then up to
    /// [`KILL_WAIT`] for `SIGKILL` to end what is left, and a second of slack, so that its
    /// supervisor does not kill the actor while the program is still stopping.
    pub fn program(id: impl Into<String>, spec: &ProgramSpec) -> ChildSpec {
        let stop = Duration::from_millis(spec.stop_timeout_ms) + KILL_WAIT + Duration::from_secs(1);
        ChildSpec::module(id, PROGRAM_MODULE, spec)
            .expect("a program spec always encodes")
            .shutdown(Shutdown::Timeout(stop))
    }
}

/// Registers the [`Program`] actor as module [`PROGRAM_MODULE`] on `node`.
pub fn register(node: &Node) {
    if !node.has_module(PROGRAM_MODULE) {
        node.register_module(PROGRAM_MODULE, Program::new);
    }
}

/// What a running program is, as [`ProgramMsg::Info`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    /// The program's process id.
    pub pid: u32,
    /// The port `{port}` stood for, if the spec used it.
    pub port: Option<u16>,
    /// The command.
    pub command: String,
    /// The arguments, placeholders replaced.
    pub args: Vec<String>,
}

/// What a [`Program`] actor takes.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProgramMsg {
    /// Answers what runs.
    Info(ReplyTo<ProgramInfo>),
    /// The program ended (sent by the actor's own watcher).
    Exited {
        /// How, for the exit reason.
        status: String,
        /// Exit status 0.
        success: bool,
    },
    /// The health check failed too often (sent by the actor's own checker).
    Unhealthy(String),
}

/// The actor that owns one running program.
pub struct Program {
    spec: ProgramSpec,
    running: Option<Running>,
}

struct Running {
    info: ProgramInfo,
    /// Set (to how it ended) once the program exited.
    exited: watch::Receiver<Option<String>>,
    /// Kills what is left of the program's process group when the actor ends.
    _guard: KillOnDrop,
    /// The health checker, aborted with the actor's state: also when the actor is killed and
    /// its `stopped` hook does not run (a healthy target would keep it checking for good).
    health: Option<AbortOnDropHandle<()>>,
}

/// `SIGKILL` to the program's process group when dropped: the last resort when the actor is
/// killed and its `stopped` hook does not run (after that hook, the group is gone already).
struct KillOnDrop {
    pid: Pid,
}

impl Drop for KillOnDrop {
    /// The actor ended without its `stopped` hook (killed): the program's whole group gets
    /// `SIGKILL`, also what it started if the program itself has ended.
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.pid, Signal::SIGKILL);
    }
}

impl Program {
    /// An actor that runs `spec` when it starts.
    pub fn new(spec: ProgramSpec) -> Program {
        Program {
            spec,
            running: None,
        }
    }
}

/// Replaces `{port}` and `{node}` in `text`.
fn fill(text: &str, port: Option<u16>, node: &str) -> String {
    let text = text.replace("{node}", node);
    match port {
        Some(port) => text.replace("{port}", &port.to_string()),
        None => text,
    }
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

impl Actor for Program {
    type Msg = ProgramMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        let spec = &self.spec;
        spec.validate()
            .map_err(|e| ActorError::new(format!("program {:?}: {e}", spec.command)))?;
        let uses_port = spec.args.iter().any(|a| a.contains("{port}"))
            || spec.env.values().any(|v| v.contains("{port}"))
            || spec.health.as_ref().is_some_and(|h| {
                h.tcp
                    .iter()
                    .chain(h.http.iter())
                    .any(|t| t.contains("{port}"))
                    || h.exec.iter().flatten().any(|a| a.contains("{port}"))
            });
        let port = if uses_port {
            Some(free_port().map_err(|e| {
                ActorError::new(format!(
                    "program {:?}: cannot pick a free port for {{port}}: {e}",
                    spec.command
                ))
            })?)
        } else {
            None
        };
        let node = ctx.node().id().name().to_owned();
        let args: Vec<String> = spec.args.iter().map(|a| fill(a, port, &node)).collect();

        let mut command = tokio::process::Command::new(&spec.command);
        command
            .args(&args)
            .envs(spec.env.iter().map(|(k, v)| (k, fill(v, port, &node))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the stop signal reaches what it starts too.
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            if !cwd.is_dir() {
                return Err(ActorError::new(format!(
                    "cannot start program {:?}: its working directory (cwd) {} is not a directory",
                    spec.command,
                    cwd.display()
                )));
            }
            command.current_dir(cwd);
        }
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|e| {
            ActorError::new(format!(
                "cannot start program {:?} (args {args:?}): {e}",
                spec.command
            ))
        })?;
        let pid_number = child.id().unwrap_or_default();
        let pid = Pid::from_raw(pid_number as i32);
        metrics::counter!("ensemble_process_starts_total", "command" => spec.command.clone())
            .increment(1);
        tracing::info!(target: "ensemble_program", command = %spec.command, ?args, pid = pid_number, "program started");

        for (stream, is_err) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                true,
            ),
        ] {
            let Some(stream) = stream else { continue };
            tokio::spawn(log_output(stream, spec.command.clone(), pid_number, is_err));
        }

        let (exited_tx, exited) = watch::channel(None);
        let me = ctx.myself();
        let command_name = spec.command.clone();
        tokio::spawn(async move {
            let (status, success) = match child.wait().await {
                Ok(status) => (status.to_string(), status.success()),
                Err(e) => (format!("unknown status ({e})"), false),
            };
            metrics::counter!("ensemble_process_exits_total", "command" => command_name)
                .increment(1);
            let _ = exited_tx.send(Some(status.clone()));
            // Waits for room in a full mailbox: lost, the actor would live on without its
            // program. It fails only if the actor ended meanwhile.
            let _ = me.tell(ProgramMsg::Exited { status, success }).await;
        });

        let health = spec.health.clone().map(|check| {
            let check = HealthCheck {
                tcp: check.tcp.map(|t| fill(&t, port, &node)),
                http: check.http.map(|t| fill(&t, port, &node)),
                exec: check
                    .exec
                    .map(|e| e.iter().map(|a| fill(a, port, &node)).collect()),
                ..check
            };
            AbortOnDropHandle::new(tokio::spawn(watch_health(
                check,
                spec.command.clone(),
                ctx.myself(),
            )))
        });
        self.running = Some(Running {
            info: ProgramInfo {
                pid: pid_number,
                port,
                command: spec.command.clone(),
                args,
            },
            exited: exited.clone(),
            _guard: KillOnDrop { pid },
            health,
        });
        Ok(())
    }

    async fn handle(&mut self, msg: ProgramMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            ProgramMsg::Info(reply) => {
                if let Some(running) = &self.running {
                    let _ = reply.send(running.info.clone());
                }
                Ok(())
            }
            ProgramMsg::Exited { status, success } => {
                tracing::info!(target: "ensemble_program", command = %self.spec.command, %status, "program exited");
                if success {
                    ctx.stop();
                    Ok(())
                } else {
                    Err(ActorError::new(format!(
                        "program {:?} exited: {status}",
                        self.spec.command
                    )))
                }
            }
            ProgramMsg::Unhealthy(why) => Err(ActorError::new(why)),
        }
    }

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        drop(running.health.take());
        let pid = Pid::from_raw(running.info.pid as i32);
        let signal = parse_signal(&self.spec.stop_signal).unwrap_or(Signal::SIGTERM);
        let timeout = Duration::from_millis(self.spec.stop_timeout_ms);
        let started = tokio::time::Instant::now();
        if running.exited.borrow().is_none() {
            let _ = nix::sys::signal::killpg(pid, signal);
            let stopped_in_time =
                tokio::time::timeout(timeout, running.exited.wait_for(Option::is_some))
                    .await
                    .is_ok();
            if !stopped_in_time {
                tracing::warn!(target: "ensemble_program", command = %self.spec.command, pid = running.info.pid, ?timeout, "program did not stop in time: killing it");
                let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
                let _ =
                    tokio::time::timeout(KILL_WAIT, running.exited.wait_for(Option::is_some)).await;
            }
        }
        // The program itself has ended (stopped, or on its own); what it started in its
        // process group may live on (a shell that ran a server in the background): it gets
        // the stop signal too, within what is left of the timeout, then `SIGKILL`.
        let left = timeout.saturating_sub(started.elapsed());
        end_group(pid, signal, left, &self.spec.command).await;
    }
}

/// Ends what is left of the program's process group (whose id is the program's pid) once the
/// program itself has ended: the stop signal, `timeout` for the members to end, then
/// `SIGKILL`. The kernel keeps a group's id while any member lives, so the signals reach the
/// program's own children and no one else.
async fn end_group(group: Pid, signal: Signal, timeout: Duration, command: &str) {
    // A signal of none sends nothing and says whether any member lives.
    let alive = || nix::sys::signal::killpg(group, None).is_ok();
    if !alive() {
        return;
    }
    let _ = nix::sys::signal::killpg(group, signal);
    let deadline = tokio::time::Instant::now() + timeout;
    // Not children of this process: nothing tells when they end but asking.
    while alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive() {
        tracing::warn!(target: "ensemble_program", %command, group = group.as_raw(), ?timeout, "processes the program started did not stop in time: killing them");
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    }
}

/// Logs the program's output (`stream`) line by line, until it ends. Lines need not be UTF-8
/// (they are logged lossily) nor short (a long one is logged in pieces of [`MAX_LINE`]); the
/// pipe is read to its end whatever comes, because a program whose output pipe closed would
/// die of `SIGPIPE` at its next write.
async fn log_output(
    stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    command: String,
    pid: u32,
    is_err: bool,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if is_err {
                    tracing::warn!(target: "ensemble_program", %command, pid, stream = "stderr", "{text}");
                } else {
                    tracing::info!(target: "ensemble_program", %command, pid, stream = "stdout", "{text}");
                }
            }
            Err(e) => {
                tracing::warn!(target: "ensemble_program", %command, pid, "cannot read the program's output any more ({e}); dropping the rest");
                let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
                return;
            }
        }
    }
}

/// Makes the kernel kill the program when the process that started it dies, so that a
/// program never outlives its node (`PR_SET_PDEATHSIG`). The signal is sent when the thread
/// that forked exits: programs are started from the actor's task on a runtime worker thread,
/// which lives as long as the node. It covers the program itself, not the processes it
/// starts (the kernel clears it in them). A node that died between the fork and the `prctl`
/// would leave the program uncovered: the start fails instead.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the prctl and
    // getppid system calls, which are async-signal-safe; it allocates nothing (an error made
    // from an errno holds no allocation) and takes no lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// Runs the health check until it fails `failures` times in a row, then tells the actor.
async fn watch_health(check: HealthCheck, command: String, actor: ActorRef<ProgramMsg>) {
    tokio::time::sleep(Duration::from_millis(check.grace_ms)).await;
    let timeout = Duration::from_millis(check.timeout_ms);
    let mut failed = 0;
    loop {
        let outcome = match tokio::time::timeout(timeout, probe(&check)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match outcome {
            Ok(()) => failed = 0,
            Err(why) => {
                failed += 1;
                metrics::counter!("ensemble_process_health_failures_total", "command" => command.clone())
                    .increment(1);
                tracing::warn!(target: "ensemble_program", %command, failed, "health check failed: {why}");
                if failed >= check.failures {
                    let _ = actor
                        .tell(ProgramMsg::Unhealthy(format!(
                            "program {command:?} is unhealthy: {} failed {failed} times in a row, last: {why}",
                            describe(&check)
                        )))
                        .await;
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(check.interval_ms)).await;
    }
}

fn describe(check: &HealthCheck) -> String {
    if let Some(tcp) = &check.tcp {
        format!("the tcp check of {tcp}")
    } else if let Some(http) = &check.http {
        format!("the http check of {http}")
    } else {
        format!(
            "the exec check {:?}",
            check.exec.as_deref().unwrap_or_default().join(" ")
        )
    }
}

/// One check.
async fn probe(check: &HealthCheck) -> Result<(), String> {
    if let Some(address) = &check.tcp {
        return tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("cannot connect to {address}: {e}"));
    }
    if let Some(url) = &check.http {
        let url = url.clone();
        let timeout = Duration::from_millis(check.timeout_ms);
        return tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into();
            match agent.get(&url).call() {
                Ok(response) if response.status().as_u16() < 400 => Ok(()),
                Ok(response) => Err(format!("GET {url} answered {}", response.status())),
                Err(e) => Err(format!("GET {url}: {e}")),
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("the check panicked: {e}")));
    }
    let exec = check.exec.as_deref().unwrap_or_default();
    let (program, args) = exec.split_first().ok_or("no exec command")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {status}", exec.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_from_toml_with_defaults() {
        let spec: ProgramSpec = toml::from_str(
            r#"
            command = "python3"
            args = ["-m", "http.server", "{port}"]
            health = { http = "http://127.0.0.1:{port}/", interval_ms = 200 }
            "#,
        )
        .unwrap();
        assert_eq!(spec.stop_signal, "TERM");
        assert_eq!(spec.stop_timeout_ms, 5_000);
        let health = spec.health.as_ref().unwrap();
        assert_eq!((health.interval_ms, health.failures), (200, 3));
        spec.validate().unwrap();
    }

    #[test]
    fn bad_specs_name_the_key() {
        let mut spec = ProgramSpec::new("", &[]);
        assert!(spec.validate().unwrap_err().starts_with("command"));
        spec.command = "sleep".into();
        spec.stop_signal = "STOP".into();
        assert!(spec.validate().unwrap_err().starts_with("stop_signal"));
        spec.stop_signal = "SIGINT".into();
        spec.validate().unwrap();
        spec.health =
            Some(toml::from_str("tcp = \"127.0.0.1:1\"\nhttp = \"http://127.0.0.1:1/\"").unwrap());
        assert!(spec.validate().unwrap_err().contains("exactly one"));
        spec.health = Some(toml::from_str("http = \"https://example.com/\"").unwrap());
        assert!(spec.validate().unwrap_err().starts_with("health.http"));
        assert!(toml::from_str::<ProgramSpec>("command = \"x\"\ncomand = \"y\"").is_err());
    }

    #[test]
    fn a_program_child_waits_out_its_stop_timeout() {
        let mut spec = ProgramSpec::new("sleep", &["1000"]);
        spec.stop_timeout_ms = 30_000;
        let child = ChildSpec::program("db", &spec);
        assert_eq!(
            child.shutdown,
            Shutdown::Timeout(Duration::from_secs(30) + KILL_WAIT + Duration::from_secs(1))
        );
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(fill("{node}:{port}", Some(8080), "n1"), "n1:8080");
        assert_eq!(fill("{port}", None, "n1"), "{port}");
    }
}
