//! The `Supervisor` actor: carries out the decisions of the pure core (`core.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ensemble_runtime::{
    Actor, ActorError, ActorId, ActorResult, Context, ExitReason, ReplyTo, SpawnError, UntypedRef,
};
use tokio::time::Instant;

use ensemble_registry::Registry;
use ensemble_runtime::NodeId;
use ensemble_runtime::TimerRef;
use ensemble_runtime::cluster::{Cluster, MemberEvent};

use crate::agent::NotStarted;
use crate::core::{ChildState, Core, Decision, Time, died_with_its_node};
use crate::error::SupervisorError;
use crate::snapshot::{ChildCounts, ChildInfo, ChildSnapshot, TreeSnapshot};
use crate::spec::{ChildKind, ChildSpec, ChildStart, Placement, Restart, Shutdown, SupervisorSpec};
use crate::{agent, placement};

/// How long a supervisor waits for a child supervisor's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a supervisor tries again to place children no node could take.
const PLACE_RETRY: Duration = Duration::from_secs(1);
/// How long a supervisor waits for a node's agent to start a module child.
const PLACED_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no instance of a child was started. A child that waits for a node (it is in the
/// supervisor's `unplaced` map) fails to start with `Failed` as well.
#[derive(Debug)]
enum StartError {
    /// It failed to start.
    Failed(SpawnError),
    /// The node it was to start on went down before it answered: a failure of that node, not
    /// of the child, counted once with the children that ran there (`Core::node_died`).
    NodeDown(NodeId, SpawnError),
}

impl StartError {
    /// The node whose death lost the start, if that is why it failed.
    fn died(&self) -> Option<&NodeId> {
        match self {
            StartError::NodeDown(node, _) => Some(node),
            StartError::Failed(_) => None,
        }
    }

    fn into_spawn_error(self) -> SpawnError {
        match self {
            StartError::Failed(error) | StartError::NodeDown(_, error) => error,
        }
    }
}

impl From<SpawnError> for StartError {
    fn from(error: SpawnError) -> Self {
        StartError::Failed(error)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Failed(error) | StartError::NodeDown(_, error) => error.fmt(f),
        }
    }
}

/// What it means that node `node`'s agent did not start an instance of `module`, when there
/// was room for it (for `NotStarted::NoRoom` the child waits instead): a failure of the child,
/// or of the node if it went down before it answered.
fn refused(node: &NodeId, module: &str, why: NotStarted) -> StartError {
    let error = SpawnError::Remote {
        node: node.clone(),
        module: module.to_owned(),
        reason: why.to_string(),
    };
    match why {
        NotStarted::NodeDown(down) => StartError::NodeDown(down, error),
        NotStarted::Failed(_) | NotStarted::NoRoom(_) => StartError::Failed(error),
    }
}

/// Tells the core that child `id` failed to (re)start, which counts as failing again: as if an
/// instance had started and ended at once, with `reason`. A start lost with its node counts as
/// that node's death, once with the children that ran there.
fn count_failed_start(
    core: &mut Core,
    id: &str,
    error: &StartError,
    reason: &ExitReason,
    now: Time,
    u: f64,
) -> Decision {
    core.started(id, now);
    match error.died() {
        Some(node) => core.node_died(id, node, now, u),
        None => core.exited(id, reason, now, u),
    }
}

/// A supervisor: an actor that starts children, watches them through links (trapping exits),
/// and restarts them by its strategy, within its restart intensity.
///
/// Start one with [`SupervisorRef::start`](crate::SupervisorRef::start) or, as a child,
/// [`ChildSpec::supervisor`].
pub struct Supervisor {
    name: String,
    /// Children to start in `started`; empty afterwards (they live in `specs`).
    initial: Vec<ChildSpec>,
    core: Core,
    specs: HashMap<String, ChildSpec>,
    running: HashMap<String, UntypedRef>,
    by_actor: HashMap<ActorId, String>,
    /// Instances whose `started` failed. They were spawned linked, so their exit comes too:
    /// it is that failed start, handled already, not the end of a child or of another
    /// linked actor. Each is forgotten when its exit comes.
    abandoned: HashSet<ActorId>,
    restarts: HashMap<String, u64>,
    /// Restarts waiting out a backoff delay, by token.
    pending: HashMap<u64, Vec<String>>,
    next_token: u64,
    /// Children no node can take now, with the reason.
    unplaced: BTreeMap<String, String>,
    place_timer: Option<TimerRef>,
    origin: Instant,
    strategy: crate::Strategy,
}

