//! Interop with [actix](https://docs.rs/actix/0.13): actix actors reached through an ordinary
//! [`ActorRef`] from any node, and Ensemble actors reached from actix actors.
//!
//! Enabled by the `actix` cargo feature. `docs/actix.md` of the repository is the guide (what
//! maps to what, threading, limits); this is the summary.
//!
//! # Actix actors in the cluster
//!
//! A [`Bridge`] spawns a small Ensemble actor, the *proxy*, that holds an actix
//! [`Recipient<M>`](actix::Recipient) (an `Addr<A>` turns into one). The proxy's message type is
//! [`ActixMsg<M>`]: [`ActixMsg::Tell`] delivers `M` and drops its result, [`ActixMsg::Ask`]
//! delivers `M` and sends the handler's result (`M::Result`) back through a [`ReplyTo`]. The
//! proxy's `ActorRef<ActixMsg<M>>` is an ordinary reference: register it under a global name in
//! the registry ([`Bridge::register`]) or a local name ([`Bridge::spawn_options`]), monitor it,
//! link to it, send it to other nodes. [`ActixRefExt`] adds `tell_actix`/`ask_actix` to it.
//! Across nodes, `M` and `M::Result` must be serde types, as every remote message.
//!
//! ```no_run
//! # use std::time::Duration;
//! use actix::{Handler, Message};
//! use ensemble::actix::{ActixMsg, ActixRefExt, ActixSystem, Bridge};
//! use ensemble::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Message, Serialize, Deserialize)]
//! #[rtype(result = "String")]
//! struct Greet(String);
//!
//! struct Greeter;
//! impl actix::Actor for Greeter {
//!     type Context = actix::Context<Self>;
//! }
//! impl Handler<Greet> for Greeter {
//!     type Result = String;
//!     fn handle(&mut self, Greet(name): Greet, _: &mut Self::Context) -> String {
//!         format!("hello, {name}")
//!     }
//! }
//!
//! # async fn demo(node: Node, registry: ensemble::registry::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! let actix = ActixSystem::start("greeters")?;
//! let (addr, exit) = actix.start_actor(|_ctx| Greeter).await?;
//! let greeter = Bridge::<Greet>::new(addr)
//!     .lifeline(exit)
//!     .register(&node, &registry, "greeter")
//!     .await?;
//! // From any node: registry.whereis::<ActixMsg<Greet>>("greeter")
//! let answer = greeter.ask_actix(Greet("ada".into()), Duration::from_secs(1)).await?;
//! assert_eq!(answer, "hello, ada");
//! # Ok(())
//! # }
//! ```
//!
//! # Lifecycle
//!
//! The proxy ends when the actix actor stops, so that its global and local names are released
//! and its monitors fire, with [`ExitReason::Normal`] unless the actix side said otherwise
//! ([`Lifeline::exit_with`]; links carry the exit as for any actor). It learns of the stop in
//! one of two ways:
//!
//! - **A lifeline** ([`Lifeline`], [`ActixExit`]): at once. [`ActixSystem::start_actor`]
//!   attaches one to the new actor's context; an actor started some other way can keep a
//!   [`Lifeline::new`] in its own state (which also survives restarts under actix's
//!   `Supervisor`) and give the [`ActixExit`] to [`Bridge::lifeline`].
//! - **Without one**, on the next message: a send to a closed actix mailbox fails, the sender is
//!   answered [`ActixError::Stopped`], and the proxy ends.
//!
//! When the proxy ends for another reason (stopped, killed, its node shut down), the actix actor
//! goes on; the proxy only drops its `Recipient`.
//!
//! # Ensemble actors from actix
//!
//! An [`ActorRef`] is `Clone + Send + Sync`: an actix actor keeps one in its state. `try_tell`
//! works from any handler as it is. [`tell_ensemble`] and [`ask_ensemble`] wrap the async `tell`
//! and `ask` as [`ActorFuture`]s, to be run with the actix context's `spawn` (concurrently) or
//! `wait` (the actor handles nothing else meanwhile), or returned from a handler as an
//! `actix::ResponseActFuture`.
//!
//! # Threading
//!
//! Actix actors are not `Send`; they run on actix's own single-threaded runtime. An
//! [`ActixSystem`] runs an `actix::System` on a dedicated thread, and everything crosses
//! between it and the node's tokio runtime through channels: `Recipient`, `Addr`, `ActorRef`
//! and `ReplyTo` are all `Send`.
//!
//! # Bounds and ordering
//!
//! The proxy forwards messages in the order it receives them (so per-sender order holds from any
//! Ensemble actor to the actix actor) and keeps at most [`Bridge::max_in_flight`] of them (16 by
//! default, actix's own default mailbox capacity) sent but not yet handled. At that bound it
//! waits, its own bounded mailbox fills up, and senders see the usual back-pressure (`tell`
//! waits; `try_tell` and messages from other nodes are refused, see docs/semantics.md).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::fut::{ActorFuture, wrap_future};
use actix::{AsyncContext, MailboxError, Recipient};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::Instrument;

