//! The durable Raft log: entries, vote, purge and commit pointers in one fjall database (a
//! directory), and beside it the state machine's snapshot in another.
//!
//! [`LogStore`] implements openraft's [`RaftLogStorage`] and [`RaftLogReader`] (storage API v2).
//! The state machine keeps its snapshot through [`LogStore::save_snapshot`] and
//! [`LogStore::load_snapshot`], in a database of its own written by a thread of its own
//! ([`snapshot_store`](super::snapshot_store)), so that appends need not wait while a large
//! snapshot is written. A node's whole durable Raft state is the log's directory and the
//! snapshots' beside it ([`snapshot_dir`]).
//!
//! # Layout
//!
//! Two keyspaces of the log's fjall database; one write batch spans them atomically.
//!
//! | keyspace   | key                  | value                                              |
//! |------------|----------------------|----------------------------------------------------|
//! | `log`      | log index, `u64` big-endian (key order is index order) | the entry, MessagePack (`rmp_serde::to_vec_named`) |
//! | `meta`     | `"vote"`             | [`Vote`], MessagePack                              |
//! | `meta`     | `"last_purged"`      | [`LogId`] of the last purged entry, MessagePack    |
//! | `meta`     | `"committed"`        | [`LogId`] last known committed, MessagePack        |
//! | `meta`     | `"format"`           | `u32` layout version, MessagePack                  |
//!
//! Layout version 2 kept the snapshot in a third keyspace, `snapshot`, of this database;
//! [`LogStore::open`] moves it into the snapshots' database and records version 3.
//!
//! Values are encoded with field names so that adding a field to an entry type later still
//! reads old logs; the few bytes this costs per entry do not matter next to an fsync.
//!
//! fjall is a log-structured store: a commit appends one record to its journal and, when it must
//! be durable, `fdatasync`s the journal; fjall's own threads later move the data into sorted
//! files. That is one small sequential write per commit, where a B-tree such as redb (which
//! earlier versions used) writes several pages: on this project's test machines a durable
//! commit costs about a third of redb's when three nodes write to one disk at once
//! (docs/performance.md). A log left by an earlier version in a redb file is imported once, at
//! start ([`import_redb`]).
//!
//! # Memory
//!
//! The store keeps a copy of the log in memory: every entry not yet purged, the last purged log
//! id, the vote and the committed log id. [`LogStore::open`] loads it from the disk, every write
//! updates it at once, and every log read, vote read and log state answers from it, so the
//! replication tasks that read entries for the followers never touch the disk. Entries leave
//! memory when openraft purges them, so memory is bounded by openraft's snapshot and purge policy
//! (`Config::snapshot_policy` and `Config::max_in_snapshot_log_to_keep`), as the disk is.
//!
//! # Durability
//!
//! Writes reach the disk through a pipeline:
//!
//! 1. The method called updates the in-memory copy and puts the write on a queue, in call order
//!    (a purge no stored snapshot covers yet is held back instead, and queued later: "Purges
//!    wait for their snapshot" below).
//! 2. One writer thread takes everything queued, folds it in queue order into a single fjall
//!    write batch (the last write to a key wins, so a truncate or purge also removes entries
//!    appended earlier in the same batch) and commits that with [`PersistMode::SyncData`], which
//!    `fdatasync`s the journal before the commit returns. Writes that queue up while a commit
//!    runs share the next fsync (group commit). Truncates and purges that arrive alone wait for
//!    the next batch that must commit (an append, a vote, a snapshot's barrier), and join it in
//!    queue order; should 1024 of them pile up, or the store close, they commit without a sync of
//!    their own (the journal is written in order, and the next synced commit, or the close,
//!    carries them to disk). The committed log id, which openraft saves before every apply on
//!    every node, does not even wake the writer: it waits in a slot of its own, which the
//!    writer takes into the next batch it commits (see "The committed log id" below).
//! 3. After the commit the writer reports: it calls each append's [`LogFlushed`] callback and
//!    answers each caller that waits.
//!
//! | call                         | returns          | on disk once                          |
//! |------------------------------|------------------|---------------------------------------|
//! | `append`                     | at once          | its callback came (own entries: below) |
//! | `truncate`, `purge`          | at once          | a later callback or wait has returned |
//! | `save_committed`             | at once          | a later callback or wait has returned |
//! | `save_vote`                  | after its commit | it returns                            |
//! | [`LogStore::save_snapshot`]  | after its commit | it returns, with every write before it |
//!
//! A purge held back for its snapshot (below) counts from the moment it is queued.
//!
//! This is what openraft's storage contract asks: `append` may return before the entries are
//! durable as long as they are readable at once and the callback waits for the disk (except,
//! here, for a leader's own entries: below), and a vote must be durable before `save_vote`
//! returns. It is safe because:
//!
//! - Commits are atomic (fjall drops a journal record cut short by a crash) and happen one after
//!   another in queue order, and the queue is in call order, so the disk always holds the writes
//!   of some prefix of the calls (leaving out a held purge, which joins the queue later). A
//!   crash loses a suffix of the writes, never one from the middle and never one already
//!   reported durable, so it cannot leave a hole in the log or a vote without the entries
//!   appended before it.
//! - A lost truncate or purge leaves the log as it was before the call, a state the node was
//!   durably in anyway: the entries that replace a truncated suffix are appended after the
//!   truncate, so they cannot be durable without it, and a purge reaches the disk only once a
//!   snapshot that covers it is there (below).
//! - The committed log id is a restart hint: openraft re-applies entries up to it at start-up. A
//!   lower one after a crash means fewer entries re-applied until the leader sends the commit index
//!   again, and it is never ahead of the entries on disk (below).
//!
//! # Purges wait for their snapshot
//!
//! openraft purges the entries a snapshot covers once it has the snapshot, but a follower that
//! installs one from the leader hands the state machine the install and purges at once, in
//! parallel. Were the purge on disk and the snapshot not, a crash would leave the node with
//! neither the entries nor a snapshot that holds them, unable to start. So a purge past the
//! snapshot on disk changes memory at once (openraft reads the log from memory) but is held
//! back from the disk; [`LogStore::save_snapshot`] queues it once the snapshot that covers it
//! is stored, before it returns. That puts it ahead of the entries after the snapshot on the
//! disk too, because openraft 0.9 runs a follower's log commands in order and holds every one
//! behind the answer to the install, which waits for the install itself (a new leader's
//! AppendEntries included): were that to change, an append past the snapshot could reach the
//! disk before the purge, and a crash between would leave a hole. A purge that a stored
//! snapshot covers, as a voter's own after it builds one, goes to the disk at once.
//!
//! # The committed log id
//!
//! `save_committed` puts the id in a slot (the newest replaces an older one not yet written)
//! and returns; it queues nothing, so the writer thread is not woken for it. Before every batch
//! it commits, the writer empties the slot, then takes whatever else is queued by then, and
//! writes the id last in the batch. Entries are queued before openraft can count them
//! committed, so every entry the id covers was queued before the id reached the slot, and so
//! before the writer took it: the batch, or one before it, holds them, and one batch commits
//! atomically. Woken for every apply (that is, for nearly every write on every voter, and for
//! the commit-index AppendEntries of openraft 0.9 besides), the writer would sleep and wake
//! once more per write for a commit that waits for the next one anyway.
//!
//! # A leader's own entries
//!
//! openraft 0.9 waits for each append's callback before it replicates the entries or does
//! anything else (`RaftCore::append_to_log`). Reported only once on disk, a leader's entries
//! would cost two fsyncs one after the other on every write: the leader's, then a follower's.
//! Once told its node's id (`LogStore::report_own_appends_early`), the store reports an
//! append of entries that this node wrote as leader durable as soon as it is queued, so the
//! leader's fsync runs while the entries travel to the followers and are synced there (etcd's
//! order). Other appends (a follower's) are reported after their commit, as above.
//!
//! The leader then counts its own entries towards a quorum before they are on its disk. Nothing
//! that rests on them leaves the node before they are; `LogStore::durable_through` is the
//! wait, and the appends reported early are the only ones it waits for:
//!
//! - A follower's acknowledgement reaches openraft only once the entries it acknowledges are on
//!   the leader's disk too (`raft::network`). A quorum that includes a follower therefore holds
//!   only durable copies.
//! - An AppendEntries carries a commit index only once the entries it covers are on the
//!   leader's disk, and the state machine applies an entry only once it is on disk (a quorum of
//!   the leader alone commits before that). So no client and no other node sees an entry that a
//!   crash could take back.
//! - A node answers an AppendEntries with success only once its log is durable up to the entry
//!   it matched (`server`): it may hold entries it wrote as leader of an earlier term.
//! - A restarted node never resumes its lead: its own committed vote reads back uncommitted, so
//!   it must win an election in a later term (once it stands: `client::session`), still
//!   voting for nobody else in its old one.
//!   openraft 0.9 would otherwise make it leader of the same term again, and it could write new
//!   entries under the log ids of entries it lost in the crash and its followers hold.
//!
//! The leader's fsync, which starts when the entries are queued, now ends inside the
//! AppendEntries round that openraft times (the heartbeat interval, 50 ms by default), next to
//! the follower's own fsync, which was always inside it.
//!
//! The registry server learns of each append of the leader's own entries as it is queued
//! (`LogStore::on_own_append`), and sends client nodes' copies the batches among them once
//! `LogStore::durable_through` says they are on disk (`server::early`).
//!
//! # Failure
//!
//! If a commit fails, every write in it reports the error: callbacks get an [`std::io::Error`],
//! waiting callers a [`StorageError`]. From then on the store refuses every write, snapshot
//! saves included (their barrier is a write), with that error: the in-memory copy is ahead of
//! the disk, and committing later writes on top of the lost ones could leave a hole. A failed
//! snapshot save does not stop the log, but fjall refuses the snapshots' database every write
//! after a failed sync, so later saves fail too. openraft treats storage errors as fatal; a
//! restart reopens both and starts from what they hold.
//!
//! # Backpressure and blocking
//!
//! The queue holds at most 1024 writes (`QUEUE_CAPACITY`). When it is full, which happens only
//! when the disk falls behind, write calls wait (asynchronously) for room before they change
//! anything.
//!
//! fjall is a blocking API. Only the writer thread calls into it, apart from [`LogStore::open`],
//! which runs once at start-up on the caller's thread. The async methods never block a thread:
//! they wait only for room in the queue or for the writer's answer, with tokio's channels, which
//! need no particular runtime. Dropping the last clone of a store is the exception: it waits for
//! the writer to commit what is queued and close the database (normally one commit), so that it
//! can be opened again as soon as the drop returns.
//!
//! # Invariants
//!
//! - Every index in `log`, and in memory, is greater than the index of `last_purged`: purge
//!   deletes entries and records the new `last_purged` in the same batch, and in memory
//!   under the same lock.
//! - A snapshot reaches the disk only after every log write made before it (see "Order with
//!   the log" in [`snapshot_store`](super::snapshot_store)).
//! - The in-memory copy holds every write accepted; the disk holds a prefix of them in call order
//!   (see Durability), but for a held purge, which joins the queue when its snapshot is
//!   stored. A write changes memory and joins the queue under one lock, so both see the
//!   writes in the same order even when several clones write at once.
//! - The store does not check that appended entries are consecutive; openraft only hands it
//!   consecutive entries, truncating a conflicting suffix first.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use fjall::Database;
use fjall::Keyspace;
use fjall::KeyspaceCreateOptions;
use fjall::PersistMode;
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
use openraft::entry::RaftPayload;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

