//! The supervisor's decisions, as pure code: given what happened and the time, what to stop,
//! what to start, after how long, and when to give up. No I/O and no clock of its own; the
//! `Supervisor` actor feeds it events and carries out its decisions.
//!
//! # Invariants
//!
//! - Children keep the order they were added in; `stop` lists are in reverse of that order and
//!   `start` lists in that order.
//! - A restart decision counts one restart against the intensity; the supervisor escalates
//!   exactly when more than `max_restarts` restarts fall within the last `period`. Children
//!   that ran on a node that died count as one restart within the period: one failure,
//!   however many children it took (see [`RestartWindow`]).
//! - Only running children are ever listed to stop; temporary children are never restarted.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ensemble_runtime::{ExitReason, NodeId};
use serde::{Deserialize, Serialize};

use crate::spec::{Backoff, Intensity, Restart, Strategy};

/// Time since the supervisor started.
pub(crate) type Time = Duration;

/// Where a child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildState {
    /// An instance is running.
    Running,
    /// It ended and will be started again (possibly after a backoff delay).
    Restarting,
    /// It ended (or was terminated) and will not be restarted unless asked.
    Stopped,
    /// It is to run on another node, but no node can take it now; it is started when a node
    /// joins or room frees up (tried every second). Not a failure: it does not count
    /// against the restart intensity.
    Unplaced,
}

/// What the supervisor must do after a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing: the child stays stopped (a transient child that ended cleanly), or the exit
    /// was not of a running child.
    Nothing,
    /// A temporary child ended: forget its spec.
    Forget(String),
    /// Stop `stop` (in this order), forget `forget` (temporary children among them), then after
    /// `delay` start `start` (in this order).
    Restart {
        stop: Vec<String>,
        forget: Vec<String>,
        start: Vec<String>,
        delay: Duration,
    },
    /// Too many restarts: stop every child and exit.
    Escalate { restarts: u32, period: Duration },
}

#[derive(Debug)]
struct Child {
    id: String,
    restart: Restart,
    backoff: Option<Backoff>,
    state: ChildState,
    /// Restarts in a row without a stable run, for the backoff.
    failures: u32,
    started_at: Time,
}

#[derive(Debug)]
pub(crate) struct Core {
    strategy: Strategy,
    intensity: Intensity,
    children: Vec<Child>,
    /// Where each child is in `children`: supervisors with thousands of dynamic children look
    /// children up on every exit. A removal moves only the positions of the children after
    /// it: every temporary child's end removes it, and rebuilding the whole map then made
    /// many temporary children ending take time quadratic in their number.
    positions: HashMap<String, usize>,
    /// The restarts within the current window.
    restarts: RestartWindow,
}

/// The restarts counted against a restart intensity within its sliding window.
///
/// A node that dies ends every child placed on it at once, each with `NodeDown` of that node.
/// That is one failure, not one per child: counted per child, a supervisor with the default
/// intensity (1 in 5 s) would give up on two children of a dead node instead of starting them
/// elsewhere. So the end of a child that ran on node `n`, because `n` died, counts only if
/// no restart for `n`'s death is in the window already. Only children that ran there: a child
/// elsewhere that ends with `NodeDown(n)` (it linked to an actor of `n`, and does so again
/// each time it starts) fails like any other, or it would restart without end. A node id
/// names the node's incarnation, so a node that comes back and dies again counts again.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    /// When each counted restart happened, oldest first, and the node whose death it was for.
    restarts: VecDeque<(Time, Option<NodeId>)>,
}

