//! The state machine's snapshot, in a fjall database of its own beside the log's, written by a
//! thread of its own.
//!
//! A snapshot is the whole state: tens of MiB once the registry holds a million keys. Written
//! through the log's journal and writer thread, as it once was, it held every append queued
//! behind it until it was written and synced (about 220 ms at 75 MB on the benchmark's disk,
//! on every voter at about the same moment). Here the log's writer goes on committing appends
//! while a snapshot is written; the two meet in the barrier [`LogStore::save_snapshot`]
//! passes first and in the purge it releases after (below).
//!
//! # Layout
//!
//! The directory [`snapshot_dir`] names beside the log's: one fjall database, one keyspace.
//!
//! | keyspace   | key      | value                                  |
//! |------------|----------|----------------------------------------|
//! | `snapshot` | `"meta"` | [`SnapshotMeta`], MessagePack          |
//! | `snapshot` | `"data"` | the snapshot bytes as they are         |
//!
//! Meta and data are replaced in one synced write batch, so a crash leaves the old snapshot or
//! the new one, never the meta of one with the data of the other.
//!
//! # Order with the log
//!
//! A snapshot must not reach the disk before the log writes made ahead of it. A follower that
//! installs a snapshot first truncates the entries of its log that conflict with it; were the
//! snapshot durable and the truncate lost in a crash, the node would come back with entries it
//! had been told to drop, and as leader could send them on. So [`LogStore::save_snapshot`]
//! first waits for a synced commit of everything queued to the log before it, then writes
//! here. The one log write that depends on the snapshot, the purge of the entries it covers,
//! reaches the disk only once the snapshot is stored ("Purges wait for their snapshot" in
//! [`log_store`](super::log_store)).
//!
//! A snapshot the node built can finish after a newer one it installed from the leader
//! (openraft builds in a task of its own); the older one is then not stored.
//!
//! [`LogStore::save_snapshot`]: super::log_store::LogStore::save_snapshot
//! [`SnapshotMeta`]: openraft::SnapshotMeta

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use fjall::Database;
use fjall::Keyspace;
use fjall::KeyspaceCreateOptions;
use fjall::PersistMode;
use openraft::RaftTypeConfig;
use openraft::SnapshotMeta;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::log_store::{DbError, OpenError, StoredSnapshot, WriterThread, decode, encode};

/// The keyspace that holds the snapshot, in this database and, before layout version 3, in
/// the log's.
pub(super) const SNAPSHOT: &str = "snapshot";
pub(super) const SNAPSHOT_META_KEY: &str = "meta";
pub(super) const SNAPSHOT_DATA_KEY: &str = "data";

/// The directory that holds the snapshots of the log in `log_dir`: its sibling, named after it
/// with `-snapshots` appended (`registry-log` → `registry-log-snapshots`).
pub fn snapshot_dir(log_dir: &Path) -> PathBuf {
    let mut name = log_dir
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push("-snapshots");
    log_dir.with_file_name(name)
}

/// The snapshot database, written by its own thread (or, for simulations, on the caller's).
pub(super) struct SnapshotStore<C>
where
    C: RaftTypeConfig,
{
    sink: Sink<C>,
    /// Kept to name the store in errors.
    path: Arc<Path>,
    /// Held by a test to keep the thread from saving or loading.
    #[cfg(test)]
    pub(super) pause: Arc<Mutex<()>>,
    /// How many requests the thread has taken from its queue, paused or not.
    #[cfg(test)]
    pub(super) taken: Arc<std::sync::atomic::AtomicUsize>,
    /// Never read: held for its drop, which waits for the thread, and so for the database to
    /// close, after the sink above has closed its queue.
    _thread: WriterThread,
}

enum Sink<C>
where
    C: RaftTypeConfig,
{
    Queue(mpsc::UnboundedSender<SnapshotOp<C>>),
    Inline(Mutex<SnapshotDb>),
}

