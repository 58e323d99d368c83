//! A test worker that reports its starts and stops, and helpers.

use std::future::Future;
use std::time::Duration;

use ensemble::prelude::*;
use ensemble::supervisor::{SupervisorRef, SupervisorSpec};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const ASK: Duration = Duration::from_secs(5);

pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

pub(crate) fn node() -> Node {
    Node::new(NodeConfig::new("test")).expect("node")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    Started(&'static str, ActorId, Instant),
    Stopping(&'static str, ActorId),
}

pub(crate) enum Work {
    /// End with an error.
    Crash,
    /// Stop normally.
    Finish,
    /// Reply with the instance's id.
    Ping(ReplyTo<ActorId>),
    /// Never return from the handler.
    Hang,
}

pub(crate) struct Worker {
    pub(crate) name: &'static str,
    pub(crate) events: mpsc::UnboundedSender<Ev>,
    pub(crate) fail_start: bool,
}

impl Worker {
    pub(crate) fn factory(
        name: &'static str,
        events: &mpsc::UnboundedSender<Ev>,
    ) -> impl Fn() -> Worker + Send + Sync + 'static {
        let events = events.clone();
        move || Worker {
            name,
            events: events.clone(),
            fail_start: false,
        }
    }
}

impl Actor for Worker {
    type Msg = Work;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if self.fail_start {
            return Err(ActorError::new("cannot open the database"));
        }
        let _ = self
            .events
            .send(Ev::Started(self.name, ctx.id().clone(), Instant::now()));
        Ok(())
    }

    async fn handle(&mut self, msg: Work, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Work::Crash => return Err(ActorError::new("crashed on purpose")),
            Work::Finish => ctx.stop(),
            Work::Ping(reply) => {
                let _ = reply.send(ctx.id().clone());
            }
            Work::Hang => std::future::pending::<()>().await,
        }
        Ok(())
    }

    async fn stopping(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        let _ = self.events.send(Ev::Stopping(self.name, ctx.id().clone()));
    }
}

/// The running instance of a child, as a typed worker ref.
pub(crate) async fn child(sup: &SupervisorRef, id: &str) -> Option<ActorRef<Work>> {
    let children = sup.which_children().await.expect("which_children");
    children
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| c.actor)
        .and_then(|a| a.downcast::<Work>())
}

/// The running instance of a child supervisor.
pub(crate) async fn child_supervisor(sup: &SupervisorRef, id: &str) -> Option<SupervisorRef> {
    let children = sup.which_children().await.ok()?;
    children
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| c.actor)
        .and_then(|a| SupervisorRef::from_untyped(&a))
}

/// The ids of the running instances of these children (None where not running).
pub(crate) async fn instances(sup: &SupervisorRef, ids: &[&str]) -> Vec<Option<ActorId>> {
    let children = sup.which_children().await.expect("which_children");
    ids.iter()
        .map(|id| {
            children
                .iter()
                .find(|c| c.id == *id)
                .and_then(|c| c.actor.as_ref())
                .map(|a| a.id().clone())
        })
        .collect()
}

pub(crate) async fn start(node: &Node, spec: SupervisorSpec) -> SupervisorRef {
    within("the supervisor to start", SupervisorRef::start(node, spec))
        .await
        .expect("supervisor start")
}