/// The supervisor's protocol. Opaque: use [`SupervisorRef`](crate::SupervisorRef).
pub struct SupervisorMsg(pub(crate) Request);

pub(crate) enum Request {
    StartChild(Box<ChildSpec>, ReplyTo<Result<UntypedRef, SupervisorError>>),
    TerminateChild(String, ReplyTo<Result<(), SupervisorError>>),
    RestartChild(String, ReplyTo<Result<UntypedRef, SupervisorError>>),
    DeleteChild(String, ReplyTo<Result<(), SupervisorError>>),
    WhichChildren(ReplyTo<Vec<ChildInfo>>),
    CountChildren(ReplyTo<ChildCounts>),
    Snapshot(ReplyTo<TreeSnapshot>),
    /// A backoff delay is over: start these children.
    RestartDue(u64),
    /// A node joined, or the retry timer fired: try to place the children waiting for a node.
    Place,
}

impl Supervisor {
    /// A supervisor for this spec, to be spawned.
    pub fn new(spec: SupervisorSpec) -> Self {
        Self {
            core: Core::new(spec.strategy, spec.intensity),
            name: spec.name,
            initial: spec.children,
            specs: HashMap::new(),
            running: HashMap::new(),
            by_actor: HashMap::new(),
            abandoned: HashSet::new(),
            restarts: HashMap::new(),
            pending: HashMap::new(),
            next_token: 0,
            unplaced: BTreeMap::new(),
            place_timer: None,
            origin: Instant::now(),
            strategy: spec.strategy,
        }
    }

    fn now(&self) -> Time {
        self.origin.elapsed()
    }

    fn error_for(
        &self,
        id: &str,
    ) -> impl FnOnce(fn(String, String) -> SupervisorError) -> SupervisorError {
        let (supervisor, id) = (self.name.clone(), id.to_owned());
        move |make| make(supervisor, id)
    }

    /// Adds a child spec and starts it; on failure the spec is not kept.
    async fn add_and_start(
        &mut self,
        ctx: &mut Context<Self>,
        spec: ChildSpec,
    ) -> Result<UntypedRef, SupervisorError> {
        let id = spec.id.clone();
        if self.specs.contains_key(&id) {
            return Err(self.error_for(&id)(|supervisor, id| {
                SupervisorError::ChildExists { supervisor, id }
            }));
        }
        if spec.module_name().is_none() && spec.global_name.is_some() {
            return Err(SupervisorError::GlobalNameUnsupported {
                supervisor: self.name.clone(),
                id,
            });
        }
        if spec.module_name().is_none() && spec.placement != Placement::Local {
            return Err(SupervisorError::PlacementUnsupported {
                supervisor: self.name.clone(),
                id,
                placement: spec.placement.to_string(),
            });
        }
        self.core.add(&id, spec.restart, spec.backoff);
        self.specs.insert(id.clone(), spec);
        match self.start_one(ctx, &id).await {
            Ok(actor) => Ok(actor),
            Err(_) if self.unplaced.contains_key(&id) => Err(SupervisorError::Unplaced {
                supervisor: self.name.clone(),
                reason: self.unplaced[&id].clone(),
                id,
            }),
            Err(error) => {
                self.core.remove(&id);
                self.specs.remove(&id);
                Err(SupervisorError::StartFailed {
                    supervisor: self.name.clone(),
                    id,
                    error: error.into_spawn_error(),
                })
            }
        }
    }

