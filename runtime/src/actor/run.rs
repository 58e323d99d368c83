//! The task that runs one actor: its hooks, its message loop, and its end.
//!
//! # Size
//!
//! Every idle actor holds this task's future, so its size is most of an actor's memory. Only
//! the message loop, which must not allocate, is inline; the rare paths (starting, handling
//! signals, stopping) are boxed futures, so their state machines take room only while they run.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::exit::ExitReason;

use super::mailbox::Next;
use super::signal::Signal;
use super::{Actor, ActorResult, Context};

/// How many messages an actor handles before yielding its worker thread to other tasks.
const BUDGET: u32 = 128;

enum Flow {
    Continue,
    Stop(ExitReason),
    Kill,
}

/// The actor's task. Dropping `ctx` finalizes the actor, however this future ends.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps a second copy of its arguments in its state, which would double the size of the actor
/// and its context in every idle actor.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run_actor<A: Actor>(
    mut actor: A,
    mut ctx: Context<A>,
) -> impl Future<Output = ()> + Send {
    async move {
        if let Err(reason) = Box::pin(start(&mut actor, &mut ctx)).await {
            ctx.set_exit(reason);
            return;
        }
        let reason = 'run: loop {
            if let Some(reason) = ctx.take_stop() {
                break reason;
            }
            let next = {
                let (cell, batch) = ctx.receiver();
                poll_fn(|cx| cell.mailbox.poll_next(cx, batch)).await
            };
            match next {
                Next::Signals => match Box::pin(on_signals(&mut actor, &mut ctx)).await {
                    Flow::Continue => {}
                    Flow::Stop(reason) => break reason,
                    Flow::Kill => {
                        ctx.set_exit(ExitReason::Killed);
                        return;
                    }
                },
                Next::Messages => {
                    let mut budget = BUDGET;
                    loop {
                        // Not `while let`: its scrutinee, the `Option` of the message, would
                        // keep a slot in this future across the handler's `.await`.
                        let Some(msg) = ctx.batch.pop_front() else {
                            break;
                        };
                        // Not `call`: its `map` adds a word to this future, which an actor
                        // whose messages carry a `ReplyTo` cannot spare (see the module docs).
                        let outcome = AssertUnwindSafe(actor.handle(msg, &mut ctx))
                            .catch_unwind()
                            .await;
                        if let Err(reason) = hook_outcome(outcome) {
                            break 'run reason;
                        }
                        if ctx.has_stop() || ctx.cell().mailbox.signal_pending() {
                            break;
                        }
                        budget -= 1;
                        if budget == 0 {
                            tokio::task::yield_now().await;
                            budget = BUDGET;
                        }
                    }
                }
                Next::Closed => break ctx.drained_reason(),
            }
        };
        leave_loop(&mut ctx, &reason);
        Box::pin(finish(&mut actor, &mut ctx, reason)).await;
    }
}

/// Runs `started` and reports its outcome to a waiting `start`. When it failed, the children
/// it started first stop as for any other end, with `Shutdown` (their hooks run), before
/// the failure is reported; no hook of its own runs after them. Killed meanwhile, the actor
/// ends with `Killed`.
async fn start<A: Actor>(actor: &mut A, ctx: &mut Context<A>) -> Result<(), ExitReason> {
    // A kill that came before the task was set up (by a hook before the start, say, whose
    // lease was lost) wins over `started`: the task may run before its abort handle is set.
    let mut outcome = if ctx.cell().core.killed_before_running() {
        Err(ExitReason::Killed)
    } else {
        call(actor.started(ctx)).await
    };
    if let Err(reason) = &outcome {
        leave_loop(ctx, reason);
        if !stop_children(ctx).await {
            outcome = Err(ExitReason::Killed);
        }
    }
    if let Some(tx) = ctx.take_started() {
        let _ = tx.send(outcome.clone());
    }
    outcome
}

/// The actor leaves its message loop, ending with `reason`: nothing more is taken from the
/// queue, and what was not handled is dropped now, as dead letters, before the children stop.
/// Senders waiting for room, and askers whose request waits, must not wait for an end that
/// may wait on them: a child telling or asking its stopping parent.
fn leave_loop<A: Actor>(ctx: &mut Context<A>, reason: &ExitReason) {
    let cell = ctx.cell();
    // First, so an asker woken by its request's drop sees why.
    cell.core.set_ending(reason);
    let mut unhandled = cell.mailbox.close();
    unhandled.append(&mut ctx.batch);
    if !unhandled.is_empty() {
        ctx.cell().core.node.inner.dead_letters.record(
            unhandled.len() as u64,
            ctx.id(),
            "the receiver stopped with messages queued",
        );
    }
}

