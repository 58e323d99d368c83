//! `SupervisorRef`: the API to a running supervisor.

use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::{ActorRef, ExitReason, Node, SpawnError, UntypedRef};
use parking_lot::Mutex;

use crate::error::SupervisorError;
use crate::snapshot::{ChildCounts, ChildInfo, TreeSnapshot};
use crate::spec::{ChildSpec, SupervisorSpec};
use crate::supervisor::{Request, Supervisor, SupervisorMsg};

/// How long supervisor operations wait for an answer by default: long, since terminating a
/// child waits for its shutdown.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a negotiated start ([`SupervisorRef::start_children`]) granted.
#[derive(Clone, Debug)]
pub struct Granted {
    /// How many copies were asked for.
    pub asked: usize,
    /// The copies started: id and actor.
    pub children: Vec<(String, UntypedRef)>,
    /// Why fewer than asked were started, if they were.
    pub shortfall: Option<String>,
}

/// The top-level supervisors started on a node, kept as a node extension so that the admin API
/// and the dashboard can show every supervision tree of the node.
#[derive(Clone, Default)]
struct TopLevel(Arc<Mutex<Vec<SupervisorRef>>>);

/// A handle to a running supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    timeout: Duration,
}

impl SupervisorRef {
    /// Starts a top-level supervisor and its children, in order. Fails with the first child
    /// that fails to start (its id and error are in the `StartFailed` reason).
    pub async fn start(node: &Node, spec: SupervisorSpec) -> Result<SupervisorRef, SpawnError> {
        let actor = node.start(Supervisor::new(spec)).await?;
        let supervisor = Self::from_actor(actor);
        let top = match node.extension::<TopLevel>() {
            Some(top) => top,
            None => {
                let top = TopLevel::default();
                node.set_extension(top.clone());
                top
            }
        };
        let mut list = top.0.lock();
        list.retain(|s| s.actor.is_alive());
        list.push(supervisor.clone());
        drop(list);
        Ok(supervisor)
    }

    /// The top-level supervisors running on `node` (those started with [`start`](Self::start)),
    /// in start order. Their children that are supervisors are in their
    /// [`snapshot`](Self::snapshot)s.
    pub fn top_level(node: &Node) -> Vec<SupervisorRef> {
        let Some(top) = node.extension::<TopLevel>() else {
            return Vec::new();
        };
        let mut list = top.0.lock();
        list.retain(|s| s.actor.is_alive());
        list.clone()
    }

    /// A handle for a supervisor's actor.
    pub fn from_actor(actor: ActorRef<SupervisorMsg>) -> Self {
        Self {
            actor,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// A handle for an untyped actor, if it is a supervisor (for children of kind supervisor).
    pub fn from_untyped(actor: &UntypedRef) -> Option<Self> {
        actor.downcast().map(Self::from_actor)
    }

    /// The same handle with another call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The supervisor's actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// Adds a child and starts it (after the existing ones); the spec is dropped if it fails,
    /// except when no node can take it now ([`SupervisorError::Unplaced`]): then it starts
    /// as soon as a node can.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<UntypedRef, SupervisorError> {
        self.actor
            .ask(
                |r| SupervisorMsg(Request::StartChild(Box::new(spec), r)),
                self.timeout,
            )
            .await?
    }

    /// A negotiated start: asks for `count` copies of `template` (ids `<id>-0`, `<id>-1`,
    /// ...), placed one after the other, and accepts as few as `min`. Copies that no node can
    /// take are not kept. Answers what was granted; with fewer than `min`, the copies started
    /// are stopped and deleted again and the error says how many could be placed and why not
    /// more.
    pub async fn start_children(
        &self,
        template: ChildSpec,
        count: usize,
        min: usize,
    ) -> Result<Granted, SupervisorError> {
        if min > count {
            // Nothing could satisfy it: refused before anything starts.
            return Err(SupervisorError::NotEnough {
                id: template.id().to_owned(),
                asked: count,
                min,
                placed: 0,
                reason: format!(
                    "at least {min} accepted of {count} asked for: ask for at least as many as \
                     the fewest accepted"
                ),
            });
        }
        let mut children = Vec::new();
        let mut shortfall = None;
        for k in 0..count {
            let id = format!("{}-{k}", template.id());
            match self.start_child(template.clone().with_id(&id)).await {
                Ok(actor) => children.push((id, actor)),
                Err(SupervisorError::Unplaced { reason, .. }) => {
                    let _ = self.delete_child(&id).await;
                    shortfall = Some(reason);
                    break;
                }
                Err(err) => {
                    shortfall = Some(err.to_string());
                    break;
                }
            }
        }
        if children.len() < min {
            for (id, _) in &children {
                let _ = self.terminate_child(id).await;
                let _ = self.delete_child(id).await;
            }
            return Err(SupervisorError::NotEnough {
                id: template.id().to_owned(),
                asked: count,
                min,
                placed: children.len(),
                reason: shortfall.unwrap_or_default(),
            });
        }
        Ok(Granted {
            asked: count,
            children,
            shortfall,
        })
    }

    /// Stops a child by its shutdown spec and keeps its spec (a temporary child's spec is
    /// dropped).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.actor
            .ask(
                |r| SupervisorMsg(Request::TerminateChild(id, r)),
                self.timeout,
            )
            .await?
    }

    /// Starts a stopped child again.
    pub async fn restart_child(&self, id: &str) -> Result<UntypedRef, SupervisorError> {
        let id = id.to_owned();
        self.actor
            .ask(
                |r| SupervisorMsg(Request::RestartChild(id, r)),
                self.timeout,
            )
            .await?
    }

    /// Drops the spec of a stopped child.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.actor
            .ask(|r| SupervisorMsg(Request::DeleteChild(id, r)), self.timeout)
            .await?
    }

    /// The children, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        Ok(self
            .actor
            .ask(|r| SupervisorMsg(Request::WhichChildren(r)), self.timeout)
            .await?)
    }

    /// How many children of which kind.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        Ok(self
            .actor
            .ask(|r| SupervisorMsg(Request::CountChildren(r)), self.timeout)
            .await?)
    }

    /// The whole tree below this supervisor.
    pub async fn snapshot(&self) -> Result<TreeSnapshot, SupervisorError> {
        Ok(self
            .actor
            .ask(|r| SupervisorMsg(Request::Snapshot(r)), self.timeout)
            .await?)
    }

    /// Stops the supervisor gracefully: its children stop in reverse start order.
    pub fn stop(&self) {
        self.actor.stop_with(ExitReason::Shutdown);
    }

    /// Waits until the supervisor has ended and returns why.
    pub async fn wait_for_exit(&self) -> ExitReason {
        self.actor.wait_for_exit().await
    }
}