pub use super::snapshot_store::snapshot_dir;
use super::snapshot_store::{SNAPSHOT, SnapshotDb, SnapshotStore, read_encoded};

/// Log entries by index.
const LOG: &str = "log";
/// Vote, purge and commit pointers, and the layout version.
const META: &str = "meta";

const VOTE_KEY: &str = "vote";
const LAST_PURGED_KEY: &str = "last_purged";
const COMMITTED_KEY: &str = "committed";
const FORMAT_KEY: &str = "format";

/// The layout described in the module docs. Bump it when the layout changes incompatibly, so an
/// older build refuses a newer log instead of misreading it. Version 1 was the redb file of
/// earlier versions, which [`import_redb`] reads; version 2 kept the snapshot in this
/// database, and [`LogStore::open`] moves it out.
const FORMAT_VERSION: u32 = 3;

/// The layout that kept the snapshot in the log's database, which [`LogStore::open`] still
/// reads.
const FORMAT_SNAPSHOT_INSIDE: u32 = 2;

/// How many writes may wait for the writer thread, and the most it commits at once.
///
/// openraft 0.9 keeps at most one append in flight on a follower; a leader, whose own appends
/// are reported at once, queues as fast as it takes proposals. Either way callers that pile up
/// writes faster than the disk takes them wait for room, which is the backpressure a slow disk
/// should exert. One commit of this many writes stays well under
/// a second on any disk that keeps up with Raft at all.
const QUEUE_CAPACITY: usize = 1024;

/// Why [`LogStore::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory that should hold the log did not exist and could not be created.
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
    /// Another process, or another [`LogStore`] in this one, has the log open.
    #[error(
        "the registry log at {} is already open; is another node using this data dir?",
        path.display()
    )]
    AlreadyOpen {
        /// The log's directory.
        path: PathBuf,
    },
    /// fjall could not open or create the database.
    #[error(
        "cannot open the registry log at {}: {source}; check that the directory is readable and \
         writable and was written by Ensemble",
        path.display()
    )]
    Open {
        /// The log's directory.
        path: PathBuf,
        /// What fjall said.
        source: fjall::Error,
    },
    /// The database opened, but its keyspaces or layout version could not be created or read.
    #[error(
        "cannot prepare the keyspaces of the registry log at {}: {source}; check free disk \
         space, and that the directory was written by Ensemble",
        path.display()
    )]
    Tables {
        /// The log's directory.
        path: PathBuf,
        /// What went wrong: a fjall error, or a layout version that does not decode.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The log was written with a layout this build does not know.
    #[error(
        "the registry log at {} has layout version {found} but this build reads version \
         {expected} (and moves version 2 to it); run the Ensemble version that wrote it",
        path.display()
    )]
    UnsupportedFormat {
        /// The log's directory.
        path: PathBuf,
        /// The version recorded in the log.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The keyspaces are there, but the entries, vote or pointers in them could not be read into
    /// memory.
    #[error(
        "cannot load the registry log at {}: {source}; it may be damaged, or written by another \
         Ensemble version",
        path.display()
    )]
    Load {
        /// The log's directory.
        path: PathBuf,
        /// What went wrong: a fjall error, or a value that does not decode.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database that holds the snapshots could not be opened, created or read.
    #[error(
        "cannot open the registry's snapshots at {}: {source}; check that the directory is \
         readable and writable, written by Ensemble, and not in use by another node",
        path.display()
    )]
    Snapshots {
        /// The snapshots' directory.
        path: PathBuf,
        /// What went wrong: a fjall error, or a snapshot meta that does not decode.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A log of layout version 2 kept its snapshot inside; moving it out failed.
    #[error(
        "cannot move the snapshot of the registry log at {} into {}: {source}; the log keeps \
         it until a start succeeds in moving it; check free disk space",
        path.display(),
        snapshots.display()
    )]
    MoveSnapshot {
        /// The log's directory.
        path: PathBuf,
        /// The snapshots' directory.
        snapshots: PathBuf,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The log's directory is new, but a snapshot is stored beside it.
    #[error(
        "the registry log at {} is new, but {} holds a snapshot: the log (and the vote in it) \
         was deleted or moved; restore it, or delete both directories to start this node's \
         registry data afresh",
        path.display(),
        snapshots.display()
    )]
    SnapshotsWithoutLog {
        /// The log's directory.
        path: PathBuf,
        /// The snapshots' directory.
        snapshots: PathBuf,
    },
    /// The log has dropped entries that no stored snapshot covers.
    #[error(
        "the registry log at {} has dropped its entries up to {purged}, but the snapshot in {} \
         covers {}: the snapshots' directory was deleted or replaced; restore it, or delete \
         both directories to start this node's registry data afresh",
        path.display(),
        snapshots.display(),
        covered.map_or("none of them".to_owned(), |index| format!("only those up to {index}"))
    )]
    PurgedPastSnapshot {
        /// The log's directory.
        path: PathBuf,
        /// The snapshots' directory.
        snapshots: PathBuf,
        /// The index of the last entry dropped.
        purged: u64,
        /// The index of the last entry the stored snapshot covers, if there is one.
        covered: Option<u64>,
    },
    /// The thread that writes the log, or the one that writes the snapshots, could not be
    /// started.
    #[error(
        "cannot start the thread that writes {}: {source}; the system may be out of threads or \
         memory",
        path.display()
    )]
    StartWriter {
        /// The directory the thread was to write.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A redb log of an earlier version was found but could not be imported.
    #[error(
        "cannot import the registry log of an earlier version from {} into {}: {source}; the \
         old file is left as it was; check free disk space and that the file is readable",
        legacy.display(),
        path.display()
    )]
    Import {
        /// The redb file of the earlier version.
        legacy: PathBuf,
        /// The log's directory.
        path: PathBuf,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// The durable Raft log of one node, in a fjall database.
///
/// Cloning is cheap and every clone shares the same in-memory log and writer thread: openraft
/// takes one clone as the log store and more as log readers, and the state machine takes one for
/// its snapshots. The database stays open, and locked against other processes, until the last
/// clone is dropped; that drop waits until everything queued is on disk and the database is
/// closed.
///
/// Entry types must be `Clone` because reads hand out copies of the entries kept in memory.
///
/// See the [module docs](self) for the layout and the durability guarantees.
pub struct LogStore<C>
where
    C: RaftTypeConfig,
{
    shared: Arc<Shared<C>>,
}

/// Where writes go: the writer thread's queue, or (for simulations) straight to the disk.
enum Sink<C>
where
    C: RaftTypeConfig,
{
    /// The writer's queue. Only this one sender exists, so the queue closes exactly when the last
    /// clone of the store is dropped.
    Queue(mpsc::Sender<Op<C>>),
    /// Each write commits on the caller's thread before the call returns (see
    /// [`LogStore::open_inline`]).
    Inline(Mutex<Writer<C>>),
}

/// See [`LogStore::on_own_append`].
type OwnAppended<C> = Box<dyn Fn(&[<C as RaftTypeConfig>::Entry]) + Send + Sync>;

/// What every clone of a [`LogStore`] shares.
///
/// Fields drop in declaration order, and the order matters: `ops` goes first, which closes the
/// queue and tells the writer to finish, and `_writer` goes last, waiting for it to do so.
struct Shared<C>
where
    C: RaftTypeConfig,
{
    /// Where writes go.
    ops: Sink<C>,
    /// Where the snapshot goes.
    snapshots: SnapshotStore<C>,
    /// The log as openraft sees it, ahead of the disk by whatever is queued or held. A plain
    /// mutex: it is never held across an `.await`, and only for map operations and entry
    /// copies.
    memory: Mutex<Memory<C>>,
    /// Set once, by the writer, when a commit fails; writes check it so that they fail at once
    /// instead of queueing behind a store that can no longer write.
    failure: Arc<OnceLock<Arc<DbError>>>,
    /// Kept to name the log in every error, since one machine may host several nodes.
    path: Arc<Path>,
    /// This node's Raft id, once set: appends of entries it wrote as leader are reported
    /// durable at once (see "A leader's own entries" above).
    own: OnceLock<C::NodeId>,
    /// Told of every append of this node's own entries, once it is queued
    /// ([`LogStore::on_own_append`]).
    own_appended: OnceLock<OwnAppended<C>>,
    /// How far the writes are on disk, published by the writer.
    synced: Arc<watch::Sender<Synced>>,
    /// The committed log id saved last, until the writer takes it into a batch.
    committed: Arc<CommittedSlot<C>>,
    /// Held by a test to keep the writer from committing.
    #[cfg(test)]
    pause: Arc<Mutex<()>>,
    /// Set by a test to make the writer panic at its next commit.
    #[cfg(test)]
    crash: Arc<std::sync::atomic::AtomicBool>,
    /// Never read: held for its drop, which waits for the writer thread.
    _writer: WriterThread,
}

impl<C> Memory<C>
where
    C: RaftTypeConfig,
{
    /// The last entry, or the last purged one when none is left.
    fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        match self.entries.last_key_value() {
            Some((_, entry)) => Some(entry.get_log_id().clone()),
            None => self.last_purged.clone(),
        }
    }
}

/// The in-memory copy of the log: what the disk will hold once the queue is written and any
/// held purge released.
struct Memory<C>
where
    C: RaftTypeConfig,
{
    /// Every entry not purged, by index.
    entries: BTreeMap<u64, C::Entry>,
    /// Kept apart from `entries` because the log state reports it even when no entry is left.
    last_purged: Option<LogId<C::NodeId>>,
    vote: Option<Vote<C::NodeId>>,
    committed: Option<LogId<C::NodeId>>,
    /// How many ops were queued so far; an op's number is this count once it is queued.
    queued: u64,
    /// Appends reported durable before they were, oldest first, until they are.
    early: VecDeque<EarlyAppend>,
    /// The index of the last entry the snapshot on disk covers, if one is there.
    snapshot_on_disk: Option<u64>,
    /// A purge past `snapshot_on_disk`: made in memory, held back from the disk until a
    /// snapshot that covers it is there (see "Purges wait for their snapshot").
    held_purge: Option<LogId<C::NodeId>>,
}

/// An append of this node's own entries, reported durable when it was queued.
#[derive(Clone, Copy, Debug)]
struct EarlyAppend {
    /// The index of its first entry.
    first: u64,
    /// Its number in queue order.
    op: u64,
}