    /// Starts one instance of a child whose spec is held.
    async fn start_one(
        &mut self,
        ctx: &mut Context<Self>,
        id: &str,
    ) -> Result<UntypedRef, StartError> {
        let spec = self
            .specs
            .get(id)
            .expect("start_one is called for held specs")
            .clone();
        let actor = match &spec.start {
            ChildStart::Module(module, args) => self.start_placed(ctx, &spec, module, args).await?,
            ChildStart::Local(start) => match start(ctx, spec.spawn_options()).await {
                Ok(actor) => actor,
                Err(error) => {
                    if let SpawnError::StartFailed { actor, .. } = &error {
                        self.abandoned.insert(actor.clone());
                    }
                    return Err(error.into());
                }
            },
        };
        self.by_actor.insert(actor.id().clone(), id.to_owned());
        self.running.insert(id.to_owned(), actor.clone());
        let now = self.now();
        self.core.started(id, now);
        tracing::debug!(supervisor = %self.name, child = id, actor = %actor.id(), "child started");
        Ok(actor)
    }

    /// Starts a module child on the node its placement chooses, through that node's agent,
    /// and links to it.
    async fn start_placed(
        &mut self,
        ctx: &mut Context<Self>,
        spec: &ChildSpec,
        module: &str,
        args: &[u8],
    ) -> Result<UntypedRef, StartError> {
        let me = ctx.node().id().clone();
        let failed = |node: &NodeId, reason: String| SpawnError::Remote {
            node: node.clone(),
            module: module.to_owned(),
            reason,
        };
        let (Some(registry), Some(cluster)) = (
            ctx.node().extension::<Registry>(),
            ctx.node().extension::<Cluster>(),
        ) else {
            // A node on its own can still run a module child on itself: there is nothing to
            // place, reserve or name.
            if spec.placement == Placement::Local && spec.global_name.is_none() {
                let started = ctx
                    .node()
                    .start_module(module, args)
                    .await
                    .map_err(|e| failed(&me, e.to_string()))?;
                ctx.link(started.actor.clone());
                return Ok(started.actor);
            }
            return Err(failed(
                &me,
                "placing a module child needs the node's cluster and registry; start them first"
                    .into(),
            )
            .into());
        };
        let needs = spec.placement.requirements(me.name());
        // Instances of one role under this supervisor (`ChildSpec::role`), for anti-affinity
        // and spreading.
        let role = spec.role();
        let same: Vec<NodeId> = self
            .running
            .iter()
            .filter(|(id, _)| self.specs.get(*id).and_then(ChildSpec::role) == role)
            .map(|(_, actor)| actor.id().node().clone())
            .collect();
        let offers = agent::offers(&registry, &cluster, |node| {
            same.iter().filter(|n| *n == node).count()
        });
        let plan = placement::plan(&offers, &needs, 1);
        let Some(agent) = plan
            .nodes
            .first()
            .and_then(|node| agent::agent_on(&registry, &cluster, node))
        else {
            metrics::counter!("ensemble_supervisor_unplaced_total", "supervisor" => self.name.clone()).increment(1);
            let reason = plan.reason();
            if !self.unplaced.contains_key(&spec.id) {
                tracing::warn!(supervisor = %self.name, child = %spec.id, "no node can take the child: {reason}");
            }
            self.unplaced.insert(spec.id.clone(), reason.clone());
            self.update_unplaced(ctx);
            return Err(failed(
                &me,
                format!("no node can take child {:?}: {reason}", spec.id),
            )
            .into());
        };
        self.next_token += 1;
        let request = agent::StartInstance {
            // The supervisor's own id, not its name and node only: two supervisors of one
            // name on a node (built from one spec), or one restarted by its parent, would
            // otherwise share ids, and so reservations.
            instance: format!(
                "{}/{}@{}#{}",
                self.name,
                spec.id,
                ctx.myself().id(),
                self.next_token
            ),
            module: module.to_owned(),
            args: args.to_vec(),
            resources: needs.resources.clone(),
            global_name: spec.global_name.clone(),
            groups: Vec::new(),
            singleton: None,
            lock_timeout: Duration::ZERO,
            // Stopped if this supervisor ends before it could link to the child.
            owner: Some(ctx.myself().id().clone()),
        };
        let node = agent.id().node().clone();
        let wire = match agent::start_on(&cluster, &agent, request, PLACED_START_TIMEOUT).await {
            Ok(wire) => wire,
            Err(NotStarted::NoRoom(reason)) => {
                // Another placer took the node's last room first: the child waits and is
                // planned again, as when no node fits; not a failure to count.
                tracing::info!(supervisor = %self.name, child = %spec.id, %node, "the node's room went to another placer first: {reason}");
                self.unplaced.insert(spec.id.clone(), reason.clone());
                self.update_unplaced(ctx);
                return Err(failed(&node, reason).into());
            }
            Err(why) => {
                // A node took the child and answered: it no longer waits for one. Its start
                // failed there, a failure the caller counts; taken for a wait, it would be
                // tried every second for good, never counted against the intensity.
                if self.unplaced.remove(&spec.id).is_some() {
                    self.update_unplaced(ctx);
                }
                return Err(refused(&node, module, why));
            }
        };
        let actor = UntypedRef::from_id(ctx.node(), &wire.id);
        ctx.link(actor.clone());
        if self.unplaced.remove(&spec.id).is_some() {
            self.update_unplaced(ctx);
        }
        Ok(actor)
    }

