//! The master: keeps the partition table, finds and watches workers, and tells them what to
//! hold. The decisions are the planner's (pure, in `planner.rs`); this is the actor around it.
//!
//! # Rounds
//!
//! The master never trusts its table alone: in a *round* it asks every live worker what it
//! holds ([`WorkerMsg::ReportTo`]), waits for the answers (or the report timeout), plans from
//! its table plus the reports, and sends the orders. A round starts
//!
//! - when the master starts, with an empty table: the reports *are* the table. This is how a
//!   master restarted on another node after a failover recovers the assignment; until the
//!   round ends its table says `recovering` and clients wait. A partition no worker reports
//!   is started anew, empty, only if no worker holds any data (a new deployment) or after a
//!   grace period of a few seconds, in case its holders were not found yet;
//! - when a worker joins the group or a monitored worker ends;
//! - every `reconcile_interval_ms`, to confirm orders took effect, finish moves and drop
//!   copies no longer needed, and repair whatever a lost message left undone.
//!
//! A change during a round starts another right after it.
//!
//! # Finding workers
//!
//! The master polls its node's copy of the group [`WORKERS_GROUP`] every `poll_interval_ms`
//! rather than subscribing to registry changes: a poll is a local read that costs nothing,
//! it cannot lag behind or overflow as a subscription can, and it makes the actor a pure
//! function of what it sees, with no extra task to manage. Deaths come faster through the
//! monitor the master sets on every worker it finds: the `Down` starts a round at once,
//! before the registry has even removed the worker from the group.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::WORKERS_GROUP;
use super::planner::{self, Command, Held, Slot, WorkerView};
use super::protocol::{
    Assignment, MasterMsg, Role, Route, Status, Table, TableEntry, WorkerMsg, WorkerReport,
    WorkerStatus, partition_of,
};
use crate::registry::Registry;
use crate::{Actor, ActorError, ActorId, ActorRef, ActorResult, Context, Down, MonitorRef};

/// How long a freshly started master waits before it starts anew, empty, a partition no
/// worker it has found holds, when some worker holds data: the deployment is not new then,
/// and a missing partition is more likely on a worker not found yet than lost.
const FRESH_GRACE: Duration = Duration::from_secs(5);

/// The arguments of module [`MASTER_MODULE`](super::MASTER_MODULE); every field has a default,
/// so no arguments (or an empty table) will do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterArgs {
    /// The number of partitions keys are spread over (fixed for the life of the data: every
    /// master of one deployment must use the same). Default 16.
    pub partitions: u32,
    /// How often the master looks at the workers group. Default 200 ms.
    pub poll_interval_ms: u64,
    /// How often the master checks every worker even if nothing changed. Default 1000 ms.
    pub reconcile_interval_ms: u64,
    /// How long the master waits for the workers' reports in a round. Default 1000 ms.
    pub report_timeout_ms: u64,
}

/// The most partitions a master takes: its table travels to clients in one message.
pub const MAX_PARTITIONS: u32 = 4096;

/// The longest of the master's intervals and timeouts: a round ends only when every worker
/// asked reported or the report timeout passed, so a longer one would hold up failover.
pub const MAX_INTERVAL_MS: u64 = 60_000;

impl MasterArgs {
    /// Checks the arguments; the error names the one that is wrong and what it may be.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!(
                "kv.master: `partitions` is {}; it must be 1 to {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.report_timeout_ms < 10 {
            return Err(format!(
                "kv.master: `report_timeout_ms` is {}; it must be at least 10 (the workers' reports must have time to come)",
                self.report_timeout_ms
            ));
        }
        for (name, value) in [
            ("poll_interval_ms", self.poll_interval_ms),
            ("reconcile_interval_ms", self.reconcile_interval_ms),
            ("report_timeout_ms", self.report_timeout_ms),
        ] {
            if value > MAX_INTERVAL_MS {
                return Err(format!(
                    "kv.master: `{name}` is {value}; it must be at most {MAX_INTERVAL_MS} (a master waiting longer holds up failover)"
                ));
            }
        }
        Ok(())
    }
}

impl Default for MasterArgs {
    fn default() -> Self {
        Self {
            partitions: 16,
            poll_interval_ms: 200,
            reconcile_interval_ms: 1000,
            report_timeout_ms: 1000,
        }
    }
}

