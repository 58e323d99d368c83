//! Signals between two nodes outlive a connection that ends while both nodes live.
//!
//! A node numbers the signals it sends one peer (1, 2, ...) and keeps each until the peer
//! acknowledges it; a new connection to the peer carries the unacknowledged ones again, before
//! any signal sent after it came up. The peer applies each number once and in order, and
//! acknowledges what it applied with its next heartbeat. So a stop, a kill, a monitor, a link,
//! an unlink, a `Down` or an `Exit` on its way when a connection ended arrives once the nodes
//! connect again, and nothing is applied twice. Both sides forget a peer when it is declared
//! down or leaves: its signals are moot then, as every monitor and link to its actors fires
//! with `NodeDown`. Akka delivers its system messages the same way, until a node is
//! quarantined.
//!
//! Numbers belong to one pair of node incarnations: a restarted node is a new incarnation, so a
//! new pair, which starts again from 1.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::wire::RemoteSignal;

/// What this node sent one peer and what it applied of the peer's signals.
#[derive(Debug, Default)]
pub(crate) struct PeerSignals {
    /// Held while a signal is numbered and queued on the connection, so that signals go out in
    /// the order of their numbers (also those sent again on a new connection).
    pub(crate) outbox: Mutex<Outbox>,
    /// Held while a signal is applied, so that signals apply in the order of their numbers
    /// even when two connections to the peer deliver at once.
    pub(crate) inbox: Mutex<Received>,
}

/// Signals sent to one peer and not acknowledged yet.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// The number of the last signal sent.
    last: u64,
    /// Sent and not acknowledged, oldest first.
    unacknowledged: VecDeque<(u64, RemoteSignal)>,
    /// The peer is gone: nothing more is kept for it.
    closed: bool,
}

impl Outbox {
    /// Numbers `signal` and keeps it until acknowledged; answers its number.
    pub(crate) fn push(&mut self, signal: RemoteSignal) -> u64 {
        self.last += 1;
        self.unacknowledged.push_back((self.last, signal));
        self.last
    }

    /// The peer applied every signal up to `through`.
    pub(crate) fn acknowledged(&mut self, through: u64) {
        while self
            .unacknowledged
            .front()
            .is_some_and(|(seq, _)| *seq <= through)
        {
            self.unacknowledged.pop_front();
        }
    }

    /// The signals to send again on a new connection, in order.
    pub(crate) fn unacknowledged(&self) -> impl Iterator<Item = &(u64, RemoteSignal)> {
        self.unacknowledged.iter()
    }

    /// The peer is gone (declared down or left): takes what it never acknowledged, and
    /// refuses what comes after, so that a signal pushed as it went is not lost unseen.
    pub(crate) fn close(&mut self) -> VecDeque<(u64, RemoteSignal)> {
        self.closed = true;
        std::mem::take(&mut self.unacknowledged)
    }

    /// Whether the peer is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

/// What this node applied of one peer's signals.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The number of the last signal applied.
    applied: u64,
    /// The number last acknowledged to the peer.
    acknowledged: u64,
    /// The peer was declared down or left: its signals are not applied any more (its
    /// monitors and links fired with `NodeDown`, and one applied now would never fire).
    closed: bool,
}

impl Received {
    /// Whether signal `seq` is to be applied: true the first time a number comes, false for
    /// one sent again that was applied already, and for every signal once the peer is gone.
    pub(crate) fn admit(&mut self, seq: u64) -> bool {
        if self.closed {
            return false;
        }
        if seq <= self.applied {
            // Sent again: the peer did not hear the acknowledgement (it went with a
            // connection). Acknowledge again.
            // Numbers start at 1; a 0 from a faulty peer changes nothing.
            self.acknowledged = self.acknowledged.min(seq.saturating_sub(1));
            return false;
        }
        if seq != self.applied + 1 {
            // The sender keeps what it sent until this node acknowledges it and sends it again
            // first on a new connection; only a signal its writer could not encode (larger
            // than this node's frame limit, logged there) leaves a hole. Applying the rest
            // beats dropping them.
            tracing::warn!(
                expected = self.applied + 1,
                got = seq,
                "a signal came out of order"
            );
        }
        self.applied = seq;
        true
    }

    /// The peer is gone for good: nothing of it applies any more.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// The number to acknowledge, if signals were applied since the last acknowledgement.
    pub(crate) fn acknowledgement_due(&self) -> Option<u64> {
        (self.applied > self.acknowledged).then_some(self.applied)
    }

    /// An acknowledgement of everything up to `through` went out.
    pub(crate) fn acknowledgement_sent(&mut self, through: u64) {
        self.acknowledged = self.acknowledged.max(through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(to: u64) -> RemoteSignal {
        RemoteSignal::Stop { to, reason: None }
    }

    fn pending(outbox: &Outbox) -> Vec<u64> {
        outbox.unacknowledged().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn signals_wait_until_acknowledged_in_order() {
        let mut outbox = Outbox::default();
        assert_eq!(
            [1, 2, 3].map(|to| outbox.push(stop(to))),
            [1, 2, 3],
            "numbered from 1"
        );
        outbox.acknowledged(2);
        assert_eq!(pending(&outbox), [3]);
        assert_eq!(outbox.unacknowledged().next().unwrap().1, stop(3));
        // An older acknowledgement arriving late takes nothing back.
        outbox.acknowledged(1);
        assert_eq!(pending(&outbox), [3]);
        outbox.acknowledged(3);
        assert_eq!(pending(&outbox), [0u64; 0]);
        assert_eq!(
            outbox.push(stop(4)),
            4,
            "numbers go on after acknowledgements"
        );
    }

    #[test]
    fn a_signal_sent_again_applies_once() {
        let mut inbox = Received::default();
        assert!(inbox.admit(1));
        assert!(inbox.admit(2));
        // A new connection carries 1 to 3 again: only 3 is new.
        assert!(!inbox.admit(1));
        assert!(!inbox.admit(2));
        assert!(inbox.admit(3));
        assert!(!inbox.admit(3));
    }

    #[test]
    fn acknowledgements_go_out_only_for_new_signals() {
        let mut inbox = Received::default();
        assert_eq!(inbox.acknowledgement_due(), None);
        inbox.admit(1);
        inbox.admit(2);
        assert_eq!(inbox.acknowledgement_due(), Some(2));
        inbox.acknowledgement_sent(2);
        assert_eq!(inbox.acknowledgement_due(), None);
        inbox.admit(3);
        assert_eq!(inbox.acknowledgement_due(), Some(3));
    }

    #[test]
    fn a_signal_sent_again_is_acknowledged_again() {
        // The acknowledgement of 1 and 2 went with a connection: the peer sends them again.
        let mut inbox = Received::default();
        inbox.admit(1);
        inbox.admit(2);
        inbox.acknowledgement_sent(2);
        assert!(!inbox.admit(1));
        assert_eq!(inbox.acknowledgement_due(), Some(2));
    }

    #[test]
    fn a_signal_numbered_zero_is_dropped() {
        // Numbers start at 1: a faulty peer's 0 is neither applied nor a fault here.
        let mut inbox = Received::default();
        assert!(!inbox.admit(0));
        assert_eq!(inbox.acknowledgement_due(), None);
        assert!(inbox.admit(1));
    }

    #[test]
    fn nothing_applies_from_a_peer_gone_for_good() {
        let mut inbox = Received::default();
        assert!(inbox.admit(1));
        inbox.close();
        assert!(!inbox.admit(2));
    }
}