use crate::registry::{Registry, RegistryError};
use crate::remote::RemoteMessage;
use crate::{
    Actor, ActorId, ActorRef, ActorResult, AskError, Context, ExitReason, Node, ReplyTo,
    SpawnError, SpawnOptions, TellError,
};

/// Messages a bridge keeps sent to the actix actor but not yet handled, unless told otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// What the proxy of an actix actor takes: an actix message, told or asked.
///
/// Crosses nodes when `M` and `M::Result` are serde types. The type name checked by the
/// receiving node is that of `ActixMsg<M>`, so a proxy for `M` refuses any other message type.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "M: Serialize, M::Result: Serialize + DeserializeOwned",
    deserialize = "M: DeserializeOwned, M::Result: Serialize + DeserializeOwned"
))]
pub enum ActixMsg<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    /// Deliver the message; its result is dropped.
    Tell(M),
    /// Deliver the message and reply with the handler's result, or with why there is none.
    Ask(M, ReplyTo<Result<M::Result, ActixError>>),
}

impl<M> ActixMsg<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    /// The actix message (dropping the reply handle of an ask, which ends that ask).
    pub fn into_message(self) -> M {
        match self {
            ActixMsg::Tell(msg) | ActixMsg::Ask(msg, _) => msg,
        }
    }
}

impl<M> fmt::Debug for ActixMsg<M>
where
    M: actix::Message + Send + fmt::Debug + 'static,
    M::Result: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActixMsg::Tell(msg) => f.debug_tuple("Tell").field(msg).finish(),
            ActixMsg::Ask(msg, reply) => f.debug_tuple("Ask").field(msg).field(reply).finish(),
        }
    }
}

/// Why a bridged actix actor did not handle a message. Travels back to the asker, on any node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ActixError {
    /// The actix actor has stopped (its mailbox is closed), or stopped before it handled the
    /// message. Its proxy ends too; resolve the name again if another actor may take it over.
    #[error(
        "actix actor {label:?} (bridged as {actor}) is stopped: its mailbox is closed and the message was not handled"
    )]
    Stopped {
        /// The proxy that forwarded the message.
        actor: ActorId,
        /// The bridge's label: the name it was registered under, or the one given to
        /// [`Bridge::label`].
        label: String,
    },
}

/// An [`ActixRefExt::ask_actix`] that produced no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActixAskError {
    /// The proxy did not answer: stopped, unreachable, a timeout (see [`AskError`]).
    #[error(transparent)]
    Ask(#[from] AskError),
    /// The proxy answered that the actix actor did not handle the message.
    #[error(transparent)]
    Actix(#[from] ActixError),
}

/// A bridge or an actix system could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The actix actor had already stopped: there is nothing to bridge.
    #[error("cannot bridge actix actor {label:?}: it is stopped (its mailbox is closed)")]
    Stopped {
        /// The bridge's label.
        label: String,
    },
    /// The proxy could not be spawned.
    #[error("cannot bridge actix actor {label:?}: {source}")]
    Spawn {
        /// The bridge's label.
        label: String,
        /// Why.
        source: SpawnError,
    },
    /// The global name could not be registered; the proxy was stopped again.
    #[error("cannot register actix actor {label:?} as global name {name:?}: {source}")]
    Register {
        /// The name.
        name: String,
        /// The bridge's label.
        label: String,
        /// Why (boxed: registry errors are large).
        source: Box<RegistryError>,
    },
    /// The actix system is not running (or its thread could not be started).
    #[error("actix system {system:?} is not running: {reason}")]
    System {
        /// The system's name.
        system: String,
        /// Why.
        reason: String,
    },
}

