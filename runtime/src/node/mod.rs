//! The node: the local runtime that actors run in.
//!
//! A [`Node`] owns the table of live actors and the local name table, spawns top-level actors
//! and shuts everything down. It is a cheap handle (`Clone`); every actor's context holds one.
//!
//! # Shutdown
//!
//! [`Node::shutdown`] refuses new spawns, asks every top-level actor to stop (each stops its own
//! children before itself, so children always end before their parents), and waits for all to
//! end within the configured timeout. What is still running then is killed.

mod config;
mod dead_letters;
mod deadlines;

use std::any::{Any, TypeId, type_name};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::mapref::entry::Entry;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

pub use config::{ConfigError, DEFAULT_MAILBOX_CAPACITY, DEFAULT_SHUTDOWN_TIMEOUT, NodeConfig};
pub(crate) use dead_letters::DeadLetters;
pub(crate) use deadlines::Deadlines;

use crate::actor::{
    Actor, ActorRef, Cell, CellHandle, Context, SpawnOptions, UntypedRef, run_actor,
};
use crate::error::{LookupError, RegisterError, SpawnError};
use crate::exit::ExitReason;
use crate::hashing::{self, DashMap};
use crate::id::{ActorId, NodeId};
use crate::remote::{FactoryModule, Remote, RemoteMessage};

/// How long killed actors get to unwind after a shutdown deadline before `shutdown` returns.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// A handle to the local runtime.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    id: NodeId,
    config: NodeConfig,
    /// Actors run here even when spawned from outside the runtime.
    pub(crate) runtime: Handle,
    next_seq: AtomicU64,
    /// The number of the next timer an actor of this node starts.
    next_timer: AtomicU64,
    actors: DashMap<u64, CellHandle>,
    /// Live actors, kept apart from `actors.len()` (which locks every shard) so that each exit
    /// can cheaply tell whether the node became idle.
    live: AtomicUsize,
    idle: Notify,
    pub(crate) names: DashMap<String, CellHandle>,
    shutting_down: AtomicBool,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) deadlines: Arc<Deadlines>,
    /// Traffic with other nodes (idle until a cluster service connects some).
    pub(crate) remote: Remote,
    /// Services attached to the node by the layers above (the cluster, the registry), by type.
    extensions: DashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

/// Why a node could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// There is no tokio runtime to run actors on.
    #[error(
        "Node::new needs a tokio runtime: call it inside #[tokio::main], a #[tokio::test] or Runtime::enter"
    )]
    NoRuntime,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One live actor, as listed by [`Node::actors`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorInfo {
    /// Its id.
    pub id: ActorId,
    /// The Rust type of the actor.
    pub type_name: &'static str,
    /// The actor that spawned it, if any.
    pub parent: Option<ActorId>,
    /// The local names it holds.
    pub names: Vec<String>,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
}

/// What [`Node::shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Actors that stopped before the deadline.
    pub stopped: usize,
    /// Actors killed after the deadline.
    pub killed: usize,
    /// Actors still running after being killed: blocked in code that never reaches an `.await`.
    pub unresponsive: usize,
}

