//! The durable Raft log: entries, vote, purge and commit pointers, and the state machine's
//! snapshot, in one redb file.
//!
//! [`LogStore`] implements openraft's [`RaftLogStorage`] and [`RaftLogReader`] (storage API v2).
//! The state machine keeps its snapshot in the same file through [`LogStore::save_snapshot`] and
//! [`LogStore::load_snapshot`], so a node's whole durable Raft state is one file to back up, move
//! or delete.
//!
//! # Layout
//!
//! | table      | key                  | value                                              |
//! |------------|----------------------|----------------------------------------------------|
//! | `log`      | `u64` log index      | the entry, MessagePack (`rmp_serde::to_vec_named`) |
//! | `meta`     | `"vote"`             | [`Vote`], MessagePack                              |
//! | `meta`     | `"last_purged"`      | [`LogId`] of the last purged entry, MessagePack    |
//! | `meta`     | `"committed"`        | [`LogId`] last known committed, MessagePack        |
//! | `meta`     | `"format"`           | `u32` layout version, MessagePack                  |
//! | `snapshot` | `"meta"`             | [`SnapshotMeta`], MessagePack                      |
//! | `snapshot` | `"data"`             | the snapshot bytes as they are                     |
//!
//! Values are encoded with field names so that adding a field to an entry type later still
//! reads old logs; the few bytes this costs per entry do not matter next to an fsync.
//!
//! # Durability
//!
//! Every write (append, vote, truncate, purge, committed, snapshot) is one redb write
//! transaction committed with [`Durability::Immediate`], which fsyncs before the commit returns.
//! [`LogStore::append`](RaftLogStorage::append) reports the entries flushed to openraft only after
//! that commit, however many entries the call carries: a batch costs one fsync, not one per entry.
//!
//! # Blocking
//!
//! redb is a blocking API. Every call into it runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) so a slow disk stalls the caller's task, never the async
//! worker it runs on; this also holds on a current-thread runtime, where `block_in_place` would
//! panic. The methods therefore need a tokio runtime. [`LogStore::open`] is the exception: it runs
//! once at start-up, on the caller's thread.
//!
//! # Invariants
//!
//! - Every index in `log` is greater than the index of `last_purged`: purge deletes entries and
//!   records the new `last_purged` in the same transaction.
//! - The snapshot's meta and data are written and replaced in the same transaction, so a reader
//!   never sees the meta of one snapshot with the data of another.
//! - Writes reach redb in the order their calls were made: each write method returns only after
//!   its transaction committed, and openraft calls them one at a time. Openraft requires this
//!   ordering (a vote must not overtake an append made before it).
//! - The store does not check that appended entries are consecutive; openraft only hands it
//!   consecutive entries, truncating a conflicting suffix first.

use std::fmt;
use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::AnyError;
use openraft::LogId;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogId;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use redb::WriteTransaction;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Log entries by index.
const LOG: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("log");
/// Vote, purge and commit pointers, and the layout version.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
/// The one current snapshot, as `"meta"` and `"data"`.
const SNAPSHOT: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("snapshot");

const VOTE_KEY: &str = "vote";
const LAST_PURGED_KEY: &str = "last_purged";
const COMMITTED_KEY: &str = "committed";
const FORMAT_KEY: &str = "format";
const SNAPSHOT_META_KEY: &str = "meta";
const SNAPSHOT_DATA_KEY: &str = "data";

/// The layout described in the module docs. Bump it when the layout changes incompatibly, so an
/// older build refuses a newer file instead of misreading it.
const FORMAT_VERSION: u32 = 1;

/// Why [`LogStore::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory that should hold the file did not exist and could not be created.
    #[error(
        "cannot create the directory {} for the registry log: {source}; check that the data dir \
         is on a mounted, writable file system",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// Another process, or another [`LogStore`] in this one, has the file open.
    #[error(
        "the registry log at {} is already open; is another node using this data dir?",
        path.display()
    )]
    AlreadyOpen {
        /// The redb file.
        path: PathBuf,
    },
    /// redb could not open or create the file.
    #[error(
        "cannot open the registry log at {}: {source}; check that the file is readable and \
         writable and was written by Ensemble",
        path.display()
    )]
    Open {
        /// The redb file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// The file opened, but its tables could not be created or read.
    #[error(
        "cannot prepare the tables of the registry log at {}: {source}; check free disk space, \
         and that the file was written by Ensemble",
        path.display()
    )]
    Tables {
        /// The redb file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// The file was written with a layout this build does not know.
    #[error(
        "the registry log at {} has layout version {found} but this build reads version \
         {expected}; run the Ensemble version that wrote it",
        path.display()
    )]
    UnsupportedFormat {
        /// The redb file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
}

