//! The key-value example (`ensemble::kv`) on a cluster of three nodes in this process (real
//! QUIC on loopback, a real registry): puts and gets round-trip; killing workers keeps every
//! acknowledged key readable; a master stopped and started again on another node rebuilds its
//! table from the workers, and clients find it again; and, without a master, the worker
//! protocol itself (replication, snapshots, the fencing of a replaced primary).
//!
//! Each test runs its own cluster; they take turns (see `util::one_cluster_at_a_time`).

// Shared with the child-process tests, whose seeds helper is not needed here.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
mod failover;
#[path = "../common/in_process.rs"]
mod in_process;
mod protocol;
mod roundtrip;
mod util;
