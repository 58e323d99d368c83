//! Raft's RPCs, carried as asks to the registry server actor of the target node over the
//! runtime's transport (QUIC with mutual TLS).
//!
//! # Commit notices
//!
//! After every commit, openraft 0.9 sends each idle follower an AppendEntries with no entries,
//! only to tell it the new commit index, and sends that follower nothing else until the answer
//! is back. Under load the next entries arrive while it is out, and then only the other
//! followers can take them: with three voters, one fsync instead of the faster of two decides
//! the next commit, and the leader spends a receive and a hand-off on every answer.
//!
//! Such an AppendEntries has only one possible answer while nothing has changed: success. A
//! connection therefore answers openraft with success itself when:
//! - the connection's last AppendEntries carried entries and succeeded less than
//!   [`NOTICE_WINDOW`] ago, in the same vote;
//! - the new one follows exactly the last entry that one acknowledged.
//!
//! Whether it sends anything depends on the follower. A follower whose node waits on its copy of
//! the state (a lock waiter, which is granted from that copy; a write of its own, which is answered
//! once the copy shows it; a watch, told of changes as the copy applies them) says so in its
//! answers, and is sent the AppendEntries as a commit notice ([`ServerMsg::CommitNotice`]): it
//! hands it to its Raft like any AppendEntries but does not answer. Any other follower is sent
//! nothing: it learns of the commit with the leader's next message, the next entries or at the
//! latest the next heartbeat, as in plain Raft. That saves two datagrams per commit with three
//! voters, and a round of applying on each follower, whenever the writers are elsewhere. The wish
//! is known in time: a node counts itself as waiting before its write or lock request leaves it, so
//! the follower's answer to the AppendEntries that carries the request already says so, and
//! openraft sends that follower nothing more before the answer is back.
//!
//! Nothing that needs a follower's answer rests on a notice or on its absence: entries always
//! travel in AppendEntries that are answered, so every commit still counts real acknowledgements,
//! and the leader's lease ([`LeaderLease`]) counts only those. A follower that has seen a higher
//! vote in the meantime says so in its answer to the next AppendEntries with entries, or to the
//! next heartbeat: an idle leader's heartbeats come a heartbeat interval apart, longer than the
//! window, so they are always answered. openraft's read-index round (`Raft::ensure_linearizable`)
//! uses connections of its own, which have no last AppendEntries, so it is always answered too.
//! Notices and AppendEntries to one follower travel in order (one actor, one connection); one
//! arriving late carries a commit index the follower already has, and openraft ignores it.
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::cluster::Cluster;
use ensemble_runtime::hashing::HashMap;
use ensemble_runtime::{ActorRef, AskError};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Entry, EntryPayload, LogId, Vote};
use parking_lot::Mutex;

use super::lease::LeaderLease;
use super::log_store::LogStore;
use super::types::{Batch, Early, TypeConfig, Voter};
use crate::limits::{Limits, approx_bytes};
use crate::server::protocol::{FeedMsg, SERVER_NAME, ServerMsg};

/// Finds the registry server of a node by name, and remembers it.
#[derive(Clone)]
pub(crate) struct Servers {
    cluster: Cluster,
    known: Arc<Mutex<HashMap<String, ActorRef<ServerMsg>>>>,
}

/// Why a node's server could not be found.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the registry server of node {node}: {reason}")]
pub(crate) struct NoServer {
    pub(crate) node: String,
    pub(crate) reason: String,
}

impl Servers {
    pub(crate) fn new(cluster: Cluster) -> Self {
        Servers {
            cluster,
            known: Arc::default(),
        }
    }

    /// The server of the node named `name` (this node, or a connected member).
    pub(crate) async fn get(&self, name: &str) -> Result<ActorRef<ServerMsg>, NoServer> {
        if let Some(server) = self.known.lock().get(name) {
            return Ok(server.clone());
        }
        let node = self.cluster.node();
        let server = if node.id().name() == name {
            node.whereis_local::<ServerMsg>(SERVER_NAME)
                .map_err(|e| NoServer {
                    node: name.to_owned(),
                    reason: e.to_string(),
                })?
        } else {
            let member = self
                .cluster
                .members()
                .into_iter()
                .find(|m| m.node.name() == name)
                .ok_or_else(|| NoServer {
                    node: name.to_owned(),
                    reason: "it is not connected".into(),
                })?;
            self.cluster
                .whereis::<ServerMsg>(&member.node, SERVER_NAME)
                .await
                .map_err(|e| NoServer {
                    node: name.to_owned(),
                    reason: e.to_string(),
                })?
        };
        self.known.lock().insert(name.to_owned(), server.clone());
        Ok(server)
    }

    /// The server of `name` if it was looked up before, without asking anyone.
    pub(crate) fn cached(&self, name: &str) -> Option<ActorRef<ServerMsg>> {
        self.known.lock().get(name).cloned()
    }