/// Tells and asks an actix actor through its proxy's reference.
pub trait ActixRefExt<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    /// Sends `msg` as [`ActixMsg::Tell`], waiting while the proxy's mailbox is full. The
    /// message is handed back on failure.
    fn tell_actix(&self, msg: M) -> impl Future<Output = Result<(), TellError<M>>> + Send;

    /// Sends `msg` as [`ActixMsg::Tell`] if there is room, never waiting.
    fn try_tell_actix(&self, msg: M) -> Result<(), TellError<M>>;

    /// Sends `msg` as [`ActixMsg::Ask`] and waits up to `timeout` for the actix handler's
    /// result. Always completes (see [`ActorRef::ask`]).
    fn ask_actix(
        &self,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, ActixAskError>> + Send;
}

impl<M> ActixRefExt<M> for ActorRef<ActixMsg<M>>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    async fn tell_actix(&self, msg: M) -> Result<(), TellError<M>> {
        self.tell(ActixMsg::Tell(msg)).await.map_err(unwrap_tell)
    }

    fn try_tell_actix(&self, msg: M) -> Result<(), TellError<M>> {
        self.try_tell(ActixMsg::Tell(msg)).map_err(unwrap_tell)
    }

    async fn ask_actix(&self, msg: M, timeout: Duration) -> Result<M::Result, ActixAskError> {
        match self.ask(|reply| ActixMsg::Ask(msg, reply), timeout).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.into()),
            Err(err) => Err(err.into()),
        }
    }
}

/// The same error with the actix message inside handed back.
fn unwrap_tell<M>(err: TellError<ActixMsg<M>>) -> TellError<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    match err {
        TellError::Dead { actor, message } => TellError::Dead {
            actor,
            message: message.into_message(),
        },
        TellError::Unreachable {
            actor,
            message,
            reason,
        } => TellError::Unreachable {
            actor,
            message: message.into_message(),
            reason,
        },
        TellError::Full {
            actor,
            message,
            capacity,
        } => TellError::Full {
            actor,
            message: message.into_message(),
            capacity,
        },
    }
}

/// Ends the bridges of an actix actor when the actor ends: keep it for as long as the actor
/// lives. Dropping it ends them with [`ExitReason::Normal`], [`exit_with`](Self::exit_with)
/// with another reason.
///
/// [`ActixSystem::start_actor`] attaches one to the actor's context. An actor started some
/// other way holds one in its state instead, which also keeps it across restarts under actix's
/// `Supervisor` (a restart cancels what was attached to the context).
pub struct Lifeline {
    exit: watch::Sender<Option<ExitReason>>,
}

impl Lifeline {
    /// A lifeline and the watch on it that [`Bridge::lifeline`] takes (clone it for several
    /// bridges to one actor).
    pub fn new() -> (Lifeline, ActixExit) {
        let (exit, watch) = watch::channel(None);
        (Lifeline { exit }, ActixExit { watch })
    }

    /// Ends the bridges now with `reason` (the first reason given wins), for instance from the
    /// actix actor's `stopped` hook.
    pub fn exit_with(&self, reason: ExitReason) {
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(reason);
            true
        });
    }

    /// Attaches the lifeline to an actix actor's context: it is dropped, and the bridges end,
    /// when the actor stops. Once every [`ActixExit`] is dropped it lets go of the context, so
    /// it does not keep an actor with no addresses left running.
    pub fn attach<A, C>(self, ctx: &mut C)
    where
        A: actix::Actor<Context = C>,
        C: AsyncContext<A>,
    {
        ctx.spawn(wrap_future(async move {
            self.exit.closed().await;
        }));
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.exit_with(ExitReason::Normal);
    }
}

impl fmt::Debug for Lifeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifeline")
            .field("exit", &*self.exit.borrow())
            .finish()
    }
}