impl RestartWindow {
    /// Counts a restart at `now`, for the death of node `died` if that is why the child
    /// ended (unless that death is counted already), forgets the restarts older than
    /// `period`, and returns how many the window holds.
    pub(crate) fn count(&mut self, died: Option<&NodeId>, now: Time, period: Duration) -> usize {
        while let Some((oldest, _)) = self.restarts.front() {
            if now.saturating_sub(*oldest) >= period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let counted = died.is_some()
            && self
                .restarts
                .iter()
                .any(|(_, earlier)| earlier.as_ref() == died);
        if !counted {
            self.restarts.push_back((now, died.cloned()));
        }
        self.restarts.len()
    }
}

/// The node whose death ended an actor that ran on `ran_on` and ended with `reason`: `Some`
/// only for `NodeDown` of that very node.
pub(crate) fn died_with_its_node<'a>(
    ran_on: &NodeId,
    reason: &'a ExitReason,
) -> Option<&'a NodeId> {
    match reason {
        ExitReason::NodeDown(node) if node == ran_on => Some(node),
        _ => None,
    }
}

impl Core {
    pub(crate) fn new(strategy: Strategy, intensity: Intensity) -> Self {
        Self {
            strategy,
            intensity,
            children: Vec::new(),
            positions: HashMap::new(),
            restarts: RestartWindow::default(),
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// Brings the positions of the children from `from` on up to date, after children before
    /// them were removed.
    fn reindex_from(&mut self, from: usize) {
        for (i, child) in self.children.iter().enumerate().skip(from) {
            if let Some(at) = self.positions.get_mut(child.id.as_str()) {
                *at = i;
            }
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index(id).is_some()
    }

    /// Adds a child at the end, stopped; `started` marks it running.
    pub(crate) fn add(&mut self, id: &str, restart: Restart, backoff: Option<Backoff>) {
        debug_assert!(!self.contains(id), "duplicate child id {id}");
        self.positions.insert(id.to_owned(), self.children.len());
        self.children.push(Child {
            id: id.to_owned(),
            restart,
            backoff,
            state: ChildState::Stopped,
            failures: 0,
            started_at: Duration::ZERO,
        });
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(i) = self.positions.remove(id) {
            self.children.remove(i);
            self.reindex_from(i);
        }
    }

    pub(crate) fn started(&mut self, id: &str, now: Time) {
        if let Some(i) = self.index(id) {
            let child = &mut self.children[i];
            child.state = ChildState::Running;
            child.started_at = now;
        }
    }

    /// The supervisor stopped the child on request (not a failure).
    pub(crate) fn stopped(&mut self, id: &str) {
        if let Some(i) = self.index(id) {
            self.children[i].state = ChildState::Stopped;
        }
    }

    pub(crate) fn state(&self, id: &str) -> Option<ChildState> {
        self.index(id).map(|i| self.children[i].state)
    }

    /// Child ids in start order.
    pub(crate) fn ids(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.children.iter().map(|c| c.id.as_str())
    }

    /// A running child ended with `reason` at `now`; `u` is a random sample in `0.0..1.0` for
    /// the backoff jitter.
    pub(crate) fn exited(&mut self, id: &str, reason: &ExitReason, now: Time, u: f64) -> Decision {
        self.ended(id, reason, None, now, u)
    }

    /// A running child ended because the node it ran on, `node`, died (with
    /// `ExitReason::NodeDown(node)`): as [`Core::exited`], but the children one death took
    /// count as one restart ([`RestartWindow`]).
    pub(crate) fn node_died(&mut self, id: &str, node: &NodeId, now: Time, u: f64) -> Decision {
        self.ended(id, &ExitReason::NodeDown(node.clone()), Some(node), now, u)
    }

    fn ended(
        &mut self,
        id: &str,
        reason: &ExitReason,
        died: Option<&NodeId>,
        now: Time,
        u: f64,
    ) -> Decision {
        let Some(i) = self.index(id) else {
            return Decision::Nothing;
        };
        if self.children[i].state != ChildState::Running {
            return Decision::Nothing;
        }
        let wanted = match self.children[i].restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_clean(),
            Restart::Temporary => false,
        };
        if !wanted {
            if self.children[i].restart == Restart::Temporary {
                self.remove(id);
                return Decision::Forget(id.to_owned());
            }
            self.children[i].state = ChildState::Stopped;
            return Decision::Nothing;
        }

        if self.restarts.count(died, now, self.intensity.period)
            > self.intensity.max_restarts as usize
        {
            return Decision::Escalate {
                restarts: self.intensity.max_restarts,
                period: self.intensity.period,
            };
        }

        let child = &mut self.children[i];
        let stable = now.saturating_sub(child.started_at);
        let delay = match child.backoff {
            Some(backoff) => {
                child.failures = if stable >= backoff.reset_after {
                    1
                } else {
                    child.failures + 1
                };
                backoff.delay(child.failures, u)
            }
            None => Duration::ZERO,
        };
        child.state = ChildState::Restarting;

        // The children the strategy takes down with it: none, all others, or those after it.
        let affected = match self.strategy {
            Strategy::OneForOne => i..i,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => i + 1..self.children.len(),
        };
        let mut stop = Vec::new();
        let mut forget = Vec::new();
        for j in affected.clone().rev() {
            let other = &mut self.children[j];
            if j == i {
                continue;
            }
            if other.state == ChildState::Running {
                stop.push(other.id.clone());
            }
            if other.restart == Restart::Temporary {
                forget.push(other.id.clone());
            } else {
                other.state = ChildState::Restarting;
            }
        }
        let first = affected.start.min(i);
        let start = self.children[first..affected.end.max(i + 1)]
            .iter()
            .filter(|c| c.restart != Restart::Temporary || c.id == id)
            .map(|c| c.id.clone())
            .collect();
        if !forget.is_empty() {
            let from = forget
                .iter()
                .filter_map(|id| self.positions.remove(id))
                .min()
                .unwrap_or(0);
            self.children.retain(|c| !forget.contains(&c.id));
            self.reindex_from(from);
        }
        Decision::Restart {
            stop,
            forget,
            start,
            delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn core(strategy: Strategy, max_restarts: u32, children: &[(&str, Restart)]) -> Core {
        let mut core = Core::new(
            strategy,
            Intensity {
                max_restarts,
                period: 1000 * MS,
            },
        );
        for (id, restart) in children {
            core.add(id, *restart, None);
            core.started(id, Duration::ZERO);
        }
        core
    }

    fn crash() -> ExitReason {
        ExitReason::Failed("crash".into())
    }

    fn restart(stop: &[&str], forget: &[&str], start: &[&str]) -> Decision {
        Decision::Restart {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            forget: forget.iter().map(|s| s.to_string()).collect(),
            start: start.iter().map(|s| s.to_string()).collect(),
            delay: Duration::ZERO,
        }
    }

    use Restart::{Permanent as P, Temporary as Tm, Transient as Tr};

    #[test]
    fn one_for_one_restarts_only_the_child() {
        let mut c = core(Strategy::OneForOne, 10, &[("a", P), ("b", P), ("c", P)]);
        assert_eq!(c.exited("b", &crash(), MS, 0.0), restart(&[], &[], &["b"]));
        assert_eq!(c.state("b"), Some(ChildState::Restarting));
        assert_eq!(c.state("a"), Some(ChildState::Running));
    }

    #[test]
    fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() {
        let mut c = core(Strategy::OneForAll, 10, &[("a", P), ("b", Tr), ("c", P)]);
        assert_eq!(
            c.exited("b", &crash(), MS, 0.0),
            restart(&["c", "a"], &[], &["a", "b", "c"])
        );
    }

    #[test]
    fn rest_for_one_takes_down_the_later_children_only() {
        let mut c = core(
            Strategy::RestForOne,
            10,
            &[("a", P), ("b", P), ("c", P), ("d", P)],
        );
        assert_eq!(
            c.exited("b", &crash(), MS, 0.0),
            restart(&["d", "c"], &[], &["b", "c", "d"])
        );
        assert_eq!(c.state("a"), Some(ChildState::Running));
    }

    #[test]
    fn temporary_children_are_forgotten_not_restarted() {
        let mut c = core(Strategy::OneForAll, 10, &[("a", P), ("t", Tm), ("c", P)]);
        assert_eq!(
            c.exited("t", &crash(), MS, 0.0),
            Decision::Forget("t".into())
        );
        assert!(!c.contains("t"));
        let mut c = core(Strategy::OneForAll, 10, &[("a", P), ("t", Tm), ("c", P)]);
        assert_eq!(
            c.exited("c", &crash(), MS, 0.0),
            restart(&["t", "a"], &["t"], &["a", "c"])
        );
        assert!(!c.contains("t"));
    }

    #[test]
    fn children_after_a_removed_one_are_still_found() {
        let mut c = core(
            Strategy::RestForOne,
            10,
            &[("a", P), ("b", Tm), ("c", P), ("d", Tm), ("e", P)],
        );
        // A temporary child in the middle ends: forgotten.
        assert_eq!(
            c.exited("b", &crash(), MS, 0.0),
            Decision::Forget("b".into())
        );
        assert_eq!(c.ids().collect::<Vec<_>>(), ["a", "c", "d", "e"]);
        // The children after it moved, and are still found where they are.
        assert_eq!(
            c.exited("c", &crash(), MS, 0.0),
            restart(&["e", "d"], &["d"], &["c", "e"])
        );
        assert_eq!(c.ids().collect::<Vec<_>>(), ["a", "c", "e"]);
        c.started("c", 2 * MS);
        c.started("e", 2 * MS);
        c.remove("a");
        assert!(!c.contains("a") && !c.contains("b") && !c.contains("d"));
        assert_eq!(c.ids().collect::<Vec<_>>(), ["c", "e"]);
        assert_eq!(
            c.exited("e", &crash(), 3 * MS, 0.0),
            restart(&[], &[], &["e"])
        );
        assert_eq!(c.state("e"), Some(ChildState::Restarting));
        assert_eq!(c.state("c"), Some(ChildState::Running));
        // A child added after removals goes at the end, and is found there.
        c.add("f", P, None);
        c.started("f", 4 * MS);
        assert_eq!(
            c.exited("c", &crash(), 5 * MS, 0.0),
            restart(&["f"], &[], &["c", "e", "f"])
        );
    }

    #[test]
    fn transient_children_restart_only_after_abnormal_exits() {
        let mut c = core(Strategy::OneForOne, 10, &[("a", Tr)]);
        assert_eq!(
            c.exited("a", &ExitReason::Normal, MS, 0.0),
            Decision::Nothing
        );
        assert_eq!(c.state("a"), Some(ChildState::Stopped));
        c.started("a", 2 * MS);
        assert_eq!(
            c.exited("a", &ExitReason::Shutdown, 3 * MS, 0.0),
            Decision::Nothing
        );
        c.started("a", 4 * MS);
        assert_eq!(
            c.exited("a", &ExitReason::Killed, 5 * MS, 0.0),
            restart(&[], &[], &["a"])
        );
    }

    #[test]
    fn permanent_children_restart_after_normal_exits_too() {
        let mut c = core(Strategy::OneForOne, 10, &[("a", P)]);
        assert_eq!(
            c.exited("a", &ExitReason::Normal, MS, 0.0),
            restart(&[], &[], &["a"])
        );
    }

    #[test]
    fn exits_of_children_not_running_are_ignored() {
        let mut c = core(Strategy::OneForOne, 10, &[("a", P)]);
        assert_eq!(c.exited("a", &crash(), MS, 0.0), restart(&[], &[], &["a"]));
        // Still restarting: a second exit report of the old instance changes nothing.
        assert_eq!(c.exited("a", &crash(), 2 * MS, 0.0), Decision::Nothing);
        assert_eq!(c.exited("nobody", &crash(), 2 * MS, 0.0), Decision::Nothing);
    }

    #[test]
    fn intensity_allows_max_restarts_per_period_then_escalates() {
        let mut c = core(Strategy::OneForOne, 2, &[("a", P)]);
        for t in [0, 100] {
            assert!(matches!(
                c.exited("a", &crash(), t * MS, 0.0),
                Decision::Restart { .. }
            ));
            c.started("a", t * MS);
        }
        assert_eq!(
            c.exited("a", &crash(), 999 * MS, 0.0),
            Decision::Escalate {
                restarts: 2,
                period: 1000 * MS
            }
        );
    }

    #[test]
    fn restarts_older_than_the_period_no_longer_count() {
        let mut c = core(Strategy::OneForOne, 1, &[("a", P)]);
        assert!(matches!(
            c.exited("a", &crash(), Duration::ZERO, 0.0),
            Decision::Restart { .. }
        ));
        c.started("a", MS);
        assert!(matches!(
            c.exited("a", &crash(), 1000 * MS, 0.0),
            Decision::Restart { .. }
        ));
    }

    fn node_down(name: &str, incarnation: u64) -> ExitReason {
        ExitReason::NodeDown(NodeId::new(name, incarnation))
    }

    #[test]
    fn children_of_one_dead_node_count_as_one_restart() {
        let mut c = core(Strategy::OneForOne, 1, &[("a", P), ("b", P), ("c", P)]);
        for id in ["a", "b", "c"] {
            assert_eq!(
                c.node_died(id, &NodeId::new("n", 1), MS, 0.0),
                restart(&[], &[], &[id]),
                "{id}"
            );
        }
        // Any other failure within the period is one more restart: over the intensity.
        c.started("a", 2 * MS);
        assert!(matches!(
            c.exited("a", &crash(), 3 * MS, 0.0),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn another_node_or_the_same_node_come_back_counts_again() {
        let (n1, n2, m1) = (
            NodeId::new("n", 1),
            NodeId::new("n", 2),
            NodeId::new("m", 1),
        );
        let mut c = core(Strategy::OneForOne, 1, &[("a", P), ("b", P)]);
        assert!(matches!(
            c.node_died("a", &n1, MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            c.node_died("b", &m1, MS, 0.0),
            Decision::Escalate { .. }
        ));
        let mut c = core(Strategy::OneForOne, 1, &[("a", P), ("b", P)]);
        assert!(matches!(
            c.node_died("a", &n1, MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            c.node_died("b", &n2, MS, 0.0),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn a_node_death_counts_again_once_its_restart_left_the_period() {
        let n = NodeId::new("n", 1);
        let mut c = core(Strategy::OneForOne, 1, &[("a", P), ("b", P)]);
        assert!(matches!(
            c.node_died("a", &n, Duration::ZERO, 0.0),
            Decision::Restart { .. }
        ));
        // Late news of the same death, after the period: a restart of its own, in a fresh window.
        assert!(matches!(
            c.node_died("b", &n, 1000 * MS, 0.0),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn a_child_elsewhere_that_ends_with_a_dead_node_counts_each_time() {
        // It links to an actor of the dead node at every start, and so ends again at once.
        let mut c = core(Strategy::OneForOne, 1, &[("a", P)]);
        assert!(matches!(
            c.exited("a", &node_down("n", 1), MS, 0.0),
            Decision::Restart { .. }
        ));
        c.started("a", 2 * MS);
        assert!(matches!(
            c.exited("a", &node_down("n", 1), 3 * MS, 0.0),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn only_a_node_down_of_the_node_it_ran_on_is_its_death() {
        let (n, m) = (NodeId::new("n", 1), NodeId::new("m", 1));
        let down = ExitReason::NodeDown(n.clone());
        assert_eq!(died_with_its_node(&n, &down), Some(&n));
        assert_eq!(died_with_its_node(&m, &down), None);
        assert_eq!(died_with_its_node(&n, &crash()), None);
    }

    #[test]
    fn zero_max_restarts_escalates_on_the_first_failure() {
        let mut c = core(Strategy::OneForOne, 0, &[("a", P)]);
        assert!(matches!(
            c.exited("a", &crash(), MS, 0.0),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn backoff_grows_with_failures_in_a_row_and_resets_after_a_stable_run() {
        let backoff = Backoff {
            initial: 10 * MS,
            max: 1000 * MS,
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: 500 * MS,
        };
        let mut c = Core::new(
            Strategy::OneForOne,
            Intensity {
                max_restarts: 100,
                period: Duration::from_secs(1),
            },
        );
        c.add("a", P, Some(backoff));
        c.started("a", Duration::ZERO);
        let mut delays = Vec::new();
        let mut now = Duration::ZERO;
        for _ in 0..4 {
            now += MS;
            if let Decision::Restart { delay, .. } = c.exited("a", &crash(), now, 0.0) {
                delays.push(delay);
            }
            c.started("a", now);
        }
        assert_eq!(delays, vec![10 * MS, 20 * MS, 40 * MS, 80 * MS]);
        // A long stable run: back to the initial delay.
        now += 600 * MS;
        match c.exited("a", &crash(), now, 0.0) {
            Decision::Restart { delay, .. } => assert_eq!(delay, 10 * MS),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The core against a reference model written straight from the OTP documentation, on random
/// histories of exits.
#[cfg(test)]
mod model {
    use proptest::prelude::{
        Just, Strategy as Gen, any, prop, prop_assert_eq, prop_oneof, proptest,
    };

    use super::*;

    #[derive(Clone, Debug)]
    struct Event {
        child: usize,
        reason: ExitReason,
        /// For `NodeDown(n)`: whether the child ran on `n` (it died with its node) or
        /// elsewhere (it linked to an actor of `n`).
        ran_there: bool,
        after_ms: u64,
    }

    fn reason() -> impl Gen<Value = ExitReason> {
        prop_oneof![
            Just(ExitReason::Normal),
            Just(ExitReason::Shutdown),
            Just(ExitReason::Killed),
            Just(ExitReason::Failed("x".into())),
            Just(ExitReason::NodeDown(NodeId::new("n", 1))),
            Just(ExitReason::NodeDown(NodeId::new("n", 2))),
            Just(ExitReason::NodeDown(NodeId::new("m", 1))),
        ]
    }

    fn restart_type() -> impl Gen<Value = Restart> {
        prop_oneof![
            Just(Restart::Permanent),
            Just(Restart::Transient),
            Just(Restart::Temporary)
        ]
    }

    fn strategy_kind() -> impl Gen<Value = crate::Strategy> {
        prop_oneof![
            Just(crate::Strategy::OneForOne),
            Just(crate::Strategy::OneForAll),
            Just(crate::Strategy::RestForOne)
        ]
    }

    /// The model: a list of (id, restart type, running) and the full list of restart times,
    /// each with the node whose death it was for.
    struct Model {
        strategy: crate::Strategy,
        max: u32,
        period: Duration,
        children: Vec<(String, Restart, bool)>,
        history: Vec<(Time, Option<NodeId>)>,
    }

    impl Model {
        fn exited(
            &mut self,
            id: &str,
            reason: &ExitReason,
            ran_there: bool,
            now: Time,
        ) -> Decision {
            let Some(i) = self.children.iter().position(|c| c.0 == id) else {
                return Decision::Nothing;
            };
            if !self.children[i].2 {
                return Decision::Nothing;
            }
            let restart = self.children[i].1;
            let restart_it = restart == Restart::Permanent
                || (restart == Restart::Transient
                    && !matches!(reason, ExitReason::Normal | ExitReason::Shutdown));
            if !restart_it {
                if restart == Restart::Temporary {
                    self.children.remove(i);
                    return Decision::Forget(id.to_owned());
                }
                self.children[i].2 = false;
                return Decision::Nothing;
            }
            let within = |t: &Time| now - *t < self.period;
            let node = match reason {
                ExitReason::NodeDown(node) if ran_there => Some(node.clone()),
                _ => None,
            };
            // A node's death counts once within the period, however many of the children
            // that ran there it took.
            let counted_already = node.is_some()
                && self
                    .history
                    .iter()
                    .any(|(t, earlier)| within(t) && *earlier == node);
            if !counted_already {
                self.history.push((now, node));
            }
            let recent = self.history.iter().filter(|(t, _)| within(t)).count();
            if recent > self.max as usize {
                return Decision::Escalate {
                    restarts: self.max,
                    period: self.period,
                };
            }
            let taken_down: Vec<usize> = match self.strategy {
                crate::Strategy::OneForOne => vec![],
                crate::Strategy::OneForAll => {
                    (0..self.children.len()).filter(|&j| j != i).collect()
                }
                crate::Strategy::RestForOne => (i + 1..self.children.len()).collect(),
            };
            let stop: Vec<String> = taken_down
                .iter()
                .rev()
                .filter(|&&j| self.children[j].2)
                .map(|&j| self.children[j].0.clone())
                .collect();
            let forget: Vec<String> = taken_down
                .iter()
                .rev()
                .filter(|&&j| self.children[j].1 == Restart::Temporary)
                .map(|&j| self.children[j].0.clone())
                .collect();
            let mut restarted: Vec<usize> = taken_down.clone();
            restarted.push(i);
            restarted.sort();
            let start: Vec<String> = restarted
                .iter()
                .filter(|&&j| j == i || self.children[j].1 != Restart::Temporary)
                .map(|&j| self.children[j].0.clone())
                .collect();
            for &j in &restarted {
                self.children[j].2 = false;
            }
            self.children.retain(|c| !forget.contains(&c.0));
            Decision::Restart {
                stop,
                forget,
                start,
                delay: Duration::ZERO,
            }
        }
    }

    proptest! {
        #[test]
        fn core_decides_as_the_model(
            strategy in strategy_kind(),
            max in 0u32..4,
            types in prop::collection::vec(restart_type(), 1..6),
            // Steps of 100 ms, so that restarts often fall exactly on the window's edge.
            events in prop::collection::vec((0usize..6, reason(), any::<bool>(), 0u64..8), 1..40),
        ) {
            let period = Duration::from_millis(1000);
            let mut core = Core::new(strategy, Intensity { max_restarts: max, period });
            let mut model = Model { strategy, max, period, children: vec![], history: vec![] };
            for (k, restart) in types.iter().enumerate() {
                let id = format!("c{k}");
                core.add(&id, *restart, None);
                core.started(&id, Duration::ZERO);
                model.children.push((id, *restart, true));
            }
            let mut now = Duration::ZERO;
            for (child, reason, ran_there, after_ms) in events {
                let event = Event { child, reason, ran_there, after_ms };
                now += Duration::from_millis(100 * event.after_ms);
                let id = format!("c{}", event.child);
                let got = match &event.reason {
                    ExitReason::NodeDown(node) if event.ran_there => {
                        core.node_died(&id, node, now, 0.0)
                    }
                    reason => core.exited(&id, reason, now, 0.0),
                };
                let want = model.exited(&id, &event.reason, event.ran_there, now);
                prop_assert_eq!(&got, &want);
                match got {
                    Decision::Escalate { .. } => break,
                    Decision::Restart { start, .. } => {
                        // The shell starts them all at once (no backoff here).
                        for id in start {
                            core.started(&id, now);
                            if let Some(c) = model.children.iter_mut().find(|c| c.0 == id) {
                                c.2 = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
