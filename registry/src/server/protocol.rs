//! The messages of the registry server actor that every node runs, as they cross nodes.

use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{ActorRef, NodeId, ReplyTo};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::time::Duration;

use openraft::{LogId, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::raft::{TypeConfig, Voter};
use crate::state::{Command, KeyValue, Lock, Outcome, RegistryState};

/// The local name of the registry server on every node.
pub(crate) const SERVER_NAME: &str = "ensemble.registry";

type RaftReply<T, E = openraft::error::Infallible> = ReplyTo<Result<T, RaftError<u64, E>>>;

/// A request to a node's registry server.
#[derive(Serialize, Deserialize)]
pub(crate) enum ServerMsg {
    /// Raft: replicate entries (leader to followers). The follower tells the copies named once
    /// the entries are on its disk ([`FeedMsg::Copy`]; see `client::early`).
    AppendEntries(
        AppendEntriesRequest<TypeConfig>,
        RaftReply<Appended>,
        Vec<ActorRef<FeedMsg>>,
    ),
    /// Raft: an AppendEntries with no entries that only tells a follower the commit index, sent
    /// without waiting for an answer (see "Commit notices" in `raft::network`).
    CommitNotice(AppendEntriesRequest<TypeConfig>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<u64>, RaftReply<VoteResponse<u64>>),
    /// Raft: a chunk of a snapshot.
    InstallSnapshot(
        SnapshotChunk,
        RaftReply<InstallSnapshotResponse<u64>, InstallSnapshotError>,
    ),
    /// Commands to commit (on the leader), answered once applied; the number is the request's
    /// on its node, for a copy that answers it first (`client::early`).
    Propose(Vec<Command>, ProposalReply, u64),
    /// A linearizable read (on the leader).
    Read(Query, ReplyTo<Result<Answer, ServerError>>),
    /// A node's session keepalive (on the leader), answered once leadership is confirmed.
    KeepAlive(NodeId, ReplyTo<Result<(), ServerError>>),
    /// Send the whole state, then every batch applied after it, to this mirror.
    Subscribe {
        /// Where to send.
        mirror: ActorRef<FeedMsg>,
        /// Told back with each message, so the mirror can drop an old source's stragglers.
        epoch: u64,
    },
    /// Stop sending to this mirror.
    Unsubscribe(ensemble_runtime::ActorId),
    /// Whether this node's Raft leads or a leader replicates to it, and its log's last entry.
    /// Any node answers, from what it knows itself: asked by a node started on a log that
    /// names it a voter, to tell a registry that has a leader from one started again as a
    /// whole, and a log it could win an election with from one behind
    /// (`client::session::watch_standing`).
    HearsLeader(ReplyTo<Hearing>),
    /// The asking node leaves on purpose (on the leader), and is given no vote while it
    /// leaves. With `true`, it votes and asks that its vote go to another node before it
    /// goes, without the voter grace; it asks again until the answer says the hand-over
    /// ended (`client::handover`). With `false` it only says it leaves (again every 0.5 s
    /// while it does).
    Leaving(bool, ReplyTo<Result<Handover, ServerError>>),
    /// Move the vote of node `from` to node `to`, on an operator's word (on the leader). The
    /// first ask (`first`) starts the change; the caller asks again until the answer is
    /// [`VoteMove::Done`] or an error (`client::vote_move`). A first ask is refused if `from`
    /// does not vote, though `to` may: an operator asking for a move that was made is told
    /// so, not that it moved.
    MoveVote {
        from: String,
        to: String,
        first: bool,
        reply: ReplyTo<Result<VoteMove, ServerError>>,
    },
}

/// The leader's answer to [`ServerMsg::MoveVote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum VoteMove {
    /// `to` votes and `from` does not, in the leader's applied configuration and the last
    /// one in its log (answered to later asks only).
    Done,
    /// The change is under way (or waits for another change to end): ask again.
    UnderWay,
}

/// The leader's answer to [`ServerMsg::Leaving`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Handover {
    /// The node is not among the voters of the leader's applied configuration (any more).
    NotAVoter,
    /// Its vote is to go to this node, the first by name of the connected members that may
    /// vote and do not, and that do not leave themselves; or, while a change of the voters is
    /// under way, to a node named once that change is done; or, with `None` while the voters
    /// outnumber the count an operator set, to no node (the vote is dropped).
    UnderWay { to: Option<String> },
    /// No member may take the vote: the node keeps it, as a voter gone for good does.
    NoneToTake,
}