/// A snapshot of the state machine as stored next to the log.
///
/// The state machine builds it and decides what `data` holds; the log store only keeps the
/// latest one durably (see [`LogStore::save_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot<C>
where
    C: RaftTypeConfig,
{
    /// Which log entries and membership the snapshot covers, and its id.
    pub meta: SnapshotMeta<C::NodeId, C::Node>,
    /// The serialized state machine.
    pub data: Vec<u8>,
}

/// The durable Raft log of one node, in a redb file.
///
/// Cloning is cheap and every clone uses the same open database: openraft takes one clone as
/// the log store and more as log readers, and the state machine takes one for its snapshots.
/// The file stays open, and locked against other processes, until the last clone is dropped
/// and any call whose future was dropped mid-way has finished its work on the blocking pool.
///
/// See the [module docs](self) for the file layout and the durability guarantees.
pub struct LogStore<C>
where
    C: RaftTypeConfig,
{
    db: Arc<Database>,
    /// Kept to name the file in every error, since one machine may host several nodes.
    path: Arc<Path>,
    /// `fn() -> C` rather than `C`: the store owns no `C`, and this keeps it `Send + Sync` and
    /// `Clone` whatever `C` is.
    _config: std::marker::PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn clone(&self) -> Self {
        Self {
            db: Arc::clone(&self.db),
            path: Arc::clone(&self.path),
            _config: std::marker::PhantomData,
        }
    }
}