impl Node {
    /// Starts a local node on the current tokio runtime.
    pub fn new(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let runtime = Handle::try_current().map_err(|_| NodeError::NoRuntime)?;
        let incarnation = config.incarnation.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1)
        });
        let id = NodeId::new(config.name.as_str(), incarnation);
        tracing::debug!(node = %id, "node started");
        Ok(Node {
            inner: Arc::new(NodeInner {
                id,
                config,
                runtime,
                next_seq: AtomicU64::new(1),
                next_timer: AtomicU64::new(1),
                actors: hashing::dash_map(),
                live: AtomicUsize::new(0),
                idle: Notify::new(),
                names: hashing::dash_map(),
                shutting_down: AtomicBool::new(false),
                dead_letters: DeadLetters::new(),
                deadlines: Arc::new(Deadlines::new()),
                remote: Remote::new(),
                extensions: hashing::dash_map(),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Spawns a top-level actor. It starts running at once; `started` runs before its first
    /// message.
    pub fn spawn<A: Actor>(&self, actor: A) -> Result<ActorRef<A::Msg>, SpawnError> {
        self.spawn_actor(actor, SpawnOptions::new(), None, None, &|_| {})
    }

    /// Spawns a top-level actor with options.
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        self.spawn_actor(actor, options, None, None, &|_| {})
    }

    /// Spawns a top-level actor and waits until its `started` hook has run, reporting a failure
    /// as [`SpawnError::StartFailed`].
    pub async fn start<A: Actor>(&self, actor: A) -> Result<ActorRef<A::Msg>, SpawnError> {
        self.start_actor(actor, SpawnOptions::new(), None).await
    }

    /// Like [`start`](Self::start), with options.
    pub async fn start_with<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        self.start_actor(actor, options, None).await
    }

    pub(crate) async fn start_actor<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
        parent: Option<CellHandle>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        self.spawn_starting(actor, options, parent, &|_| {})?
            .started()
            .await
    }

    /// Spawns an actor; answers at once, while its `started` hook runs, with the actor and
    /// the outcome of that hook to wait for. `before_run` runs as
    /// [`SpawnOptions::before_start`] does.
    pub(crate) fn spawn_starting<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
        parent: Option<CellHandle>,
        before_run: &dyn Fn(&UntypedRef),
    ) -> Result<Starting<A::Msg>, SpawnError> {
        let (tx, outcome) = oneshot::channel();
        let actor_ref = self.spawn_actor(actor, options, parent, Some(tx), before_run)?;
        Ok(Starting {
            actor: actor_ref,
            type_name: type_name::<A>(),
            outcome,
        })
    }

    pub(crate) fn spawn_actor<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
        parent: Option<CellHandle>,
        started: Option<oneshot::Sender<Result<(), ExitReason>>>,
        before_run: &dyn Fn(&UntypedRef),
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(SpawnError::ShuttingDown {
                node: inner.id.clone(),
            });
        }
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let capacity = options.capacity.unwrap_or(inner.config.mailbox_capacity);
        let cell = Arc::new(Cell::new(
            ActorId::new(inner.id.clone(), seq),
            capacity,
            self.clone(),
            type_name::<A>,
            parent.clone(),
        ));
        let handle: CellHandle = cell.clone();
        if let Some(name) = &options.name {
            self.register_cell(name, &handle).map_err(|err| match err {
                RegisterError::NameTaken { name, holder } => SpawnError::NameTaken {
                    type_name: type_name::<A>(),
                    name,
                    holder,
                },
                RegisterError::Stopped { .. } | RegisterError::NotLocal { .. } => {
                    unreachable!("a new cell is alive and local")
                }
            })?;
        }
        if let Some(parent) = &parent {
            parent.core().add_child(handle.clone());
            if options.linked {
                parent.core().add_link(handle.clone());
                cell.core.add_link(parent.clone());
            }
        }
        inner.actors.insert(seq, handle);
        inner.live.fetch_add(1, Ordering::AcqRel);

        let actor_ref = ActorRef::from_cell(cell.clone());
        // Before the task exists: nothing of the actor, its `started` hook included, runs
        // before these (a kill they make aborts the task as it is set up, below). A hook that
        // panics kills the actor, whose task still ends it in the node's tables, and the
        // panic goes on to the caller.
        let hooks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(hook) = &options.before_start {
                hook(&actor_ref.untyped());
            }
            before_run(&actor_ref.untyped());
        }));
        if hooks.is_err() {
            actor_ref.kill();
        }
        let ctx = Context::new(cell.clone(), started);
        let task = inner.runtime.spawn(run_actor(actor, ctx));
        cell.set_abort_handle(task.abort_handle());
        if let Err(panic) = hooks {
            std::panic::resume_unwind(panic);
        }
        // A shutdown that began after the check above did not see this actor: stop it here.
        if parent.is_none() && inner.shutting_down.load(Ordering::Acquire) {
            actor_ref.stop_with(ExitReason::Shutdown);
        }
        Ok(actor_ref)
    }

    /// Registers a local name for an actor; released when the actor ends.
    pub fn register_local<M: Send + 'static>(
        &self,
        name: impl Into<String>,
        actor: &ActorRef<M>,
    ) -> Result<(), RegisterError> {
        let name = name.into();
        match actor.handle() {
            // An actor of another node of this process is local to that node, not this one.
            Some(cell) if cell.id().node() == self.id() => self.register_cell(&name, &cell),
            _ => Err(RegisterError::NotLocal {
                name,
                actor: actor.id().clone(),
            }),
        }
    }

    /// Enters the name in the node's table and in the actor's own list (which its end
    /// clears the table from) under the table entry's lock, so an unregistration of the same
    /// name never leaves one without the other.
    fn register_cell(&self, name: &str, cell: &CellHandle) -> Result<(), RegisterError> {
        let stopped = || RegisterError::Stopped {
            name: name.to_owned(),
            actor: cell.id().clone(),
        };
        match self.inner.names.entry(name.to_owned()) {
            Entry::Occupied(mut entry) => {
                let holder = entry.get();
                if holder.core().is_alive() && holder.id() != cell.id() {
                    return Err(RegisterError::NameTaken {
                        name: name.to_owned(),
                        holder: holder.id().clone(),
                    });
                }
                if !cell.core().add_name(name) {
                    return Err(stopped());
                }
                // A stale entry of an actor that has just ended, or a re-registration.
                entry.insert(cell.clone());
            }
            Entry::Vacant(entry) => {
                if !cell.core().add_name(name) {
                    return Err(stopped());
                }
                entry.insert(cell.clone());
            }
        }
        // If the actor ended meanwhile, its finalization may have missed this entry.
        if !cell.core().is_alive() {
            self.inner
                .names
                .remove_if(name, |_, holder| holder.id() == cell.id());
        }
        Ok(())
    }

    /// Registers a local name that other nodes can look up too (`Cluster::whereis`), which
    /// needs messages of type `M` to cross nodes. Released when the actor ends.
    pub fn register_remote<M: RemoteMessage>(
        &self,
        name: impl Into<String>,
        actor: &ActorRef<M>,
    ) -> Result<(), RegisterError> {
        let name = name.into();
        // An actor of another node of this process is local to that node, not this one.
        let Some(cell) = actor.local().filter(|cell| cell.id.node() == self.id()) else {
            return Err(RegisterError::NotLocal {
                name,
                actor: actor.id().clone(),
            });
        };
        self.register_cell(&name, &(cell.clone() as CellHandle))?;
        self.inner.remote.export(cell);
        Ok(())
    }

    /// Registers an actor module under `name`, so that other nodes can start actors of it here
    /// with `Cluster::spawn_remote(node, name, &args)`: `factory` makes the actor from its
    /// arguments. Replaces a module of the same name.
    pub fn register_module<A, Args, F>(&self, name: impl Into<String>, factory: F)
    where
        A: Actor,
        A::Msg: RemoteMessage,
        Args: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(Args) -> A + Send + Sync + 'static,
    {
        let module = FactoryModule {
            factory,
            _args: std::marker::PhantomData,
        };
        self.inner
            .remote
            .modules
            .insert(name.into(), Arc::new(module));
    }

    /// Starts an actor of a module registered on this node with [`register_module`], from
    /// arguments encoded as MessagePack (as `rmp_serde::to_vec_named` writes them), waiting
    /// until its `started` hook has run. The actor is reachable from other nodes.
    ///
    /// [`register_module`]: Node::register_module
    pub async fn start_module(
        &self,
        module: &str,
        args: &[u8],
    ) -> Result<crate::remote::ModuleActor, SpawnError> {
        self.start_module_with(module, args, |_| {}).await
    }

    /// Like [`start_module`](Self::start_module), giving the actor to `before_started` once
    /// it exists and before its task first runs (so before its `started` hook): to bind it to
    /// a lease, say, so that it is killed with the lease even while it starts, and its hook
    /// can read the lease's token ([`SpawnOptions::before_start`] does the same for an actor
    /// spawned directly).
    pub async fn start_module_with(
        &self,
        module: &str,
        args: &[u8],
        before_started: impl Fn(&crate::UntypedRef),
    ) -> Result<crate::remote::ModuleActor, SpawnError> {
        let failed = |reason: String| SpawnError::Remote {
            node: self.id().clone(),
            module: module.to_owned(),
            reason,
        };
        let found = self
            .inner
            .remote
            .modules
            .get(module)
            .map(|m| m.value().clone())
            .ok_or_else(|| {
                failed(format!(
                    "no module named {module:?} is registered here (register it with Node::register_module)"
                ))
            })?;
        found
            .start(self, module, args, &before_started)
            .await
            .map_err(failed)
    }

    /// Whether a module of this name is registered on this node.
    pub fn has_module(&self, module: &str) -> bool {
        self.inner.remote.modules.contains_key(module)
    }

    /// Attaches a service to this node, one per type, replacing an earlier one of the same
    /// type. The layers above the runtime attach theirs (the cluster service, the registry
    /// handle), so that code holding only a node or an actor context can reach them.
    pub fn set_extension<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.inner
            .extensions
            .insert(TypeId::of::<T>(), Box::new(value));
    }

    /// Detaches the service of type `T`, if one is attached: a service stopping for good
    /// detaches itself, since it usually holds the node too, and neither would be freed.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) {
        self.inner.extensions.remove(&TypeId::of::<T>());
    }

    /// The service of type `T` attached with [`set_extension`](Node::set_extension), if any.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.inner
            .extensions
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>().cloned())
    }

    /// Removes a local name; true if it was registered.
    pub fn unregister_local(&self, name: &str) -> bool {
        // Under the entry's lock, as registration does.
        match self.inner.names.entry(name.to_owned()) {
            Entry::Occupied(entry) => {
                entry.get().core().remove_name(name);
                entry.remove();
                true
            }
            Entry::Vacant(_) => false,
        }
    }

    /// The live actor registered under a local name, if it takes messages of type `M`.
    pub fn whereis_local<M: Send + 'static>(&self, name: &str) -> Result<ActorRef<M>, LookupError> {
        let holder = self
            .inner
            .names
            .get(name)
            .map(|entry| entry.value().clone())
            .filter(|holder| holder.core().is_alive())
            .ok_or_else(|| LookupError::NotFound {
                name: name.to_owned(),
            })?;
        let (id, type_name) = (holder.id().clone(), (holder.core().type_name)());
        holder
            .into_any()
            .downcast::<Cell<M>>()
            .map(ActorRef::from_cell)
            .map_err(|_| LookupError::WrongType {
                name: name.to_owned(),
                actor: id,
                type_name,
                expected: std::any::type_name::<M>(),
            })
    }

    /// The live actors of this node.
    pub fn actors(&self) -> Vec<ActorInfo> {
        let mut list: Vec<ActorInfo> = self
            .inner
            .actors
            .iter()
            .map(|entry| {
                let cell = entry.value();
                ActorInfo {
                    id: cell.id().clone(),
                    type_name: (cell.core().type_name)(),
                    parent: cell.core().parent.as_ref().map(|p| p.id().clone()),
                    names: cell.core().names(),
                    mailbox_len: cell.mailbox_len(),
                }
            })
            .collect();
        list.sort_by_key(|info| info.id.seq());
        list
    }

    /// The number of live actors.
    pub fn actor_count(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Dead letters so far: messages sent to a stopped actor, or dropped unhandled when their
    /// receiver stopped.
    pub fn dead_letters(&self) -> u64 {
        self.inner.dead_letters.total()
    }

    /// Why an actor of this node that ended with `reason` ended, as told to other nodes:
    /// stopped or killed by this node's shutdown, it ended because the node went away, and
    /// peers hear `NodeDown` of this node, as they do of the links and monitors the node's
    /// departure fires. A supervisor elsewhere then restarts a child it ran here on another
    /// node, counting the node's departure once however many children it took (as for a
    /// node that died), and a `transient` child is restarted too: `Shutdown` would have been
    /// taken for a stop it asked for, or each child counted as a failure of its own.
    pub(crate) fn exit_for_peers(&self, reason: &ExitReason) -> ExitReason {
        match reason {
            ExitReason::Shutdown | ExitReason::Killed
                if self.inner.shutting_down.load(Ordering::Acquire) =>
            {
                ExitReason::NodeDown(self.inner.id.clone())
            }
            other => other.clone(),
        }
    }

    /// Stops every actor within the configured shutdown timeout (see the module docs).
    pub async fn shutdown(&self) -> ShutdownReport {
        self.shutdown_within(self.inner.config.shutdown_timeout)
            .await
    }

    /// Stops every actor, killing those still running after `deadline`.
    pub async fn shutdown_within(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::Release);
        let before = self.actor_count();
        let mut top: Vec<CellHandle> = inner
            .actors
            .iter()
            .filter(|entry| entry.value().core().parent.is_none())
            .map(|entry| entry.value().clone())
            .collect();
        top.sort_by_key(|cell| std::cmp::Reverse(cell.id().seq()));
        for cell in &top {
            cell.stop(ExitReason::Shutdown);
        }
        drop(top);
        if tokio::time::timeout(deadline, self.wait_idle())
            .await
            .is_ok()
        {
            tracing::debug!(node = %inner.id, stopped = before, "node shut down");
            return ShutdownReport {
                stopped: before,
                ..Default::default()
            };
        }
        let remaining: Vec<CellHandle> = inner.actors.iter().map(|e| e.value().clone()).collect();
        for cell in &remaining {
            cell.kill();
        }
        let _ = tokio::time::timeout(KILL_GRACE, self.wait_idle()).await;
        let report = ShutdownReport {
            stopped: before.saturating_sub(remaining.len()),
            killed: remaining.len(),
            unresponsive: self.actor_count(),
        };
        tracing::warn!(node = %inner.id, ?deadline, ?report, "shutdown deadline passed; killed the actors still running");
        report
    }

    /// Waits until no actor is alive.
    async fn wait_idle(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.actor_count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl NodeInner {
    /// A new timer number, unique on this node.
    pub(crate) fn next_timer_id(&self) -> u64 {
        self.next_timer.fetch_add(1, Ordering::Relaxed)
    }

    /// A live actor of this node by sequence number.
    pub(crate) fn cell(&self, seq: u64) -> Option<CellHandle> {
        self.actors.get(&seq).map(|entry| entry.value().clone())
    }

    /// Called once per actor, from its finalization.
    pub(crate) fn actor_exited(&self, id: &ActorId) {
        self.actors.remove(&id.seq());
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("actors", &self.actor_count())
            .finish()
    }
}

/// An actor whose `started` hook runs ([`Node::spawn_starting`]).
pub(crate) struct Starting<M: Send + 'static> {
    actor: ActorRef<M>,
    type_name: &'static str,
    outcome: oneshot::Receiver<Result<(), ExitReason>>,
}

impl<M: Send + 'static> Starting<M> {
    /// Waits for the hook's end: the actor, or why it did not start.
    pub(crate) async fn started(self) -> Result<ActorRef<M>, SpawnError> {
        match self.outcome.await.unwrap_or(Err(ExitReason::Killed)) {
            Ok(()) => Ok(self.actor),
            Err(reason) => Err(SpawnError::StartFailed {
                actor: self.actor.id().clone(),
                type_name: self.type_name,
                reason,
            }),
        }
    }
}
