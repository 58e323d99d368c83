//! The voter's state machine: the registry state, applied from committed entries, with its
//! snapshots kept through the log store, in a database beside the log's
//! (`crate::raft::snapshot_store`).
//!
//! The state itself lives in memory; on restart it comes back from the last snapshot plus the
//! committed entries after it, which openraft re-applies. Every applied batch also goes out on
//! a feed, from which each node's local copy (`crate::mirror`) is kept up to date.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::log_store::{LogStore, StoredSnapshot};
use super::types::{Batch, TypeConfig, Voter};
use crate::state::{Command, Outcome, RegistryState};

/// How many applied batches a slow subscriber may fall behind before it is sent the whole
/// state again.
const FEED_CAPACITY: usize = 4096;

/// What the feed carries.
#[derive(Clone, Debug)]
pub(crate) enum Fed {
    /// A committed batch, applied as this log entry.
    Batch {
        entry: LogId<u64>,
        commands: Arc<Vec<Command>>,
    },
    /// The state was replaced by a snapshot from the leader: subscribers need it whole.
    Reset,
}

/// The state as of a log index, shared between the state machine and its readers.
pub(crate) struct Applied {
    pub(crate) state: RegistryState,
    pub(crate) last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Voter>,
}

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: RegistryState,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Voter>,
}

/// The state machine, shared with the server (reads, subscriptions).
#[derive(Clone)]
pub struct StateMachine {
    applied: Arc<Mutex<Applied>>,
    feed: broadcast::Sender<Fed>,
    store: LogStore<TypeConfig>,
}

impl StateMachine {
    /// The log this state machine keeps its snapshots in.
    pub(crate) fn log(&self) -> &LogStore<TypeConfig> {
        &self.store
    }

    /// The state machine for `store`, starting from its last snapshot.
    pub async fn open(store: LogStore<TypeConfig>) -> Result<StateMachine, StorageError<u64>> {
        let applied = match store.load_snapshot().await? {
            Some(snapshot) => {
                let data: SnapshotData = decode(&snapshot.data)?;
                Applied {
                    state: data.state,
                    last_applied: data.last_applied,
                    membership: data.membership,
                }
            }
            None => Applied {
                state: RegistryState::default(),
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        Ok(StateMachine {
            applied: Arc::new(Mutex::new(applied)),
            feed: broadcast::channel(FEED_CAPACITY).0,
            store,
        })
    }

    /// Reads the state as of now.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&RegistryState) -> T) -> T {
        read(&self.applied.lock().state)
    }

    /// The whole state and its log index, and the feed of what is applied after it: taken
    /// together, so nothing is missed or seen twice.
    pub(crate) fn subscribe(&self) -> (RegistryState, u64, broadcast::Receiver<Fed>) {
        let applied = self.applied.lock();
        (
            applied.state.clone(),
            applied.last_applied.map_or(0, |id| id.index),
            self.feed.subscribe(),
        )
    }

    /// For a batch at `index` that the copies of other nodes get before it commits
    /// (`client::early`): the index of the last entry before it that carries commands, and the
    /// Raft ids of the voters a majority of which must hold it. `None` while a membership
    /// change is in the log and not applied, or a joint membership is: then the copies wait for
    /// the batch as it commits.
    pub(crate) fn early_context(&self, index: u64) -> Option<(u64, Vec<u64>)> {
        let (since, voters) = {
            let applied = self.applied.lock();
            let membership = applied.membership.membership();
            if membership.get_joint_config().len() != 1 {
                return None;
            }
            let voters: Vec<u64> = membership.voter_ids().collect();
            let since = applied.last_applied.map_or(0, |id| id.index);
            if since >= index {
                // Applied already: the copies get it as it commits, as soon.
                return None;
            }
            (since, voters)
        };
        // Changes up to `since` are in the membership read above; one after it, up to `index`,
        // would rule the batch instead.
        let (after, changes_membership) = self.store.entry_context(index, since);
        (!changes_membership).then_some((after, voters))
    }

    /// The applied Raft configuration (the joint one, halfway through a change).
    pub(crate) fn membership(&self) -> openraft::Membership<u64, Voter> {
        self.applied.lock().membership.membership().clone()
    }

    /// The voters of the last membership applied, by node name, sorted, and the log entry of
    /// that membership. A membership change still in the log (not yet committed) is not in
    /// it.
    pub(crate) fn voters(&self) -> (Vec<String>, Option<LogId<u64>>) {
        let applied = self.applied.lock();
        let membership = applied.membership.membership();
        let mut voters: Vec<String> = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|voter| voter.name.clone()))
            .collect();
        voters.sort();
        (voters, *applied.membership.log_id())
    }

    /// Encodes `value`, a whole state (milliseconds of work for a large one), on a thread
    /// meant for blocking work, so that the node's other tasks (heartbeats, the transport, the
    /// applies that go on meanwhile) are not held up. Inline on an inline log: simulations on
    /// paused time, whose order a thread would make depend on the host's timing.
    pub(crate) async fn encode_off_runtime<T>(&self, value: T) -> Result<Vec<u8>, String>
    where
        T: Serialize + Send + 'static,
    {
        let encode = move || rmp_serde::to_vec(&value).map_err(|err| err.to_string());
        if self.store.is_inline() {
            return encode();
        }
        tokio::task::spawn_blocking(encode)
            .await
            .map_err(|err| format!("the encoding task failed: {err}"))?
    }

    fn snapshot_data(&self) -> SnapshotData {
        let applied = self.applied.lock();
        SnapshotData {
            state: applied.state.clone(),
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
        }
    }
}

