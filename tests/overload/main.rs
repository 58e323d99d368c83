//! Overload: senders faster than their receivers, locally and across nodes; a million idle
//! actors on one node; ten node processes on one machine.
//!
//! - `local.rs`: a gated receiver flooded with `tell` (the sender is held back by the bounded
//!   mailbox) and with `try_tell` (excess messages are refused and handed back, so the
//!   sender knows exactly which were dropped).
//! - `remote.rs`: the same across two nodes over QUIC on loopback: the receiving node drops
//!   what does not fit, counts it as dead letters, and tells askers; memory stays bounded.
//! - `idle.rs`: a million idle actors, RSS growth under 1 GB (`ENSEMBLE_IDLE_ACTORS=N` for
//!   another count).
//! - `cluster.rs`: ten `ensemble node` processes form a cluster, one is killed with
//!   `kill -9` and declared down everywhere, and after it is started again all ten are back.
//!
//! Memory is checked two ways: exactly, by counting the messages alive (each carries a
//! payload that counts itself in and out), and roughly, by the process's resident set from
//! `/proc/self/statm`, against a bound far below what an unbounded queue would hold.

mod cluster;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
mod idle;
mod local;
mod remote;

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Payloads alive right now, and the most ever alive at once.
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

/// A message payload that counts itself while it exists (also when made by decoding a
/// remote message).
pub(crate) struct Load {
    pub(crate) id: u64,
    bytes: Vec<u8>,
}

impl Load {
    pub(crate) fn new(id: u64, size: usize) -> Load {
        Load::counted(id, vec![7; size])
    }

    fn counted(id: u64, bytes: Vec<u8>) -> Load {
        let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(live, Ordering::SeqCst);
        Load { id, bytes }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Serialize for Load {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.id, &self.bytes).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Load {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Load, D::Error> {
        let (id, bytes) = <(u64, Vec<u8>)>::deserialize(deserializer)?;
        Ok(Load::counted(id, bytes))
    }
}

/// Payloads alive now, and the peak since the last [`reset_peak`].
pub(crate) fn live() -> (i64, i64) {
    (LIVE.load(Ordering::SeqCst), PEAK.load(Ordering::SeqCst))
}

pub(crate) fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// The resident set of this process, in bytes.
pub(crate) fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Memory tests take turns, so one's allocations do not show in another's figures.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;
