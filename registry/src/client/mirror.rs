//! The node's local copy of the registry state, fed by one voter (on a voter, its own server;
//! elsewhere the leader): first the whole state (in parts, each within a frame), then every
//! batch applied after it, applied here with the same pure state machine. Cached reads
//! (`whereis`, group members) read it without a round trip, and every change's effects are
//! dispatched from here: nodes declared down, locks granted to a waiter of this node, leases
//! lost, config keys changed.
//!
//! On a node that is not a voter, the copy also applies its node's batches before the leader
//! has heard that they committed, once it holds copies of a majority of the voters, and
//! answers its node's writes from them (`super::early`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ensemble_runtime::hashing::HashMap;
use ensemble_runtime::{Actor, ActorResult, Context, ExitReason, NodeId};
use openraft::LogId;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Shared;
use super::early::{CommittedBy, Uncommitted};
use super::lease::LeaseState;
use crate::server::protocol::{FedAnswers, FeedMsg};
use crate::state::{Effect, RegistryState, changes};

/// The copy, shared between the mirror actor (writes) and the registry handle (reads).
#[derive(Default)]
pub(crate) struct View {
    pub(crate) state: RegistryState,
    /// The log index the state is at.
    pub(crate) index: u64,
    /// The server feeding it (a voter's, of one incarnation).
    pub(crate) source: Option<NodeId>,
    /// When the current subscription last sent anything (or was made).
    pub(crate) heard: Option<Instant>,
    /// The connection to the source the subscription was made over (`Cluster::connection`;
    /// `None` for a voter's own server).
    pub(crate) connection: Option<u64>,
    /// Whether a whole state has arrived since the last subscription.
    pub(crate) synced: bool,
}

impl View {
    /// Where a batch sent whole fits: `epoch` is its subscription's, `current` the one this
    /// copy is fed by, `after` the index of the subscription's batch before it.
    fn fit(&self, current: u64, epoch: u64, after: u64, index: u64) -> Fit {
        if epoch != current || !self.synced || index <= self.index {
            Fit::Passed
        } else if after > self.index {
            Fit::Gap
        } else {
            Fit::Next
        }
    }

    /// A message of the current subscription came: whether the subscription still works.
    ///
    /// Only a working subscription counts as heard from; the feed task subscribes again once
    /// one has been silent a while (`FEED_SILENCE`, in `session.rs`). One that lost
    /// something keeps talking: were each message counted, the copy would wait for good,
    /// applying nothing. The feed sends its whole state first and then the rest in order, so
    /// a batch, an idle word or a word of commits that comes while the copy has no whole
    /// state means the state was lost: the subscription is dead already.
    fn heard_from(&mut self, sent: Sent) {
        match sent {
            Sent::StatePart => self.heard = Some(Instant::now()),
            _ if self.synced => self.heard = Some(Instant::now()),
            // Sent by another task of the source, in no order with the whole state.
            Sent::Early => {}
            Sent::AfterState if self.heard.is_some() => self.lost("state"),
            Sent::AfterState => {}
        }
    }

    /// Something the feed sent never arrived (`what`, for the metric): apply nothing more
    /// until a new subscription's whole state (the feed task subscribes again at once).
    fn lost(&mut self, what: &'static str) {
        metrics::counter!("ensemble_registry_copy_resyncs_total", "lost" => what).increment(1);
        self.heard = None;
        self.synced = false;
    }
}

/// Where a batch sent whole fits into a copy ([`View::fit`]).
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    /// The copy holds everything before it: apply it.
    Next,
    /// Of another subscription, before the whole state came, or applied already: drop it.
    Passed,
    /// A batch before it never arrived.
    Gap,
}

/// What a subscription sent, for [`View::heard_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// A part of its whole state.
    StatePart,
    /// A batch, an idle word or a word of commits: sent after the whole state.
    AfterState,
    /// A batch sent before it is known committed.
    Early,
}

/// The actor the feed is sent to.
pub(crate) struct Mirror {
    pub(crate) shared: Arc<Shared>,
    /// The parts of a whole state received so far.
    pub(crate) partial: Option<PartialSync>,
    /// Batches sent before they were known committed, until a majority holds them.
    pub(crate) uncommitted: Uncommitted,
}

/// A whole state arriving in parts.
pub(crate) struct PartialSync {
    epoch: u64,
    index: u64,
    bytes: Vec<u8>,
}

