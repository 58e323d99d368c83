//! The mailbox: a bounded queue of user messages plus a priority lane of system signals.
//!
//! # Design
//!
//! One `parking_lot` mutex guards both lanes, the receiver's waker and the wakers of senders
//! waiting for room. A sender holds it for one `VecDeque::push_back`; the receiver takes *all*
//! queued messages at once by swapping the queue with its own (empty) batch buffer, so it pays
//! for the lock once per batch rather than once per message, and neither side allocates in
//! steady state (both buffers keep their capacity).
//!
//! The receiver is woken only when it has parked: a sender takes the parked waker out, so a
//! burst of sends costs one wake-up.
//!
//! # Invariants
//!
//! - At most `capacity` user messages wait in the queue. Messages the receiver has taken into
//!   its batch no longer count, so up to `2 * capacity` messages can be accepted but unhandled.
//! - Once `closed`, no user message is accepted; once `dead`, no signal either. Both are final.
//! - `signal_pending` is true whenever `signals` is non-empty (both change under the lock); the
//!   receiver reads it without the lock between two user messages.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::signal::Signal;

pub(crate) struct Mailbox<M> {
    state: Mutex<State<M>>,
    signal_pending: AtomicBool,
    /// `u32` rather than `usize`: it packs beside `signal_pending`, a word less per actor.
    capacity: u32,
}

struct State<M> {
    queue: VecDeque<M>,
    /// The parked receiver, if it is waiting for anything to arrive.
    receiver: Option<Waker>,
    /// Signals and waiting senders; allocated on first use, since most mailboxes of a large
    /// population of actors never see either.
    rare: Option<Box<Rare>>,
    closed: bool,
    dead: bool,
}

#[derive(Default)]
struct Rare {
    signals: VecDeque<Signal>,
    /// Senders waiting for room, each at the place its [`Pushing`] holds; all are woken when
    /// the receiver takes a batch, and the places start a new round. A sender that stops
    /// waiting (an ask that timed out) empties its place for the next one, so the list never
    /// holds more than the senders waiting at once.
    senders: Vec<Option<Waker>>,
    /// Places emptied in this round.
    free: Vec<usize>,
    /// Counts the rounds: a place is the sender's only in the round it took it.
    round: u64,
}

/// A waiting sender's place among the mailbox's waiting senders.
#[derive(Clone, Copy)]
struct Place {
    round: u64,
    index: usize,
}

impl Rare {
    /// Keeps `waker` at the sender's place, taking one if it has none in this round.
    fn wait(&mut self, place: &mut Option<Place>, waker: &Waker) {
        if let Some(p) = place
            && p.round == self.round
            && let Some(Some(kept)) = self.senders.get_mut(p.index)
        {
            if !kept.will_wake(waker) {
                *kept = waker.clone();
            }
            return;
        }
        let index = match self.free.pop() {
            Some(index) => {
                self.senders[index] = Some(waker.clone());
                index
            }
            None => {
                self.senders.push(Some(waker.clone()));
                self.senders.len() - 1
            }
        };
        *place = Some(Place {
            round: self.round,
            index,
        });
    }

    /// Empties a sender's place, if it still holds one in this round.
    fn leave(&mut self, place: Place) {
        if place.round == self.round
            && let Some(kept) = self.senders.get_mut(place.index)
            && kept.take().is_some()
        {
            self.free.push(place.index);
        }
    }
}

impl<M> State<M> {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// Takes every waiting sender's place, to be woken outside the lock (the empty places
    /// among them are skipped then); their places end with this round.
    fn take_senders(&mut self) -> Vec<Option<Waker>> {
        match &mut self.rare {
            Some(rare) if !rare.senders.is_empty() => {
                rare.round += 1;
                rare.free.clear();
                std::mem::take(&mut rare.senders)
            }
            _ => Vec::new(),
        }
    }

    fn has_signals(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.signals.is_empty())
    }
}

/// What a push into the mailbox came to.
pub(crate) enum Push<M> {
    Accepted,
    Full(M),
    Closed(M),
}

