//! The worker: holds partitions as primary or backup, serves clients, replicates.
//!
//! # Writes
//!
//! A primary applies a write, sends it to its backup ([`WorkerMsg::Replicate`]) and keeps the
//! client's reply until the backup acknowledges that version; acknowledgements are cumulative.
//! Without a backup it answers at once. So an acknowledged write is held by two workers
//! whenever two exist, and survives the loss of either.
//!
//! # Epochs
//!
//! Every role comes with the epoch the master gave it. Orders of an older epoch are ignored; a
//! client request must name the primary's current epoch; a backup refuses writes of an older
//! epoch with [`ReplicaOutcome::Stale`], which tells a primary that was replaced without being
//! told that it no longer is one (it becomes a [`Role::Spare`] and stops answering writes).
//! A new epoch starts with a full copy ([`WorkerMsg::Snapshot`]) from primary to backup, and
//! a backup acknowledges no write of an epoch before it has that copy.
//!
//! Epochs order one master's orders; fencing tokens order masters. The orders of a master
//! with a lower token than one the worker followed are ignored (see `kv`'s "Fencing the
//! master").
//!
//! # Never waiting on another actor
//!
//! Workers send to each other (and to the master) with `try_tell`: a worker blocked on a full
//! mailbox of a worker blocked on its own would deadlock both. What is lost that way heals
//! itself: a missing write shows as a gap at the backup, which asks for a snapshot; a missing
//! acknowledgement is covered by the next one (they are cumulative); a missing report or order
//! by the master's next round.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::WORKERS_GROUP;
use super::protocol::{
    Assignment, Epoch, KvError, MasterMsg, PartitionId, PartitionReport, ReadResult,
    ReplicaOutcome, Role, WorkerMsg, WorkerReport, WriteResult,
};
use crate::registry::Registry;
use crate::{Actor, ActorError, ActorId, ActorRef, ActorResult, Context, ReplyTo, TellError};

/// How long a backup waits for a snapshot it asked for before it asks again.
const SNAPSHOT_ASK_AGAIN: Duration = Duration::from_secs(1);

/// The arguments of module [`WORKER_MODULE`](super::WORKER_MODULE); every field has a default,
/// so no arguments (or an empty table) will do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerArgs {
    /// Writes of one partition that may wait for the backup's acknowledgement; more are
    /// refused with [`KvError::Overloaded`]. Default 4096.
    pub max_pending_writes: usize,
}

impl Default for WorkerArgs {
    fn default() -> Self {
        Self {
            max_pending_writes: 4096,
        }
    }
}

/// The worker actor of module [`WORKER_MODULE`](super::WORKER_MODULE). It joins the group
/// [`WORKERS_GROUP`] when it starts, and holds whatever partitions the master gives it.
pub struct Worker {
    args: WorkerArgs,
    partitions: BTreeMap<PartitionId, Partition>,
    /// The node's registry, once started: a worker of a fenced node serves nothing.
    registry: Option<Registry>,
    /// The highest fencing token of a master whose orders this worker followed: orders of a
    /// master with a lower one come from a master that was replaced, and are ignored.
    master_token: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("args", &self.args)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// One partition held.
#[derive(Debug)]
struct Partition {
    role: Role,
    epoch: Epoch,
    /// Writes applied since the partition was created; carried over by snapshots, so of two
    /// copies of one line the higher version holds more (the master promotes the newest line,
    /// then the highest version).
    version: u64,
    data: BTreeMap<String, Vec<u8>>,
    /// Primary only: where writes are replicated.
    backup: Option<ActorRef<WorkerMsg>>,
    /// Primary only: writes applied and replicated but not yet acknowledged by the backup, in
    /// version order, with the client waiting for each.
    pending: VecDeque<(u64, ReplyTo<WriteResult>)>,
    /// Backup only: the copy is this epoch's primary's (its snapshot arrived). Until then the
    /// data is whatever an earlier epoch left, and replicated writes are not acknowledged:
    /// an acknowledgement must mean the write is here.
    current: bool,
    /// The epoch of the line of writes the data is (see `PartitionReport::line`).
    line: Epoch,
    /// The partition count of the master that assigned it (0: not known).
    partitions: u32,
    /// Backup only: when a snapshot was last asked for this epoch, if one was and has not
    /// come yet. Asked again after [`SNAPSHOT_ASK_AGAIN`]: an ask or a snapshot lost (a full
    /// mailbox, a connection reset) would otherwise leave every later write unacknowledged.
    snapshot_asked: Option<Instant>,
}

impl Partition {
    fn new(role: Role, epoch: Epoch) -> Self {
        Self {
            role,
            epoch,
            version: 0,
            data: BTreeMap::new(),
            backup: None,
            pending: VecDeque::new(),
            current: false,
            line: 0,
            partitions: 0,
            snapshot_asked: None,
        }
    }
}

impl Worker {
    /// A worker with these arguments.
    pub fn new(args: WorkerArgs) -> Self {
        Self {
            args,
            partitions: BTreeMap::new(),
            registry: None,
            master_token: 0,
        }
    }

