//! The node agent: starts placed instances on its node.
//!
//! Every node that takes placed work runs one agent, registered under [`AGENT_NAME`] so that
//! supervisors and the app controller on any node can reach it. Starting an instance here,
//! rather than from the placing node, keeps everything bound to the instance tied to the
//! session of the node it runs on: its resource reservation, its singleton lease, its global
//! name and its groups all go when the instance ends or this node's session does.
//!
//! The steps of a start, each undone if a later one fails:
//! 1. reserve the instance's resources in the registry (an atomic capacity check, so two
//!    placers can never oversubscribe this node);
//! 2. for a singleton, take its lease, waiting in line behind a holder that may still live;
//! 3. start the module's actor, bound to the lease from before its `started` hook runs (it is
//!    killed if the lease is lost, even while it starts);
//! 4. register its global name and join its groups;
//! 5. answer, unless the asker has stopped waiting by then (a module slow to start): an
//!    instance nobody would supervise is stopped again, and the steps undone.
//!
//! A start is done once per instance id: the same request sent again (by [`start_on`], after
//! the connection that carried the first ended, when the asker cannot tell whether it
//! arrived) waits for the first one's outcome, or gets it, rather than starting a second
//! instance. The agent keeps an outcome while the instance runs, and for as long as the asker
//! could still send again.
//!
//! A start may name the instance's owner (a supervisor): the instance is stopped when the
//! owner ends, as an Erlang child linked to its supervisor is, also if the owner ended before
//! the answer reached it and it could link to the instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ensemble_registry::{Lease, Registry, RegistryError};
use ensemble_runtime::cluster::{Cluster, MemberStatus};
use ensemble_runtime::remote::{ModuleActor, WireRef};
use ensemble_runtime::{
    Actor, ActorId, ActorRef, ActorResult, AskError, Context, ExitReason, Node, NodeId, ReplyTo,
    UntypedRef,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::placement::Offer;

type Capacity = BTreeMap<String, u64>;
type Labels = BTreeMap<String, String>;

/// The name every node's agent is registered under (a local name other nodes can look up).
pub const AGENT_NAME: &str = "ensemble.agent";

/// The registry group of all agents: the nodes that take placed work.
pub const AGENTS_GROUP: &str = "ensemble.agents";

/// What to start: one instance of a module, with what is bound to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartInstance {
    /// Unique id of the instance, cluster-wide: names its resource reservation.
    pub instance: String,
    /// The module registered on the node.
    pub module: String,
    /// The module's arguments, MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Resources to reserve on the node while the instance runs.
    pub resources: BTreeMap<String, u64>,
    /// A global name the instance registers.
    pub global_name: Option<String>,
    /// Groups the instance joins.
    pub groups: Vec<String>,
    /// For a singleton: the lock that guards it; the instance starts once it is granted.
    pub singleton: Option<String>,
    /// How long to wait for the singleton's lock.
    pub lock_timeout: Duration,
    /// The actor the instance lives for (a supervisor): when it ends, for whatever reason,
    /// the agent stops the instance. `None` for an instance that outlives whoever started it
    /// (the app controller's: a controller that takes over adopts them).
    #[serde(default)]
    pub owner: Option<ActorId>,
}

/// Why an agent did not start an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NotStarted {
    /// The node had no room left for the instance's resources: another placer reserved them
    /// first (its plan was made from the same, slightly old, copy of the registry). Not a
    /// failure of the instance: plan again.
    #[error("{0}")]
    NoRoom(String),
    /// Anything else: no such module, a name or lease not taken, the start failed, no answer.
    #[error("{0}")]
    Failed(String),
    /// The node asked went down before it answered (its session ended): whatever it started
    /// went with it. Like the instances that ran there, a failure of the node, not of the
    /// instance (the app controller counts one node's death once).
    #[error("node {0} went down before it answered the start")]
    NodeDown(NodeId),
}

impl From<String> for NotStarted {
    fn from(reason: String) -> Self {
        NotStarted::Failed(reason)
    }
}

/// The agent's protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum AgentMsg {
    /// Starts an instance; answers its reference, or why it could not start. The asker
    /// waits for the answer for the given time: an instance that starts later than that is
    /// stopped again, since nobody would supervise it.
    Start(
        StartInstance,
        Duration,
        ReplyTo<Result<WireRef, NotStarted>>,
    ),
}

