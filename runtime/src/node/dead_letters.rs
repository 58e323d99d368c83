//! Dead letters: messages that were accepted for, or sent to, an actor that never handled them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::id::ActorId;

/// Counts dead letters (in the node and in the `ensemble_dead_letters_total` metric) and logs
/// them at debug level, at most once a second, with the number left unlogged since.
pub(crate) struct DeadLetters {
    count: AtomicU64,
    unlogged: AtomicU64,
    origin: Instant,
    /// Milliseconds since `origin` before which no further line is logged.
    next_log_ms: AtomicU64,
}

impl DeadLetters {
    pub(crate) fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            origin: Instant::now(),
            next_log_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, count: u64, to: &ActorId, why: &'static str) {
        self.count.fetch_add(count, Ordering::Relaxed);
        metrics::counter!("ensemble_dead_letters_total").increment(count);
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_log_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_log_ms
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged_before = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::debug!(actor = %to, count, unlogged_before, "dead letters: {why}");
        } else {
            self.unlogged.fetch_add(count, Ordering::Relaxed);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