    /// Whether to follow an order of the master with fencing token `token` on lock `lease`:
    /// not if a master with a higher one gave orders already, nor if this node's copy of the
    /// registry shows `lease` granted since with a higher token (the master was replaced,
    /// and its successor may not have reached this worker yet). Raises the bar to `token`,
    /// or to the later grant's: the refusal lasts after that grant ends too. Token 0 (a
    /// master without a lease, or of an earlier build) is not fenced: always followed, it
    /// raises nothing.
    fn follows(&mut self, token: u64, lease: &str, order: &str, me: &ActorId) -> bool {
        if token == 0 {
            return true;
        }
        if token < self.master_token {
            tracing::warn!(worker = %me, token, following = self.master_token, "ignored an order ({order}) of a master that was replaced");
            return false;
        }
        // The copy may lag, never lead: a later grant in it did happen, while a grant of
        // `token` it does not show yet may have happened too.
        let holder = (!lease.is_empty())
            .then(|| self.registry.as_ref()?.lock_info(lease)?.holder)
            .flatten();
        if let Some((_, holding)) = holder
            && holding > token
        {
            tracing::warn!(worker = %me, token, lease, holding, "ignored an order ({order}) of a master whose lease passed to a successor");
            self.master_token = holding;
            return false;
        }
        self.master_token = token;
        true
    }

    fn report(&self, me: &ActorId) -> WorkerReport {
        WorkerReport {
            worker: me.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|(&partition, p)| PartitionReport {
                    partition,
                    role: p.role,
                    epoch: p.epoch,
                    version: p.version,
                    keys: p.data.len() as u64,
                    line: p.line,
                    partitions: p.partitions,
                })
                .collect(),
            master_token: self.master_token,
        }
    }

    fn on_assign(&mut self, a: Assignment, ctx: &mut Context<Self>) {
        let me = ctx.id().clone();
        let part = match self.partitions.get_mut(&a.partition) {
            Some(p) if a.epoch < p.epoch => {
                tracing::debug!(worker = %me, partition = a.partition, epoch = a.epoch, held = p.epoch, "stale assignment ignored");
                return;
            }
            Some(p)
                if a.epoch == p.epoch
                    && a.role == p.role
                    && a.backup.as_ref().map(ActorRef::id)
                        == p.backup.as_ref().map(ActorRef::id) =>
            {
                return;
            }
            Some(p) => p,
            None => self
                .partitions
                .entry(a.partition)
                .or_insert_with(|| Partition::new(a.role, a.epoch)),
        };
        tracing::debug!(worker = %me, partition = a.partition, epoch = a.epoch, role = %a.role, backup = ?a.backup, "assigned");
        if part.role == Role::Primary && a.role != Role::Primary {
            fail_pending(part, a.partition, &me, Some((a.role, a.epoch)));
        }
        part.role = a.role;
        part.epoch = a.epoch;
        if a.role == Role::Primary {
            // Its copy starts the epoch's line: the master chose it as the best there is.
            part.line = a.epoch;
        }
        part.partitions = a.partitions;
        // A new role or epoch: a backup waits for this epoch's snapshot.
        part.current = false;
        part.snapshot_asked = None;
        part.backup = if a.role == Role::Primary {
            a.backup
        } else {
            None
        };
        if a.role == Role::Primary {
            if part.backup.is_some() {
                // Waiting writes are answered once the backup acknowledges the snapshot.
                send_snapshot(part, a.partition, ctx);
            } else {
                release_pending(part, u64::MAX);
            }
        }
    }

