//! The registry server every node runs: it answers Raft's RPCs and, on the leader, commits
//! proposals (group commit), serves linearizable reads and keepalives, and feeds the local
//! copies of other nodes.
//!
//! # Group commit
//!
//! Proposals from all clients go into one queue. A committer takes everything queued (up to
//! [`MAX_BATCH`] commands and [`Limits::entry`] bytes) as one log entry, so one fsync and one
//! replication round serve them all; up to [`IN_FLIGHT`] entries are written at once, so the
//! next batch forms while the previous one is replicated. A full queue ([`QUEUE`] proposals)
//! answers `Overloaded` rather than growing.

mod answers;
pub(crate) mod early;
mod leader;
pub(crate) use leader::CATCH_UP;
pub use leader::VOTER_LABEL;
pub(crate) mod protocol;
use std::sync::Arc;

use ensemble_runtime::hashing::HashMap;
use ensemble_runtime::remote::RemoteMessage;
use ensemble_runtime::{Actor, ActorId, ActorResult, Context, NodeId, ReplyTo};
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::raft::AppendEntriesResponse;
use openraft::{LogId, Raft, ServerState, Vote};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, broadcast, mpsc};

use answers::AnswerQueues;
use early::{Deferred, EarlyFeeds};
pub(crate) use leader::Leadership;
use protocol::{
    Answer, Appended, FEED_IDLE, FeedMsg, Hearing, ProposalReply, Query, ServerError, ServerMsg,
};

use crate::limits::{Limits, approx_bytes};
use crate::raft::log_store::LastLogId;
use crate::raft::state_machine::Fed;
use crate::raft::types::{Batch, raft_id};
use crate::raft::{StateMachine, TypeConfig, Voter};
use crate::state::{Command, MAX_VOTERS};

/// Most commands in one log entry.
pub(crate) const MAX_BATCH: usize = 1024;
/// Log entries being written at once.
pub(crate) const IN_FLIGHT: usize = 4;
/// Proposals queued on the leader before it answers `Overloaded`.
pub(crate) const QUEUE: usize = 65_536;

/// Commands, where their answer goes, and the request's number on its node (see
/// `ServerMsg::Propose`).
type Proposal = (Vec<Command>, ProposalReply, u64);

/// Whether something on this node waits on its copy of the registry state: asked each time a
/// follower answers an AppendEntries ([`Appended::wants_notices`]).
pub(crate) type WaitsOnCopy = Arc<dyn Fn() -> bool + Send + Sync>;

/// The server actor.
pub(crate) struct Server {
    raft: Raft<TypeConfig>,
    state_machine: StateMachine,
    proposals: mpsc::Sender<Proposal>,
    leadership: Leadership,
    subscriptions: HashMap<ActorId, tokio::task::AbortHandle>,
    limits: Limits,
    waits_on_copy: WaitsOnCopy,
    /// Where the answers to other nodes' proposals wait for their node's feed.
    answers: AnswerQueues,
    /// The copies on other nodes this server feeds: sent the batches of their node's proposals
    /// before they commit, when this server leads.
    early_feeds: EarlyFeeds,
    /// This node's Raft id.
    me: u64,
    /// When this node last took an AppendEntries or a snapshot's chunk from a leader.
    leader_contact: LeaderContact,
    /// The last entry of this node's log ([`ServerMsg::HearsLeader`]).
    last_log: LastLogId<TypeConfig>,
    /// How long this node refuses votes after taking an AppendEntries, by its own clock: told
    /// to the leader with each answer ([`Appended::refuses_votes_for`]).
    refuses_votes_for: std::time::Duration,
}

/// When this node's server last took an AppendEntries or a snapshot's chunk from a leader it
/// follows: a leader replicates to this node, which is then a voter or a learner of that
/// leader's configuration (`client::session` asks).
#[derive(Clone)]
pub(crate) struct LeaderContact {
    last: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// How long without one counts as not hearing a leader.
    silence: std::time::Duration,
    /// How long after one this node still names the leader to a client (`NotLeader`).
    fresh: std::time::Duration,
}

impl LeaderContact {
    /// `silence`: how long without an AppendEntries or a snapshot's chunk taken counts as not
    /// hearing a leader (longer than an election takes: see `start`); `fresh`: how long after
    /// one this node still names that leader to a client that asks it instead (see
    /// [`not_leading`]).
    pub(crate) fn new(silence: std::time::Duration, fresh: std::time::Duration) -> Self {
        LeaderContact {
            last: Arc::default(),
            silence,
            fresh,
        }
    }