/// The master actor of module [`MASTER_MODULE`](super::MASTER_MODULE). It does not register
/// [`MASTER_NAME`](super::MASTER_NAME) itself: whoever starts it (the app platform, as a
/// cluster singleton) does.
pub struct Master {
    args: MasterArgs,
    /// Set in `started`.
    registry: Option<Registry>,
    /// The fencing token of the singleton lease this master is bound to (0 without one),
    /// set in `started`: every order carries it (see [`WorkerMsg::Assign`]).
    token: u64,
    /// The lock of that lease ("" without one), which every order names too.
    lease: String,
    /// The partition table, workers named by id.
    slots: Vec<Slot>,
    /// Workers found in the group and not known to have ended: the planner's live set.
    workers: BTreeMap<ActorId, ActorRef<WorkerMsg>>,
    /// The monitor on each of them, removed when a worker leaves the group without ending
    /// (so that no `Down` arrives for a worker already forgotten).
    monitors: HashMap<ActorId, MonitorRef>,
    /// Workers that ended but may still be listed in the group (until the registry removes
    /// them): never taken back.
    gone: HashSet<ActorId>,
    /// Workers whose monitor fired because their node could not be reached from this one,
    /// while the registry still holds the node up: they may run on, holding the only copy of
    /// a partition, so they stay live (silent: their reports cannot come, which holds up
    /// starting anything empty) and are monitored again once their node is connected. One
    /// whose node's session ends leaves the group, and is forgotten then.
    out_of_touch: HashSet<ActorId>,
    /// The round under way.
    round: Option<Round>,
    /// Rounds are numbered, so that late reports of an earlier round are told apart.
    next_round: u64,
    /// Something changed during the round under way: run another after it.
    again: bool,
    /// No round has finished yet.
    recovering: bool,
    /// The last finished round gave no orders and the reports confirmed every partition.
    settled: bool,
    /// The table's revision, bumped at each change, for clients and status.
    revision: u64,
    /// Polls since the last round, to run one every `reconcile_interval_ms`.
    polls: u64,
    /// When this master started, for [`FRESH_GRACE`].
    started: Instant,
}

/// A round under way.
#[derive(Debug)]
struct Round {
    id: u64,
    /// Workers asked that have not answered yet: the round ends when none is left (or at
    /// the report timeout).
    waiting: HashSet<ActorId>,
    reports: HashMap<ActorId, WorkerReport>,
}

impl Master {
    /// A master with these arguments.
    pub fn new(args: MasterArgs) -> Self {
        Self {
            args,
            registry: None,
            token: 0,
            lease: String::new(),
            // Made in `started`, once the arguments are checked.
            slots: Vec::new(),
            workers: BTreeMap::new(),
            monitors: HashMap::new(),
            gone: HashSet::new(),
            out_of_touch: HashSet::new(),
            round: None,
            next_round: 1,
            again: false,
            recovering: true,
            settled: false,
            revision: 0,
            polls: 0,
            started: Instant::now(),
        }
    }

    /// Looks at the group; true if a worker joined or left.
    fn poll_group(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(registry) = &self.registry else {
            return false;
        };
        let listed: Vec<ActorRef<WorkerMsg>> = registry.group(WORKERS_GROUP);
        let ids: HashSet<&ActorId> = listed.iter().map(ActorRef::id).collect();
        let mut changed = false;
        let left: Vec<ActorId> = self
            .workers
            .keys()
            .filter(|id| !ids.contains(id))
            .cloned()
            .collect();
        for id in left {
            // Its session expired or it left; the monitor usually said so first.
            tracing::info!(master = %ctx.id(), worker = %id, "kv worker left the group");
            self.forget(&id, ctx);
            changed = true;
        }
        self.gone.retain(|id| ids.contains(id));
        let reached: Vec<ActorId> = self
            .out_of_touch
            .iter()
            .filter(|id| self.workers.get(*id).is_some_and(ActorRef::is_alive))
            .cloned()
            .collect();
        for id in reached {
            tracing::info!(master = %ctx.id(), worker = %id, "kv worker reached again; monitoring it again");
            self.out_of_touch.remove(&id);
            let monitor = ctx.monitor(&self.workers[&id]);
            self.monitors.insert(id, monitor);
        }
        for worker in listed {
            let id = worker.id().clone();
            if self.workers.contains_key(&id) || self.gone.contains(&id) {
                continue;
            }
            tracing::info!(master = %ctx.id(), worker = %id, "kv worker found");
            let monitor = ctx.monitor(&worker);
            self.monitors.insert(id.clone(), monitor);
            self.workers.insert(id, worker);
            changed = true;
        }
        if changed {
            // Not settled until a round has planned with these workers.
            self.settled = false;
        }
        changed
    }