impl Actor for Mirror {
    type Msg = FeedMsg;

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        // With its node: nothing feeds this node's copy any more.
        self.shared.end();
    }

    async fn handle(&mut self, msg: FeedMsg, _ctx: &mut Context<Self>) -> ActorResult {
        let current = self.shared.epoch.load(Ordering::Acquire);
        let epoch = match &msg {
            FeedMsg::Sync { epoch, .. }
            | FeedMsg::Batch { epoch, .. }
            | FeedMsg::Idle { epoch, .. }
            | FeedMsg::Committed { epoch, .. } => *epoch,
            FeedMsg::Early(batch) => batch.epoch,
            // From a follower, of no subscription.
            FeedMsg::Copy { voter, entry } => {
                self.uncommitted.copy(*voter, *entry);
                self.apply_early(current, None);
                return Ok(());
            }
        };
        if epoch == current {
            let sent = match &msg {
                FeedMsg::Sync { .. } => Sent::StatePart,
                FeedMsg::Early(_) => Sent::Early,
                _ => Sent::AfterState,
            };
            self.shared.view.write().heard_from(sent);
        }
        // Given last, on every way out: see `Answer`.
        let mut answered = Answer(Vec::new());
        let effects = match msg {
            FeedMsg::Sync {
                epoch,
                index,
                part,
                last,
            } => {
                if epoch != current {
                    tracing::debug!(epoch, current, "feed: sync of an old subscription dropped");
                    // Only its own parts: a stale part must not wipe the current sync's.
                    if self.partial.as_ref().is_some_and(|p| p.epoch == epoch) {
                        self.partial = None;
                    }
                    return Ok(());
                }
                // Parts come in order; a part of another sync starts over.
                let partial = match self.partial.take() {
                    Some(mut partial) if partial.epoch == epoch && partial.index == index => {
                        partial.bytes.extend_from_slice(&part);
                        partial
                    }
                    _ => PartialSync {
                        epoch,
                        index,
                        bytes: part,
                    },
                };
                if !last {
                    self.partial = Some(partial);
                    return Ok(());
                }
                let state: RegistryState = match rmp_serde::from_slice(&partial.bytes) {
                    Ok(state) => state,
                    Err(err) => {
                        // Parts lost with a connection: subscribe again.
                        tracing::warn!(
                            %err,
                            index,
                            "feed: a whole state did not decode; subscribing again"
                        );
                        self.shared.view.write().lost("state");
                        return Ok(());
                    }
                };
                let mut view = self.shared.view.write();
                if index < view.index {
                    // A voter a little behind the one before: the log is the same, so keep the
                    // newer copy and skip the batches it already holds.
                    view.synced = true;
                    return Ok(());
                }
                let effects = changes(&view.state, &state);
                view.state = state;
                view.index = index;
                view.synced = true;
                effects
            }
            FeedMsg::Batch {
                epoch,
                index,
                after,
                commands,
                answers,
            } => {
                // Answered whether or not this copy applies the batch: the outcomes are
                // committed either way, and a write waits for its copy on its own.
                answered = Answer(answers);
                let mut view = self.shared.view.write();
                match view.fit(current, epoch, after, index) {
                    Fit::Next => {}
                    Fit::Passed => {
                        tracing::debug!(
                            epoch,
                            current,
                            index,
                            at = view.index,
                            synced = view.synced,
                            "feed: batch dropped"
                        );
                        return Ok(());
                    }
                    Fit::Gap => {
                        tracing::warn!(
                            index,
                            after,
                            at = view.index,
                            "feed: a batch was lost; subscribing again"
                        );
                        view.lost("batch");
                        return Ok(());
                    }
                }
                view.index = index;
                view.state.apply(&commands).1
            }
            FeedMsg::Early(batch) => {
                if epoch == current {
                    self.uncommitted.early(batch);
                    self.apply_early(current, None);
                }
                return Ok(());
            }
            // Taken above.
            FeedMsg::Copy { .. } => return Ok(()),
            FeedMsg::Committed {
                epoch,
                through,
                answers,
            } => {
                // Given last, as below.
                let _answered = Answer(answers);
                if epoch != current || !self.shared.view.read().synced {
                    return Ok(());
                }
                self.apply_early(current, Some(through));
                let mut view = self.shared.view.write();
                if view.index < through.index {
                    // A batch sent early never came, or came in a term the leader's word does
                    // not speak for: subscribe again for the whole state.
                    tracing::warn!(
                        through = through.index,
                        at = view.index,
                        "feed: a batch sent early was lost; subscribing again"
                    );
                    view.lost("early");
                }
                return Ok(());
            }
            FeedMsg::Idle { epoch, index } => {
                let mut view = self.shared.view.write();
                if epoch == current && view.synced && index > view.index {
                    // Batches this copy never got: subscribe again for the whole state.
                    tracing::warn!(
                        index,
                        at = view.index,
                        "feed: batches were lost; subscribing again"
                    );
                    view.lost("idle");
                }
                return Ok(());
            }
        };
        applied(&self.shared, effects);
        // What came before a batch may be here now.
        self.apply_early(current, None);
        drop(answered);
        Ok(())
    }
}

