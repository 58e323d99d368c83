//! The client: finds the master by name, routes by its table, retries until a deadline.
//!
//! # Routing and retries
//!
//! A call resolves the master from the node's copy of the registry ([`MASTER_NAME`]), asks it
//! for the table (both cached), routes the key by [`partition_of`] to the partition's
//! primary, and asks it with the table's epoch. A failed attempt is tried again, with a
//! growing pause (10 ms to 200 ms), until the deadline; the error then names the key, the
//! number of attempts and the last failure. What a failure changes:
//!
//! - the master gone, silent or not registered: the master is resolved again; the table is
//!   kept;
//! - a primary gone or silent, a refusal such as [`KvError::NotPrimary`], a partition without
//!   a primary: the table is fetched anew by the next attempt (by one call at a time; the
//!   others go on with the table they have);
//! - [`KvError::Overloaded`]: nothing; the pause is the remedy.
//!
//! A fetched table replaces the cached one partition by partition: a partition that the new
//! table names no primary for (its master is recovering, or placing the partition) keeps the
//! entry the client had. So while the master is away (failing over), calls to partitions whose
//! primaries live keep working with the table the client has, and only those whose primary
//! went wait for the new master. When the master does not answer a fetch in time, calls go on
//! with the cached table for a fifth of a second before one tries again.
//!
//! # Writes are retried
//!
//! A write whose answer was lost may have been applied; trying it again writes the same value
//! again, which is harmless for `put` and `delete`. A write that failed at the deadline may or
//! may not have been applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::MASTER_NAME;
use super::protocol::{KvError, MasterMsg, PartitionId, Status, Table, WorkerMsg, partition_of};
use crate::registry::Registry;
use crate::{ActorId, ActorRef, AskError, Node, NodeId, ReplyTo};

/// The pause before the first retry; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// After a failed fetch of the table, how long calls go on with the cached one before one
/// tries again: otherwise each would wait on a master that is away.
const REFETCH_PAUSE: Duration = Duration::from_millis(200);

/// A client of the key-value service, for one node. Cheap to clone; clones share the cached
/// master and table, and the counters.
#[derive(Clone)]
pub struct KvClient {
    registry: Registry,
    deadline: Duration,
    attempt_timeout: Duration,
    shared: Arc<Shared>,
}

/// What clones share.
#[derive(Default)]
struct Shared {
    /// The master and its table as last resolved and fetched.
    cache: Mutex<Cache>,
    calls: AtomicU64,
    retries: AtomicU64,
    resolutions: AtomicU64,
    refreshes: AtomicU64,
}

#[derive(Default)]
struct Cache {
    master: Option<ActorRef<MasterMsg>>,
    table: Option<Arc<Table>>,
    /// An attempt found the table wrong somewhere: the next one fetches it anew.
    stale: bool,
    /// A call is fetching the table: the others go on with the cached one meanwhile.
    fetching: bool,
    /// When the last fetch failed.
    fetch_failed: Option<Instant>,
}

/// What a client did so far, for demos: see [`KvClient::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls made (each `put`, `get`, `delete`, `table`, `status`).
    pub calls: u64,
    /// Attempts beyond the first of each call.
    pub retries: u64,
    /// Times the master was looked up by name.
    pub master_resolutions: u64,
    /// Times the table was fetched from the master.
    pub table_refreshes: u64,
}

impl ClientStats {
    /// What happened between `earlier` and these counters.
    pub fn since(&self, earlier: &ClientStats) -> ClientStats {
        ClientStats {
            calls: self.calls.saturating_sub(earlier.calls),
            retries: self.retries.saturating_sub(earlier.retries),
            master_resolutions: self
                .master_resolutions
                .saturating_sub(earlier.master_resolutions),
            table_refreshes: self.table_refreshes.saturating_sub(earlier.table_refreshes),
        }
    }
}