    /// Forgets a server that failed to answer (its node may have restarted).
    pub(crate) fn forget(&self, name: &str) {
        self.known.lock().remove(name);
    }
}

/// How recent an answered AppendEntries with entries must be for an empty one to go as a
/// commit notice (see the module docs): well under the heartbeat interval (50 ms by default).
const NOTICE_WINDOW: Duration = Duration::from_millis(10);

/// How long after a voter became unreachable the leader tries it every heartbeat interval.
const QUICK_RETRIES: Duration = Duration::from_secs(2);
/// How often it tries after that: openraft's default.
const SLOW_RETRY: Duration = Duration::from_millis(500);

/// Opens Raft's connections.
pub(crate) struct Network {
    pub(crate) servers: Servers,
    /// Where connections record the followers' acknowledgements.
    pub(crate) lease: LeaderLease,
    /// This node's log: a follower's acknowledgement reaches Raft only once the entries it
    /// acknowledges are on this node's disk too.
    pub(crate) log: LogStore<TypeConfig>,
    /// How long a connection waits before it tries an unreachable voter again.
    pub(crate) retry: Duration,
    /// How many bytes of entries one AppendEntries may carry.
    pub(crate) limits: Limits,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Voter) -> Connection {
        Connection {
            target,
            name: node.name.clone(),
            servers: self.servers.clone(),
            lease: self.lease.clone(),
            log: self.log.clone(),
            retry: self.retry,
            limits: self.limits,
            acknowledged: None,
        }
    }
}

/// Raft's connection to one voter.
pub(crate) struct Connection {
    target: u64,
    name: String,
    servers: Servers,
    lease: LeaderLease,
    log: LogStore<TypeConfig>,
    retry: Duration,
    limits: Limits,
    /// The last AppendEntries with entries that the follower acknowledged.
    acknowledged: Option<Acknowledged>,
}

/// An AppendEntries with entries that a follower acknowledged.
#[derive(Clone, Copy)]
struct Acknowledged {
    vote: Vote<u64>,
    /// Its last entry.
    last: LogId<u64>,
    /// When it was sent.
    sent: tokio::time::Instant,
    /// Whether the follower said, in this answer or a later one, that it wants each commit at
    /// once ([`Appended::wants_notices`](crate::server::protocol::Appended::wants_notices)).
    wants_notices: bool,
}

impl Acknowledged {
    /// Whether `rpc` can go as a commit notice (see the module docs).
    fn covers(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        rpc.entries.is_empty()
            && rpc.vote == self.vote
            && rpc.prev_log_id == Some(self.last)
            && self.sent.elapsed() < NOTICE_WINDOW
    }
}

/// How many of `entries`, from the first, fit in `max` bytes (at least one: an entry is never
/// larger than a log entry's limit, well under an AppendEntries').
fn entries_that_fit(entries: &[Entry<TypeConfig>], max: usize) -> usize {
    let mut bytes = 0;
    let fit = entries
        .iter()
        .take_while(|entry| {
            bytes += match &entry.payload {
                EntryPayload::Normal(batch) => approx_bytes(&batch.0),
                EntryPayload::Membership(_) => 1024,
                EntryPayload::Blank => 0,
            } + 64;
            bytes <= max
        })
        .count();
    fit.max(1)
}

/// The copies on other nodes that learn of `entries` before they commit (`client::early`),
/// each once.
fn copies_to(entries: &[Entry<TypeConfig>]) -> Vec<ActorRef<FeedMsg>> {
    let mut mirrors: Vec<ActorRef<FeedMsg>> = Vec::new();
    for entry in entries {
        if let EntryPayload::Normal(Batch(_, _, Early(Some(feeds)))) = &entry.payload {
            for copy in feeds.iter() {
                let mirror = &copy.feed.mirror;
                if !mirrors.iter().any(|known| known.id() == mirror.id()) {
                    mirrors.push(mirror.clone());
                }
            }
        }
    }
    mirrors
}

