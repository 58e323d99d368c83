//! The leader's part in batches that client nodes' copies apply before the leader has heard
//! that they committed (the copy's part, and why, is in `client::early`).
//!
//! - When it forms an entry, the leader names the copies to tell: those of the nodes whose
//!   proposals the entry holds, among the copies it feeds ([`EarlyFeeds::for_batch`]), with
//!   which of the entry's commands answer which of their requests. The names ride in the
//!   entry's [`Batch`] in memory, so that the AppendEntries that carry it name them to the
//!   followers (`raft::network`), which tell them once they hold the entry on disk.
//! - Once its own copy of the entry is on disk, the leader sends it to them
//!   ([`FeedMsg::Early`]), in log order, unless a membership change is under way.
//! - When the entry commits, the copy's subscription owes it nothing but the answers and the
//!   word that it committed, for a copy that could not count enough voters. It holds those
//!   back ([`Deferred`]) and sends them together, 20 ms later or before the next batch it
//!   sends whole ([`FeedMsg::Committed`]): one message for many entries where each cost one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::hashing::HashMap;
use ensemble_runtime::{ActorId, ActorRef, NodeId};
use openraft::{EntryPayload, LogId};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::protocol::{EarlyBatch, EarlyRequest, FedAnswers, FeedMsg, ProposalReply};
use crate::raft::StateMachine;
use crate::raft::types::{Batch, Early};
use crate::state::Command;

/// How long a subscription holds back what it owes a copy for the batches it was sent early.
/// A copy that counted enough voters needs none of it; one that could not (a follower's
/// notice lost, say) applies the batches when this ends.
const DEFERRED_FOR: Duration = Duration::from_millis(20);

/// A copy on another node that the leader sends its batches before they commit, with the
/// epoch of its subscription (`client::early`).
#[derive(Clone)]
pub(crate) struct EarlyFeed {
    pub(crate) mirror: ActorRef<FeedMsg>,
    pub(crate) epoch: u64,
    /// The entries sent to it early, oldest first, until its subscription applies them.
    pub(crate) sent: Arc<Mutex<VecDeque<LogId<u64>>>>,
}

/// A copy told of a batch early, and the requests of its node that the batch answers.
#[derive(Clone)]
pub(crate) struct EarlyCopy {
    pub(crate) feed: EarlyFeed,
    pub(crate) requests: Vec<EarlyRequest>,
}

/// The copies on other nodes that this server feeds, by node, and the task that sends them
/// what this node writes as leader.
#[derive(Clone)]
pub(crate) struct EarlyFeeds {
    feeds: Arc<Mutex<HashMap<NodeId, EarlyFeed>>>,
    sender: tokio::task::AbortHandle,
}

impl EarlyFeeds {
    /// The feeds of a server with this state machine: its log tells them of the entries it
    /// writes as leader, and a task sends each to its copies once it is on disk, until
    /// [`Self::stop`].
    pub(crate) fn start(state_machine: &StateMachine) -> EarlyFeeds {
        let (written, batches) = mpsc::unbounded_channel();
        state_machine.log().on_own_append(move |entries| {
            for entry in entries {
                if let EntryPayload::Normal(Batch(commands, _, Early(Some(copies)))) =
                    &entry.payload
                {
                    let _ = written.send(Written {
                        entry: entry.log_id,
                        commands: Arc::new(commands.clone()),
                        copies: copies.clone(),
                    });
                }
            }
        });
        let sender = tokio::spawn(send(state_machine.clone(), batches)).abort_handle();
        EarlyFeeds {
            feeds: Arc::default(),
            sender,
        }
    }

    /// Stops the task that sends: it holds the log, which the node's Raft closes next (and
    /// the log holds what feeds the task, so the task would not end on its own).
    pub(crate) fn stop(&self) {
        self.sender.abort();
    }

    /// Starts telling `mirror` (of another node) of its node's batches early, for the
    /// subscription of `epoch`; until the returned handle drops or [`Self::close`].
    pub(crate) fn open(&self, mirror: ActorRef<FeedMsg>, epoch: u64) -> SentEarly {
        let sent = Arc::default();
        let node = mirror.id().node().clone();
        let feed = EarlyFeed {
            mirror,
            epoch,
            sent: Arc::clone(&sent),
        };
        self.feeds.lock().insert(node.clone(), feed);
        SentEarly {
            feeds: self.clone(),
            node,
            sent,
        }
    }

