//! Helpers shared by the test binaries whose nodes run in child processes (`tests/cluster`,
//! `tests/registry`, `tests/chaos`, `tests/overload`...); each includes this file as its
//! `common` module.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ensemble::transport::certs::ClusterCa;

/// A CA in a temporary directory, with certificates for `nodes`. With `ENSEMBLE_TEST_KEEP`
/// set, the directory (certificates, data dirs, node logs) is kept and its path printed.
pub(crate) fn certificates(nodes: &[&str]) -> tempfile::TempDir {
    let keep = std::env::var_os("ENSEMBLE_TEST_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("ensemble-test-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    if keep {
        eprintln!("keeping {}", dir.path().display());
    }
    let ca = ClusterCa::generate("test").expect("CA");
    ca.save(dir.path()).expect("save CA");
    for node in nodes {
        ca.issue(node)
            .expect("issue")
            .save(dir.path())
            .expect("save cert");
    }
    dir
}

/// The seed addresses in environment variable `var` (comma-separated; none if unset).
pub(crate) fn seeds_from_env(var: &str) -> Vec<SocketAddr> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("seed address"))
        .collect()
}

/// Stops process `pid` (`kill -STOP`) and waits until each of its threads has stopped. `kill`
/// returns once the signal is sent, and a thread of the process may run on for a while: one on
/// the other core until it is interrupted, or one waiting for a core on a loaded machine until
/// it gets one. A message sent meanwhile could still be answered.
pub(crate) fn stop_process(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -STOP {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !every_thread_stopped(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still had a thread running 20 s after SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn every_thread_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name, which is in parentheses and may hold
                // any character.
                let (_, rest) = stat.rsplit_once(')')?;
                rest.trim_start().chars().next()
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// Logs to standard error with the filter in environment variable `var`, if set.
pub(crate) fn log_from_env(var: &str) {
    if let Ok(filter) = std::env::var(var) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
}
