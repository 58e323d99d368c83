//! The Raft type configuration: what the log carries and who votes.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

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

    #[test]
    fn raft_ids_are_stable_and_differ_by_name() {
        // Fixed values: changing the function would orphan every voter's data dir.
        assert_eq!(raft_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raft_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(raft_id("n1"), raft_id("n2"));
    }
}