// openraft's trait methods return its (large) `StorageError`; this helper follows them.
#[allow(clippy::result_large_err)]
fn decode(bytes: &[u8]) -> Result<SnapshotData, StorageError<u64>> {
    rmp_serde::from_slice(bytes).map_err(|e| StorageIOError::read_snapshot(None, &e).into())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        // The copy costs nothing (the state's maps share their nodes until either side
        // changes one), so the state machine goes on applying while it is encoded.
        let snapshot = self.snapshot_data();
        let (last_log_id, last_membership) = (snapshot.last_applied, snapshot.membership.clone());
        let data = self.encode_off_runtime(snapshot).await.map_err(|err| {
            StorageError::from(StorageIOError::write_snapshot(
                None,
                &std::io::Error::other(err),
            ))
        })?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id: format!(
                "{}-{}",
                last_log_id.map_or(0, |id| id.index),
                fastrand::u64(..)
            ),
        };
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

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Voter>), StorageError<u64>> {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // A leader counts its own entries before they are on its disk; with a quorum of one it
        // may commit them that early. Nothing reaches a client before it is durable.
        if let Some(last) = entries.last() {
            self.store.durable_through(last.log_id.index).await?;
        }
        let mut responses = Vec::new();
        let mut applied = self.applied.lock();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Vec::new()),
                EntryPayload::Normal(Batch(commands, on_apply, _)) => {
                    let (outcomes, _) = applied.state.apply(&commands);
                    // Before the feed: the answers it carries must be queued when it sends
                    // this batch (`server::answers`).
                    if let Some(on_apply) = on_apply.0 {
                        on_apply(entry.log_id.index, &outcomes);
                    }
                    responses.push(outcomes);
                    // Sent under the lock, so that `subscribe` sees each batch exactly once.
                    let _ = self.feed.send(Fed::Batch {
                        entry: entry.log_id,
                        commands: Arc::new(commands),
                    });
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Vec::new());
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Voter>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let data = decode(&bytes)?;
        self.store
            .save_snapshot(&StoredSnapshot {
                meta: meta.clone(),
                data: bytes,
            })
            .await?;
        let mut applied = self.applied.lock();
        applied.state = data.state;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let _ = self.feed.send(Fed::Reset);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self.store.load_snapshot().await?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes the thread it is encoded on.
    struct ThreadProbe(Arc<Mutex<Option<std::thread::ThreadId>>>);

    impl Serialize for ThreadProbe {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            *self.0.lock() = Some(std::thread::current().id());
            serializer.serialize_unit()
        }
    }

    async fn encoded_on(store: LogStore<TypeConfig>) -> std::thread::ThreadId {
        let state_machine = StateMachine::open(store).await.expect("open");
        let seen = Arc::default();
        state_machine
            .encode_off_runtime(ThreadProbe(Arc::clone(&seen)))
            .await
            .expect("encode");
        let thread = *seen.lock();
        thread.expect("encoded")
    }

    #[tokio::test]
    async fn a_whole_state_is_encoded_off_the_runtime_thread_unless_the_log_is_inline() {
        let dir = tempfile::tempdir().expect("dir");
        let here = std::thread::current().id();
        let store = LogStore::open(&dir.path().join("threaded")).expect("store");
        assert_ne!(encoded_on(store).await, here);
        let store = LogStore::open_inline(&dir.path().join("inline")).expect("store");
        assert_eq!(encoded_on(store).await, here);
    }

    fn put(key: &str) -> Command {
        Command::Put {
            key: key.to_owned(),
            value: key.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn a_snapshot_holds_the_state_as_of_its_copy_while_applies_go_on() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LogStore::open(dir.path()).expect("store");
        let state_machine = StateMachine::open(store).await.expect("open");
        let before: Vec<Command> = (0..1000).map(|i| put(&format!("k/{i}"))).collect();
        state_machine.applied.lock().state.apply(&before);
        let copy = state_machine.snapshot_data();
        // Applied after the copy was taken, as if while the copy is encoded.
        state_machine
            .applied
            .lock()
            .state
            .apply(&[put("k/late"), Command::Delete { key: "k/0".into() }]);

        let encoded = state_machine
            .encode_off_runtime(copy)
            .await
            .expect("encode");
        let snapshot = decode(&encoded).expect("decode");
        assert!(snapshot.state.get("k/late").is_none());
        assert!(snapshot.state.get("k/0").is_some());
        assert_eq!(snapshot.state.prefix("k/").count(), 1000);
        let live =
            state_machine.read(|state| (state.get("k/0").is_none(), state.get("k/late").is_some()));
        assert_eq!(live, (true, true));
    }
}
