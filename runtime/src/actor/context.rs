//! `Context<A>`: what a running actor can do besides handling its message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use crate::error::{RegisterError, SpawnError};
use crate::exit::ExitReason;
use crate::hashing::HashMap;
use crate::id::ActorId;
use crate::node::Node;

use super::cell::{AnyCell, Cell, CellHandle, Watcher};
use super::monitor::{Down, MonitorRef};
use super::signal::Signal;
use super::untyped::UntypedTarget;
use super::{Actor, ActorRef, SpawnOptions, UntypedRef};

/// Identifies a timer started with [`Context::send_after`] or [`Context::send_interval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerRef(u64);

/// The actor's view of itself and the runtime, passed to every hook.
///
/// Through it an actor spawns children, links, monitors, traps exits, sets timers, registers
/// local names and stops itself.
///
/// The context also owns what the actor's end must account for (the batch of messages taken
/// from the mailbox, the exit reason), and finalizes the actor when it is dropped: it lives in
/// the actor's task, so however that task ends (returning, panicking, aborted by `kill`,
/// dropped with the runtime, even before its first poll), the actor is finalized exactly once.
pub struct Context<A: Actor> {
    /// This actor's cell (always local; an `ActorRef` may be remote and is twice the size).
    cell: Arc<Cell<A::Msg>>,
    /// Messages taken from the mailbox and not handled yet; dead letters if the actor ends.
    pub(crate) batch: VecDeque<A::Msg>,
    /// `None` while running, which is nearly always: one pointer in every idle actor.
    exit: Option<Box<Exit>>,
    trap_exit: bool,
    /// Active monitors and their targets; allocated on first use. A `Down` whose monitor is not
    /// here (demonitored) is dropped, so none arrives after `demonitor`. Boxed because a bare
    /// map costs 48 bytes in every actor, and most actors never monitor anything.
    #[allow(clippy::box_collection)]
    monitors: Option<Box<HashMap<MonitorRef, UntypedRef>>>,
}

/// Where an actor that is not simply running is, on its way in or out.
enum Exit {
    /// Before the `started` hook has run, with the `start` call waiting for its outcome, and
    /// the reason of a `stop`/`stop_with` called inside the hook, if any (it takes effect once
    /// the hook returns, as for an actor spawned without waiting).
    Starting(oneshot::Sender<Result<(), ExitReason>>, Option<ExitReason>),
    /// A graceful stop began (the sender closed the mailbox): end with this reason once the
    /// queued messages are handled.
    Draining(ExitReason),
    /// `stop`/`stop_with` was called: the run loop ends the actor after the current hook. Wins
    /// over draining.
    Requested(ExitReason),
    /// The run loop is done and the actor ends with this reason.
    Ending(ExitReason),
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(
        cell: Arc<Cell<A::Msg>>,
        started: Option<oneshot::Sender<Result<(), ExitReason>>>,
    ) -> Self {
        Self {
            cell,
            batch: VecDeque::new(),
            exit: started.map(|tx| Box::new(Exit::Starting(tx, None))),
            trap_exit: false,
            monitors: None,
        }
    }

    /// A reference to this actor.
    pub fn myself(&self) -> ActorRef<A::Msg> {
        ActorRef::from_cell(self.cell.clone())
    }

    /// This actor's id.
    pub fn id(&self) -> &ActorId {
        &self.cell.id
    }

    pub(crate) fn cell(&self) -> &Arc<Cell<A::Msg>> {
        &self.cell
    }

    /// The node this actor runs on.
    pub fn node(&self) -> &Node {
        &self.cell.core.node
    }