/// One request for the snapshot thread. Saves are rare (one per `snapshot_every` entries, and
/// an install from the leader now and then, which may overlap a build) and each caller waits
/// for its own, so the queue needs no bound.
enum SnapshotOp<C>
where
    C: RaftTypeConfig,
{
    Save {
        snapshot: StoredSnapshot<C>,
        done: oneshot::Sender<Result<Option<u64>, DbError>>,
    },
    Load {
        done: oneshot::Sender<Result<Option<StoredSnapshot<C>>, DbError>>,
    },
}

impl<C> SnapshotStore<C>
where
    C: RaftTypeConfig,
{
    /// Starts serving `db`, the snapshot database in `path`; with `inline`, without a thread of
    /// its own (see `LogStore::open_inline`).
    pub(super) fn start(db: SnapshotDb, path: &Path, inline: bool) -> Result<Self, OpenError> {
        let path: Arc<Path> = Arc::from(path);
        #[cfg(test)]
        let pause = Arc::new(Mutex::new(()));
        if inline {
            return Ok(Self {
                sink: Sink::Inline(Mutex::new(db)),
                path,
                #[cfg(test)]
                pause,
                #[cfg(test)]
                taken: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                _thread: WriterThread(None),
            });
        }
        #[cfg(test)]
        let held = Arc::clone(&pause);
        #[cfg(test)]
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        #[cfg(test)]
        let received = Arc::clone(&taken);
        let mut db = db;
        let (ops, mut queue) = mpsc::unbounded_channel::<SnapshotOp<C>>();
        let span = tracing::info_span!("registry_snapshot_writer", path = %path.display());
        let thread = std::thread::Builder::new()
            .name("registry-snapshot".to_string())
            .spawn(move || {
                let _entered = span.enter();
                // In queue order, so a load sees every save queued before it.
                while let Some(op) = queue.blocking_recv() {
                    #[cfg(test)]
                    received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    #[cfg(test)]
                    let _paused = held.lock();
                    match op {
                        SnapshotOp::Save { snapshot, done } => {
                            let _ = done.send(db.save(&snapshot));
                        }
                        SnapshotOp::Load { done } => {
                            let _ = done.send(db.load());
                        }
                    }
                }
            })
            .map_err(|source| OpenError::StartWriter {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            sink: Sink::Queue(ops),
            path,
            #[cfg(test)]
            pause,
            #[cfg(test)]
            taken,
            _thread: WriterThread(Some(thread)),
        })
    }

    /// The directory of the database.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Durably replaces the stored snapshot with `snapshot`, unless the stored one covers more
    /// of the log; answers the index of the last entry the stored snapshot covers.
    pub(super) async fn save(&self, snapshot: StoredSnapshot<C>) -> Result<Option<u64>, DbError> {
        match &self.sink {
            Sink::Inline(db) => db.lock().save(&snapshot),
            Sink::Queue(ops) => {
                let (done, answer) = oneshot::channel();
                ops.send(SnapshotOp::Save { snapshot, done })
                    .map_err(|_| DbError::WriterGone)?;
                answer.await.map_err(|_| DbError::WriterGone)?
            }
        }
    }

    /// The snapshot saved last, or `None` if there is none.
    pub(super) async fn load(&self) -> Result<Option<StoredSnapshot<C>>, DbError> {
        match &self.sink {
            Sink::Inline(db) => db.lock().load(),
            Sink::Queue(ops) => {
                let (done, answer) = oneshot::channel();
                ops.send(SnapshotOp::Load { done })
                    .map_err(|_| DbError::WriterGone)?;
                answer.await.map_err(|_| DbError::WriterGone)?
            }
        }
    }
}

/// The database and its one keyspace.
pub(super) struct SnapshotDb {
    snapshot: Keyspace,
    /// The index of the last entry the stored snapshot covers, once read
    /// ([`SnapshotDb::covered`]).
    covered: Option<u64>,
    /// Dropped last: closing the database waits for fjall's threads and releases its lock.
    db: Database,
}