/// What went wrong in one attempt of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No master is registered under [`MASTER_NAME`] in this node's copy of the registry.
    NoMaster,
    /// The name resolves to something that is not a master (another protocol).
    NotAMaster(String),
    /// The master did not answer.
    Master {
        /// The master asked.
        master: ActorId,
        /// What happened.
        error: AskError,
    },
    /// The master's table names no primary for the partition yet (it is recovering, or
    /// assigning the partition after a failure).
    Unassigned {
        /// The partition.
        partition: PartitionId,
    },
    /// The partition's primary did not answer.
    Worker {
        /// The partition.
        partition: PartitionId,
        /// The worker asked.
        worker: ActorId,
        /// What happened.
        error: AskError,
    },
    /// The partition's primary refused the request.
    Refused(KvError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoMaster => write!(f, "no master is registered under {MASTER_NAME:?}"),
            Failure::NotAMaster(reason) => {
                write!(f, "{MASTER_NAME:?} is not a kv master: {reason}")
            }
            Failure::Master { master, error } => write!(f, "master {master}: {error}"),
            Failure::Unassigned { partition } => {
                write!(f, "the master has no primary for partition {partition} yet")
            }
            Failure::Worker {
                partition,
                worker,
                error,
            } => write!(f, "primary {worker} of partition {partition}: {error}"),
            Failure::Refused(err) => err.fmt(f),
        }
    }
}

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvClientError {
    /// The call did not succeed before its deadline.
    Deadline {
        /// The operation: `put`, `get`, `delete`, `table` or `status`.
        op: &'static str,
        /// The key, for operations on one.
        key: Option<String>,
        /// The deadline that passed.
        after: Duration,
        /// Attempts made.
        attempts: u32,
        /// What went wrong last (boxed: it is large, and errors travel far).
        last: Box<Failure>,
    },
    /// The node has no registry to find the master with.
    NoRegistry {
        /// The node.
        node: NodeId,
    },
}

impl std::fmt::Display for KvClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvClientError::Deadline {
                op,
                key,
                after,
                attempts,
                last,
            } => {
                f.write_str(op)?;
                if let Some(key) = key {
                    write!(f, " of key {key:?}")?;
                }
                write!(
                    f,
                    " did not succeed within {after:?} ({attempts} attempts); last: {last}"
                )
            }
            KvClientError::NoRegistry { node } => write!(
                f,
                "node {node} has no registry to find the kv master with (start it with Registry::start first)"
            ),
        }
    }
}

impl std::error::Error for KvClientError {}

/// One call's attempts.
struct Attempts<'a> {
    client: &'a KvClient,
    op: &'static str,
    key: Option<&'a str>,
    started: Instant,
    attempts: u32,
    pause: Duration,
}

