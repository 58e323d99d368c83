//! Invariants 2 and 3 of DESIGN.md section 8 under the simulation's faults: every node runs
//! an echo actor under a global name, and a prober that resolves the other nodes' echoes from
//! its node's copy of the registry, monitors each one it finds and asks it, over and over.
//!
//! Recorded here, checked by the scenario: how many times each monitor fired (exactly once if
//! its target died, never if not), when each ask was sent and whether it completed by its
//! deadline, and which incarnations the test restarted (a name must stop resolving to them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ensemble::NodeId;
use ensemble::prelude::*;
use ensemble::registry::Registry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long a prober's ask waits for its answer.
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How late past its timeout an ask may complete: the scheduling of one virtual instant.
pub(crate) const ASK_SLACK: Duration = Duration::from_millis(50);

/// The global name of node `i`'s echo actor.
pub(crate) fn echo_name(i: usize) -> String {
    format!("sim-echo-{i}")
}

/// What an echo actor takes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EchoMsg {
    /// Answer with the number.
    Ping(u64, ReplyTo<u64>),
}

pub(crate) struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut Context<Self>) -> ActorResult {
        let EchoMsg::Ping(n, reply) = msg;
        let _ = reply.send(n);
        Ok(())
    }
}

/// A monitor: who watches (node, and its restarts so far) what.
pub(crate) type MonitorKey = (usize, u16, ActorId);

/// What the probes saw.
#[derive(Default)]
pub(crate) struct Probes {
    /// Every monitor set, with the number of times it fired and the last reason.
    pub(crate) downs: BTreeMap<MonitorKey, (u32, Option<ExitReason>)>,
    /// Asks sent and not completed yet, by prober (node, restarts so far): when each was sent.
    pub(crate) pending: BTreeMap<(usize, u16), (Instant, ActorId)>,
    /// Asks answered, and asks that completed with an error (a timeout, an unreachable or
    /// stopped actor), all in time.
    pub(crate) answered: u64,
    pub(crate) failed: u64,
    /// Incarnations the test restarted, and when.
    pub(crate) dead: BTreeMap<NodeId, Instant>,
    /// Problems already reported (each once).
    pub(crate) reported: BTreeSet<String>,
    pub(crate) violations: Vec<String>,
}

impl Probes {
    fn violation(&mut self, problem: String) {
        if self.reported.insert(problem.clone()) {
            self.violations.push(problem);
        }
    }

    /// Asks outstanding past their deadline: an ask must always complete.
    pub(crate) fn check_asks(&mut self, now: Instant) {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (sent, _))| now.duration_since(*sent) > ASK_TIMEOUT + ASK_SLACK)
            .map(|((node, generation), (_, target))| {
                format!(
                    "an ask from s{node} (restart {generation}) to {target} had not completed \
                     {:?} after its {ASK_TIMEOUT:?} timeout",
                    ASK_SLACK
                )
            })
            .collect();
        for problem in late {
            self.violation(problem);
        }
    }

    /// Names that still resolve, in the copy of the registry on node `whose`, to an
    /// incarnation restarted more than `grace` ago.
    pub(crate) fn check_names(
        &mut self,
        whose: &str,
        registry: &Registry,
        now: Instant,
        grace: Duration,
    ) {
        for (name, wire) in registry.names_with_prefix("") {
            if let Some(died) = self.dead.get(wire.id.node())
                && now.duration_since(*died) > grace
            {
                self.violation(format!(
                    "{whose}'s copy resolves {name} to {}, of an incarnation restarted {:?} ago",
                    wire.id,
                    now.duration_since(*died)
                ));
            }
        }
    }
}

/// Watches what it is told to watch (each actor once) and counts the `Down`s.
struct Watcher {
    node: usize,
    generation: u16,
    probes: Arc<Mutex<Probes>>,
}

enum WatchMsg {
    Watch(UntypedRef),
}

impl Actor for Watcher {
    type Msg = WatchMsg;

    async fn handle(&mut self, msg: WatchMsg, ctx: &mut Context<Self>) -> ActorResult {
        let WatchMsg::Watch(target) = msg;
        let key = (self.node, self.generation, target.id().clone());
        let new = {
            let mut probes = self.probes.lock();
            match probes.downs.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert((0, None));
                    true
                }
            }
        };
        if new {
            ctx.monitor(target);
        }
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let mut probes = self.probes.lock();
        let key = (self.node, self.generation, down.actor.clone());
        let record = probes.downs.entry(key).or_insert((0, None));
        record.0 += 1;
        record.1 = Some(down.reason.clone());
        let fired = record.0;
        if fired > 1 {
            probes.violation(format!(
                "the monitor of {} by s{} (restart {}) fired {fired} times (last: {})",
                down.actor, self.node, self.generation, down.reason
            ));
        }
        Ok(())
    }
}

/// Node `i`'s probes: registers its echo under its name (again and again until the registry
/// takes it: after a restart, the old incarnation holds the name until its session expired),
/// then resolves, monitors and asks the other nodes' echoes every 50-200 ms, forever.
pub(crate) async fn run(
    i: usize,
    generation: u16,
    nodes: usize,
    node: Node,
    registry: Registry,
    probes: Arc<Mutex<Probes>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xec40 ^ ((i as u64) << 16 | generation as u64));
    let (Ok(echo), Ok(watcher)) = (
        node.spawn(Echo),
        node.spawn(Watcher {
            node: i,
            generation,
            probes: probes.clone(),
        }),
    ) else {
        return; // the node is shutting down
    };
    while registry.register(&echo_name(i), &echo).await.is_err() {
        tokio::time::sleep(Duration::from_millis(rng.u64(20..100))).await;
    }
    for n in 0u64.. {
        tokio::time::sleep(Duration::from_millis(rng.u64(50..200))).await;
        for j in (0..nodes).filter(|&j| j != i) {
            let Ok(Some(target)) = registry.whereis::<EchoMsg>(&echo_name(j)) else {
                continue;
            };
            if watcher
                .tell(WatchMsg::Watch(target.untyped()))
                .await
                .is_err()
            {
                return;
            }
            let sent = Instant::now();
            probes
                .lock()
                .pending
                .insert((i, generation), (sent, target.id().clone()));
            let outcome = target
                .ask(|reply| EchoMsg::Ping(n, reply), ASK_TIMEOUT)
                .await;
            let mut probes = probes.lock();
            probes.pending.remove(&(i, generation));
            match outcome {
                Ok(answer) if answer == n => probes.answered += 1,
                Ok(answer) => probes.violation(format!(
                    "{} answered ping {n} from s{i} with {answer}",
                    target.id()
                )),
                Err(_) => probes.failed += 1,
            }
        }
    }
}
