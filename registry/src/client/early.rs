//! Batches a client node's copy applies before the leader has heard that they committed: the
//! copy counts the voters that hold them.
//!
//! # Why
//!
//! A write from a node that is not a voter crosses four processes one after the other: the
//! client node's request to the leader, the leader's AppendEntries to the followers, a
//! follower's answer back to the leader, and the leader's batch (with the answer) to the client
//! node. Each hop costs a wake-up and a receive; on a machine where the nodes share cores that
//! is much of what a write costs, and a contended lock hands over once per such write. The
//! third and fourth hops can be one: the follower can tell the client node itself.
//!
//! # How
//!
//! - The leader sends the copies of the nodes whose proposals an entry holds the entry's batch
//!   ([`FeedMsg::Early`]) as soon as its own copy is on its disk, with the voters of its
//!   membership and the index of the last entry before it that carries commands. Its
//!   AppendEntries names those copies, and each follower tells them once the entries are on
//!   its disk ([`FeedMsg::Copy`]).
//! - The copy applies the batch once it holds copies of a majority of the voters (the leader's
//!   counts, with the batch), all of the same leader's term, and once it has applied everything
//!   before it. Raft counts such an entry committed: no later leader lacks it. It answers its
//!   node's requests in the batch from its own outcomes.
//! - The leader applies and answers as before. For batches it sent early it owes the copy only
//!   its word that they committed, with the answers, and sends that for many at once
//!   ([`FeedMsg::Committed`]); a copy that could not count enough voters applies the batches
//!   then.
//!
//! # What a copy may rely on
//!
//! - A follower's copy of the entry at index `j` of leader `L` holds every entry of `L`'s log up
//!   to `j` (Raft's log matching), so one notice counts for every earlier batch of that leader.
//! - A follower tells the copies only of entries of the term the leader sent them in. An entry
//!   `L` wrote in an earlier term and sends again may still be replaced once a majority holds
//!   it (Raft's "Figure 8"), so it must not be counted.
//! - The leader sends nothing early while a membership change is in its log and not applied, or
//!   a joint membership rules: the voters it names are those every later leader answers to.
//! - Batches of an older subscription (another source, or a resent whole state) are dropped:
//!   each carries its subscription's epoch. Batches that never gather a majority are dropped
//!   when the leader's batch for their index (or a later one) arrives, or the whole state.
//! - A source that leads again in a later term may have lost entries it sent early in the
//!   earlier one to a leader in between: when its batches of the new term start, the copy
//!   drops those it still holds. The leader's word names the entry it goes up to, and speaks
//!   only for batches of that entry's term: the copy may hold no batch of the new term when
//!   the word comes (the first was lost on the way), and then still holds the old ones.
//! - Nothing rests on a notice arriving: without one, the copy applies the batch on the
//!   leader's word, a little later.
//!
//! [`FeedMsg::Committed`]: crate::server::protocol::FeedMsg::Committed
//! [`FeedMsg::Early`]: crate::server::protocol::FeedMsg::Early
//! [`FeedMsg::Copy`]: crate::server::protocol::FeedMsg::Copy

use std::collections::VecDeque;

use ensemble_runtime::hashing::HashMap;
use openraft::LogId;

use crate::server::protocol::EarlyBatch;

/// Most batches held for counting: beyond, the oldest is dropped and comes as it commits.
const MAX_HELD: usize = 1024;

impl EarlyBatch {
    /// Whether a majority of its voters hold it, given the followers' notices.
    fn committed(&self, copies: &HashMap<u64, LogId<u64>>) -> bool {
        let leader = self.entry.leader_id.node_id;
        let holders = self
            .voters
            .iter()
            .filter(|&&voter| {
                voter == leader
                    || copies.get(&voter).is_some_and(|copy| {
                        copy.leader_id == self.entry.leader_id && copy.index >= self.entry.index
                    })
            })
            .count();
        holders * 2 > self.voters.len()
    }
}

/// The batches a copy holds until enough voters do, and what the followers said they hold.
#[derive(Debug, Default)]
pub(crate) struct Uncommitted {
    /// In index order.
    held: VecDeque<EarlyBatch>,
    /// The last entry each follower said it holds, by Raft id.
    copies: HashMap<u64, LogId<u64>>,
}

