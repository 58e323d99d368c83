//! What the master, the workers and clients say to each other, and the table clients route by.
//!
//! Every message here can cross nodes (serde), and every node must agree on
//! [`partition_of`]: it is part of the protocol, not a detail of the client.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ActorId, ActorRef, ReplyTo};

/// A partition's number, from 0 to the master's partition count (excluded).
pub type PartitionId = u32;

/// A partition's assignment generation. The master raises it each time it changes who holds
/// the partition (or in which role); workers refuse orders of an older epoch.
pub type Epoch = u64;

/// What a primary answers a write with: the partition's version after the write.
pub type WriteResult = Result<u64, KvError>;

/// What a primary answers a read with: the value, if the key is set.
pub type ReadResult = Result<Option<Vec<u8>>, KvError>;

/// The partition of `key` among `partitions`: FNV-1a (64 bits) of the key's bytes, modulo the
/// count. Stable across builds, platforms and processes (unlike `std`'s hasher), since clients
/// on every node must route a key alike.
pub fn partition_of(key: &str, partitions: u32) -> PartitionId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    (hash % u64::from(partitions.max(1))) as PartitionId
}

/// How a worker holds a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Serves reads and writes, and replicates every write to the backup.
    Primary,
    /// Applies the primary's writes in order; promoted if the primary dies.
    Backup,
    /// Holds a copy but serves nothing: a primary that learned it was superseded. Kept until
    /// the master drops it, so that it can still be found if it holds the most recent data.
    Spare,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Spare => "spare",
        })
    }
}

/// The master's order to a worker: hold `partition` in `role` from `epoch` on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The partition.
    pub partition: PartitionId,
    /// The assignment's epoch; an order older than what the worker holds is ignored.
    pub epoch: Epoch,
    /// The role.
    pub role: Role,
    /// For a primary: the backup to replicate to (`None`: no other worker is available, writes
    /// are acknowledged once applied locally).
    pub backup: Option<ActorRef<WorkerMsg>>,
    /// The master's partition count, which routed the keys the partition holds. 0 from
    /// masters of earlier builds.
    #[serde(default)]
    pub partitions: u32,
    /// The fencing token of the master that gave the order (see [`WorkerMsg::Assign`]).
    #[serde(default)]
    pub master_token: u64,
    /// The lock of the master's lease ("" without one, or from masters of earlier builds).
    #[serde(default)]
    pub master_lease: String,
}

/// A backup's answer to a replicated write or a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaOutcome {
    /// The backup holds every write up to this version (acknowledgements are cumulative).
    Applied {
        /// The backup's version.
        version: u64,
    },
    /// The backup missed a write (or did not get the snapshot this epoch starts with): the
    /// primary sends a snapshot.
    NeedSnapshot {
        /// The backup's version.
        have: u64,
    },
    /// The backup holds the partition at a newer epoch: the sender is no longer the primary.
    Stale {
        /// The backup's epoch.
        epoch: Epoch,
    },
}

