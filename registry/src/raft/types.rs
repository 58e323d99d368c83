//! The Raft type configuration: what the log carries and who votes.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::server::early::EarlyCopy;
use crate::state::{Command, Outcome};

openraft::declare_raft_types!(
    /// The registry's Raft types: entries carry a batch of commands (group commit), a voter
    /// is known by its node name, and timers run on tokio with seedable random numbers.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = Voter,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::runtime::RaftRuntime,
);

/// One log entry's commands: every command proposed while the previous entry was being
/// written (group commit).
///
/// On the leader that proposed it, it also carries what to do with the outcomes as the entry
/// is applied (`OnApply`) and which copies of other nodes learn of it before it commits
/// (`Early`); those parts are neither stored nor sent, so the entry's encoding is that of its
/// commands alone.
#[derive(Clone, Default)]
pub struct Batch(pub Vec<Command>, pub(crate) OnApply, pub(crate) Early);

impl Batch {
    /// A batch of `commands`, with nothing to do on apply.
    pub fn new(commands: Vec<Command>) -> Self {
        Batch(commands, OnApply::default(), Early::default())
    }
}

/// The copies on other nodes that learn of a batch before it commits, on the leader that
/// proposed it: the nodes whose proposals it holds (`client::early`).
#[derive(Clone, Default)]
pub(crate) struct Early(pub(crate) Option<Arc<[EarlyCopy]>>);

/// Called with a batch's log index and outcomes when the leader that proposed it applies it,
/// before the state machine's feed sees it: the server answers the proposals there
/// (`server::answers`).
#[derive(Clone, Default)]
pub(crate) struct OnApply(pub(crate) Option<ApplyHook>);

/// See [`OnApply`].
pub(crate) type ApplyHook = Arc<dyn Fn(u64, &[Outcome]) + Send + Sync>;

/// The encoding of a batch: its commands, as a newtype (the encoding entries always had).
#[derive(Serialize, Deserialize)]
#[serde(rename = "Batch")]
struct Stored<C>(C);

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Stored(&self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Stored::<Vec<Command>>::deserialize(deserializer).map(|stored| Batch::new(stored.0))
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Batch").field(&self.0).finish()
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} commands", self.0.len())
    }
}

/// A voter, as the Raft membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voter {
    /// The node's name (a voter keeps its Raft identity across incarnations).
    pub name: String,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A node name's Raft id: stable across restarts, so a voter that comes back with its data
/// dir is the same voter. FNV-1a, which is fixed forever (std's hasher is not).
pub fn raft_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries written before a batch could carry anything but its commands still read, and
    /// what a leader keeps beside the commands never reaches the disk or the wire.
    #[test]
    fn a_batch_is_encoded_as_its_commands_alone() {
        #[derive(Serialize)]
        struct Batch(Vec<Command>);
        let commands = vec![Command::Delete { key: "k".into() }];
        let earlier = rmp_serde::to_vec_named(&Batch(commands.clone())).unwrap();
        let answered = super::Batch(
            commands.clone(),
            OnApply(Some(Arc::new(|_: u64, _: &[Outcome]| {}))),
            Early::default(),
        );
        assert_eq!(rmp_serde::to_vec_named(&answered).unwrap(), earlier);
        let read: super::Batch = rmp_serde::from_slice(&earlier).unwrap();
        assert_eq!(read.0, commands);
        assert!(read.1.0.is_none());
    }

    #[test]
    fn raft_ids_are_stable_and_differ_by_name() {
        // Fixed values: changing the function would orphan every voter's data dir.
        assert_eq!(raft_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raft_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(raft_id("n1"), raft_id("n2"));
    }
}