    /// Stops a running child by its shutdown spec; its exit is not treated as a failure.
    async fn stop_child(&mut self, ctx: &mut Context<Self>, id: &str) -> Option<ExitReason> {
        let actor = self.running.remove(id)?;
        self.by_actor.remove(actor.id());
        // Unlinked first, so its exit is not reported to `on_exit` as a failure.
        ctx.unlink(&actor);
        let how = self
            .specs
            .get(id)
            .map_or(crate::spec::DEFAULT_WORKER_SHUTDOWN, |s| s.shutdown);
        let reason = match how {
            Shutdown::Brutal => {
                actor.kill();
                actor.wait_for_exit().await
            }
            Shutdown::Timeout(limit) => {
                actor.stop_with(ExitReason::Shutdown);
                match tokio::time::timeout(limit, actor.wait_for_exit()).await {
                    Ok(reason) => reason,
                    Err(_) => {
                        tracing::warn!(supervisor = %self.name, child = id, ?limit, "child did not stop in time; killing it");
                        metrics::counter!("ensemble_supervisor_shutdown_kills_total", "supervisor" => self.name.clone())
                            .increment(1);
                        actor.kill();
                        actor.wait_for_exit().await
                    }
                }
            }
            Shutdown::Infinity => {
                actor.stop_with(ExitReason::Shutdown);
                actor.wait_for_exit().await
            }
        };
        Some(reason)
    }

    /// Stops every child, in reverse start order.
    async fn stop_all(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<String> = self.core.ids().rev().map(str::to_owned).collect();
        for id in ids {
            self.stop_child(ctx, &id).await;
            self.core.stopped(&id);
        }
    }

    /// Carries out a decision, and the decisions that follow from children failing to restart.
    async fn apply(
        &mut self,
        ctx: &mut Context<Self>,
        decision: Decision,
        id: String,
        reason: ExitReason,
    ) {
        let mut next = Some((decision, id, reason));
        while let Some((decision, id, reason)) = next.take() {
            match decision {
                Decision::Nothing => {
                    tracing::debug!(supervisor = %self.name, child = %id, %reason, "child ended; not restarted");
                }
                Decision::Forget(id) => {
                    self.specs.remove(&id);
                }
                Decision::Restart {
                    stop,
                    forget,
                    start,
                    delay,
                } => {
                    tracing::info!(supervisor = %self.name, child = %id, %reason, ?delay, restarting = ?start, "restarting");
                    metrics::counter!("ensemble_supervisor_restarts_total", "supervisor" => self.name.clone()).increment(1);
                    for other in &stop {
                        self.stop_child(ctx, other).await;
                    }
                    for other in &forget {
                        self.specs.remove(other);
                    }
                    // A child belongs to one restart at a time: this one takes its children
                    // over from any restart still waiting out its backoff. Under rest-for-one
                    // or one-for-all, that restart's children come after this one's failed
                    // child and depend on it, so they start after it, in this one's order.
                    for waiting in self.pending.values_mut() {
                        waiting.retain(|child| !start.contains(child));
                    }
                    if delay.is_zero() {
                        next = self.start_all(ctx, &start).await;
                    } else {
                        self.next_token += 1;
                        self.pending.insert(self.next_token, start);
                        ctx.send_after(delay, SupervisorMsg(Request::RestartDue(self.next_token)));
                    }
                }
                Decision::Escalate { restarts, period } => {
                    tracing::error!(supervisor = %self.name, child = %id, %reason, restarts, ?period, "restart intensity exceeded; giving up");
                    metrics::counter!("ensemble_supervisor_escalations_total", "supervisor" => self.name.clone())
                        .increment(1);
                    ctx.stop_with(ExitReason::Failed(format!(
                        "supervisor {} gave up: more than {restarts} restarts within {period:?} (last: child {id:?} ended with {reason})",
                        self.name
                    )));
                }
            }
        }
    }