/// How far the disk holds the ops queued, in queue order.
#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    /// Every op numbered up to this one is on disk.
    through: u64,
    /// A commit failed: nothing later will be.
    failed: bool,
}

/// One write (or snapshot load) for the writer thread, with whoever waits for it.
///
/// Values travel unencoded: the writer encodes them, so the caller (RaftCore's task, for the
/// log) pays for a copy of each entry rather than for its encoding.
enum Op<C>
where
    C: RaftTypeConfig,
{
    Append {
        entries: Vec<C::Entry>,
        /// `None` when the append was reported durable as it was queued.
        flushed: Option<LogFlushed<C>>,
    },
    Truncate {
        since: LogId<C::NodeId>,
    },
    Purge {
        upto: LogId<C::NodeId>,
    },
    SaveVote {
        vote: Vote<C::NodeId>,
        done: Reply<()>,
    },
    /// Only on an inline store: with a writer thread, the committed id waits in its slot.
    SaveCommitted {
        committed: Option<LogId<C::NodeId>>,
    },
    /// Writes nothing of its own; answered once every op queued before it is on disk (its
    /// batch syncs the journal), which a snapshot waits for before it is saved.
    Barrier {
        done: Reply<()>,
    },
}

/// Where the writer answers a caller that waits for its write.
type Reply<T> = oneshot::Sender<Result<T, DbError>>;

impl<C> Op<C>
where
    C: RaftTypeConfig,
{
    /// Whether the op changes the disk; a batch of only such ops skips the commit and its fsync.
    fn writes(&self) -> bool {
        match self {
            Op::Append { entries, .. } => !entries.is_empty(),
            Op::Truncate { .. }
            | Op::Purge { .. }
            | Op::SaveVote { .. }
            | Op::SaveCommitted { .. }
            | Op::Barrier { .. } => true,
        }
    }

    /// Whether someone waits on the op's commit (a callback, a caller, or for an append
    /// reported early, [`LogStore::durable_through`]), so that its batch cannot wait for a
    /// later one.
    fn is_waited_on(&self) -> bool {
        match self {
            Op::Append { .. } | Op::SaveVote { .. } | Op::Barrier { .. } => true,
            Op::Truncate { .. } | Op::Purge { .. } | Op::SaveCommitted { .. } => false,
        }
    }

    /// Whether the op must be on disk before anyone is told it is done: entries (acknowledged
    /// to the leader), votes, and a barrier (with all before it). Truncates, purges and the
    /// committed index need not: lost in a crash they only leave more log than needed, and
    /// any later durable commit carries them (the journal is written in order).
    fn must_be_durable(&self) -> bool {
        match self {
            Op::Append { entries, .. } => !entries.is_empty(),
            Op::SaveVote { .. } | Op::Barrier { .. } => true,
            Op::Truncate { .. } | Op::Purge { .. } | Op::SaveCommitted { .. } => false,
        }
    }
}

/// Reads the last entry of a [`LogStore`]'s log without keeping the log open: a node that
/// stopped frees its data dir once Raft lets go of the store, and may be started on it again
/// at once.
pub(crate) struct LastLogId<C>(Weak<Shared<C>>)
where
    C: RaftTypeConfig;

impl<C> Clone for LastLogId<C>
where
    C: RaftTypeConfig,
{
    fn clone(&self) -> Self {
        LastLogId(Weak::clone(&self.0))
    }
}

impl<C> LastLogId<C>
where
    C: RaftTypeConfig,
{
    /// The last entry in the log (on disk or queued for it), or the last purged one when none
    /// is left, as Raft's log state says; `None` once the log is closed too.
    ///
    /// (Were the store dropped everywhere else while this reads, the drop, which waits for
    /// the writer thread to finish, would happen here: only as a node stops.)
    pub(crate) fn get(&self) -> Option<LogId<C::NodeId>> {
        self.0.upgrade()?.memory.lock().last_log_id()
    }
}

impl<C> Clone for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
{
    /// Reads the log's last entry without keeping the log open ([`LastLogId`]).
    pub(crate) fn last_log_id_reader(&self) -> LastLogId<C> {
        LastLogId(Arc::downgrade(&self.shared))
    }

