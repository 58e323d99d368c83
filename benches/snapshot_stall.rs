//! How long the registry log's appends wait while a snapshot is saved.
//!
//! One log store on this machine's disk, as a voter has it (`LogStore`, fsync on). A task
//! appends one entry at a time, each waiting until it is on disk, as a follower's appends do.
//! First alone, then while the state machine saves a snapshot of each size given, and for a
//! second after each save (when fjall writes the snapshot's memtable out to a table of its
//! own in the background); the report gives the appends' latency in each case and how long
//! the save took.
//!
//! Run: `cargo bench --bench snapshot_stall`. `ENSEMBLE_BENCH_SNAPSHOT_MB=3,75` (the default)
//! sets the snapshot sizes in MB. Figures: docs/performance.md, "Snapshots and the log".
#![allow(missing_docs)]

#[path = "common/runtime.rs"]
mod runtime;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ensemble_registry::raft::TypeConfig;
use ensemble_registry::raft::log_store::{LogStore, StoredSnapshot};
use openraft::StoredMembership;
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta};

/// Appends made alone, before any snapshot, for the baseline.
const ALONE: usize = 500;

/// How long the appends go on after a save returns.
const AFTER: Duration = Duration::from_secs(1);

fn main() {
    let sizes: Vec<usize> = std::env::var("ENSEMBLE_BENCH_SNAPSHOT_MB")
        .unwrap_or_else(|_| "3,75".to_owned())
        .split(',')
        .map(|mb| {
            mb.trim().parse().unwrap_or_else(|_| {
                panic!("ENSEMBLE_BENCH_SNAPSHOT_MB: {mb:?} is not a whole number of MB")
            })
        })
        .collect();
    runtime::runtime().block_on(run(sizes));
}

async fn run(sizes: Vec<usize>) {
    let dir = tempfile::tempdir().expect("a temporary directory for the log");
    let mut store =
        LogStore::<TypeConfig>::open(&dir.path().join("registry-log")).expect("open the log store");
    let mut next = 1;

    let mut alone = Vec::with_capacity(ALONE);
    for _ in 0..ALONE {
        alone.push(append(&mut store, &mut next).await);
    }
    report("appends alone", &mut alone, None);

    for mb in sizes {
        let data = noise(mb * 1024 * 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let mut store = store.clone();
            let stop = Arc::clone(&stop);
            let mut index = next;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let took = append(&mut store, &mut index).await;
                    latencies.push((Instant::now(), took));
                }
                (latencies, index)
            })
        };
        // Let the appender reach its pace first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(next)),
                last_membership: StoredMembership::new(
                    Some(log_id(1)),
                    Membership::new(vec![[1].into()], None),
                ),
                snapshot_id: format!("bench-{mb}mb"),
            },
            data,
        };
        let started = Instant::now();
        store
            .save_snapshot(&snapshot)
            .await
            .expect("save the snapshot");
        let saved = started.elapsed();
        let saved_at = Instant::now();
        tokio::time::sleep(AFTER).await;
        stop.store(true, Ordering::Relaxed);
        let (latencies, reached) = appender.await.expect("the appender");
        next = reached;
        let (mut during, mut after): (Vec<_>, Vec<_>) =
            latencies.into_iter().partition(|(at, _)| *at <= saved_at);
        let mut during: Vec<Duration> = during.drain(..).map(|(_, took)| took).collect();
        let mut after: Vec<Duration> = after.drain(..).map(|(_, took)| took).collect();
        report(
            &format!("appends during a {mb} MB snapshot"),
            &mut during,
            Some(saved),
        );
        report(&format!("  and in the {AFTER:?} after"), &mut after, None);
    }
}

/// Appends one blank entry and waits until it is on disk; returns how long that took.
async fn append(store: &mut LogStore<TypeConfig>, next: &mut u64) -> Duration {
    let entry = Entry {
        log_id: log_id(*next),
        payload: EntryPayload::Blank,
    };
    *next += 1;
    let started = Instant::now();
    store.blocking_append([entry]).await.expect("append");
    started.elapsed()
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Bytes that no compressor shrinks, as an encoded state would barely shrink.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn report(what: &str, latencies: &mut [Duration], saved: Option<Duration>) {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let save = saved.map_or(String::new(), |saved| {
        format!("   the save took {:8.1} ms", ms(saved))
    });
    println!(
        "{what:<36} {:6} appends   p50 {:7.3} ms   p99 {:7.3} ms   max {:8.3} ms{save}",
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
}
