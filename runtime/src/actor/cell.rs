//! The shared internals of one actor: its mailbox, its relations to other actors and its
//! termination.
//!
//! A `Cell<M>` is what an `ActorRef<M>` points to. Its untyped part, `CellCore`, holds what the
//! runtime needs without knowing the message type: links, monitors, children, names, timers and
//! the exit reason. `AnyCell` is the type-erased view through which actors of different message
//! types signal each other.
//!
//! # Invariants
//!
//! - Relations are added only while the cell is alive, under its lock; `take_for_exit` marks it
//!   dead under the same lock. So every link, monitor and child registered is seen by exactly
//!   one finalization, and every monitor fires exactly once. The one exception is a
//!   `wait_for_exit` waiter that comes during finalization: it queues in the exited relations
//!   and is answered at the end of finalization, with the waiters registered before.
//! - No two cell locks are ever held at once.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::exit::ExitReason;
use crate::hashing::HashMap;
use crate::id::{ActorId, NodeId};
use crate::node::Node;
use crate::remote::RemoteSignal;

use super::mailbox::Mailbox;
use super::monitor::{Down, MonitorRef};
use super::signal::Signal;

/// The type-erased view of an actor's cell.
pub(crate) trait AnyCell: Send + Sync + 'static {
    fn id(&self) -> &ActorId;
    fn core(&self) -> &CellCore;
    /// Delivers a system signal; false if the actor is dead.
    fn push_signal(&self, signal: Signal) -> bool;
    /// Stops the actor gracefully: closes its mailbox now, so only messages already queued are
    /// handled, and asks it to end with `reason`.
    fn stop(&self, reason: ExitReason);
    /// Stops the actor now, without its `stopped` hook.
    fn kill(&self);
    fn mailbox_len(&self) -> usize;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

pub(crate) type CellHandle = Arc<dyn AnyCell>;

pub(crate) struct Cell<M> {
    pub(crate) id: ActorId,
    pub(crate) mailbox: Mailbox<M>,
    pub(crate) core: CellCore,
}

/// Who wants to hear of an actor's end.
pub(crate) enum Watcher {
    /// An actor that called `monitor`: gets a `Down` signal.
    Actor {
        monitor: MonitorRef,
        watcher: CellHandle,
    },
    /// A task awaiting `ActorRef::wait_for_exit`.
    Waiter(oneshot::Sender<ExitReason>),
    /// A monitor set from another node: gets a `Down` signal over the network.
    Remote { node: NodeId, monitor: u64 },
}

/// The other end of a link.
pub(crate) enum Linked {
    Local(CellHandle),
    /// An actor of another node (the key of the link map); signalled through this node.
    Remote(Node),
}

pub(crate) struct CellCore {
    pub(crate) node: Node,
    /// `std::any::type_name` of the actor, as a function: one pointer instead of two.
    pub(crate) type_name: fn() -> &'static str,
    pub(crate) parent: Option<CellHandle>,
    state: Mutex<CoreState>,
}

struct CoreState {
    alive: bool,
    /// Set right after the actor's task is spawned; `kill` aborts through it.
    abort: Option<AbortHandle>,
    /// `kill` came before `abort` was set: the task is aborted as soon as it is.
    kill_requested: bool,
    /// Allocated on first use: most actors never link, monitor, spawn or register a name.
    rel: Option<Box<Relations>>,
}

#[derive(Default)]
struct Relations {
    links: HashMap<ActorId, Linked>,
    monitors: Vec<Watcher>,
    children: HashMap<u64, CellHandle>,
    names: Vec<String>,
    timers: Vec<(u64, AbortHandle)>,
    exit: Option<ExitReason>,
    /// After the exit: whether finalization has told links, monitors, parent and node. Until
    /// then, `wait_for_exit` waiters queue in `monitors`, answered last.
    finalized: bool,
}