/// The node agent actor. Start it with [`Agent::start`].
pub struct Agent {
    registry: Registry,
    cluster: Cluster,
    /// The starts asked of this agent, by instance id, while they run, while their instances
    /// do, and while their askers may send them again.
    starts: Arc<parking_lot::Mutex<HashMap<String, Start>>>,
}

type Answer = ReplyTo<Result<WireRef, NotStarted>>;

/// One start asked of the agent.
struct Start {
    /// The askers waiting for it to end: the first request's, and those of the same request
    /// sent again meanwhile.
    waiting: Vec<Answer>,
    /// How it ended, once it has.
    outcome: Option<Result<WireRef, NotStarted>>,
    /// Whether the instance it started still runs.
    running: bool,
    /// No asker waits for it after this: it is forgotten then, unless it or its instance
    /// still runs.
    forget_after: Instant,
}

impl Start {
    /// Whether the start is still remembered at `now`.
    fn kept(&self, now: Instant) -> bool {
        self.outcome.is_none() || self.running || now < self.forget_after
    }
}

impl Agent {
    /// Starts this node's agent and registers it under [`AGENT_NAME`]. The node needs a
    /// cluster and a registry (see `Registry::start`).
    pub async fn start(node: &Node) -> Result<ActorRef<AgentMsg>, String> {
        let cluster = node.extension::<Cluster>().ok_or_else(|| {
            format!(
                "node {} has no cluster service: start one before the agent",
                node.id()
            )
        })?;
        let registry = node.extension::<Registry>().ok_or_else(|| {
            format!(
                "node {} has no registry: start one before the agent",
                node.id()
            )
        })?;
        let agent = node
            .start(Agent {
                registry: registry.clone(),
                cluster,
                starts: Arc::default(),
            })
            .await
            .map_err(|e| e.to_string())?;
        node.register_remote(AGENT_NAME, &agent)
            .map_err(|e| e.to_string())?;
        registry
            .join_group(AGENTS_GROUP, &agent)
            .await
            .map_err(|e| format!("cannot join the agents' group: {e}"))?;
        Ok(agent)
    }
}

impl Actor for Agent {
    type Msg = AgentMsg;

    async fn handle(&mut self, msg: AgentMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            AgentMsg::Start(request, answer_within, reply) => {
                let now = Instant::now();
                {
                    let mut starts = self.starts.lock();
                    starts.retain(|_, start| start.kept(now));
                    if let Some(start) = starts.get_mut(&request.instance) {
                        // The same request again: its asker lost the connection that
                        // carried the first.
                        match &start.outcome {
                            None => start.waiting.push(reply),
                            Some(outcome) => {
                                let _ = reply.send(outcome.clone());
                            }
                        }
                        return Ok(());
                    }
                    starts.insert(
                        request.instance.clone(),
                        Start {
                            waiting: vec![reply],
                            outcome: None,
                            running: false,
                            forget_after: now + answer_within,
                        },
                    );
                }
                // Each start runs on its own: a singleton may wait long for its lease.
                let (node, registry, cluster, starts) = (
                    ctx.node().clone(),
                    self.registry.clone(),
                    self.cluster.clone(),
                    self.starts.clone(),
                );
                // The asker's clock started before the request left: answer a little
                // before its end, or not at all.
                let deadline = now + answer_within.saturating_sub(late_margin(answer_within));
                tokio::spawn(async move {
                    let (instance, me) = (request.instance.clone(), node.id().clone());
                    let undo = Undo {
                        registry: registry.clone(),
                        instance: Some(instance.clone()),
                    };
                    // On a task of its own: a panic on the way (a factory's panic fails the
                    // start with an error instead) ends that task, not this one, which answers
                    // every asker waiting.
                    let started = tokio::spawn(async move {
                        start(&node, &registry, &cluster, request, deadline).await
                    })
                    .await;
                    let result = match started {
                        Ok(result) => result,
                        Err(panicked) => {
                            // Its reservation, if it made one, goes back.
                            undo.now().await;
                            Err(NotStarted::Failed(format!(
                                "the start of instance {instance} panicked: {panicked}"
                            )))
                        }
                    };
                    let outcome = match &result {
                        Ok(running) => {
                            tracing::info!(node = %me, %instance, actor = %running.wire.id, "instance started");
                            Ok(running.wire.clone())
                        }
                        Err(why) => {
                            tracing::warn!(node = %me, %instance, "instance not started: {why}");
                            Err(why.clone())
                        }
                    };
                    // Kept while it ran (`Start::kept`).
                    let waiting = match starts.lock().get_mut(&instance) {
                        Some(start) => {
                            start.outcome = Some(outcome.clone());
                            start.running = result.is_ok();
                            std::mem::take(&mut start.waiting)
                        }
                        None => Vec::new(),
                    };
                    if let Ok(running) = result {
                        // When the instance ends, what it held goes back.
                        tokio::spawn(running.watch(starts, instance));
                    }
                    for reply in waiting {
                        let _ = reply.send(outcome.clone());
                    }
                });
            }
        }
        Ok(())
    }
}