    /// Spawns a child actor. Children are stopped before their parent ends.
    pub fn spawn<B: Actor>(&mut self, actor: B) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.spawn_with(actor, SpawnOptions::new())
    }

    /// Spawns a child linked to this actor: if either exits abnormally, the other does too,
    /// unless it traps exits.
    pub fn spawn_linked<B: Actor>(&mut self, actor: B) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.spawn_with(actor, SpawnOptions::new().linked())
    }

    /// Spawns a child with options.
    pub fn spawn_with<B: Actor>(
        &mut self,
        actor: B,
        options: SpawnOptions,
    ) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.node().spawn_actor(
            actor,
            options,
            Some(self.cell.clone() as CellHandle),
            None,
            &|_| {},
        )
    }

    /// Spawns a child with options and waits until its `started` hook has run, reporting its
    /// failure as [`SpawnError::StartFailed`].
    pub async fn start_with<B: Actor>(
        &mut self,
        actor: B,
        options: SpawnOptions,
    ) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.node()
            .start_actor(actor, options, Some(self.cell.clone() as CellHandle))
            .await
    }

    /// Stops this actor after the current hook returns, with [`ExitReason::Normal`]. Messages
    /// still queued are dropped (as dead letters).
    pub fn stop(&mut self) {
        self.stop_with(ExitReason::Normal);
    }

    /// Stops this actor after the current hook returns, with the given reason.
    pub fn stop_with(&mut self, reason: ExitReason) {
        match self.exit.as_deref_mut() {
            None | Some(Exit::Draining(_)) => self.exit = Some(Box::new(Exit::Requested(reason))),
            Some(Exit::Starting(_, stop)) => *stop = Some(reason),
            Some(Exit::Requested(_) | Exit::Ending(_)) => {}
        }
    }

    pub(crate) fn has_stop(&self) -> bool {
        matches!(self.exit.as_deref(), Some(Exit::Requested(_)))
    }

    pub(crate) fn take_stop(&mut self) -> Option<ExitReason> {
        if !self.has_stop() {
            return None;
        }
        match self.exit.take().map(|exit| *exit) {
            Some(Exit::Requested(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Records the reason the actor ends with (the last call wins).
    pub(crate) fn set_exit(&mut self, reason: ExitReason) {
        self.exit = Some(Box::new(Exit::Ending(reason)));
    }

    /// Begins a graceful stop (the first reason wins); the sender has closed the mailbox.
    pub(crate) fn start_draining(&mut self, reason: ExitReason) {
        if self.exit.is_none() {
            self.exit = Some(Box::new(Exit::Draining(reason)));
        }
    }

    /// The reason of a graceful stop, once the mailbox is drained.
    pub(crate) fn drained_reason(&self) -> ExitReason {
        match self.exit.as_deref() {
            Some(Exit::Draining(reason)) => reason.clone(),
            _ => ExitReason::Normal,
        }
    }

    /// Leaves the starting state, handing back whoever waits for its outcome.
    pub(crate) fn take_started(&mut self) -> Option<oneshot::Sender<Result<(), ExitReason>>> {
        if !matches!(self.exit.as_deref(), Some(Exit::Starting(..))) {
            return None;
        }
        match self.exit.take().map(|exit| *exit) {
            Some(Exit::Starting(tx, stop)) => {
                // A stop asked for inside `started` stands.
                self.exit = stop.map(|reason| Box::new(Exit::Requested(reason)));
                Some(tx)
            }
            _ => None,
        }
    }

    /// The mailbox and the batch, borrowed apart so the run loop can receive into the batch.
    pub(crate) fn receiver(&mut self) -> (&super::cell::Cell<A::Msg>, &mut VecDeque<A::Msg>) {
        (&self.cell, &mut self.batch)
    }

    /// Traps exits: an exit signal from a linked actor calls `on_exit` instead of ending this
    /// actor.
    pub fn trap_exit(&mut self, trap: bool) {
        self.trap_exit = trap;
    }

    pub(crate) fn traps_exit(&self) -> bool {
        self.trap_exit
    }

    /// Links this actor with another (local or remote), both ways. Linking to an actor that
    /// has already ended delivers an exit signal with [`ExitReason::NoProc`] at once; a link to
    /// an actor of a node that goes down delivers [`ExitReason::NodeDown`].
    pub fn link(&mut self, other: impl Into<UntypedRef>) {
        let other = other.into();
        if other.id() == self.id() {
            return;
        }
        match &other.target {
            UntypedTarget::Local(cell) => {
                let me: CellHandle = self.cell.clone();
                self.cell.core.add_link(cell.clone());
                if !cell.core().add_link(me) {
                    self.cell.push_signal(Signal::Exit {
                        from: other.id().clone(),
                        reason: ExitReason::NoProc,
                    });
                }
            }
            UntypedTarget::Remote(remote) => {
                let node = self.node().clone();
                self.cell
                    .core
                    .add_remote_link(remote.0.clone(), node.clone());
                if node.inner.remote.is_connected(remote.0.node()) {
                    if !node.inner.remote.link(self.id(), &remote.0) {
                        self.cell.push_signal(Signal::Exit {
                            from: remote.0.clone(),
                            reason: crate::remote::node_down_reason(remote.0.node()),
                        });
                    }
                } else {
                    self.cell.push_signal(Signal::Exit {
                        from: remote.0.clone(),
                        reason: crate::remote::unreachable_reason(node.id(), &remote.0),
                    });
                }
            }
        }
    }

    /// Removes a link both ways. No exit signal from `other` is delivered after this returns.
    pub fn unlink(&mut self, other: impl Into<UntypedRef>) {
        let other = other.into();
        self.cell.core.remove_link(other.id());
        match &other.target {
            UntypedTarget::Local(cell) => {
                cell.core().remove_link(self.id());
            }
            UntypedTarget::Remote(remote) => self.node().inner.remote.unlink(self.id(), &remote.0),
        }
    }

    /// Monitors another actor (local or remote): `on_down` is called exactly once when it ends,
    /// at once (with [`ExitReason::NoProc`]) if it already has, with [`ExitReason::NodeDown`]
    /// if its node goes down.
    pub fn monitor(&mut self, other: impl Into<UntypedRef>) -> MonitorRef {
        let other = other.into();
        let monitor = self.node().inner.remote.next_monitor();
        self.monitors
            .get_or_insert_with(Default::default)
            .insert(monitor, other.clone());
        match &other.target {
            UntypedTarget::Local(cell) => {
                let watcher = Watcher::Actor {
                    monitor,
                    watcher: self.cell.clone(),
                };
                if cell.core().add_watcher(watcher).is_err() {
                    self.cell.push_signal(Signal::Down(Down {
                        monitor,
                        actor: other.id().clone(),
                        reason: ExitReason::NoProc,
                    }));
                }
            }
            UntypedTarget::Remote(remote) => {
                let watcher: CellHandle = self.cell.clone();
                self.node()
                    .inner
                    .remote
                    .monitor(watcher, &remote.0, monitor);
            }
        }
        monitor
    }

    /// Removes a monitor; no `Down` for it is delivered after this returns. True if it was
    /// active (had not fired).
    pub fn demonitor(&mut self, monitor: MonitorRef) -> bool {
        match self.monitors.as_mut().and_then(|m| m.remove(&monitor)) {
            Some(target) => {
                unwatch(self.node(), &target, monitor);
                true
            }
            None => false,
        }
    }

    /// Consumes an arriving `Down`: true if its monitor is still active.
    pub(crate) fn take_monitor(&mut self, monitor: MonitorRef) -> bool {
        self.monitors
            .as_mut()
            .is_some_and(|m| m.remove(&monitor).is_some())
    }

    /// Sends `msg` to this actor after `delay`. Cancelled if the actor ends first; dropped
    /// without a dead letter if it fires once the actor takes no more messages.
    pub fn send_after(&mut self, delay: Duration, msg: A::Msg) -> TimerRef {
        let cell = self.cell.clone();
        self.start_timer(move |id| async move {
            tokio::time::sleep(delay).await;
            let _ = cell.mailbox.push(msg).await;
            cell.core.remove_timer(id, false);
        })
    }

    /// Sends `make()` to this actor every `period`, the first time after one period. Ticks wait
    /// for mailbox room rather than pile up. Cancelled when the actor ends. A period under a
    /// millisecond counts as one millisecond.
    pub fn send_interval(
        &mut self,
        period: Duration,
        mut make: impl FnMut() -> A::Msg + Send + 'static,
    ) -> TimerRef {
        let cell = self.cell.clone();
        // Zero would make tokio's interval panic inside the task (the timer would never
        // fire); a period past a century is a century.
        let period = period.clamp(Duration::from_millis(1), super::FOREVER);
        self.start_timer(move |_| async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Refused once the actor takes no more messages: it is ending, and the timer
                // with it, without a dead letter.
                if cell.mailbox.push(make()).await.is_err() {
                    break;
                }
            }
        })
    }

    /// Cancels a timer; a no-op if it has fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerRef) {
        self.cell.core.remove_timer(timer.0, true);
    }

    fn start_timer<F>(&mut self, task: impl FnOnce(u64) -> F) -> TimerRef
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = self.node().inner.next_timer_id();
        let handle = self.node().inner.runtime.spawn(task(id));
        // A zero-delay timer may have fired already: `add_timer` drops finished handles.
        self.cell.core.add_timer(id, handle.abort_handle());
        TimerRef(id)
    }

    /// Registers a local name for this actor, released when it ends.
    pub fn register_local(&mut self, name: impl Into<String>) -> Result<(), RegisterError> {
        self.node().register_local(name, &self.myself())
    }
}