    fn forget(&mut self, id: &ActorId, ctx: &mut Context<Self>) {
        self.workers.remove(id);
        self.out_of_touch.remove(id);
        self.settled = false;
        if let Some(monitor) = self.monitors.remove(id) {
            ctx.demonitor(monitor);
        }
        self.gone.insert(id.clone());
        if let Some(round) = &mut self.round {
            round.waiting.remove(id);
        }
    }

    /// Starts a round, or asks for another after the one under way.
    fn request_round(&mut self, ctx: &mut Context<Self>) {
        if self.round.is_some() {
            self.again = true;
            return;
        }
        self.polls = 0;
        let id = self.next_round;
        self.next_round += 1;
        let mut waiting = HashSet::new();
        for (worker_id, worker) in &self.workers {
            let msg = WorkerMsg::ReportTo {
                round: id,
                master: ctx.myself(),
                master_token: self.token,
                master_lease: self.lease.clone(),
            };
            match worker.try_tell(msg) {
                Ok(()) => {
                    waiting.insert(worker_id.clone());
                }
                Err(err) => {
                    tracing::debug!(master = %ctx.id(), worker = %worker_id, %err, "report not asked")
                }
            }
        }
        self.round = Some(Round {
            id,
            waiting,
            reports: HashMap::new(),
        });
        ctx.send_after(
            Duration::from_millis(self.args.report_timeout_ms),
            MasterMsg::RoundTimeout { round: id },
        );
        self.finish_round_if_complete(ctx);
    }