    /// Opens the log in the directory `path`, creating it, and its parents, if they do not
    /// exist, loads the log into memory and starts the writer thread.
    ///
    /// This blocks on file I/O (and, for a log left by a crash, on fjall's journal recovery);
    /// call it at start-up, before the Raft node runs, or from a blocking thread.
    ///
    /// # Errors
    ///
    /// [`OpenError::AlreadyOpen`] if another process or another `LogStore` holds the log, and
    /// the other variants of [`OpenError`] when the directory cannot be created, read or does
    /// not hold a registry log of a known layout.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with(path, false)
    }

    /// Like [`open`](Self::open), but with no writer thread: every write commits (with its
    /// fsync) on the calling task before the call returns, blocking the async runtime meanwhile.
    ///
    /// Only for simulations on paused tokio time: there, a writer thread would let virtual time
    /// run on while the disk works, as if every fsync took forever; inline, virtual time stands
    /// still during the write. Production nodes use [`open`](Self::open).
    pub fn open_inline(path: &Path) -> Result<Self, OpenError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, inline: bool) -> Result<Self, OpenError> {
        std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
            dir: path.to_path_buf(),
            source,
        })?;
        let tables = Tables::open(path)?;
        let tables_failed = |source: DbError| OpenError::Tables {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        // A new log records its layout only once the checks below pass.
        let recorded = tables.format().map_err(tables_failed)?;
        let found = recorded.unwrap_or(FORMAT_VERSION);
        if found != FORMAT_VERSION && found != FORMAT_SNAPSHOT_INSIDE {
            return Err(OpenError::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
                expected: FORMAT_VERSION,
            });
        }
        let snapshots_path = snapshot_dir(path);
        let mut snapshot_db = SnapshotDb::open(&snapshots_path)?;
        move_snapshot_out(&tables, &snapshot_db).map_err(|source| OpenError::MoveSnapshot {
            path: path.to_path_buf(),
            snapshots: snapshots_path.clone(),
            source: Box::new(source),
        })?;
        let covered = snapshot_db
            .covered::<C>()
            .map_err(|source| OpenError::Snapshots {
                path: snapshots_path.clone(),
                source: Box::new(source),
            })?;
        if recorded.is_none() {
            if covered.is_some() {
                // The log was deleted or replaced and its vote with it: taking up the snapshot
                // alone would hide that the node may vote twice in a term it already voted in.
                // Nothing is recorded, so every later start is refused too.
                return Err(OpenError::SnapshotsWithoutLog {
                    path: path.to_path_buf(),
                    snapshots: snapshots_path,
                });
            }
            record_format(&tables).map_err(tables_failed)?;
        }
        let snapshots = SnapshotStore::start(snapshot_db, &snapshots_path, inline)?;
        let mut memory = load_memory::<C>(&tables).map_err(|source| OpenError::Load {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        if let Some(purged) = &memory.last_purged
            && covered.is_none_or(|covered| covered < purged.index)
        {
            // The entries are gone and no snapshot holds them: openraft would start from an
            // empty state, and as leader send it on. Purges reach the disk only behind their
            // snapshot, so only a snapshots' directory deleted or replaced by hand gets here.
            return Err(OpenError::PurgedPastSnapshot {
                path: path.to_path_buf(),
                snapshots: snapshots_path,
                purged: purged.index,
                covered,
            });
        }
        memory.snapshot_on_disk = covered;

        let path: Arc<Path> = Arc::from(path);
        let failure = Arc::new(OnceLock::new());
        // The writer takes the only handle on the database, so it closes when the writer ends.
        let synced = Arc::new(watch::Sender::new(Synced::default()));
        let committed = Arc::new(Mutex::new(None));
        #[cfg(test)]
        let pause = Arc::new(Mutex::new(()));
        #[cfg(test)]
        let crash = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer {
            tables,
            failure: Arc::clone(&failure),
            path: Arc::clone(&path),
            written: 0,
            synced: Arc::clone(&synced),
            committed: Arc::clone(&committed),
            #[cfg(test)]
            pause: Arc::clone(&pause),
            #[cfg(test)]
            crash: Arc::clone(&crash),
            _types: std::marker::PhantomData,
        };
        let (ops, thread) = if inline {
            (Sink::Inline(Mutex::new(writer)), None)
        } else {
            let (ops, queue) = mpsc::channel(QUEUE_CAPACITY);
            let thread = std::thread::Builder::new()
                .name("registry-log".to_string())
                .spawn(move || writer.run(queue))
                .map_err(|source| OpenError::StartWriter {
                    path: path.to_path_buf(),
                    source,
                })?;
            (Sink::Queue(ops), Some(thread))
        };
        Ok(Self {
            shared: Arc::new(Shared {
                ops,
                snapshots,
                memory: Mutex::new(memory),
                failure,
                path,
                own: OnceLock::new(),
                own_appended: OnceLock::new(),
                synced,
                committed,
                #[cfg(test)]
                pause,
                #[cfg(test)]
                crash,
                _writer: WriterThread(thread),
            }),
        })
    }

    /// The directory this store was opened on.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether writes commit on the caller's thread ([`LogStore::open_inline`]): a simulation
    /// on paused time, where other work meant for a thread of its own runs inline too.
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.shared.ops, Sink::Inline(_))
    }

    /// Durably replaces the stored snapshot with `snapshot`, unless the stored one covers more
    /// of the log (then it keeps that one), and queues the purge held back for it.
    ///
    /// Returns once the snapshot is on disk, and every log write made before the call before it
    /// (see "Order with the log" in [`snapshot_store`](super::snapshot_store)); meta and data
    /// are replaced together, so a crash leaves either the old snapshot or the new one. Log
    /// writes made meanwhile go on committing while the snapshot is written.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] naming the snapshot if encoding or the write fails, or if an earlier
    /// write failed (see the [module docs](self#failure)).
    pub async fn save_snapshot(
        &self,
        snapshot: &StoredSnapshot<C>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let signature = snapshot.meta.signature();
        let failed = |e: DbError, what: String| {
            let e = e.context(what);
            StorageIOError::write_snapshot(Some(signature.clone()), e).into()
        };
        self.submit_and_wait(|_, done| Op::Barrier { done })
            .await
            .map_err(|e| {
                let what = format!(
                    "syncing the registry log at {} before snapshot {}",
                    self.shared.path.display(),
                    signature.snapshot_id
                );
                failed(e, what)
            })?;
        // A copy, because the snapshot thread writes it and the caller keeps its snapshot.
        let copy = StoredSnapshot {
            meta: snapshot.meta.clone(),
            data: snapshot.data.clone(),
        };
        let covered = self.shared.snapshots.save(copy).await.map_err(|e| {
            let what = format!(
                "saving snapshot {} in {}",
                signature.snapshot_id,
                self.shared.snapshots.path().display()
            );
            failed(e, what)
        })?;
        // The purge held back for this snapshot goes to the disk now, queued before this call
        // returns, and so before any entry the caller appends after the snapshot.
        self.submit(|memory| {
            memory.snapshot_on_disk = memory.snapshot_on_disk.max(covered);
            match memory.held_purge.take() {
                Some(upto) if covered.is_some_and(|covered| upto.index <= covered) => {
                    Some(Op::Purge { upto })
                }
                held => {
                    memory.held_purge = held;
                    None
                }
            }
        })
        .await
        .map_err(|e| {
            let what = format!(
                "purging the entries snapshot {} covers from the registry log at {}",
                signature.snapshot_id,
                self.shared.path.display()
            );
            failed(e, what)
        })
    }

    /// The stored snapshot (the one covering most of the log of those saved with
    /// [`Self::save_snapshot`]), or `None` if there is none.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] naming the snapshots' directory if the read or decoding fails.
    pub async fn load_snapshot(
        &self,
    ) -> Result<Option<StoredSnapshot<C>>, StorageError<C::NodeId>> {
        self.shared.snapshots.load().await.map_err(|e| {
            let what = format!(
                "loading the snapshot from {}",
                self.shared.snapshots.path().display()
            );
            StorageIOError::read_snapshot(None, e.context(what)).into()
        })
    }

    /// Reports appends of entries that `me` wrote as leader durable as soon as they are queued,
    /// before the writer has synced them, and reads `me`'s own committed vote back uncommitted
    /// (see "A leader's own entries" in the module docs). Call it before Raft starts.
    pub(crate) fn report_own_appends_early(&self, me: C::NodeId) {
        let _ = self.shared.own.set(me);
    }

    /// Calls `told` with the entries of every append of this node's own entries as leader,
    /// once they are queued: from then on [`Self::durable_through`] waits for them.
    pub(crate) fn on_own_append(&self, told: impl Fn(&[C::Entry]) + Send + Sync + 'static) {
        let _ = self.shared.own_appended.set(Box::new(told));
    }

    /// For the entry at `index`: the index of the last entry before it that is neither blank
    /// nor a membership change (or of the last purged entry, if none is left), and whether an
    /// entry after `since`, up to `index`, changes the membership.
    pub(crate) fn entry_context(&self, index: u64, since: u64) -> (u64, bool) {
        let memory = self.shared.memory.lock();
        let before = memory
            .entries
            .range(..index)
            .rev()
            .find(|(_, entry)| !entry.is_blank() && entry.get_membership().is_none())
            .map(|(at, _)| *at)
            .unwrap_or_else(|| memory.last_purged.as_ref().map_or(0, |id| id.index));
        let changes_membership = since < index
            && memory
                .entries
                .range(since + 1..=index)
                .any(|(_, entry)| entry.get_membership().is_some());
        (before, changes_membership)
    }

    /// Whether `entries` are all entries this node wrote as leader (once it knows its id).
    fn own(&self, entries: &[C::Entry]) -> bool {
        let Some(me) = self.shared.own.get() else {
            return false;
        };
        !entries.is_empty()
            && entries
                .iter()
                .all(|entry| &entry.get_log_id().leader_id.node_id == me)
    }

    /// Waits until the appends reported early (a leader's own) that wrote at or below `index`
    /// are on disk. Other appends are on disk once openraft has heard of them, since their
    /// callback waits for the disk, so after this every entry up to `index` that openraft
    /// knows of is durable.
    pub(crate) async fn durable_through(&self, index: u64) -> Result<(), StorageError<C::NodeId>> {
        let mut synced = self.shared.synced.subscribe();
        let op = {
            let mut memory = self.shared.memory.lock();
            let through = synced.borrow().through;
            while memory
                .early
                .front()
                .is_some_and(|early| early.op <= through)
            {
                memory.early.pop_front();
            }
            // Appends are numbered in order: the last one that wrote at or below `index`.
            match memory.early.iter().rev().find(|early| early.first <= index) {
                Some(early) => early.op,
                None => return Ok(()),
            }
        };
        let reached = synced
            .wait_for(|synced| synced.failed || synced.through >= op)
            .await
            .map(|synced| !synced.failed);
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StorageIOError::write_logs(AnyError::error(format!(
                "the registry log at {} could not write entries up to {index}",
                self.shared.path.display()
            )))
            .into()),
        }
    }

    /// Queues the op that `change` returns, if any, after `change` has applied it to memory.
    ///
    /// Waits for room in the queue before calling `change`, so that a caller that gives up while
    /// the queue is full leaves nothing half done.
    async fn submit(
        &self,
        change: impl FnOnce(&mut Memory<C>) -> Option<Op<C>>,
    ) -> Result<(), DbError> {
        let ops = match &self.shared.ops {
            Sink::Queue(ops) => ops,
            Sink::Inline(writer) => {
                if let Some(failure) = self.shared.failure.get() {
                    return Err(DbError::Refused(Arc::clone(failure)));
                }
                // The writer's lock first, so that writes reach memory and the disk in the
                // same order.
                let mut writer = writer.lock();
                let mut memory = self.shared.memory.lock();
                if let Some(op) = change(&mut memory) {
                    memory.queued += 1;
                    drop(memory);
                    writer.write(&mut vec![op], None);
                }
                return Ok(());
            }
        };
        let permit = ops.reserve().await.map_err(|_| DbError::WriterGone)?;
        if let Some(failure) = self.shared.failure.get() {
            return Err(DbError::Refused(Arc::clone(failure)));
        }
        // Memory and queue change under one lock, so that clones writing at the same time leave
        // both in the same order.
        let mut memory = self.shared.memory.lock();
        if let Some(op) = change(&mut memory) {
            permit.send(op);
            memory.queued += 1;
        }
        Ok(())
    }

    /// Like [`Self::submit`], then waits for the writer's answer: for a write, until it is on
    /// disk.
    async fn submit_and_wait<T>(
        &self,
        change: impl FnOnce(&mut Memory<C>, Reply<T>) -> Op<C>,
    ) -> Result<T, DbError> {
        let (done, answer) = oneshot::channel();
        self.submit(|memory| Some(change(memory, done))).await?;
        answer.await.map_err(|_| DbError::WriterGone)?
    }

    fn io_error(&self, what: impl fmt::Display, e: DbError) -> AnyError {
        e.context(format!(
            "{what} in the registry log at {}",
            self.shared.path.display()
        ))
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
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
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let memory = self.shared.memory.lock();
        Ok(memory
            .entries
            .range((Bound::Included(start), upper))
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let memory = self.shared.memory.lock();
        Ok(LogState {
            last_purged_log_id: memory.last_purged.clone(),
            last_log_id: memory.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let saved = vote.clone();
        self.submit_and_wait(|memory, done| {
            memory.vote = Some(saved.clone());
            Op::SaveVote { vote: saved, done }
        })
        .await
        .map_err(|e| {
            StorageIOError::write_vote(self.io_error(format!("saving vote {vote}"), e)).into()
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        if let Some(me) = self.shared.own.get() {
            return Ok(self.shared.memory.lock().vote.clone().map(|mut vote| {
                // A leader that reported its entries early may have lost some in a crash that
                // its followers hold: it must not lead that term again (openraft 0.9 resumes a
                // committed lead at start), or it would write other entries under the same
                // log ids. As a candidate's vote, it still votes for nobody else in the term.
                if vote.leader_id().voted_for().as_ref() == Some(me) {
                    vote.committed = false;
                }
                vote
            }));
        }
        Ok(self.shared.memory.lock().vote.clone())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Not waited for: RaftCore calls this before every apply, and an fsync of its own would
        // delay every commit. It rides along with the next commit instead; losing it in a crash
        // only means re-applying fewer entries at start-up (see the module docs).
        let saved = committed.clone();
        let queued = match &self.shared.ops {
            Sink::Queue(_) => match self.shared.failure.get() {
                Some(failure) => Err(DbError::Refused(Arc::clone(failure))),
                None => {
                    self.shared.memory.lock().committed = saved.clone();
                    *self.shared.committed.lock() = Some(saved);
                    Ok(())
                }
            },
            Sink::Inline(_) => {
                self.submit(|memory| {
                    memory.committed = saved.clone();
                    Some(Op::SaveCommitted { committed: saved })
                })
                .await
            }
        };
        queued.map_err(|e| {
            let what = format!("saving committed log id {committed:?}");
            StorageIOError::write(self.io_error(what, e)).into()
        })
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.shared.memory.lock().committed.clone())
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
        let span = index_span(&entries);
        if let Some((first, last)) = span {
            tracing::trace!(first, last, "appending to the registry log");
        }
        // Even an empty append goes through the queue, so that its callback, like any other,
        // does not come before the writes queued ahead of it are on disk.
        let own = self.own(&entries);
        // Reported durable at once: this node's own, when writes go through the writer thread.
        let early = own && matches!(self.shared.ops, Sink::Queue(_));
        let told = self
            .shared
            .own_appended
            .get()
            .filter(|_| own)
            .map(|told| (told, entries.clone()));
        let copies = entries.clone();
        let (flushed, report_now) = if early {
            (None, Some(callback))
        } else {
            (Some(callback), None)
        };
        self.submit(|memory| {
            if let (true, Some((first, _))) = (early, span) {
                let op = memory.queued + 1;
                memory.early.push_back(EarlyAppend { first, op });
            }
            for entry in copies {
                memory.entries.insert(entry.get_log_id().index, entry);
            }
            Some(Op::Append { entries, flushed })
        })
        .await
        // If the op was never queued, the callback is dropped unreported: the error returned
        // here already stops openraft (it treats storage errors as fatal).
        .map_err(|e| StorageIOError::write_logs(self.io_error(describe_append(span), e)))?;
        if let Some((told, entries)) = told {
            told(&entries);
        }
        if let Some(callback) = report_now {
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(since = %log_id, "truncating the registry log");
        let since = log_id.clone();
        self.submit(|memory| {
            drop(memory.entries.split_off(&since.index));
            Some(Op::Truncate { since })
        })
        .await
        .map_err(|e| {
            let what = format!("deleting entries from {log_id} on");
            StorageIOError::write_logs(self.io_error(what, e)).into()
        })
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(upto = %log_id, "purging the registry log");
        let upto = log_id.clone();
        self.submit(|memory| {
            memory.entries = match upto.index.checked_add(1) {
                Some(kept) => memory.entries.split_off(&kept),
                None => BTreeMap::new(),
            };
            memory.last_purged = Some(upto.clone());
            if memory
                .snapshot_on_disk
                .is_some_and(|covered| upto.index <= covered)
            {
                // It covers any purge held back before it.
                memory.held_purge = None;
                Some(Op::Purge { upto })
            } else {
                memory.held_purge = Some(upto);
                None
            }
        })
        .await
        .map_err(|e| {
            let what = format!("purging entries up to {log_id}");
            StorageIOError::write_logs(self.io_error(what, e)).into()
        })
    }
}

/// The writer thread's state: the only handle on the database once the store is open.
struct Writer<C>
where
    C: RaftTypeConfig,
{
    tables: Tables,
    failure: Arc<OnceLock<Arc<DbError>>>,
    path: Arc<Path>,
    /// How many ops were taken into batches (committed, durably or not, or failed): the number
    /// of the last one.
    written: u64,
    synced: Arc<watch::Sender<Synced>>,
    committed: Arc<CommittedSlot<C>>,
    #[cfg(test)]
    pause: Arc<Mutex<()>>,
    #[cfg(test)]
    crash: Arc<std::sync::atomic::AtomicBool>,
    _types: std::marker::PhantomData<fn() -> C>,
}

/// A committed log id saved and not yet written: `Some(id)`, where `id` is itself an option
/// (openraft may save "nothing committed").
type CommittedSlot<C> = Mutex<Option<Option<LogId<<C as RaftTypeConfig>::NodeId>>>>;

/// Why a batch was not written; shared by every op in it.
#[derive(Clone)]
enum BatchFailure {
    /// This batch's commit failed.
    Now(Arc<DbError>),
    /// An earlier commit failed, and the store writes nothing since.
    Earlier(Arc<DbError>),
}

impl From<BatchFailure> for DbError {
    fn from(failure: BatchFailure) -> Self {
        match failure {
            BatchFailure::Now(e) => DbError::Commit(e),
            BatchFailure::Earlier(e) => DbError::Refused(e),
        }
    }
}

impl<C> Writer<C>
where
    C: RaftTypeConfig,
{
    /// Commits batches until the queue closes and is empty, then closes the database by
    /// dropping it.
    fn run(mut self, mut queue: mpsc::Receiver<Op<C>>) {
        let span = tracing::info_span!("registry_log_writer", path = %self.path.display());
        let _entered = span.enter();
        let _failed_if_panicking = FailedIfPanicking(Arc::clone(&self.synced));
        let mut batch = Vec::with_capacity(QUEUE_CAPACITY);
        // Writes nobody waits for and that need no fsync (truncates, purges) wait here for the
        // next batch that commits anyway: a commit costs CPU even without an fsync.
        let mut deferred = Vec::new();
        // Takes whatever is queued, up to the capacity: the writes that arrived during the last
        // commit share the next one.
        while queue.blocking_recv_many(&mut batch, QUEUE_CAPACITY) > 0 {
            let must_commit = batch.iter().any(Op::is_waited_on);
            if !must_commit && deferred.len() < QUEUE_CAPACITY {
                deferred.append(&mut batch);
                continue;
            }
            if !deferred.is_empty() {
                // In queue order: the deferred writes came first.
                deferred.append(&mut batch);
                std::mem::swap(&mut batch, &mut deferred);
            }
            // The slot first, then the queue: the entries the committed id covers were queued
            // before it was saved, so they are in the batch by now, or in an earlier one.
            let committed = self.committed.lock().take();
            while let Ok(op) = queue.try_recv() {
                batch.push(op);
            }
            self.write(&mut batch, committed);
        }
        let committed = self.committed.lock().take();
        if !deferred.is_empty() || committed.is_some() {
            self.write(&mut deferred, committed);
        }
        // Writes nobody waited for (the deferred ones above, a last committed id) reach the
        // disk too, not only the operating system's cache.
        if let Err(e) = self.tables.db.persist(PersistMode::SyncData) {
            tracing::warn!(error = ?e, "could not sync the registry log while closing it");
        }
        tracing::debug!("the registry log is closed");
    }

    /// Commits `batch`, and `committed` (a committed log id from the slot) after it, in one
    /// transaction, durable if anything in the batch must be, then reports to everyone waiting
    /// on it.
    fn write(&mut self, batch: &mut Vec<Op<C>>, committed: Option<Option<LogId<C::NodeId>>>) {
        #[cfg(test)]
        let _paused = self.pause.lock();
        #[cfg(test)]
        assert!(
            !self.crash.load(std::sync::atomic::Ordering::Relaxed),
            "the registry log's writer crashed, as a test asked"
        );
        let outcome = match self.failure.get() {
            Some(earlier) => Err(BatchFailure::Earlier(Arc::clone(earlier))),
            None => commit_batch(&self.tables, batch, committed.as_ref()).map_err(|e| {
                tracing::error!(error = %e, "commit failed; the log refuses writes from now on");
                let e = Arc::new(e);
                // Set only here, and this thread is the only writer, so the set cannot fail.
                let _ = self.failure.set(Arc::clone(&e));
                BatchFailure::Now(e)
            }),
        };
        self.written += batch.len() as u64;
        let written = self.written;
        match &outcome {
            // A durable commit syncs the journal, and with it every write committed before.
            Ok(()) if batch.iter().any(Op::must_be_durable) => {
                self.synced.send_modify(|synced| synced.through = written);
            }
            Ok(()) => {}
            Err(_) => self.synced.send_modify(|synced| synced.failed = true),
        }
        for op in batch.drain(..) {
            self.report(op, &outcome);
        }
    }

    /// Tells whoever waits on `op` how its batch went.
    fn report(&self, op: Op<C>, outcome: &Result<(), BatchFailure>) {
        let result = || outcome.clone().map_err(DbError::from);
        // A caller that stopped waiting has dropped its receiver; its write still happened, and
        // nobody else needs the answer, so a failed send is ignored.
        match op {
            Op::Append { flushed: None, .. } => {}
            Op::Append {
                entries,
                flushed: Some(flushed),
            } => {
                flushed.log_io_completed(result().map_err(|e| {
                    let what = format!(
                        "{} in the registry log at {}",
                        describe_append(index_span(&entries)),
                        self.path.display()
                    );
                    io::Error::other(e.context(what))
                }));
            }
            Op::SaveVote { done, .. } | Op::Barrier { done } => {
                let _ = done.send(result());
            }
            Op::Truncate { .. } | Op::Purge { .. } | Op::SaveCommitted { .. } => {}
        }
    }
}

/// A writer thread's handle (the log's, the snapshots'), `None` for an inline store; dropping
/// it waits for the thread to end, and so for its database to close.
/// Marks the log's writes failed if the writer thread ends in a panic (a fault of this code or
/// of the store under it): whoever waits for a write to be durable (`durable_through`) then
/// fails at once, instead of waiting for a thread that is gone. Later writes find the queue
/// closed, and fail too.
struct FailedIfPanicking(Arc<watch::Sender<Synced>>);

impl Drop for FailedIfPanicking {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.send_modify(|synced| synced.failed = true);
        }
    }
}

pub(super) struct WriterThread(pub(super) Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let Some(thread) = self.0.take() else {
            return;
        };
        let name = thread
            .thread()
            .name()
            .unwrap_or("a registry writer")
            .to_owned();
        if thread.join().is_err() {
            // The panic was already printed; a drop has no one to hand it to.
            tracing::error!("the thread {name} panicked");
        }
    }
}

/// The database and its keyspaces: the writer's only handle on the disk once the store is open.
struct Tables {
    log: Keyspace,
    meta: Keyspace,
    /// Dropped last: closing the database waits for fjall's threads and releases its lock.
    db: Database,
}

impl Tables {
    fn open(path: &Path) -> Result<Tables, OpenError> {
        let db = Database::builder(path)
            // The writer decides when the journal reaches the disk: a batch that must be durable
            // syncs it, the others wait for the next such batch.
            .manual_journal_persist(true)
            // fjall's smallest: journals are rotated (and memtables flushed to sorted files)
            // once they hold this much, so a node's log takes tens of MiB of disk, not the
            // default 512.
            .max_journaling_size(64 * 1024 * 1024)
            .open()
            .map_err(|source| match source {
                fjall::Error::Locked => OpenError::AlreadyOpen {
                    path: path.to_path_buf(),
                },
                source => OpenError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let keyspace = |name| db.keyspace(name, KeyspaceCreateOptions::default);
        let opened = (|| Ok::<_, fjall::Error>((keyspace(LOG)?, keyspace(META)?)))();
        let (log, meta) = opened.map_err(|source| OpenError::Tables {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Tables { log, meta, db })
    }

    /// The layout version recorded in the database, `None` for a new one.
    fn format(&self) -> Result<Option<u32>, DbError> {
        get_decoded::<u32>(&self.meta, FORMAT_KEY)
    }
}

/// Moves a snapshot that layout version 2 kept in the log's own database into `snapshots`, then
/// records the current layout and drops the old keyspace; a no-op for a log of the current
/// layout.
///
/// Each step is synced before the next, so a crash part-way leaves either version 2 with its
/// snapshot (the next open moves it again, over the same snapshot) or version 3 with the old
/// keyspace still there (the next open drops it).
fn move_snapshot_out(tables: &Tables, snapshots: &SnapshotDb) -> Result<(), DbError> {
    if !tables.db.keyspace_exists(SNAPSHOT) {
        if get_decoded::<u32>(&tables.meta, FORMAT_KEY)? == Some(FORMAT_SNAPSHOT_INSIDE) {
            record_format(tables)?;
        }
        return Ok(());
    }
    let inside = tables
        .db
        .keyspace(SNAPSHOT, KeyspaceCreateOptions::default)?;
    if get_decoded::<u32>(&tables.meta, FORMAT_KEY)? == Some(FORMAT_SNAPSHOT_INSIDE) {
        if let Some(stored) = read_encoded(&inside)? {
            snapshots.save_encoded(&stored.meta, &stored.data)?;
        }
        record_format(tables)?;
    }
    tables.db.delete_keyspace(inside)?;
    Ok(())
}

/// Records the current layout version, durably.
fn record_format(tables: &Tables) -> Result<(), DbError> {
    let mut batch = tables.db.batch().durability(Some(PersistMode::SyncData));
    batch.insert(&tables.meta, FORMAT_KEY, encode(&FORMAT_VERSION)?);
    batch.commit()?;
    Ok(())
}

/// Reads what the in-memory copy starts from. Nothing writes while the store opens, so all of
/// it comes from the same state.
fn load_memory<C>(tables: &Tables) -> Result<Memory<C>, DbError>
where
    C: RaftTypeConfig,
{
    let mut entries = BTreeMap::new();
    for item in tables.log.iter() {
        let (key, value) = item.into_inner()?;
        entries.insert(index_of(&key)?, decode::<C::Entry>(&value)?);
    }
    Ok(Memory {
        entries,
        last_purged: get_decoded(&tables.meta, LAST_PURGED_KEY)?,
        vote: get_decoded(&tables.meta, VOTE_KEY)?,
        committed: get_decoded(&tables.meta, COMMITTED_KEY)?,
        queued: 0,
        early: VecDeque::new(),
        snapshot_on_disk: None,
        held_purge: None,
    })
}

/// The key of the entry at `index`: big-endian, so that fjall's byte order is index order.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a key of the `log` keyspace stands for.
fn index_of(key: &[u8]) -> Result<u64, DbError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| DbError::Corrupt(format!("a log key of {} bytes, not 8", key.len())))
}

/// The indexes in `range` that the `log` keyspace holds, as committed so far.
fn stored_indexes(log: &Keyspace, range: impl RangeBounds<u64>) -> Result<Vec<u64>, DbError> {
    let bound = |bound: Bound<&u64>| bound.map(|&index| log_key(index));
    let keys = (bound(range.start_bound()), bound(range.end_bound()));
    let mut indexes = Vec::new();
    for item in log.range::<[u8; 8], _>(keys) {
        indexes.push(index_of(&item.key()?)?);
    }
    Ok(indexes)
}

/// What one op changes on disk, borrowed from it.
enum Write<'a, C>
where
    C: RaftTypeConfig,
{
    Append(&'a [C::Entry]),
    Truncate(&'a LogId<C::NodeId>),
    Purge(&'a LogId<C::NodeId>),
    Vote(&'a Vote<C::NodeId>),
    Committed(Option<&'a LogId<C::NodeId>>),
}

impl<C> Op<C>
where
    C: RaftTypeConfig,
{
    fn write(&self) -> Option<Write<'_, C>> {
        Some(match self {
            Op::Append { entries, .. } => Write::Append(entries),
            Op::Truncate { since } => Write::Truncate(since),
            Op::Purge { upto } => Write::Purge(upto),
            Op::SaveVote { vote, .. } => Write::Vote(vote),
            Op::SaveCommitted { committed } => Write::Committed(committed.as_ref()),
            Op::Barrier { .. } => return None,
        })
    }
}

/// Commits the writes of `batch`, then `committed` if given, in one fjall write batch, synced
/// to disk if any of them must be durable.
fn commit_batch<C>(
    tables: &Tables,
    batch: &[Op<C>],
    committed: Option<&Option<LogId<C::NodeId>>>,
) -> Result<(), DbError>
where
    C: RaftTypeConfig,
{
    if !batch.iter().any(Op::writes) && committed.is_none() {
        return Ok(());
    }
    let durable = batch.iter().any(Op::must_be_durable);
    let committed = committed.map(|id| Write::Committed(id.as_ref()));
    let writes = batch.iter().filter_map(Op::write).chain(committed);
    commit_writes(tables, writes, durable)
}

/// Folds `writes`, in order, into one fjall write batch and commits it.
fn commit_writes<'a, C>(
    tables: &Tables,
    writes: impl IntoIterator<Item = Write<'a, C>>,
    durable: bool,
) -> Result<(), DbError>
where
    C: RaftTypeConfig,
{
    // The last write to each key, `None` for a delete. fjall gives every item of a write batch
    // the same sequence number, so two writes to one key in a batch must become one.
    let mut log: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut meta: BTreeMap<&'static str, Option<Vec<u8>>> = BTreeMap::new();
    for write in writes {
        match write {
            Write::Append(entries) => {
                for entry in entries {
                    log.insert(entry.get_log_id().index, Some(encode(entry)?));
                }
            }
            Write::Truncate(since) => {
                for index in stored_indexes(&tables.log, since.index..)? {
                    log.insert(index, None);
                }
                for (_, write) in log.range_mut(since.index..) {
                    *write = None;
                }
            }
            Write::Purge(upto) => {
                for index in stored_indexes(&tables.log, ..=upto.index)? {
                    log.insert(index, None);
                }
                for (_, write) in log.range_mut(..=upto.index) {
                    *write = None;
                }
                meta.insert(LAST_PURGED_KEY, Some(encode(upto)?));
            }
            Write::Vote(vote) => {
                meta.insert(VOTE_KEY, Some(encode(vote)?));
            }
            Write::Committed(committed) => {
                meta.insert(COMMITTED_KEY, committed.map(encode).transpose()?);
            }
        }
    }
    let mut write = tables
        .db
        .batch()
        .durability(durable.then_some(PersistMode::SyncData));
    for (index, value) in log {
        match value {
            Some(value) => write.insert(&tables.log, log_key(index), value),
            None => write.remove(&tables.log, log_key(index)),
        }
    }
    for (key, value) in meta {
        match value {
            Some(value) => write.insert(&tables.meta, key, value),
            None => write.remove(&tables.meta, key),
        }
    }
    if write.is_empty() {
        // Only a barrier (or writes that cancelled out): fjall skips an empty batch, sync
        // included, so the journal is synced on its own.
        if durable {
            tables.db.persist(PersistMode::SyncData)?;
        }
        return Ok(());
    }
    write.commit()?;
    Ok(())
}

/// Imports the log of an earlier version, kept in the redb file `legacy`, into the database at
/// `path`, then renames the file to `<legacy>.imported`. Returns whether there was one.
///
/// Values are copied as they are (both layouts encode them the same way), in one synced
/// batch, before the rename: a crash in between leaves the file, and the next start sees the
/// database already holds a log and only renames it.
///
/// # Errors
///
/// [`OpenError::Import`] naming both paths if the file cannot be read or is not a registry log
/// of layout version 1, or the copy or the rename fails; the file is then left as it was.
pub fn import_redb(legacy: &Path, path: &Path) -> Result<bool, OpenError> {
    if !legacy.exists() {
        return Ok(false);
    }
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| OpenError::Import {
        legacy: legacy.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
        dir: path.to_path_buf(),
        source,
    })?;
    let tables = Tables::open(path)?;
    let holds_a_log = get_decoded::<u32>(&tables.meta, FORMAT_KEY)
        .map_err(|e| failed(Box::new(e)))?
        .is_some();
    if !holds_a_log {
        copy_redb(legacy, &tables).map_err(failed)?;
    }
    drop(tables);
    let mut imported = legacy.as_os_str().to_owned();
    imported.push(".imported");
    std::fs::rename(legacy, &imported).map_err(|e| failed(Box::new(e)))?;
    tracing::info!(
        from = %legacy.display(),
        to = %path.display(),
        "imported the registry log of an earlier version"
    );
    Ok(true)
}

/// Copies the redb log at `legacy` into `tables` as layout version 2, snapshot included, in one
/// synced batch; [`LogStore::open`] then moves the snapshot out as it does for any log of that
/// version.
fn copy_redb(
    legacy: &Path,
    tables: &Tables,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const LEGACY_LOG: TableDefinition<'static, u64, &[u8]> = TableDefinition::new(LOG);
    const LEGACY_META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new(META);
    const LEGACY_SNAPSHOT: TableDefinition<'static, &str, &[u8]> = TableDefinition::new(SNAPSHOT);
    const LEGACY_FORMAT: u32 = 1;

    let db = redb::Database::open(legacy)?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(LEGACY_META)?;
    let found = match meta.get(FORMAT_KEY)? {
        Some(bytes) => Some(decode::<u32>(bytes.value())?),
        None => None,
    };
    if found != Some(LEGACY_FORMAT) {
        return Err(format!(
            "it records layout version {found:?}, and only version {LEGACY_FORMAT} is imported"
        )
        .into());
    }
    let snapshot = tables
        .db
        .keyspace(SNAPSHOT, KeyspaceCreateOptions::default)?;
    let mut batch = tables.db.batch().durability(Some(PersistMode::SyncData));
    for item in txn.open_table(LEGACY_LOG)?.iter()? {
        let (index, value) = item?;
        batch.insert(&tables.log, log_key(index.value()), value.value());
    }
    for item in meta.iter()? {
        let (key, value) = item?;
        if key.value() != FORMAT_KEY {
            batch.insert(&tables.meta, key.value(), value.value());
        }
    }
    for item in txn.open_table(LEGACY_SNAPSHOT)?.iter()? {
        let (key, value) = item?;
        batch.insert(&snapshot, key.value(), value.value());
    }
    batch.insert(&tables.meta, FORMAT_KEY, encode(&FORMAT_SNAPSHOT_INSIDE)?);
    batch.commit()?;
    Ok(())
}

/// The first and last index of an append, or `None` for an empty one.
fn index_span<E, NID>(entries: &[E]) -> Option<(u64, u64)>
where
    E: RaftLogId<NID>,
    NID: openraft::NodeId,
{
    Some((
        entries.first()?.get_log_id().index,
        entries.last()?.get_log_id().index,
    ))
}

/// Names an append for errors, as "appending entries 3..=7"; computed only when needed, since
/// appends are the hot path.
fn describe_append(span: Option<(u64, u64)>) -> String {
    match span {
        Some((first, last)) => format!("appending entries {first}..={last}"),
        None => "appending no entries".to_string(),
    }
}

/// Turns a range over log indexes into `[start, end)`, `end == None` meaning unbounded, or `None`
/// for an empty range; `BTreeMap::range` panics on a range whose start passes its end.
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

fn get_decoded<T>(keyspace: &Keyspace, key: &str) -> Result<Option<T>, DbError>
where
    T: DeserializeOwned,
{
    match keyspace.get(key)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DbError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Everything that can fail inside the store, before it is wrapped into openraft's
/// [`StorageIOError`] with a description of the operation.
#[derive(Debug, thiserror::Error)]
pub(super) enum DbError {
    #[error("fjall: {0:?}")]
    Fjall(#[from] fjall::Error),
    #[error("the log holds {0}; it may be damaged")]
    Corrupt(String),
    #[error("cannot encode a value for the log: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode a value from the log (written by another version?): {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("missing {0}")]
    Missing(&'static str),
    /// The commit that carried this write failed; the error is shared by the batch.
    #[error(transparent)]
    Commit(Arc<DbError>),
    /// An earlier commit failed and the store has written nothing since.
    #[error(
        "the log stopped writing after an earlier write failed ({0}); restart the node to reopen \
         it"
    )]
    Refused(Arc<DbError>),
    /// Only a bug ends the writer while a store is alive: it panicked.
    #[error("the log's writer thread has stopped (it panicked; see the log above)")]
    WriterGone,
}

impl DbError {
    pub(super) fn context(self, what: impl fmt::Display) -> AnyError {
        AnyError::new(&self).add_context(|| what)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::Cursor;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;

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
    use crate::raft::snapshot_store::{SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY};

    openraft::declare_raft_types!(TestConfig: D = String, R = String);

    type Store = LogStore<TestConfig>;

    fn temp_store() -> (TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("log")).expect("open the log store");
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

    /// Copies the file of a store that is still open, as a crash at this moment would leave it:
    /// the copy holds at least everything committed so far, and nothing that is only in memory
    /// or queued and not yet committed.
    ///
    /// Call it only while the writer is idle (after waiting for everything queued), so that no
    /// commit is half written into the copy.
    fn crash_image(store: &Store) -> PathBuf {
        let copy = store.path().with_file_name("crash-image");
        copy_dir(store.path(), &copy);
        copy_dir(&snapshot_dir(store.path()), &snapshot_dir(&copy));
        copy
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create the copy's directory");
        for item in std::fs::read_dir(from).expect("list the log directory") {
            let item = item.expect("a directory entry");
            let target = to.join(item.file_name());
            if item.file_type().expect("a file type").is_dir() {
                copy_dir(&item.path(), &target);
            } else {
                std::fs::copy(item.path(), &target).expect("copy a log file");
            }
        }
    }

    /// Polls `future` once: it runs until it first waits, and its output is returned if it did
    /// not need to.
    async fn poll_once<F>(future: &mut F) -> Option<F::Output>
    where
        F: Future + Unpin,
    {
        std::future::poll_fn(|cx| match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
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

    /// A leader's own appends are reported durable as they are queued; `durable_through`
    /// waits for the disk. Another leader's entries wait for the disk as before.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the writer thread back, no task waits for it"
    )]
    async fn own_appends_are_reported_at_once_and_durable_through_waits_for_the_disk() {
        let (_dir, mut store) = temp_store();
        store.report_own_appends_early(1);
        let pause = Arc::clone(&store.shared.pause);
        let paused = pause.lock();
        // `normal` entries are node 1's.
        let mut own = Box::pin(store.blocking_append([normal(1, 1, "a"), normal(1, 2, "b")]));
        let reported = poll_once(&mut own).await;
        assert!(
            matches!(reported, Some(Ok(_))),
            "reported at once: {reported:?}"
        );
        drop(own);
        let mut durable = Box::pin(store.durable_through(2));
        assert!(poll_once(&mut durable).await.is_none(), "not on disk yet");
        let mut other = store.clone();
        let mut append = Box::pin(async move {
            let entry = Entry {
                log_id: log_id(2, 2, 3),
                payload: EntryPayload::Normal("c".to_string()),
            };
            other.blocking_append([entry]).await
        });
        assert!(
            poll_once(&mut append).await.is_none(),
            "node 2's entry waits"
        );
        drop(paused);
        durable.await.unwrap();
        append.await.unwrap();
        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(recovered.try_get_log_entries(..).await.unwrap().len(), 3);
        store.durable_through(3).await.unwrap();
    }

    /// A writer thread that panics fails whoever waits for the disk, rather than leave them
    /// waiting for good.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the writer thread back, no task waits for it"
    )]
    async fn durable_through_fails_once_the_writer_thread_panicked() {
        let (_dir, mut store) = temp_store();
        store.report_own_appends_early(1);
        let pause = Arc::clone(&store.shared.pause);
        let paused = pause.lock();
        let reported = store.blocking_append([normal(1, 1, "a")]).await;
        assert!(reported.is_ok(), "reported at once: {reported:?}");
        store
            .shared
            .crash
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(paused);
        let waited = tokio::time::timeout(Duration::from_secs(10), store.durable_through(1)).await;
        match waited {
            Ok(Err(e)) => assert!(e.to_string().contains("could not write"), "{e}"),
            other => panic!("durable_through after the writer panicked: {other:?}"),
        }
    }

    /// A node that reports its own appends early never resumes its lead at start.
    #[tokio::test]
    async fn an_own_committed_vote_reads_back_uncommitted_once_appends_report_early() {
        let (_dir, mut store) = temp_store();
        let mut own = Vote::new(3, 1);
        own.commit();
        store.save_vote(&own).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(own));
        store.report_own_appends_early(1);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let mut other = Vote::new(4, 2);
        other.commit();
        store.save_vote(&other).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(other));
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

    /// A committed id saved alone wakes nobody and reaches the disk with the next commit, or
    /// when the store closes.
    #[tokio::test]
    async fn a_saved_committed_id_queues_nothing_and_rides_with_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut store = Store::open(&path).unwrap();
        store.blocking_append(entries(1..=3)).await.unwrap();
        let queued = store.shared.memory.lock().queued;
        store.save_committed(Some(log_id(1, 1, 3))).await.unwrap();
        assert_eq!(store.shared.memory.lock().queued, queued, "nothing queued");
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));

        store.blocking_append(entries(4..=4)).await.unwrap();
        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(
            recovered.read_committed().await.unwrap(),
            Some(log_id(1, 1, 3))
        );
        assert_eq!(recovered.try_get_log_entries(..).await.unwrap().len(), 4);
        drop(recovered);

        store.save_committed(Some(log_id(1, 1, 4))).await.unwrap();
        drop(store);
        let mut reopened = Store::open(&path).unwrap();
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            Some(log_id(1, 1, 4))
        );
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

    /// A snapshot is on disk only after the log writes made before it, even those that alone
    /// would wait for a later commit (a truncate).
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the writer thread back, no task waits for it"
    )]
    async fn a_snapshot_waits_for_the_log_writes_made_before_it() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=6)).await.unwrap();
        let pause = Arc::clone(&store.shared.pause);
        let paused = pause.lock();
        store.truncate(log_id(1, 1, 4)).await.unwrap();
        let snap = snapshot(3, b"state at 3");
        let mut save = Box::pin(store.save_snapshot(&snap));
        for _ in 0..100 {
            assert!(
                poll_once(&mut save).await.is_none(),
                "the snapshot was saved while the truncate before it was not on disk"
            );
            tokio::task::yield_now().await;
        }
        // The snapshot thread serves requests in order: had the save reached it, this load
        // would find the snapshot.
        assert_eq!(store.load_snapshot().await.unwrap(), None);
        drop(paused);
        save.await.unwrap();
        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(recovered.load_snapshot().await.unwrap(), Some(snap));
        assert_eq!(
            indexes(&recovered.try_get_log_entries(..).await.unwrap()),
            [1, 2, 3]
        );
    }

    /// The log's writer does not wait for a snapshot being written: appends commit meanwhile.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the snapshot thread back, no task waits for it"
    )]
    async fn appends_commit_while_a_snapshot_is_written() {
        let (_dir, mut store) = temp_store();
        let pause = Arc::clone(&store.shared.snapshots.pause);
        let paused = pause.lock();
        let snap = snapshot(1, &[7; 1 << 20]);
        let saver = store.clone();
        let save = tokio::spawn(async move { saver.save_snapshot(&snap).await });
        // Until the snapshot thread holds the save, past the barrier.
        let taken = Arc::clone(&store.shared.snapshots.taken);
        tokio::time::timeout(Duration::from_secs(30), async {
            while taken.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the save reaches the snapshot thread");
        let appended = tokio::time::timeout(
            Duration::from_secs(30),
            store.blocking_append(entries(1..=3)),
        )
        .await;
        assert!(
            matches!(appended, Ok(Ok(()))),
            "an append waited for the snapshot: {appended:?}"
        );
        assert!(!save.is_finished(), "the snapshot thread was held");
        drop(paused);
        save.await.unwrap().unwrap();
        assert_eq!(
            store.load_snapshot().await.unwrap(),
            Some(snapshot(1, &[7; 1 << 20]))
        );
    }

    /// A purge past the stored snapshot (a follower's, as it installs one) stays off the disk
    /// until the snapshot that covers it is stored.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the snapshot thread back, no task waits for it"
    )]
    async fn a_purge_waits_for_the_snapshot_that_covers_it() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=6)).await.unwrap();
        let pause = Arc::clone(&store.shared.snapshots.pause);
        let paused = pause.lock();
        store.purge(log_id(1, 1, 4)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            [5, 6],
            "openraft reads the purge at once"
        );
        let saver = store.clone();
        let save =
            tokio::spawn(async move { saver.save_snapshot(&snapshot(4, b"state at 4")).await });
        let taken = Arc::clone(&store.shared.snapshots.taken);
        tokio::time::timeout(Duration::from_secs(30), async {
            while taken.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the save reaches the snapshot thread");
        // The barrier's sync is behind us: whatever the purge wrote would be on disk now.
        let mut crashed = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(crashed.load_snapshot().await.unwrap(), None);
        assert_eq!(
            indexes(&crashed.try_get_log_entries(..).await.unwrap()),
            [1, 2, 3, 4, 5, 6],
            "the purge reached the disk before its snapshot"
        );
        drop(crashed);
        drop(paused);
        save.await.unwrap().unwrap();
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        let copy = store.path().with_file_name("after");
        copy_dir(store.path(), &copy);
        copy_dir(&snapshot_dir(store.path()), &snapshot_dir(&copy));
        let mut recovered = Store::open(&copy).unwrap();
        assert_eq!(
            indexes(&recovered.try_get_log_entries(..).await.unwrap()),
            [5, 6]
        );
        assert_eq!(
            recovered.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(1, 1, 4))
        );
    }

    /// A snapshot older than the stored one (built while a newer one was installed) is not
    /// stored over it.
    #[tokio::test]
    async fn an_older_snapshot_does_not_replace_a_newer_one() {
        let (_dir, store) = temp_store();
        store
            .save_snapshot(&snapshot(9, b"state at 9"))
            .await
            .unwrap();
        store
            .save_snapshot(&snapshot(5, b"state at 5"))
            .await
            .unwrap();
        assert_eq!(
            store.load_snapshot().await.unwrap(),
            Some(snapshot(9, b"state at 9"))
        );
        // Also once the stored snapshot is known only from the disk.
        let path = store.path().to_path_buf();
        drop(store);
        let store = Store::open(&path).unwrap();
        store
            .save_snapshot(&snapshot(7, b"state at 7"))
            .await
            .unwrap();
        assert_eq!(
            store.load_snapshot().await.unwrap(),
            Some(snapshot(9, b"state at 9"))
        );
    }

    /// A log deleted by hand, with its snapshots left beside it, is not started afresh.
    #[tokio::test]
    async fn a_new_log_beside_a_stored_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        {
            let store = Store::open(&path).unwrap();
            store
                .save_snapshot(&snapshot(4, b"state at 4"))
                .await
                .unwrap();
        }
        std::fs::remove_dir_all(&path).unwrap();
        refused_at_every_start(&path, |err| {
            matches!(err, OpenError::SnapshotsWithoutLog { .. })
                && err.to_string().contains("log-snapshots")
        });
    }

    /// Opens the log at `path` twice, expecting both opens to fail as `expected` says: a
    /// refusal must not record anything that lets the next start through.
    fn refused_at_every_start(path: &Path, expected: impl Fn(&OpenError) -> bool) {
        for start in ["first", "second"] {
            let err = Store::open(path).expect_err("the open must be refused");
            assert!(expected(&err), "{start} start: {err:?}: {err}");
        }
    }

    /// A log whose snapshots' directory was deleted by hand, after it dropped the entries the
    /// snapshot covered, is not started from an empty state.
    #[tokio::test]
    async fn a_log_purged_past_its_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        {
            let mut store = Store::open(&path).unwrap();
            store.blocking_append(entries(1..=6)).await.unwrap();
            store
                .save_snapshot(&snapshot(4, b"state at 4"))
                .await
                .unwrap();
            store.purge(log_id(1, 1, 4)).await.unwrap();
        }
        std::fs::remove_dir_all(snapshot_dir(&path)).unwrap();
        refused_at_every_start(&path, |err| {
            matches!(
                err,
                OpenError::PurgedPastSnapshot {
                    purged: 4,
                    covered: None,
                    ..
                }
            ) && err.to_string().contains("up to 4")
        });
    }

    /// A log of layout version 2 kept its snapshot in its own database: opening it moves the
    /// snapshot out, records version 3 and drops the old keyspace.
    #[tokio::test]
    async fn a_snapshot_kept_in_the_log_by_layout_2_is_moved_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let written = entries(1..=5);
        let snap = snapshot(2, b"state at 2");
        {
            let tables = Tables::open(&path).unwrap();
            let inside = tables
                .db
                .keyspace(SNAPSHOT, KeyspaceCreateOptions::default)
                .unwrap();
            let mut batch = tables.db.batch().durability(Some(PersistMode::SyncData));
            for entry in &written {
                batch.insert(
                    &tables.log,
                    log_key(entry.log_id.index),
                    encode(entry).unwrap(),
                );
            }
            batch.insert(
                &tables.meta,
                FORMAT_KEY,
                encode(&FORMAT_SNAPSHOT_INSIDE).unwrap(),
            );
            batch.insert(&inside, SNAPSHOT_META_KEY, encode(&snap.meta).unwrap());
            batch.insert(&inside, SNAPSHOT_DATA_KEY, snap.data.clone());
            batch.commit().unwrap();
        }
        for _ in 0..2 {
            let mut store = Store::open(&path).unwrap();
            assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
            assert_eq!(store.load_snapshot().await.unwrap(), Some(snap.clone()));
        }
        let tables = Tables::open(&path).unwrap();
        assert_eq!(tables.format().unwrap(), Some(FORMAT_VERSION));
        assert!(!tables.db.keyspace_exists(SNAPSHOT));
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
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

    /// Appends made one after another, none waiting for the disk before the next is made, are
    /// readable at once and each on disk once its callback has fired.
    #[tokio::test]
    async fn queued_appends_are_durable_once_their_callbacks_fire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut store = Store::open(&path).unwrap();
        let written = entries(1..=200);

        // Each append waits for its callback in its own future. Polling each once makes the
        // append call and leaves the wait for later, so all 200 are queued, in index order,
        // before any is waited for. `unconstrained`, because polling 200 futures in one go
        // would otherwise run out of tokio's cooperative budget and leave some unqueued.
        let appends = written.iter().cloned().map(|entry| {
            let mut store = store.clone();
            Box::pin(async move { store.blocking_append([entry]).await })
        });
        let mut waiting = Vec::new();
        tokio::task::unconstrained(async {
            for mut append in appends {
                match poll_once(&mut append).await {
                    Some(appended) => appended.unwrap(),
                    None => waiting.push(append),
                }
            }
        })
        .await;
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1, 200))
        );
        for append in waiting {
            append.await.unwrap();
        }

        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(recovered.try_get_log_entries(..).await.unwrap(), written);
        drop(recovered);

        drop(store);
        let mut reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.try_get_log_entries(..).await.unwrap(), written);
    }

    /// A truncate queued right behind the append it cuts short reaches the file after it: once
    /// the entry appended after the truncate is on disk, the cut entries are gone from disk too.
    #[tokio::test]
    async fn a_truncate_queued_behind_an_append_keeps_the_file_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut store = Store::open(&path).unwrap();

        let mut append = Box::pin({
            let mut store = store.clone();
            async move { store.blocking_append(entries(1..=10)).await }
        });
        let appended_early = poll_once(&mut append).await;
        store.truncate(log_id(1, 1, 6)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            [1, 2, 3, 4, 5]
        );
        match appended_early {
            Some(appended) => appended.unwrap(),
            None => append.await.unwrap(),
        }

        // A new leader's entry replaces the cut suffix.
        store.blocking_append([normal(2, 6, "new")]).await.unwrap();
        let expected = [entries(1..=5), vec![normal(2, 6, "new")]].concat();
        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(recovered.try_get_log_entries(..).await.unwrap(), expected);
        assert_eq!(
            recovered.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: None,
                last_log_id: Some(log_id(2, 1, 6)),
            }
        );
        drop(recovered);

        // A truncate that nothing waits for is on disk once the last clone is dropped.
        store.truncate(log_id(1, 1, 4)).await.unwrap();
        drop(store);
        let mut reopened = Store::open(&path).unwrap();
        assert_eq!(
            reopened.try_get_log_entries(..).await.unwrap(),
            entries(1..=3)
        );
        assert_eq!(
            reopened.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1, 3))
        );
    }

    /// `save_vote` returns only once the vote, and every write queued before it, is on disk.
    #[tokio::test]
    async fn a_saved_vote_is_on_disk_when_save_vote_returns() {
        let (_dir, mut store) = temp_store();
        store.blocking_append(entries(1..=3)).await.unwrap();
        // Queued, not waited for: the vote's commit must carry it along.
        store.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
        let mut vote = Vote::new(2, 1);
        vote.commit();
        store.save_vote(&vote).await.unwrap();

        let mut recovered = Store::open(&crash_image(&store)).unwrap();
        assert_eq!(recovered.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            recovered.read_committed().await.unwrap(),
            Some(log_id(1, 1, 2))
        );
        assert_eq!(
            recovered.try_get_log_entries(..).await.unwrap(),
            entries(1..=3)
        );
    }

    #[test]
    fn open_creates_missing_parent_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1").join("raft").join("log");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert!(path.is_dir());
    }

    #[test]
    fn second_open_of_the_same_log_is_refused_with_advice() {
        let (dir, _store) = temp_store();
        let path = dir.path().join("log");
        let err = Store::open(&path).expect_err("the log is already open");
        assert!(matches!(err, OpenError::AlreadyOpen { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("another node"), "{message}");
    }

    #[test]
    fn a_file_where_the_log_directory_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"definitely not a registry log").unwrap();
        let err = Store::open(&path).expect_err("a file is not a log");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_log_of_another_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        drop(Store::open(&path).unwrap());
        {
            let tables = Tables::open(&path).unwrap();
            let newer = rmp_serde::to_vec_named(&(FORMAT_VERSION + 1)).unwrap();
            tables.meta.insert(FORMAT_KEY, newer).unwrap();
            tables.db.persist(PersistMode::SyncAll).unwrap();
        }
        let err = Store::open(&path).expect_err("a newer layout must not be misread");
        assert!(
            matches!(err, OpenError::UnsupportedFormat { found, .. } if found == FORMAT_VERSION + 1),
            "{err:?}"
        );
    }

    /// Writes to one key within one batch: the last one wins, whatever their kinds.
    #[tokio::test]
    async fn a_batch_that_appends_truncates_and_appends_again_keeps_the_last_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let store = Store::open_inline(&path).unwrap();
        // A snapshot covers what the batch purges, as openraft's would.
        store
            .save_snapshot(&snapshot(1, b"state at 1"))
            .await
            .unwrap();
        {
            let writer = match &store.shared.ops {
                Sink::Inline(writer) => writer.lock(),
                Sink::Queue(_) => unreachable!("opened inline"),
            };
            let (first, replacement) = (entries(1..=6), vec![normal(2, 4, "new")]);
            let (since, upto) = (log_id(1, 1, 4), log_id(1, 1, 1));
            let writes: [Write<'_, TestConfig>; 4] = [
                Write::Append(&first),
                Write::Truncate(&since),
                Write::Append(&replacement),
                Write::Purge(&upto),
            ];
            commit_writes(&writer.tables, writes, true).unwrap();
        }
        drop(store);
        let mut reopened = Store::open(&path).unwrap();
        let expected = [entries(2..=3), vec![normal(2, 4, "new")]].concat();
        assert_eq!(reopened.try_get_log_entries(..).await.unwrap(), expected);
        assert_eq!(
            reopened.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(1, 1, 1))
        );
    }

    /// More than the journal limit (64 MiB): fjall rotates its journal and flushes memtables to
    /// sorted files in the background, and a reopen still finds every entry not purged.
    #[tokio::test]
    async fn a_log_larger_than_the_journal_limit_survives_purges_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let big = "x".repeat(100 * 1024);
        let written: Vec<_> = (1..=800).map(|i| normal(1, i, &big)).collect();
        {
            let mut store = Store::open(&path).unwrap();
            for chunk in written.chunks(50) {
                store.blocking_append(chunk.to_vec()).await.unwrap();
            }
            // openraft purges only what a snapshot covers, and the store holds a purge back
            // from the disk until one does.
            store
                .save_snapshot(&snapshot(400, b"state at 400"))
                .await
                .unwrap();
            store.purge(log_id(1, 1, 400)).await.unwrap();
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            (401..=800).collect::<Vec<_>>()
        );
        assert_eq!(
            store.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(1, 1, 400))
        );
    }

    /// A log kept in redb by an earlier version is imported once, then its file renamed.
    #[tokio::test]
    async fn a_redb_log_of_an_earlier_version_is_imported() {
        use redb::TableDefinition;
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("registry.redb");
        let path = dir.path().join("log");
        let written = entries(1..=5);
        let snap = snapshot(2, b"state at 2");
        {
            let db = redb::Database::create(&legacy).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let log: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(LOG);
                let meta: TableDefinition<'_, &str, &[u8]> = TableDefinition::new(META);
                let snapshots: TableDefinition<'_, &str, &[u8]> = TableDefinition::new(SNAPSHOT);
                let mut log = txn.open_table(log).unwrap();
                for entry in &written {
                    log.insert(entry.log_id.index, encode(entry).unwrap().as_slice())
                        .unwrap();
                }
                let mut meta = txn.open_table(meta).unwrap();
                meta.insert(FORMAT_KEY, encode(&1u32).unwrap().as_slice())
                    .unwrap();
                meta.insert(
                    VOTE_KEY,
                    encode(&Vote::<u64>::new(3, 1)).unwrap().as_slice(),
                )
                .unwrap();
                let mut snapshots = txn.open_table(snapshots).unwrap();
                snapshots
                    .insert(SNAPSHOT_META_KEY, encode(&snap.meta).unwrap().as_slice())
                    .unwrap();
                snapshots
                    .insert(SNAPSHOT_DATA_KEY, snap.data.as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }

        assert!(import_redb(&legacy, &path).unwrap());
        assert!(!legacy.exists());
        assert!(dir.path().join("registry.redb.imported").exists());
        // Nothing left to import the second time.
        assert!(!import_redb(&legacy, &path).unwrap());

        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(store.load_snapshot().await.unwrap(), Some(snap));
    }

    #[test]
    fn a_redb_file_of_an_unknown_layout_is_not_imported_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("registry.redb");
        std::fs::write(&legacy, b"not a redb file at all, but long enough").unwrap();
        let err = import_redb(&legacy, &dir.path().join("log")).expect_err("garbage");
        assert!(matches!(err, OpenError::Import { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&legacy.display().to_string()),
            "{err}"
        );
        assert!(legacy.exists());
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