    fn on_write(
        &mut self,
        (partition, epoch, key, value): (PartitionId, Epoch, String, Option<Vec<u8>>),
        reply: ReplyTo<WriteResult>,
        ctx: &mut Context<Self>,
    ) {
        let me = ctx.id();
        let max_pending = self.args.max_pending_writes;
        let part = match self.primary_at(partition, epoch, me) {
            Ok(part) => part,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        if part.pending.len() >= max_pending {
            let _ = reply.send(Err(KvError::Overloaded {
                worker: me.clone(),
                partition,
                pending: part.pending.len(),
            }));
            return;
        }
        match &value {
            Some(value) => part.data.insert(key.clone(), value.clone()),
            None => part.data.remove(&key),
        };
        part.version += 1;
        let version = part.version;
        let Some(backup) = &part.backup else {
            let _ = reply.send(Ok(version));
            return;
        };
        part.pending.push_back((version, reply));
        let msg = WorkerMsg::Replicate {
            partition,
            epoch,
            version,
            key,
            value,
            primary: ctx.myself(),
        };
        if let Err(err) = backup.try_tell(msg) {
            // Full: the backup sees a gap at the next write and asks for a snapshot. Gone:
            // the master gives this partition another backup, or none.
            tracing::debug!(worker = %me, partition, %err, "write not replicated for now");
        }
    }

    fn on_read(
        &mut self,
        (partition, epoch, key): (PartitionId, Epoch, String),
        reply: ReplyTo<ReadResult>,
        me: &ActorId,
    ) {
        let answer = self
            .primary_at(partition, epoch, me)
            .map(|part| part.data.get(&key).cloned());
        let _ = reply.send(answer);
    }

    /// The partition if this worker is its primary at exactly `epoch`, and its node is not
    /// fenced: a node cut off past its session's validity may have had its partitions given
    /// to others, who take writes this copy does not see.
    fn primary_at(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        me: &ActorId,
    ) -> Result<&mut Partition, KvError> {
        if self.registry.as_ref().is_some_and(Registry::is_fenced) {
            return Err(KvError::Fenced { worker: me.clone() });
        }
        match self.partitions.get_mut(&partition) {
            Some(p) if p.role == Role::Primary && p.epoch == epoch => Ok(p),
            other => Err(KvError::NotPrimary {
                worker: me.clone(),
                partition,
                epoch,
                held: other.map(|p| (p.role, p.epoch)),
            }),
        }
    }

    /// A backup's side of a replicated write.
    fn on_replicate(
        &mut self,
        (partition, epoch, version): (PartitionId, Epoch, u64),
        (key, value): (String, Option<Vec<u8>>),
        primary: ActorRef<WorkerMsg>,
        me: &ActorId,
    ) {
        let (held, outcome) = match self.partitions.get_mut(&partition) {
            Some(p) if epoch < p.epoch || (epoch == p.epoch && p.role != Role::Backup) => {
                (p.epoch, Some(ReplicaOutcome::Stale { epoch: p.epoch }))
            }
            Some(p) if epoch == p.epoch => {
                let outcome = if !p.current {
                    // The snapshot starting the epoch was lost: what is here is older.
                    ask_snapshot(p)
                } else if version <= p.version {
                    // Already in the snapshot this epoch started with.
                    Some(ReplicaOutcome::Applied { version: p.version })
                } else if version == p.version + 1 {
                    match value {
                        Some(value) => p.data.insert(key, value),
                        None => p.data.remove(&key),
                    };
                    p.version = version;
                    Some(ReplicaOutcome::Applied { version })
                } else {
                    ask_snapshot(p)
                };
                (p.epoch, outcome)
            }
            // A newer epoch than this worker knows (its assignment is on the way, or the
            // snapshot that starts the epoch was lost): only a snapshot can be trusted.
            _ => {
                let p = self.adopt_backup(partition, epoch, me);
                (p.epoch, ask_snapshot(p))
            }
        };
        if let Some(outcome) = outcome {
            ack(&primary, partition, held, me, outcome);
        }
    }

    /// A backup's side of a snapshot.
    fn on_snapshot(
        &mut self,
        (partition, epoch, version): (PartitionId, Epoch, u64),
        data: BTreeMap<String, Vec<u8>>,
        primary: ActorRef<WorkerMsg>,
        me: &ActorId,
    ) {
        if let Some(p) = self.partitions.get(&partition)
            && (epoch < p.epoch || (epoch == p.epoch && p.role != Role::Backup))
        {
            let outcome = ReplicaOutcome::Stale { epoch: p.epoch };
            ack(&primary, partition, p.epoch, me, outcome);
            return;
        }
        let p = self.adopt_backup(partition, epoch, me);
        p.data = data;
        p.version = version;
        p.current = true;
        p.line = epoch;
        p.snapshot_asked = None;
        tracing::debug!(worker = %me, partition, epoch, version, keys = p.data.len(), "snapshot applied");
        ack(
            &primary,
            partition,
            epoch,
            me,
            ReplicaOutcome::Applied { version },
        );
    }

    /// Holds `partition` as backup at `epoch` (which is at least the epoch held), keeping the
    /// data until a snapshot replaces it.
    fn adopt_backup(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        me: &ActorId,
    ) -> &mut Partition {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition::new(Role::Backup, epoch));
        if p.role == Role::Primary {
            fail_pending(p, partition, me, Some((Role::Backup, epoch)));
        }
        if p.epoch != epoch || p.role != Role::Backup {
            p.current = false;
            p.snapshot_asked = None;
        }
        p.role = Role::Backup;
        p.epoch = epoch;
        p.backup = None;
        p
    }