    /// Starts the children of a restart that are still due, in order. A child that fails to
    /// start counts as failing again: the decision that follows is returned.
    async fn start_all(
        &mut self,
        ctx: &mut Context<Self>,
        ids: &[String],
    ) -> Option<(Decision, String, ExitReason)> {
        for id in ids {
            if self.core.state(id) != Some(ChildState::Restarting) || self.running.contains_key(id)
            {
                continue;
            }
            match self.start_one(ctx, id).await {
                Ok(_) => *self.restarts.entry(id.clone()).or_default() += 1,
                // Waits for a node; not a failure.
                Err(_) if self.unplaced.contains_key(id) => {}
                Err(error) => return Some(self.failed_to_restart(id, &error)),
            }
        }
        None
    }

    /// A child failed to (re)start: that counts as failing again, as in Erlang/OTP, so the
    /// decision is made anew (another restart, counted against the intensity, or giving up).
    /// Returns that decision.
    fn failed_to_restart(
        &mut self,
        id: &str,
        error: &StartError,
    ) -> (Decision, String, ExitReason) {
        let reason = ExitReason::Failed(format!("failed to restart: {error}"));
        tracing::warn!(supervisor = %self.name, child = %id, %error, "child failed to restart");
        metrics::counter!("ensemble_supervisor_start_failures_total", "supervisor" => self.name.clone())
            .increment(1);
        let now = self.now();
        let decision = count_failed_start(&mut self.core, id, error, &reason, now, fastrand::f64());
        (decision, id.to_owned(), reason)
    }

    fn infos(&self) -> Vec<ChildInfo> {
        self.core
            .ids()
            .filter_map(|id| {
                let spec = self.specs.get(id)?;
                Some(ChildInfo {
                    id: id.to_owned(),
                    actor: self.running.get(id).cloned(),
                    kind: spec.kind,
                    restart: spec.restart,
                    state: if self.unplaced.contains_key(id) {
                        ChildState::Unplaced
                    } else {
                        self.core.state(id).unwrap_or(ChildState::Stopped)
                    },
                })
            })
            .collect()
    }

    async fn snapshot(&self, ctx: &Context<Self>) -> TreeSnapshot {
        let mut children = Vec::new();
        for info in self.infos() {
            let tree = match (&info.actor, info.kind) {
                (Some(actor), ChildKind::Supervisor) => match actor.downcast::<SupervisorMsg>() {
                    Some(child) => child
                        .ask(|r| SupervisorMsg(Request::Snapshot(r)), SNAPSHOT_TIMEOUT)
                        .await
                        .ok()
                        .map(Box::new),
                    None => None,
                },
                _ => None,
            };
            children.push(ChildSnapshot {
                restarts: self.restarts.get(&info.id).copied().unwrap_or(0),
                actor: info.actor.as_ref().map(|a| a.id().to_string()),
                id: info.id,
                kind: info.kind,
                restart: info.restart,
                state: info.state,
                tree,
            });
        }
        TreeSnapshot {
            name: self.name.clone(),
            actor: ctx.id().to_string(),
            strategy: self.strategy,
            children,
        }
    }