/// An instance started, with what is bound to it.
struct Running {
    wire: WireRef,
    started: ModuleActor,
    owner: Option<UntypedRef>,
    lease: Option<Lease>,
    undo: Undo,
}

impl Running {
    /// Waits for the instance's end (stopping it first if its owner ends), gives back what
    /// it held, and lets its start be forgotten.
    async fn watch(
        self,
        starts: Arc<parking_lot::Mutex<HashMap<String, Start>>>,
        instance: String,
    ) {
        let node = self.wire.id.node().clone();
        watch(self.started, self.owner, self.lease, self.undo, node).await;
        if let Some(start) = starts.lock().get_mut(&instance) {
            start.running = false;
        }
    }
}

async fn start(
    node: &Node,
    registry: &Registry,
    cluster: &Cluster,
    request: StartInstance,
    deadline: Instant,
) -> Result<Running, NotStarted> {
    let me = node.id().clone();
    if !node.has_module(&request.module) {
        return Err(NotStarted::Failed(format!(
            "node {me} has no module named {:?} (register it there with Node::register_module)",
            request.module
        )));
    }
    let reserved = !request.resources.is_empty();
    let undo = Undo {
        registry: registry.clone(),
        instance: reserved.then(|| request.instance.clone()),
    };
    if reserved
        && let Err(e) = registry
            .reserve(
                &request.instance,
                &me,
                &request.resources,
                cluster.resources(),
            )
            .await
    {
        // An answer lost on its way (a timeout after the leader committed the reservation)
        // leaves one that nothing would free until this node's session ends: unreserve it,
        // which does nothing if it was never made.
        if may_have_reserved(&e) {
            undo.now().await;
        }
        return Err(match e {
            RegistryError::Insufficient { .. } => NotStarted::NoRoom(e.to_string()),
            e => NotStarted::Failed(e.to_string()),
        });
    }
    let lease = match &request.singleton {
        Some(lock) => match registry.lock(lock, request.lock_timeout).await {
            Ok(lease) => Some(lease),
            Err(e) => {
                undo.now().await;
                return Err(NotStarted::Failed(format!(
                    "cannot take the singleton's lease {lock:?}: {e}"
                )));
            }
        },
        None => None,
    };
    // Bound to the lease before its `started` hook runs: a node that fences itself while the
    // hook runs (one waiting on the network, say) kills the instance too.
    let bind = |actor: &UntypedRef| {
        if let Some(lease) = &lease {
            lease.bind(actor.clone());
        }
    };
    let started = match node
        .start_module_with(&request.module, &request.args, bind)
        .await
    {
        Ok(started) => started,
        Err(e) => {
            release(lease).await;
            undo.now().await;
            return Err(NotStarted::Failed(e.to_string()));
        }
    };
    let bound = match bind_names(registry, &started, &request).await {
        Ok(()) if Instant::now() > deadline => Err(format!(
            "instance {} started after its asker stopped waiting; stopped again",
            request.instance
        )),
        bound => bound,
    };
    if let Err(e) = bound {
        started.actor.kill();
        started.actor.wait_for_exit().await;
        release(lease).await;
        undo.now().await;
        return Err(NotStarted::Failed(e));
    }
    Ok(Running {
        wire: started.to_wire(),
        owner: request.owner.map(|owner| UntypedRef::from_id(node, &owner)),
        started,
        lease,
        undo,
    })
}

async fn bind_names(
    registry: &Registry,
    started: &ModuleActor,
    request: &StartInstance,
) -> Result<(), String> {
    if let Some(name) = &request.global_name {
        registry
            .register_module_actor(name, started)
            .await
            .map_err(|e| format!("cannot register the global name {name:?}: {e}"))?;
    }
    for group in &request.groups {
        registry
            .join_group_module_actor(group, started)
            .await
            .map_err(|e| format!("cannot join group {group:?}: {e}"))?;
    }
    Ok(())
}

