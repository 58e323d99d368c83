//! The leader's lease: linearizable reads and session keepalives answered without a heartbeat
//! round of their own while a quorum is known to refuse votes to anyone else (etcd's
//! lease-based reads, kept on openraft 0.9's vote rules).
//!
//! # Why it is safe
//!
//! openraft's followers refuse every vote request for `election_timeout_max` (their *leader
//! lease*) after they last accepted an AppendEntries from a leader whose vote is committed; a
//! restarted node counts that time from its start. So when follower `f` answered success to an
//! AppendEntries carrying the leader's vote `V`, which the leader sent at `t(f)`, `f` votes for
//! nobody from before `t(f)` (it would have refused `V` had it voted for a higher term) until
//! `t(f)` + its lease.
//!
//! A read (or keepalive) arrives; then the leader asks its Raft core, at one moment `now`,
//! whether it still leads with the committed vote `V`, and checks that every voter
//! configuration has a majority among itself and the followers with `now < t(f) + lease`. If
//! so, no candidate of a higher term could have gathered a majority before `now`: every
//! majority holds a follower refusing votes, or the leader, whose own vote was still `V` (it
//! had voted for no one else). So any other leader is elected after the request arrived, the
//! guarantee a heartbeat round sent after the request gives, and the read needs only to wait
//! until the state machine has applied the commit index, as
//! `Raft::ensure_linearizable` does. The leader also requires that it has committed an entry
//! of its own term, so that the commit index covers every entry committed before it.
//!
//! The lease the leader counts on a follower is that follower's own `election_timeout_max`,
//! which it tells with each answer (nodes may be set differently, as while a longer election
//! timeout rolls through them), less the drift margin, measured on the leader's own
//! clock ([`RegistryConfig::clock_rate`](crate::RegistryConfig)): safe as long as no clock runs
//! faster than another by more than that margin, the same assumption self-fencing makes.
//! Otherwise (no recent acknowledgements, a leader cut off, a new leader that has not
//! committed yet) the caller falls back to the heartbeat round. A follower restarted with a
//! shorter timeout than it told refuses votes for the shorter one from its start: so a
//! shorter timeout is rolled out with each voter stopped for at least the old one
//! (docs/operations.md).
//!
//! One follower refuses nothing: the only voter of a configuration. openraft lets such a node
//! stand at its next tick, lease or not (it needs no vote but its own), so a configuration of
//! one voter other than the leader (the leader's vote moved, with one voter) never makes the
//! lease hold.
//!
//! # Every lead starts with an election
//!
//! openraft 0.9 would start a node whose saved vote is its own committed vote as the leader of
//! that term again, with the commit index it saved without a sync of its own, which may lag
//! behind reads it answered before it stopped. The registry's log store never lets it
//! (`log_store`, "A leader's own entries"): a restarted node must win an election. So every
//! leader commits an entry of its own term before it answers a read, and that entry is above
//! everything any earlier leader committed.
//!
//! The argument rests on openraft 0.9's vote handling (`Engine::handle_vote_req`, and a
//! restarted node's vote time set at its start). A node whose saved vote is its own committed
//! one reads it back uncommitted and so refuses no vote at start; under that vote it never
//! acknowledged another leader, so no lease counts on it. openraft 0.10 lets a vote request
//! marked as a leadership transfer through a follower's lease: moving to it means checking
//! this again.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::hashing::HashMap;
use openraft::{LogId, Raft, RaftState, Vote};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::types::{TypeConfig, Voter};

/// What the leader knows of its followers' acknowledgements, shared by its Raft connections
/// (which record them) and the server (which reads them).
#[derive(Clone)]
pub(crate) struct LeaderLease {
    /// This node's Raft id.
    me: u64,
    /// The share of a follower's vote refusal the leader counts on: 1 less the drift margin.
    margin: f64,
    /// How fast this node's clock runs (`RegistryConfig::clock_rate`).
    clock_rate: f64,
    acks: Arc<Mutex<HashMap<u64, Ack>>>,
}

/// The latest acknowledged AppendEntries to one follower.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ack {
    /// The vote it carried.
    pub(crate) vote: Vote<u64>,
    /// When the leader sent it.
    pub(crate) sent: Instant,
    /// How long after `sent` the leader counts on the follower refusing votes, in true time.
    pub(crate) length: Duration,
}