    async fn terminate_child(
        &mut self,
        ctx: &mut Context<Self>,
        id: &str,
    ) -> Result<(), SupervisorError> {
        let Some(spec) = self.specs.get(id) else {
            return Err(self.error_for(id)(|supervisor, id| {
                SupervisorError::NoSuchChild { supervisor, id }
            }));
        };
        let temporary = spec.restart == Restart::Temporary;
        self.stop_child(ctx, id).await;
        self.core.stopped(id);
        if self.unplaced.remove(id).is_some() {
            self.update_unplaced(ctx);
        }
        if temporary {
            self.specs.remove(id);
            self.core.remove(id);
        }
        Ok(())
    }

    /// Starts a child that is not running. Answers, and what to do next: a child that waited
    /// for a node and now failed to start there is not left stopped, nor waiting for good, but
    /// fails as its start would have when the node was found by itself (`place_waiting`).
    async fn restart_child(
        &mut self,
        ctx: &mut Context<Self>,
        id: &str,
    ) -> (
        Result<UntypedRef, SupervisorError>,
        Option<(Decision, String, ExitReason)>,
    ) {
        if !self.specs.contains_key(id) {
            let error = self.error_for(id)(|supervisor, id| SupervisorError::NoSuchChild {
                supervisor,
                id,
            });
            return (Err(error), None);
        }
        if let Some(error) = self.not_stopped(id) {
            return (Err(error), None);
        }
        let waited = self.unplaced.contains_key(id);
        match self.start_one(ctx, id).await {
            Ok(actor) => (Ok(actor), None),
            Err(_) if self.unplaced.contains_key(id) => {
                let error = SupervisorError::Unplaced {
                    supervisor: self.name.clone(),
                    id: id.to_owned(),
                    reason: self.unplaced[id].clone(),
                };
                (Err(error), None)
            }
            Err(error) => {
                let then = waited.then(|| self.failed_to_restart(id, &error));
                let error = SupervisorError::StartFailed {
                    supervisor: self.name.clone(),
                    id: id.to_owned(),
                    error: error.into_spawn_error(),
                };
                (Err(error), then)
            }
        }
    }

    /// Tries again to start the children no node could take, except those of a restart that
    /// is not due yet: that restart starts them in order, after the siblings they depend on
    /// (one-for-all, rest-for-one) come back from their backoff.
    async fn place_waiting(&mut self, ctx: &mut Context<Self>) {
        let due_later: HashSet<&str> = self
            .pending
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        let waiting: Vec<String> = self
            .core
            .ids()
            .filter(|id| self.unplaced.contains_key(*id))
            .filter(|id| !due_later.contains(id))
            .map(str::to_owned)
            .collect();
        for id in waiting {
            if self.running.contains_key(&id) || !self.specs.contains_key(&id) {
                self.unplaced.remove(&id);
                continue;
            }
            match self.start_one(ctx, &id).await {
                Ok(_) => {
                    tracing::info!(supervisor = %self.name, child = %id, "child placed after waiting for a node");
                }
                // Still no node can take it.
                Err(_) if self.unplaced.contains_key(&id) => {}
                Err(error) => {
                    // A node took it, and its start failed there. What follows may stop and
                    // restart siblings, or put them off by a backoff: the others still
                    // waiting are tried at the next round.
                    let (decision, id, reason) = self.failed_to_restart(&id, &error);
                    self.apply(ctx, decision, id, reason).await;
                    break;
                }
            }
        }
        self.update_unplaced(ctx);
    }

    /// Keeps the retry timer and the gauge in step with the children waiting for a node.
    fn update_unplaced(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("ensemble_supervisor_unplaced_children", "supervisor" => self.name.clone())
            .set(self.unplaced.len() as f64);
        match (self.unplaced.is_empty(), self.place_timer.take()) {
            (true, Some(timer)) => ctx.cancel_timer(timer),
            (false, None) => {
                self.place_timer =
                    Some(ctx.send_interval(PLACE_RETRY, || SupervisorMsg(Request::Place)));
            }
            (_, timer) => self.place_timer = timer,
        }
    }