    /// Whether an AppendEntries or a snapshot's chunk was taken within `fresh`.
    fn fresh(&self) -> bool {
        self.last.lock().is_some_and(|at| at.elapsed() < self.fresh)
    }

    fn note(&self) {
        *self.last.lock() = Some(tokio::time::Instant::now());
    }

    /// Whether a leader replicates to this node: an AppendEntries or a snapshot's chunk was
    /// taken within the silence.
    pub(crate) fn recent(&self) -> bool {
        self.last
            .lock()
            .is_some_and(|at| at.elapsed() < self.silence)
    }

    /// How long without one counts as not hearing a leader.
    pub(crate) fn silence(&self) -> std::time::Duration {
        self.silence
    }

    /// Whether one was ever taken since this node started.
    pub(crate) fn ever(&self) -> bool {
        self.last.lock().is_some()
    }
}

impl Server {
    pub(crate) fn new(
        raft: Raft<TypeConfig>,
        state_machine: StateMachine,
        leadership: Leadership,
        limits: Limits,
        waits_on_copy: WaitsOnCopy,
        leader_contact: LeaderContact,
        last_log: LastLogId<TypeConfig>,
    ) -> Server {
        let me = raft.metrics().borrow().id;
        // openraft's leader lease, in whole milliseconds of the timer, which runs a duration
        // measured by this node's clock as that duration over its rate.
        let refuses_votes_for =
            std::time::Duration::from_millis(raft.config().election_timeout_max)
                .mul_f64(leadership.clock_rate());
        let (proposals, queue) = mpsc::channel(QUEUE);
        let answers = AnswerQueues::default();
        let early_feeds = EarlyFeeds::start(&state_machine);
        tokio::spawn(commit_loop(
            raft.clone(),
            queue,
            limits,
            answers.clone(),
            early_feeds.clone(),
        ));
        Server {
            answers,
            early_feeds,
            me,
            raft,
            state_machine,
            proposals,
            leadership,
            subscriptions: HashMap::default(),
            limits,
            waits_on_copy,
            leader_contact,
            last_log,
            refuses_votes_for,
        }
    }