impl Attempts<'_> {
    /// Time left for the next attempt.
    fn budget(&self) -> Duration {
        self.client
            .deadline
            .saturating_sub(self.started.elapsed())
            .min(self.client.attempt_timeout)
            .max(Duration::from_millis(1))
    }

    /// Records a failed attempt (see the module docs for what it changes in the cache), and
    /// waits before the next one, or gives up at the deadline.
    async fn failed(&mut self, failure: Failure) -> Result<(), KvClientError> {
        self.attempts += 1;
        self.client.note(&failure);
        let left = self.client.deadline.saturating_sub(self.started.elapsed());
        if left <= self.pause {
            return Err(KvClientError::Deadline {
                op: self.op,
                key: self.key.map(str::to_owned),
                after: self.client.deadline,
                attempts: self.attempts,
                last: Box::new(failure),
            });
        }
        tracing::debug!(op = self.op, key = ?self.key, attempt = self.attempts, %failure, "kv call failed; retrying");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        self.client.shared.retries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl KvClient {
    /// A client finding the master through `registry`, with a 10 s deadline per call and 2 s
    /// per attempt.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            shared: Arc::default(),
        }
    }

    /// A client using the registry of `node`.
    pub fn from_node(node: &Node) -> Result<Self, KvClientError> {
        node.extension::<Registry>()
            .map(Self::new)
            .ok_or_else(|| KvClientError::NoRegistry {
                node: node.id().clone(),
            })
    }

    /// How long a call may take, retries included.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long one attempt waits for the master or a worker.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// What this client (and its clones) did so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.shared;
        ClientStats {
            calls: s.calls.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            master_resolutions: s.resolutions.load(Ordering::Relaxed),
            table_refreshes: s.refreshes.load(Ordering::Relaxed),
        }
    }

    /// Sets `key` to `value`; returns the partition's version after the write. Answered once
    /// the partition's backup holds the write too (if it has one).
    pub async fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<u64, KvClientError> {
        let key = key.into();
        self.write("put", &key, Some(value.into())).await
    }

    /// Removes `key` (removing an absent key succeeds); returns the partition's version after.
    pub async fn delete(&self, key: &str) -> Result<u64, KvClientError> {
        self.write("delete", key, None).await
    }

    /// The value of `key`, read from its partition's primary.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvClientError> {
        let mut attempts = self.attempts("get", Some(key));
        loop {
            let budget = attempts.budget();
            let outcome = self
                .on_primary(key, budget, |partition, epoch, reply| WorkerMsg::Read {
                    partition,
                    epoch,
                    key: key.to_owned(),
                    reply,
                })
                .await;
            match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => attempts.failed(failure).await?,
            }
        }
    }

    /// The master's current table (fetched anew).
    pub async fn table(&self) -> Result<Table, KvClientError> {
        let mut attempts = self.attempts("table", None);
        loop {
            match self.fetch_table(attempts.budget()).await {
                Ok(table) => {
                    self.keep(&table);
                    return Ok(table);
                }
                Err(failure) => attempts.failed(failure).await?,
            }
        }
    }

    /// The master's status summary.
    pub async fn status(&self) -> Result<Status, KvClientError> {
        let mut attempts = self.attempts("status", None);
        loop {
            let outcome = match self.master() {
                Ok(master) => master
                    .ask(MasterMsg::Status, attempts.budget())
                    .await
                    .map_err(|error| Failure::Master {
                        master: master.id().clone(),
                        error,
                    }),
                Err(failure) => Err(failure),
            };
            match outcome {
                Ok(status) => return Ok(status),
                Err(failure) => attempts.failed(failure).await?,
            }
        }
    }

    fn attempts<'a>(&'a self, op: &'static str, key: Option<&'a str>) -> Attempts<'a> {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        Attempts {
            client: self,
            op,
            key,
            started: Instant::now(),
            attempts: 0,
            pause: FIRST_PAUSE,
        }
    }

    async fn write(
        &self,
        op: &'static str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<u64, KvClientError> {
        let mut attempts = self.attempts(op, Some(key));
        loop {
            let budget = attempts.budget();
            let outcome = self
                .on_primary(key, budget, |partition, epoch, reply| WorkerMsg::Write {
                    partition,
                    epoch,
                    key: key.to_owned(),
                    value: value.clone(),
                    reply,
                })
                .await;
            match outcome {
                Ok(version) => return Ok(version),
                Err(failure) => attempts.failed(failure).await?,
            }
        }
    }

    /// One attempt of a request to the primary of `key`'s partition.
    async fn on_primary<T: Send + 'static>(
        &self,
        key: &str,
        budget: Duration,
        request: impl FnOnce(PartitionId, u64, ReplyTo<Result<T, KvError>>) -> WorkerMsg,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        let table = self.cached_table(budget).await?;
        let partition = partition_of(key, table.partitions());
        let entry = &table.entries[partition as usize];
        let primary = entry
            .primary
            .as_ref()
            .ok_or(Failure::Unassigned { partition })?;
        let left = budget
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        match primary
            .ask(|reply| request(partition, entry.epoch, reply), left)
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(refusal)) => Err(Failure::Refused(refusal)),
            Err(error) => Err(Failure::Worker {
                partition,
                worker: primary.id().clone(),
                error,
            }),
        }
    }

    /// The master, resolved by name if not cached.
    fn master(&self) -> Result<ActorRef<MasterMsg>, Failure> {
        if let Some(master) = self.lock().master.clone() {
            return Ok(master);
        }
        self.shared.resolutions.fetch_add(1, Ordering::Relaxed);
        let master = self
            .registry
            .whereis::<MasterMsg>(MASTER_NAME)
            .map_err(|err| Failure::NotAMaster(err.to_string()))?
            .ok_or(Failure::NoMaster)?;
        self.lock().master = Some(master.clone());
        Ok(master)
    }

    /// The table to route by: the cached one, unless an attempt found it wrong and no other
    /// call is fetching it (nor failed to lately), or there is none; then fetched from the
    /// master, and the cached one if that fails.
    async fn cached_table(&self, budget: Duration) -> Result<Arc<Table>, Failure> {
        let cached = {
            let mut cache = self.lock();
            let recently_failed = cache
                .fetch_failed
                .is_some_and(|failed| failed.elapsed() < REFETCH_PAUSE);
            match &cache.table {
                Some(table) if !cache.stale || cache.fetching || recently_failed => {
                    return Ok(table.clone());
                }
                _ => {}
            }
            cache.fetching = true;
            cache.table.clone()
        };
        // A caller that stops waiting (a timeout around the call) ends the fetch too: then
        // the guard lets the next one start.
        let mut fetching = Fetching(Some(self));
        let fetched = self.fetch_table(budget).await;
        let mut cache = self.lock();
        // Its end and its outcome in one step: no other fetch starts in between.
        fetching.0 = None;
        cache.fetching = false;
        match fetched {
            Ok(table) => {
                cache.fetch_failed = None;
                Ok(keep(&mut cache, &table))
            }
            Err(failure) => {
                if let Failure::Master { error, .. } = &failure {
                    cache.master = None;
                    // Only a master that does not answer costs the next fetch a wait; one
                    // known gone is resolved anew at once (its successor may be up).
                    if matches!(error, AskError::Timeout { .. }) {
                        cache.fetch_failed = Some(Instant::now());
                    }
                }
                cached.ok_or(failure)
            }
        }
    }

    /// Asks the master for its table.
    async fn fetch_table(&self, budget: Duration) -> Result<Table, Failure> {
        let master = self.master()?;
        self.shared.refreshes.fetch_add(1, Ordering::Relaxed);
        let table = master
            .ask(MasterMsg::Table, budget)
            .await
            .map_err(|error| Failure::Master {
                master: master.id().clone(),
                error,
            })?;
        if table.entries.is_empty() {
            return Err(Failure::Unassigned { partition: 0 });
        }
        Ok(table)
    }

    /// Caches a fetched table (see [`keep`]).
    fn keep(&self, fetched: &Table) -> Arc<Table> {
        keep(&mut self.lock(), fetched)
    }

    /// What a failed attempt tells about the cache.
    fn note(&self, failure: &Failure) {
        let mut cache = self.lock();
        match failure {
            Failure::NoMaster | Failure::NotAMaster(_) | Failure::Master { .. } => {
                cache.master = None;
            }
            Failure::Refused(KvError::Overloaded { .. }) => {}
            Failure::Unassigned { .. } | Failure::Worker { .. } | Failure::Refused(_) => {
                cache.stale = true;
            }
        }
    }

    /// The cache; never held across an `.await`.
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Caches a fetched table over the cached one: a partition the new one names no primary for
/// keeps its cached entry (its primary may well live; a refusal says otherwise), and a table
/// older than the cached one of the same master is not taken. With such a partition the table
/// is fetched again by the next attempt that finds it wrong.
fn keep(cache: &mut Cache, fetched: &Table) -> Arc<Table> {
    if let Some(cached) = &cache.table
        && cached.master == fetched.master
        && cached.revision > fetched.revision
    {
        return cached.clone();
    }
    let table = match &cache.table {
        Some(cached) if cached.entries.len() == fetched.entries.len() => {
            let mut table = fetched.clone();
            for (entry, old) in table.entries.iter_mut().zip(&cached.entries) {
                if entry.primary.is_none() && old.primary.is_some() {
                    *entry = old.clone();
                }
            }
            table
        }
        _ => fetched.clone(),
    };
    let table = Arc::new(table);
    cache.table = Some(table.clone());
    cache.stale = false;
    table
}

/// A fetch of the table under way; dropped with it, it lets the next one start.
struct Fetching<'a>(Option<&'a KvClient>);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.0 {
            client.lock().fetching = false;
        }
    }
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClient")
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("stats", &self.stats())
            .finish()
    }
}