impl Mirror {
    /// Applies the batches sent early that a majority now holds, or that the leader said
    /// committed (those of `committed`'s leader up to it), in order.
    fn apply_early(&mut self, epoch: u64, committed: Option<LogId<u64>>) {
        loop {
            let (outcomes, effects, requests) = {
                let mut view = self.shared.view.write();
                if !view.synced {
                    return;
                }
                let Some((batch, by)) = self.uncommitted.next(epoch, view.index, committed) else {
                    return;
                };
                view.index = batch.entry.index;
                let by = match by {
                    CommittedBy::Leader => "leader",
                    CommittedBy::Copies => "copies",
                };
                metrics::counter!("ensemble_registry_early_batches_total", "committed_by" => by)
                    .increment(1);
                let (outcomes, effects) = view.state.apply(&batch.commands);
                (outcomes, effects, batch.requests)
            };
            applied(&self.shared, effects);
            // After the copy shows them, as for answers that come with a batch.
            for request in requests {
                let start = request.start as usize;
                let end = start + request.count as usize;
                if let (Some(answer), Some(outcomes)) = (
                    self.shared.early_answers.lock().remove(&request.request),
                    outcomes.get(start..end),
                ) {
                    let _ = answer.send(outcomes.to_vec());
                }
            }
        }
    }
}

/// Answers to this node's proposals that came with a batch, given when dropped: after the copy
/// has applied the batch and dispatched its effects, so that a write answered here is already
/// in the copy.
struct Answer(FedAnswers);

impl Drop for Answer {
    fn drop(&mut self) {
        for (reply, outcomes) in self.0.drain(..) {
            let _ = reply.send(Ok(outcomes));
        }
    }
}

/// Wakes what waits on the copy, now that it applied a change, and dispatches its effects.
fn applied(shared: &Arc<Shared>, effects: Vec<Effect>) {
    shared.applied.notify_waiters();
    for effect in effects {
        dispatch(shared, effect);
    }
}

fn dispatch(shared: &Arc<Shared>, effect: Effect) {
    let me = shared.cluster.node().id();
    match &effect {
        Effect::SessionExpired(node) if node == me => shared.session_expired(),
        Effect::SessionExpired(node) => {
            shared.cluster.declare_down(node);
        }
        Effect::Granted {
            lock,
            holder,
            token,
        } if &holder.node == me => {
            let key = (lock.clone(), holder.id);
            if !claimed(&shared.waiters, &shared.leases, &key, *token) {
                // Nobody will use or release it: its caller stopped waiting (`Abandoned`), or
                // the acquire committed after its call had ended and left the line.
                shared.give_back(key.0, key.1);
            }
        }
        Effect::Revoked { lock, holder, .. } if &holder.node == me => {
            if let Some(lease) = shared.leases.lock().remove(&(lock.clone(), holder.id)) {
                lease.lose("its lock was revoked by the registry");
            }
        }
        _ => {}
    }
    let _ = shared.effects.send(effect);
}