impl Connection {
    async fn call<T: Send + 'static, E: std::error::Error + Send + 'static>(
        &self,
        make: impl FnOnce(ensemble_runtime::ReplyTo<Result<T, RaftError<u64, E>>>) -> ServerMsg,
        timeout: Duration,
    ) -> Result<T, RPCError<u64, Voter, RaftError<u64, E>>>
    where
        RaftError<u64, E>: std::error::Error,
    {
        let lookup = tokio::time::timeout(timeout, self.servers.get(&self.name))
            .await
            .map_err(|_| NoServer {
                node: self.name.clone(),
                reason: format!("no answer to the lookup within {timeout:?}"),
            });
        let server = lookup
            .and_then(|found| found)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        match server.ask(make, timeout).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(RPCError::RemoteError(RemoteError::new(self.target, err))),
            // A connection that ended is most likely dialed again at once: the call may go
            // again without backing off (a dead voter's next call finds out).
            Err(err @ AskError::ConnectionLost { .. }) => {
                Err(RPCError::Network(NetworkError::new(&err)))
            }
            Err(err) => {
                self.servers.forget(&self.name);
                Err(match err {
                    AskError::Timeout { .. } => RPCError::Network(NetworkError::new(&err)),
                    _ => RPCError::Unreachable(Unreachable::new(&err)),
                })
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    /// A voter restarted soon after it became unreachable hears from the leader within a
    /// heartbeat interval (openraft's default waits 500 ms): it does not stand for election
    /// before a leader replicates to it or it learns that the registry has none
    /// (`client::session::watch_standing`), and it does not resume a lead
    /// (`LogStore::report_own_appends_early`). After [`QUICK_RETRIES`], tries (each logged by
    /// openraft) come at openraft's pace again.
    fn backoff(&self) -> Backoff {
        let quick = (QUICK_RETRIES.as_millis() / self.retry.as_millis().max(1)) as usize;
        Backoff::new(std::iter::repeat_n(self.retry, quick).chain(std::iter::repeat(SLOW_RETRY)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Voter, RaftError<u64>>> {
        // More than a frame takes would be refused by the transport, again on every retry:
        // openraft sends fewer entries at once after this answer.
        let fit = entries_that_fit(&rpc.entries, self.limits.append);
        if fit < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        // A follower applies what the commit index covers: it must be on this node's disk.
        if let Some(committed) = rpc.leader_commit
            && let Err(e) = self.log.durable_through(committed.index).await
        {
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if let Some(acked) = self.acknowledged.filter(|acked| acked.covers(&rpc)) {
            if !acked.wants_notices {
                // The commit index goes with the next AppendEntries instead.
                return Ok(AppendEntriesResponse::Success);
            }
            if let Some(server) = self.servers.cached(&self.name)
                && server
                    .try_tell(ServerMsg::CommitNotice(rpc.clone()))
                    .is_ok()
            {
                return Ok(AppendEntriesResponse::Success);
            }
        }
        // Taken before sending: the follower accepted the vote no earlier than this.
        let (vote, sent) = (rpc.vote, tokio::time::Instant::now());
        let carried = rpc.entries.last().map(|entry| entry.log_id);
        // The last entry a success acknowledges (this node's own may not be on disk yet).
        let last = carried.or(rpc.prev_log_id).map_or(0, |id| id.index);
        let tell = copies_to(&rpc.entries);
        let answer = self
            .call(
                |reply| ServerMsg::AppendEntries(rpc, reply, tell),
                option.hard_ttl(),
            )
            .await;
        let wants_notices = answer.as_ref().is_ok_and(|answer| answer.wants_notices);
        let refuses_votes_for = answer
            .as_ref()
            .map_or(Duration::ZERO, |answer| answer.refuses_votes_for);
        let answer = answer.map(|answer| answer.response);
        if let Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) =
            &answer
        {
            self.lease
                .acknowledged(self.target, vote, sent, refuses_votes_for);
            if let Err(e) = self.log.durable_through(last).await {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        }
        self.acknowledged = match (&answer, carried) {
            (Ok(AppendEntriesResponse::Success), Some(last)) => Some(Acknowledged {
                vote,
                last,
                sent,
                wants_notices,
            }),
            // An empty AppendEntries that succeeded changes nothing a notice relies on, but
            // the follower's wish may have changed.
            (Ok(AppendEntriesResponse::Success), None) => {
                self.acknowledged.map(|acked| Acknowledged {
                    wants_notices,
                    ..acked
                })
            }
            _ => None,
        };
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Voter, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(
            |reply| ServerMsg::InstallSnapshot(rpc.into(), reply),
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Voter, RaftError<u64>>> {
        self.call(|reply| ServerMsg::Vote(rpc, reply), option.hard_ttl())
            .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn empty(vote: Vote<u64>, prev: LogId<u64>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote,
            prev_log_id: Some(prev),
            entries: Vec::new(),
            leader_commit: Some(prev),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_empty_append_right_after_an_acknowledged_one_goes_as_a_notice() {
        let vote = Vote::new_committed(3, 1);
        let acked = Acknowledged {
            vote,
            last: log_id(3, 10),
            sent: tokio::time::Instant::now(),
            wants_notices: true,
        };
        assert!(acked.covers(&empty(vote, log_id(3, 10))));

        let mut with_entries = empty(vote, log_id(3, 10));
        with_entries.entries.push(Entry {
            log_id: log_id(3, 11),
            payload: EntryPayload::Blank,
        });
        assert!(!acked.covers(&with_entries), "entries need an answer");
        assert!(
            !acked.covers(&empty(vote, log_id(3, 9))),
            "it must follow the acknowledged entry"
        );
        assert!(
            !acked.covers(&empty(Vote::new_committed(4, 1), log_id(3, 10))),
            "a new vote needs an answer"
        );
        tokio::time::advance(NOTICE_WINDOW).await;
        assert!(
            !acked.covers(&empty(vote, log_id(3, 10))),
            "a heartbeat of an idle leader needs an answer"
        );
    }
}
