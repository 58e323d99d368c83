//! Actors: the [`Actor`] trait, the [`Context`] an actor runs in, and [`ActorRef`], the handle
//! that reaches it.
//!
//! # Life of an actor
//!
//! 1. It is spawned (by a [`Node`](crate::Node) or, as a child, by another actor's context) and
//!    gets its own task. `started` runs before any message.
//! 2. It handles one message at a time from its bounded mailbox. System signals (stop, exit,
//!    down) overtake queued user messages.
//! 3. It ends when it stops itself, is stopped or killed, a hook returns an error or panics, or
//!    a linked actor exits abnormally while it does not trap exits. Its children are stopped
//!    first (after its `stopping` hook, which may stop them in an order of its own); then
//!    `stopped` runs (except when killed, or when `started` failed); then links, monitors and
//!    its parent are told, and its local names are released.
//!
//! A panic or error in one actor never takes down the node or any actor not linked to it.

mod actor_ref;
mod cell;
mod context;
mod mailbox;
mod monitor;
mod reply;
mod run;
mod signal;
mod untyped;

use std::future::Future;

pub use actor_ref::ActorRef;
pub use context::{Context, TimerRef};
pub use monitor::{Down, MonitorRef};
pub use reply::ReplyTo;
pub use untyped::UntypedRef;

pub(crate) use cell::{Cell, CellHandle, Watcher};
pub(crate) use mailbox::Push;
pub(crate) use reply::ReplyInner;
pub(crate) use run::{panic_message, run_actor};
pub(crate) use signal::Signal;

use crate::error::ActorError;
use crate::exit::ExitReason;
use crate::id::ActorId;

/// The longest wait a deadline or a timer period stands for: a century. `Duration::MAX`, the
/// usual way to say "no timeout", would overflow an `Instant`.
pub(crate) const FOREVER: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The instant `timeout` from now (tokio's clock, so paused time applies), `timeout` capped at
/// [`FOREVER`].
pub(crate) fn deadline_after(timeout: std::time::Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout.min(FOREVER)
}

/// What a hook returns: `Err` ends the actor with [`ExitReason::Failed`].
pub type ActorResult = Result<(), ActorError>;

/// An actor: state plus a handler for one protocol type.
///
/// Implement `handle` (as an `async fn`); the other hooks have defaults.
///
/// ```
/// use ensemble_runtime::prelude::*;
///
/// struct Counter(u64);
///
/// enum CounterMsg {
///     Add(u64),
///     Get(ReplyTo<u64>),
/// }
///
/// impl Actor for Counter {
///     type Msg = CounterMsg;
///
///     async fn handle(&mut self, msg: CounterMsg, _ctx: &mut Context<Self>) -> ActorResult {
///         match msg {
///             CounterMsg::Add(n) => self.0 += n,
///             CounterMsg::Get(reply) => {
///                 let _ = reply.send(self.0);
///             }
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::new(NodeConfig::new("doc"))?;
/// let counter = node.spawn(Counter(0))?;
/// counter.tell(CounterMsg::Add(2)).await?;
/// let total = counter.ask(CounterMsg::Get, std::time::Duration::from_secs(1)).await?;
/// assert_eq!(total, 2);
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait Actor: Sized + Send + 'static {
    /// The protocol: every message the actor takes, usually an enum.
    type Msg: Send + 'static;

    /// Runs once before the first message. An error (or panic) ends the actor without running
    /// `stopped`, and makes `start` report the failure.
    fn started(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ActorResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ActorResult> + Send;

    /// A linked actor exited while this actor traps exits (see [`Context::trap_exit`]).
    /// The default ignores it.
    fn on_exit(
        &mut self,
        from: ActorId,
        reason: ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ActorResult> + Send {
        let _ = (from, reason, ctx);
        async { Ok(()) }
    }

    /// A monitored actor ended (see [`Context::monitor`]). The default ignores it.
    fn on_down(
        &mut self,
        down: Down,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ActorResult> + Send {
        let _ = (down, ctx);
        async { Ok(()) }
    }

    /// Runs once when the actor has begun to end, before its children are stopped, so it can
    /// stop them itself in an order of its choosing (supervisors stop theirs in reverse start
    /// order); children still running afterwards are stopped by the runtime. Not run when the
    /// actor was killed or its `started` failed. A panic here is logged and otherwise ignored.
    fn stopping(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }

    /// Runs once when the actor ends, after its children have stopped; not when it was killed
    /// or its `started` failed. A panic here is logged and otherwise ignored.
    fn stopped(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// Options for spawning an actor.
#[derive(Clone, Default)]
pub struct SpawnOptions {
    pub(crate) capacity: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) linked: bool,
    pub(crate) before_start: Option<BeforeStart>,
}

/// What [`SpawnOptions::before_start`] runs.
pub(crate) type BeforeStart = std::sync::Arc<dyn Fn(&UntypedRef) + Send + Sync>;

impl std::fmt::Debug for SpawnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnOptions")
            .field("capacity", &self.capacity)
            .field("name", &self.name)
            .field("linked", &self.linked)
            .field("before_start", &self.before_start.is_some())
            .finish()
    }
}

impl SpawnOptions {
    /// Defaults: the node's mailbox capacity, no name, not linked.
    pub fn new() -> Self {
        Self::default()
    }

    /// The mailbox capacity (at least 1).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Registers this local name for the actor before it starts; the spawn fails if it is taken.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Links the child to the spawning actor (no effect for top-level actors, which have no
    /// parent actor to link to).
    pub fn linked(mut self) -> Self {
        self.linked = true;
        self
    }

    /// Runs `hook` with the new actor once it exists and before its task first runs, so
    /// before its `started` hook. For what must hold for the whole of the actor's life, the
    /// hook included: binding it to a lease, say, so that the hook can read what the binding
    /// set up, and a lease already lost kills the actor before `started` runs (a kill made
    /// before the task is set up always wins over `started`). The hook runs on the spawning
    /// thread; keep it short. If it panics, the actor is killed and the panic goes on to the
    /// caller of the spawn.
    pub fn before_start(mut self, hook: impl Fn(&UntypedRef) + Send + Sync + 'static) -> Self {
        self.before_start = Some(std::sync::Arc::new(hook));
        self
    }
}
