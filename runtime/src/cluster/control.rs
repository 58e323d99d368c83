//! The writing end of a connection's control stream, and the heartbeats on it.
//!
//! Heartbeats share the control queue with signals, acknowledgements, member lists and name
//! lookups. A heartbeat tick that finds the queue full marks the heartbeat due instead of
//! dropping it, and the writer puts a due heartbeat in front of the next batch it writes. A
//! peer reading a backlog of signals (a node that stopped many watched actors, over a slow
//! link) so hears heartbeats as it reads, rather than suspecting a live node (and, with
//! `DownDecision::AfterSuspicion`, declaring it down). A peer that reads nothing gets none:
//! the writer waits on it.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::wire::Control;
use crate::id::NodeId;
use crate::transport::frame;

/// How much a writer gathers into one write.
const BATCH: usize = 64 * 1024;

/// Queues a heartbeat, or marks it due for the writer's next batch if the queue is full.
pub(super) fn send_heartbeat(control: &mpsc::Sender<Control>, due: &AtomicBool) {
    if let Err(mpsc::error::TrySendError::Full(_)) = control.try_send(Control::Heartbeat) {
        due.store(true, Ordering::Release);
    }
}

/// Writes queued control frames to `peer`, batching whatever is queued into one write;
/// `max` is the smaller of the two nodes' frame limits, `due` says a heartbeat is due.
pub(super) async fn write(
    mut send: quinn::SendStream,
    mut queue: mpsc::Receiver<Control>,
    max: usize,
    peer: NodeId,
    due: std::sync::Arc<AtomicBool>,
) {
    let mut buf = BytesMut::new();
    while let Some(first) = queue.recv().await {
        batch(first, &mut queue, max, &peer, &due, &mut buf);
        if send.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = send.finish();
}

/// Encodes a due heartbeat, `first` and whatever else is queued into `buf`, up to about
/// [`BATCH`] bytes.
fn batch(
    first: Control,
    queue: &mut mpsc::Receiver<Control>,
    max: usize,
    peer: &NodeId,
    due: &AtomicBool,
    buf: &mut BytesMut,
) {
    if due.swap(false, Ordering::AcqRel) {
        encode(&Control::Heartbeat, max, peer, buf);
    }
    let mut next = Some(first);
    while let Some(control) = next.take() {
        encode(&control, max, peer, buf);
        if buf.len() < BATCH {
            next = queue.try_recv().ok();
        }
    }
}

/// Encodes one frame into `buf`; one over `max` is dropped, logged and counted.
fn encode(control: &Control, max: usize, peer: &NodeId, buf: &mut BytesMut) {
    if let Err(err) = frame::encode(control, max, buf) {
        tracing::error!(%peer, frame = control.kind(), "dropping a control frame that cannot be sent: {err}");
        metrics::counter!("ensemble_transport_dropped_frames_total", "stream" => "control")
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::FrameDecoder;

    fn frames(buf: &BytesMut) -> Vec<Control> {
        let mut decoder = FrameDecoder::new(frame::DEFAULT_MAX_FRAME);
        decoder.extend(buf);
        std::iter::from_fn(|| decoder.next_frame().expect("a whole frame"))
            .map(|payload| frame::decode(&payload).expect("a control frame"))
            .collect()
    }

    /// A full queue marks the heartbeat due, and the writer's next batch starts with it.
    #[test]
    fn a_heartbeat_that_finds_the_queue_full_leads_the_next_batch() {
        let (control, mut queue) = mpsc::channel(1);
        let due = AtomicBool::new(false);
        control.try_send(Control::Leaving { lanes: 0 }).unwrap();
        send_heartbeat(&control, &due);
        assert!(due.load(Ordering::Acquire), "the heartbeat was dropped");
        let peer = NodeId::new("n2", 1);
        let mut buf = BytesMut::new();
        let first = queue.try_recv().unwrap();
        batch(first, &mut queue, 1 << 20, &peer, &due, &mut buf);
        assert!(matches!(
            frames(&buf)[..],
            [Control::Heartbeat, Control::Leaving { .. }]
        ));
        assert!(!due.load(Ordering::Acquire));
        // With room, it is queued as any frame.
        send_heartbeat(&control, &due);
        assert!(!due.load(Ordering::Acquire));
        assert!(matches!(queue.try_recv(), Ok(Control::Heartbeat)));
    }

    /// A frame over the limit is dropped; the rest of the batch goes.
    #[test]
    fn a_frame_over_the_limit_is_dropped_and_the_batch_goes_on() {
        let (control, mut queue) = mpsc::channel(4);
        let due = AtomicBool::new(false);
        control
            .try_send(Control::WhereIs {
                request: 1,
                name: "x".repeat(1000),
            })
            .unwrap();
        control.try_send(Control::Leaving { lanes: 0 }).unwrap();
        let mut buf = BytesMut::new();
        let first = queue.try_recv().unwrap();
        batch(
            first,
            &mut queue,
            100,
            &NodeId::new("n2", 1),
            &due,
            &mut buf,
        );
        assert!(matches!(frames(&buf)[..], [Control::Leaving { .. }]));
    }
}
