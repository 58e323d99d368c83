//! The registry across real processes on loopback: names, groups, locks, leases and config on
//! three voters; the leader killed with `kill -9`; a minority that cannot write and fences
//! itself; a full restart keeping every acknowledged write; session expiry downing a node.
//!
//! Every node but the test's own runs in a child process: this binary started again with
//! `ENSEMBLE_TEST_NODE` set, running the ignored `child_node` entry, which takes commands on
//! its standard input (see `child.rs`).

mod child;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/in_process.rs"]
mod in_process;
mod inproc;
mod processes;
mod util;

/// The entry point of a child node process (see `child.rs`); ignored in normal runs.
#[test]
#[ignore = "entry point of child node processes, run by the registry tests"]
fn child_node() {
    child::run();
}
