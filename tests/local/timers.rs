//! Timers fire on time (paused clock) and are cancelled when their actor ends.

use std::time::Duration;

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

enum Tick {
    After(u64),
    StartInterval(Duration),
    StopInterval,
    StopSelf,
    /// Takes this long to handle (on the clock).
    Take(Duration),
}

struct Ticker {
    events: mpsc::UnboundedSender<(tokio::time::Instant, u64)>,
    interval: Option<ensemble::TimerRef>,
    ticks: u64,
}

impl Actor for Ticker {
    type Msg = Tick;

    async fn handle(&mut self, msg: Tick, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Tick::After(n) => {
                let _ = self.events.send((tokio::time::Instant::now(), n));
            }
            Tick::StartInterval(period) => {
                self.interval = Some(ctx.send_interval(period, || Tick::After(1000)));
                ctx.send_after(Duration::from_secs(3600), Tick::After(7));
            }
            Tick::StopInterval => {
                if let Some(timer) = self.interval.take() {
                    ctx.cancel_timer(timer);
                }
            }
            Tick::StopSelf => ctx.stop(),
            Tick::Take(duration) => tokio::time::sleep(duration).await,
        }
        self.ticks += 1;
        Ok(())
    }
}

type Events = mpsc::UnboundedReceiver<(tokio::time::Instant, u64)>;

/// A [`Ticker`] on `node`, and what it reports.
fn ticker(node: &Node) -> (ActorRef<Tick>, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = node
        .spawn(Ticker {
            events: tx,
            interval: None,
            ticks: 0,
        })
        .unwrap();
    (actor, rx)
}

struct Delayed {
    events: mpsc::UnboundedSender<(tokio::time::Instant, u64)>,
}

impl Actor for Delayed {
    type Msg = u64;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        ctx.send_after(Duration::from_millis(300), 3);
        ctx.send_after(Duration::from_millis(100), 1);
        Ok(())
    }

    async fn handle(&mut self, n: u64, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.events.send((tokio::time::Instant::now(), n));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn send_after_fires_after_its_delay_in_order() {
    let node = node();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    let _actor = node.spawn(Delayed { events: tx }).unwrap();
    let (at, n) = rx.recv().await.unwrap();
    assert_eq!(n, 1);
    assert!(at - start >= Duration::from_millis(100));
    let (at, n) = rx.recv().await.unwrap();
    assert_eq!(n, 3);
    assert!(at - start >= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn interval_ticks_until_cancelled() {
    let node = node();
    let (actor, mut rx) = ticker(&node);
    let start = tokio::time::Instant::now();
    actor
        .tell(Tick::StartInterval(Duration::from_millis(100)))
        .await
        .unwrap();
    for i in 1..=3u32 {
        let (at, n) = rx.recv().await.unwrap();
        assert_eq!(n, 1000);
        assert!(at - start >= Duration::from_millis(100) * i);
    }
    actor.tell(Tick::StopInterval).await.unwrap();
    // Let any tick already in the mailbox through, then nothing more for a long while.
    actor.tell(Tick::After(5)).await.unwrap();
    while rx.recv().await.unwrap().1 != 5 {}
    tokio::time::advance(Duration::from_secs(10)).await;
    tokio::task::yield_now().await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn timers_are_cancelled_when_the_actor_stops() {
    let node = node();
    let (actor, mut rx) = ticker(&node);
    actor
        .tell(Tick::StartInterval(Duration::from_millis(100)))
        .await
        .unwrap();
    actor.tell(Tick::StopSelf).await.unwrap();
    actor.wait_for_exit().await;
    // A live timer would now send to a stopped actor: a dead letter.
    tokio::time::advance(Duration::from_secs(7200)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(node.dead_letters(), 0);
    assert!(rx.try_recv().is_err());
}

/// A zero period is a millisecond: the interval ticks (tokio's would panic in the timer task,
/// and the timer would never fire).
#[tokio::test(start_paused = true)]
async fn an_interval_of_zero_ticks_every_millisecond() {
    let node = node();
    let (actor, mut rx) = ticker(&node);
    let start = tokio::time::Instant::now();
    actor
        .tell(Tick::StartInterval(Duration::ZERO))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(rx.recv().await.unwrap().1, 1000);
    }
    assert!(tokio::time::Instant::now() - start >= Duration::from_millis(3));
}

/// Ticks that find their actor stopping are dropped with their timer, not counted as dead
/// letters, as Erlang drops a timer's message to a process that has ended.
#[tokio::test(start_paused = true)]
async fn a_tick_that_finds_its_actor_stopping_is_no_dead_letter() {
    let node = node();
    let (tx, _rx) = mpsc::unbounded_channel();
    let actor = node
        .spawn_with(
            Ticker {
                events: tx,
                interval: None,
                ticks: 0,
            },
            SpawnOptions::new().mailbox_capacity(1),
        )
        .unwrap();
    actor
        .tell(Tick::StartInterval(Duration::from_millis(1)))
        .await
        .unwrap();
    actor
        .tell(Tick::Take(Duration::from_millis(100)))
        .await
        .unwrap();
    // Ticks fill the one place and the next waits for room while the actor is busy.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(actor.mailbox_len(), 1);
    actor.stop();
    actor.wait_for_exit().await;
    assert_eq!(node.dead_letters(), 0);
}
