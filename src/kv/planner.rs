//! The master's decisions, pure: from the table it has and what the workers report, the table
//! it wants and the orders that get there. No I/O, no clock, no actor references (workers are
//! named by id), so every case is a unit test.
//!
//! # Rules, per partition
//!
//! 1. **Primary.** Kept while it is alive and confirms it (or has not reported this round).
//!    Otherwise the copy of the newest line wins (the epoch whose primary's writes it holds:
//!    a backup waiting for the snapshot of its epoch still holds an earlier line), then the
//!    highest version, then a primary over a backup over a spare: after a failure that is the
//!    backup, for a fresh master it is whoever held the partition. The table's backup, once
//!    it reported the snapshot of the table's epoch, is promoted at once (no copy can be
//!    newer), unless a report shows a later epoch than the table's.
//!    Any other new primary is chosen only once every live worker has reported: one that has
//!    not may hold a newer copy than any reported (the former backup, or the primary a master
//!    that has just started does not know yet). With no copy anywhere, an empty partition is
//!    started on the least loaded worker, but only once every live worker has reported (a
//!    silent worker might hold the data) and the caller allows it (a master that has just
//!    started gives workers it has not found yet some time).
//! 2. **Backup.** Kept while alive, distinct from the primary and confirming it. Otherwise the
//!    least loaded reporting worker, on another node than the primary if there is one; a
//!    silent one if none reported (a primary with no backup acknowledges alone, which it may
//!    only do while no other worker lives).
//! 3. **Balance.** A backup on its primary's node moves to another node if there is a worker
//!    there, whatever the load (a node's loss must not take both copies); otherwise it moves
//!    to a worker with at least two fewer roles, never onto its primary's node. A primary
//!    hands over to its backup when the backup has at least two fewer primaries and both
//!    reported the same version of the current epoch's line (so the backup holds every
//!    acknowledged write).
//! 4. **Epoch.** Any change gives the partition a new epoch, above every epoch reported for
//!    it, and orders to both workers. Copies held by anyone else are dropped only once the
//!    primary and the backup confirm the epoch at the same version.
//!
//! # Invariants
//!
//! - Versions count the writes of a partition along one line of primaries: a backup only
//!   applies what its primary sent, in order, and a snapshot carries the version with it. So
//!   two copies of one line at the same version hold the same data, and of one line the
//!   highest version holds every acknowledged write (acknowledged writes are on the
//!   backup). Across lines versions do not compare: a primary replaced without being told
//!   goes on applying writes (never acknowledged: its backup refuses them) until it hears,
//!   so its copy may count more writes than the new line's.
//! - The copies of the newest line hold every acknowledged write: a line starts from the best
//!   copy there was, and its writes are acknowledged only once its backup, holding the line,
//!   applied them.
//! - Primary and backup of a partition are two different workers.

use std::collections::{BTreeMap, BTreeSet};

use super::protocol::{Epoch, PartitionId, Role};
use crate::ActorId;

/// One partition of the master's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) primary: Option<ActorId>,
    pub(crate) backup: Option<ActorId>,
    /// 0 until the partition is first assigned.
    pub(crate) epoch: Epoch,
}

/// How a worker said it holds a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) role: Role,
    pub(crate) epoch: Epoch,
    pub(crate) version: u64,
    /// The epoch of the line of writes the copy holds (see `PartitionReport::line`).
    pub(crate) line: Epoch,
}

/// A live worker as the master sees it in one round.
#[derive(Clone, Debug)]
pub(crate) struct WorkerView {
    pub(crate) id: ActorId,
    /// Its node's name, to keep a primary and its backup apart.
    pub(crate) node: String,
    /// What it reported this round; `None` if it did not answer in time.
    pub(crate) held: Option<BTreeMap<PartitionId, Held>>,
}

/// An order to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Hold `partition` in `role` at `epoch` (a primary replicating to `backup`).
    Assign {
        worker: ActorId,
        partition: PartitionId,
        epoch: Epoch,
        role: Role,
        backup: Option<ActorId>,
    },
    /// Forget an unneeded copy of `partition`.
    Drop {
        worker: ActorId,
        partition: PartitionId,
        epoch: Epoch,
    },
}

/// What a round decided.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) slots: Vec<Slot>,
    pub(crate) commands: Vec<Command>,
    /// Things an operator wants to know (a partition restarted empty).
    pub(crate) notes: Vec<String>,
    /// What the reports do not yet show as done: workers that did not report, and partitions
    /// ordered this round, waiting for a report, or with a backup not (yet) at its primary's
    /// version. With no orders either, the table is settled.
    pub(crate) unconfirmed: usize,
}

