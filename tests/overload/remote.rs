//! A sender faster than a receiver on another node (two nodes in this process, real QUIC on
//! loopback).
//!
//! What the runtime does (docs/semantics.md, "Across nodes"): a remote `tell` waits only
//! while the connection's outgoing lane (4096 frames) is full; the receiving node never waits
//! for a slow actor: a message that finds the mailbox full is dropped there and counted as a
//! dead letter of that node, and an ask it carried fails with `AskError::Refused`. So the
//! sender of a `tell` is not told what was dropped (the receiving node's dead-letter count
//! is); the sender of an `ask` is, and `try_tell` reports a full lane.

use std::sync::Arc;
use std::time::Duration;

use ensemble::cluster::{Cluster, ClusterConfig, DownDecision};
use ensemble::prelude::*;
use ensemble::{AskError, TellError};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::local::{CAPACITY, Gated, GatedMsg, SIZE, until};
use crate::{Load, MIB, live, one_at_a_time, reset_peak, rss};

/// Two nodes, `sender` and `receiver`, connected; a gated receiver on `receiver` found by name
/// from `sender`.
struct Pair {
    nodes: Vec<(Node, Cluster)>,
    receiving: Node,
    gate: Arc<Semaphore>,
    handled: Arc<Mutex<Vec<u64>>>,
    target: ActorRef<GatedMsg>,
    _certs: tempfile::TempDir,
}

async fn pair() -> Pair {
    let certs = crate::common::certificates(&["sender", "receiver"]);
    let start = |name: &'static str, seeds: Vec<std::net::SocketAddr>| {
        let certs = certs.path().to_owned();
        async move {
            let node = Node::new(NodeConfig::new(name)).unwrap();
            let cert = ensemble::transport::certs::NodeCert::load(&certs, name).unwrap();
            let mut config = ClusterConfig::new("overload");
            config.seeds = seeds;
            // What is measured is the flood, not failure detection: with the default (a peer
            // suspect for 200 ms is down), two nodes starved of CPU by the flood and a loaded
            // machine declared each other down in one run in three.
            config.down = DownDecision::External;
            config.phi.acceptable_pause = Duration::from_secs(3);
            let cluster = Cluster::start(&node, config, &cert).await.unwrap();
            (node, cluster)
        }
    };
    let (receiving, receiving_cluster) = start("receiver", vec![]).await;
    let (sending, sending_cluster) = start("sender", vec![receiving_cluster.local_addr()]).await;
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let gated = receiving
        .spawn_with(
            Gated {
                gate: gate.clone(),
                handled: handled.clone(),
            },
            SpawnOptions::new().mailbox_capacity(CAPACITY),
        )
        .unwrap();
    receiving.register_remote("gated", &gated).unwrap();
    until("the nodes connect", || {
        sending_cluster
            .members()
            .iter()
            .any(|m| m.node.name() == "receiver")
    })
    .await;
    let id = receiving.id().clone();
    let target = sending_cluster
        .whereis::<GatedMsg>(&id, "gated")
        .await
        .unwrap();
    Pair {
        nodes: vec![
            (sending, sending_cluster),
            (receiving.clone(), receiving_cluster),
        ],
        receiving,
        gate,
        handled,
        target,
        _certs: certs,
    }
}