async fn on_signals<A: Actor>(actor: &mut A, ctx: &mut Context<A>) -> Flow {
    let signals = ctx.cell().mailbox.take_signals();
    // A kill wins over whatever came before it in the batch: no hook runs for a killed actor.
    if signals.iter().any(|s| matches!(s, Signal::Kill)) {
        return Flow::Kill;
    }
    for signal in signals {
        let flow = match signal {
            Signal::Stop(reason) => {
                ctx.start_draining(reason);
                Flow::Continue
            }
            Signal::Kill => Flow::Kill,
            Signal::Exit { from, reason } => {
                // Not linked any more (unlinked after the signal was sent): ignore it.
                if !ctx.cell().core.remove_link(&from) {
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
            Flow::Continue => {
                if let Some(reason) = ctx.take_stop() {
                    return Flow::Stop(reason);
                }
            }
            other => return other,
        }
    }
    Flow::Continue
}

fn hook_flow(result: Result<(), ExitReason>) -> Flow {
    match result {
        Ok(()) => Flow::Continue,
        Err(reason) => Flow::Stop(reason),
    }
}

/// Runs `stopping`, stops the children, runs `stopped`, then records the exit reason. Killed
/// on the way (the reason is not recorded yet), the actor ends with `Killed`.
async fn finish<A: Actor>(actor: &mut A, ctx: &mut Context<A>, reason: ExitReason) {
    if let Err(panic) = AssertUnwindSafe(actor.stopping(&reason, ctx))
        .catch_unwind()
        .await
    {
        tracing::warn!(actor = %ctx.id(), panic = %panic_message(&*panic), "the stopping hook panicked");
    }
    if !stop_children(ctx).await {
        ctx.set_exit(ExitReason::Killed);
        return;
    }
    if let Err(panic) = AssertUnwindSafe(actor.stopped(&reason, ctx))
        .catch_unwind()
        .await
    {
        tracing::warn!(actor = %ctx.id(), panic = %panic_message(&*panic), "the stopped hook panicked");
    }
    // Children its `stopped` hook started stop as the others did.
    if !stop_children(ctx).await {
        ctx.set_exit(ExitReason::Killed);
        return;
    }
    ctx.set_exit(reason);
}

/// Stops the actor's children and waits until all have ended; false if the actor was killed
/// meanwhile.
async fn stop_children<A: Actor>(ctx: &mut Context<A>) -> bool {
    let cell = ctx.cell();
    for child in cell.core.children() {
        child.stop(ExitReason::Shutdown);
    }
    while cell.core.has_children() {
        let signals = poll_fn(|cx| cell.mailbox.poll_signals(cx)).await;
        // Only a kill matters now: exits, downs and stops are moot for an actor that is ending.
        if signals.into_iter().any(|s| matches!(s, Signal::Kill)) {
            return false;
        }
    }
    true
}

/// Runs a hook, turning an error into `Failed` and a panic into `Panicked`.
fn call(hook: impl Future<Output = ActorResult>) -> impl Future<Output = Result<(), ExitReason>> {
    AssertUnwindSafe(hook).catch_unwind().map(hook_outcome)
}

/// How a hook ended, as the actor's exit: an error is `Failed`, a panic `Panicked`.
fn hook_outcome(outcome: std::thread::Result<ActorResult>) -> Result<(), ExitReason> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(ExitReason::Failed(err.message().to_owned())),
        Err(panic) => Err(ExitReason::Panicked(panic_message(&*panic))),
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::actor::Cell;
    use crate::id::ActorId;
    use crate::node::{Node, NodeConfig};

    struct Small(#[allow(dead_code)] u64, #[allow(dead_code)] u64);

    impl Actor for Small {
        type Msg = u64;

        async fn handle(&mut self, msg: u64, _ctx: &mut Context<Self>) -> ActorResult {
            self.0 = msg;
            Ok(())
        }
    }

    /// A small actor whose messages may carry a reply handle, as most protocols' do.
    struct Asked(#[allow(dead_code)] u64, #[allow(dead_code)] u64);

    // Only its size is measured: no message is ever made.
    #[allow(dead_code)]
    enum AskedMsg {
        Set(u64),
        Get(crate::ReplyTo<u64>),
    }

    impl Actor for Asked {
        type Msg = AskedMsg;

        async fn handle(&mut self, msg: AskedMsg, _ctx: &mut Context<Self>) -> ActorResult {
            match msg {
                AskedMsg::Set(v) => self.0 = v,
                AskedMsg::Get(reply) => {
                    let _ = reply.send(self.0);
                }
            }
            Ok(())
        }
    }

    fn run_loop_size<A: Actor>(actor: A) -> usize {
        let node = Node::new(NodeConfig::new("size")).unwrap();
        let id = ActorId::new(node.id().clone(), 1);
        let cell = Arc::new(Cell::<A::Msg>::new(
            id,
            8,
            node.clone(),
            std::any::type_name::<A>,
            None,
        ));
        let ctx = Context::<A>::new(cell, None);
        std::mem::size_of_val(&run_actor(actor, ctx))
    }

    /// tokio puts a task and its future in one 128-byte-aligned block: a future of up to 152
    /// bytes fits 256 bytes, anything larger takes 384. Keep a small actor's task in the
    /// smaller block (see docs/performance.md, bytes per idle actor), also when its messages
    /// carry a reply handle.
    #[tokio::test]
    async fn a_small_actors_task_fits_the_256_byte_block() {
        let size = run_loop_size(Small(0, 0));
        assert!(
            size <= 152,
            "the run loop of a 16-byte actor takes {size} bytes"
        );
        assert_eq!(std::mem::size_of::<AskedMsg>(), 32);
        let size = run_loop_size(Asked(0, 0));
        assert!(
            size <= 152,
            "the run loop of a 16-byte actor with 32-byte messages takes {size} bytes"
        );
    }
}