    /// A primary's side of a backup's answer.
    fn on_ack(
        &mut self,
        (partition, epoch): (PartitionId, Epoch),
        backup: ActorId,
        outcome: ReplicaOutcome,
        ctx: &mut Context<Self>,
    ) {
        let me = ctx.id().clone();
        let Some(part) = self.partitions.get_mut(&partition) else {
            return;
        };
        if part.role != Role::Primary || part.backup.as_ref().map(ActorRef::id) != Some(&backup) {
            return;
        }
        match outcome {
            ReplicaOutcome::Applied { version } if epoch == part.epoch => {
                release_pending(part, version);
            }
            ReplicaOutcome::NeedSnapshot { have } if epoch == part.epoch => {
                tracing::debug!(worker = %me, partition, have, version = part.version, "backup asked for a snapshot");
                send_snapshot(part, partition, ctx);
            }
            ReplicaOutcome::Stale { epoch: newer } if newer > part.epoch => {
                tracing::warn!(worker = %me, partition, epoch = part.epoch, newer, "superseded as primary: the backup holds a newer epoch");
                fail_pending(part, partition, &me, Some((Role::Spare, part.epoch)));
                part.role = Role::Spare;
                part.backup = None;
            }
            _ => {}
        }
    }

    fn on_drop(&mut self, partition: PartitionId, epoch: Epoch, me: &ActorId) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && (p.epoch < epoch || p.role == Role::Spare)
        {
            fail_pending(p, partition, me, None);
            tracing::debug!(worker = %me, partition, held = p.epoch, epoch, "copy dropped");
            self.partitions.remove(&partition);
        }
    }
}

/// Asks the primary for a snapshot, unless one was asked for lately: each replicated write
/// that finds the copy behind would ask again, and a snapshot takes a while to come.
fn ask_snapshot(p: &mut Partition) -> Option<ReplicaOutcome> {
    let now = Instant::now();
    if p.snapshot_asked
        .is_some_and(|asked| now.duration_since(asked) < SNAPSHOT_ASK_AGAIN)
    {
        return None;
    }
    p.snapshot_asked = Some(now);
    Some(ReplicaOutcome::NeedSnapshot { have: p.version })
}

fn ack(
    primary: &ActorRef<WorkerMsg>,
    partition: PartitionId,
    epoch: Epoch,
    me: &ActorId,
    outcome: ReplicaOutcome,
) {
    let msg = WorkerMsg::ReplicaAck {
        partition,
        epoch,
        backup: me.clone(),
        outcome,
    };
    if let Err(err) = primary.try_tell(msg) {
        tracing::debug!(worker = %me, partition, %err, "acknowledgement not sent");
    }
}

fn send_snapshot(part: &Partition, partition: PartitionId, ctx: &mut Context<Worker>) {
    let Some(backup) = &part.backup else {
        return;
    };
    let msg = WorkerMsg::Snapshot {
        partition,
        epoch: part.epoch,
        version: part.version,
        data: part.data.clone(),
        primary: ctx.myself(),
    };
    match backup.try_tell(msg) {
        Ok(()) => {}
        Err(TellError::Unreachable { reason, .. }) => {
            // Also what a snapshot over the maximum frame size gets.
            tracing::warn!(worker = %ctx.id(), partition, backup = %backup.id(), %reason, "snapshot not sent");
        }
        Err(err) => {
            tracing::debug!(worker = %ctx.id(), partition, %err, "snapshot not sent for now");
        }
    }
}

