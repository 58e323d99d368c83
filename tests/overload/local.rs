//! A sender faster than a local receiver: `tell` is held back, `try_tell` is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ensemble::TellError;
use ensemble::prelude::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::{Load, MIB, live, one_at_a_time, reset_peak, rss};

/// The receivers' mailbox capacity.
pub(crate) const CAPACITY: usize = 64;
/// Bytes per message.
pub(crate) const SIZE: usize = 4096;

/// What a gated receiver takes.
#[derive(Serialize, Deserialize)]
pub(crate) enum GatedMsg {
    Item(Load),
    Ask(Load, ReplyTo<u64>),
}

/// A receiver that handles one message per permit of its gate: as slow as the test wants.
pub(crate) struct Gated {
    pub(crate) gate: Arc<Semaphore>,
    /// Ids of the messages handled, in order.
    pub(crate) handled: Arc<Mutex<Vec<u64>>>,
}

impl Actor for Gated {
    type Msg = GatedMsg;

    async fn handle(&mut self, msg: GatedMsg, _ctx: &mut Context<Self>) -> ActorResult {
        self.gate.acquire().await.expect("gate open").forget();
        match msg {
            GatedMsg::Item(load) => self.handled.lock().push(load.id),
            GatedMsg::Ask(load, reply) => {
                self.handled.lock().push(load.id);
                let _ = reply.send(load.id);
            }
        }
        Ok(())
    }
}

/// Polls `check` (yielding between polls) until it holds, failing after 60 s.
pub(crate) async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The turn is held for the whole test on purpose: each test has its own runtime and thread.
#[allow(clippy::await_holding_lock)]
async fn tell_waits_for_a_slow_receiver_and_memory_stays_bounded() {
    let _turn = one_at_a_time();
    const N: u64 = 50_000;
    let node = Node::new(NodeConfig::new("flood")).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let receiver = node
        .spawn_with(
            Gated {
                gate: gate.clone(),
                handled: handled.clone(),
            },
            SpawnOptions::new().mailbox_capacity(CAPACITY),
        )
        .unwrap();
    reset_peak();
    let rss_before = rss();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let (receiver, sent) = (receiver.clone(), sent.clone());
        async move {
            for i in 0..N {
                assert!(
                    receiver
                        .tell(GatedMsg::Item(Load::new(i, SIZE)))
                        .await
                        .is_ok()
                );
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    // The receiver takes nothing: the sender stops once the mailbox is full, with at most
    // one more batch taken out of it.
    until("the mailbox fills", || receiver.mailbox_len() == CAPACITY).await;
    let stalled_at = sent.load(Ordering::SeqCst);
    assert!(
        stalled_at <= 2 * CAPACITY as u64,
        "{stalled_at} messages accepted by a receiver that handled none"
    );

    // Let it through one message at a time while the sender pushes as fast as it can.
    let (mut longest, mut rss_peak) = (0, rss_before);
    let mut released = 0u64;
    while handled.lock().len() < N as usize {
        if released < N {
            gate.add_permits(1);
            released += 1;
        }
        longest = longest.max(receiver.mailbox_len());
        if released % 1000 == 0 {
            rss_peak = rss_peak.max(rss());
        }
        tokio::task::yield_now().await;
    }
    sender.await.unwrap();
    let (alive, peak) = live();
    let grown = rss_peak.saturating_sub(rss_before) as f64 / MIB;
    eprintln!(
        "tell: {N} messages of {SIZE} bytes through a mailbox of {CAPACITY}: longest mailbox \
         {longest}, at most {peak} messages alive at once, RSS grew {grown:.1} MiB \
         (unbounded: {:.0} MiB)",
        (N as usize * SIZE) as f64 / MIB
    );
    assert!(longest <= CAPACITY, "mailbox held {longest} > {CAPACITY}");
    // The mailbox, the batch being handled, and the one in the sender's hand.
    assert!(
        peak <= 2 * CAPACITY as i64 + 1,
        "{peak} messages alive at once"
    );
    assert_eq!(alive, 0);
    assert_eq!(*handled.lock(), (0..N).collect::<Vec<_>>());
    assert!(
        grown < (N as usize * SIZE) as f64 / MIB / 4.0,
        "RSS grew {grown:.1} MiB"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn try_tell_refuses_what_does_not_fit_and_hands_it_back() {
    let _turn = one_at_a_time();
    const N: u64 = 50_000;
    let node = Node::new(NodeConfig::new("flood")).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let receiver = node
        .spawn_with(
            Gated {
                gate: gate.clone(),
                handled: handled.clone(),
            },
            SpawnOptions::new().mailbox_capacity(CAPACITY),
        )
        .unwrap();
    reset_peak();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    let mut longest = 0;
    for i in 0..N {
        match receiver.try_tell(GatedMsg::Item(Load::new(i, SIZE))) {
            Ok(()) => accepted.push(i),
            Err(TellError::Full {
                message, capacity, ..
            }) => {
                assert_eq!(capacity, CAPACITY);
                let GatedMsg::Item(load) = message else {
                    unreachable!()
                };
                assert_eq!(load.id, i, "the refused message is handed back");
                refused.push(load.id);
            }
            Err(other) => panic!("unexpected {other}"),
        }
        longest = longest.max(receiver.mailbox_len());
        // The receiver handles one message for every 16 sent.
        if i % 16 == 0 {
            gate.add_permits(1);
            tokio::task::yield_now().await;
        }
    }
    gate.add_permits(N as usize);
    until("every accepted message is handled", || {
        handled.lock().len() == accepted.len()
    })
    .await;
    let (alive, peak) = live();
    eprintln!(
        "try_tell: {N} messages, {} accepted, {} refused and handed back; longest mailbox \
         {longest}; at most {peak} alive at once",
        accepted.len(),
        refused.len()
    );
    assert_eq!(
        *handled.lock(),
        accepted,
        "accepted messages handled in order"
    );
    assert_eq!(accepted.len() + refused.len(), N as usize);
    assert!(!refused.is_empty() && !accepted.is_empty());
    assert!(longest <= CAPACITY);
    assert!(
        peak <= 2 * CAPACITY as i64 + 1,
        "{peak} messages alive at once"
    );
    assert_eq!(alive, 0);
    node.shutdown().await;
}