/// What the receiver should do next.
pub(crate) enum Next {
    /// Signals wait: take them with `take_signals` (not returned here, to keep the receiver's
    /// state small; signals are rare).
    Signals,
    /// The caller's batch holds messages.
    Messages,
    /// The mailbox is closed and every accepted message has been taken.
    Closed,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                receiver: None,
                rare: None,
                closed: false,
                dead: false,
            }),
            signal_pending: AtomicBool::new(false),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Puts a message in the queue if there is room, without waiting.
    pub(crate) fn try_push(&self, msg: M) -> Push<M> {
        let mut state = self.state.lock();
        if state.closed {
            return Push::Closed(msg);
        }
        if state.queue.len() >= self.capacity() {
            return Push::Full(msg);
        }
        state.queue.push_back(msg);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        Push::Accepted
    }

    /// Puts a message in the queue, waiting while it is full; hands the message back if the
    /// mailbox is closed first.
    pub(crate) fn push(&self, msg: M) -> Pushing<'_, M> {
        Pushing {
            mailbox: self,
            slot: Some(msg),
            place: None,
        }
    }

    /// Like `try_push`, but a full mailbox keeps the sender's waker at its `place` to be woken
    /// when room is made. `slot` holds the message until it is accepted or handed back.
    fn poll_push(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<M>,
        place: &mut Option<Place>,
    ) -> Poll<Result<(), M>> {
        let mut state = self.state.lock();
        let msg = slot.take().expect("a push polled after it completed");
        if state.closed {
            return Poll::Ready(Err(msg));
        }
        if state.queue.len() >= self.capacity() {
            *slot = Some(msg);
            state.rare().wait(place, cx.waker());
            return Poll::Pending;
        }
        if let Some(p) = place.take() {
            state.rare().leave(p);
        }
        state.queue.push_back(msg);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// Adds a signal to the priority lane. Returns false if the actor is already dead.
    pub(crate) fn push_signal(&self, signal: Signal) -> bool {
        let mut state = self.state.lock();
        if state.dead {
            return false;
        }
        state.rare().signals.push_back(signal);
        self.signal_pending.store(true, Ordering::Release);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        true
    }

    /// True if a signal waits; cheap enough to check between two user messages.
    pub(crate) fn signal_pending(&self) -> bool {
        self.signal_pending.load(Ordering::Acquire)
    }

    /// The receiver's step: pending signals first, then the batch it already holds, then a new
    /// batch from the queue.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>, batch: &mut VecDeque<M>) -> Poll<Next> {
        if !batch.is_empty() && !self.signal_pending() {
            return Poll::Ready(Next::Messages);
        }
        let mut state = self.state.lock();
        if state.has_signals() {
            return Poll::Ready(Next::Signals);
        }
        if !batch.is_empty() {
            return Poll::Ready(Next::Messages);
        }
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, batch);
            let senders = state.take_senders();
            drop(state);
            for waker in senders.into_iter().flatten() {
                waker.wake();
            }
            return Poll::Ready(Next::Messages);
        }
        if state.closed {
            return Poll::Ready(Next::Closed);
        }
        Self::park(&mut state, cx);
        Poll::Pending
    }

    /// Waits for signals only, leaving user messages queued (used while stopping children).
    pub(crate) fn poll_signals(&self, cx: &mut Context<'_>) -> Poll<VecDeque<Signal>> {
        let mut state = self.state.lock();
        if let Some(signals) = self.take_signals_locked(&mut state) {
            return Poll::Ready(signals);
        }
        Self::park(&mut state, cx);
        Poll::Pending
    }

    /// Takes the signals that wait, if any.
    pub(crate) fn take_signals(&self) -> VecDeque<Signal> {
        self.take_signals_locked(&mut self.state.lock())
            .unwrap_or_default()
    }

    fn take_signals_locked(&self, state: &mut State<M>) -> Option<VecDeque<Signal>> {
        if !state.has_signals() {
            return None;
        }
        self.signal_pending.store(false, Ordering::Release);
        Some(std::mem::take(&mut state.rare().signals))
    }

    fn park(state: &mut State<M>, cx: &mut Context<'_>) {
        match &state.receiver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.receiver = Some(cx.waker().clone()),
        }
    }

    /// Accepts no more user messages, once the actor has left its message loop, and returns
    /// those queued, for the caller to drop as dead letters. Senders waiting for room are
    /// woken and get their message back now rather than wait for an end that may depend on
    /// them (a child that tells its stopping parent, say).
    pub(crate) fn close(&self) -> VecDeque<M> {
        let mut state = self.state.lock();
        state.closed = true;
        let queue = std::mem::take(&mut state.queue);
        let senders = state.take_senders();
        drop(state);
        for waker in senders.into_iter().flatten() {
            waker.wake();
        }
        queue
    }

    /// Closes the mailbox and queues `signal` in one step: the receiver never finds it
    /// closed and empty without the signal that says why (it would end with `Normal`).
    pub(crate) fn close_with_signal(&self, signal: Signal) {
        let mut state = self.state.lock();
        if state.dead {
            return;
        }
        state.closed = true;
        state.rare().signals.push_back(signal);
        self.signal_pending.store(true, Ordering::Release);
        let senders = state.take_senders();
        let receiver = state.receiver.take();
        drop(state);
        for waker in senders.into_iter().flatten() {
            waker.wake();
        }
        if let Some(waker) = receiver {
            waker.wake();
        }
    }

    /// The actor is gone: accepts nothing more and drops whatever is queued. Returns how many
    /// user messages were dropped.
    pub(crate) fn kill(&self) -> usize {
        let mut state = self.state.lock();
        state.closed = true;
        state.dead = true;
        let queue = std::mem::take(&mut state.queue);
        let rare = state.rare.take();
        state.receiver = None;
        self.signal_pending.store(false, Ordering::Release);
        drop(state);
        // Woken and dropped outside the lock: a message may own a `ReplyTo` whose drop wakes
        // an asker, and a woken sender retries at once.
        if let Some(rare) = rare {
            for waker in rare.senders.into_iter().flatten() {
                waker.wake();
            }
        }
        queue.len()
    }

    /// Number of user messages waiting (not counting a batch the receiver holds).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// A sender that waited stops waiting: its place goes to the next one.
    fn leave(&self, place: Place) {
        if let Some(rare) = &mut self.state.lock().rare {
            rare.leave(place);
        }
    }
}

