//! Ask deadlines: one sweeper per node instead of one timer per ask.
//!
//! A tokio timer per ask costs a registration in the runtime's timer wheel and, on a
//! multi-thread runtime, often a wake-up of the worker parked on the timer driver: more than the
//! rest of the ask together (docs/performance.md). Asks instead register their deadline here;
//! a sweeper task, running only while asks are outstanding, wakes those whose deadline has
//! passed every [`TICK`]. So an ask times out between its timeout and its timeout plus one tick.

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use parking_lot::Mutex;
use slab::Slab;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// How often the sweeper checks deadlines: the precision of ask timeouts.
pub(crate) const TICK: Duration = Duration::from_millis(10);

pub(crate) struct Deadlines {
    state: Mutex<State>,
}

struct State {
    entries: Slab<Entry>,
    /// Whether a sweeper task is running; it stops when no deadline is left.
    sweeping: bool,
}

struct Entry {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                entries: Slab::new(),
                sweeping: false,
            }),
        }
    }

    /// Registers a deadline; `waker` is woken once it has passed. Returns the key to poll and
    /// remove it with.
    pub(crate) fn register(
        self: &Arc<Self>,
        runtime: &Handle,
        deadline: Instant,
        waker: &Waker,
    ) -> usize {
        let (key, start_sweeper) = {
            let mut state = self.state.lock();
            let key = state.entries.insert(Entry {
                deadline,
                waker: waker.clone(),
                expired: false,
            });
            (key, !std::mem::replace(&mut state.sweeping, true))
        };
        // Outside the lock: a runtime that has shut down drops the sweeper inside `spawn`,
        // and its drop takes the lock.
        if start_sweeper {
            runtime.spawn(sweep(Sweeper {
                deadlines: Arc::clone(self),
                finished: false,
            }));
        }
        key
    }

    /// True once the deadline has passed; otherwise keeps `waker` as the one to wake.
    pub(crate) fn expired(&self, key: usize, waker: &Waker) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = state.entries.get_mut(key) else {
            return true;
        };
        if !entry.expired && !entry.waker.will_wake(waker) {
            entry.waker = waker.clone();
        }
        entry.expired
    }

    pub(crate) fn remove(&self, key: usize) {
        self.state.lock().entries.try_remove(key);
    }
}

/// The sweeper task's hold on the deadlines. A sweeper that ends other than by finding no
/// deadline left (dropped with its runtime, started or not, or a panic) lets the next
/// registration start another: otherwise no deadline of the node would pass again.
struct Sweeper {
    deadlines: Arc<Deadlines>,
    finished: bool,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if !self.finished {
            self.deadlines.state.lock().sweeping = false;
        }
    }
}

/// Wakes the asks whose deadline passed, every [`TICK`], while any is registered.
async fn sweep(mut sweeper: Sweeper) {
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut state = sweeper.deadlines.state.lock();
            if state.entries.is_empty() {
                // Under the lock that registrations check it under.
                state.sweeping = false;
                sweeper.finished = true;
                return;
            }
            for (_, entry) in state.entries.iter_mut() {
                if !entry.expired && entry.deadline <= now {
                    entry.expired = true;
                    due.push(entry.waker.clone());
                }
            }
        }
        for waker in due {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration on a node whose runtime has shut down: the sweeper is dropped at once,
    /// and the registration returns.
    #[test]
    fn a_registration_after_the_runtime_ended_returns() {
        let deadlines = Arc::new(Deadlines::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        drop(runtime);
        let (done, registered) = std::sync::mpsc::channel();
        let registering = Arc::clone(&deadlines);
        std::thread::spawn(move || {
            registering.register(&handle, Instant::now(), Waker::noop());
            let _ = done.send(());
        });
        registered
            .recv_timeout(Duration::from_secs(10))
            .expect("the registration returned");
        assert!(!deadlines.state.lock().sweeping);
    }

    #[test]
    fn a_sweeper_gone_with_its_runtime_is_started_again() {
        let deadlines = Arc::new(Deadlines::new());
        let waker = Waker::noop();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let key = first.block_on(async {
            deadlines.register(
                &Handle::current(),
                Instant::now() + Duration::from_secs(3600),
                waker,
            )
        });
        // The runtime ends with its sweeper unfinished: a deadline is still waiting.
        drop(first);
        deadlines.remove(key);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        second.block_on(async {
            let key = deadlines.register(&Handle::current(), Instant::now(), waker);
            tokio::time::timeout(Duration::from_secs(10), async {
                while !deadlines.expired(key, waker) {
                    tokio::time::sleep(TICK).await;
                }
            })
            .await
            .expect("a new sweeper passed the deadline");
        });
    }
}
