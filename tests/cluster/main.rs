//! Clusters of real processes on loopback: forming, failure detection after `kill -9`, and
//! refusing peers that must not join (`security`: no certificate, another CA's, another
//! node's name, another cluster, garbled, stalled and replayed handshakes).
//!
//! Every node but one runs in a child process: this test binary started again with
//! `ENSEMBLE_TEST_NODE` set, running the ignored `child_node` entry below. The parent is a node
//! too, and watches membership through its own cluster service.

mod child;
#[path = "../common/mod.rs"]
mod common;
mod forming;
mod messaging;
mod protocol;
mod security;
mod signals;
mod slow_link;
mod util;

/// The entry point of a child node process (see `child.rs`); ignored in normal runs.
#[test]
#[ignore = "entry point of child node processes, run by the cluster tests"]
fn child_node() {
    child::run();
}