    fn finish_round_if_complete(&mut self, ctx: &mut Context<Self>) {
        if self.round.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            self.finish_round(ctx);
        }
    }

    fn finish_round(&mut self, ctx: &mut Context<Self>) {
        let Some(round) = self.round.take() else {
            return;
        };
        if !round.waiting.is_empty() {
            tracing::info!(master = %ctx.id(), round = round.id, silent = ?round.waiting, "kv workers did not report in time");
        }
        let partitions = self.args.partitions;
        // Keys route by the partition count: data a master of another count placed would
        // be looked for in the wrong partitions (reads finding nothing, writes beside it).
        if let Some((worker, other)) = round.reports.values().find_map(|r| {
            r.partitions
                .iter()
                .find(|p| p.partitions != 0 && p.partitions != partitions)
                .map(|p| (&r.worker, p.partitions))
        }) {
            let why = format!(
                "kv.master: worker {worker} holds data of a deployment with {other} partitions, \
                 and this master has {partitions}: every master of one deployment must use the \
                 same `partitions` (deploy again with partitions = {other}, or start the \
                 workers afresh to drop the data)"
            );
            tracing::error!(master = %ctx.id(), "{why}");
            ctx.stop_with(crate::ExitReason::Failed(why));
            return;
        }
        let views: Vec<WorkerView> = self
            .workers
            .keys()
            .map(|id| WorkerView {
                id: id.clone(),
                node: id.node().name().to_owned(),
                held: round.reports.get(id).map(|r| {
                    r.partitions
                        .iter()
                        // A copy of a partition this master does not have (a master started
                        // with fewer partitions) is left alone.
                        .filter(|p| p.partition < partitions)
                        .map(|p| {
                            let held = Held {
                                role: p.role,
                                epoch: p.epoch,
                                version: p.version,
                                // Workers of earlier builds report no line. This build's
                                // copies of line 0 hold no write yet, so a copy of line 0
                                // with writes is of an earlier build: counted at its
                                // epoch, as those builds ranked copies of one version.
                                line: match (p.line, p.role) {
                                    (0, Role::Primary | Role::Spare) => p.epoch,
                                    (0, Role::Backup) if p.version > 0 => p.epoch,
                                    (line, _) => line,
                                },
                            };
                            (p.partition, held)
                        })
                        .collect()
                }),
            })
            .collect();
        let holds_data = views
            .iter()
            .any(|v| v.held.as_ref().is_some_and(|held| !held.is_empty()));
        let may_start_empty = !holds_data || self.started.elapsed() >= FRESH_GRACE;
        let plan = planner::plan(&self.slots, &views, may_start_empty);
        for note in &plan.notes {
            tracing::warn!(master = %ctx.id(), "{note}");
        }
        if plan.slots != self.slots {
            self.revision += 1;
        }
        self.slots = plan.slots;
        self.settled = plan.commands.is_empty() && plan.unconfirmed == 0;
        if self.recovering {
            self.recovering = false;
            tracing::info!(master = %ctx.id(), reports = round.reports.len(), workers = self.workers.len(), "kv master recovered its table from the workers' reports");
        }
        if !plan.commands.is_empty() {
            tracing::debug!(master = %ctx.id(), round = round.id, orders = plan.commands.len(), "kv orders");
        }
        for command in plan.commands {
            self.send(command, ctx);
        }
        if std::mem::take(&mut self.again) {
            self.request_round(ctx);
        }
    }

    fn send(&self, command: Command, ctx: &Context<Self>) {
        let (worker, msg) = match command {
            Command::Assign {
                worker,
                partition,
                epoch,
                role,
                backup,
            } => {
                let backup = backup.and_then(|b| self.workers.get(&b).cloned());
                let msg = WorkerMsg::Assign(Assignment {
                    partition,
                    epoch,
                    role,
                    backup,
                    partitions: self.args.partitions,
                    master_token: self.token,
                    master_lease: self.lease.clone(),
                });
                (worker, msg)
            }
            Command::Drop {
                worker,
                partition,
                epoch,
            } => (
                worker,
                WorkerMsg::Drop {
                    partition,
                    epoch,
                    master_token: self.token,
                    master_lease: self.lease.clone(),
                },
            ),
        };
        if let Some(target) = self.workers.get(&worker)
            && let Err(err) = target.try_tell(msg)
        {
            // The next round sees the order was not carried out and gives it again.
            tracing::debug!(master = %ctx.id(), %worker, %err, "order not sent");
        }
    }

    fn entry(&self, slot: &Slot) -> TableEntry {
        let find = |w: &Option<ActorId>| w.as_ref().and_then(|w| self.workers.get(w).cloned());
        TableEntry {
            primary: find(&slot.primary),
            backup: find(&slot.backup),
            epoch: slot.epoch,
        }
    }

    fn table(&self, me: &ActorId) -> Table {
        Table {
            master: me.clone(),
            revision: self.revision,
            recovering: self.recovering,
            entries: self.slots.iter().map(|s| self.entry(s)).collect(),
        }
    }

    fn status(&self, me: &ActorId) -> Status {
        let count = |f: &dyn Fn(&Slot) -> bool| self.slots.iter().filter(|s| f(s)).count() as u32;
        let workers = self
            .workers
            .keys()
            .map(|w| WorkerStatus {
                worker: w.clone(),
                primaries: count(&|s| s.primary.as_ref() == Some(w)),
                backups: count(&|s| s.backup.as_ref() == Some(w)),
            })
            .collect();
        Status {
            master: me.clone(),
            master_token: self.token,
            master_lease: self.lease.clone(),
            partitions: self.args.partitions,
            assigned: count(&|s| s.primary.is_some()),
            replicated: count(&|s| s.primary.is_some() && s.backup.is_some()),
            epoch: self.slots.iter().map(|s| s.epoch).max().unwrap_or(0),
            revision: self.revision,
            recovering: self.recovering,
            settled: self.settled && !self.recovering,
            workers,
        }
    }
}