impl SnapshotDb {
    pub(super) fn open(path: &Path) -> Result<Self, OpenError> {
        let failed = |source: fjall::Error| OpenError::Snapshots {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
            dir: path.to_path_buf(),
            source,
        })?;
        let db = Database::builder(path)
            // Every save syncs the journal itself.
            .manual_journal_persist(true)
            // As small as fjall allows: a journal that reaches it is rotated and its memtable
            // flushed, so an old snapshot's bytes leave the journal by the next save or two.
            .max_journaling_size(64 * 1024 * 1024)
            // One save now and then, one read at start or for a voter far behind: one
            // background thread and a small block cache do, next to the log's.
            .worker_threads(1)
            .cache_size(1024 * 1024)
            .open()
            .map_err(failed)?;
        let snapshot = db
            .keyspace(SNAPSHOT, KeyspaceCreateOptions::default)
            .map_err(failed)?;
        Ok(Self {
            snapshot,
            covered: None,
            db,
        })
    }

    /// Reads which entries the stored snapshot covers: the index of the last, or `None` if
    /// there is no snapshot. Called once, after any import, before the store serves saves.
    pub(super) fn covered<C>(&mut self) -> Result<Option<u64>, DbError>
    where
        C: RaftTypeConfig,
    {
        self.covered = covered_by::<C>(&self.snapshot)?;
        Ok(self.covered)
    }

    /// Replaces meta and data in one synced batch, unless the stored snapshot covers more of
    /// the log: a snapshot the node built can finish after a newer one it installed from the
    /// leader. Answers the index the stored snapshot covers afterwards.
    pub(super) fn save<C>(&mut self, stored: &StoredSnapshot<C>) -> Result<Option<u64>, DbError>
    where
        C: RaftTypeConfig,
    {
        let index = stored.meta.last_log_id.as_ref().map(|id| id.index);
        if index < self.covered {
            tracing::debug!(
                snapshot = %stored.meta.snapshot_id,
                "not storing a snapshot older than the one stored"
            );
            return Ok(self.covered);
        }
        self.save_encoded(&encode(&stored.meta)?, &stored.data)?;
        self.covered = index;
        Ok(self.covered)
    }

    /// [`Self::save`] of a meta already encoded (the import of a snapshot kept in the log).
    pub(super) fn save_encoded(&self, meta: &[u8], data: &[u8]) -> Result<(), DbError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&self.snapshot, SNAPSHOT_META_KEY, meta);
        batch.insert(&self.snapshot, SNAPSHOT_DATA_KEY, data);
        batch.commit()?;
        Ok(())
    }

    pub(super) fn load<C>(&self) -> Result<Option<StoredSnapshot<C>>, DbError>
    where
        C: RaftTypeConfig,
    {
        match read_encoded(&self.snapshot)? {
            Some(Encoded { meta, data }) => Ok(Some(StoredSnapshot {
                meta: decode(&meta)?,
                data,
            })),
            None => Ok(None),
        }
    }
}

/// The index of the last entry the snapshot held in `keyspace` covers, read from its meta
/// alone; `None` if it holds no snapshot.
fn covered_by<C>(keyspace: &Keyspace) -> Result<Option<u64>, DbError>
where
    C: RaftTypeConfig,
{
    let Some(meta) = keyspace.get(SNAPSHOT_META_KEY)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta<C::NodeId, C::Node> = decode(&meta)?;
    Ok(meta.last_log_id.map(|id| id.index))
}

/// A snapshot as stored: its meta still encoded.
pub(super) struct Encoded {
    pub(super) meta: Vec<u8>,
    pub(super) data: Vec<u8>,
}

/// The snapshot held in `keyspace`, or `None` if it holds none.
pub(super) fn read_encoded(keyspace: &Keyspace) -> Result<Option<Encoded>, DbError> {
    let Some(meta) = keyspace.get(SNAPSHOT_META_KEY)? else {
        return Ok(None);
    };
    let data = keyspace.get(SNAPSHOT_DATA_KEY)?.ok_or(DbError::Missing(
        "the snapshot's data, though its meta is present",
    ))?;
    Ok(Some(Encoded {
        meta: meta.to_vec(),
        data: data.to_vec(),
    }))
}