/// The future of [`Mailbox::push`].
pub(crate) struct Pushing<'a, M> {
    mailbox: &'a Mailbox<M>,
    slot: Option<M>,
    place: Option<Place>,
}

// The message is moved in and out by value, never pinned.
impl<M> Unpin for Pushing<'_, M> {}

impl<M> Future for Pushing<'_, M> {
    type Output = Result<(), M>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let done = this.mailbox.poll_push(cx, &mut this.slot, &mut this.place);
        if done.is_ready() {
            // Accepted, the place was left under the lock; refused, the mailbox is closed
            // and its waiting senders are gone with their round.
            this.place = None;
        }
        done
    }
}

impl<M> Drop for Pushing<'_, M> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.mailbox.leave(place);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;
    use crate::exit::ExitReason;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountWakes>, Waker) {
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn bounded_queue_hands_message_back_when_full() {
        let mb = Mailbox::new(2);
        assert!(matches!(mb.try_push(1), Push::Accepted));
        assert!(matches!(mb.try_push(2), Push::Accepted));
        assert!(matches!(mb.try_push(3), Push::Full(3)));
        assert_eq!(mb.len(), 2);
    }

    #[test]
    fn signals_overtake_queued_messages() {
        let mb = Mailbox::new(8);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(matches!(mb.try_push(1), Push::Accepted));
        assert!(mb.push_signal(Signal::Stop(ExitReason::Normal)));
        let mut batch = VecDeque::new();
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Signals)
        ));
        assert_eq!(mb.take_signals().len(), 1);
        assert!(!mb.signal_pending());
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Messages)
        ));
        assert_eq!(batch.pop_front(), Some(1));
    }

    #[test]
    fn a_signal_interrupts_a_batch_in_hand() {
        let mb = Mailbox::new(8);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut batch = VecDeque::from([1, 2]);
        assert!(mb.push_signal(Signal::ChildTerminated));
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Signals)
        ));
        assert_eq!(mb.take_signals().len(), 1);
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Messages)
        ));
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn parked_receiver_is_woken_once_per_burst() {
        let mb = Mailbox::new(8);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut batch = VecDeque::new();
        assert!(mb.poll_next(&mut cx, &mut batch).is_pending());
        for i in 0..5 {
            assert!(matches!(mb.try_push(i), Push::Accepted));
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    fn poll<M>(push: &mut Pushing<'_, M>, waker: &Waker) -> Poll<Result<(), M>> {
        Pin::new(push).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn waiting_sender_is_woken_when_a_batch_is_taken() {
        let mb = Mailbox::new(1);
        let (sender_wakes, sw) = waker();
        let (_, rw) = waker();
        assert!(matches!(mb.try_push(1), Push::Accepted));
        let mut push = mb.push(2);
        assert!(poll(&mut push, &sw).is_pending());
        // A second poll with the same waker does not register it twice.
        assert!(poll(&mut push, &sw).is_pending());
        let mut batch = VecDeque::new();
        let next = mb.poll_next(&mut Context::from_waker(&rw), &mut batch);
        assert!(matches!(next, Poll::Ready(Next::Messages)));
        assert_eq!(sender_wakes.0.load(Ordering::SeqCst), 1);
        assert!(matches!(poll(&mut push, &sw), Poll::Ready(Ok(()))));
    }

    #[test]
    fn many_waiting_senders_neither_wake_each_other_nor_pile_up() {
        let mb = Mailbox::new(1);
        assert!(matches!(mb.try_push(0), Push::Accepted));
        let (wakes, w) = waker();
        let waiting_places = |mb: &Mailbox<i32>| {
            let state = mb.state.lock();
            state.rare.as_ref().map_or(0, |r| r.senders.len())
        };
        // Far more senders wait than any fixed bound, on an actor busy in a handler.
        let mut waiting: Vec<_> = (0..3000).map(|i| mb.push(i)).collect();
        for push in &mut waiting {
            assert!(poll(push, &w).is_pending());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "a sender woke others");
        // Most give up (asks that timed out) and as many new ones come: they take the places
        // the others left.
        waiting.truncate(500);
        let mut newer: Vec<_> = (0..2500).map(|i| mb.push(i)).collect();
        for push in &mut newer {
            assert!(poll(push, &w).is_pending());
        }
        assert_eq!(waiting_places(&mb), 3000);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "a sender woke others");
        // Room is made: each sender still waiting is woken once, and one gets in.
        let mut batch = VecDeque::new();
        let next = mb.poll_next(&mut Context::from_waker(&w), &mut batch);
        assert!(matches!(next, Poll::Ready(Next::Messages)));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3000);
        assert!(matches!(poll(&mut newer[0], &w), Poll::Ready(Ok(()))));
        assert!(poll(&mut newer[1], &w).is_pending());
        assert_eq!(waiting_places(&mb), 1);
    }

    #[test]
    fn closing_hands_waiting_senders_their_messages_back() {
        let mb = Mailbox::new(1);
        assert!(matches!(mb.try_push(1), Push::Accepted));
        let (wakes, w) = waker();
        let mut push = mb.push(2);
        assert!(poll(&mut push, &w).is_pending());
        let queued = mb.close();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(matches!(poll(&mut push, &w), Poll::Ready(Err(2))));
        assert_eq!(
            queued,
            [1],
            "what was queued is handed to the closer to drop"
        );
        assert_eq!(mb.len(), 0);
    }

    #[test]
    fn close_refuses_new_messages_but_keeps_queued_ones() {
        let mb = Mailbox::new(4);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(matches!(mb.try_push(1), Push::Accepted));
        mb.close_with_signal(Signal::Stop(ExitReason::Shutdown));
        assert!(matches!(mb.try_push(2), Push::Closed(2)));
        let mut batch = VecDeque::new();
        // The signal saying why comes with the close, before the end of the queue.
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Signals)
        ));
        assert!(matches!(
            mb.take_signals().pop_front(),
            Some(Signal::Stop(ExitReason::Shutdown))
        ));
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Messages)
        ));
        batch.clear();
        assert!(matches!(
            mb.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Closed)
        ));
    }

    #[test]
    fn kill_drops_queue_and_refuses_signals() {
        let mb = Mailbox::new(4);
        assert!(matches!(mb.try_push(1), Push::Accepted));
        assert!(matches!(mb.try_push(2), Push::Accepted));
        assert_eq!(mb.kill(), 2);
        assert!(!mb.push_signal(Signal::ChildTerminated));
        assert!(matches!(mb.try_push(3), Push::Closed(3)));
    }
}