/// Whether a grant to this node's holder `key` has someone to use it: the lock call waiting
/// for it (told here), or the lease its call made already (the grant came in the call's answer
/// first). A holder neither waited for nor held is a ghost: an acquire that committed after
/// its call ended (its caller stopped waiting, or the call failed and its release committed
/// first), which would keep the lock, with nobody to release it, until the node's session
/// ended. Holder ids are never reused, so a holder that is in neither map now never will be;
/// `Registry::acquire` adds the lease before it drops the waiter, so a grant always finds
/// one of the two while the call holds it.
fn claimed(
    waiters: &Mutex<HashMap<(String, u64), oneshot::Sender<u64>>>,
    leases: &Mutex<HashMap<(String, u64), Arc<LeaseState>>>,
    key: &(String, u64),
    token: u64,
) -> bool {
    if let Some(waiter) = waiters.lock().remove(key) {
        return waiter.send(token).is_ok();
    }
    leases.lock().contains_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant for a holder of this node goes to its waiting call or its lease; one for a
    /// holder neither waited for nor held (its call gone) is given back.
    #[test]
    fn a_grant_nobody_waits_for_or_holds_is_unclaimed() {
        let waiters = Mutex::new(HashMap::default());
        let leases = Mutex::new(HashMap::default());
        let key = |id: u64| ("x".to_owned(), id);

        assert!(
            !claimed(&waiters, &leases, &key(1), 10),
            "a holder this node does not know: an acquire committed after its call ended"
        );

        let (tx, mut granted) = oneshot::channel();
        waiters.lock().insert(key(2), tx);
        assert!(claimed(&waiters, &leases, &key(2), 11));
        assert_eq!(
            granted.try_recv(),
            Ok(11),
            "the waiting call gets the token"
        );
        assert!(waiters.lock().is_empty());

        let (tx, granted) = oneshot::channel();
        waiters.lock().insert(key(3), tx);
        drop(granted);
        assert!(
            !claimed(&waiters, &leases, &key(3), 12),
            "a call that stopped waiting"
        );

        leases.lock().insert(key(4), LeaseState::new(13));
        assert!(
            claimed(&waiters, &leases, &key(4), 13),
            "a lease made from the call's answer"
        );
    }

    fn view(index: u64, synced: bool) -> View {
        View {
            index,
            synced,
            ..View::default()
        }
    }

    #[test]
    fn a_batch_applies_only_on_top_of_the_one_before_it() {
        let at_10 = view(10, true);
        assert_eq!(at_10.fit(3, 3, 10, 11), Fit::Next);
        assert_eq!(
            at_10.fit(3, 3, 8, 12),
            Fit::Next,
            "entries between 8 and 12 carry no commands"
        );
        assert_eq!(
            at_10.fit(3, 3, 11, 12),
            Fit::Gap,
            "the batch at 11 never arrived"
        );
    }

    #[test]
    fn batches_of_another_subscription_before_the_whole_state_or_applied_are_dropped() {
        assert_eq!(view(10, true).fit(3, 2, 10, 11), Fit::Passed);
        assert_eq!(view(10, false).fit(3, 3, 10, 11), Fit::Passed);
        assert_eq!(view(10, true).fit(3, 3, 9, 10), Fit::Passed);
        // A whole state newer than the batches that follow it (from a voter a little behind
        // the one before): they are passed, not a gap.
        assert_eq!(view(20, true).fit(3, 3, 14, 15), Fit::Passed);
    }

    #[test]
    fn a_subscription_that_lost_something_is_not_heard_from_until_a_whole_state_comes() {
        let mut copy = view(10, true);
        copy.heard = Some(Instant::now());
        copy.heard_from(Sent::AfterState);
        assert!(copy.heard.is_some(), "a working subscription is heard from");
        copy.lost("batch");
        // What the same subscription sends next would keep it alive for good, the copy
        // applying none of it.
        for sent in [Sent::AfterState, Sent::Early, Sent::AfterState] {
            copy.heard_from(sent);
            assert!(
                copy.heard.is_none(),
                "{sent:?} kept a dead subscription alive"
            );
        }
        // A new subscription: heard from as its whole state comes.
        copy.heard = Some(Instant::now());
        copy.heard_from(Sent::StatePart);
        assert!(copy.heard.is_some());
    }

    #[test]
    fn a_batch_before_the_whole_state_means_the_state_was_lost() {
        // Just subscribed: the whole state comes first.
        let mut copy = view(10, false);
        copy.heard = Some(Instant::now());
        copy.heard_from(Sent::Early);
        assert!(
            copy.heard.is_some(),
            "an early batch comes in no order with the state"
        );
        copy.heard_from(Sent::AfterState);
        assert!(copy.heard.is_none(), "the feed task subscribes again");
    }

    #[test]
    fn a_lost_batch_stops_the_copy_until_it_has_the_whole_state_again() {
        let mut at_10 = view(10, true);
        at_10.heard = Some(Instant::now());
        at_10.lost("batch");
        assert!(at_10.heard.is_none(), "the feed task subscribes again");
        assert_eq!(
            at_10.fit(3, 3, 10, 11),
            Fit::Passed,
            "nothing more applies on top of a gap"
        );
    }
}