impl<M: Send + 'static> Cell<M> {
    pub(crate) fn new(
        id: ActorId,
        capacity: usize,
        node: Node,
        type_name: fn() -> &'static str,
        parent: Option<CellHandle>,
    ) -> Self {
        Self {
            id,
            mailbox: Mailbox::new(capacity),
            core: CellCore {
                node,
                type_name,
                parent,
                state: Mutex::new(CoreState {
                    alive: true,
                    abort: None,
                    kill_requested: false,
                    rel: None,
                }),
            },
        }
    }

    pub(crate) fn set_abort_handle(&self, handle: AbortHandle) {
        let mut state = self.core.state.lock();
        if state.kill_requested {
            // Killed while being spawned: a long `started` hook must not outlive the kill.
            handle.abort();
        }
        state.abort = Some(handle);
    }

    /// Ends the actor: marks it dead, drops what it had not handled (counted as dead letters),
    /// and tells links, monitors, children, parent, names and the node. Runs exactly once, from
    /// the actor's `Context` when the actor task ends (see `Context`'s `Drop`).
    pub(crate) fn finalize(self: &Arc<Self>, reason: ExitReason, unhandled: VecDeque<M>) {
        // Dead first, so an asker woken by a dropped `ReplyTo` already sees the exit reason.
        let rel = self.core.take_for_exit(&reason);
        let dropped = unhandled.len() + self.mailbox.kill();
        drop(unhandled);
        let node = &self.core.node.inner;
        let to_peers = self.core.node.exit_for_peers(&reason);
        node.remote.unexport(self.id.seq());
        if dropped > 0 {
            node.dead_letters.record(
                dropped as u64,
                &self.id,
                "the receiver stopped with messages queued",
            );
        }
        let mut waiters = Vec::new();
        if let Some(rel) = rel {
            for (_, timer) in rel.timers {
                timer.abort();
            }
            for child in rel.children.into_values() {
                child.kill();
            }
            for name in &rel.names {
                node.names
                    .remove_if(name, |_, holder| holder.id() == &self.id);
            }
            for (other, linked) in rel.links {
                match linked {
                    Linked::Local(cell) => {
                        cell.push_signal(Signal::Exit {
                            from: self.id.clone(),
                            reason: reason.clone(),
                        });
                    }
                    Linked::Remote(local) => {
                        local
                            .inner
                            .remote
                            .linked_ended(&self.id, &other, to_peers.clone());
                    }
                }
            }
            for watcher in rel.monitors {
                match watcher {
                    // Answered last, once everything else was told (below).
                    Watcher::Waiter(tx) => waiters.push(tx),
                    Watcher::Actor { monitor, watcher } => {
                        watcher.push_signal(Signal::Down(Down {
                            monitor,
                            actor: self.id.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    Watcher::Remote {
                        node: peer,
                        monitor,
                    } => node.remote.signal(
                        &peer,
                        RemoteSignal::Down {
                            monitor,
                            actor: self.id.clone(),
                            reason: to_peers.clone(),
                        },
                    ),
                }
            }
        }
        if let Some(parent) = &self.core.parent
            && parent.core().remove_child(self.id.seq())
        {
            parent.push_signal(Signal::ChildTerminated);
        }
        node.actor_exited(&self.id);
        // Last, the waiters: those registered while the actor lived and those that came while
        // this ran. Whatever they look at next comes after all of the above.
        for late in self.core.finalized() {
            if let Watcher::Waiter(tx) = late {
                waiters.push(tx);
            }
        }
        for waiter in waiters {
            let _ = waiter.send(reason.clone());
        }
    }
}

impl<M: Send + 'static> AnyCell for Cell<M> {
    fn id(&self) -> &ActorId {
        &self.id
    }

    fn core(&self) -> &CellCore {
        &self.core
    }

    fn push_signal(&self, signal: Signal) -> bool {
        self.mailbox.push_signal(signal)
    }

    fn stop(&self, reason: ExitReason) {
        self.mailbox.close_with_signal(Signal::Stop(reason));
    }

    fn kill(&self) {
        let abort = {
            let mut state = self.core.state.lock();
            if state.abort.is_none() {
                state.kill_requested = true;
            }
            state.abort.clone()
        };
        // The signal stops a task that is running on another thread at its next message:
        // an abort takes effect only when the task yields, which a run of handlers that never
        // wait puts off for a whole batch. Not spawned yet, the task is aborted once it is
        // (`set_abort_handle`), and the signal covers a task that runs before that.
        self.mailbox.push_signal(Signal::Kill);
        if let Some(handle) = abort {
            handle.abort();
        }
    }

    fn mailbox_len(&self) -> usize {
        self.mailbox.len()
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl CellCore {
    /// Whether the actor was killed before its task's abort handle was set: by a hook
    /// before its start, or from another thread while it was spawned.
    pub(crate) fn killed_before_running(&self) -> bool {
        self.state.lock().kill_requested
    }

    fn with_rel<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> Option<R> {
        let mut state = self.state.lock();
        if !state.alive {
            return None;
        }
        Some(f(state.rel.get_or_insert_with(Default::default)))
    }

    fn with_existing_rel<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> Option<R> {
        let mut state = self.state.lock();
        if !state.alive {
            return None;
        }
        state.rel.as_deref_mut().map(f)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.state.lock().alive
    }

    /// The actor left its message loop and is ending with `reason` (its children stopping,
    /// its `stopped` hook to run): an ask whose request it dropped unhandled fails with it.
    /// Replaced by the reason it ends with.
    pub(crate) fn set_ending(&self, reason: &ExitReason) {
        self.with_rel(|rel| rel.exit = Some(reason.clone()));
    }

    /// The exit reason, once the actor has ended or is ending ([`Self::set_ending`]).
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        let state = self.state.lock();
        state.rel.as_ref().and_then(|rel| rel.exit.clone())
    }

    /// Waits until the actor has ended and returns why (at once if it already has).
    pub(crate) async fn wait_for_exit(&self) -> ExitReason {
        let (tx, rx) = oneshot::channel();
        match self.add_watcher(Watcher::Waiter(tx)) {
            Ok(()) => match rx.await {
                Ok(reason) => reason,
                // Finalization always answers a registered watcher; never hang regardless.
                Err(_) => self.exit_reason().unwrap_or(ExitReason::NoProc),
            },
            Err(_) => self.exit_reason().unwrap_or(ExitReason::NoProc),
        }
    }

    /// Marks finalization done; returns the waiters that came during it.
    fn finalized(&self) -> Vec<Watcher> {
        let mut state = self.state.lock();
        match state.rel.as_mut() {
            Some(exited) => {
                exited.finalized = true;
                std::mem::take(&mut exited.monitors)
            }
            None => Vec::new(),
        }
    }

    /// Marks the actor dead and returns its relations for finalization.
    fn take_for_exit(&self, reason: &ExitReason) -> Option<Box<Relations>> {
        let mut state = self.state.lock();
        state.alive = false;
        let exited = Box::new(Relations {
            exit: Some(reason.clone()),
            ..Default::default()
        });
        state.rel.replace(exited)
    }

    /// Adds a link; false if this actor is dead.
    pub(crate) fn add_link(&self, other: CellHandle) -> bool {
        self.with_rel(|rel| {
            rel.links.insert(other.id().clone(), Linked::Local(other));
        })
        .is_some()
    }

    /// Adds a link to an actor of another node; false if this actor is dead.
    pub(crate) fn add_remote_link(&self, other: ActorId, node: Node) -> bool {
        self.with_rel(|rel| {
            rel.links.insert(other, Linked::Remote(node));
        })
        .is_some()
    }

    /// Removes a monitor set from another node.
    pub(crate) fn remove_remote_monitor(&self, peer: &NodeId, monitor: u64) {
        self.with_existing_rel(|rel| {
            rel.monitors.retain(
                |w| !matches!(w, Watcher::Remote { node, monitor: m } if node == peer && *m == monitor),
            );
        });
    }

    /// Removes a link; true if it was there.
    pub(crate) fn remove_link(&self, other: &ActorId) -> bool {
        self.with_existing_rel(|rel| rel.links.remove(other).is_some())
            .unwrap_or(false)
    }

    /// How many timers the actor has running.
    #[cfg(test)]
    pub(crate) fn timer_count(&self) -> usize {
        self.with_existing_rel(|rel| rel.timers.len()).unwrap_or(0)
    }

    /// How many monitors are set on this actor.
    #[cfg(test)]
    pub(crate) fn monitor_count(&self) -> usize {
        self.state
            .lock()
            .rel
            .as_ref()
            .map_or(0, |rel| rel.monitors.len())
    }

    /// Adds a watcher, or hands it back if the actor is already dead.
    pub(crate) fn add_watcher(&self, watcher: Watcher) -> Result<(), Watcher> {
        let mut state = self.state.lock();
        if !state.alive {
            // Dead, but its links and monitors are not told yet: a waiter waits for that, so
            // that whatever its caller looks at next (a supervisor's restart, say) comes after.
            if let (Watcher::Waiter(_), Some(exited)) = (&watcher, state.rel.as_mut())
                && !exited.finalized
            {
                exited.monitors.push(watcher);
                return Ok(());
            }
            return Err(watcher);
        }
        let monitors = &mut state.rel.get_or_insert_with(Default::default).monitors;
        if matches!(watcher, Watcher::Waiter(_)) {
            // Waiters that gave up (a `wait_for_exit` under a timeout, in a loop) go when the
            // next one comes, not only when the actor ends.
            monitors.retain(|w| !matches!(w, Watcher::Waiter(tx) if tx.is_closed()));
        }
        monitors.push(watcher);
        Ok(())
    }

    /// Removes an actor's monitor; true if it had not fired yet.
    pub(crate) fn remove_monitor(&self, monitor: MonitorRef) -> bool {
        self.with_existing_rel(|rel| {
            let before = rel.monitors.len();
            rel.monitors
                .retain(|w| !matches!(w, Watcher::Actor { monitor: m, .. } if *m == monitor));
            rel.monitors.len() != before
        })
        .unwrap_or(false)
    }

    pub(crate) fn add_child(&self, child: CellHandle) -> bool {
        self.with_rel(|rel| {
            rel.children.insert(child.id().seq(), child);
        })
        .is_some()
    }

    fn remove_child(&self, seq: u64) -> bool {
        self.with_existing_rel(|rel| rel.children.remove(&seq).is_some())
            .unwrap_or(false)
    }

    pub(crate) fn children(&self) -> Vec<CellHandle> {
        self.with_existing_rel(|rel| rel.children.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn has_children(&self) -> bool {
        self.with_existing_rel(|rel| !rel.children.is_empty())
            .unwrap_or(false)
    }

    pub(crate) fn add_name(&self, name: &str) -> bool {
        self.with_rel(|rel| {
            // Registering a name it holds again leaves it held once.
            if !rel.names.iter().any(|n| n == name) {
                rel.names.push(name.to_owned());
            }
        })
        .is_some()
    }

    pub(crate) fn remove_name(&self, name: &str) {
        self.with_existing_rel(|rel| rel.names.retain(|n| n != name));
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.with_existing_rel(|rel| rel.names.clone())
            .unwrap_or_default()
    }

    /// Registers a timer task to abort when the actor ends; aborts it at once if already dead.
    pub(crate) fn add_timer(&self, id: u64, handle: AbortHandle) {
        let mut state = self.state.lock();
        if !state.alive {
            handle.abort();
            return;
        }
        let timers = &mut state.rel.get_or_insert_with(Default::default).timers;
        // A timer that fired before it was added here (a zero delay on another worker) could
        // not remove itself: drop the finished ones, or an actor re-arming such a timer in a
        // loop would keep every handle.
        timers.retain(|(_, handle)| !handle.is_finished());
        timers.push((id, handle));
    }

    /// Forgets a timer (it fired); with `abort`, cancels it too.
    pub(crate) fn remove_timer(&self, id: u64, abort: bool) {
        self.with_existing_rel(|rel| {
            if let Some(i) = rel.timers.iter().position(|(t, _)| *t == id) {
                let (_, handle) = rel.timers.swap_remove(i);
                if abort {
                    handle.abort();
                }
            }
        });
    }
}