impl<C> fmt::Debug for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
{
    /// Opens the log in the redb file at `path`, creating the file, and its parent directory, if
    /// they do not exist.
    ///
    /// This blocks on file I/O (and, for a file left by a crash, on redb's repair); call it at
    /// start-up, before the Raft node runs, or from a blocking thread.
    ///
    /// # Errors
    ///
    /// [`OpenError::AlreadyOpen`] if another process or another `LogStore` holds the file, and
    /// the other variants of [`OpenError`] when the file cannot be created, read or is not a
    /// registry log of a known layout.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen {
                path: path.to_path_buf(),
            },
            source => OpenError::Open {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let found = prepare_tables(&db).map_err(|source| OpenError::Tables {
            path: path.to_path_buf(),
            source,
        })?;
        if found != FORMAT_VERSION {
            return Err(OpenError::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
                expected: FORMAT_VERSION,
            });
        }
        Ok(Self {
            db: Arc::new(db),
            path: Arc::from(path),
            _config: std::marker::PhantomData,
        })
    }

    /// The redb file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably replaces the stored snapshot with `snapshot`.
    ///
    /// Returns once the snapshot is on disk; meta and data are replaced together, so a crash
    /// leaves either the old snapshot or the new one.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] naming the snapshot if encoding or the write fails.
    pub async fn save_snapshot(
        &self,
        snapshot: &StoredSnapshot<C>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let signature = snapshot.meta.signature();
        let meta = snapshot.meta.clone();
        // A copy, because the work runs on another thread and the caller keeps its snapshot.
        let data = snapshot.data.clone();
        self.blocking(move |db| {
            let meta = encode(&meta)?;
            write_durably(db, |txn| {
                let mut table = txn.open_table(SNAPSHOT)?;
                table.insert(SNAPSHOT_META_KEY, meta.as_slice())?;
                table.insert(SNAPSHOT_DATA_KEY, data.as_slice())?;
                Ok(())
            })
        })
        .await
        .map_err(|e| {
            let what = format!("saving snapshot {}", signature.snapshot_id);
            StorageIOError::write_snapshot(Some(signature), self.io_error(what, e)).into()
        })
    }

    /// The snapshot last saved with [`Self::save_snapshot`], or `None` if there is none.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] naming the snapshot if the read or decoding fails.
    pub async fn load_snapshot(
        &self,
    ) -> Result<Option<StoredSnapshot<C>>, StorageError<C::NodeId>> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(SNAPSHOT)?;
            let Some(meta) = table.get(SNAPSHOT_META_KEY)? else {
                return Ok(None);
            };
            let meta = decode(meta.value())?;
            let data = table
                .get(SNAPSHOT_DATA_KEY)?
                .ok_or_else(|| DbError::Missing("the snapshot's data, though its meta is present"))?
                .value()
                .to_vec();
            Ok(Some(StoredSnapshot { meta, data }))
        })
        .await
        .map_err(|e| {
            StorageIOError::read_snapshot(None, self.io_error("loading the snapshot", e)).into()
        })
    }

    /// Runs `f` on tokio's blocking pool, so that redb's disk I/O never stalls an async worker.
    async fn blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(DbError::Task)?
    }

    /// Writes one meta key (or removes it on `None`) in a durable transaction.
    async fn write_meta<T>(&self, key: &'static str, value: Option<&T>) -> Result<(), DbError>
    where
        T: Serialize,
    {
        let bytes = value.map(encode).transpose()?;
        self.blocking(move |db| {
            write_durably(db, |txn| {
                let mut table = txn.open_table(META)?;
                match &bytes {
                    Some(bytes) => table.insert(key, bytes.as_slice())?,
                    None => table.remove(key)?,
                };
                Ok(())
            })
        })
        .await
    }

    /// Reads one meta key in its own read transaction.
    async fn read_meta<T>(&self, key: &'static str) -> Result<Option<T>, DbError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            get_decoded(&table, key)
        })
        .await
    }

    fn io_error(&self, what: impl fmt::Display, e: DbError) -> AnyError {
        e.context(format!(
            "{what} in the registry log at {}",
            self.path.display()
        ))
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    async fn try_get_log_entries<RB>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            let mut entries = Vec::new();
            for item in table.range((Bound::Included(start), upper))? {
                let (_, value) = item?;
                entries.push(decode::<C::Entry>(value.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| {
            StorageIOError::read_logs(self.io_error(format!("reading entries {range:?}"), e)).into()
        })
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let (last_purged_log_id, last_present) = self
            .blocking(|db| {
                // One read transaction, so the two halves come from the same commit.
                let txn = db.begin_read()?;
                let meta = txn.open_table(META)?;
                let last_purged: Option<LogId<C::NodeId>> = get_decoded(&meta, LAST_PURGED_KEY)?;
                let log = txn.open_table(LOG)?;
                let last_present = match log.last()? {
                    Some((_, value)) => {
                        Some(decode::<C::Entry>(value.value())?.get_log_id().clone())
                    }
                    None => None,
                };
                Ok((last_purged, last_present))
            })
            .await
            .map_err(|e| StorageIOError::read_logs(self.io_error("reading the log state", e)))?;
        let last_log_id = last_present.or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.write_meta(VOTE_KEY, Some(vote)).await.map_err(|e| {
            StorageIOError::write_vote(self.io_error(format!("saving vote {vote}"), e)).into()
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(VOTE_KEY)
            .await
            .map_err(|e| StorageIOError::read_vote(self.io_error("reading the vote", e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Durable like every other write, though a lost update here would only delay re-applying
        // entries after a restart: the registry commits rarely enough that the fsync is cheap, and
        // one rule for every write is easier to trust than a list of exceptions.
        self.write_meta(COMMITTED_KEY, committed.as_ref())
            .await
            .map_err(|e| {
                let what = format!("saving committed log id {committed:?}");
                StorageIOError::write(self.io_error(what, e)).into()
            })
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(COMMITTED_KEY).await.map_err(|e| {
            StorageIOError::read(self.io_error("reading the committed log id", e)).into()
        })
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let (first, last) = (first.get_log_id().index, last.get_log_id().index);
        tracing::trace!(first, last, "appending to the registry log");
        // Encoding runs on the blocking thread too: a large batch is real CPU work.
        let written = self
            .blocking(move |db| {
                write_durably(db, |txn| {
                    let mut table = txn.open_table(LOG)?;
                    for entry in &entries {
                        table.insert(entry.get_log_id().index, encode(entry)?.as_slice())?;
                    }
                    Ok(())
                })
            })
            .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            // The callback is dropped unreported: the error returned here already stops openraft
            // (it treats storage errors as fatal), and nobody waits on the callback after that.
            Err(e) => Err(StorageIOError::write_logs(
                self.io_error(format!("appending entries {first}..={last}"), e),
            )
            .into()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(since = %log_id, "truncating the registry log");
        let since = log_id.index;
        self.blocking(move |db| {
            write_durably(db, |txn| {
                txn.open_table(LOG)?.retain_in(since.., |_, _| false)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| {
            let what = format!("deleting entries from {log_id} on");
            StorageIOError::write_logs(self.io_error(what, e)).into()
        })
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(upto = %log_id, "purging the registry log");
        let upto = log_id.index;
        let last_purged = encode(&log_id);
        self.blocking(move |db| {
            let last_purged = last_purged?;
            write_durably(db, |txn| {
                txn.open_table(LOG)?.retain_in(..=upto, |_, _| false)?;
                txn.open_table(META)?
                    .insert(LAST_PURGED_KEY, last_purged.as_slice())?;
                Ok(())
            })
        })
        .await
        .map_err(|e| {
            let what = format!("purging entries up to {log_id}");
            StorageIOError::write_logs(self.io_error(what, e)).into()
        })
    }
}

/// Creates the tables, so that read transactions never meet a missing table, and returns the
/// layout version of the file, recording the current one in a new file.
fn prepare_tables(db: &Database) -> Result<u32, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let found = {
        txn.open_table(LOG)?;
        txn.open_table(SNAPSHOT)?;
        let mut meta = txn.open_table(META)?;
        let recorded = meta
            .get(FORMAT_KEY)?
            .map(|bytes| rmp_serde::from_slice::<u32>(bytes.value()));
        match recorded {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                return Err(redb::Error::Corrupted(format!(
                    "unreadable layout version: {e}"
                )));
            }
            None => {
                let version = rmp_serde::to_vec_named(&FORMAT_VERSION).map_err(|e| {
                    redb::Error::Corrupted(format!("cannot encode the layout version: {e}"))
                })?;
                meta.insert(FORMAT_KEY, version.as_slice())?;
                FORMAT_VERSION
            }
        }
    };
    txn.commit()?;
    Ok(found)
}

/// Runs `f` in a write transaction and commits it with an fsync.
fn write_durably<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut txn = db.begin_write()?;
    // Immediate is redb's default. Raft's safety rests on it (a vote or an entry acknowledged but
    // lost in a crash can elect two leaders or lose a committed write), so it is stated rather
    // than inherited.
    txn.set_durability(Durability::Immediate)?;
    // On error the transaction is dropped, which aborts it.
    let out = f(&txn)?;
    txn.commit()?;
    Ok(out)
}

/// Turns a range over log indexes into `[start, end)`, `end == None` meaning unbounded, or `None`
/// for an empty range; redb, like `BTreeMap`, may panic on a range whose start passes its end.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` has no exclusive end in u64: it is the unbounded range.
        Bound::Included(&end) => end.checked_add(1),
        Bound::Excluded(&end) => Some(end),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

fn get_decoded<T>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, DbError>
where
    T: DeserializeOwned,
{
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DbError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Everything that can fail inside the store, before it is wrapped into openraft's
/// [`StorageIOError`] with a description of the operation.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("cannot encode a value for the log: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode a value from the log (written by another version?): {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("the blocking storage task did not finish: {0}")]
    Task(tokio::task::JoinError),
}

impl DbError {
    fn context(self, what: impl fmt::Display) -> AnyError {
        AnyError::new(&self).add_context(|| what)
    }
}

/// redb returns a narrow error type per call; `?` funnels them all into [`redb::Error`].
macro_rules! from_redb_error {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for DbError {
            fn from(e: $error) -> Self {
                Self::Redb(e.into())
            }
        })*
    };
}

from_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use openraft::BasicNode;
    use openraft::Entry;
    use openraft::EntryPayload;
    use openraft::RaftSnapshotBuilder;
    use openraft::Snapshot;
    use openraft::StoredMembership;
    use openraft::storage::RaftLogReaderExt;
    use openraft::storage::RaftLogStorageExt;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::StoreBuilder;
    use openraft::testing::Suite;
    use openraft::testing::blank_ent;
    use openraft::testing::log_id;
    use openraft::testing::membership_ent;
    use tempfile::TempDir;

    use super::*;

    openraft::declare_raft_types!(TestConfig: D = String, R = String);

    type Store = LogStore<TestConfig>;

    fn temp_store() -> (TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("raft.redb")).expect("open the log store");
        (dir, store)
    }

    fn normal(term: u64, index: u64, data: &str) -> Entry<TestConfig> {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(data.to_string()),
        }
    }

    /// Entries 1..=n of term 1, alternating blank, normal and membership payloads so that every
    /// payload kind goes through the encoding.
    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry<TestConfig>> {
        range
            .map(|i| match i % 3 {
                0 => blank_ent::<TestConfig>(1, 1, i),
                1 => normal(1, i, &format!("cmd-{i}")),
                _ => membership_ent::<TestConfig>(1, 1, i, vec![[1, 2, 3].into()]),
            })
            .collect()
    }

    fn indexes(entries: &[Entry<TestConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    fn snapshot(index: u64, data: &[u8]) -> StoredSnapshot<TestConfig> {
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 1, index)),
                last_membership: StoredMembership::new(
                    Some(log_id(1, 1, 1)),
                    openraft::Membership::new(vec![[1, 2, 3].into()], None),
                ),
                snapshot_id: format!("snap-{index}"),
            },
            data: data.to_vec(),
        }
    }

    #[tokio::test]
    async fn empty_store_has_no_state() {
        let (_dir, mut store) = temp_store();
        assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert_eq!(store.load_snapshot().await.unwrap(), None);
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn appended_entries_read_back_by_range() {
        let (_dir, mut store) = temp_store();
        let written = entries(1..=10);
        store.blocking_append(written[..4].to_vec()).await.unwrap();
        store.blocking_append(written[4..].to_vec()).await.unwrap();

        assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
        assert_eq!(
            indexes(&store.try_get_log_entries(3..6).await.unwrap()),
            [3, 4, 5]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(3..=6).await.unwrap()),
            [3, 4, 5, 6]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(8..).await.unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(..3).await.unwrap()),
            [1, 2]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(9..100).await.unwrap()),
            [9, 10]
        );
        assert_eq!(store.get_log_entries(2..4).await.unwrap(), written[1..3]);
        assert_eq!(
            store.try_get_log_entry(7).await.unwrap().as_ref(),
            Some(&written[6])
        );
        assert_eq!(store.try_get_log_entry(11).await.unwrap(), None);
    }

    #[tokio::test]
    async fn empty_and_inverted_ranges_read_nothing() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=5)).await.unwrap();
        assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = 4..2;
        assert!(
            store
                .try_get_log_entries(inverted)
                .await
                .unwrap()
                .is_empty()
        );
        let excluded = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(
            store
                .try_get_log_entries(excluded)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(2..=u64::MAX).await.unwrap()),
            [2, 3, 4, 5]
        );
    }

    #[tokio::test]
    async fn appending_nothing_completes() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(Vec::new()).await.unwrap();
        assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
    }

    #[tokio::test]
    async fn log_state_follows_the_last_entry() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=3)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
    }

    #[tokio::test]
    async fn vote_round_trips_and_is_replaced() {
        let (_dir, mut store) = temp_store();
        store.save_vote(&Vote::new(1, 2)).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 2)));
        let mut committed = Vote::new(3, 1);
        committed.commit();
        store.save_vote(&committed).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(committed));
    }

    #[tokio::test]
    async fn truncate_deletes_from_the_index_on() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=10)).await.unwrap();
        store.truncate(log_id(1, 1, 6)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            [1, 2, 3, 4, 5]
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));
        assert_eq!(state.last_purged_log_id, None);

        // A new leader's entries replace the truncated suffix.
        store.blocking_append([normal(2, 6, "new")]).await.unwrap();
        assert_eq!(
            store.try_get_log_entry(6).await.unwrap(),
            Some(normal(2, 6, "new"))
        );
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 1, 6))
        );
    }

    #[tokio::test]
    async fn purge_deletes_up_to_the_index_and_remembers_it() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=10)).await.unwrap();
        store.purge(log_id(1, 1, 4)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            [5, 6, 7, 8, 9, 10]
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));

        // Purging past the last entry (after installing a snapshot) leaves the purged id as the
        // last log id.
        store.purge(log_id(3, 1, 20)).await.unwrap();
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 1, 20)));
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 20)));
    }

    #[tokio::test]
    async fn committed_round_trips_and_clears() {
        let (_dir, mut store) = temp_store();
        store.save_committed(Some(log_id(1, 1, 7))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 7)));
        store.save_committed(None).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
    }

    #[tokio::test]
    async fn snapshot_round_trips_and_is_replaced() {
        let (_dir, store) = temp_store();
        let first = snapshot(5, b"first state");
        store.save_snapshot(&first).await.unwrap();
        assert_eq!(store.load_snapshot().await.unwrap(), Some(first));

        let second = snapshot(9, &[0xff; 100_000]);
        store.save_snapshot(&second).await.unwrap();
        assert_eq!(store.load_snapshot().await.unwrap(), Some(second));
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let written = entries(1..=10);
        let snap = snapshot(4, b"state at 4");
        {
            let mut store = Store::open(&path).unwrap();
            store.blocking_append(written.clone()).await.unwrap();
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
            store.purge(log_id(1, 1, 3)).await.unwrap();
            store.truncate(log_id(1, 1, 9)).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 6))).await.unwrap();
            store.save_snapshot(&snap).await.unwrap();
        }

        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), written[3..8]);
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(1, 1, 3)),
                last_log_id: Some(log_id(1, 1, 8)),
            }
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 6)));
        assert_eq!(store.load_snapshot().await.unwrap(), Some(snap));
    }

    #[test]
    fn open_creates_missing_parent_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1").join("raft").join("log.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert!(path.is_file());
    }

    #[test]
    fn second_open_of_the_same_file_is_refused_with_advice() {
        let (dir, _store) = temp_store();
        let path = dir.path().join("raft.redb");
        let err = Store::open(&path).expect_err("the file is already open");
        assert!(matches!(err, OpenError::AlreadyOpen { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("another node"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_redb_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        std::fs::write(
            &path,
            b"definitely not a redb file, but long enough to look at",
        )
        .unwrap();
        let err = Store::open(&path).expect_err("garbage is not a log");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_file_of_another_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        drop(Store::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let newer = rmp_serde::to_vec_named(&(FORMAT_VERSION + 1)).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, newer.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).expect_err("a newer layout must not be misread");
        assert!(
            matches!(err, OpenError::UnsupportedFormat { found, .. } if found == FORMAT_VERSION + 1),
            "{err:?}"
        );
    }

    #[test]
    fn storage_errors_name_the_operation_and_the_file() {
        let (_dir, store) = temp_store();
        let err = StorageError::<u64>::from(StorageIOError::write_logs(
            store.io_error("appending entries 1..=2", DbError::Missing("the disk")),
        ));
        let message = err.to_string();
        assert!(message.contains("appending entries 1..=2"), "{message}");
        assert!(
            message.contains(&store.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn index_bounds_normalise_ranges() {
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(3..=u64::MAX)), Some((3, None)));
        assert_eq!(index_bounds(&(3..3)), None);
        assert_eq!(
            index_bounds(&(Bound::Excluded(3), Bound::Included(3))),
            None
        );
        assert_eq!(
            index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
    }

    /// The state machine openraft's conformance suite needs next to the log store. It keeps its
    /// state in memory and its snapshots through [`LogStore::save_snapshot`], as the registry's
    /// state machine does, so the suite's snapshot tests exercise that path too.
    #[derive(Clone)]
    struct TestStateMachine {
        store: Store,
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, BasicNode>,
        snapshots_built: u64,
    }

    impl RaftSnapshotBuilder<TestConfig> for TestStateMachine {
        async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<u64>> {
            self.snapshots_built += 1;
            let meta = SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("test-{}", self.snapshots_built),
            };
            let data = rmp_serde::to_vec_named(&(&self.last_applied, &self.membership)).unwrap();
            self.store
                .save_snapshot(&StoredSnapshot {
                    meta: meta.clone(),
                    data: data.clone(),
                })
                .await?;
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        }
    }

    impl RaftStateMachine<TestConfig> for TestStateMachine {
        type SnapshotBuilder = Self;

        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>>
        {
            Ok((self.last_applied, self.membership.clone()))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, StorageError<u64>>
        where
            I: IntoIterator<Item = Entry<TestConfig>> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            let mut replies = Vec::new();
            for entry in entries {
                if let EntryPayload::Membership(membership) = &entry.payload {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                }
                self.last_applied = Some(entry.log_id);
                replies.push(String::new());
            }
            Ok(replies)
        }

        async fn get_snapshot_builder(&mut self) -> Self {
            self.clone()
        }

        async fn begin_receiving_snapshot(
            &mut self,
        ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<u64, BasicNode>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), StorageError<u64>> {
            self.last_applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data: snapshot.into_inner(),
            };
            self.store.save_snapshot(&stored).await
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<Snapshot<TestConfig>>, StorageError<u64>> {
            Ok(self.store.load_snapshot().await?.map(|stored| Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(stored.data)),
            }))
        }
    }

    struct TestStoreBuilder;

    impl StoreBuilder<TestConfig, Store, TestStateMachine, TempDir> for TestStoreBuilder {
        async fn build(&self) -> Result<(TempDir, Store, TestStateMachine), StorageError<u64>> {
            let (dir, store) = temp_store();
            let sm = TestStateMachine {
                store: store.clone(),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshots_built: 0,
            };
            Ok((dir, store, sm))
        }
    }

    /// openraft's own conformance suite for log stores. It sleeps about a second in each of its
    /// purge tests, waiting for stores that purge in the background; this one purges at once.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(TestStoreBuilder).expect("openraft storage suite");
    }
}