/// Waits for the instance's end, and gives back what it held. Stops it first when `owner`
/// ends.
async fn watch(
    started: ModuleActor,
    owner: Option<UntypedRef>,
    lease: Option<Lease>,
    undo: Undo,
    node: NodeId,
) {
    let instance = &started.actor;
    let owner_ended = async {
        match &owner {
            Some(owner) => owner.wait_for_exit().await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        reason = instance.wait_for_exit() => reason,
        why = owner_ended => {
            tracing::info!(%node, actor = %instance.id(), owner = ?owner.as_ref().map(|o| o.id().clone()), %why, "the instance's owner ended; stopping the instance");
            instance.kill();
            instance.wait_for_exit().await
        }
    };
    tracing::debug!(%node, actor = %started.actor.id(), %reason, "instance ended");
    release(lease).await;
    undo.now().await;
}

async fn release(lease: Option<Lease>) {
    if let Some(lease) = lease
        && !lease.is_lost()
        && let Err(e) = lease.release().await
    {
        tracing::warn!("could not release a singleton's lease (its session's end will): {e}");
    }
}

/// Whether a reservation may have been made though `reserve` failed with `error`: only a
/// definite refusal says it was not.
fn may_have_reserved(error: &RegistryError) -> bool {
    !matches!(
        error,
        RegistryError::Insufficient { .. } | RegistryError::ReservationTaken { .. }
    )
}

/// Frees an instance's reservation.
struct Undo {
    registry: Registry,
    instance: Option<String>,
}

impl Undo {
    async fn now(self) {
        if let Some(instance) = self.instance
            && let Err(e) = self.registry.unreserve(&instance).await
        {
            tracing::warn!(%instance, "could not free the reservation (its node's session end will): {e}");
        }
    }
}

/// The nodes with an agent as placement sees them: capacity, labels and reservations from
/// this node's copies of the member table and the registry; `instances` counts the
/// instances of the role being placed on a node.
pub fn offers(
    registry: &Registry,
    cluster: &Cluster,
    instances: impl Fn(&NodeId) -> usize,
) -> Vec<Offer> {
    let agents: HashSet<NodeId> = agents(registry)
        .iter()
        .map(|a| a.id().node().clone())
        .collect();
    live_nodes(cluster)
        .into_iter()
        .filter(|(node, _, _)| agents.contains(node))
        .map(|(node, capacity, labels)| Offer {
            reserved: registry.reserved(&node),
            instances: instances(&node),
            node: node.name().to_owned(),
            capacity,
            labels,
        })
        .collect()
}

/// This node and the members that are up, with their capacity and labels.
fn live_nodes(cluster: &Cluster) -> Vec<(NodeId, Capacity, Labels)> {
    let mut nodes: Vec<(NodeId, Capacity, Labels)> = cluster
        .members()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up)
        .map(|m| (m.node, m.resources, m.labels))
        .collect();
    nodes.push((
        cluster.node().id().clone(),
        cluster.resources().clone(),
        cluster.labels().clone(),
    ));
    nodes
}

/// The agent of the node named `name` that [`offers`] offered: the one of its live
/// incarnation. A node that restarted is a new incarnation, and the agent of its old one stays
/// in the registry's group until the old session ends; picked by name alone, a start could go
/// to that dead agent and fail.
pub fn agent_on(registry: &Registry, cluster: &Cluster, name: &str) -> Option<ActorRef<AgentMsg>> {
    let live: HashSet<NodeId> = live_nodes(cluster)
        .into_iter()
        .map(|(node, _, _)| node)
        .filter(|node| node.name() == name)
        .collect();
    agents(registry)
        .into_iter()
        .find(|agent| live.contains(agent.id().node()))
}

/// The agents of the cluster, by node, from this node's copy of the registry.
pub fn agents(registry: &Registry) -> Vec<ActorRef<AgentMsg>> {
    registry.group::<AgentMsg>(AGENTS_GROUP)
}

/// How long before the asker's end an agent gives up answering: the request's trip, and the
/// answer's, take some of the asker's time.
fn late_margin(answer_within: Duration) -> Duration {
    (answer_within / 4).min(Duration::from_secs(1))
}