/// The watch on a [`Lifeline`]: says when, and why, the actix actor ended.
#[derive(Clone, Debug)]
pub struct ActixExit {
    watch: watch::Receiver<Option<ExitReason>>,
}

impl ActixExit {
    /// Waits until the actix actor has ended and says why.
    pub async fn wait(mut self) -> ExitReason {
        match self.watch.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone().unwrap_or(ExitReason::Normal),
            // The lifeline always sets a reason before it goes away.
            Err(_) => ExitReason::Normal,
        }
    }

    /// True once the actix actor has ended.
    pub fn has_ended(&self) -> bool {
        self.watch.borrow().is_some() || self.watch.has_changed().is_err()
    }

    /// The reason given so far, if any.
    fn reason(&self) -> Option<ExitReason> {
        self.watch.borrow().clone()
    }
}

/// Makes an actix actor reachable as an Ensemble actor: spawns its proxy.
///
/// ```no_run
/// # use ensemble::actix::Bridge;
/// # #[derive(actix::Message)] #[rtype(result = "u64")] struct Get;
/// # struct Counter;
/// # impl actix::Actor for Counter { type Context = actix::Context<Self>; }
/// # impl actix::Handler<Get> for Counter { type Result = u64; fn handle(&mut self, _: Get, _: &mut Self::Context) -> u64 { 0 } }
/// # fn demo(node: &ensemble::Node, addr: actix::Addr<Counter>) -> Result<(), ensemble::actix::BridgeError> {
/// let counter = Bridge::<Get>::new(addr)
///     .label("counter")
///     .spawn_options(ensemble::SpawnOptions::new().name("counter"))
///     .spawn(node)?;
/// # Ok(()) }
/// ```
pub struct Bridge<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    recipient: Recipient<M>,
    label: Option<String>,
    max_in_flight: usize,
    exit: Option<ActixExit>,
    options: SpawnOptions,
}

impl<M> Bridge<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    /// A bridge to the actor behind `recipient` (an `Addr<A>` of an actor handling `M` converts).
    pub fn new(recipient: impl Into<Recipient<M>>) -> Self {
        Self {
            recipient: recipient.into(),
            label: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            exit: None,
            options: SpawnOptions::new(),
        }
    }

    /// What errors and logs call the actix actor. Defaults to the global name it is registered
    /// under, or else to `actix Recipient<M>`.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Messages kept sent to the actix actor but not yet handled (at least 1; default
    /// [`DEFAULT_MAX_IN_FLIGHT`]). At the bound the proxy waits, and its mailbox fills.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Ends the proxy as soon as the actix actor ends (see [`Lifeline`]); without it the proxy
    /// notices on the next message it forwards.
    pub fn lifeline(mut self, exit: ActixExit) -> Self {
        self.exit = Some(exit);
        self
    }

    /// Options for the proxy: a local name, its mailbox capacity.
    pub fn spawn_options(mut self, options: SpawnOptions) -> Self {
        self.options = options;
        self
    }

    /// Spawns the proxy on `node` and returns its reference.
    pub fn spawn(self, node: &Node) -> Result<ActorRef<ActixMsg<M>>, BridgeError> {
        let label = self
            .label
            .unwrap_or_else(|| format!("actix Recipient<{}>", std::any::type_name::<M>()));
        if !self.recipient.connected() || self.exit.as_ref().is_some_and(ActixExit::has_ended) {
            return Err(BridgeError::Stopped { label });
        }
        let proxy = Proxy {
            recipient: self.recipient,
            label: label.as_str().into(),
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            exit: self.exit,
        };
        node.spawn_with(proxy, self.options)
            .map_err(|source| BridgeError::Spawn { label, source })
    }

    /// Spawns the proxy on `node` and registers it under the global name `name`, which is
    /// released when the actix actor (and so the proxy) stops. The label defaults to `name`.
    pub async fn register(
        mut self,
        node: &Node,
        registry: &Registry,
        name: &str,
    ) -> Result<ActorRef<ActixMsg<M>>, BridgeError>
    where
        ActixMsg<M>: RemoteMessage,
    {
        let label = self.label.get_or_insert_with(|| name.to_owned()).clone();
        let proxy = self.spawn(node)?;
        match registry.register(name, &proxy).await {
            Ok(()) => Ok(proxy),
            Err(source) => {
                proxy.stop();
                Err(BridgeError::Register {
                    name: name.to_owned(),
                    label,
                    source: Box::new(source),
                })
            }
        }
    }
}