    fn subscribe(&mut self, mirror: ensemble_runtime::ActorRef<FeedMsg>, epoch: u64) {
        let state_machine = self.state_machine.clone();
        let id = mirror.id().clone();
        let part_size = self.limits.entry;
        let mut answers = self.answers.open(id.node().clone());
        // Only copies on other nodes: a voter's own copy subscribes to its own server.
        let sent_early = (raft_id(id.node().name()) != self.me)
            .then(|| self.early_feeds.open(mirror.clone(), epoch));
        let task = tokio::spawn(async move {
            'sync: loop {
                let (state, index, mut feed) = state_machine.subscribe();
                // Those of batches the whole state holds, which are not sent on their own.
                answers.answer_directly();
                let whole = match state_machine.encode_off_runtime(state).await {
                    Ok(whole) => whole,
                    Err(err) => {
                        tracing::error!(%err, "cannot encode the registry state for a copy");
                        return;
                    }
                };
                let mut parts = whole.chunks(part_size).peekable();
                while let Some(part) = parts.next() {
                    let sync = FeedMsg::Sync {
                        epoch,
                        index,
                        part: part.to_vec(),
                        last: parts.peek().is_none(),
                    };
                    if mirror.tell(sync).await.is_err() {
                        return;
                    }
                }
                let mut at = index;
                // Batches the copy was sent early, held back (see `Deferred`).
                let mut deferred: Option<Deferred> = None;
                loop {
                    // A quiet feed says so now and then: the mirror tells a quiet feed from a
                    // dead one (its source restarted, a message was lost with a connection).
                    let wait = deferred.as_ref().map_or(FEED_IDLE, |held| {
                        held.until
                            .saturating_duration_since(tokio::time::Instant::now())
                    });
                    let Ok(next) = tokio::time::timeout(wait, feed.recv()).await else {
                        let message = match deferred.take() {
                            Some(held) => held.into_message(epoch),
                            None => FeedMsg::Idle { epoch, index: at },
                        };
                        if mirror.tell(message).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    match next {
                        Ok(Fed::Batch { entry, commands }) => {
                            let index = entry.index;
                            let after = std::mem::replace(&mut at, index);
                            let answers = answers.for_batch(index);
                            let whole = if sent_early.as_ref().is_some_and(|s| s.take(entry)) {
                                match &mut deferred {
                                    Some(held) => held.add(entry, answers),
                                    None => deferred = Some(Deferred::new(entry, answers)),
                                }
                                None
                            } else {
                                Some(FeedMsg::Batch {
                                    epoch,
                                    index,
                                    after,
                                    commands,
                                    answers,
                                })
                            };
                            // What is held goes before a batch sent whole, and once due even
                            // while batches keep coming (the wait above never ends then).
                            if (whole.is_some() || deferred.as_ref().is_some_and(Deferred::is_due))
                                && let Some(held) = deferred.take()
                                && mirror.tell(held.into_message(epoch)).await.is_err()
                            {
                                return;
                            }
                            if let Some(batch) = whole
                                && mirror.tell(batch).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(Fed::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            continue 'sync;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        if let Some(old) = self.subscriptions.insert(id, task.abort_handle()) {
            old.abort();
        }
        self.subscriptions.retain(|_, task| !task.is_finished());
    }
}

/// What a follower may tell the copies an AppendEntries names, once it answered it: that its
/// log holds the leader's up to the last entry carried (`carried`), on disk, if it took all
/// of them (`matched`), and only if that entry is of the term the leader sent it in (`vote`).
///
/// A copy counts the notice as one of the majority that commits the entry
/// (`client::early`), which Raft allows only for entries of the leader's current term. An
/// entry the same leader wrote in an earlier term, sent again now, may still be replaced by a
/// later leader's even once a majority holds it (Raft's "Figure 8").
fn notice(
    carried: Option<LogId<u64>>,
    matched: Option<LogId<u64>>,
    vote: &Vote<u64>,
) -> Option<LogId<u64>> {
    carried.filter(|entry| matched == carried && entry.leader_id == *vote.leader_id())
}

/// Maps a Raft error on the leader path to what clients see.
fn server_error<
    E: std::fmt::Debug
        + std::fmt::Display
        + openraft::TryAsRef<openraft::error::ForwardToLeader<u64, Voter>>,
>(
    err: RaftError<u64, E>,
) -> ServerError {
    if let Some(forward) = err.forward_to_leader() {
        // A leader that just lost its lead: it was in the configuration, and names the
        // leader whose higher vote it saw.
        return ServerError::NotLeader {
            leader: forward.leader_node.as_ref().map(|n| n.name.clone()),
            follows: true,
        };
    }
    ServerError::Raft(err.to_string())
}

impl Actor for Server {
    type Msg = ServerMsg;

    async fn handle(&mut self, msg: ServerMsg, ctx: &mut Context<Self>) -> ActorResult {
        let raft = self.raft.clone();
        match msg {
            ServerMsg::AppendEntries(rpc, reply, tell) => {
                let log = self.state_machine.log().clone();
                let waits_on_copy = self.waits_on_copy.clone();
                let contact = self.leader_contact.clone();
                let me = self.me;
                let refuses_votes_for = self.refuses_votes_for;
                tokio::spawn(async move {
                    let carried = rpc.entries.last().map(|e| e.log_id);
                    let last = carried.or(rpc.prev_log_id);
                    let vote = rpc.vote;
                    let answer = raft.append_entries(rpc).await;
                    // Taken, not refused for this node's later vote: a refusal comes from a
                    // leader this node does not follow.
                    if matches!(
                        answer,
                        Ok(AppendEntriesResponse::Success
                            | AppendEntriesResponse::PartialSuccess(_)
                            | AppendEntriesResponse::Conflict)
                    ) {
                        contact.note();
                    }
                    // Entries this node wrote as an earlier term's leader were reported durable
                    // before they were: a success must not count on them before they are. If
                    // the log failed, no answer goes: this node's Raft is stopping.
                    let matched = match &answer {
                        Ok(AppendEntriesResponse::Success) => last,
                        Ok(AppendEntriesResponse::PartialSuccess(matched)) => *matched,
                        _ => None,
                    };
                    if let Some(matched) = matched
                        && log.durable_through(matched.index).await.is_err()
                    {
                        return;
                    }
                    let copied = notice(carried, matched, &vote);
                    let _ = reply.send(answer.map(|response| Appended {
                        response,
                        wants_notices: waits_on_copy(),
                        refuses_votes_for,
                    }));
                    if let Some(entry) = copied {
                        for mirror in tell {
                            let _ = mirror.try_tell(FeedMsg::Copy { voter: me, entry });
                        }
                    }
                });
            }
            ServerMsg::CommitNotice(rpc) => {
                let contact = self.leader_contact.clone();
                tokio::spawn(async move {
                    // Nobody waits for the answer: the leader took it for success, and the
                    // next AppendEntries it sends is answered (see `raft::network`).
                    match raft.append_entries(rpc).await {
                        Ok(AppendEntriesResponse::Success) => contact.note(),
                        Ok(answer) => tracing::debug!(%answer, "a commit notice was refused"),
                        Err(err) => tracing::debug!(%err, "a commit notice was not taken"),
                    }
                });
            }
            ServerMsg::Vote(rpc, reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(raft.vote(rpc).await);
                });
            }
            ServerMsg::InstallSnapshot(rpc, reply) => {
                let contact = self.leader_contact.clone();
                tokio::spawn(async move {
                    let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = rpc.into();
                    let sent_by = rpc.vote;
                    let answer = raft.install_snapshot(rpc).await;
                    // A chunk refused for this node's later vote names that vote.
                    if answer.as_ref().is_ok_and(|taken| taken.vote <= sent_by) {
                        contact.note();
                    }
                    let _ = reply.send(answer);
                });
            }
            ServerMsg::Propose(commands, reply, request) => {
                // Clients check this before they send; one that did not (a node with a larger
                // frame limit) must not get an entry into the log that cannot be replicated.
                if let Some((what, bytes)) = self.limits.oversized(&commands) {
                    let max = self.limits.command;
                    let _ = reply.send(Err(ServerError::TooLarge { what, bytes, max }));
                    return Ok(());
                }
                // Nor one whose commands, each within its limit, add up to more than a log
                // entry takes: the entry could be too large for an AppendEntries to carry.
                if let Some(err) = oversized_request(&commands, &self.limits) {
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                // Refused here, the proposal never reached a log: `NotLeader` says so. Once it
                // went to Raft, a lead lost before it committed answers `LostLead`.
                if let Some(err) = self.not_leading() {
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                let sender = reply.origin().unwrap_or(ctx.node().id());
                if let Some(reason) = misplaced_head(&commands, sender)
                    .or_else(|| foreign_command(&commands, sender))
                    .or_else(|| bad_voter_count(&commands))
                {
                    let _ = reply.send(Err(ServerError::Malformed(reason)));
                    return Ok(());
                }
                if let Err(err) = self.proposals.try_send((commands, reply, request)) {
                    let (_, reply, _) = err.into_inner();
                    let _ = reply.send(Err(ServerError::Overloaded(QUEUE)));
                }
            }
            ServerMsg::Read(query, reply) => {
                // A follower says so at once, naming a leader only if it heard from it lately
                // (`not_leading`), rather than through openraft's forward.
                if let Some(err) = self.not_leading() {
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                let state_machine = self.state_machine.clone();
                let leadership = self.leadership.clone();
                let max = self.limits.append;
                tokio::spawn(async move {
                    let answer = match leadership.confirm(&raft).await {
                        // Confirmed reads wait until the read index is applied, so the applied
                        // membership holds every change committed before the read.
                        Ok(_) if matches!(query, Query::Voters) => {
                            let (names, config) = state_machine.voters();
                            Ok(Answer::Voters { names, config })
                        }
                        Ok(_) => match state_machine.read(|state| query.answer(state)) {
                            // It would not fit a frame: say so rather than send nothing.
                            answer if answer.approx_bytes() > max => Err(ServerError::TooLarge {
                                what: format!("the answer to {query:?}"),
                                bytes: answer.approx_bytes(),
                                max,
                            }),
                            answer => Ok(answer),
                        },
                        Err(err) => Err(err),
                    };
                    let _ = reply.send(answer);
                });
            }
            ServerMsg::KeepAlive(node, reply) => {
                if let Some(err) = self.not_leading() {
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                // A node keeps its own session alive, not another's (which would keep a dead
                // node's locks held).
                let sender = reply.origin().unwrap_or(ctx.node().id());
                if &node != sender {
                    let reason = format!("node {sender} sent a keepalive for node {node}");
                    let _ = reply.send(Err(ServerError::Malformed(reason)));
                    return Ok(());
                }
                let leadership = self.leadership.clone();
                let state_machine = self.state_machine.clone();
                tokio::spawn(async move {
                    let answer = leadership.keepalive(&raft, &state_machine, &node).await;
                    let _ = reply.send(answer);
                });
            }
            ServerMsg::Subscribe { mirror, epoch } => self.subscribe(mirror, epoch),
            ServerMsg::Unsubscribe(mirror) => {
                if let Some(task) = self.subscriptions.remove(&mirror) {
                    task.abort();
                }
                self.early_feeds.close(&mirror);
            }
            ServerMsg::HearsLeader(reply) => {
                // A Raft that stopped on a fatal error (its log could not be written) leads
                // nobody and wins no election, though its metrics and log still say what they
                // said last: it must not hold the others back from standing.
                let stopped = self.raft.metrics().borrow().running_state.is_err();
                let hearing = if stopped {
                    Hearing {
                        leader: false,
                        last_log: None,
                    }
                } else {
                    Hearing {
                        leader: self.not_leading().is_none() || self.leader_contact.recent(),
                        last_log: self.last_log.get(),
                    }
                };
                let _ = reply.send(hearing);
            }
            ServerMsg::Leaving(hand_over, reply) => {
                // The asking node's own vote: the transport names the node an ask came from.
                let node = reply.origin().unwrap_or(ctx.node().id()).clone();
                self.answer_on_the_voters(reply, move |voters| {
                    Ok(voters.leadership.hand_over(
                        &node,
                        hand_over,
                        voters.applied,
                        voters.effective,
                        voters.state_machine,
                    ))
                });
            }
            ServerMsg::MoveVote {
                from,
                to,
                first,
                reply,
            } => {
                self.answer_on_the_voters(reply, move |voters| {
                    voters.leadership.move_vote(
                        voters.raft,
                        (&from, &to, first),
                        voters.applied,
                        voters.effective,
                        voters.state_machine,
                    )
                });
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ensemble_runtime::ExitReason, _ctx: &mut Context<Self>) {
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        self.early_feeds.stop();
        // The node is shutting down: stop Raft, which closes the log, so that the node can be
        // started again on the same data dir in this process.
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the registry's Raft did not shut down cleanly");
        }
    }
}

/// `None` if this node's Raft leads; otherwise `NotLeader`, naming the leader it knows of if
/// it `heard` from a leader lately ([`LeaderContact::fresh`]), and saying whether this node
/// follows: whether the configuration it knows counts it as a voter or a learner.
///
/// openraft names the leader of the vote this node last saw committed until it sees another,
/// also once that leader is dead: a client told so would try the dead leader again and wait
/// a whole attempt on it while the followers elect another. Named only while heard from, a
/// leader is alive, and a client may take a node that failed to answer it for dead as long as
/// the followers that answer do not name it (`client::Shared::call`). A node that does not
/// follow hears no leader whether one lives or not: its word on it counts for nothing.
fn not_leading(metrics: &RaftServerMetrics<u64, Voter>, heard: bool) -> Option<ServerError> {
    if metrics.state == ServerState::Leader {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let leader = metrics
        .current_leader
        .filter(|_| heard)
        .and_then(|id| membership.get_node(&id))
        .map(|voter| voter.name.clone());
    let follows = membership.get_node(&metrics.id).is_some();
    Some(ServerError::NotLeader { leader, follows })
}

/// Why a proposal from `sender` may not go into the log as it is, if it may not: a head
/// ([`Command::Request`]) may only come first, count the commands after it, and name its
/// sender. A head that took another's commands or named another node would change which
/// outcomes answer whom, or what the registry remembers of another node's requests.
fn misplaced_head(commands: &[Command], sender: &NodeId) -> Option<String> {
    let heads = commands
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Command::Request { .. }));
    for (at, head) in heads {
        let Command::Request {
            node,
            commands: count,
            ..
        } = head
        else {
            continue;
        };
        if at > 0 {
            return Some(format!("a request's head at position {at}, not first"));
        }
        if *count as usize != commands.len() - 1 {
            return Some(format!(
                "a request's head counts {count} commands, and {} follow it",
                commands.len() - 1
            ));
        }
        if node != sender {
            return Some(format!(
                "node {sender} sent a request headed as node {node}'s"
            ));
        }
    }
    None
}

/// Why a proposal may not go into the log as it is, if one of its commands acts for a node
/// other than its sender's: a node opens, closes and keeps alive its own session, takes and
/// gives back locks for itself and binds names and groups to its own actors. A session's
/// expiry only the leader proposes, from its own clock, once it has led a full TTL. (Names,
/// group entries and reservations may be let go of for any node: those need no check.)
fn foreign_command(commands: &[Command], sender: &NodeId) -> Option<String> {
    commands.iter().find_map(|command| {
        let node = match command {
            Command::ExpireSession { node } => {
                return Some(format!(
                    "node {sender} proposed the expiry of node {node}'s session, which only \
                     the registry's leader proposes"
                ));
            }
            Command::OpenSession { node, .. } | Command::CloseSession { node } => node,
            Command::Acquire { holder, .. } | Command::Release { holder, .. } => &holder.node,
            Command::RegisterName { actor, .. } | Command::JoinGroup { actor, .. } => {
                actor.id.node()
            }
            _ => return None,
        };
        (node != sender).then(|| format!("node {sender} sent {} for node {node}", command.brief()))
    })
}

/// A proposal larger than one log entry may be, or of more commands than one takes, is
/// refused: clients gather at most that much into a request (`client::proposer`).
fn oversized_request(commands: &[Command], limits: &Limits) -> Option<ServerError> {
    let body = match commands.first() {
        Some(Command::Request { .. }) => &commands[1..],
        _ => commands,
    };
    let bytes = approx_bytes(body);
    if bytes > limits.entry {
        return Some(ServerError::TooLarge {
            what: format!("a request of {} commands", body.len()),
            bytes,
            max: limits.entry,
        });
    }
    (body.len() > MAX_BATCH).then(|| {
        ServerError::Malformed(format!(
            "a request of {} commands; one takes at most {MAX_BATCH}",
            body.len()
        ))
    })
}

/// Why a proposal may not go into the log as it is, if it asks for a number of voters the
/// registry does not keep (clients check before they send).
fn bad_voter_count(commands: &[Command]) -> Option<String> {
    commands.iter().find_map(|command| match command {
        Command::SetVoterCount { count } if !(1..=MAX_VOTERS).contains(count) => Some(format!(
            "a registry of {count} voters was asked; it keeps 1 to {MAX_VOTERS}"
        )),
        _ => None,
    })
}

/// What a question about the voters is answered from, on a leader that confirmed its lead
/// ([`Server::answer_on_the_voters`]).
struct VotersView<'a> {
    raft: &'a Raft<TypeConfig>,
    leadership: &'a Leadership,
    state_machine: &'a StateMachine,
    /// The applied configuration.
    applied: &'a openraft::Membership<u64, Voter>,
    /// The last configuration in this node's log.
    effective: &'a openraft::Membership<u64, Voter>,
}

impl Server {
    /// [`not_leading`] for this node's Raft as it is now.
    fn not_leading(&self) -> Option<ServerError> {
        not_leading(
            &self.raft.server_metrics().borrow(),
            self.leader_contact.fresh(),
        )
    }

    /// Answers a question about the voters (a node that leaves, a vote moved by hand) with
    /// `answer`, on the leader only, once it confirmed that it still leads, as for a read: a
    /// leader deposed without knowing it yet must not answer.
    fn answer_on_the_voters<T: RemoteMessage>(
        &self,
        reply: ReplyTo<Result<T, ServerError>>,
        answer: impl FnOnce(VotersView<'_>) -> Result<T, ServerError> + Send + 'static,
    ) {
        if let Some(err) = self.not_leading() {
            let _ = reply.send(Err(err));
            return;
        }
        let (raft, leadership, state_machine) = (
            self.raft.clone(),
            self.leadership.clone(),
            self.state_machine.clone(),
        );
        tokio::spawn(async move {
            let answered = match leadership.confirm(&raft).await {
                Ok(()) => {
                    let applied = state_machine.membership();
                    let effective = raft.metrics().borrow().membership_config.clone();
                    answer(VotersView {
                        raft: &raft,
                        leadership: &leadership,
                        state_machine: &state_machine,
                        applied: &applied,
                        effective: effective.membership(),
                    })
                }
                Err(err) => Err(err),
            };
            let _ = reply.send(answered);
        });
    }
}

/// Takes whatever proposals are queued as one log entry, a few entries at a time.
async fn commit_loop(
    raft: Raft<TypeConfig>,
    mut queue: mpsc::Receiver<Proposal>,
    limits: Limits,
    answers: AnswerQueues,
    early_feeds: EarlyFeeds,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut first = None;
    loop {
        let proposal = match first.take() {
            Some(proposal) => proposal,
            None => match queue.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut commands = proposal.0;
        let mut bytes = approx_bytes(&commands);
        let mut requests = vec![proposal.2];
        let mut replies = vec![(Command::outcomes(&commands), proposal.1)];
        // Whatever queued while waiting for a permit joins this entry, within its limits.
        while commands.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok((more, reply, request)) => {
                    let more_bytes = approx_bytes(&more);
                    if commands.len() + more.len() > MAX_BATCH || bytes + more_bytes > limits.entry
                    {
                        first = Some((more, reply, request));
                        break;
                    }
                    bytes += more_bytes;
                    requests.push(request);
                    replies.push((Command::outcomes(&more), reply));
                    commands.extend(more);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("ensemble_registry_batch_commands").record(commands.len() as f64);
        let raft = raft.clone();
        // Answered as the entry is applied (`answers`), or here if it never is on this node.
        let early = early_feeds.for_batch(&replies, &requests);
        let replies = Arc::new(Mutex::new(Some(replies)));
        let batch = Batch(commands, answers.on_apply(replies.clone()), early);
        tokio::spawn(async move {
            let _permit = permit;
            let result = raft.client_write(batch).await;
            let Some(replies) = replies.lock().take() else {
                return;
            };
            match result {
                Ok(response) => {
                    let mut outcomes = response.data.into_iter();
                    for (count, reply) in replies {
                        let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
                    }
                }
                Err(err) => {
                    let err = match err {
                        // Also after the entry went into this node's log (openraft answers so a
                        // write whose entry a lost lead leaves behind), which a later leader may
                        // still commit.
                        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                            ServerError::LostLead {
                                leader: forward.leader_node.map(|n| n.name),
                            }
                        }
                        other => ServerError::Raft(other.to_string()),
                    };
                    for (_, reply) in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn a_proposal_goes_to_raft_only_on_a_leader_and_is_otherwise_sent_on() {
        let nodes: std::collections::BTreeMap<u64, Voter> = [1, 2]
            .into_iter()
            .map(|id| {
                (
                    id,
                    Voter {
                        name: format!("n{id}"),
                    },
                )
            })
            .collect();
        let membership = openraft::Membership::new(vec![[1, 2].into_iter().collect()], nodes);
        let metrics = |state, current_leader| RaftServerMetrics {
            id: 1,
            vote: Vote::new_committed(3, 2),
            state,
            current_leader,
            membership_config: Arc::new(openraft::StoredMembership::new(
                Some(id(3, 1)),
                membership.clone(),
            )),
        };
        let named = |state, leader, heard| match not_leading(&metrics(state, leader), heard) {
            None => None,
            Some(ServerError::NotLeader { leader, follows }) => Some((leader, follows)),
            Some(other) => panic!("not a NotLeader: {other:?}"),
        };
        assert_eq!(named(ServerState::Leader, Some(1), false), None);
        assert_eq!(
            named(ServerState::Follower, Some(2), true),
            Some((Some("n2".into()), true))
        );
        assert_eq!(
            named(ServerState::Follower, Some(2), false),
            Some((None, true)),
            "a leader not heard from lately may be dead: not named"
        );
        assert_eq!(
            named(ServerState::Candidate, None, true),
            Some((None, true)),
            "no leader known: the client tries the others"
        );
        let mut outsider = metrics(ServerState::Learner, Some(2));
        outsider.id = 9;
        assert!(
            matches!(
                not_leading(&outsider, false),
                Some(ServerError::NotLeader {
                    leader: None,
                    follows: false
                })
            ),
            "a node the configuration does not count hears no leader, dead or alive"
        );
    }

    #[test]
    fn a_request_s_head_must_come_first_count_its_commands_and_name_its_sender() {
        let a = NodeId::new("a", 1);
        let put = || Command::Put {
            key: "k".into(),
            value: vec![1],
        };
        let head = |node: &NodeId, commands| Command::Request {
            node: node.clone(),
            id: 1,
            below: 1,
            commands,
        };
        assert_eq!(misplaced_head(&[head(&a, 2), put(), put()], &a), None);
        assert_eq!(misplaced_head(&[put()], &a), None, "no head: as before");
        let refused = [
            (vec![put(), head(&a, 0)], "not first"),
            (vec![head(&a, 2), put()], "counts 2 commands, and 1 follow"),
            (vec![head(&a, 1), head(&a, 0)], "not first"),
            (
                vec![head(&NodeId::new("b", 1), 1), put()],
                "node a#1 sent a request headed as node b#1's",
            ),
        ];
        for (commands, reason) in refused {
            let found = misplaced_head(&commands, &a).unwrap_or_default();
            assert!(found.contains(reason), "{commands:?}: {found:?}");
        }
    }

    #[test]
    fn a_proposal_acts_for_its_sender_only_and_never_expires_a_session() {
        let (a, b) = (NodeId::new("a", 1), NodeId::new("b", 1));
        let holder = |node: &NodeId| crate::state::Holder {
            node: node.clone(),
            id: 1,
        };
        let actor = |node: &NodeId| ensemble_runtime::remote::WireRef {
            id: ActorId::new(node.clone(), 7),
            msg_type: "m".into(),
        };
        let own = [
            Command::OpenSession {
                node: a.clone(),
                ttl_ms: 1_000,
            },
            Command::CloseSession { node: a.clone() },
            Command::Acquire {
                lock: "l".into(),
                holder: holder(&a),
                wait: true,
            },
            Command::Release {
                lock: "l".into(),
                holder: holder(&a),
            },
            Command::RegisterName {
                name: "n".into(),
                actor: actor(&a),
            },
            Command::JoinGroup {
                group: "g".into(),
                actor: actor(&a),
            },
            // Anyone's names and group entries may be let go of, and resources reserved on
            // any node.
            Command::UnregisterName {
                name: "n".into(),
                actor: actor(&b).id,
            },
            Command::LeaveGroup {
                group: "g".into(),
                actor: actor(&b).id,
            },
        ];
        assert_eq!(foreign_command(&own, &a), None);
        let refused = [
            (
                Command::ExpireSession { node: b.clone() },
                "only the registry's leader",
            ),
            (
                Command::ExpireSession { node: a.clone() },
                "only the registry's leader",
            ),
            (
                Command::OpenSession {
                    node: b.clone(),
                    ttl_ms: 1_000,
                },
                "for node b#1",
            ),
            (Command::CloseSession { node: b.clone() }, "for node b#1"),
            (
                Command::OpenSession {
                    node: NodeId::new("a", 2),
                    ttl_ms: 1_000,
                },
                "for node a#2",
            ),
            (
                Command::Acquire {
                    lock: "l".into(),
                    holder: holder(&b),
                    wait: false,
                },
                "for node b#1",
            ),
            (
                Command::Release {
                    lock: "l".into(),
                    holder: holder(&b),
                },
                "for node b#1",
            ),
            (
                Command::RegisterName {
                    name: "n".into(),
                    actor: actor(&b),
                },
                "for node b#1",
            ),
            (
                Command::JoinGroup {
                    group: "g".into(),
                    actor: actor(&b),
                },
                "for node b#1",
            ),
        ];
        for (command, reason) in refused {
            let found = foreign_command(&[own[0].clone(), command.clone()], &a).unwrap_or_default();
            assert!(found.contains(reason), "{command:?}: {found:?}");
        }
    }

    #[test]
    fn a_proposal_is_refused_beyond_what_one_log_entry_takes() {
        let limits = Limits::for_frame(super::super::limits::MIN_FRAME);
        let put = |bytes: usize| Command::Put {
            key: "k".into(),
            value: vec![0; bytes],
        };
        let head = |commands: usize| Command::Request {
            node: NodeId::new("a", 1),
            id: 1,
            below: 1,
            commands: commands as u32,
        };
        // As a client gathers them: within an entry's bytes, each within a command's.
        let fits: Vec<Command> = (0..3).map(|_| put(limits.entry / 4)).collect();
        assert!(approx_bytes(&fits) <= limits.entry);
        assert!(oversized_request(&fits, &limits).is_none());
        let headed = [vec![head(fits.len())], fits.clone()].concat();
        assert!(oversized_request(&headed, &limits).is_none());
        // Five such commands are each within a command's limit, but not together.
        let many: Vec<Command> = (0..5).map(|_| put(limits.entry / 4)).collect();
        assert!(limits.oversized(&many).is_none());
        match oversized_request(&many, &limits) {
            Some(ServerError::TooLarge { what, max, .. }) => {
                assert_eq!(
                    (what.as_str(), max),
                    ("a request of 5 commands", limits.entry)
                );
            }
            other => panic!("five commands of a quarter entry each: {other:?}"),
        }
        let tiny: Vec<Command> = (0..=MAX_BATCH)
            .map(|_| Command::Delete { key: "k".into() })
            .collect();
        assert!(approx_bytes(&tiny) <= Limits::for_frame(8 << 20).entry);
        match oversized_request(&tiny, &Limits::for_frame(8 << 20)) {
            Some(ServerError::Malformed(why)) => assert!(why.contains("at most 1024"), "{why}"),
            other => panic!("{} commands: {other:?}", tiny.len()),
        }
    }

    #[test]
    fn a_follower_tells_the_copies_only_of_entries_of_the_leaders_current_term() {
        let vote = Vote::new_committed(4, 1);
        assert_eq!(
            notice(Some(id(4, 7)), Some(id(4, 7)), &vote),
            Some(id(4, 7))
        );
        assert_eq!(
            notice(Some(id(2, 6)), Some(id(2, 6)), &vote),
            None,
            "an entry of the leader's term 2, sent again in term 4, may still be replaced"
        );
        assert_eq!(
            notice(Some(id(4, 7)), Some(id(4, 5)), &vote),
            None,
            "the follower took only part of the entries"
        );
        assert_eq!(notice(None, Some(id(4, 7)), &vote), None, "a heartbeat");
    }
}
