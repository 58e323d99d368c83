//! A voter that leaves on purpose hands its vote to another node before it goes, as an Akka
//! node that leaves hands its singletons over first: the registry keeps as many voters as
//! before, all of them running, and can lose another one at once. Without it, a voter that
//! left would be one the registry could not count on until the voter grace (30 s by default)
//! moved its vote, with one failure more then costing the quorum.
//!
//! Every node that leaves tells the leader ([`ServerMsg::HandOverVote`]), so that it is given
//! no vote while it leaves (nodes stopped together must not hand votes to each other). A
//! voter's vote goes to the next node that may take it, without waiting for the grace
//! (`server::leader`); the voter asks again every [`HANDOVER_POLL`] until the answer says
//! the hand-over ended: it votes no more, or no node may take its vote (it keeps it, as a
//! voter gone for good does). The leader keeps what it was told in memory only: a new leader
//! hears it at the next ask.
//!
//! The wait is bounded ([`handover_limit`]); past it, or if no leader answers (the registry
//! lost its quorum: the last nodes of a cluster stopping), the node leaves all the same and
//! the voter grace moves its vote later.

use std::time::Duration;

use tokio::time::Instant;

use super::{Resend, Shared};
use crate::server::protocol::{Handover, ServerMsg};

/// How often a voter that leaves asks again while its vote is handed over.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// The longest a voter that leaves waits for its vote to move: the leader's catch-up of the
/// node that takes it, and a request's time for the change itself (or an election, when the
/// leader leaves: it steps down once the change is applied).
pub(crate) fn handover_limit(request_timeout: Duration) -> Duration {
    crate::server::CATCH_UP + request_timeout
}

/// Tells the leader that this node leaves and, if it votes (`voter`, as its own Raft counts
/// it), hands its vote over; see the module's docs. Says whether the vote went to another
/// node.
pub(crate) async fn hand_over_vote(shared: &Shared, voter: bool) -> bool {
    let me = shared.me().clone();
    let what = || format!("node {me} leaving (the hand-over of its registry vote)");
    if !voter {
        // Said once, within an attempt's time: the node leaves whether or not it is heard.
        let limit = shared.attempt_timeout(shared.config.request_timeout);
        let said = shared
            .call(&what, ServerMsg::HandOverVote, limit, Resend::Idempotent)
            .await;
        if let Err(err) = said {
            tracing::debug!(node = %me, %err, "could not tell the registry leader this node leaves");
        }
        return false;
    }
    let limit = handover_limit(shared.config.request_timeout);
    let deadline = Instant::now() + limit;
    let mut to: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(node = %me, "this node's registry vote did not move within {limit:?}; it leaves a voter all the same, and the voter grace moves the vote later");
            return false;
        }
        let answer = shared
            .call(
                &what,
                ServerMsg::HandOverVote,
                left.min(shared.config.request_timeout),
                Resend::Idempotent,
            )
            .await;
        match answer {
            Ok(Handover::NotAVoter) => {
                match &to {
                    Some(to) => {
                        tracing::info!(node = %me, "this node's registry vote went to node {to}");
                    }
                    None => {
                        tracing::info!(node = %me, "this node's registry vote went to another node")
                    }
                }
                return true;
            }
            Ok(Handover::NoneToTake) => {
                tracing::info!(node = %me, "no node may take this node's registry vote (every member votes, may not, or leaves too): it leaves a voter");
                return false;
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
                tracing::warn!(node = %me, %err, "could not hand this node's registry vote over; it leaves a voter all the same, and the voter grace moves the vote later");
                return false;
            }
        }
    }
}
