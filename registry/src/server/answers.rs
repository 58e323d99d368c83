//! Answers to proposals that travel with the feed of the proposer's node.
//!
//! A node that proposes commands needs two things from the leader: the answer (the outcomes)
//! and the batch in its local copy, since a write answers only once the copy shows it (read
//! your writes). Both leave the leader when the entry is applied, and sent apart they cost two
//! datagrams where one would do: the writes of a contended lock go back and forth this way
//! for every hand-over.
//!
//! So when the leader applies an entry it proposed, each proposal's answer goes into the
//! answer queue of the proposer's node, if this server feeds that node's copy
//! ([`AnswerQueues`]); the subscription sends it with the batch ([`FeedMsg::Batch`]), and the
//! copy answers the ask locally once it has applied the batch. Proposals from nodes this server
//! does not feed, and from this node, are answered directly, as before.
//!
//! No answer is lost on the way: an answer is queued before the feed learns of its batch, so
//! the subscription finds it there when it sends that batch; a subscription that sends the
//! whole state instead of batches, or that ends, answers whatever is queued directly first;
//! and the copy answers even a batch it does not apply (one it already holds, or one of an
//! old subscription). Only the leader that proposed an entry carries its answers
//! ([`Batch`](crate::raft::Batch)'s [`OnApply`]); if it loses the lead first, the committer
//! answers with the error, as before.
//!
//! A batch the copy was sent before it committed (`super::early`) is not sent again: its
//! answers wait, with those of the batches after it, for the leader's word that they
//! committed ([`FeedMsg::Committed`]), and the copy has most often answered from its own
//! outcomes by then. A subscription that ends first answers them directly.
//!
//! [`FeedMsg::Batch`]: super::protocol::FeedMsg::Batch
//! [`FeedMsg::Committed`]: super::protocol::FeedMsg::Committed

use std::collections::VecDeque;
use std::sync::Arc;

use ensemble_runtime::NodeId;
use ensemble_runtime::hashing::HashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::protocol::{FedAnswers, ProposalReply};
use crate::raft::types::OnApply;
use crate::state::Outcome;

/// An answer waiting for the batch it belongs to.
pub(crate) struct QueuedAnswer {
    index: u64,
    reply: ProposalReply,
    outcomes: Vec<Outcome>,
}

impl QueuedAnswer {
    fn answer_directly(self) {
        let _ = self.reply.send(Ok(self.outcomes));
    }
}

/// The answer queues of the nodes whose copies this server feeds.
#[derive(Clone, Default)]
pub(crate) struct AnswerQueues(Arc<Mutex<HashMap<NodeId, mpsc::UnboundedSender<QueuedAnswer>>>>);

impl AnswerQueues {
    /// What to do when the entry holding these proposals (`count` commands each, in order) is
    /// applied: hand each its outcomes, through its node's feed where there is one.
    pub(crate) fn on_apply(&self, proposals: Arc<Mutex<Option<Proposals>>>) -> OnApply {
        let queues = self.clone();
        OnApply(Some(Arc::new(move |index, outcomes| {
            let Some(proposals) = proposals.lock().take() else {
                return;
            };
            let mut outcomes = outcomes.iter();
            for (count, reply) in proposals {
                let outcomes = outcomes.by_ref().take(count).cloned().collect();
                queues.deliver(QueuedAnswer {
                    index,
                    reply,
                    outcomes,
                });
            }
        })))
    }

    fn deliver(&self, answer: QueuedAnswer) {
        let unqueued = {
            // Sent under the lock: a queue that leaves the map finds everything sent to it
            // (see `Drop for AnswerQueue`).
            let queues = self.0.lock();
            match answer.reply.origin().and_then(|node| queues.get(node)) {
                Some(queue) => queue.send(answer).err().map(|unsent| unsent.0),
                None => Some(answer),
            }
        };
        if let Some(answer) = unqueued {
            answer.answer_directly();
        }
    }

    /// Starts queueing the answers of `node`'s proposals, for the subscription that feeds its
    /// copy (replacing any earlier one's queue).
    pub(crate) fn open(&self, node: NodeId) -> AnswerQueue {
        let (sender, queue) = mpsc::unbounded_channel();
        self.0.lock().insert(node.clone(), sender.clone());
        AnswerQueue {
            queues: self.clone(),
            node,
            sender,
            queue,
            held: VecDeque::new(),
        }
    }
}

/// The proposals of one entry: how many commands each brought, and where its answer goes.
pub(crate) type Proposals = Vec<(usize, ProposalReply)>;

/// One subscription's queue of answers. Dropped (the subscription ended or was aborted), it
/// answers what is left directly.
pub(crate) struct AnswerQueue {
    queues: AnswerQueues,
    node: NodeId,
    /// Its own end of the channel, to tell its entry from a later subscription's.
    sender: mpsc::UnboundedSender<QueuedAnswer>,
    queue: mpsc::UnboundedReceiver<QueuedAnswer>,
    /// Taken from the channel, for a batch not sent yet.
    held: VecDeque<QueuedAnswer>,
}

impl AnswerQueue {
    /// The answers that belong to the batch at `index` (or to earlier ones), in order.
    pub(crate) fn for_batch(&mut self, index: u64) -> FedAnswers {
        self.take_queued();
        let mut answers = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|answer| answer.index <= index)
        {
            if let Some(answer) = self.held.pop_front() {
                answers.push((answer.reply, answer.outcomes));
            }
        }
        answers
    }

    /// Answers everything queued directly: the subscription sends the whole state next, not
    /// the batches these answers belong to.
    pub(crate) fn answer_directly(&mut self) {
        self.take_queued();
        for answer in self.held.drain(..) {
            answer.answer_directly();
        }
    }
}

impl AnswerQueue {
    /// Moves what the channel holds behind what was taken before, keeping the order.
    fn take_queued(&mut self) {
        while let Ok(answer) = self.queue.try_recv() {
            self.held.push_back(answer);
        }
    }
}

impl Drop for AnswerQueue {
    fn drop(&mut self) {
        {
            let mut queues = self.queues.0.lock();
            if queues
                .get(&self.node)
                .is_some_and(|sender| sender.same_channel(&self.sender))
            {
                queues.remove(&self.node);
            }
        }
        // After leaving the map: whatever was sent to this queue is in it now.
        self.answer_directly();
    }
}