/// A node's answer to [`ServerMsg::HearsLeader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hearing {
    /// Its Raft leads, or a leader replicated to it lately (`server::LeaderContact`).
    pub(crate) leader: bool,
    /// The last entry in its log.
    pub(crate) last_log: Option<LogId<u64>>,
}

/// A follower's answer to an AppendEntries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Appended {
    /// Raft's answer.
    pub(crate) response: AppendEntriesResponse<u64>,
    /// Whether something on the follower's node waits on its copy of the state (a lock waiter,
    /// a write of its own, a watch), so that it wants each commit at once: a commit notice
    /// rather than the commit index on the leader's next message (see "Commit notices" in
    /// `raft::network`).
    pub(crate) wants_notices: bool,
    /// How long the follower refuses votes after taking an AppendEntries (openraft's leader
    /// lease: its `election_timeout_max`, in whole milliseconds), as its own clock measures
    /// it. The leader's lease counts on this follower for that long less the drift margin
    /// (`raft::lease`), whatever the leader's own settings say: nodes may be set differently
    /// (a longer election timeout rolled through the nodes one at a time).
    #[serde(default)]
    pub(crate) refuses_votes_for: Duration,
}

/// openraft's [`InstallSnapshotRequest`] as it crosses nodes, with its data as one
/// MessagePack bin. Sent as it is, the data (a `Vec<u8>`) would go through serde as a
/// sequence: an array with one integer per byte, up to twice the bytes (every byte over 127
/// takes two) and a call per byte each way, for chunks of up to 3 MiB.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    vote: Vote<u64>,
    meta: SnapshotMeta<u64, Voter>,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(rpc: InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(chunk: SnapshotChunk) -> Self {
        InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        }
    }
}

/// Where a proposal's answer goes.
pub(crate) type ProposalReply = ReplyTo<Result<Vec<Outcome>, ServerError>>;

/// Answers to a node's proposals that travel with a batch: where each goes, and its outcomes.
pub(crate) type FedAnswers = Vec<(ProposalReply, Vec<Outcome>)>;

/// What a node's local copy of the registry receives.
#[derive(Serialize, Deserialize)]
pub(crate) enum FeedMsg {
    /// A part of the whole state as of a log index: the state encoded (MessagePack) and cut
    /// into parts that each fit a frame, sent in order; `last` ends it.
    Sync {
        epoch: u64,
        index: u64,
        #[serde(with = "serde_bytes")]
        part: Vec<u8>,
        last: bool,
    },
    /// A batch applied at a log index, with the answers to this node's proposals in it (and
    /// in earlier batches) for the copy to give once it has applied the batch
    /// (`server::answers`).
    Batch {
        epoch: u64,
        index: u64,
        /// The index of the subscription's batch before this one, sent whole or early (or of
        /// the whole state, for the first): a copy that is not there lost one on the way (a
        /// full mailbox, a connection that broke) and must not apply this one on top.
        after: u64,
        commands: std::sync::Arc<Vec<Command>>,
        answers: FedAnswers,
    },
    /// Nothing was applied for [`FEED_IDLE`]: the subscription is alive, at this index.
    Idle { epoch: u64, index: u64 },
    /// A batch the leader wrote, sent once it is on the leader's disk but before it is known
    /// committed: the copy applies it once a majority of its voters hold it (`client::early`).
    Early(EarlyBatch),
    /// A follower (`voter`, by Raft id) holds on its disk the leader's log up to `entry`.
    Copy { voter: u64, entry: LogId<u64> },
    /// The batches sent early up to the one at `through` are committed, with the answers to
    /// this node's proposals in them: sent in place of those batches, a little later, for a
    /// copy that could not count enough voters (`client::early`). The word speaks only for
    /// batches of `through`'s leader and term: the leader's log as it is now.
    Committed {
        epoch: u64,
        through: LogId<u64>,
        answers: FedAnswers,
    },
}

/// A batch sent before it is known committed ([`FeedMsg::Early`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EarlyBatch {
    /// The subscription it goes with.
    pub(crate) epoch: u64,
    /// Its entry in the leader's log.
    pub(crate) entry: LogId<u64>,
    /// The index of the leader's last entry before it that carries commands: those in between
    /// change no state.
    pub(crate) after: u64,
    /// The voters (Raft ids) a majority of which must hold it.
    pub(crate) voters: Vec<u64>,
    pub(crate) commands: std::sync::Arc<Vec<Command>>,
    /// The requests of the copy's node that it answers.
    pub(crate) requests: Vec<EarlyRequest>,
}

/// A request (by its number on its node) whose commands are `count` of a batch's, from
/// `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EarlyRequest {
    pub(crate) request: u64,
    pub(crate) start: u32,
    pub(crate) count: u32,
}