    /// Stops telling `mirror`.
    pub(crate) fn close(&self, mirror: &ActorId) {
        self.feeds
            .lock()
            .retain(|_, feed| feed.mirror.id() != mirror);
    }

    /// The copies that learn early of an entry holding these proposals (`count` commands each,
    /// in order, with their requests' numbers): those of the proposers' nodes.
    pub(crate) fn for_batch(
        &self,
        proposals: &[(usize, ProposalReply)],
        requests: &[u64],
    ) -> Early {
        let feeds = self.feeds.lock();
        if feeds.is_empty() {
            return Early::default();
        }
        let mut copies: Vec<EarlyCopy> = Vec::new();
        let mut start = 0;
        for ((count, reply), &request) in proposals.iter().zip(requests) {
            if let Some(feed) = reply.origin().and_then(|node| feeds.get(node)) {
                let request = EarlyRequest {
                    request,
                    start: start as u32,
                    count: *count as u32,
                };
                match copies
                    .iter_mut()
                    .find(|copy| copy.feed.mirror.id() == feed.mirror.id())
                {
                    Some(copy) => copy.requests.push(request),
                    None => copies.push(EarlyCopy {
                        feed: feed.clone(),
                        requests: vec![request],
                    }),
                }
            }
            start += count;
        }
        Early((!copies.is_empty()).then(|| copies.into()))
    }
}

/// A subscription's record of the entries its copy was sent early. Dropped (the subscription
/// ended), it stops the copy from being told.
pub(crate) struct SentEarly {
    feeds: EarlyFeeds,
    node: NodeId,
    sent: Arc<Mutex<VecDeque<LogId<u64>>>>,
}

impl SentEarly {
    /// Whether the copy was sent `entry` early, now that it is applied here; forgets it and
    /// the entries before it.
    pub(crate) fn take(&self, entry: LogId<u64>) -> bool {
        let mut sent = self.sent.lock();
        while sent.front().is_some_and(|early| early.index < entry.index) {
            sent.pop_front();
        }
        // The same log id: this node's own entry as leader, not one written at that index after
        // it lost the lead.
        if sent.front() == Some(&entry) {
            sent.pop_front();
            return true;
        }
        false
    }
}

/// Records that a copy is sent `entry` early. A copy that gets a batch of another leader id
/// than the batches it holds (the same leader, elected again) drops those (`client::early`):
/// so does the record, or the ones that commit would reach the copy only as the leader's word
/// that they did, which speaks for batches of its current term only, and the copy would have
/// to ask for the whole state again. Not recorded, they are sent whole as they commit.
fn record_sent(sent: &mut VecDeque<LogId<u64>>, entry: LogId<u64>) {
    if sent
        .back()
        .is_some_and(|last| last.leader_id != entry.leader_id)
    {
        sent.clear();
    }
    sent.push_back(entry);
}

impl Drop for SentEarly {
    fn drop(&mut self) {
        let mut feeds = self.feeds.feeds.lock();
        // This subscription's feed only: the same copy, subscribed again, has a feed of its own
        // by now (opened before the old subscription ends).
        if feeds
            .get(&self.node)
            .is_some_and(|feed| Arc::ptr_eq(&feed.sent, &self.sent))
        {
            feeds.remove(&self.node);
        }
    }
}

/// What a subscription owes its copy for batches it was sent early and that committed since:
/// the word that they did, and the answers that came with them. Sent as one
/// [`FeedMsg::Committed`] when [`DEFERRED_FOR`] has passed, or before the next batch sent
/// whole. Answers not sent by then (the subscription ended) are given directly.
pub(crate) struct Deferred {
    /// The last batch added.
    through: LogId<u64>,
    answers: FedAnswers,
    /// When to send it.
    pub(crate) until: Instant,
}

impl Deferred {
    /// Holds back what is owed for the batch of `entry`, the first.
    pub(crate) fn new(entry: LogId<u64>, answers: FedAnswers) -> Self {
        Deferred {
            through: entry,
            answers,
            until: Instant::now() + DEFERRED_FOR,
        }
    }