impl LeaderLease {
    /// The lease of node `me`, whose clock runs at `clock_rate`, counting on followers for
    /// their vote refusal less `drift_margin` of it.
    pub(crate) fn new(me: u64, drift_margin: f64, clock_rate: f64) -> Self {
        LeaderLease {
            me,
            margin: 1.0 - drift_margin,
            clock_rate,
            acks: Arc::default(),
        }
    }

    /// Records that `target` answered success to an AppendEntries carrying `vote`, sent at
    /// `sent`, and that it refuses votes for `refusal` after taking one, by its clock.
    pub(crate) fn acknowledged(
        &self,
        target: u64,
        vote: Vote<u64>,
        sent: Instant,
        refusal: Duration,
    ) {
        // Measured by this node's clock, which its timer runs at its rate.
        let length = refusal.mul_f64(self.margin).div_f64(self.clock_rate);
        let mut acks = self.acks.lock();
        let newer = acks
            .get(&target)
            .is_none_or(|ack| ack.vote != vote || ack.sent < sent);
        if newer {
            acks.insert(target, Ack { vote, sent, length });
        }
    }

    /// The log id a linearizable read must see applied, if the lease holds now; `None`
    /// when only a heartbeat round can tell (see the module docs).
    pub(crate) async fn read_index(&self, raft: &Raft<TypeConfig>) -> Option<LogId<u64>> {
        let lease = self.clone();
        raft.with_raft_state(move |state| lease.check(state, Instant::now()))
            .await
            .ok()
            .flatten()
    }

    /// Runs inside the Raft core: the state and `now` are of one moment.
    fn check(&self, state: &RaftState<u64, Voter, Instant>, now: Instant) -> Option<LogId<u64>> {
        let vote = state.vote_ref();
        let committed = state.committed.as_ref()?;
        // Leading with a committed vote, and an entry of this term committed.
        if vote.leader_id().voted_for() != Some(self.me)
            || !vote.is_committed()
            || committed.leader_id != *vote.leader_id()
        {
            return None;
        }
        let membership = state.membership_state.effective().membership();
        let acks = self.acks.lock();
        holds(vote, self.me, membership.get_joint_config(), &acks, now).then_some(*committed)
    }
}

