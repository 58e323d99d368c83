//! An operator moves a registry vote from one node to another (`Registry::move_vote`), as
//! etcd's `member add` and `member remove` or ZooKeeper's `reconfig` do by hand: to put the
//! voters on other machines, racks or zones than the leader picks (the first nodes by name),
//! or to take a vote off a node before its machine goes away for longer than the voter grace.
//!
//! The leader makes the change, as it replaces a voter gone for good: the node that takes the
//! vote is caught up as a learner, then swapped in. The node whose vote moves stays a learner
//! until its log holds the configuration without its vote, and is dropped then (openraft
//! does not let a node stand for election once its log says it does not vote): it does not
//! stand on a log that still names it a voter, though it keeps running. The caller asks every
//! [`POLL`] until the leader says the move is done, or refuses it; a new leader elected
//! meanwhile takes the move up at the next ask.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Resend, Shared};
use crate::error::RegistryError;
use crate::server::protocol::{ServerMsg, VoteMove};

/// How often the caller asks again while the move is under way.
const POLL: Duration = Duration::from_millis(100);

/// The longest a move may take: the catch-up of the node that takes the vote, and a
/// request's time for the change (or the election after it, when the leader's vote moves).
pub(crate) fn limit(request_timeout: Duration) -> Duration {
    super::handover::handover_limit(request_timeout)
}

/// Moves the vote of node `from` to node `to`; see the module's docs.
pub(crate) async fn move_vote(shared: &Shared, from: &str, to: &str) -> Result<(), RegistryError> {
    let limit = limit(shared.config.request_timeout);
    let deadline = Instant::now() + limit;
    let what = || format!("moving the registry vote of node {from} to node {to}");
    let mut last = String::from("the leader had not begun the move");
    // Only a message sent before any may have reached the leader is the first ask: one sent
    // again after a lost answer (by `call`, or by this loop) is not, or a move made meanwhile
    // would be refused as one asked anew (its `from` no longer votes). Sent to a node that
    // answered it does not lead, an ask reached no leader: the next is the first still.
    let reached = AtomicBool::new(false);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RegistryError::Timeout {
                what: what(),
                timeout: limit,
                last,
            });
        }
        let asked = shared
            .call_noting(
                &what,
                |reply| ServerMsg::MoveVote {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    first: !reached.load(Ordering::Relaxed),
                    reply,
                },
                left,
                Resend::Idempotent,
                &reached,
            )
            .await;
        reached.store(true, Ordering::Relaxed);
        match asked {
            Ok(VoteMove::Done) => return Ok(()),
            Ok(VoteMove::UnderWay) => {
                last = "the change of the voters was still under way".into();
                tokio::time::sleep(POLL.min(left)).await;
            }
            Err(err) => return Err(err),
        }
    }
}
