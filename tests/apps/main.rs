//! Apps across real processes on loopback: an app deployed on a cluster of nodes, nodes
//! killed with `kill -9` one by one, every role back at its count on the survivors, names
//! resolving to live instances, placement constraints honoured, singleton holders never
//! overlapping, and a node that joins later taking new placements.
//!
//! Every node runs in a child process: this binary started again with `ENSEMBLE_TEST_NODE`
//! set, running the ignored `child_node` entry (see `child.rs`), driven through its standard
//! input like the registry's process tests.

mod agent;
mod child;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
mod controller;
#[path = "../common/in_process.rs"]
mod in_process;
mod kv;
mod placement;
mod singleton;
mod solo;
mod supervision;
#[allow(dead_code)]
#[path = "../registry/util.rs"]
mod util;
mod waiting;

/// The entry point of a child node process (see `child.rs`); ignored in normal runs.
#[test]
#[ignore = "entry point of child node processes, run by the app tests"]
fn child_node() {
    child::run();
}