    /// Adds the batch of `entry`, with its answers.
    pub(crate) fn add(&mut self, entry: LogId<u64>, answers: FedAnswers) {
        self.through = entry;
        self.answers.extend(answers);
    }

    /// Whether it is time to send it.
    pub(crate) fn is_due(&self) -> bool {
        Instant::now() >= self.until
    }

    pub(crate) fn into_message(mut self, epoch: u64) -> FeedMsg {
        FeedMsg::Committed {
            epoch,
            through: self.through,
            answers: std::mem::take(&mut self.answers),
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for (reply, outcomes) in self.answers.drain(..) {
            let _ = reply.send(Ok(outcomes));
        }
    }
}

/// An entry this node wrote as leader, for the copies to tell.
struct Written {
    entry: LogId<u64>,
    commands: Arc<Vec<Command>>,
    copies: Arc<[EarlyCopy]>,
}

/// Sends each entry to its copies once it is on this node's disk, in log order.
async fn send(state_machine: StateMachine, mut written: mpsc::UnboundedReceiver<Written>) {
    while let Some(batch) = written.recv().await {
        let index = batch.entry.index;
        if state_machine.log().durable_through(index).await.is_err() {
            return;
        }
        // A membership change under way, or applied already: the copies get it as it commits.
        let Some((after, voters)) = state_machine.early_context(index) else {
            continue;
        };
        for copy in batch.copies.iter() {
            // Recorded first: the entry may commit, and the subscription look, at any moment.
            // Sent under the record's lock: a subscription that finds the entry there queues
            // its word that the entry committed after this batch, and messages from one node
            // to one actor keep their order, so the copy never hears the word first.
            let mut sent = copy.feed.sent.lock();
            record_sent(&mut sent, batch.entry);
            let told = copy.feed.mirror.try_tell(FeedMsg::Early(EarlyBatch {
                epoch: copy.feed.epoch,
                entry: batch.entry,
                after,
                voters: voters.clone(),
                commands: batch.commands.clone(),
                requests: copy.requests.clone(),
            }));
            if told.is_err() {
                // Not sent: the subscription sends it whole as it commits.
                sent.pop_back();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ensemble_runtime::{Actor, ActorResult, Context, Node, NodeConfig};

    use super::*;

    struct Copy;

    impl Actor for Copy {
        type Msg = FeedMsg;

        async fn handle(&mut self, _: FeedMsg, _: &mut Context<Self>) -> ActorResult {
            Ok(())
        }
    }

    #[tokio::test]
    async fn batches_of_an_earlier_term_are_sent_whole_once_the_copy_dropped_them() {
        let node = Node::new(NodeConfig::new("test")).expect("node");
        let mirror = node.spawn(Copy).expect("copy");
        let feeds = EarlyFeeds {
            feeds: Arc::default(),
            sender: tokio::spawn(async {}).abort_handle(),
        };
        let sent = feeds.open(mirror, 1);
        let id = |term, index| LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
        for entry in [id(2, 4), id(2, 5), id(4, 7), id(4, 8)] {
            record_sent(&mut sent.sent.lock(), entry);
        }
        // The leader of term 2, elected again in term 4, sent 7 early: the copy dropped 4 and
        // 5, held from term 2, and must get them whole as they commit.
        assert!(!sent.take(id(2, 4)));
        assert!(!sent.take(id(2, 5)));
        assert!(sent.take(id(4, 7)), "sent early in this term");
        assert!(sent.take(id(4, 8)));
    }

    #[tokio::test]
    async fn a_copy_subscribed_again_keeps_its_new_feed_when_the_old_subscription_ends() {
        let node = Node::new(NodeConfig::new("test")).expect("node");
        let mirror = node.spawn(Copy).expect("copy");
        let feeds = EarlyFeeds {
            feeds: Arc::default(),
            sender: tokio::spawn(async {}).abort_handle(),
        };
        let epoch = || {
            feeds
                .feeds
                .lock()
                .get(mirror.id().node())
                .map(|feed| feed.epoch)
        };
        let first = feeds.open(mirror.clone(), 1);
        // The server opens the new subscription's feed, then ends the old subscription.
        let second = feeds.open(mirror.clone(), 2);
        drop(first);
        assert_eq!(epoch(), Some(2), "the new subscription is still told early");
        drop(second);
        assert_eq!(epoch(), None);
    }
}