/// A worker's protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// From the master: hold a partition in a role.
    ///
    /// Every order of the master (this one, [`Drop`](WorkerMsg::Drop) and
    /// [`ReportTo`](WorkerMsg::ReportTo)) carries its fencing token: its singleton lease's,
    /// 0 for a master that holds no lease or one of an earlier build. A worker ignores the
    /// orders of a master with a lower token than one it followed, or than the holder of the
    /// master's lease in its node's copy of the registry has, so an order still on its way
    /// from a master that was replaced (held by a connection that was cut) cannot undo its
    /// successor's. Token 0 is not fenced: such orders are followed, as before tokens.
    Assign(Assignment),
    /// From the master: forget a copy the master no longer needs (the partition's primary and
    /// backup are in sync at `epoch`). Ignored if the worker holds it at `epoch` or later, in
    /// a role other than spare.
    Drop {
        /// The partition.
        partition: PartitionId,
        /// The master's current epoch of the partition.
        epoch: Epoch,
        /// The master's fencing token.
        #[serde(default)]
        master_token: u64,
        /// The lock of the master's lease ("" without one).
        #[serde(default)]
        master_lease: String,
    },
    /// From the master: send a [`MasterMsg::Reported`] tagged with `round` to `master`.
    ReportTo {
        /// The master's report round.
        round: u64,
        /// Where to send the report.
        master: ActorRef<MasterMsg>,
        /// The master's fencing token.
        #[serde(default)]
        master_token: u64,
        /// The lock of the master's lease ("" without one).
        #[serde(default)]
        master_lease: String,
    },
    /// From anyone (demos, tests): what the worker holds.
    Report(ReplyTo<WorkerReport>),
    /// From a client: set (`Some`) or remove (`None`) a key. Answered once the backup has
    /// applied the write (or at once if the partition has no backup).
    Write {
        /// The key's partition.
        partition: PartitionId,
        /// The epoch of the client's table: the worker must be the primary at exactly it.
        epoch: Epoch,
        /// The key.
        key: String,
        /// The new value, or `None` to remove the key.
        value: Option<Vec<u8>>,
        /// Where the answer goes.
        reply: ReplyTo<WriteResult>,
    },
    /// From a client: read a key from the primary.
    Read {
        /// The key's partition.
        partition: PartitionId,
        /// The epoch of the client's table.
        epoch: Epoch,
        /// The key.
        key: String,
        /// Where the answer goes.
        reply: ReplyTo<ReadResult>,
    },
    /// From a primary to its backup: one write, in the order the primary applied them.
    Replicate {
        /// The partition.
        partition: PartitionId,
        /// The primary's epoch.
        epoch: Epoch,
        /// The partition's version once this write is applied.
        version: u64,
        /// The key.
        key: String,
        /// The new value, or `None` if the key was removed.
        value: Option<Vec<u8>>,
        /// The primary, for the acknowledgement.
        primary: ActorRef<WorkerMsg>,
    },
    /// From a primary to its backup: the whole partition, replacing the backup's copy. Sent
    /// at the start of every epoch and whenever the backup reports a gap.
    Snapshot {
        /// The partition.
        partition: PartitionId,
        /// The primary's epoch.
        epoch: Epoch,
        /// The partition's version.
        version: u64,
        /// Every key and value.
        data: BTreeMap<String, Vec<u8>>,
        /// The primary, for the acknowledgement.
        primary: ActorRef<WorkerMsg>,
    },
    /// From a backup to its primary: what became of a replicated write or a snapshot.
    ReplicaAck {
        /// The partition.
        partition: PartitionId,
        /// The epoch the backup holds the partition at.
        epoch: Epoch,
        /// The backup.
        backup: ActorId,
        /// What happened.
        outcome: ReplicaOutcome,
    },
}

/// What a worker holds, for a master rebuilding or checking its table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker.
    pub worker: ActorId,
    /// Every partition it holds.
    pub partitions: Vec<PartitionReport>,
    /// The highest fencing token of a master whose orders it followed, or that it saw hold the
    /// lease of a master whose order it refused (0: none, or only
    /// masters without a lease).
    #[serde(default)]
    pub master_token: u64,
}

/// One partition a worker holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// The partition.
    pub partition: PartitionId,
    /// The role the worker holds it in.
    pub role: Role,
    /// The epoch of that role.
    pub epoch: Epoch,
    /// The number of writes applied to the partition since it was created (carried over by
    /// promotions and snapshots): of two copies of one line, the higher version holds more.
    pub version: u64,
    /// The number of keys.
    pub keys: u64,
    /// The epoch of the line of writes the copy holds: for a primary its epoch; for a spare
    /// the epoch it was primary in; for a backup the epoch of the last snapshot it took (a
    /// backup waiting for the snapshot of its epoch, a primary just made backup among them,
    /// holds an earlier line). 0: none yet, or a worker of an earlier build (whose primaries
    /// and spares the master counts at their epoch).
    #[serde(default)]
    pub line: Epoch,
    /// The partition count of the master that assigned the partition, which routed its
    /// keys; 0 when not known (a backup that took the partition from its primary's writes
    /// before its assignment came, or a worker of an earlier build).
    #[serde(default)]
    pub partitions: u32,
}

/// Why a worker refused a client's request. Both are temporary: refresh the table and retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// The worker is not the partition's primary at the epoch the client's table names.
    NotPrimary {
        /// The worker asked.
        worker: ActorId,
        /// The partition.
        partition: PartitionId,
        /// The epoch the client asked for.
        epoch: Epoch,
        /// How the worker holds the partition, if at all.
        held: Option<(Role, Epoch)>,
    },
    /// Too many writes of the partition are waiting for the backup's acknowledgement.
    Overloaded {
        /// The worker asked.
        worker: ActorId,
        /// The partition.
        partition: PartitionId,
        /// The writes waiting.
        pending: usize,
    },
    /// The worker's node lost its registry session (it is fenced): the master may have given
    /// its partitions to others already, so it serves nothing until the session is back.
    Fenced {
        /// The worker asked.
        worker: ActorId,
    },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::NotPrimary {
                worker,
                partition,
                epoch,
                held,
            } => {
                write!(
                    f,
                    "worker {worker} is not the primary of partition {partition} at epoch {epoch} ("
                )?;
                match held {
                    Some((role, held)) => write!(f, "it holds it as {role} at epoch {held}")?,
                    None => f.write_str("it does not hold it")?,
                }
                f.write_str("); refresh the table from the master and retry")
            }
            KvError::Overloaded {
                worker,
                partition,
                pending,
            } => write!(
                f,
                "worker {worker} has {pending} writes of partition {partition} waiting for its backup; retry later"
            ),
            KvError::Fenced { worker } => write!(
                f,
                "worker {worker} is on a node that lost its registry session (fenced): its copies may be stale; refresh the table from the master and retry"
            ),
        }
    }
}

