//! Cluster singletons: at most one instance in the cluster, guarded by a registry lease.
//!
//! Like Akka's cluster singleton manager, a [`Singleton`] runs on every node that may host
//! the instance. Each waits in line for the singleton's lock (first come, first served); the
//! one granted it starts the instance, binds it to the lease and, if asked, registers its
//! global name. So:
//!
//! - **at most one**: the instance lives only while its node holds the lease. A node that
//!   cannot renew its session kills the instance itself before the registry could grant the
//!   lock to anyone else (the self-fencing rule), and every grant carries a fencing token
//!   greater than the last ([`Singleton`] passes it to the factory);
//! - **taken over when the holder dies**: its session expires, the lock goes to the next in
//!   line, which starts a fresh instance;
//! - **handed over when the holder leaves**: stopping the manager (its supervisor stops, or
//!   the node shuts down) stops the instance and releases the lock at once.
//!
//! An instance that fails is not restarted in place: its manager releases the lock and queues
//! again after a backoff, so the next node in line takes over, as a restart elsewhere. An
//! instance that ran for the backoff's `reset_after` (30 s) before it ended counts as stable:
//! the next delay starts from the shortest again.
//!
//! The lock is never given back while its instance lives: the manager waits for the
//! instance's end first, also when it is killed itself (a brutal shutdown, or a supervisor's
//! shutdown timeout that ran out while it handed over), in which case it kills the instance.
//! The instance is bound to the lease before its `started` hook runs, so a node that fences
//! itself kills an instance still starting too.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use ensemble_registry::{Lease, Registry};
use ensemble_runtime::remote::RemoteMessage;
use ensemble_runtime::{
    Actor, ActorError, ActorId, ActorRef, ActorResult, Context, ExitReason, SpawnOptions,
    UntypedRef,
};

use crate::spec::Backoff;

/// How long one wait in line for the lock lasts before it is renewed (the manager waits for
/// as long as it runs).
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// Makes the singleton's instance from the fencing token of the grant.
pub trait SingletonFactory<A>: Fn(u64) -> A + Send + Sync + 'static {}
impl<A, F: Fn(u64) -> A + Send + Sync + 'static> SingletonFactory<A> for F {}

/// The manager of one cluster singleton on this node. See the module docs.
pub struct Singleton<A: Actor, F> {
    lock: String,
    global_name: Option<Registration<A::Msg>>,
    factory: F,
    registry: Option<Registry>,
    tenure: Option<Tenure>,
    instance: Option<ActorRef<A::Msg>>,
    /// When the instance was made, to tell a stable run from a failing one.
    since: Option<Instant>,
    /// Instances given up on (their name was taken), whose exits are expected and change
    /// nothing.
    abandoned: Vec<ActorId>,
    /// Instances in a row that ended before they ran for `backoff.reset_after`.
    failures: u32,
    backoff: Backoff,
}

type Registration<M> = Box<
    dyn Fn(Registry, ActorRef<M>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The manager's protocol (local only).
pub enum SingletonMsg {
    /// Queue for the lock now.
    Acquire,
    /// The lock was granted.
    Granted(Grant),
    /// The registry could not be reached: try again later.
    Retry(String),
    /// Asks which actor is the instance on this node, if any.
    Instance(tokio::sync::oneshot::Sender<Option<ActorId>>),
}

/// A grant of the singleton's lock on its way to the manager. Given back if the manager ends
/// before it takes it out of its mailbox (the message dropped with it, or refused): a dropped
/// [`Lease`] keeps its lock for as long as the node's session lives, and the singleton would
/// then run nowhere.
pub struct Grant(Option<Lease>);

impl Grant {
    fn take(mut self) -> Lease {
        self.0.take().expect("a grant is taken once")
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = lease.release().await;
            });
        }
    }
}

/// The lease the manager holds and the instance bound to it. The lock goes back only once the
/// instance has ended: on purpose with [`Tenure::give_back`], and when dropped, which happens
/// if the manager is killed (it never runs `stopping` then). Dropped, a [`Lease`] keeps its
/// lock until this node's session ends, and the singleton would run nowhere meanwhile.
struct Tenure {
    lease: Option<Lease>,
    instance: Option<UntypedRef>,
}

impl Tenure {
    fn new(lease: Lease) -> Self {
        Self {
            lease: Some(lease),
            instance: None,
        }
    }

    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("held until given back")
    }

    /// Notes the instance, which its spawn bound to the lease (see `run_instance`).
    fn hold(&mut self, instance: UntypedRef) {
        self.instance = Some(instance);
    }

    /// Ends the instance, if it still runs, and then gives the lock back.
    async fn give_back(mut self) {
        let (lease, instance) = (self.lease.take(), self.instance.take());
        hand_back(lease, instance).await;
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        let (lease, instance) = (self.lease.take(), self.instance.take());
        if lease.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(hand_back(lease, instance));
        }
    }
}

/// Kills `instance` (if it has not ended yet), waits for its end and releases `lease`.
async fn hand_back(lease: Option<Lease>, instance: Option<UntypedRef>) {
    if let Some(instance) = instance {
        instance.kill();
        instance.wait_for_exit().await;
    }
    if let Some(lease) = lease
        && !lease.is_lost()
    {
        let _ = lease.release().await;
    }
}