/// Roles per worker while planning.
#[derive(Default)]
struct Load {
    primaries: BTreeMap<ActorId, usize>,
    backups: BTreeMap<ActorId, usize>,
}

impl Load {
    fn primaries(&self, w: &ActorId) -> usize {
        self.primaries.get(w).copied().unwrap_or(0)
    }

    fn total(&self, w: &ActorId) -> usize {
        self.primaries(w) + self.backups.get(w).copied().unwrap_or(0)
    }

    fn add(map: &mut BTreeMap<ActorId, usize>, w: &ActorId, delta: isize) {
        let n = map.entry(w.clone()).or_default();
        *n = n.saturating_add_signed(delta);
    }
}

/// Plans one round: see the module docs. `current` has one slot per partition;
/// `may_start_empty` allows starting partitions of which no copy is known anew, empty.
pub(crate) fn plan(current: &[Slot], workers: &[WorkerView], may_start_empty: bool) -> Plan {
    let live: BTreeMap<&ActorId, &WorkerView> = workers.iter().map(|w| (&w.id, w)).collect();
    let every_live_reported = workers.iter().all(|w| w.held.is_some());
    let all_reported = may_start_empty && every_live_reported;
    let report = |w: &ActorId, p: PartitionId| -> Option<Option<Held>> {
        live.get(w)
            .and_then(|v| v.held.as_ref())
            .map(|held| held.get(&p).copied())
    };
    // Alive, and confirms the role at the epoch (or has not reported: trusted until it does).
    let confirms = |w: &ActorId, p: PartitionId, role: Role, epoch: Epoch| {
        live.contains_key(w)
            && match report(w, p) {
                None => true,
                Some(held) => held.is_some_and(|h| h.role == role && h.epoch == epoch),
            }
    };
    let node = |w: &ActorId| live.get(w).map(|v| v.node.as_str()).unwrap_or("");
    let reporting: Vec<&ActorId> = workers
        .iter()
        .filter(|w| w.held.is_some())
        .map(|w| &w.id)
        .collect();

    let mut out = Plan {
        slots: Vec::with_capacity(current.len()),
        unconfirmed: workers.iter().filter(|w| w.held.is_none()).count(),
        ..Plan::default()
    };
    let mut load = Load::default();
    // Partitions waiting for a report: left as they are, no orders.
    let mut waiting = vec![false; current.len()];
    // Partitions whose assignment changes: new epoch, orders to both workers.
    let mut changed = vec![false; current.len()];

    // 1. Primaries.
    for (i, cur) in current.iter().enumerate() {
        let p = i as PartitionId;
        let mut slot = cur.clone();
        slot.primary = match &cur.primary {
            Some(w) if confirms(w, p, Role::Primary, cur.epoch) => Some(w.clone()),
            _ if cur
                .backup
                .as_ref()
                .is_some_and(|b| live.contains_key(b) && report(b, p).is_none()) =>
            {
                waiting[i] = true;
                None
            }
            // The backup of the table's epoch, with that epoch's snapshot, holds every write
            // acknowledged in it and before: no other copy can be newer, so it need not
            // wait for a silent worker. Unless a report shows a later epoch than the table's
            // (an order of an earlier master that came late).
            _ if cur.epoch > 0
                && cur.backup.as_ref().is_some_and(|b| {
                    report(b, p).flatten().is_some_and(|h| {
                        h.role == Role::Backup && h.epoch == cur.epoch && h.line == cur.epoch
                    })
                })
                && !workers.iter().any(|w| {
                    w.held
                        .as_ref()
                        .and_then(|held| held.get(&p))
                        .is_some_and(|h| h.epoch.max(h.line) > cur.epoch)
                }) =>
            {
                changed[i] = true;
                cur.backup.clone()
            }
            // A live worker that has not reported may hold a newer copy than any reported (the
            // primary of a master that just started, slow to answer): promoting an older
            // copy would lose the writes acknowledged on it.
            _ if !every_live_reported => {
                waiting[i] = true;
                None
            }
            _ => {
                changed[i] = true;
                let best = workers
                    .iter()
                    .filter_map(|w| Some((&w.id, w.held.as_ref()?.get(&p)?)))
                    .max_by_key(|(w, h)| {
                        let rank = match h.role {
                            Role::Primary => 2,
                            Role::Backup => 1,
                            Role::Spare => 0,
                        };
                        // The newest line's copy holds every acknowledged write; versions
                        // compare only along one line (a primary replaced without being
                        // told may have applied writes of its own past the new line's, none
                        // of them acknowledged). Ties go to the lowest id, for determinism.
                        (h.line, h.version, h.epoch, rank, std::cmp::Reverse(*w))
                    });
                match best {
                    Some((w, _)) => Some(w.clone()),
                    None if all_reported && !workers.is_empty() => {
                        let w = reporting
                            .iter()
                            .copied()
                            .min_by_key(|w| (load.primaries(w), load.total(w), *w))
                            .cloned();
                        if cur.epoch > 0
                            && let Some(w) = &w
                        {
                            out.notes.push(format!(
                                "partition {p}: no copy survives; it starts empty on worker {w}"
                            ));
                        }
                        w
                    }
                    None => {
                        waiting[i] = true;
                        None
                    }
                }
            }
        };
        if waiting[i] {
            changed[i] = false;
            slot.backup = slot.backup.filter(|b| live.contains_key(b));
        }
        if let Some(w) = &slot.primary {
            Load::add(&mut load.primaries, w, 1);
        }
        out.slots.push(slot);
    }

    // 2. Backups.
    for (i, cur) in current.iter().enumerate() {
        let p = i as PartitionId;
        if waiting[i] {
            if let Some(b) = &out.slots[i].backup {
                Load::add(&mut load.backups, b, 1);
            }
            continue;
        }
        let Some(primary) = out.slots[i].primary.clone() else {
            out.slots[i].backup = None;
            continue;
        };
        let backup = match &cur.backup {
            Some(b) if *b != primary && confirms(b, p, Role::Backup, cur.epoch) => Some(b.clone()),
            _ => {
                // Not kept (or there was none): a change, unless there is still none to have.
                changed[i] |= cur.backup.is_some();
                // Any live worker, a silent one too: a primary given no backup acknowledges
                // writes on its copy alone, which it may only do while no other worker
                // lives. One that reported first; then another node; then a worker that
                // holds a copy already (the previous layout survives a new master); then the
                // least loaded.
                let holds = |w: &ActorId| report(w, p).flatten().is_some();
                let silent = |w: &ActorId| report(w, p).is_none();
                let chosen = workers
                    .iter()
                    .map(|w| &w.id)
                    .filter(|w| **w != primary)
                    .min_by_key(|w| {
                        (
                            silent(w),
                            node(w) == node(&primary),
                            !holds(w),
                            load.total(w),
                            *w,
                        )
                    })
                    .cloned();
                changed[i] |= chosen.is_some();
                chosen
            }
        };
        if let Some(b) = &backup {
            Load::add(&mut load.backups, b, 1);
        }
        out.slots[i].backup = backup;
    }

    // 3. Balance: backups to the least loaded workers, then primaries to their backups.
    for (i, slot) in out.slots.iter_mut().enumerate() {
        let (Some(primary), Some(backup)) = (&slot.primary, &slot.backup) else {
            continue;
        };
        if waiting[i] {
            continue;
        }
        let same = |w: &ActorId| node(w) == node(primary);
        let Some(target) = reporting
            .iter()
            .copied()
            .filter(|w| *w != primary && *w != backup)
            .min_by_key(|w| (same(w), load.total(w), *w))
        else {
            continue;
        };
        let better_node = same(backup) && !same(target);
        let worse_node = !same(backup) && same(target);
        let (from, to) = (load.total(backup), load.total(target));
        // Separate nodes come first (one node's loss must not take both copies), then load.
        if better_node || (!worse_node && from >= to + 2) {
            let target = target.clone();
            Load::add(&mut load.backups, backup, -1);
            Load::add(&mut load.backups, &target, 1);
            slot.backup = Some(target);
            changed[i] = true;
        }
    }
    for (i, cur) in current.iter().enumerate() {
        let p = i as PartitionId;
        let slot = &mut out.slots[i];
        let (Some(primary), Some(backup)) = (slot.primary.clone(), slot.backup.clone()) else {
            continue;
        };
        if waiting[i] || changed[i] || load.primaries(&primary) < load.primaries(&backup) + 2 {
            continue;
        }
        let in_sync = match (report(&primary, p), report(&backup, p)) {
            (Some(Some(a)), Some(Some(b))) => {
                a.role == Role::Primary
                    && b.role == Role::Backup
                    && a.epoch == cur.epoch
                    && b.epoch == cur.epoch
                    && a.line == cur.epoch
                    && b.line == cur.epoch
                    && a.version == b.version
            }
            _ => false,
        };
        if in_sync {
            Load::add(&mut load.primaries, &primary, -1);
            Load::add(&mut load.backups, &primary, 1);
            Load::add(&mut load.primaries, &backup, 1);
            Load::add(&mut load.backups, &backup, -1);
            slot.primary = Some(backup);
            slot.backup = Some(primary);
            changed[i] = true;
        }
    }

    // 4. Epochs, orders, and copies no longer needed.
    for (i, cur) in current.iter().enumerate() {
        let p = i as PartitionId;
        if waiting[i] {
            out.unconfirmed += 1;
            continue;
        }
        let holders: Vec<(&ActorId, Held)> = workers
            .iter()
            .filter_map(|w| Some((&w.id, *w.held.as_ref()?.get(&p)?)))
            .collect();
        let newest = holders.iter().map(|(_, h)| h.epoch).max().unwrap_or(0);
        let slot = &mut out.slots[i];
        let Some(primary) = slot.primary.clone() else {
            continue;
        };
        if changed[i] || newest > cur.epoch {
            slot.epoch = cur.epoch.max(newest) + 1;
            out.commands.push(Command::Assign {
                worker: primary,
                partition: p,
                epoch: slot.epoch,
                role: Role::Primary,
                backup: slot.backup.clone(),
            });
            if let Some(backup) = &slot.backup {
                out.commands.push(Command::Assign {
                    worker: backup.clone(),
                    partition: p,
                    epoch: slot.epoch,
                    role: Role::Backup,
                    backup: None,
                });
            }
            out.unconfirmed += 1;
            continue;
        }
        let Some(backup) = &slot.backup else {
            if report(&primary, p).is_none() {
                out.unconfirmed += 1;
            }
            continue;
        };
        // Versions compare only along one line: a backup still waiting for its snapshot
        // may hold a fork at the same count.
        let synced = match (report(&primary, p), report(backup, p)) {
            (Some(Some(a)), Some(Some(b))) => {
                a.line == cur.epoch && b.line == cur.epoch && a.version == b.version
            }
            _ => false,
        };
        if !synced {
            // The backup may still wait for its snapshot, or writes are in flight.
            out.unconfirmed += 1;
            continue;
        }
        let keep: BTreeSet<&ActorId> = [&primary, backup].into_iter().collect();
        for (w, _) in holders.iter().filter(|(w, _)| !keep.contains(w)) {
            out.commands.push(Command::Drop {
                worker: (*w).clone(),
                partition: p,
                epoch: slot.epoch,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    /// Worker `seq` on node `n{node}`.
    fn id(node: u32, seq: u64) -> ActorId {
        ActorId::new(NodeId::new(format!("n{node}"), 1), seq)
    }

    fn view(w: &ActorId, held: Option<Vec<(PartitionId, Role, Epoch, u64)>>) -> WorkerView {
        WorkerView {
            id: w.clone(),
            node: w.node().name().to_owned(),
            held: held.map(|h| {
                h.into_iter()
                    .map(|(p, role, epoch, version)| {
                        (
                            p,
                            Held {
                                role,
                                epoch,
                                version,
                                line: epoch,
                            },
                        )
                    })
                    .collect()
            }),
        }
    }

    /// A partition with a primary and a backup at `epoch`.
    fn paired(primary: &ActorId, backup: &ActorId, epoch: Epoch) -> Slot {
        Slot {
            primary: Some(primary.clone()),
            backup: Some(backup.clone()),
            epoch,
        }
    }

    /// `view` with its copy of `partition` holding the line of epoch `line` (a backup waiting
    /// for the snapshot of its epoch holds an earlier one).
    fn holding_line(mut view: WorkerView, partition: PartitionId, line: Epoch) -> WorkerView {
        if let Some(held) = view.held.as_mut().and_then(|h| h.get_mut(&partition)) {
            held.line = line;
        }
        view
    }

    /// What each worker holds once `plan`'s orders are carried out (versions all `version`).
    fn apply(
        workers: &[ActorId],
        before: &[WorkerView],
        plan: &Plan,
        version: u64,
    ) -> Vec<WorkerView> {
        workers
            .iter()
            .map(|w| {
                let mut held: BTreeMap<PartitionId, Held> = before
                    .iter()
                    .find(|v| v.id == *w)
                    .and_then(|v| v.held.clone())
                    .unwrap_or_default();
                for c in &plan.commands {
                    match c {
                        Command::Assign {
                            worker,
                            partition,
                            epoch,
                            role,
                            ..
                        } if worker == w => {
                            held.insert(
                                *partition,
                                Held {
                                    role: *role,
                                    epoch: *epoch,
                                    version,
                                    line: *epoch,
                                },
                            );
                        }
                        Command::Drop {
                            worker, partition, ..
                        } if worker == w => {
                            held.remove(partition);
                        }
                        _ => {}
                    }
                }
                for h in held.values_mut() {
                    h.version = version;
                }
                WorkerView {
                    id: w.clone(),
                    node: w.node().name().to_owned(),
                    held: Some(held),
                }
            })
            .collect()
    }

    /// Plans and carries out rounds until nothing changes; returns the final plan.
    fn settle(slots: Vec<Slot>, mut views: Vec<WorkerView>) -> (Plan, Vec<WorkerView>) {
        let ids: Vec<ActorId> = views.iter().map(|v| v.id.clone()).collect();
        let mut slots = slots;
        for _ in 0..20 {
            let plan = plan(&slots, &views, true);
            let done = plan.commands.is_empty() && plan.unconfirmed == 0;
            views = apply(&ids, &views, &plan, 7);
            slots = plan.slots.clone();
            if done {
                return (plan, views);
            }
        }
        panic!("the plan never settled");
    }

    fn check_placement(slots: &[Slot]) {
        for (p, s) in slots.iter().enumerate() {
            let (primary, backup) = (s.primary.as_ref().unwrap(), s.backup.as_ref().unwrap());
            assert_ne!(primary, backup, "partition {p}");
            assert_ne!(primary.node(), backup.node(), "partition {p} on one node");
        }
    }

    fn counts(slots: &[Slot], w: &ActorId) -> (usize, usize) {
        let primaries = slots
            .iter()
            .filter(|s| s.primary.as_ref() == Some(w))
            .count();
        let backups = slots
            .iter()
            .filter(|s| s.backup.as_ref() == Some(w))
            .count();
        (primaries, backups)
    }

    #[test]
    fn a_fresh_table_is_spread_evenly_across_workers_and_nodes() {
        let ws = [id(1, 1), id(2, 1), id(3, 1)];
        let views: Vec<_> = ws.iter().map(|w| view(w, Some(vec![]))).collect();
        let plan = plan(&vec![Slot::default(); 16], &views, true);
        check_placement(&plan.slots);
        for w in &ws {
            let (primaries, backups) = counts(&plan.slots, w);
            assert!((5..=6).contains(&primaries), "{w}: {primaries} primaries");
            assert!((5..=6).contains(&backups), "{w}: {backups} backups");
        }
        assert!(plan.slots.iter().all(|s| s.epoch == 1));
        assert_eq!(plan.commands.len(), 32);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn nothing_is_started_empty_while_a_worker_is_silent() {
        let ws = [id(1, 1), id(2, 1)];
        let views = vec![view(&ws[0], Some(vec![])), view(&ws[1], None)];
        let plan = plan(&vec![Slot::default(); 4], &views, true);
        assert!(plan.commands.is_empty());
        assert!(plan.slots.iter().all(|s| s.primary.is_none()));
    }

    #[test]
    fn the_backup_of_a_dead_primary_is_promoted_and_gets_a_backup() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&a, &b, 3)];
        // a is gone.
        let views = vec![
            view(&b, Some(vec![(0, Role::Backup, 3, 10)])),
            view(&c, Some(vec![])),
        ];
        let plan = plan(&slots, &views, true);
        assert_eq!(plan.slots[0].primary, Some(b.clone()));
        assert_eq!(plan.slots[0].backup, Some(c.clone()));
        assert_eq!(plan.slots[0].epoch, 4);
        assert!(plan.commands.contains(&Command::Assign {
            worker: b.clone(),
            partition: 0,
            epoch: 4,
            role: Role::Primary,
            backup: Some(c.clone()),
        }));
        assert!(plan.commands.contains(&Command::Assign {
            worker: c,
            partition: 0,
            epoch: 4,
            role: Role::Backup,
            backup: None,
        }));
    }

    #[test]
    fn nothing_is_started_empty_unless_allowed() {
        let (a, b) = (id(1, 1), id(2, 1));
        let views = vec![
            view(&a, Some(vec![(0, Role::Primary, 2, 5)])),
            view(&b, Some(vec![(0, Role::Backup, 2, 5)])),
        ];
        let plan = plan(&vec![Slot::default(); 2], &views, false);
        assert_eq!(plan.slots[0].primary, Some(a));
        assert_eq!(plan.slots[1].primary, None);
        assert_eq!(plan.commands.len(), 2, "{:?}", plan.commands);
    }

    #[test]
    fn a_dead_primary_waits_for_its_silent_backup() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&a, &b, 3)];
        let views = vec![view(&b, None), view(&c, Some(vec![]))];
        let plan = plan(&slots, &views, true);
        assert!(plan.commands.is_empty());
        assert_eq!(plan.slots[0].primary, None);
        assert_eq!(plan.slots[0].backup, Some(b));
        assert_eq!(plan.slots[0].epoch, 3);
    }

    #[test]
    fn a_fresh_master_waits_for_every_live_worker_before_it_promotes_a_copy() {
        // c is the partition's primary (version 10) and slow to answer; b holds an older copy.
        let (b, c) = (id(2, 1), id(3, 1));
        let views = vec![
            view(&b, Some(vec![(0, Role::Backup, 4, 5)])),
            view(&c, None),
        ];
        let waiting = plan(&[Slot::default()], &views, true);
        assert_eq!(
            waiting.slots[0].primary, None,
            "the older copy was promoted"
        );
        assert!(waiting.commands.is_empty());
        // Once c reports, its newer copy wins.
        let views = vec![
            view(&b, Some(vec![(0, Role::Backup, 4, 5)])),
            view(&c, Some(vec![(0, Role::Primary, 5, 10)])),
        ];
        let plan = plan(&[Slot::default()], &views, true);
        assert_eq!(plan.slots[0].primary, Some(c));
        assert!(plan.slots[0].epoch > 5);
    }

    #[test]
    fn a_fresh_master_rebuilds_from_reports_and_the_newest_current_copy_wins() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let views = vec![
            // Partition 0: a was primary and b backup at epoch 5, in sync.
            // Partition 1: c got a new empty backup role at epoch 8 before b (backup at 7,
            // version 30) was promoted: c's copy waits for its snapshot, so b's wins.
            view(&a, Some(vec![(0, Role::Primary, 5, 12)])),
            view(
                &b,
                Some(vec![(0, Role::Backup, 5, 12), (1, Role::Backup, 7, 30)]),
            ),
            holding_line(view(&c, Some(vec![(1, Role::Backup, 8, 0)])), 1, 0),
        ];
        let plan = plan(&vec![Slot::default(); 2], &views, true);
        assert_eq!(plan.slots[0].primary, Some(a));
        assert_eq!(plan.slots[0].backup.as_ref(), Some(&b));
        assert_eq!(plan.slots[0].epoch, 6);
        assert_eq!(plan.slots[1].primary, Some(b));
        assert_eq!(plan.slots[1].epoch, 9, "above every reported epoch");
        assert!(plan.notes.is_empty());
    }

    /// A silent worker holds up no promotion of a backup that holds its epoch's snapshot: no
    /// copy anywhere can be newer.
    #[test]
    fn a_current_backup_is_promoted_without_waiting_for_a_silent_worker() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&a, &b, 4)];
        let views = vec![
            view(&b, Some(vec![(0, Role::Backup, 4, 9)])),
            view(&c, None),
        ];
        let promoted = plan(&slots, &views, true);
        assert_eq!(promoted.slots[0].primary, Some(b.clone()));
        assert_eq!(promoted.slots[0].epoch, 5);
        // Its backup is the silent worker, alive as far as the master knows: a primary
        // without one would acknowledge writes on one copy while another worker lives.
        assert_eq!(promoted.slots[0].backup, Some(c.clone()));
        assert!(promoted.commands.contains(&Command::Assign {
            worker: b.clone(),
            partition: 0,
            epoch: 5,
            role: Role::Primary,
            backup: Some(c.clone()),
        }));
        // Still waiting for its snapshot, it could be behind a copy the silent worker has.
        let views = vec![
            holding_line(view(&b, Some(vec![(0, Role::Backup, 4, 0)])), 0, 3),
            view(&c, None),
        ];
        let waiting = plan(&slots, &views, true);
        assert_eq!(waiting.slots[0].primary, None);
        assert!(waiting.commands.is_empty());
    }

    /// A report of a later epoch than the table's (an order of an earlier master that came
    /// late) may hold a newer line: the table's backup is not promoted blindly then.
    #[test]
    fn a_later_epoch_reported_holds_up_the_quick_promotion() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&a, &b, 4)];
        let views = vec![
            view(&b, Some(vec![(0, Role::Backup, 4, 9)])),
            view(&c, Some(vec![(0, Role::Primary, 5, 12)])),
        ];
        let plan = plan(&slots, &views, true);
        assert_eq!(plan.slots[0].primary, Some(c));
    }

    /// Balancing made the primary p the backup of c at a new epoch; c died before p had its
    /// snapshot. p still holds its own line, newer than that of a former backup that was not
    /// dropped yet: p is promoted, and no acknowledged write is lost.
    #[test]
    fn a_primary_made_backup_keeps_its_line_until_its_snapshot() {
        let (p, c, old) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&c, &p, 6)];
        let views = vec![
            holding_line(view(&p, Some(vec![(0, Role::Backup, 6, 20)])), 0, 5),
            view(&old, Some(vec![(0, Role::Backup, 4, 15)])),
        ];
        let plan = plan(&slots, &views, true);
        assert_eq!(plan.slots[0].primary, Some(p));
    }

    /// A backup still waiting for its snapshot holds an older line, perhaps a fork of a
    /// stale primary's own writes, which may count as many writes as the current line: an
    /// equal version is no proof it holds the same data. Neither the primary hands over to
    /// it, nor are other copies dropped.
    #[test]
    fn equal_versions_of_different_lines_are_not_in_sync() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&b, &a, 5), paired(&b, &c, 5), paired(&b, &c, 5)];
        let views = vec![
            holding_line(view(&a, Some(vec![(0, Role::Backup, 5, 11)])), 0, 3),
            view(
                &b,
                Some(vec![
                    (0, Role::Primary, 5, 11),
                    (1, Role::Primary, 5, 2),
                    (2, Role::Primary, 5, 2),
                ]),
            ),
            holding_line(
                view(
                    &c,
                    Some(vec![
                        (0, Role::Backup, 4, 11),
                        (1, Role::Backup, 5, 2),
                        (2, Role::Backup, 5, 2),
                    ]),
                ),
                0,
                4,
            ),
        ];
        let plan = plan(&slots, &views, true);
        assert_eq!(plan.slots[0].primary, Some(b));
        assert!(
            !plan
                .commands
                .iter()
                .any(|c| matches!(c, Command::Drop { partition: 0, .. })),
            "{:?}",
            plan.commands
        );
    }

    /// A primary replaced without being told (its order lost) applied writes of its own past
    /// the new line's before its backup's refusal told it: a higher version, but none of it
    /// acknowledged. The new line's backup holds what was acknowledged, and is promoted.
    #[test]
    fn a_superseded_primarys_own_writes_never_outrank_the_newer_line() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&b, &c, 4)];
        // b (primary at 4) died; a was primary at 3 and is a spare now.
        let views = vec![
            view(&a, Some(vec![(0, Role::Spare, 3, 12)])),
            view(&c, Some(vec![(0, Role::Backup, 4, 11)])),
        ];
        let plan = plan(&slots, &views, true);
        assert_eq!(plan.slots[0].primary, Some(c));
        assert_eq!(plan.slots[0].epoch, 5);
    }

    #[test]
    fn a_lost_partition_restarts_empty_and_says_so() {
        let (a, c) = (id(1, 1), id(3, 1));
        let slots = vec![Slot {
            primary: Some(a),
            backup: None,
            epoch: 2,
        }];
        let plan = plan(&slots, &[view(&c, Some(vec![]))], true);
        assert_eq!(plan.slots[0].primary, Some(c));
        assert_eq!(plan.slots[0].epoch, 3);
        assert_eq!(plan.notes.len(), 1);
    }

    #[test]
    fn a_settled_table_needs_no_orders_and_unneeded_copies_are_dropped() {
        let ws = [id(1, 1), id(2, 1), id(3, 1)];
        let views: Vec<_> = ws.iter().map(|w| view(w, Some(vec![]))).collect();
        let (plan, views) = settle(vec![Slot::default(); 8], views);
        check_placement(&plan.slots);
        // Every worker holds exactly its primaries and backups: nothing extra is left.
        for v in &views {
            let (primaries, backups) = counts(&plan.slots, &v.id);
            assert_eq!(v.held.as_ref().unwrap().len(), primaries + backups);
        }
    }

    #[test]
    fn a_new_worker_takes_its_share_of_backups_and_primaries() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        // Only a and b at first: 16 partitions split 8/8.
        let views = vec![view(&a, Some(vec![])), view(&b, Some(vec![]))];
        let (plan, mut views) = settle(vec![Slot::default(); 16], views);
        views.push(view(&c, Some(vec![])));
        let (plan, views) = settle(plan.slots, views);
        check_placement(&plan.slots);
        for w in [&a, &b, &c] {
            let (primaries, backups) = counts(&plan.slots, w);
            assert!((4..=7).contains(&primaries), "{w}: {primaries} primaries");
            assert!(
                (9..=12).contains(&(primaries + backups)),
                "{w}: {primaries}+{backups}"
            );
        }
        for v in &views {
            let (primaries, backups) = counts(&plan.slots, &v.id);
            assert_eq!(v.held.as_ref().unwrap().len(), primaries + backups);
        }
    }

    #[test]
    fn a_moved_backup_stays_as_a_spare_until_the_new_one_is_in_sync() {
        let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
        let slots = vec![paired(&a, &c, 4)];
        // b held the partition before (a spare); c is the backup but still behind.
        let views = vec![
            view(&a, Some(vec![(0, Role::Primary, 4, 9)])),
            view(&b, Some(vec![(0, Role::Backup, 3, 6)])),
            view(&c, Some(vec![(0, Role::Backup, 4, 0)])),
        ];
        let behind = plan(&slots, &views, true);
        assert!(behind.commands.is_empty(), "{:?}", behind.commands);
        assert_eq!(behind.unconfirmed, 1);
        let views = vec![
            view(&a, Some(vec![(0, Role::Primary, 4, 9)])),
            view(&b, Some(vec![(0, Role::Backup, 3, 6)])),
            view(&c, Some(vec![(0, Role::Backup, 4, 9)])),
        ];
        let synced = plan(&slots, &views, true);
        assert_eq!(synced.unconfirmed, 0);
        assert_eq!(
            synced.commands,
            vec![Command::Drop {
                worker: b,
                partition: 0,
                epoch: 4
            }]
        );
    }

    #[test]
    fn four_workers_on_three_nodes_keep_each_pair_on_two_nodes() {
        // Two workers share node 2.
        let ws = [id(1, 1), id(2, 1), id(2, 2), id(3, 1)];
        let views: Vec<_> = ws.iter().map(|w| view(w, Some(vec![]))).collect();
        let (plan, _) = settle(vec![Slot::default(); 8], views);
        check_placement(&plan.slots);
        for w in &ws {
            let (primaries, backups) = counts(&plan.slots, w);
            assert_eq!(primaries, 2, "{w}");
            assert!(
                (3..=5).contains(&(primaries + backups)),
                "{w}: {primaries}+{backups}"
            );
        }
    }

    #[test]
    fn a_worker_that_disagrees_with_the_table_gets_a_new_epoch() {
        let (a, b) = (id(1, 1), id(2, 1));
        let slots = vec![paired(&a, &b, 4)];
        // a missed its assignment; b holds an epoch the table does not know (an older master).
        let views = vec![
            view(&a, Some(vec![(0, Role::Backup, 3, 9)])),
            view(&b, Some(vec![(0, Role::Backup, 6, 9)])),
        ];
        let plan = plan(&slots, &views, true);
        let slot = &plan.slots[0];
        assert_eq!(slot.epoch, 7);
        assert_eq!(plan.commands.len(), 2, "{:?}", plan.commands);
        assert_ne!(slot.primary, slot.backup);
    }

    #[test]
    fn pairs_move_apart_when_a_worker_on_another_node_joins() {
        // Two workers on node 2 hold everything; then one on node 3 joins.
        let (a, b, c) = (id(2, 1), id(2, 2), id(3, 1));
        let views = vec![view(&a, Some(vec![])), view(&b, Some(vec![]))];
        let (plan, mut views) = settle(vec![Slot::default(); 8], views);
        assert!(plan.slots.iter().all(|s| s.backup.is_some()));
        views.push(view(&c, Some(vec![])));
        let (plan, _) = settle(plan.slots, views);
        check_placement(&plan.slots);
        let (primaries, backups) = counts(&plan.slots, &c);
        assert_eq!(
            primaries + backups,
            8,
            "c holds one copy of every partition"
        );
        assert!(
            primaries >= 2,
            "c takes a share of the primaries: {primaries}"
        );
    }

    #[test]
    fn one_worker_holds_everything_without_backups() {
        let a = id(1, 1);
        let (plan, _) = settle(vec![Slot::default(); 4], vec![view(&a, Some(vec![]))]);
        assert!(plan.slots.iter().all(|s| s.primary.as_ref() == Some(&a)));
        assert!(plan.slots.iter().all(|s| s.backup.is_none()));
    }
}