/// How long a subscription stays quiet before it says it is alive ([`FeedMsg::Idle`]).
pub(crate) const FEED_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// A linearizable read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Query {
    Name(String),
    Group(String),
    Lock(String),
    Get(String),
    Prefix(String),
    /// The Raft voters (answered from the applied membership, not the registry state).
    Voters,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    Name(Option<WireRef>),
    Group(Vec<WireRef>),
    Lock(Option<Lock>),
    Get(Option<KeyValue>),
    Prefix(Vec<(String, KeyValue)>),
    Voters {
        /// Their node names, sorted.
        names: Vec<String>,
        /// The log entry of the configuration they are the voters of: a node named among them
        /// stands for election only once its own log holds it (`client::session`).
        config: Option<LogId<u64>>,
    },
}

impl Answer {
    /// About how many bytes the answer takes encoded (config values and keys, group members;
    /// the rest is small).
    pub(crate) fn approx_bytes(&self) -> usize {
        match self {
            Answer::Group(members) => members
                .iter()
                .map(|member| member.msg_type.len() + member.id.node().name().len() + 32)
                .sum(),
            Answer::Get(Some(value)) => value.value.len() + 64,
            Answer::Prefix(values) => values
                .iter()
                .map(|(key, value)| key.len() + value.value.len() + 64)
                .sum(),
            _ => 0,
        }
    }
}

impl Query {
    pub(crate) fn answer(&self, state: &RegistryState) -> Answer {
        match self {
            Query::Name(name) => Answer::Name(state.name(name).cloned()),
            Query::Group(group) => Answer::Group(state.group(group)),
            Query::Lock(lock) => Answer::Lock(state.lock(lock).cloned()),
            Query::Get(key) => Answer::Get(state.get(key).cloned()),
            Query::Prefix(prefix) => Answer::Prefix(
                state
                    .prefix(prefix)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            Query::Voters => Answer::Voters {
                names: Vec::new(),
                config: None,
            },
        }
    }
}

/// Why a server could not serve a request.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum ServerError {
    /// This node is not the leader; the leader is named if this node heard from it lately. A
    /// proposal so answered never reached a log. `follows`: the node is a voter or a learner of
    /// the Raft configuration it knows, so a leader replicates to it, and naming none means it
    /// heard from none lately; a node that does not follow can never name one.
    #[error("not the registry leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<String>,
        follows: bool,
    },
    /// This node stopped leading after a proposal went into its log, before the proposal
    /// committed: a later leader may still commit it. The leader is named if known.
    #[error(
        "the registry leader lost its lead before the request committed (leader now: {leader:?})"
    )]
    LostLead { leader: Option<String> },
    /// The node has no session (not opened yet, or closed).
    #[error("node {0} has no registry session")]
    NoSession(NodeId),
    /// The node's session expired.
    #[error("the session of node {0} expired")]
    SessionExpired(NodeId),
    /// Too many proposals queued.
    #[error("the registry leader is overloaded: {0} proposals queued")]
    Overloaded(usize),
    /// A command or an answer is over the leader's limit ([`crate::limits::Limits`]).
    #[error("{what} takes about {bytes} bytes, over the leader's limit of {max} bytes for it")]
    TooLarge {
        what: String,
        bytes: usize,
        max: usize,
    },
    /// Raft failed.
    #[error("{0}")]
    Raft(String),
    /// A proposal whose head ([`Command::Request`]) does not belong where it is: not first,
    /// not counting the commands after it, or naming another node than the sender. Refused
    /// before it reaches the log.
    #[error("a malformed request: {0}")]
    Malformed(String),
    /// A vote was not moved as asked ([`ServerMsg::MoveVote`]): why, naming the nodes; and
    /// whether the move was tried and failed (`tried`: the node to take the vote did not
    /// catch up, say) rather than refused up front (a wrong node, one that may not vote now).
    #[error("{why}")]
    VoteNotMoved { why: String, tried: bool },
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    use super::*;

    #[test]
    fn a_snapshot_chunk_crosses_as_bin_and_converts_back_whole() {
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 7),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 7), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-42-1".into(),
            },
            offset: 1024,
            data: (0..=255_u8).cycle().take(4096).collect(),
            done: false,
        };
        let bytes = rmp_serde::to_vec_named(&SnapshotChunk::from(rpc.clone())).unwrap();
        // The data's 4,096 bytes and some framing; as an array of integers it took 6,144.
        assert!(bytes.len() < 4096 + 256, "{} bytes", bytes.len());
        let back: SnapshotChunk = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(InstallSnapshotRequest::from(back), rpc);
    }
}