    /// Why `restart_child` or `delete_child` cannot act on child `id` now, as in Erlang/OTP:
    /// it runs, or it waits out its restart backoff (the restart due then starts it).
    fn not_stopped(&self, id: &str) -> Option<SupervisorError> {
        if self.running.contains_key(id) {
            return Some(self.error_for(id)(|supervisor, id| {
                SupervisorError::ChildRunning { supervisor, id }
            }));
        }
        if self.core.state(id) == Some(ChildState::Restarting) {
            return Some(self.error_for(id)(|supervisor, id| {
                SupervisorError::ChildRestarting { supervisor, id }
            }));
        }
        None
    }

    fn delete_child(&mut self, ctx: &mut Context<Self>, id: &str) -> Result<(), SupervisorError> {
        if !self.specs.contains_key(id) {
            return Err(self.error_for(id)(|supervisor, id| {
                SupervisorError::NoSuchChild { supervisor, id }
            }));
        }
        if let Some(error) = self.not_stopped(id) {
            return Err(error);
        }
        self.specs.remove(id);
        self.core.remove(id);
        if self.unplaced.remove(id).is_some() {
            // Or the retry timer would run on, and the gauge count it, for good: `Place` tries
            // the waiting children only while there are some.
            self.update_unplaced(ctx);
        }
        Ok(())
    }