/// Answers the writes up to `version`: the backup holds them.
fn release_pending(part: &mut Partition, version: u64) {
    while part.pending.front().is_some_and(|(v, _)| *v <= version) {
        if let Some((v, reply)) = part.pending.pop_front() {
            let _ = reply.send(Ok(v));
        }
    }
}

/// Refuses the waiting writes: this worker is no longer the primary. (They may or may not
/// have reached the backup; the client retries them, and writing a value again is harmless.)
/// Refuses the writes waiting for the backup of a primary that is one no more: `held` is how
/// it holds the partition from now on (`None`: not at all).
fn fail_pending(
    part: &mut Partition,
    partition: PartitionId,
    me: &ActorId,
    held: Option<(Role, Epoch)>,
) {
    for (_, reply) in part.pending.drain(..) {
        let _ = reply.send(Err(KvError::NotPrimary {
            worker: me.clone(),
            partition,
            epoch: part.epoch,
            held,
        }));
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if self.args.max_pending_writes == 0 {
            return Err(ActorError::new(
                "kv.worker: `max_pending_writes` is 0; it must be at least 1 (every write waits for the backup)",
            ));
        }
        let registry = ctx.node().extension::<Registry>().ok_or_else(|| {
            ActorError::new(format!(
                "kv.worker needs the registry of node {} (start it with Registry::start first)",
                ctx.node().id()
            ))
        })?;
        registry.join_group(WORKERS_GROUP, &ctx.myself()).await?;
        self.registry = Some(registry);
        tracing::info!(worker = %ctx.id(), "kv worker joined {WORKERS_GROUP}");
        Ok(())
    }

    async fn handle(&mut self, msg: WorkerMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            WorkerMsg::Assign(a) => {
                if self.follows(a.master_token, &a.master_lease, "assign", ctx.id()) {
                    self.on_assign(a, ctx)
                }
            }
            WorkerMsg::Drop {
                partition,
                epoch,
                master_token,
                master_lease,
            } => {
                if self.follows(master_token, &master_lease, "drop", ctx.id()) {
                    self.on_drop(partition, epoch, &ctx.id().clone())
                }
            }
            WorkerMsg::ReportTo {
                round,
                master,
                master_token,
                master_lease,
            } => {
                if !self.follows(master_token, &master_lease, "report", ctx.id()) {
                    return Ok(());
                }
                let report = self.report(ctx.id());
                if let Err(err) = master.try_tell(MasterMsg::Reported { round, report }) {
                    tracing::debug!(worker = %ctx.id(), %err, "report not sent");
                }
            }
            WorkerMsg::Report(reply) => {
                let _ = reply.send(self.report(ctx.id()));
            }
            WorkerMsg::Write {
                partition,
                epoch,
                key,
                value,
                reply,
            } => self.on_write((partition, epoch, key, value), reply, ctx),
            WorkerMsg::Read {
                partition,
                epoch,
                key,
                reply,
            } => self.on_read((partition, epoch, key), reply, &ctx.id().clone()),
            WorkerMsg::Replicate {
                partition,
                epoch,
                version,
                key,
                value,
                primary,
            } => self.on_replicate(
                (partition, epoch, version),
                (key, value),
                primary,
                &ctx.id().clone(),
            ),
            WorkerMsg::Snapshot {
                partition,
                epoch,
                version,
                data,
                primary,
            } => self.on_snapshot(
                (partition, epoch, version),
                data,
                primary,
                &ctx.id().clone(),
            ),
            WorkerMsg::ReplicaAck {
                partition,
                epoch,
                backup,
                outcome,
            } => self.on_ack((partition, epoch), backup, outcome, ctx),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_that_never_came_is_asked_for_again() {
        let mut p = Partition::new(Role::Backup, 3);
        assert!(matches!(
            ask_snapshot(&mut p),
            Some(ReplicaOutcome::NeedSnapshot { have: 0 })
        ));
        // The writes behind it do not each ask again...
        assert!(ask_snapshot(&mut p).is_none());
        tokio::time::advance(SNAPSHOT_ASK_AGAIN / 2).await;
        assert!(ask_snapshot(&mut p).is_none());
        // ...but the ask, or the snapshot, may be lost.
        tokio::time::advance(SNAPSHOT_ASK_AGAIN).await;
        assert!(ask_snapshot(&mut p).is_some());
    }
}