/// Takes `monitor` off `target`.
fn unwatch(node: &Node, target: &UntypedRef, monitor: MonitorRef) {
    match &target.target {
        UntypedTarget::Local(cell) => {
            cell.core().remove_monitor(monitor);
        }
        UntypedTarget::Remote(remote) => node.inner.remote.demonitor(&remote.0, monitor),
    }
}

impl<A: Actor> Drop for Context<A> {
    fn drop(&mut self) {
        // Monitors that have not fired come off their targets: a local target would otherwise
        // keep this actor's cell until it ends itself.
        if let Some(monitors) = self.monitors.take() {
            for (monitor, target) in *monitors {
                unwatch(self.node(), &target, monitor);
            }
        }
        let reason = match self.exit.take().map(|exit| *exit) {
            Some(Exit::Ending(reason)) => reason,
            // The task ended without reaching the end of its run loop.
            _ if std::thread::panicking() => {
                ExitReason::Panicked("the actor task panicked outside a hook".into())
            }
            _ => ExitReason::Killed,
        };
        let cell = &self.cell;
        match &reason {
            ExitReason::Panicked(_) | ExitReason::Failed(_) => {
                tracing::warn!(actor = %cell.id, actor_type = (cell.core.type_name)(), %reason, "actor failed");
            }
            _ => tracing::trace!(actor = %cell.id, %reason, "actor stopped"),
        }
        cell.finalize(reason, std::mem::take(&mut self.batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{Actor, ActorResult};
    use crate::node::NodeConfig;

    struct Idle;

    impl Actor for Idle {
        type Msg = ();

        async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
            Ok(())
        }
    }

    /// Monitors its target when started.
    struct Watching(crate::ActorRef<()>);

    impl Actor for Watching {
        type Msg = ();

        async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
            ctx.monitor(&self.0);
            Ok(())
        }

        async fn handle(&mut self, (): (), _ctx: &mut Context<Self>) -> ActorResult {
            Ok(())
        }
    }

    /// A timer that fired before it was added (a zero delay, run at once on another worker)
    /// could not remove itself: the next one added drops it.
    #[tokio::test]
    async fn timers_that_fired_before_they_were_added_do_not_pile_up() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let actor = node.spawn(Idle).unwrap();
        let core = actor.local().unwrap().core();
        let fired = tokio::spawn(async {});
        let fired_handle = fired.abort_handle();
        fired.await.unwrap();
        core.add_timer(1, fired_handle);
        let pending = tokio::spawn(std::future::pending::<()>());
        core.add_timer(2, pending.abort_handle());
        assert_eq!(core.timer_count(), 1);
    }

    #[tokio::test]
    async fn waiters_that_gave_up_are_dropped() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let target = node.spawn(Idle).unwrap();
        for _ in 0..50 {
            let _ = tokio::time::timeout(Duration::from_millis(1), target.wait_for_exit()).await;
        }
        assert!(target.local().unwrap().core().monitor_count() <= 1);
    }

    #[tokio::test]
    async fn an_actor_that_ends_takes_its_monitors_off_their_targets() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let target = node.spawn(Idle).unwrap();
        let watching = node.start(Watching(target.clone())).await.unwrap();
        let monitors = || target.local().unwrap().core().monitor_count();
        assert_eq!(monitors(), 1);
        watching.stop();
        watching.wait_for_exit().await;
        assert_eq!(monitors(), 0, "the target still holds the ended watcher");
    }
}