impl<M> fmt::Debug for Bridge<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("label", &self.label)
            .field("max_in_flight", &self.max_in_flight)
            .field("lifeline", &self.exit.is_some())
            .finish()
    }
}

/// The Ensemble actor standing for an actix actor.
struct Proxy<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    recipient: Recipient<M>,
    /// Names the actix actor in errors and logs.
    label: Arc<str>,
    /// One permit per message sent to actix and not yet handled: the bound on actix's side,
    /// whose own mailbox bound a fresh sender per message does not see.
    in_flight: Arc<Semaphore>,
    /// Watched from `started`; also read when a send finds the mailbox closed, so that the
    /// proxy ends with the lifeline's reason whichever of the two notices first.
    exit: Option<ActixExit>,
}

impl<M> Proxy<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    fn stopped_error(label: &str, actor: &ActorId) -> ActixError {
        ActixError::Stopped {
            actor: actor.clone(),
            label: label.to_owned(),
        }
    }
}

impl<M> Actor for Proxy<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    type Msg = ActixMsg<M>;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if let Some(exit) = self.exit.clone() {
            let proxy = ctx.myself();
            let label = self.label.clone();
            let span = tracing::debug_span!("actix_lifeline", actor = %proxy.id(), label = %label);
            let watching = async move {
                let ended = proxy.clone();
                tokio::select! {
                    reason = exit.wait() => {
                        tracing::debug!(actor = %proxy.id(), label = %label, %reason, "actix actor ended; its bridge ends");
                        proxy.stop_with(reason);
                    }
                    _ = ended.wait_for_exit() => {}
                }
            };
            tokio::spawn(watching.instrument(span));
        }
        Ok(())
    }

    async fn handle(&mut self, msg: ActixMsg<M>, ctx: &mut Context<Self>) -> ActorResult {
        let (msg, reply) = match msg {
            ActixMsg::Tell(msg) => (msg, None),
            ActixMsg::Ask(msg, reply) => (msg, Some(reply)),
        };
        if !self.recipient.connected() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Self::stopped_error(&self.label, ctx.id())));
            }
            actix_gone(&ctx.myself(), &self.label, self.exit.as_ref());
            return Ok(());
        }
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        // A fresh sender is never parked by actix's mailbox bound, so the message is queued
        // now, in the order the proxy handles them; the future only waits for the result.
        let request = self.recipient.clone().send(msg);
        let proxy = ctx.myself();
        let label = self.label.clone();
        let exit = self.exit.clone();
        tokio::spawn(async move {
            let outcome = request.await;
            drop(permit);
            match outcome {
                Ok(value) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(value));
                    }
                }
                // No timeout is set on the request, so every error means the mailbox closed.
                Err(MailboxError::Closed | MailboxError::Timeout) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(Self::stopped_error(&label, proxy.id())));
                    }
                    actix_gone(&proxy, &label, exit.as_ref());
                }
            }
        });
        Ok(())
    }
}

/// The actix actor is gone: the proxy stops gracefully, answering what is queued.
///
/// With a lifeline, the proxy ends with the reason it holds. actix calls the actor's `stopped`
/// (where it gives its reason) before it drops the mailbox and the replies it still owed, so
/// once a send has found the mailbox closed the reason is already there; without this the
/// lifeline's watcher and this path raced, and the proxy sometimes ended `Normal`.
fn actix_gone<M: Send + 'static>(proxy: &ActorRef<M>, label: &str, exit: Option<&ActixExit>) {
    let reason = exit
        .and_then(ActixExit::reason)
        .unwrap_or(ExitReason::Normal);
    tracing::debug!(actor = %proxy.id(), label, %reason, "actix actor stopped (mailbox closed); its bridge ends");
    proxy.stop_with(reason);
}