impl Pair {
    async fn stop(self) {
        for (node, cluster) in self.nodes {
            cluster.leave().await;
            node.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_remote_flood_is_dropped_at_the_full_mailbox_and_counted_there() {
    let _turn = one_at_a_time();
    const N: u64 = 30_000;
    let pair = pair().await;
    let dead_before = pair.receiving.dead_letters();
    reset_peak();
    let rss_before = rss();
    let mut rss_peak = rss_before;
    for i in 0..N {
        // Every tell succeeds: the sender is not told of drops on the other node.
        assert!(
            pair.target
                .tell(GatedMsg::Item(Load::new(i, SIZE)))
                .await
                .is_ok()
        );
        if i % 1000 == 0 {
            rss_peak = rss_peak.max(rss());
        }
    }
    // Let the receiver go; every message ends handled or dropped.
    pair.gate.add_permits(N as usize);
    let (handled, receiving) = (pair.handled.clone(), pair.receiving.clone());
    until("every message is handled or dropped", || {
        handled.lock().len() as u64 + receiving.dead_letters() - dead_before == N
    })
    .await;
    rss_peak = rss_peak.max(rss());
    let handled = pair.handled.lock().clone();
    let dropped = pair.receiving.dead_letters() - dead_before;
    let (alive, peak) = live();
    let grown = rss_peak.saturating_sub(rss_before) as f64 / MIB;
    eprintln!(
        "remote tell: {N} messages of {SIZE} bytes to a mailbox of {CAPACITY} on another node: \
         {} handled, {dropped} dropped as dead letters of the receiving node; at most {peak} \
         alive at once; RSS grew {grown:.1} MiB (unbounded: {:.0} MiB)",
        handled.len(),
        (N as usize * SIZE) as f64 / MIB
    );
    assert!(dropped > 0, "a receiver that took nothing dropped nothing");
    assert!(
        handled.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order"
    );
    // Decoded on the receiving node: the mailbox, a batch, one being refused; and the one in
    // the sender's hand.
    assert!(
        peak <= 2 * CAPACITY as i64 + 2,
        "{peak} messages alive at once"
    );
    assert_eq!(alive, 0);
    assert!(
        grown < (N as usize * SIZE) as f64 / MIB / 2.0,
        "RSS grew {grown:.1} MiB"
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn remote_askers_are_told_when_the_mailbox_is_full() {
    let _turn = one_at_a_time();
    const N: u64 = 1000;
    let pair = pair().await;
    reset_peak();
    let asks: Vec<_> = (0..N)
        .map(|i| {
            let target = pair.target.clone();
            tokio::spawn(async move {
                target
                    .ask(
                        |reply| GatedMsg::Ask(Load::new(i, SIZE), reply),
                        Duration::from_secs(120),
                    )
                    .await
            })
        })
        .collect();
    // With the gate shut, the receiver takes at most a mailbox and a batch: every other ask
    // is refused, and its asker told so. Then the rest are answered.
    let fit = 2 * CAPACITY;
    until("every ask that does not fit is refused", || {
        asks.iter().filter(|a| a.is_finished()).count() >= N as usize - fit
    })
    .await;
    pair.gate.add_permits(N as usize);
    let handled = pair.handled.clone();
    let (mut answered, mut refused) = (0u64, Vec::new());
    for ask in asks {
        match ask.await.unwrap() {
            Ok(_) => answered += 1,
            Err(AskError::Refused { reason, .. }) => refused.push(reason),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (alive, peak) = live();
    eprintln!(
        "remote ask: {N} asks to a mailbox of {CAPACITY}: {answered} answered, {} refused \
         (\"{}\"); at most {peak} alive at once",
        refused.len(),
        refused.first().cloned().unwrap_or_default()
    );
    assert_eq!(answered + refused.len() as u64, N);
    assert_eq!(handled.lock().len() as u64, answered);
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|r| r.contains("is full")), "{refused:?}");
    assert_eq!(alive, 0);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn remote_try_tell_reports_a_full_lane_and_hands_the_message_back() {
    let _turn = one_at_a_time();
    const N: u64 = 30_000;
    let pair = pair().await;
    let dead_before = pair.receiving.dead_letters();
    pair.gate.add_permits(N as usize);
    let (mut sent, mut full) = (0u64, 0u64);
    for i in 0..N {
        match pair.target.try_tell(GatedMsg::Item(Load::new(i, SIZE))) {
            Ok(()) => sent += 1,
            Err(TellError::Full {
                message, capacity, ..
            }) => {
                let GatedMsg::Item(load) = message else {
                    unreachable!()
                };
                assert_eq!(load.id, i);
                assert_eq!(capacity, 4096, "the lane's capacity");
                full += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (handled, receiving) = (pair.handled.clone(), pair.receiving.clone());
    until("every sent message is handled or dropped", || {
        handled.lock().len() as u64 + receiving.dead_letters() - dead_before == sent
    })
    .await;
    eprintln!(
        "remote try_tell: {N} messages sent without waiting: {sent} queued, {full} refused with \
         the lane full (4096 frames) and handed back; {} handled, {} dropped at the mailbox",
        pair.handled.lock().len(),
        pair.receiving.dead_letters() - dead_before
    );
    assert_eq!(sent + full, N);
    assert_eq!(live().0, 0);
    pair.stop().await;
}