impl Actor for Master {
    type Msg = MasterMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        self.args.check().map_err(ActorError::new)?;
        self.slots = vec![Slot::default(); self.args.partitions as usize];
        let registry = ctx.node().extension::<Registry>().ok_or_else(|| {
            ActorError::new(format!(
                "kv.master needs the registry of node {} (start it with Registry::start first)",
                ctx.node().id()
            ))
        })?;
        // The app platform binds a singleton's instance to its lease before this hook runs.
        (self.lease, self.token) = registry.lease_of(ctx.id()).unwrap_or_default();
        self.registry = Some(registry);
        self.started = Instant::now();
        let poll = Duration::from_millis(self.args.poll_interval_ms.max(10));
        ctx.send_interval(poll, || MasterMsg::Tick);
        tracing::info!(master = %ctx.id(), partitions = self.args.partitions, token = self.token, "kv master started; asking the workers what they hold");
        self.poll_group(ctx);
        self.request_round(ctx);
        Ok(())
    }

    async fn handle(&mut self, msg: MasterMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            MasterMsg::Table(reply) => {
                let _ = reply.send(self.table(ctx.id()));
            }
            MasterMsg::Route { key, reply } => {
                let partition = partition_of(&key, self.args.partitions);
                let entry = self.entry(&self.slots[partition as usize]);
                let _ = reply.send(Route { partition, entry });
            }
            MasterMsg::Status(reply) => {
                let _ = reply.send(self.status(ctx.id()));
            }
            MasterMsg::Reported { round, report } => {
                if let Some(r) = &mut self.round
                    && r.id == round
                    && r.waiting.remove(&report.worker)
                {
                    r.reports.insert(report.worker.clone(), report);
                    self.finish_round_if_complete(ctx);
                }
            }
            MasterMsg::RoundTimeout { round } => {
                if self.round.as_ref().is_some_and(|r| r.id == round) {
                    self.finish_round(ctx);
                }
            }
            MasterMsg::Tick => {
                self.polls += 1;
                let every =
                    (self.args.reconcile_interval_ms / self.args.poll_interval_ms.max(10)).max(1);
                if self.poll_group(ctx) || self.polls >= every {
                    self.request_round(ctx);
                }
            }
        }
        Ok(())
    }

    async fn on_down(&mut self, down: Down, ctx: &mut Context<Self>) -> ActorResult {
        let node = down.actor.node();
        if self.workers.contains_key(&down.actor)
            && matches!(&down.reason, crate::ExitReason::NodeDown(n) if n == node)
            && !self
                .registry
                .as_ref()
                .is_some_and(|r| r.is_synced() && r.session_ended(node))
        {
            // As Erlang's `noconnection`: the monitor was set while the node was not
            // connected. Taken for ended, a worker holding the only copy of a partition
            // would be ignored for good, and the partition started again empty.
            tracing::info!(master = %ctx.id(), worker = %down.actor, "kv worker cannot be reached; counted as live until the registry declares its node down");
            self.monitors.remove(&down.actor);
            self.out_of_touch.insert(down.actor);
            return Ok(());
        }
        if self.workers.contains_key(&down.actor) {
            tracing::info!(master = %ctx.id(), worker = %down.actor, reason = %down.reason, "kv worker ended");
            self.forget(&down.actor, ctx);
            self.request_round(ctx);
            self.finish_round_if_complete(ctx);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_out_of_range_are_refused_by_name() {
        assert!(MasterArgs::default().check().is_ok());
        for (args, named) in [
            (
                MasterArgs {
                    partitions: 0,
                    ..MasterArgs::default()
                },
                "`partitions` is 0",
            ),
            (
                MasterArgs {
                    partitions: 4_000_000_000,
                    ..MasterArgs::default()
                },
                "`partitions` is 4000000000; it must be 1 to 4096",
            ),
            (
                MasterArgs {
                    report_timeout_ms: 0,
                    ..MasterArgs::default()
                },
                "`report_timeout_ms` is 0",
            ),
            (
                MasterArgs {
                    report_timeout_ms: 3_600_000,
                    ..MasterArgs::default()
                },
                "`report_timeout_ms` is 3600000; it must be at most 60000",
            ),
            (
                MasterArgs {
                    poll_interval_ms: 60_001,
                    ..MasterArgs::default()
                },
                "`poll_interval_ms` is 60001",
            ),
        ] {
            let err = args.check().unwrap_err();
            assert!(err.contains(named), "{err}");
        }
    }

    /// A master is made before its arguments are checked (by the module's factory): making
    /// one must not take memory by them, or a huge partition count would abort the process
    /// on every node that took the singleton in turn.
    #[test]
    fn a_master_takes_no_memory_by_its_arguments_until_started() {
        let master = Master::new(MasterArgs {
            partitions: u32::MAX,
            ..MasterArgs::default()
        });
        assert!(master.slots.is_empty());
    }
}