impl Uncommitted {
    /// Holds a batch sent before it is known committed.
    pub(crate) fn early(&mut self, batch: EarlyBatch) {
        // The source leads again, in a later term: what it wrote in the earlier one may have
        // been replaced, and the leader's word that entries up to an index committed would
        // no longer speak for them. They come whole if they committed.
        if self
            .held
            .back()
            .is_some_and(|last| last.entry.leader_id != batch.entry.leader_id)
        {
            self.held.clear();
        }
        // Batches come in log order from one leader; anything at or after this index came
        // from another subscription.
        while self
            .held
            .back()
            .is_some_and(|last| last.entry.index >= batch.entry.index)
        {
            self.held.pop_back();
        }
        if self.held.len() == MAX_HELD {
            self.held.pop_front();
        }
        self.held.push_back(batch);
    }

    /// Notes that `voter` holds the log of `entry`'s leader up to `entry`.
    pub(crate) fn copy(&mut self, voter: u64, entry: LogId<u64>) {
        let last = self.copies.entry(voter).or_insert(entry);
        *last = (*last).max(entry);
    }

    /// Takes the next batch to apply on a copy of subscription `epoch` that is at index `at`,
    /// if a majority holds it or the leader said that it committed, and which of the two;
    /// drops those the copy has passed or that are of another epoch.
    ///
    /// The leader's word (`committed`: every batch of this subscription up to that entry
    /// committed) speaks only for batches of the same leader and term. One the copy holds from
    /// an earlier term of the same leader may have been replaced in between by another
    /// leader's entry at its index, and the leader's log now holds that one instead.
    pub(crate) fn next(
        &mut self,
        epoch: u64,
        at: u64,
        committed: Option<LogId<u64>>,
    ) -> Option<(EarlyBatch, CommittedBy)> {
        while self
            .held
            .front()
            .is_some_and(|first| first.epoch != epoch || first.entry.index <= at)
        {
            self.held.pop_front();
        }
        let first = self.held.front()?;
        if first.after > at {
            return None;
        }
        let said = committed.is_some_and(|committed| {
            committed.leader_id == first.entry.leader_id && committed.index >= first.entry.index
        });
        let by = if said {
            CommittedBy::Leader
        } else if first.committed(&self.copies) {
            CommittedBy::Copies
        } else {
            return None;
        };
        self.held.pop_front().map(|batch| (batch, by))
    }
}