impl std::error::Error for KvError {}

/// The master's protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum MasterMsg {
    /// From a client: the whole partition table.
    Table(ReplyTo<Table>),
    /// From a client: the partition of a key and who holds it.
    Route {
        /// The key.
        key: String,
        /// Where the answer goes.
        reply: ReplyTo<Route>,
    },
    /// From anyone: a summary for demos and operators.
    Status(ReplyTo<Status>),
    /// From a worker: its answer to [`WorkerMsg::ReportTo`].
    Reported {
        /// The round it answers.
        round: u64,
        /// What the worker holds.
        report: WorkerReport,
    },
    /// The master's own timer: look at the workers group, and now and then check every worker.
    Tick,
    /// The master's own timer: stop waiting for the reports of a round.
    RoundTimeout {
        /// The round.
        round: u64,
    },
}

/// Who holds one partition, as the master's table says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The worker serving reads and writes; `None` while the master is still finding one.
    pub primary: Option<ActorRef<WorkerMsg>>,
    /// The worker every write is replicated to, if any.
    pub backup: Option<ActorRef<WorkerMsg>>,
    /// The epoch of this assignment; requests carry it.
    pub epoch: Epoch,
}

/// The master's partition table, as clients route by it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    /// The master that made it.
    pub master: ActorId,
    /// Bumped at every change; a new master starts again from 1.
    pub revision: u64,
    /// True until a freshly started master has heard from the workers (its entries may be
    /// empty until then).
    pub recovering: bool,
    /// One entry per partition.
    pub entries: Vec<TableEntry>,
}

impl Table {
    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.entries.len() as u32
    }

    /// The partition of `key` and its entry.
    pub fn route(&self, key: &str) -> (PartitionId, &TableEntry) {
        let partition = partition_of(key, self.partitions());
        (partition, &self.entries[partition as usize])
    }
}

/// The partition of a key and who holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Route {
    /// The partition.
    pub partition: PartitionId,
    /// Its entry (empty if the master has no table yet).
    pub entry: TableEntry,
}

/// A summary of the service, for demos and operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The master.
    pub master: ActorId,
    /// The master's fencing token, which its orders carry (its singleton lease's; 0 for a
    /// master that holds no lease).
    #[serde(default)]
    pub master_token: u64,
    /// The lock of that lease, which its orders name ("" without one).
    #[serde(default)]
    pub master_lease: String,
    /// The number of partitions.
    pub partitions: u32,
    /// Partitions with a primary.
    pub assigned: u32,
    /// Partitions with a primary and a backup.
    pub replicated: u32,
    /// The highest epoch of any partition.
    pub epoch: Epoch,
    /// The table's revision.
    pub revision: u64,
    /// True until a freshly started master has heard from the workers.
    pub recovering: bool,
    /// True if the master's last round changed nothing and the workers' reports confirmed
    /// every partition: assigned, balanced, its backup at its primary's version (so never
    /// while writes are in flight), and no copy left to drop.
    pub settled: bool,
    /// Every worker the master knows, with its share.
    pub workers: Vec<WorkerStatus>,
}

/// One worker's share, in a [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker.
    pub worker: ActorId,
    /// Partitions it is the primary of.
    pub primaries: u32,
    /// Partitions it is the backup of.
    pub backups: u32,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "master {} (fencing token {}): {} workers, {}/{} partitions assigned, {} replicated, epoch {}, revision {}",
            self.master,
            self.master_token,
            self.workers.len(),
            self.assigned,
            self.partitions,
            self.replicated,
            self.epoch,
            self.revision
        )?;
        if self.recovering {
            f.write_str(" (recovering)")?;
        } else if self.settled {
            f.write_str(" (settled)")?;
        }
        for w in &self.workers {
            write!(
                f,
                "\n  worker {}: {} primaries, {} backups",
                w.worker, w.primaries, w.backups
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_is_stable_and_in_range() {
        // Fixed values: a change here would route keys differently between two builds.
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        assert_eq!(partition_of("a", 1), 0);
        assert_eq!(partition_of("a", 0), 0);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            let p = partition_of(&format!("key-{i}"), 16);
            assert!(p < 16);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "keys spread: {seen:?}");
    }
}
