//! A voter that leaves on purpose hands its vote to another node before it goes, as an Akka
//! node that leaves hands its singletons over first: the registry keeps as many voters as
//! before, all of them running, and can lose another one at once. Without it, a voter that
//! left would be one the registry could not count on until the voter grace (30 s by default)
//! moved its vote, with one failure more then costing the quorum.
//!
//! Every node that leaves tells the leader ([`ServerMsg::Leaving`]), and again every
//! [`SAY_AGAIN`] until its session closes, so that it is given no vote while it leaves (nodes
//! stopped together must not hand votes to each other), whichever node leads meanwhile. A
//! voter asks for its vote to go to the next node that may take it, without waiting for the
//! grace (`server::leader`), and asks again every [`HANDOVER_POLL`] until the answer says
//! the hand-over ended: it votes no more, or no node may take its vote (it keeps it, as a
//! voter gone for good does). The leader keeps what it was told in memory only.
//!
//! The wait is bounded ([`handover_limit`]). Past it, or if no leader answers for
//! [`NO_LEADER_PATIENCE`] (the registry lost its quorum: the last nodes of a cluster
//! stopping), the node leaves a voter, and the voter grace moves its vote later. While no
//! leader answers, its Raft stands for election again: the voters that leave together must
//! still elect one, and one elected in the middle of a hand-over (the leader stopped too)
//! takes it up at the next ask. The leader keeps a voter whose vote it moves as a learner
//! until the voter's log holds the configuration without its vote (`server::leader`), so a
//! voter that gave up while its vote moved learns it no longer votes rather than stand on a
//! log that still names it a voter.

use std::time::Duration;

use tokio::time::Instant;

use super::{Resend, Shared};
use crate::server::protocol::{Handover, ServerMsg};

/// How often a voter that leaves asks again while its vote is handed over.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// How often a node that leaves says so again until its session closes.
const SAY_AGAIN: Duration = Duration::from_millis(500);

/// The longest a voter that leaves waits for its vote to move: the leader's catch-up of the
/// node that takes it, and a request's time for the change itself (or an election, when the
/// leader leaves: it steps down once the change is applied).
pub(crate) fn handover_limit(request_timeout: Duration) -> Duration {
    crate::server::CATCH_UP + request_timeout
}

/// Tells the leader, within an attempt's time, that this node leaves (and, with
/// `hand_over`, that its vote should go to another node).
async fn say(shared: &Shared, hand_over: bool, limit: Duration) -> Result<Handover, String> {
    let me = shared.me().clone();
    let what = || format!("node {me} leaving (the hand-over of its registry vote)");
    let attempt = shared.attempt_timeout(shared.config.request_timeout);
    shared
        .call(
            &what,
            |reply| ServerMsg::Leaving(hand_over, reply),
            attempt.min(limit),
            Resend::Idempotent,
        )
        .await
        .map_err(|err| err.to_string())
}

/// Says that this node leaves, every [`SAY_AGAIN`], for as long as it is awaited (it never
/// ends of itself).
pub(crate) async fn keep_saying_it_leaves(shared: &Shared) {
    loop {
        tokio::time::sleep(SAY_AGAIN).await;
        let _ = say(shared, false, SAY_AGAIN).await;
    }
}

/// How long a voter that leaves goes on asking while no leader answers (an election under
/// way, the leader having stopped or left too) before it leaves a voter: a few elections.
const NO_LEADER_PATIENCE: Duration = Duration::from_secs(2);

/// Tells the leader that this node leaves and, if it votes (`voter`, as its own Raft counts
/// it), hands its vote over; see the module's docs. Says whether the vote went to another
/// node.
///
/// A voter does not stand for election while the leader moves its vote, and never again once
/// it moved (`Shared::hold_standing`): it still votes, and counts for a quorum while it is a
/// voter. While no leader answers it stands again (if its log ends with a settled
/// configuration), and asks on for up to [`NO_LEADER_PATIENCE`]: the last voters of a cluster
/// that stop together must still elect a leader, and a leader that took over in the middle of
/// a hand-over takes it up. One that keeps its vote stands again, unless its log ends with a
/// joint configuration.
pub(crate) async fn hand_over_vote(shared: &Shared, voter: bool) -> bool {
    let me = shared.me().clone();
    let limit = handover_limit(shared.config.request_timeout);
    if !voter {
        if let Err(err) = say(shared, false, limit).await {
            tracing::debug!(node = %me, %err, "could not tell the registry leader this node leaves");
        }
        return false;
    }
    let deadline = Instant::now() + limit;
    let mut to: Option<String> = None;
    // Since when no leader has answered, if none has since the last answer.
    let mut unanswered: Option<Instant> = None;
    shared.hold_standing(true);
    // It keeps its vote, and stands again (unless its log ends with a joint configuration:
    // below).
    let kept = |why: &str| {
        tracing::info!(node = %me, "{why}");
        shared.hold_standing(!shared.own_log_settled());
        false
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(node = %me, "this node's registry vote did not move within {limit:?}; it leaves a voter all the same, and the voter grace moves the vote later");
            shared.hold_standing(!shared.own_log_settled());
            return false;
        }
        let said = say(shared, true, left).await;
        if said.is_ok() {
            unanswered = None;
            // Held again, after a time without a leader: a leader moves its vote now.
            shared.hold_standing(true);
        }
        match said {
            Ok(Handover::NotAVoter) => {
                match &to {
                    Some(to) => {
                        tracing::info!(node = %me, "this node's registry vote went to node {to}");
                    }
                    None => {
                        tracing::info!(node = %me, "this node no longer votes in the registry (its vote went to another node, or the registry keeps fewer voters)")
                    }
                }
                return true;
            }
            Ok(Handover::NoneToTake) => {
                return kept(
                    "no node may take this node's registry vote (every member votes, may not, or \
                     leaves too): it leaves a voter",
                );
            }
            Ok(Handover::UnderWay { to: next }) => {
                if next.is_some() && next != to {
                    let name = next.as_deref().unwrap_or_default();
                    tracing::info!(node = %me, "handing this node's registry vote to node {name} before it leaves");
                    to = next;
                }
                tokio::time::sleep(HANDOVER_POLL.min(left)).await;
            }
            Err(err) => {
                // A leader that handed its own vote over steps down before its next ask: its
                // own log then no longer counts it.
                if !shared.own_log_names_me_a_voter() {
                    tracing::info!(node = %me, "this node no longer votes in the registry (its vote went to another node, or the registry keeps fewer voters)");
                    shared.hold_standing(true);
                    return true;
                }
                let since = *unanswered.get_or_insert_with(Instant::now);
                if since.elapsed() >= NO_LEADER_PATIENCE {
                    return kept(&format!(
                        "no registry leader answered the hand-over of this node's vote for \
                         {NO_LEADER_PATIENCE:?} (the last error: {err}); it leaves a voter, and \
                         the voter grace moves the vote later"
                    ));
                }
                // Stands meanwhile, no leader may come otherwise; but not while its log ends
                // with a joint configuration, the change of its vote half made: the leader
                // that made it may have committed the configuration without it, and standing
                // on the joint one it would raise its term past the voters', which the next
                // leader, replicating to it as a learner, would meet and step down for. The
                // others, voters of both halves, can stand.
                shared.hold_standing(!shared.own_log_settled());
                tokio::time::sleep(HANDOVER_POLL.min(left)).await;
            }
        }
    }
}
