//! The writing end of a data lane: a unidirectional QUIC stream to one peer, fed by a queue of
//! encoded frames.
//!
//! # Several senders, one write
//!
//! Frames that are ready at the same moment should leave in one write, so in one datagram when
//! they fit: a datagram costs a system call on each side, and on a machine where the nodes
//! share cores that is much of what a message costs. They often are ready together, from
//! different tasks: a node's copy of the registry applies a batch that grants a lock to one
//! task and answers another's release, and both at once send the leader their next request.
//!
//! tokio runs a woken task next, ahead of the tasks already waiting (its LIFO slot). So the
//! writer, woken by the first frame, would run before the second task had sent anything,
//! write one frame, and wake QUIC's connection task, which also runs next and sends it alone.
//! The writer therefore lets the tasks that are ready run first ([`others_first`]) before it
//! takes what is queued.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::id::{ActorId, NodeId};
use crate::node::Node;

/// Most frames taken into one write.
const MAX_FRAMES: usize = 256;

/// Writes one data lane: opens its stream on the first frame, then writes whatever is queued
/// in one go, after letting the other ready tasks queue theirs. If the stream cannot be opened
/// or written (the connection ended), the frames in hand and those still queued are counted
/// as dead letters of `node`, with `peer` named, and the lane closes.
pub(super) async fn write(
    conn: quinn::Connection,
    mut queue: mpsc::Receiver<Bytes>,
    node: Node,
    peer: NodeId,
    opened: Arc<AtomicU32>,
) {
    let lost = |in_hand: usize, queue: &mut mpsc::Receiver<Bytes>| {
        queue.close();
        let mut count = in_hand as u64;
        while queue.try_recv().is_ok() {
            count += 1;
        }
        tracing::debug!(%peer, count, "frames lost with a data lane to a peer whose connection ended");
        let to = ActorId::new(peer.clone(), 0);
        node.inner
            .dead_letters
            .record(count, &to, "lost with the connection to their node");
    };
    let Some(first) = queue.recv().await else {
        return;
    };
    let Ok(mut send) = conn.open_uni().await else {
        lost(1, &mut queue);
        return;
    };
    opened.fetch_add(1, Ordering::AcqRel);
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_FRAMES);
    batch.push(first);
    loop {
        others_first().await;
        while batch.len() < MAX_FRAMES {
            match queue.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if send.write_all_chunks(&mut batch).await.is_err() {
            // Some of the batch may have left; none is known to have arrived.
            lost(batch.len(), &mut queue);
            return;
        }
        batch.clear();
        match queue.recv().await {
            Some(frame) => batch.push(frame),
            None => {
                let _ = send.finish();
                return;
            }
        }
    }
}

/// Returns once the tasks that were ready to run when it was called have had their turn.
///
/// The task wakes itself and yields, which puts it behind them in the run queue. Unlike
/// `tokio::task::yield_now`, it does not wait for the I/O driver to be polled when nothing
/// else is ready (a system call; measured, it added 5 µs to a remote ask): then it goes on
/// at once.
async fn others_first() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use quinn::Endpoint;
    use tokio::sync::Notify;

    use super::*;
    use crate::transport::certs::ClusterCa;
    use crate::transport::tls;

    const ROUNDS: u64 = 10;

    /// Two tasks woken together each send a frame: they leave in one datagram. tokio's default
    /// runtime on one worker thread, as nodes that share a machine run (docs/operations.md).
    #[test]
    fn frames_of_tasks_woken_together_leave_in_one_datagram() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let ca = ClusterCa::generate("test").unwrap();
            let server_cert = ca.issue("node-a").unwrap();
            let server =
                Endpoint::server(tls::server_config(&server_cert).unwrap(), localhost).unwrap();
            let mut client = Endpoint::client(localhost).unwrap();
            client.set_default_client_config(
                tls::client_config(&ca.issue("node-b").unwrap()).unwrap(),
            );
            let addr = server.local_addr().unwrap();
            let (accepted, dialed) = tokio::join!(
                async { server.accept().await.unwrap().await.unwrap() },
                async { client.connect(addr, "seed").unwrap().await.unwrap() },
            );

            let (lane, queue) = mpsc::channel(64);
            let node = Node::new(crate::node::NodeConfig::new("node-b")).unwrap();
            let peer = node.id().clone();
            tokio::spawn(write(dialed.clone(), queue, node, peer, Arc::default()));
            lane.send(Bytes::from_static(b"open")).await.unwrap();
            let mut recv = accepted.accept_uni().await.unwrap();
            let mut buf = [0u8; 4];
            recv.read_exact(&mut buf).await.unwrap();

            let ready = Arc::new(Notify::new());
            let mut sent = 0;
            for _ in 0..ROUNDS {
                let senders: Vec<_> = (0..2)
                    .map(|_| {
                        let lane = lane.clone();
                        // Woken by `notify_waiters` from here on, even before it is polled.
                        let waiting = ready.clone().notified_owned();
                        tokio::spawn(async move {
                            waiting.await;
                            lane.send(Bytes::from_static(b"ab")).await.unwrap();
                        })
                    })
                    .collect();
                let before = dialed.stats().udp_tx.datagrams;
                // Woken by a task of the runtime, as the registry's copy wakes them.
                let waker = ready.clone();
                tokio::spawn(async move { waker.notify_waiters() });
                for sender in senders {
                    sender.await.unwrap();
                }
                let mut frames = [0u8; 4];
                tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut frames))
                    .await
                    .expect("the frames did not arrive")
                    .unwrap();
                sent += dialed.stats().udp_tx.datagrams - before;
            }
            assert!(
                sent <= ROUNDS + ROUNDS / 2,
                "{sent} datagrams for {ROUNDS} rounds of two frames ready at once"
            );
        });
    }

    /// Frames queued on a lane whose connection has ended are counted as dead letters, not
    /// dropped without a trace.
    #[tokio::test]
    async fn frames_lost_with_the_connection_are_dead_letters() {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let ca = ClusterCa::generate("test").unwrap();
        let server = Endpoint::server(
            tls::server_config(&ca.issue("node-a").unwrap()).unwrap(),
            localhost,
        )
        .unwrap();
        let mut client = Endpoint::client(localhost).unwrap();
        client.set_default_client_config(tls::client_config(&ca.issue("node-b").unwrap()).unwrap());
        let addr = server.local_addr().unwrap();
        let (_accepted, dialed) = tokio::join!(
            async { server.accept().await.unwrap().await.unwrap() },
            async { client.connect(addr, "seed").unwrap().await.unwrap() },
        );
        dialed.close(0u32.into(), b"gone");
        let node = Node::new(crate::node::NodeConfig::new("node-b")).unwrap();
        let (lane, queue) = mpsc::channel(64);
        for _ in 0..3 {
            lane.send(Bytes::from_static(b"lost")).await.unwrap();
        }
        let peer = node.id().clone();
        write(dialed, queue, node.clone(), peer, Arc::default()).await;
        assert_eq!(node.inner.dead_letters.total(), 3);
        assert!(lane.send(Bytes::from_static(b"late")).await.is_err());
    }
}
