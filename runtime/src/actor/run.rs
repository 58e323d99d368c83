//! The task that runs one actor: its hooks, its message loop, and its end.

use std::any::Any;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::exit::ExitReason;

use super::cell::Cell;
use super::mailbox::Next;
use super::signal::Signal;
use super::{Actor, ActorResult, Context};

/// How many messages an actor handles before yielding its worker thread to other tasks.
const BUDGET: u32 = 128;

/// Finalizes the actor when the task ends in any way: returning, panicking outside a hook, being
/// aborted by `kill`, or being dropped with the runtime. It is moved into the task's future
/// before the first poll, so even an actor killed before it ever ran is finalized.
pub(crate) struct ExitGuard<M: Send + 'static> {
    cell: Arc<Cell<M>>,
    /// Messages taken from the mailbox and not handled yet.
    batch: VecDeque<M>,
    /// Set when the task ends of its own accord; `None` means killed (or a runtime panic).
    reason: Option<ExitReason>,
}

impl<M: Send + 'static> ExitGuard<M> {
    pub(crate) fn new(cell: Arc<Cell<M>>) -> Self {
        Self {
            cell,
            batch: VecDeque::new(),
            reason: None,
        }
    }
}

impl<M: Send + 'static> Drop for ExitGuard<M> {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or_else(|| {
            if std::thread::panicking() {
                ExitReason::Panicked("the actor task panicked outside a hook".into())
            } else {
                ExitReason::Killed
            }
        });
        log_exit(&self.cell.id, self.cell.core.type_name, &reason);
        self.cell.finalize(reason, std::mem::take(&mut self.batch));
    }
}

fn log_exit(id: &crate::ActorId, type_name: &str, reason: &ExitReason) {
    match reason {
        ExitReason::Panicked(_) | ExitReason::Failed(_) => {
            tracing::warn!(actor = %id, actor_type = type_name, %reason, "actor failed");
        }
        _ => tracing::trace!(actor = %id, actor_type = type_name, %reason, "actor stopped"),
    }
}

enum Flow {
    Continue,
    Stop(ExitReason),
    Kill,
}

/// The actor's task. `started` reports the outcome of the `started` hook to a waiting `start`.
pub(crate) async fn run_actor<A: Actor>(
    mut actor: A,
    mut ctx: Context<A>,
    mut guard: ExitGuard<A::Msg>,
    started: Option<oneshot::Sender<Result<(), ExitReason>>>,
) {
    let cell = guard.cell.clone();
    if let Err(reason) = call(actor.started(&mut ctx)).await {
        if let Some(tx) = started {
            let _ = tx.send(Err(reason.clone()));
        }
        guard.reason = Some(reason);
        return;
    }
    if let Some(tx) = started {
        let _ = tx.send(Ok(()));
    }

    let mut signals = VecDeque::new();
    // Set by a `Stop` signal: the mailbox is closed and drains, then the actor ends with it.
    let mut draining: Option<ExitReason> = None;
    let reason = 'run: loop {
        if let Some(reason) = ctx.take_stop() {
            break reason;
        }
        let next = poll_fn(|cx| cell.mailbox.poll_next(cx, &mut guard.batch, &mut signals)).await;
        match next {
            Next::Signals => {
                while let Some(signal) = signals.pop_front() {
                    match on_signal(&mut actor, &mut ctx, signal, &mut draining).await {
                        Flow::Continue => {}
                        Flow::Stop(reason) => break 'run reason,
                        Flow::Kill => {
                            guard.reason = Some(ExitReason::Killed);
                            return;
                        }
                    }
                }
            }
            Next::Messages => {
                let mut budget = BUDGET;
                while let Some(msg) = guard.batch.pop_front() {
                    if let Err(reason) = call(actor.handle(msg, &mut ctx)).await {
                        break 'run reason;
                    }
                    if ctx.has_stop() || cell.mailbox.signal_pending() {
                        break;
                    }
                    budget -= 1;
                    if budget == 0 {
                        tokio::task::yield_now().await;
                        budget = BUDGET;
                    }
                }
            }
            Next::Closed => break draining.take().unwrap_or(ExitReason::Normal),
        }
    };

    if !stop_children(&cell, &mut signals).await {
        guard.reason = Some(ExitReason::Killed);
        return;
    }
    if let Err(panic) = AssertUnwindSafe(actor.stopped(&reason, &mut ctx))
        .catch_unwind()
        .await
    {
        tracing::warn!(actor = %cell.id, panic = %panic_message(&*panic), "the stopped hook panicked");
    }
    guard.reason = Some(reason);
}

async fn on_signal<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    signal: Signal,
    draining: &mut Option<ExitReason>,
) -> Flow {
    let flow = match signal {
        Signal::Stop(reason) => {
            // The sender closed the mailbox already; the first reason wins.
            draining.get_or_insert(reason);
            Flow::Continue
        }
        Signal::Kill => Flow::Kill,
        Signal::Exit { from, reason } => {
            // Not linked any more (unlinked after the signal was sent): ignore it.
            if !ctx.myself().cell.core.remove_link(&from) {
                Flow::Continue
            } else if ctx.traps_exit() {
                hook_flow(call(actor.on_exit(from, reason, ctx)).await)
            } else if reason.is_normal() {
                Flow::Continue
            } else {
                Flow::Stop(reason)
            }
        }
        Signal::Down(down) => {
            if ctx.take_monitor(down.monitor) {
                hook_flow(call(actor.on_down(down, ctx)).await)
            } else {
                Flow::Continue
            }
        }
        Signal::ChildTerminated => Flow::Continue,
    };
    match flow {
        Flow::Continue => ctx.take_stop().map_or(Flow::Continue, Flow::Stop),
        other => other,
    }
}

fn hook_flow(result: Result<(), ExitReason>) -> Flow {
    match result {
        Ok(()) => Flow::Continue,
        Err(reason) => Flow::Stop(reason),
    }
}

/// Stops the actor's children and waits until all have ended; false if the actor was killed
/// meanwhile.
async fn stop_children<M: Send + 'static>(
    cell: &Arc<Cell<M>>,
    signals: &mut VecDeque<Signal>,
) -> bool {
    let children = cell.core.children();
    if children.is_empty() {
        return true;
    }
    for child in &children {
        child.stop(ExitReason::Shutdown);
    }
    drop(children);
    while cell.core.has_children() {
        poll_fn(|cx| cell.mailbox.poll_signals(cx, signals)).await;
        // Only a kill matters now: exits, downs and stops are moot for an actor that is ending.
        if signals.drain(..).any(|s| matches!(s, Signal::Kill)) {
            return false;
        }
    }
    true
}

/// Runs a hook, turning an error into `Failed` and a panic into `Panicked`.
async fn call(hook: impl Future<Output = ActorResult>) -> Result<(), ExitReason> {
    match AssertUnwindSafe(hook).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(ExitReason::Failed(err.message().to_owned())),
        Err(panic) => Err(ExitReason::Panicked(panic_message(&*panic))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