/// Whether every configuration in `joint` has a majority among `me` and the voters whose
/// latest acknowledgement carried `vote` and was sent less than its length before `now`. Never
/// when the one voter of them all is another node: that node stands at once. (A joint
/// configuration of `{me}` and `{other}` is not such: `other` needs this node's vote too.)
pub(crate) fn holds(
    vote: &Vote<u64>,
    me: u64,
    joint: &[BTreeSet<u64>],
    acks: &HashMap<u64, Ack>,
    now: Instant,
) -> bool {
    let refusing = |id: &u64| {
        *id == me
            || acks
                .get(id)
                .is_some_and(|ack| ack.vote == *vote && now < ack.sent + ack.length)
    };
    let voters: BTreeSet<u64> = joint.iter().flatten().copied().collect();
    let another_alone = voters.len() == 1 && !voters.contains(&me);
    !joint.is_empty()
        && !another_alone
        && joint
            .iter()
            .all(|voters| voters.iter().filter(|id| refusing(id)).count() * 2 > voters.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(225);

    fn config(ids: &[u64]) -> Vec<BTreeSet<u64>> {
        vec![ids.iter().copied().collect()]
    }

    fn acks(list: &[(u64, Vote<u64>, Instant)]) -> HashMap<u64, Ack> {
        list.iter()
            .map(|(id, vote, sent)| {
                (
                    *id,
                    Ack {
                        vote: *vote,
                        sent: *sent,
                        length: LEASE,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn one_fresh_acknowledgement_makes_a_majority_of_three() {
        let now = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let fresh = now - Duration::from_millis(100);
        let voters = config(&[1, 2, 3]);
        assert!(holds(&vote, 1, &voters, &acks(&[(2, vote, fresh)]), now));
        // Alone, the leader is no majority.
        assert!(!holds(&vote, 1, &voters, &acks(&[]), now));
    }

    #[test]
    fn an_acknowledgement_older_than_the_lease_counts_for_nothing() {
        let now = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let stale = now - LEASE;
        let voters = config(&[1, 2, 3]);
        assert!(!holds(
            &vote,
            1,
            &voters,
            &acks(&[(2, vote, stale), (3, vote, stale)]),
            now
        ));
    }

    #[test]
    fn an_acknowledgement_of_another_term_counts_for_nothing() {
        let now = Instant::now();
        let vote = Vote::new_committed(4, 1);
        let earlier = Vote::new_committed(3, 1);
        let fresh = now - Duration::from_millis(10);
        let voters = config(&[1, 2, 3]);
        assert!(!holds(
            &vote,
            1,
            &voters,
            &acks(&[(2, earlier, fresh)]),
            now
        ));
    }

    #[test]
    fn learners_do_not_count_and_every_joint_configuration_needs_its_majority() {
        let now = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let fresh = now - Duration::from_millis(10);
        // Node 9 is a learner: its acknowledgement makes no majority of {1, 2, 3}.
        assert!(!holds(
            &vote,
            1,
            &config(&[1, 2, 3]),
            &acks(&[(9, vote, fresh)]),
            now
        ));
        // Joint {1, 2, 3} and {3, 4, 5}: node 2 makes the first, the second lacks two of three.
        let joint = vec![[1, 2, 3].into(), [3, 4, 5].into()];
        assert!(!holds(&vote, 1, &joint, &acks(&[(2, vote, fresh)]), now));
        let both = acks(&[(2, vote, fresh), (3, vote, fresh), (4, vote, fresh)]);
        assert!(holds(&vote, 1, &joint, &both, now));
    }

    #[test]
    fn a_later_acknowledgement_replaces_an_earlier_one_but_not_the_reverse() {
        let lease = LeaderLease::new(1, 0.1, 1.0);
        let vote = Vote::new_committed(3, 1);
        let now = Instant::now();
        let refusal = Duration::from_millis(250);
        lease.acknowledged(2, vote, now, refusal);
        // An answer to an earlier request that arrives late does not move the time back.
        lease.acknowledged(2, vote, now - Duration::from_millis(50), refusal);
        assert_eq!(lease.acks.lock()[&2].sent, now);
        // A new term's acknowledgement replaces the old term's, whatever its time.
        let next = Vote::new_committed(4, 1);
        lease.acknowledged(2, next, now - Duration::from_millis(50), refusal);
        assert_eq!(lease.acks.lock()[&2].vote, next);
    }

    #[test]
    fn each_follower_counts_for_its_own_vote_refusal_less_the_margin_on_this_clock() {
        // This node's clock runs 25 % fast: what it times as 1 s lasts 0.8 s.
        let lease = LeaderLease::new(1, 0.1, 1.25);
        let vote = Vote::new_committed(3, 1);
        let now = Instant::now();
        // Node 2 refuses votes for 250 ms after an AppendEntries, node 3 for 1 s.
        lease.acknowledged(2, vote, now, Duration::from_millis(250));
        lease.acknowledged(3, vote, now, Duration::from_millis(1_000));
        let acks = lease.acks.lock();
        assert_eq!(acks[&2].length, Duration::from_millis(180));
        assert_eq!(acks[&3].length, Duration::from_millis(720));
        // 200 ms on: node 2's refusal may be over (a leader of a longer timeout counted on
        // its own 0.9 s before), node 3's holds.
        let later = now + Duration::from_millis(200);
        assert!(!holds(&vote, 1, &config(&[1, 2]), &acks, later));
        assert!(holds(&vote, 1, &config(&[1, 3]), &acks, later));
    }

    #[test]
    fn a_configuration_of_one_other_voter_never_holds() {
        // That voter stands at once, whatever it acknowledged: openraft elects a node that is
        // its configuration's only voter at its next tick.
        let now = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let fresh = acks(&[(2, vote, now - Duration::from_millis(10))]);
        assert!(!holds(&vote, 1, &config(&[2]), &fresh, now));
        // While the leader's vote moves to node 2, node 2 needs the leader's vote too.
        let moving = vec![[1].into(), [2].into()];
        assert!(holds(&vote, 1, &moving, &fresh, now));
        assert!(!holds(&vote, 1, &moving, &acks(&[]), now));
        // The leader alone is its own majority.
        assert!(holds(&vote, 1, &config(&[1]), &fresh, now));
    }
}