/// Sends to an Ensemble actor from an actix actor, as an [`ActorFuture`] for the actix
/// context: `ctx.wait(..)` keeps the actix actor's messages in order behind a full mailbox,
/// `ctx.spawn(..)` does not hold the actor up. (`ActorRef::try_tell` needs no future.)
pub fn tell_ensemble<A, M>(
    to: &ActorRef<M>,
    msg: M,
) -> impl ActorFuture<A, Output = Result<(), TellError<M>>> + 'static
where
    A: actix::Actor,
    M: Send + 'static,
{
    let to = to.clone();
    wrap_future(async move { to.tell(msg).await })
}

/// Asks an Ensemble actor from an actix actor, as an [`ActorFuture`] for the actix context
/// (`ctx.spawn(ask_ensemble(..).map(|result, actor, ctx| ..))`, or returned from a handler as
/// an `actix::ResponseActFuture`). Always completes, at the latest after `timeout`.
pub fn ask_ensemble<A, M, R>(
    to: &ActorRef<M>,
    request: impl FnOnce(ReplyTo<R>) -> M + 'static,
    timeout: Duration,
) -> impl ActorFuture<A, Output = Result<R, AskError>> + 'static
where
    A: actix::Actor,
    M: Send + 'static,
    R: Send + 'static,
{
    let to = to.clone();
    wrap_future(async move { to.ask(request, timeout).await })
}

/// An `actix::System` on a thread of its own, for actix actors next to a node.
///
/// Dropping it stops the system (its actors stop, and the bridges with lifelines end); use
/// [`shutdown`](Self::shutdown) to also wait for the thread.
pub struct ActixSystem {
    name: String,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl ActixSystem {
    /// Starts an actix system on a new thread named `actix-<name>`.
    pub fn start(name: impl Into<String>) -> Result<ActixSystem, BridgeError> {
        let name = name.into();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("actix-{name}"))
            .spawn({
                let name = name.clone();
                move || {
                    let runner = actix::System::new();
                    let _ = tx.send(actix::System::current());
                    if let Err(err) = runner.run() {
                        tracing::warn!(system = %name, %err, "actix system ended with an error");
                    }
                }
            })
            .map_err(|err| BridgeError::System {
                system: name.clone(),
                reason: format!("cannot start its thread: {err}"),
            })?;
        let system = rx.recv().map_err(|_| BridgeError::System {
            system: name.clone(),
            reason: "its thread ended while starting".into(),
        })?;
        Ok(ActixSystem {
            name,
            system,
            thread: Some(thread),
        })
    }

    /// The actix system, to reach its arbiter from other threads.
    pub fn system(&self) -> &actix::System {
        &self.system
    }

    /// Runs `f` on the system's thread (where actix actors can be started) and returns its
    /// result.
    pub async fn run<R, F>(&self, f: F) -> Result<R, BridgeError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = self.system.arbiter().spawn_fn(move || {
            let _ = tx.send(f());
        });
        let not_running = |reason: &str| BridgeError::System {
            system: self.name.clone(),
            reason: reason.to_owned(),
        };
        if !queued {
            return Err(not_running("its arbiter has stopped"));
        }
        rx.await
            .map_err(|_| not_running("the call was dropped (the system stopped or it panicked)"))
    }

    /// Starts an actix actor on the system's thread with a [`Lifeline`] attached to its
    /// context, and returns its address and the watch for [`Bridge::lifeline`].
    pub async fn start_actor<A, F>(&self, f: F) -> Result<(actix::Addr<A>, ActixExit), BridgeError>
    where
        A: actix::Actor<Context = actix::Context<A>>,
        F: FnOnce(&mut actix::Context<A>) -> A + Send + 'static,
    {
        self.run(move || {
            let (lifeline, exit) = Lifeline::new();
            let addr = A::create(move |ctx| {
                lifeline.attach(ctx);
                f(ctx)
            });
            (addr, exit)
        })
        .await
    }

    /// Stops the system and waits for its thread to end.
    pub async fn shutdown(mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ActixSystem {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.system.stop();
        }
    }
}

impl fmt::Debug for ActixSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixSystem")
            .field("name", &self.name)
            .finish()
    }
}
