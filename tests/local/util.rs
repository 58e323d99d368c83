//! A scriptable test actor that reports what happens to it, and helpers to wait with deadlines.

use std::future::Future;
use std::time::Duration;

use ensemble::prelude::*;
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for something that should happen promptly before failing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

pub(crate) fn node() -> Node {
    Node::new(NodeConfig::new("test")).expect("node")
}

/// What a [`Probe`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Started(&'static str),
    Handled(&'static str, u64),
    Exit(&'static str, ActorId, ExitReason),
    Down(&'static str, ActorId, ExitReason),
    Stopped(&'static str, ExitReason),
}

/// Commands a [`Probe`] obeys.
pub(crate) enum Cmd {
    /// Report `Handled(n)`.
    Note(u64),
    /// Return an error from the handler.
    Fail(&'static str),
    /// Panic in the handler.
    Panic(&'static str),
    /// Stop itself after this message.
    Stop,
    /// Reply with the number.
    Echo(u64, ReplyTo<u64>),
    /// Drop the reply handle without replying.
    DropReply(ReplyTo<u64>),
    /// Keep the reply handle forever without replying.
    Hoard(ReplyTo<u64>),
    /// Tell `entered`, then wait until `release` fires (or is dropped).
    Block {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
    /// Spawn a child probe (linked or not) and hand back its ref.
    SpawnChild {
        name: &'static str,
        linked: bool,
        reply: ReplyTo<ActorRef<Cmd>>,
    },
    /// Link to another actor.
    Link(ActorRef<Cmd>),
    /// Unlink from another actor.
    Unlink(ActorRef<Cmd>, ReplyTo<()>),
    /// Monitor another actor, handing back the monitor ref.
    Monitor(ActorRef<Cmd>, ReplyTo<MonitorRef>),
    /// Remove a monitor, handing back whether it was active.
    Demonitor(MonitorRef, ReplyTo<bool>),
    /// Ask `of` to echo 7, waiting up to an hour, and hand back how the ask ended.
    AskEcho {
        of: ActorRef<Cmd>,
        answer: oneshot::Sender<Result<u64, AskError>>,
    },
}

/// A test actor that reports its life to an event channel.
pub(crate) struct Probe {
    pub(crate) name: &'static str,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) trap_exit: bool,
    /// Whether `stopped` should hang forever (to test shutdown deadlines).
    pub(crate) hang_in_stopped: bool,
}

impl Probe {
    pub(crate) fn new(name: &'static str, events: &mpsc::UnboundedSender<Event>) -> Self {
        Self {
            name,
            events: events.clone(),
            trap_exit: false,
            hang_in_stopped: false,
        }
    }

    fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

impl Actor for Probe {
    type Msg = Cmd;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.trap_exit(self.trap_exit);
        self.report(Event::Started(self.name));
        Ok(())
    }

    async fn handle(&mut self, msg: Cmd, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Cmd::Note(n) => self.report(Event::Handled(self.name, n)),
            Cmd::Fail(why) => return Err(ActorError::new(why)),
            Cmd::Panic(why) => panic!("{why}"),
            Cmd::Stop => ctx.stop(),
            Cmd::Echo(n, reply) => {
                let _ = reply.send(n);
            }
            Cmd::DropReply(reply) => drop(reply),
            Cmd::Hoard(reply) => std::mem::forget(reply),
            Cmd::Block { entered, release } => {
                let _ = entered.send(());
                let _ = release.await;
            }
            Cmd::SpawnChild {
                name,
                linked,
                reply,
            } => {
                let child = Probe::new(name, &self.events);
                let child = if linked {
                    ctx.spawn_linked(child)?
                } else {
                    ctx.spawn(child)?
                };
                let _ = reply.send(child);
            }
            Cmd::Link(other) => ctx.link(&other),
            Cmd::Unlink(other, reply) => {
                ctx.unlink(&other);
                let _ = reply.send(());
            }
            Cmd::Monitor(other, reply) => {
                let _ = reply.send(ctx.monitor(&other));
            }
            Cmd::Demonitor(monitor, reply) => {
                let _ = reply.send(ctx.demonitor(monitor));
            }
            Cmd::AskEcho { of, answer } => {
                let asked = of
                    .ask(|reply| Cmd::Echo(7, reply), Duration::from_secs(3600))
                    .await;
                let _ = answer.send(asked);
            }
        }
        Ok(())
    }

    async fn on_exit(
        &mut self,
        from: ActorId,
        reason: ExitReason,
        _ctx: &mut Context<Self>,
    ) -> ActorResult {
        self.report(Event::Exit(self.name, from, reason));
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        self.report(Event::Down(self.name, down.actor, down.reason));
        Ok(())
    }

    async fn stopped(&mut self, reason: &ExitReason, _ctx: &mut Context<Self>) {
        self.report(Event::Stopped(self.name, reason.clone()));
        if self.hang_in_stopped {
            std::future::pending::<()>().await;
        }
    }
}

/// Receives the next event, failing the test after [`DEADLINE`].
pub(crate) async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    within("the next event", events.recv())
        .await
        .expect("event channel closed")
}

/// Receives events until one matches, failing after [`DEADLINE`]; returns those before it too.
pub(crate) async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<Event>,
    wanted: &Event,
) -> Vec<Event> {
    let mut seen = Vec::new();
    within(&format!("event {wanted:?}"), async {
        loop {
            let event = events.recv().await.expect("event channel closed");
            let done = &event == wanted;
            seen.push(event);
            if done {
                return seen;
            }
        }
    })
    .await
}

pub(crate) const ASK: Duration = Duration::from_secs(5);

/// Spawns a child of `parent` through it and returns the child's ref.
pub(crate) async fn spawn_child(
    parent: &ActorRef<Cmd>,
    name: &'static str,
    linked: bool,
) -> ActorRef<Cmd> {
    parent
        .ask(
            |reply| Cmd::SpawnChild {
                name,
                linked,
                reply,
            },
            ASK,
        )
        .await
        .expect("spawn child")
}

/// Blocks `actor` inside a handler; returns the handle that releases it.
pub(crate) async fn block(actor: &ActorRef<Cmd>) -> oneshot::Sender<()> {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    actor
        .tell(Cmd::Block {
            entered: entered_tx,
            release: release_rx,
        })
        .await
        .expect("block");
    within("the actor to block", entered_rx)
        .await
        .expect("entered");
    release_tx
}