impl<A, F> Singleton<A, F>
where
    A: Actor,
    F: SingletonFactory<A>,
{
    /// A manager for the singleton `name` (its lock is `ensemble.singleton/<name>`).
    pub fn new(name: &str, factory: F) -> Self {
        Self {
            lock: lock_name(name),
            global_name: None,
            factory,
            registry: None,
            tenure: None,
            instance: None,
            since: None,
            abandoned: Vec::new(),
            failures: 0,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                ..Backoff::default()
            },
        }
    }

    /// Registers each new instance under this global name (its messages must be able to
    /// cross nodes).
    pub fn global_name(mut self, name: impl Into<String>) -> Self
    where
        A::Msg: RemoteMessage,
    {
        let name: String = name.into();
        self.global_name = Some(Box::new(move |registry, actor| {
            let name = name.clone();
            Box::pin(async move {
                registry
                    .register(&name, &actor)
                    .await
                    .map_err(|e| format!("cannot register the global name {name:?}: {e}"))
            })
        }));
        self
    }

    /// Starts an instance under `lease`. On an error the lease is still this manager's, for
    /// [`Self::requeue`] to give back.
    ///
    /// Spawned, not started: bound to the lease before its `started` hook runs, so that a
    /// node that fences itself while the instance starts kills it too (a hook that waits on
    /// the network may run for long). A hook that fails ends the instance, and its exit comes
    /// as any other's.
    async fn run_instance(&mut self, lease: Lease, ctx: &mut Context<Self>) -> Result<(), String> {
        let token = lease.token();
        let tenure = self.tenure.insert(Tenure::new(lease));
        let actor = (self.factory)(token);
        // Bound before anything of it runs: the hook can read its token from the registry,
        // and a lease lost by then kills it before the hook runs.
        let bind = tenure.lease().binder();
        let instance = ctx
            .spawn_with(actor, SpawnOptions::new().linked().before_start(bind))
            .map_err(|e| format!("the instance could not be spawned: {e}"))?;
        tenure.hold(instance.clone().into());
        self.since = Some(Instant::now());
        if let (Some(register), Some(registry)) = (&self.global_name, &self.registry)
            && let Err(e) = register(registry.clone(), instance.clone()).await
        {
            self.abandoned.push(instance.id().clone());
            return Err(e);
        }
        tracing::info!(singleton = %self.lock, token, actor = %instance.id(), "singleton instance started");
        self.instance = Some(instance);
        Ok(())
    }

    /// Gives the lock back once the instance has ended (the next node in line takes over) and
    /// queues again after a delay.
    async fn requeue(&mut self, why: &str, ctx: &mut Context<Self>) {
        self.instance = None;
        if let Some(tenure) = self.tenure.take() {
            tenure.give_back().await;
        }
        let stable = self
            .since
            .take()
            .is_some_and(|since| since.elapsed() >= self.backoff.reset_after);
        if stable {
            self.failures = 0;
        }
        self.failures += 1;
        let delay = self.backoff.delay(self.failures, fastrand::f64());
        tracing::warn!(singleton = %self.lock, ?delay, "singleton instance ended ({why}); queueing again");
        ctx.send_after(delay, SingletonMsg::Acquire);
    }
}

/// The registry lock guarding the singleton `name`.
pub fn lock_name(name: &str) -> String {
    format!("ensemble.singleton/{name}")
}

impl<A, F> Actor for Singleton<A, F>
where
    A: Actor,
    F: SingletonFactory<A>,
{
    type Msg = SingletonMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        let registry = ctx.node().extension::<Registry>().ok_or_else(|| {
            ActorError::new(format!(
                "singleton {}: node {} has no registry; start one first",
                self.lock,
                ctx.node().id()
            ))
        })?;
        self.registry = Some(registry);
        ctx.trap_exit(true);
        ctx.myself().try_tell(SingletonMsg::Acquire).ok();
        Ok(())
    }

    async fn handle(&mut self, msg: SingletonMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            SingletonMsg::Acquire => {
                let registry = self.registry.clone().expect("set in started");
                let (lock, me) = (self.lock.clone(), ctx.myself());
                tokio::spawn(async move {
                    let msg = match registry.lock(&lock, WAIT_SLICE).await {
                        Ok(lease) => SingletonMsg::Granted(Grant(Some(lease))),
                        Err(e) => SingletonMsg::Retry(e.to_string()),
                    };
                    // A manager that ended meanwhile gives the lock back as the grant drops.
                    let _ = me.tell(msg).await;
                });
            }
            SingletonMsg::Granted(grant) => {
                if let Err(why) = self.run_instance(grant.take(), ctx).await {
                    self.requeue(&why, ctx).await;
                }
            }
            SingletonMsg::Retry(why) => {
                tracing::debug!(singleton = %self.lock, "waiting for the singleton's lock: {why}");
                ctx.send_after(Duration::from_millis(200), SingletonMsg::Acquire);
            }
            SingletonMsg::Instance(reply) => {
                let _ = reply.send(self.instance.as_ref().map(|i| i.id().clone()));
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
        if self.instance.as_ref().map(|i| i.id()) == Some(&from) {
            let lost = self.tenure.as_ref().is_some_and(|t| t.lease().is_lost());
            let why = if lost {
                format!("lease lost, instance ended with {reason}")
            } else {
                reason.to_string()
            };
            self.requeue(&why, ctx).await;
        } else if let Some(at) = self.abandoned.iter().position(|id| id == &from) {
            self.abandoned.swap_remove(at);
        } else if !reason.is_normal() {
            ctx.stop_with(reason);
        }
        Ok(())
    }

    async fn stopping(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        // Hand over: stop the instance, then give the lock to the next in line. Killed
        // meanwhile, the manager drops its tenure, which finishes the hand-over.
        if let Some(instance) = self.instance.take() {
            ctx.unlink(&instance);
            instance.stop_with(ExitReason::Shutdown);
            let _ = tokio::time::timeout(Duration::from_secs(5), instance.wait_for_exit()).await;
        }
        if let Some(tenure) = self.tenure.take() {
            tenure.give_back().await;
        }
    }
}