/// What showed a copy that a batch it was sent early committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommittedBy {
    /// The leader's word.
    Leader,
    /// Copies of a majority of the voters.
    Copies,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::state::Command;

    const LEADER: u64 = 1;

    fn id(term: u64, leader: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, leader), index)
    }

    fn batch(epoch: u64, entry: LogId<u64>, after: u64, voters: &[u64]) -> EarlyBatch {
        EarlyBatch {
            epoch,
            entry,
            after,
            voters: voters.to_vec(),
            commands: Arc::new(vec![Command::Delete {
                key: format!("k{}", entry.index),
            }]),
            requests: Vec::new(),
        }
    }

    #[test]
    fn a_batch_waits_for_one_follower_of_three_voters_and_no_more() {
        let mut held = Uncommitted::default();
        held.early(batch(7, id(2, LEADER, 10), 9, &[1, 2, 3]));
        assert!(
            held.next(7, 9, None).is_none(),
            "the leader's copy alone is no majority"
        );
        held.copy(2, id(2, LEADER, 10));
        let (ready, by) = held
            .next(7, 9, None)
            .expect("the leader's and one follower's copies");
        assert_eq!(ready.entry, id(2, LEADER, 10));
        assert_eq!(by, CommittedBy::Copies);
        assert!(held.next(7, 10, None).is_none());
    }

    #[test]
    fn five_voters_need_two_followers() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(4, LEADER, 3), 2, &[1, 2, 3, 4, 5]));
        held.copy(5, id(4, LEADER, 3));
        assert!(held.next(1, 2, None).is_none());
        held.copy(3, id(4, LEADER, 8));
        assert!(
            held.next(1, 2, None).is_some(),
            "a later entry's copy holds the earlier ones"
        );
    }

    #[test]
    fn copies_of_another_leaders_log_or_of_an_earlier_entry_do_not_count() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(5, LEADER, 20), 19, &[1, 2, 3]));
        held.copy(2, id(4, LEADER, 25));
        held.copy(3, id(5, 3, 30));
        assert!(
            held.next(1, 19, None).is_none(),
            "other terms' or leaders' logs"
        );
        held.copy(3, id(5, LEADER, 19));
        assert!(
            held.next(1, 19, None).is_none(),
            "a copy that ends before the batch"
        );
        // A notice that arrived first still counts once the batch comes.
        let mut held = Uncommitted::default();
        held.copy(2, id(5, LEADER, 21));
        held.early(batch(1, id(5, LEADER, 20), 19, &[1, 2, 3]));
        assert!(held.next(1, 19, None).is_some());
    }

    #[test]
    fn the_leaders_word_that_batches_committed_stands_for_the_copies() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        held.early(batch(1, id(2, LEADER, 6), 5, &[1, 2, 3]));
        let said = |index| Some(id(2, LEADER, index));
        assert_eq!(
            held.next(1, 4, said(5)).map(|(b, by)| (b.entry.index, by)),
            Some((5, CommittedBy::Leader))
        );
        assert!(
            held.next(1, 5, said(5)).is_none(),
            "the one at 6 is not said committed"
        );
        assert_eq!(
            held.next(1, 5, said(6)).map(|(b, _)| b.entry.index),
            Some(6)
        );
    }

    #[test]
    fn a_batch_waits_until_the_copy_has_applied_everything_before_it() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 12), 11, &[1, 2, 3]));
        held.copy(2, id(2, LEADER, 12));
        assert!(
            held.next(1, 10, None).is_none(),
            "the batch at 11 is not applied yet"
        );
        // Entries between `after` and the batch carry no commands: at 11 the copy may go on.
        assert!(held.next(1, 11, None).is_some());
    }

    #[test]
    fn batches_of_another_subscription_or_already_applied_are_dropped() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        held.early(batch(1, id(2, LEADER, 6), 5, &[1, 2, 3]));
        held.early(batch(1, id(2, LEADER, 7), 6, &[1, 2, 3]));
        held.copy(2, id(2, LEADER, 7));
        assert!(
            held.next(2, 4, None).is_none(),
            "epoch 2 holds none of epoch 1's"
        );
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        held.early(batch(1, id(2, LEADER, 6), 5, &[1, 2, 3]));
        held.copy(2, id(2, LEADER, 6));
        let (next, _) = held
            .next(1, 5, None)
            .expect("the one at 5 came as it committed");
        assert_eq!(next.entry.index, 6);
    }

    #[test]
    fn batches_of_an_earlier_lead_are_dropped_when_the_source_leads_again() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        // Entry 5 was replaced by a later leader's blank; this source leads again in term 4.
        held.early(batch(1, id(4, LEADER, 7), 4, &[1, 2, 3]));
        let said = Some(id(4, LEADER, 7));
        let (next, _) = held
            .next(1, 4, said)
            .expect("the leader's word covers the entry at 7");
        assert_eq!(next.entry, id(4, LEADER, 7), "not the old entry at 5");
        assert!(held.next(1, 7, said).is_none());
    }

    #[test]
    fn the_leaders_word_does_not_speak_for_a_batch_of_its_earlier_term() {
        // Sent in term 2; a leader of term 3 put its own entry at 5; the source leads again
        // in term 4 and says its log is committed through 7 before the copy has any batch of
        // term 4 (the word and the batch travel apart).
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        assert!(
            held.next(1, 4, Some(id(4, LEADER, 7))).is_none(),
            "the entry at 5 in the leader's log may no longer be this one"
        );
        assert!(
            held.next(1, 4, Some(id(2, LEADER, 5))).is_some(),
            "the word of the batch's own term speaks for it"
        );
    }

    #[test]
    fn a_batch_at_an_index_already_held_replaces_it_and_what_follows() {
        let mut held = Uncommitted::default();
        held.early(batch(1, id(2, LEADER, 5), 4, &[1, 2, 3]));
        held.early(batch(1, id(2, LEADER, 6), 5, &[1, 2, 3]));
        held.early(batch(2, id(3, 2, 5), 4, &[1, 2, 3]));
        held.copy(3, id(3, 2, 5));
        let (next, _) = held.next(2, 4, None).expect("the new leader's batch");
        assert_eq!(next.entry, id(3, 2, 5));
        assert!(
            held.next(2, 5, None).is_none(),
            "nothing of the old leader's is left"
        );
    }
}
