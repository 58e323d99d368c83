//! `ensemble demo`: run to its end, it exits 0 having read back every acknowledged write; run
//! and interrupted, it removes every child process and its temp dir.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{Running, alive, command};

const WAIT: Duration = Duration::from_secs(120);

/// The temp dir and node pids the demo printed.
fn printed(lines: &[String]) -> (PathBuf, Vec<u32>) {
    let certs = lines
        .iter()
        .find_map(|l| l.split(" in ").nth(1).filter(|p| p.ends_with("/certs")))
        .expect("the demo prints where its certificates are");
    let dir = PathBuf::from(certs.trim_end_matches("/certs"));
    let pids = lines
        .iter()
        .filter_map(|l| l.split("(pid ").nth(1))
        .filter_map(|rest| rest.split(')').next()?.parse().ok())
        .collect();
    (dir, pids)
}

#[test]
fn the_demo_fails_over_and_cleans_up() {
    let mut demo = Running::start(command(&["demo", "--warmup-secs", "1"], &[]));
    let status = demo.wait(WAIT);
    demo.rest(Duration::from_secs(5));
    let output = demo.seen.join("\n");
    assert!(status.success(), "exit status {status}; output:\n{output}");
    for needle in [
        "kill -9 node",
        "suspected",
        "session expired",
        "taken over",
        "re-resolved",
        "writes acknowledged again",
        "failover",
    ] {
        assert!(output.contains(needle), "{needle:?} missing:\n{output}");
    }
    check_failover_lines(&demo.seen);
    let read_back = demo
        .seen
        .iter()
        .find(|l| l.contains("read back"))
        .expect("a read-back line");
    assert!(!read_back.contains("LOST"), "{read_back}");
    let (dir, pids) = printed(&demo.seen);
    assert_eq!(pids.len(), 4, "3 nodes and the killed one's pid: {output}");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    for pid in pids {
        assert!(!alive(pid), "node process {pid} was left running");
    }
}

/// The write that showed writes acknowledged again went to a partition whose primary was on
/// the killed node, and the master's lease was granted again with a greater fencing token.
fn check_failover_lines(lines: &[String]) {
    let output = lines.join("\n");
    let kill = lines
        .iter()
        .find(|l| l.contains("kill -9 node"))
        .unwrap_or_else(|| panic!("no kill line:\n{output}"));
    let victim_partitions: Vec<u32> = kill
        .split("the primaries of partitions ")
        .nth(1)
        .unwrap_or_else(|| panic!("the kill line names no partitions: {kill}"))
        .split(", ")
        .map(|p| p.trim().parse().expect("a partition number"))
        .collect();
    let write = lines
        .iter()
        .find(|l| l.contains("writes acknowledged again"))
        .unwrap_or_else(|| panic!("no write line:\n{output}"));
    // "writes acknowledged again: KEY (partition P of N, ..."
    let rest = write
        .split("writes acknowledged again: ")
        .nth(1)
        .expect("a key");
    let (key, rest) = rest.split_once(" (partition ").expect("a partition");
    let (partition, rest) = rest.split_once(" of ").expect("a partition count");
    let count = rest.split(',').next().expect("a partition count");
    let (partition, count): (u32, u32) = (partition.parse().unwrap(), count.parse().unwrap());
    assert_eq!(ensemble::kv::partition_of(key, count), partition, "{write}");
    assert!(
        victim_partitions.contains(&partition),
        "{write}: partition {partition} is not among the killed node's {victim_partitions:?}"
    );
    let lease = lines
        .iter()
        .find(|l| l.contains("taken over by"))
        .unwrap_or_else(|| panic!("no lease line:\n{output}"));
    // "... with fencing token NEW (was OLD)"
    let tokens = lease.split("fencing token ").nth(1).expect("a token");
    let (new, old) = tokens.split_once(" (was ").expect("the old token");
    let (new, old): (u64, u64) = (
        new.parse().unwrap(),
        old.trim_end_matches(')').parse().unwrap(),
    );
    assert!(new > old, "{lease}");
}

#[test]
fn an_interrupted_demo_removes_its_processes_and_temp_dir() {
    let mut cmd = command(&["demo", "--warmup-secs", "30"], &[]);
    // Its `error: interrupted` is expected; keep it out of the test output.
    cmd.stderr(std::process::Stdio::null());
    let mut demo = Running::start(cmd);
    demo.wait_for_line("writing:", WAIT);
    demo.signal(Signal::SIGINT);
    let status = demo.wait(WAIT);
    demo.rest(Duration::from_secs(5));
    let output = demo.seen.join("\n");
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("interrupted"), "{output}");
    let (dir, pids) = printed(&demo.seen);
    assert_eq!(pids.len(), 3, "{output}");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    for pid in pids {
        assert!(!alive(pid), "node process {pid} was left running");
    }
}