/// Asks an agent to start an instance, waiting up to `timeout` for the answer (the agent
/// stops an instance that started too late for it).
///
/// While the agent's node is a member but not connected (a connection closed and dialed
/// again), the request waits for it. If the connection that carried the request ends before
/// the answer came, the request is sent again once the nodes are connected: the agent answers
/// it with the first one's instance, never a second one. A node declared down meanwhile is
/// [`NotStarted::NodeDown`].
pub async fn start_on(
    cluster: &Cluster,
    agent: &ActorRef<AgentMsg>,
    request: StartInstance,
    timeout: Duration,
) -> Result<WireRef, NotStarted> {
    let node = agent.id().node().clone();
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        // A remote agent is alive to this node while its node is connected; a local one is
        // asked whatever it is (a stopped one answers `Dead`).
        if agent.is_local() || agent.is_alive() {
            let left = deadline.saturating_duration_since(Instant::now());
            match agent
                .ask(|reply| AgentMsg::Start(request.clone(), left, reply), left)
                .await
            {
                Ok(answer) => return answer,
                // Nothing was sent, or what was sent is lost with its connection: the nodes
                // are apart for now.
                Err(error @ AskError::ConnectionLost { .. }) => last = Some(error),
                Err(error @ AskError::Unreachable { .. }) if !agent.is_alive() => {
                    last = Some(error)
                }
                Err(error) => return Err(unanswered(&node, error)),
            }
        }
        if Instant::now() >= deadline {
            return Err(match last {
                Some(error) => unanswered(&node, error),
                None => {
                    NotStarted::Failed(format!("node {node} was not connected within {timeout:?}"))
                }
            });
        }
        if !cluster.members().iter().any(|m| m.node == node) {
            return Err(NotStarted::NodeDown(node));
        }
        let wait = RESEND_INTERVAL.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
    }
}

/// How often [`start_on`] tries again to reach an agent whose connection ended.
const RESEND_INTERVAL: Duration = Duration::from_millis(20);

/// Why a start asked of node `node`'s agent got no answer.
fn unanswered(node: &NodeId, error: AskError) -> NotStarted {
    match error {
        AskError::Stopped {
            reason: ExitReason::NodeDown(down),
            ..
        } if &down == node => NotStarted::NodeDown(down),
        e => NotStarted::Failed(format!("node {node}'s agent did not answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_runtime::ActorId;

    #[test]
    fn a_reservation_is_undone_unless_it_was_refused_for_sure() {
        let node = NodeId::new("n1", 1);
        let timeout = RegistryError::Timeout {
            what: "reserve".into(),
            timeout: Duration::from_secs(5),
            last: "no leader".into(),
        };
        let unknown = RegistryError::Unknown {
            what: "reserve".into(),
            reason: "the leader stepped down".into(),
        };
        assert!(may_have_reserved(&timeout));
        assert!(may_have_reserved(&unknown));
        assert!(may_have_reserved(&RegistryError::NoSession(node.clone())));
        let short = RegistryError::Insufficient {
            node: node.to_string(),
            resource: "cpu".into(),
            need: 2,
            free: 1,
        };
        let taken = RegistryError::ReservationTaken {
            id: "a/r/0@x#1".into(),
            node,
            need: BTreeMap::new(),
        };
        // Unreserving these would free a reservation of someone else's, or nothing.
        assert!(!may_have_reserved(&short));
        assert!(!may_have_reserved(&taken));
    }

    #[test]
    fn a_start_whose_node_went_down_says_so() {
        let node = NodeId::new("n1", 1);
        let agent = ActorId::new(node.clone(), 7);
        let down = AskError::Stopped {
            actor: agent.clone(),
            reason: ExitReason::NodeDown(node.clone()),
        };
        assert_eq!(unanswered(&node, down), NotStarted::NodeDown(node.clone()));
        // Another node's death, or no answer in time, is a failure of the start.
        let other = AskError::Stopped {
            actor: agent.clone(),
            reason: ExitReason::NodeDown(NodeId::new("n2", 1)),
        };
        assert!(matches!(unanswered(&node, other), NotStarted::Failed(_)));
        let late = AskError::Timeout {
            actor: agent,
            after: Duration::from_secs(1),
        };
        assert!(matches!(unanswered(&node, late), NotStarted::Failed(_)));
    }
}