    /// Gives up on the children waiting for a node, as the supervisor ends: the gauge would
    /// keep counting them for good. (The retry timer ends with the supervisor.)
    fn stop_waiting(&mut self) {
        if !self.unplaced.is_empty() {
            self.unplaced.clear();
            metrics::gauge!("ensemble_supervisor_unplaced_children", "supervisor" => self.name.clone())
                .set(0.0);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // For a supervisor that was killed: it ran no `stopping` hook.
        self.stop_waiting();
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.trap_exit(true);
        self.origin = Instant::now();
        if let Some(cluster) = ctx.node().extension::<Cluster>() {
            // Children waiting for a node are tried again as soon as one joins.
            let (mut events, me) = (cluster.subscribe(), ctx.myself());
            tokio::spawn(async move {
                // Ends with the supervisor, not at the first membership event after it.
                let ended = me.wait_for_exit();
                tokio::pin!(ended);
                loop {
                    let event = tokio::select! {
                        _ = &mut ended => return,
                        event = events.recv() => event,
                    };
                    let joined = match event {
                        Ok(MemberEvent::Joined(_)) => true,
                        Ok(_) => false,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if joined && me.tell(SupervisorMsg(Request::Place)).await.is_err() {
                        return;
                    }
                }
            });
        }
        for spec in std::mem::take(&mut self.initial) {
            let id = spec.id.clone();
            if let Err(err) = self.add_and_start(ctx, spec).await {
                if self.unplaced.contains_key(&id) {
                    // Not a failure to start: it waits for a node that can take it.
                    continue;
                }
                self.stop_all(ctx).await;
                self.stop_waiting();
                return Err(ActorError::new(err));
            }
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        SupervisorMsg(request): SupervisorMsg,
        ctx: &mut Context<Self>,
    ) -> ActorResult {
        match request {
            Request::StartChild(spec, reply) => {
                let _ = reply.send(self.add_and_start(ctx, *spec).await);
            }
            Request::TerminateChild(id, reply) => {
                let _ = reply.send(self.terminate_child(ctx, &id).await);
            }
            Request::RestartChild(id, reply) => {
                let (answer, then) = self.restart_child(ctx, &id).await;
                let _ = reply.send(answer);
                if let Some((decision, id, reason)) = then {
                    self.apply(ctx, decision, id, reason).await;
                }
            }
            Request::DeleteChild(id, reply) => {
                let _ = reply.send(self.delete_child(ctx, &id));
            }
            Request::WhichChildren(reply) => {
                let _ = reply.send(self.infos());
            }
            Request::CountChildren(reply) => {
                let infos = self.infos();
                let supervisors = infos
                    .iter()
                    .filter(|c| c.kind == ChildKind::Supervisor)
                    .count();
                let _ = reply.send(ChildCounts {
                    specs: infos.len(),
                    active: infos.iter().filter(|c| c.actor.is_some()).count(),
                    supervisors,
                    workers: infos.len() - supervisors,
                });
            }
            Request::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(ctx).await);
            }
            Request::Place => {
                if !self.unplaced.is_empty() {
                    self.place_waiting(ctx).await;
                }
            }
            Request::RestartDue(token) => {
                if let Some(ids) = self.pending.remove(&token)
                    && let Some((decision, id, reason)) = self.start_all(ctx, &ids).await
                {
                    self.apply(ctx, decision, id, reason).await;
                }
            }
        }
        Ok(())
    }

    async fn on_exit(
        &mut self,
        from: ActorId,
        reason: ExitReason,
        ctx: &mut Context<Self>,
    ) -> ActorResult {
        if self.abandoned.remove(&from) {
            // An instance that failed to start: counted (or reported) when its start failed.
            return Ok(());
        }
        let Some(id) = self.by_actor.remove(&from) else {
            // Not a child: the parent, or another actor linked to this supervisor, ended. Follow
            // it as an untrapped link would.
            if !reason.is_normal() {
                ctx.stop_with(reason);
            }
            return Ok(());
        };
        self.running.remove(&id);
        let now = self.now();
        let decision = match died_with_its_node(from.node(), &reason) {
            Some(node) => self.core.node_died(&id, node, now, fastrand::f64()),
            None => self.core.exited(&id, &reason, now, fastrand::f64()),
        };
        self.apply(ctx, decision, id, reason).await;
        Ok(())
    }

    async fn stopping(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        self.stop_all(ctx).await;
        self.stop_waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Intensity, Strategy};

    const MS: Duration = Duration::from_millis(1);

    fn crash() -> ExitReason {
        ExitReason::Failed("crash".into())
    }

    /// A one-for-one core allowing two restarts a minute, with children `a` and `b` running.
    fn two_children() -> Core {
        let mut core = Core::new(
            Strategy::OneForOne,
            Intensity {
                max_restarts: 2,
                period: Duration::from_secs(60),
            },
        );
        for id in ["a", "b"] {
            core.add(id, Restart::Permanent, None);
            core.started(id, Duration::ZERO);
        }
        core
    }

    #[test]
    fn a_start_lost_with_its_node_is_that_nodes_death() {
        let n = NodeId::new("n2", 1);
        let lost = refused(&n, "m", NotStarted::NodeDown(n.clone()));
        assert_eq!(lost.died(), Some(&n));
        assert!(lost.to_string().contains("went down"), "{lost}");
        let failed = refused(&n, "m", NotStarted::Failed("no module \"m\"".into()));
        assert_eq!(failed.died(), None);
        assert!(failed.to_string().contains("no module"), "{failed}");
    }

    #[test]
    fn a_start_lost_with_its_node_counts_once_with_the_children_that_ran_there() {
        let n = NodeId::new("n2", 1);
        let lost = refused(&n, "m", NotStarted::NodeDown(n.clone()));
        // `a` crashes (one restart); its new instance was to start on n2, which dies before
        // it answers (the node's death: two); `b` ran on n2 and ends with it (the same death).
        let mut core = two_children();
        assert!(matches!(
            core.exited("a", &crash(), MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            count_failed_start(&mut core, "a", &lost, &crash(), 2 * MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            core.node_died("b", &n, 3 * MS, 0.0),
            Decision::Restart { .. }
        ));
        // Any other failure within the period is one more: over the intensity.
        core.started("a", 4 * MS);
        assert!(matches!(
            core.exited("a", &crash(), 5 * MS, 0.0),
            Decision::Escalate { .. }
        ));

        // A start that failed for another reason counts on its own.
        let failed = refused(&n, "m", NotStarted::Failed("no module".into()));
        let mut core = two_children();
        assert!(matches!(
            core.exited("a", &crash(), MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            count_failed_start(&mut core, "a", &failed, &crash(), 2 * MS, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            core.node_died("b", &n, 3 * MS, 0.0),
            Decision::Escalate { .. }
        ));
    }
}
