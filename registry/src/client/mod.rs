//! The registry as a node uses it: the [`Registry`] handle, the node's session, its local copy
//! of the state, and leases.
//!
//! # Calls
//!
//! Writes and linearizable reads go to the leader. A call starts with the leader it last heard
//! of; a server that is not the leader names the one it knows, and the call follows it, until
//! the call's timeout. While the node's session is open, each request to the leader is headed
//! by its number ([`Command::Request`]) and the registry applies it once however often it is
//! sent, so a write whose request may have reached a failing leader is sent again, whatever it
//! is ([`Resend`]). Without a session (before it opens, after it ends) only idempotent commands
//! are sent again (everything but compare-and-set; a put or delete sent again whose first
//! attempt took effect then takes effect twice); a compare-and-set ends with
//! [`RegistryError::Unknown`]. Writes made at once on one node share requests to the leader
//! (`proposer`: client-side group commit).

mod early;
mod handover;
pub(crate) mod lease;
pub(crate) mod mirror;
pub(crate) mod proposer;
pub(crate) mod session;
mod untyped;
mod vote_move;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ensemble_runtime::cluster::{Cluster, MemberStatus};
use ensemble_runtime::hashing::HashMap;
use ensemble_runtime::remote::RemoteMessage;
use ensemble_runtime::{ActorId, ActorRef, AskError, Node, NodeId, ReplyTo, UntypedRef};
use openraft::RaftMetrics;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use lease::LeaseState;
pub use lease::{LEASE_RELEASED, Lease};
use mirror::View;

use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::limits::Limits;
use crate::raft::Voter;
use crate::raft::network::Servers;
use crate::server::Leadership;
use crate::server::protocol::{Answer, Query, ServerError, ServerMsg};
use crate::state::{Command, Effect, Holder, KeyValue, MAX_VOTERS, Outcome, RegistryState};

/// How long a write waits for this node's copy to show it before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// How long a node that failed to answer is tried last.
const SILENT_FOR: Duration = Duration::from_secs(2);

/// What the handle, the mirror and the session tasks share.
pub(crate) struct Shared {
    pub(crate) cluster: Cluster,
    pub(crate) config: RegistryConfig,
    pub(crate) servers: Servers,
    pub(crate) view: RwLock<View>,
    /// Bumped at each new subscription: feed messages of an older one are dropped.
    pub(crate) epoch: AtomicU64,
    /// The leader last heard of.
    pub(crate) leader: Mutex<Option<String>>,
    /// Nodes whose server failed to answer an attempt lately, and when: tried last for
    /// [`SILENT_FOR`], so that a leader that died with its connection still open costs one
    /// attempt's timeout, not one per call.
    silent: Mutex<HashMap<String, Instant>>,
    /// Waiters of this node queued for a lock, by (lock, holder id).
    pub(crate) waiters: Mutex<HashMap<(String, u64), oneshot::Sender<u64>>>,
    /// Leases this node holds, by (lock, holder id).
    pub(crate) leases: Mutex<HashMap<(String, u64), Arc<LeaseState>>>,
    /// The tasks that unregister a name or leave a group when its actor ends, by what they
    /// release, with a number that tells a task its own entry from a later one.
    pub(crate) on_exit: Mutex<HashMap<ExitRelease, (u64, tokio::task::AbortHandle)>>,
    pub(crate) next_on_exit: AtomicU64,
    pub(crate) effects: broadcast::Sender<Effect>,
    /// Set once this node's part in the registry is over: it left, its session expired, or
    /// its copy stopped with the node. Watches end then ([`Shared::end`]).
    ended: watch::Sender<bool>,
    /// Set when this node fences itself (`fence`), cleared when a renewal makes its session
    /// valid again.
    pub(crate) fenced: AtomicBool,
    /// Until when this node counts its session valid: (when its last acknowledged keepalive
    /// was sent) + [`RegistryConfig::session_validity`]. Kept by `session::keep`.
    pub(crate) valid_until: Mutex<Instant>,
    /// Signalled each time this node's copy applies a change.
    pub(crate) applied: tokio::sync::Notify,
    /// Writes of this node under way, from proposal until this node's copy shows them.
    proposing: AtomicUsize,
    pub(crate) expired: AtomicBool,
    /// This node left ([`Registry::leave`]): its session is closed for good, and nothing
    /// renews or reopens it.
    pub(crate) left: AtomicBool,
    /// [`Registry::leave`] has begun: the session is still renewed while the actors bound to
    /// leases end, but a renewal no longer unfences the node.
    pub(crate) leaving: AtomicBool,
    /// The leave is over (its session closed, or the attempt given up): calls still under way
    /// end at their next try instead of trying until their timeout, each holding the
    /// registry, and through it the node's cluster service and its address.
    closed: AtomicBool,
    next_holder: AtomicU64,
    /// Proposals queued for the next request to the leader.
    pub(crate) proposer: proposer::Proposer,
    /// The number of this node's next request to the leader.
    next_request: AtomicU64,
    /// Requests this node's copy may answer first, as it applies a batch sent early
    /// (`early`), by number.
    pub(crate) early_answers: Mutex<HashMap<u64, oneshot::Sender<Vec<Outcome>>>>,
    /// This node's part as the registry's leader, when it leads.
    leadership: Leadership,
    /// What this node's Raft reports of itself ([`Registry::raft_status`]).
    raft_metrics: watch::Receiver<RaftMetrics<u64, Voter>>,
    /// This node's Raft: whether it stands for election is decided in `session`, and held
    /// off while the node hands its vote over ([`Registry::leave`]).
    pub(crate) raft: openraft::Raft<crate::raft::TypeConfig>,
    /// Whether this node's Raft stands for election: what `session::watch_standing` decided,
    /// and whether `leave` holds it back. Under one lock, with the Raft's switch set under it,
    /// so that the two never leave the switch at odds with what they decided.
    standing: Mutex<Standing>,
    /// Whether the leader said this node does not vote although its own log says it does
    /// (`session::LocalVoter::retired`, the same flag): its copy then follows the leader.
    pub(crate) retired: Arc<AtomicBool>,
}

/// Whether this node's Raft stands for election ([`Shared::set_stands`],
/// [`Shared::hold_standing`]).
#[derive(Default)]
struct Standing {
    /// `session::watch_standing` decided that it stands.
    stands: bool,
    /// `leave` holds it back: its vote moves, or moved.
    held: bool,
}

/// Why the `outcomes` of a request of node `me` leave open whether it took effect, if they
/// do: the registry could not tell an attempt sent again from a new one. It no longer
/// remembered the request (`Forgotten`), or, for a write that may not take effect twice
/// (`Resend::Once`), refused it because `me`'s session had ended (`NoSession`) after an
/// earlier attempt that may have taken effect (`maybe_taken`). (An idempotent write so
/// refused says the session ended, as it did.) The second needs an attempt queued at the
/// leader behind the session's expiry: the cluster refuses the connections of a node it
/// counts down.
fn unknown_after(outcomes: &[Outcome], maybe_taken: bool, me: &NodeId) -> Option<&'static str> {
    if outcomes.contains(&Outcome::Forgotten) {
        return Some(
            "the registry no longer remembers this node's request, sent again (it waited \
             behind too many of the node's later requests)",
        );
    }
    let refused = |o: &Outcome| matches!(o, Outcome::NoSession { node } if node == me);
    (maybe_taken && outcomes.iter().any(refused)).then_some(
        "this node's session ended after an attempt that may have taken effect, and the \
         registry refused the request sent again",
    )
}

/// The number of a node's first request: the time in microseconds since the Unix epoch, so
/// that a node started again in the incarnation it had (`NodeConfig::incarnation` set by hand)
/// numbers its requests after those of its earlier run, which the registry may remember
/// ([`Command::Request`]): such a node would have to make more than a request a microsecond
/// for its numbers to meet.
fn first_request_number() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_micros() as u64)
}

/// Whether a call is sent again after an attempt that may have taken effect without its
/// answer reaching this node (no answer in time, the connection ended, the leader lost its
/// lead after the entry went into its log, Raft failed on the leader after the entry may have
/// been replicated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Yes: taking effect twice leaves the same state (reads, keepalives, puts; see
    /// docs/registry.md for what a watch then sees).
    Idempotent,
    /// Yes: the registry applies it once however often it is sent (a request headed by
    /// [`Command::Request`]). A call that ends without an answer after such an attempt says
    /// its outcome is unknown.
    Once,
    /// No: the call ends at once, its outcome unknown.
    Never,
}

/// Forgets a request's early answer however its call ends, an abandoned one included.
struct ForgetEarlyAnswer<'a> {
    shared: &'a Shared,
    request: u64,
}

impl Drop for ForgetEarlyAnswer<'_> {
    fn drop(&mut self) {
        self.shared.early_answers.lock().remove(&self.request);
    }
}

/// How long [`release_until_taken`] waits after a failure: doubled after each, from
/// `RELEASE_RETRY_FIRST` up to `RELEASE_RETRY_MAX`.
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(100);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Whether `err` says this node's session is over, which releases all it held: nothing is
/// left to give back.
fn session_ended(err: &RegistryError) -> bool {
    matches!(
        err,
        RegistryError::SessionExpired(_) | RegistryError::NoSession(_)
    )
}

/// Waits until each of `killed` (actors bound to this node's leases, just killed) has ended,
/// for a session TTL at most: the time the registry would take to release their locks had
/// the node died. Names each that did not end by then. A kill ends a local actor at its next
/// `.await`; one of another node ends once its node applies the kill (sent again until it
/// does), and counts as ended at once if no connection to its node is up when the wait
/// begins, or when its node goes down.
async fn wait_for_ends(me: &NodeId, killed: Vec<UntypedRef>, ttl: Duration) {
    let deadline = Instant::now() + ttl;
    for actor in killed {
        if tokio::time::timeout_at(deadline, actor.wait_for_exit())
            .await
            .is_err()
        {
            tracing::warn!(node = %me, actor = %actor.id(), ?ttl, "an actor bound to a lease did not end within the session TTL of its kill; its lock goes on without it");
        }
    }
}

/// Proposes `release` (of an abandoned acquire, of the leases a fenced node gives up, or of
/// the name or group membership of an actor that ended),
/// after `first` and then again after each failure, until it is committed, this node's
/// session ends, or the registry handle is dropped.
async fn release_until_taken(shared: std::sync::Weak<Shared>, release: Command, first: Duration) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).clamp(RELEASE_RETRY_FIRST, RELEASE_RETRY_MAX);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.expired.load(Ordering::Acquire) {
            return;
        }
        match shared.propose_one(release.clone(), true).await {
            Ok(_) => {
                tracing::info!(
                    ?release,
                    "the registry took a release an earlier attempt could not"
                );
                return;
            }
            Err(err) if session_ended(&err) => return,
            Err(err) => tracing::debug!(?release, %err, "a release is not taken yet"),
        }
    }
}

impl Shared {
    /// Whether something on this node waits on its copy of the state: a write of its own
    /// (answered once the copy shows it), a lock waiter (granted from the copy), or a watch or
    /// subscription to changes (told as the copy applies them). A voter then wants each commit
    /// at once, not with the leader's next message.
    pub(crate) fn waits_on_copy(&self) -> bool {
        self.proposing.load(Ordering::Acquire) > 0
            || self.effects.receiver_count() > 0
            || !self.waiters.lock().is_empty()
    }

    fn me(&self) -> &ensemble_runtime::NodeId {
        self.cluster.node().id()
    }

    /// Whether `node` is this node or a member of the cluster, in that incarnation.
    fn is_live(&self, node: &NodeId) -> bool {
        node == self.me() || self.cluster.members().iter().any(|m| &m.node == node)
    }

    /// Whether `node`'s server failed to answer an attempt within the last [`SILENT_FOR`].
    fn silent_lately(&self, node: &str) -> bool {
        self.silent
            .lock()
            .get(node)
            .is_some_and(|since| since.elapsed() < SILENT_FOR)
    }

    /// Where to send a call: the leader if known and not silent lately, else the members in
    /// turn, suspected ones (heartbeats late: probably dead) and silent ones last.
    fn candidates(&self) -> Vec<String> {
        let silent = {
            let mut silent = self.silent.lock();
            silent.retain(|_, since| since.elapsed() < SILENT_FOR);
            silent.clone()
        };
        let mut members: Vec<(bool, bool, String)> = self
            .cluster
            .members()
            .into_iter()
            .map(|m| {
                let name = m.node.name().to_owned();
                (
                    silent.contains_key(&name),
                    m.status == MemberStatus::Suspect,
                    name,
                )
            })
            .collect();
        let me = self.me().name().to_owned();
        members.push((silent.contains_key(&me), false, me));
        members.sort();
        let mut names: Vec<String> = members.into_iter().map(|(_, _, name)| name).collect();
        // A leader that failed to answer lately keeps its place among the silent: the
        // followers that name it may not have elected another yet.
        if let Some(leader) = self.leader.lock().clone()
            && !silent.contains_key(&leader)
        {
            names.retain(|n| n != &leader);
            names.insert(0, leader);
        }
        names
    }

    /// Sends a request to the leader, following redirections until `timeout`.
    pub(crate) async fn call<T: RemoteMessage>(
        &self,
        // Described only when the call fails: formatting a command costs more than sending it.
        what: &(dyn Fn() -> String + Sync),
        make: impl Fn(ReplyTo<Result<T, ServerError>>) -> ServerMsg,
        timeout: Duration,
        resend: Resend,
    ) -> Result<T, RegistryError> {
        self.call_noting(what, make, timeout, resend, &AtomicBool::new(false))
            .await
    }

    /// [`call`](Self::call), setting `maybe_taken` once an attempt may have reached the log
    /// without its answer reaching this node.
    async fn call_noting<T: RemoteMessage>(
        &self,
        what: &(dyn Fn() -> String + Sync),
        make: impl Fn(ReplyTo<Result<T, ServerError>>) -> ServerMsg,
        timeout: Duration,
        resend: Resend,
        maybe_taken: &AtomicBool,
    ) -> Result<T, RegistryError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no registry server answered");
        let taken = || maybe_taken.store(true, Ordering::Relaxed);
        let unknown = |reason: String| RegistryError::Unknown {
            what: what(),
            reason,
        };
        let mut candidates = self.candidates().into_iter();
        // Leaders named by NotLeader answers this round: each starts the round over once at
        // most, so two nodes naming each other (a stale view, a partition) cannot keep the
        // call spinning without ever waiting.
        let mut redirected: Vec<String> = Vec::new();
        // Whether a node other than this one that follows the Raft configuration (a leader
        // replicates to it) answered in this round without naming the leader.
        let mut followers_answered = false;
        loop {
            let maybe_taken = || maybe_taken.load(Ordering::Relaxed);
            if self.closed.load(Ordering::Acquire) {
                if maybe_taken() && resend == Resend::Once {
                    return Err(unknown(format!(
                        "node {} left the cluster before an attempt that may have taken \
                         effect was answered",
                        self.me()
                    )));
                }
                return Err(RegistryError::NoSession(self.me().clone()));
            }
            let now = Instant::now();
            if now >= deadline && maybe_taken() && resend == Resend::Once {
                return Err(unknown(format!(
                    "no answer within {timeout:?}, and an attempt may have taken effect (the \
                     last: {last})"
                )));
            }
            if now >= deadline {
                return Err(RegistryError::Timeout {
                    what: what(),
                    timeout,
                    last,
                });
            }
            let target = match candidates.next() {
                Some(target) => target,
                None => {
                    // Everyone tried: wait a little for an election, then again.
                    tokio::time::sleep(Duration::from_millis(20).min(deadline - now)).await;
                    candidates = self.candidates().into_iter();
                    redirected.clear();
                    followers_answered = false;
                    continue;
                }
            };
            // A node that failed to answer lately, which the followers that answered in this
            // round do not name as the leader, is most likely dead: a leader killed, whose
            // followers stopped naming it once they stopped hearing from it. Trying it again
            // would hold the call for a whole attempt while they elect another; they are asked
            // again instead. Named by one that hears from it, it is tried; and it is tried when
            // no follower answered (only nodes that do not follow, which cannot tell).
            if followers_answered && self.silent_lately(&target) {
                continue;
            }
            // One attempt never takes the whole timeout: a leader that died without its
            // connection closing yet must not keep the call from the next one.
            let attempt = || {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(self.attempt_timeout(timeout))
            };
            let lookup = attempt();
            let server = match tokio::time::timeout(lookup, self.servers.get(&target)).await {
                Ok(Ok(server)) => server,
                Ok(Err(err)) => {
                    last = err.to_string();
                    continue;
                }
                Err(_) => {
                    last = format!("node {target} did not answer a lookup within {lookup:?}");
                    self.silent.lock().insert(target, Instant::now());
                    continue;
                }
            };
            let answer = server.ask(&make, attempt()).await;
            if matches!(
                answer,
                Ok(Err(ServerError::LostLead { .. } | ServerError::Raft(_)))
            ) {
                // The entry went into the leader's log, or Raft failed on the leader after it
                // may have been replicated: a later leader may still commit it.
                taken();
            }
            if answer.is_ok() {
                self.silent.lock().remove(&target);
            }
            if target != self.me().name()
                && matches!(
                    answer,
                    Ok(Err(
                        ServerError::NotLeader { follows: true, .. } | ServerError::LostLead { .. }
                    ))
                )
            {
                followers_answered = true;
            }
            match answer {
                Ok(Ok(answer)) => {
                    *self.leader.lock() = Some(target);
                    return Ok(answer);
                }
                Ok(Err(ServerError::LostLead { .. })) if resend == Resend::Never => {
                    return Err(unknown(format!(
                        "node {target} lost its lead before the request committed"
                    )));
                }
                Ok(Err(
                    ServerError::NotLeader { leader, .. } | ServerError::LostLead { leader },
                )) => {
                    last = format!("node {target} is not the leader");
                    if let Some(leader) = leader.filter(|l| l != &target) {
                        // A server names a leader it heard from lately, or the one whose later
                        // vote took its own lead: alive, whatever this node saw of it.
                        self.silent.lock().remove(&leader);
                        *self.leader.lock() = Some(leader.clone());
                        if !redirected.contains(&leader) {
                            redirected.push(leader);
                            candidates = self.candidates().into_iter();
                            followers_answered = false;
                        }
                    } else {
                        *self.leader.lock() = None;
                    }
                }
                Ok(Err(err)) => last = refused(err, &target, resend, what)?,
                Err(AskError::Timeout { after, .. }) if resend == Resend::Never => {
                    // One attempt's wait, not the call's timeout: the attempt is cut short so
                    // that a dead leader does not take the whole call (see `attempt`).
                    return Err(unknown(format!(
                        "node {target} did not answer within {after:?} (one attempt's share \
                         of the call's {timeout:?})"
                    )));
                }
                Err(err @ AskError::ConnectionLost { .. }) => {
                    // The connection ended, most likely closed and dialed again at once;
                    // were the server's node dead, the next attempt finds out. The request
                    // may have been handled: a write that may not be sent again is reported
                    // as unknown, as after a timeout.
                    if resend == Resend::Never {
                        return Err(unknown(err.to_string()));
                    }
                    taken();
                    last = err.to_string();
                }
                Err(err) => {
                    self.servers.forget(&target);
                    self.silent.lock().insert(target.clone(), Instant::now());
                    *self.leader.lock() = None;
                    let unsent = matches!(err, AskError::Unreachable { .. });
                    if resend == Resend::Never && !unsent {
                        return Err(unknown(err.to_string()));
                    }
                    if !unsent {
                        taken();
                    }
                    last = err.to_string();
                }
            }
        }
    }

    /// One keepalive of this node's session.
    pub(crate) async fn keepalive(&self, timeout: Duration) -> Result<(), RegistryError> {
        let me = self.me().clone();
        self.call(
            &|| "keepalive".to_owned(),
            |reply| ServerMsg::KeepAlive(me.clone(), reply),
            timeout,
            Resend::Idempotent,
        )
        .await
    }

    /// How large this node lets what it sends to the registry grow.
    pub(crate) fn limits(&self) -> Limits {
        Limits::for_frame(self.cluster.max_frame_size())
    }

    /// How long one attempt of a call may take: a fraction of the session TTL (keepalives must
    /// find a new leader well within it), but never more than the call's own timeout.
    fn attempt_timeout(&self, timeout: Duration) -> Duration {
        (self.config.session_ttl / 4)
            .max(Duration::from_millis(100))
            .min(timeout)
    }

    /// Commits commands, returning their outcomes, with the request to the leader bounded by
    /// `timeout` (the request timeout, or less: see [`Registry::lock`]).
    async fn propose_within(
        &self,
        commands: Vec<Command>,
        idempotent: bool,
        timeout: Duration,
    ) -> Result<Vec<Outcome>, RegistryError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let limits = self.limits();
        if let Some((what, bytes)) = limits.oversized(&commands) {
            let max = limits.command;
            return Err(RegistryError::TooLarge { what, bytes, max });
        }
        // From before the proposal leaves: a voter's answers to the leader then say that this
        // node wants the commit at once (`waits_on_copy`).
        let _proposing = Proposing::start(&self.proposing);
        // Kept for an answer `Unchanged` (below), which puts, locks and keepalives, the
        // frequent ones, never get.
        let kept: Vec<(usize, Command)> = commands
            .iter()
            .enumerate()
            .filter(|(_, c)| RegistryState::may_answer_unchanged(c))
            .map(|(i, c)| (i, c.clone()))
            .collect();
        let outcomes = proposer::propose(self, commands, idempotent, timeout).await?;
        // Read your writes: answer once this node's copy shows what the commands changed, so
        // a cached read right after a write sees it. An `Unchanged` (a retried register or
        // join whose first attempt committed unanswered, say) has no revision to wait for:
        // its wait is for the copy to show what the command asked for.
        let unchanged: Vec<&Command> = kept
            .iter()
            .filter(|(i, _)| outcomes.get(*i) == Some(&Outcome::Unchanged))
            .map(|(_, c)| c)
            .collect();
        if !unchanged.is_empty() {
            self.wait_shown(&unchanged).await;
        }
        let revision = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Done { revision } => Some(*revision),
                Outcome::Granted { token } => Some(*token),
                _ => None,
            })
            .max();
        if let Some(revision) = revision {
            self.wait_applied(revision).await;
        }
        Ok(outcomes)
    }

    /// One request to the leader carrying `commands`; `what` describes it if it fails.
    pub(crate) async fn send_proposal(
        &self,
        commands: &[Command],
        idempotent: bool,
        timeout: Duration,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<Vec<Outcome>, RegistryError> {
        let (answer, answered_early) = oneshot::channel();
        // The lowest number of this node's requests still under way, this one included: no
        // request numbered lower will be sent again. Numbered under the lock, so that a
        // request numbered lower is among them by the time a later one looks.
        let (request, below) = {
            let mut early_answers = self.early_answers.lock();
            let request = self.next_request.fetch_add(1, Ordering::Relaxed);
            early_answers.insert(request, answer);
            let below = early_answers.keys().min().copied().unwrap_or(request);
            (request, below)
        };
        let _forget = ForgetEarlyAnswer {
            shared: self,
            request,
        };
        // While this node's session is open the registry remembers its requests, so a request
        // headed by its number takes effect once however often it is sent: even a write that
        // must not be applied twice (compare-and-set) may then be sent again after an attempt
        // whose answer was lost.
        let once = self.view.read().state.session(self.me()).is_some();
        let resend = match (once, idempotent) {
            (_, true) => Resend::Idempotent,
            (true, false) => Resend::Once,
            (false, false) => Resend::Never,
        };
        let make = |reply| {
            let sent = if once {
                Command::request(self.me(), request, below, commands)
            } else {
                commands.to_vec()
            };
            ServerMsg::Propose(sent, reply, request)
        };
        let maybe_taken = AtomicBool::new(false);
        let asked = self.call_noting(what, make, timeout, resend, &maybe_taken);
        // Whichever comes first: this node's copy applying the batch early, or the answer.
        let outcomes = tokio::select! {
            Ok(outcomes) = answered_early => outcomes,
            result = asked => result?,
        };
        let maybe_taken = maybe_taken.load(Ordering::Relaxed) && resend == Resend::Once;
        match unknown_after(&outcomes, maybe_taken, self.me()) {
            Some(reason) => Err(RegistryError::Unknown {
                what: what(),
                reason: reason.into(),
            }),
            None => Ok(outcomes),
        }
    }

    /// Waits until this node's copy has applied `revision`, for at most
    /// [`APPLY_WAIT`] (a copy that lags that much is caught up by its feed later).
    pub(crate) async fn wait_applied(&self, revision: u64) {
        let caught_up = |state: &RegistryState| state.revision() >= revision;
        if !self.wait_copy(caught_up).await {
            tracing::debug!(
                revision,
                "this node's copy of the registry lags behind a write"
            );
        }
    }

    /// Waits until this node's copy shows what each of `commands` asked for, for at most
    /// [`APPLY_WAIT`].
    async fn wait_shown(&self, commands: &[&Command]) {
        let shown = |state: &RegistryState| commands.iter().all(|c| state.shows(c));
        if !self.wait_copy(shown).await {
            tracing::debug!(
                command = %commands[0].brief(),
                "this node's copy of the registry does not show a write answered unchanged"
            );
        }
    }

    /// Waits until this node's copy satisfies `ready`, for at most [`APPLY_WAIT`]; `false` if
    /// it did not.
    async fn wait_copy(&self, ready: impl Fn(&RegistryState) -> bool) -> bool {
        let deadline = Instant::now() + APPLY_WAIT;
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if ready(&self.view.read().state) {
                return true;
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                return false;
            }
        }
    }

    pub(crate) async fn propose_one(
        &self,
        command: Command,
        idempotent: bool,
    ) -> Result<Outcome, RegistryError> {
        self.propose_one_within(command, idempotent, self.config.request_timeout)
            .await
    }

    /// [`propose_one`](Self::propose_one) with the request bounded by `timeout`.
    pub(crate) async fn propose_one_within(
        &self,
        command: Command,
        idempotent: bool,
        timeout: Duration,
    ) -> Result<Outcome, RegistryError> {
        let mut outcomes = self
            .propose_within(vec![command], idempotent, timeout)
            .await?;
        match outcomes.pop() {
            Some(Outcome::NoSession { node }) if self.expired.load(Ordering::Acquire) => {
                Err(RegistryError::SessionExpired(node))
            }
            Some(Outcome::NoSession { node }) => Err(RegistryError::NoSession(node)),
            Some(outcome) => Ok(outcome),
            None => Err(RegistryError::Unknown {
                what: "a command".into(),
                reason: "the leader answered no outcome".into(),
            }),
        }
    }

    async fn read(&self, query: Query) -> Result<Answer, RegistryError> {
        self.call(
            &|| format!("{query:?}"),
            |reply| ServerMsg::Read(query.clone(), reply),
            self.config.request_timeout,
            Resend::Idempotent,
        )
        .await
    }

    pub(crate) fn unexpected(&self, what: &str, outcome: Outcome) -> RegistryError {
        RegistryError::Unknown {
            what: what.to_owned(),
            reason: format!("unexpected outcome {outcome:?}"),
        }
    }

    /// Records whether this node stands for election, as `session::watch_standing` decides;
    /// its Raft stands unless `leave` holds it back.
    pub(crate) fn set_stands(&self, stands: bool) {
        self.change_standing(|standing| standing.stands = stands);
    }

    /// Holds this node's Raft back from standing for election (`held`), or lets it stand
    /// again as `session::watch_standing` last decided. At once: the node may be about to
    /// leave, and `watch_standing` ends when it has left.
    pub(crate) fn hold_standing(&self, held: bool) {
        self.change_standing(|standing| standing.held = held);
    }

    /// Changes what decides whether this node stands, and sets its Raft's switch to match
    /// under the same lock.
    fn change_standing(&self, change: impl FnOnce(&mut Standing)) {
        let mut standing = self.standing.lock();
        change(&mut standing);
        self.raft
            .runtime_config()
            .elect(standing.stands && !standing.held);
    }

    /// Whether `leave` holds this node back from standing for election.
    pub(crate) fn standing_held(&self) -> bool {
        self.standing.lock().held
    }

    /// Whether this node's Raft may stand for election now.
    fn stands(&self) -> bool {
        let standing = self.standing.lock();
        standing.stands && !standing.held
    }

    /// Whether this node's own Raft log names it a voter.
    pub(crate) fn own_log_names_me_a_voter(&self) -> bool {
        let metrics = self.raft_metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.voter_ids().any(|id| id == metrics.id)
    }

    /// Whether this node's own Raft log ends with a configuration that is not a joint one
    /// (a change of the voters half made).
    pub(crate) fn own_log_settled(&self) -> bool {
        self.raft_metrics
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            == 1
    }

    /// This node's session expired: it is down for the cluster.
    pub(crate) fn session_expired(self: &Arc<Self>) {
        if !self.expired.swap(true, Ordering::AcqRel) {
            tracing::error!(node = %self.me(), "this node's registry session expired: the cluster counts it as down");
            self.fence("this node's session expired");
            self.end();
            // The expiry took this node's holders out of every line: no grant will come. A
            // waiter's sender dropped ends its wait; the call then answers `SessionExpired`.
            self.waiters.lock().clear();
        }
    }

    /// This node's part in the registry is over: its watches end, each once it has given
    /// what it holds. Its copy applies nothing more that a watch could wait for: a node that
    /// left or expired is refused everywhere, and one stopped has no copy.
    pub(crate) fn end(&self) {
        self.ended.send_replace(true);
    }

    /// Every lease is lost and its bound actors are killed. The locks are then given back
    /// once those actors ended (a session TTL at most: [`wait_for_ends`]), as soon as the
    /// registry can be reached (if the session expired first, the expiry released them
    /// already).
    ///
    /// Not at once: a kill takes effect at an actor's next `.await` (one of another node is
    /// only told to stop), and the registry may be reachable right away (a keepalive
    /// answered late, a cut that healed before the session could expire), so the next
    /// holder could be granted the lock while a killed actor still runs.
    pub(crate) fn fence(self: &Arc<Self>, why: &str) {
        let (leases, killed) = self.lose_leases(why);
        if leases.is_empty() {
            return;
        }
        let shared = Arc::downgrade(self);
        let (me, ttl) = (self.me().clone(), self.config.session_ttl);
        tokio::spawn(async move {
            wait_for_ends(&me, killed, ttl).await;
            if let Some(shared) = shared.upgrade() {
                for (lock, id) in leases {
                    shared.give_back(lock, id);
                }
            }
        });
    }

    /// Fences the node without giving the locks back: marks every lease lost and kills the
    /// actors bound to them. Answers the leases' (lock, holder) pairs and the actors killed.
    fn lose_leases(&self, why: &str) -> (Vec<(String, u64)>, Vec<UntypedRef>) {
        self.fenced.store(true, Ordering::Release);
        let leases: Vec<_> = self.leases.lock().drain().collect();
        if !leases.is_empty() {
            tracing::warn!(node = %self.me(), leases = leases.len(), why, "fencing: leases lost");
        }
        let mut holders = Vec::with_capacity(leases.len());
        let mut killed = Vec::new();
        for (holder, lease) in leases {
            killed.extend(lease.lose(why));
            holders.push(holder);
        }
        (holders, killed)
    }

    /// Releases this node's holder `id` of `lock` from a task: at once, then again after each
    /// failure ([`release_until_taken`]). For a lease lost to fencing, a grant nobody claims
    /// (`mirror::claimed`), and the holder of a lock call whose caller stopped waiting.
    fn give_back(self: &Arc<Self>, lock: String, id: u64) {
        let release = Command::Release {
            lock,
            holder: Holder {
                node: self.me().clone(),
                id,
            },
        };
        tokio::spawn(release_until_taken(
            Arc::downgrade(self),
            release,
            Duration::ZERO,
        ));
    }

    /// Stops the task that would release `release` when its actor ends: the release was made
    /// already.
    ///
    /// `seen` is the entry's number read before the release was proposed: an entry made since
    /// (the name registered again meanwhile) is a newer binding's, and stays.
    fn forget_on_exit(&self, release: &ExitRelease, seen: Option<u64>) {
        if let Some(task) = self.take_on_exit(release, seen) {
            task.abort();
        }
    }

    /// Removes the entry for `release` if its number is `number` (and there is one).
    pub(crate) fn take_on_exit(
        &self,
        release: &ExitRelease,
        number: Option<u64>,
    ) -> Option<tokio::task::AbortHandle> {
        let mut on_exit = self.on_exit.lock();
        if number.is_none() || on_exit.get(release).map(|(n, _)| *n) != number {
            return None;
        }
        on_exit.remove(release).map(|(_, task)| task)
    }

    /// The number of the task that releases `release` when its actor ends, if there is one.
    fn on_exit_number(&self, release: &ExitRelease) -> Option<u64> {
        self.on_exit.lock().get(release).map(|(number, _)| *number)
    }

    /// Proposes `release` once and returns what came of it. If that failed while this node's
    /// session lives, or its caller stopped waiting for it (the future dropped by a timeout or
    /// a `select!`), a task keeps proposing it ([`release_until_taken`]): the holder would
    /// otherwise keep the lock, with nobody to release it, for as long as the session lives.
    /// A failed release may also have been committed; releasing again changes nothing then.
    pub(crate) async fn release_or_keep_trying(
        self: &Arc<Self>,
        release: Command,
    ) -> Result<Outcome, RegistryError> {
        let mut unfinished = Unfinished {
            shared: self,
            release: Some(release),
        };
        let proposed = unfinished.release.clone().expect("armed");
        let result = self.propose_one(proposed, true).await;
        let release = unfinished.release.take().expect("armed");
        if let Err(err) = &result
            && !session_ended(err)
        {
            tracing::warn!(?release, %err, "a release is not taken yet; trying again until the registry takes it");
            tokio::spawn(release_until_taken(
                Arc::downgrade(self),
                release,
                RELEASE_RETRY_FIRST,
            ));
        }
        result
    }

    /// Whether this node may not count on its session now: it fenced itself, or its clock is
    /// past the validity its last acknowledged keepalive gave. The second can hold before the
    /// watchdog has fenced the node: a node resumed from a freeze may run a task that reads
    /// its clock before the watchdog's timer fires.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) || self.past_validity()
    }

    /// Whether this node's clock is past the validity its last acknowledged keepalive gave.
    pub(crate) fn past_validity(&self) -> bool {
        Instant::now() >= *self.valid_until.lock()
    }

    fn check_usable(&self) -> Result<(), RegistryError> {
        if self.expired.load(Ordering::Acquire) {
            return Err(RegistryError::SessionExpired(self.me().clone()));
        }
        if self.left.load(Ordering::Acquire) {
            return Err(RegistryError::NoSession(self.me().clone()));
        }
        if self.is_fenced() {
            return Err(RegistryError::Fenced(self.me().clone()));
        }
        Ok(())
    }
}

/// What an attempt that `target`'s server answered with `err` (other than `NotLeader`) leads
/// to: the call's error, or, to try another node, why the attempt failed.
fn refused(
    err: ServerError,
    target: &str,
    resend: Resend,
    what: &dyn Fn() -> String,
) -> Result<String, RegistryError> {
    match err {
        ServerError::SessionExpired(node) => Err(RegistryError::SessionExpired(node)),
        ServerError::NoSession(node) => Err(RegistryError::NoSession(node)),
        ServerError::TooLarge { what, bytes, max } => {
            Err(RegistryError::TooLarge { what, bytes, max })
        }
        ServerError::VoteNotMoved { why, tried } => Err(RegistryError::VoteNotMoved { why, tried }),
        ServerError::Malformed(reason) => Err(RegistryError::Refused {
            what: what(),
            reason: format!("node {target}: {reason}"),
        }),
        // Raft failed on the leader (it stopped, or its log failed) after the entry may have
        // been replicated: a later leader may still commit it.
        ServerError::Raft(reason) if resend == Resend::Never => Err(RegistryError::Unknown {
            what: what(),
            reason: format!("node {target}: {reason}"),
        }),
        // Overloaded: refused before it reached the log.
        err => Ok(format!("node {target}: {err}")),
    }
}

/// A release under way in [`Shared::release_or_keep_trying`]: dropped with its caller's
/// future before the proposal answered, it leaves the release to a task that proposes it
/// until it is taken. Otherwise the release runs on its caller's task, as an acquire does
/// (see `Registry::acquire`).
struct Unfinished<'a> {
    shared: &'a Arc<Shared>,
    release: Option<Command>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::debug!(
            ?release,
            "a release whose caller stopped waiting; trying until the registry takes it"
        );
        runtime.spawn(release_until_taken(
            Arc::downgrade(self.shared),
            release,
            Duration::ZERO,
        ));
    }
}

/// An acquire whose caller stopped waiting while `key` is set (its future dropped in the
/// proposal or in line). Dropped then, it drops the holder's waiter entry and releases the
/// holder from a task, at once and until the registry takes it, which takes the holder out of
/// the line. A grant that still comes (the acquire committed after the release) finds nobody
/// to claim it and is given back (`mirror::dispatch`).
struct Abandoned<'a> {
    shared: &'a Arc<Shared>,
    key: Option<(String, u64)>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        self.shared.waiters.lock().remove(&key);
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tracing::debug!(
            lock = key.0,
            "giving back a lock whose caller stopped waiting"
        );
        self.shared.give_back(key.0, key.1);
    }
}

/// The end of [`Registry::leave`], however it ends (its future may be dropped by a caller's
/// timeout): the node counts as left; calls under way end at their next try, and lock calls
/// waiting in line at once, instead of holding the registry (and through it the node's
/// cluster service and its address) until their timeouts; and the registry is detached from
/// the node, which it holds in turn, so that neither keeps the other alive.
struct Closed<'a> {
    shared: &'a Shared,
    node: &'a Node,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        // A leave cut short (during the vote's hand-over, say) stops renewing the session all
        // the same, and the registry gives the node's locks away once it expires: the actors
        // bound to them are stopped now, a session TTL before that, as self-fencing would
        // (nothing here fences the node any more). After a leave that got this far, nothing
        // is left to lose.
        self.shared.lose_leases("this node left");
        self.shared.left.store(true, Ordering::Release);
        self.shared.closed.store(true, Ordering::Release);
        self.shared.end();
        // Dropping a waiter's sender ends its wait; the call then answers `NoSession`.
        self.shared.waiters.lock().clear();
        self.node.remove_extension::<Registry>();
    }
}

/// What a task waiting for an actor's end releases then.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExitRelease {
    /// The name, bound to the actor.
    Name(String, ActorId),
    /// The actor's membership of the group.
    Member(String, ActorId),
}

/// A handle to the registry, for one node. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(crate) shared: Arc<Shared>,
}

/// Counts one write of this node as under way while it lives.
struct Proposing<'a>(&'a AtomicUsize);

impl<'a> Proposing<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Proposing(count)
    }
}

impl Drop for Proposing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A change the registry made, as [`Registry::subscribe`] shows it.
pub type RegistryEffect = Effect;

impl Registry {
    pub(crate) fn new_shared(
        cluster: Cluster,
        config: RegistryConfig,
        servers: Servers,
        leadership: Leadership,
        raft: openraft::Raft<crate::raft::TypeConfig>,
        retired: Arc<AtomicBool>,
    ) -> Arc<Shared> {
        let valid_until = Mutex::new(Instant::now() + config.session_validity());
        Arc::new(Shared {
            cluster,
            config,
            servers,
            leadership,
            view: RwLock::default(),
            epoch: AtomicU64::new(0),
            leader: Mutex::new(None),
            silent: Mutex::default(),
            waiters: Mutex::default(),
            leases: Mutex::default(),
            on_exit: Mutex::default(),
            next_on_exit: AtomicU64::new(1),
            effects: broadcast::channel(4096).0,
            ended: watch::channel(false).0,
            fenced: AtomicBool::new(false),
            valid_until,
            applied: tokio::sync::Notify::new(),
            proposing: AtomicUsize::new(0),
            expired: AtomicBool::new(false),
            left: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            next_holder: AtomicU64::new(1),
            proposer: proposer::Proposer::new(),
            next_request: AtomicU64::new(first_request_number()),
            early_answers: Mutex::default(),
            raft_metrics: raft.metrics(),
            raft,
            standing: Mutex::default(),
            retired,
        })
    }

    fn node(&self) -> &Node {
        self.shared.cluster.node()
    }

    /// Binds a global name to a local actor, for as long as the actor lives and this node's
    /// session lasts. Fails if another actor holds the name.
    pub async fn register<M: RemoteMessage>(
        &self,
        name: &str,
        actor: &ActorRef<M>,
    ) -> Result<(), RegistryError> {
        self.local_actor(actor)?;
        self.register_wire(name, actor.to_wire(), actor.untyped())
            .await
    }

    /// Frees a global name if `actor` holds it; says whether it did.
    pub async fn unregister(&self, name: &str, actor: &ActorId) -> Result<bool, RegistryError> {
        let command = Command::UnregisterName {
            name: name.to_owned(),
            actor: actor.clone(),
        };
        let key = ExitRelease::Name(name.to_owned(), actor.clone());
        let seen = self.shared.on_exit_number(&key);
        let outcome = self.shared.propose_one(command, true).await?;
        self.shared.forget_on_exit(&key, seen);
        Ok(matches!(outcome, Outcome::Done { .. }))
    }

    /// The actor a global name resolves to, from this node's copy of the registry: no round
    /// trip, and possibly a little behind the leader (a send to a stale entry fails fast;
    /// resolve again then). See [`whereis_linearizable`](Self::whereis_linearizable).
    pub fn whereis<M: RemoteMessage>(
        &self,
        name: &str,
    ) -> Result<Option<ActorRef<M>>, RegistryError> {
        let view = self.shared.view.read();
        match view.state.name(name) {
            None => Ok(None),
            Some(wire) => self.typed(name, wire).map(Some),
        }
    }

    /// The actor a global name resolves to, as of now (a read through the leader).
    pub async fn whereis_linearizable<M: RemoteMessage>(
        &self,
        name: &str,
    ) -> Result<Option<ActorRef<M>>, RegistryError> {
        match self.shared.read(Query::Name(name.to_owned())).await? {
            Answer::Name(Some(wire)) => self.typed(name, &wire).map(Some),
            _ => Ok(None),
        }
    }

    fn typed<M: RemoteMessage>(
        &self,
        name: &str,
        wire: &ensemble_runtime::remote::WireRef,
    ) -> Result<ActorRef<M>, RegistryError> {
        ActorRef::from_wire(self.node(), wire).ok_or_else(|| RegistryError::WrongType {
            name: name.to_owned(),
            found: wire.clone(),
            expected: std::any::type_name::<M>(),
        })
    }

    /// Adds a local actor to a group, for as long as it lives and this node's session lasts.
    pub async fn join_group<M: RemoteMessage>(
        &self,
        group: &str,
        actor: &ActorRef<M>,
    ) -> Result<(), RegistryError> {
        self.local_actor(actor)?;
        self.join_group_wire(group, actor.to_wire(), actor.untyped())
            .await
    }

    /// Removes an actor from a group.
    pub async fn leave_group(&self, group: &str, actor: &ActorId) -> Result<(), RegistryError> {
        let command = Command::LeaveGroup {
            group: group.to_owned(),
            actor: actor.clone(),
        };
        let key = ExitRelease::Member(group.to_owned(), actor.clone());
        let seen = self.shared.on_exit_number(&key);
        self.shared.propose_one(command, true).await?;
        self.shared.forget_on_exit(&key, seen);
        Ok(())
    }

    /// A group's members that take messages of type `M`, from this node's copy.
    pub fn group<M: RemoteMessage>(&self, group: &str) -> Vec<ActorRef<M>> {
        let view = self.shared.view.read();
        view.state
            .group(group)
            .iter()
            .filter_map(|wire| ActorRef::from_wire(self.node(), wire))
            .collect()
    }

    /// Takes a lock, waiting in line (first come, first served) for up to `timeout`.
    ///
    /// The timeout bounds the whole call, the request that joins the line included (which
    /// also takes no more than the request timeout), so a zero timeout fails at once:
    /// [`try_lock`](Self::try_lock) takes a free lock without waiting in line. A call that
    /// fails leaves no holder behind: its holder is released from a task, which the call does
    /// not wait for. A call whose node fenced itself by the time the grant reached it fails
    /// with [`RegistryError::Fenced`], as one made while fenced does, and gives the grant back.
    pub async fn lock(&self, lock: &str, timeout: Duration) -> Result<Lease, RegistryError> {
        self.acquire(lock, true, timeout).await
    }

    /// Takes a lock if it is free; [`RegistryError::Busy`] names the holder otherwise.
    pub async fn try_lock(&self, lock: &str) -> Result<Lease, RegistryError> {
        self.acquire(lock, false, self.shared.config.request_timeout)
            .await
    }

    /// Takes a lock for a new holder of this node.
    ///
    /// A caller that stops waiting (a timeout or a `select!` around the call) leaves no holder
    /// behind ([`Abandoned`]): the holder leaves the line at once, and a grant that comes all
    /// the same finds nobody listening and is given back (`mirror::dispatch`). Without that,
    /// the holder would later hold the lock with nobody to release it for as long as this
    /// node's session lives. The call itself runs on the caller's task: a task of its own
    /// cost the contended lock hand-over about 4 % (its request no longer left with the
    /// release before it).
    async fn acquire(
        &self,
        lock: &str,
        wait: bool,
        timeout: Duration,
    ) -> Result<Lease, RegistryError> {
        self.shared.check_usable()?;
        let holder = Holder {
            node: self.node().id().clone(),
            id: self.shared.next_holder.fetch_add(1, Ordering::Relaxed),
        };
        let key = (lock.to_owned(), holder.id);
        // Listening before asking: the grant may reach the mirror before the answer.
        let (tx, granted) = oneshot::channel();
        self.shared.waiters.lock().insert(key.clone(), tx);
        let mut abandoned = Abandoned {
            shared: &self.shared,
            key: Some(key.clone()),
        };
        let command = Command::Acquire {
            lock: lock.to_owned(),
            holder: holder.clone(),
            wait,
        };
        // `Duration::MAX` and the like: as good as no deadline.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        let request = timeout.min(self.shared.config.request_timeout);
        let outcome = self.shared.propose_one_within(command, true, request).await;
        // From here on every way out cleans up itself, without an await before it does.
        abandoned.key = None;
        let token = match outcome {
            Ok(Outcome::Granted { token }) => token,
            Ok(Outcome::Queued { .. }) => {
                abandoned.key = Some(key.clone());
                let waited = tokio::time::timeout_at(deadline, granted).await;
                abandoned.key = None;
                match waited {
                    Ok(Ok(token)) => token,
                    _ if self.shared.expired.load(Ordering::Acquire) => {
                        // The session expired while this call waited (and ended the wait):
                        // the expiry released everything the node held or waited for.
                        self.shared.waiters.lock().remove(&key);
                        return Err(RegistryError::SessionExpired(self.shared.me().clone()));
                    }
                    _ => {
                        // Leave the line (or give back a grant that raced the timeout).
                        self.abandon(&key);
                        if self.shared.closed.load(Ordering::Acquire) {
                            // The node left while this call waited (it ended the wait).
                            return Err(RegistryError::NoSession(self.shared.me().clone()));
                        }
                        return Err(RegistryError::Timeout {
                            what: format!("lock {lock:?}"),
                            timeout,
                            last: "still waiting in line".into(),
                        });
                    }
                }
            }
            Ok(Outcome::Busy { holder }) => {
                self.shared.waiters.lock().remove(&key);
                return Err(RegistryError::Busy {
                    lock: lock.to_owned(),
                    holder,
                });
            }
            Ok(other) => {
                self.abandon(&key);
                return Err(self.shared.unexpected(&format!("lock of {lock:?}"), other));
            }
            Err(err) => {
                // The request may have been committed all the same (the leader failed after
                // it): without a release, the holder would wait in line, and later hold the
                // lock, with nobody to release it until this node's session ends.
                self.abandon(&key);
                return Err(err);
            }
        };
        // The lease before the waiter goes: a grant the copy dispatches in between must find
        // one of the two, or it would be given back as nobody's (`mirror::claimed`).
        let state = LeaseState::new(token);
        self.shared.leases.lock().insert(key.clone(), state.clone());
        self.shared.waiters.lock().remove(&key);
        // Fenced while waiting: the grant is lost already, and nobody will release it unless
        // this call does. `fence` gives back the leases it finds, and it may have run before
        // this one was inserted; releasing a holder twice changes nothing. The call fails as
        // one made while fenced does: a lease handed out lost would look held to a caller
        // that does not look, with a token below its successor's.
        if self.shared.is_fenced() {
            self.shared.leases.lock().remove(&key);
            state.lose("this node fenced itself");
            self.shared.give_back(key.0, holder.id);
            return Err(RegistryError::Fenced(self.shared.me().clone()));
        }
        Ok(Lease {
            lock: lock.to_owned(),
            holder,
            token,
            state,
            shared: self.shared.clone(),
        })
    }

    /// Gives up an acquire: stops listening for its grant and releases the holder, which
    /// leaves the line or gives back a grant the caller will not use. Releasing a holder the
    /// registry does not know changes nothing, so this is safe whatever became of the acquire.
    ///
    /// The release is made by a task, at once and then until the registry takes it: the
    /// acquire may still be committed later, and its holder would then keep the lock for as
    /// long as this node's session lives. The call does not wait for it: the call's timeout
    /// bounds the call.
    fn abandon(&self, key: &(String, u64)) {
        self.shared.waiters.lock().remove(key);
        self.shared.give_back(key.0.clone(), key.1);
    }

    /// The fencing token of the lease of this node that `actor` is bound to
    /// ([`Lease::bind`]), while it is: a lease that is revoked or released lets its actors
    /// go (and kills them, unless released), and answers `None` from then on.
    ///
    /// An instance of a singleton learns its grant's token this way, whoever started it (the
    /// app platform binds a singleton role's instance before its `started` hook runs). It
    /// passes the token with the orders it gives, so that their receivers can refuse the
    /// orders of an instance it replaced that are still on their way.
    pub fn fencing_token_of(&self, actor: &ActorId) -> Option<u64> {
        self.lease_of(actor).map(|(_, token)| token)
    }

    /// The lock and the token of the lease on this node that `actor` is bound to: what
    /// [`fencing_token_of`](Self::fencing_token_of) answers, with the lock's name. A holder
    /// that passes both with its orders lets a receiver refuse them as soon as its own copy
    /// shows a later grant of that lock ([`lock_info`](Self::lock_info)), before any order of
    /// the successor reaches it. Both are the grant's: an actor bound to a later grant of the
    /// same lock reads them again.
    pub fn lease_of(&self, actor: &ActorId) -> Option<(String, u64)> {
        // Also past the session's validity, before the fencing timer has run: the token is
        // then below any successor's, so whoever checks it refuses this holder's side
        // effects, while no token at all might be taken for "not fenced".
        let leases = self.shared.leases.lock();
        leases
            .iter()
            .filter_map(|((lock, _), lease)| Some((lock, lease.token_if_bound(actor)?)))
            .max_by_key(|(_, token)| *token)
            .map(|(lock, token)| (lock.clone(), token))
    }

    /// A lock's holder and waiters, from this node's copy.
    pub fn lock_info(&self, lock: &str) -> Option<crate::state::Lock> {
        self.shared.view.read().state.lock(lock).cloned()
    }

    /// Reserves `need` (amounts by resource name) on `node` under the name `id`, if it fits in
    /// `capacity` together with what the node's reservations hold already. The check and the
    /// reservation are one registry command, so two supervisors placing at once never
    /// oversubscribe a node (as long as they agree on its capacity).
    ///
    /// - A resource missing from `capacity` has none; asking for 0 of a resource always fits.
    /// - The reservation is bound to `node`'s session: it is released when that session ends
    ///   (the node leaves, expires, or restarts as a new incarnation), or by
    ///   [`unreserve`](Self::unreserve). It does not end with the caller or with what was placed.
    /// - Reserving an `id` again for the same node and need succeeds and changes nothing, so the
    ///   call is retried safely after a failed attempt.
    ///
    /// Fails with [`RegistryError::Insufficient`] naming the first resource short (nothing is
    /// reserved then), [`RegistryError::ReservationTaken`] if `id` holds another reservation, and
    /// [`RegistryError::NoSession`] if `node` has no open session.
    pub async fn reserve(
        &self,
        id: &str,
        node: &NodeId,
        need: &BTreeMap<String, u64>,
        capacity: &BTreeMap<String, u64>,
    ) -> Result<(), RegistryError> {
        let command = Command::Reserve {
            id: id.to_owned(),
            node: node.clone(),
            need: need.clone(),
            capacity: capacity.clone(),
        };
        match self.shared.propose_one(command, true).await {
            Ok(Outcome::Done { .. } | Outcome::Unchanged) => Ok(()),
            Ok(Outcome::Insufficient {
                resource,
                need,
                free,
            }) => Err(RegistryError::Insufficient {
                node: node.to_string(),
                resource,
                need,
                free,
            }),
            Ok(Outcome::ReservationTaken { node, need }) => Err(RegistryError::ReservationTaken {
                id: id.to_owned(),
                node,
                need,
            }),
            Ok(other) => Err(self
                .shared
                .unexpected(&format!("reservation {id:?} on node {node}"), other)),
            // The session missing is the target node's: it is not this node that expired.
            Err(RegistryError::SessionExpired(target)) if &target != self.node().id() => {
                Err(RegistryError::NoSession(target))
            }
            Err(err) => Err(err),
        }
    }

    /// Releases a reservation; says whether it existed.
    pub async fn unreserve(&self, id: &str) -> Result<bool, RegistryError> {
        let command = Command::Unreserve { id: id.to_owned() };
        Ok(matches!(
            self.shared.propose_one(command, true).await?,
            Outcome::Done { .. }
        ))
    }

    /// What `node`'s reservations add up to, by resource (resources with nothing reserved are
    /// left out), from this node's copy: possibly a little behind the leader. To place
    /// something, [`reserve`](Self::reserve) decides; this only helps pick where to try.
    pub fn reserved(&self, node: &NodeId) -> BTreeMap<String, u64> {
        self.shared.view.read().state.reserved(node)
    }

    /// Every reservation as (id, node, need), in id order, from this node's copy.
    pub fn reservations(&self) -> Vec<(String, NodeId, BTreeMap<String, u64>)> {
        self.shared
            .view
            .read()
            .state
            .reservations()
            .map(|(id, r)| (id.clone(), r.node.clone(), r.need.clone()))
            .collect()
    }

    /// Sets a config key; returns the revision of the change.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, RegistryError> {
        let command = Command::Put {
            key: key.to_owned(),
            value: value.into(),
        };
        match self.shared.propose_one(command, true).await? {
            Outcome::Done { revision } => Ok(revision),
            other => Err(self
                .shared
                .unexpected(&format!("put of config key {key:?}"), other)),
        }
    }

    /// Removes a config key; says whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, RegistryError> {
        let command = Command::Delete {
            key: key.to_owned(),
        };
        Ok(matches!(
            self.shared.propose_one(command, true).await?,
            Outcome::Done { .. }
        ))
    }

    /// Sets (or removes, with `None`) a config key if its revision is `expected` (0: the key
    /// must be absent); returns the revision of the command (removing an absent key with
    /// `expected` 0 succeeds and changes nothing).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: u64,
        value: Option<Vec<u8>>,
    ) -> Result<u64, RegistryError> {
        let command = Command::CompareAndSet {
            key: key.to_owned(),
            expected,
            value,
        };
        match self.shared.propose_one(command, false).await? {
            Outcome::Done { revision } => Ok(revision),
            Outcome::RevisionMismatch { current } => Err(RegistryError::RevisionMismatch {
                key: key.to_owned(),
                expected,
                current,
            }),
            other => Err(self
                .shared
                .unexpected(&format!("compare-and-set of config key {key:?}"), other)),
        }
    }

    /// A config key as of now (a read through the leader).
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, RegistryError> {
        match self.shared.read(Query::Get(key.to_owned())).await? {
            Answer::Get(value) => Ok(value),
            _ => Ok(None),
        }
    }

    /// Config keys under a prefix, as of now.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, KeyValue)>, RegistryError> {
        match self.shared.read(Query::Prefix(prefix.to_owned())).await? {
            Answer::Prefix(values) => Ok(values),
            _ => Ok(Vec::new()),
        }
    }

    /// Moves the registry vote of node `from` to node `to`, and returns once `to` votes and
    /// `from` does not (docs/registry.md, "Moving a vote by hand"). `from` must vote; `to`
    /// must be a member that is up, may vote (its `registry.voter` label is not `no`), has an
    /// open session, does not leave, and does not vote yet. Any node may ask. Waits for up
    /// to [`move_vote_timeout`](Registry::move_vote_timeout); the voters stay as they were if
    /// the move fails ([`RegistryError::VoteNotMoved`], naming why). Asked again once it is
    /// done, it is refused: `from` does not vote.
    ///
    /// The leader does not keep the choice: should a voter later be gone for good, its vote
    /// goes to the first node by name that may take it, as always.
    pub async fn move_vote(&self, from: &str, to: &str) -> Result<(), RegistryError> {
        vote_move::move_vote(&self.shared, from, to).await
    }

    /// How long [`move_vote`](Registry::move_vote) may take: a new voter's catch-up time and a
    /// request timeout.
    pub fn move_vote_timeout(&self) -> Duration {
        vote_move::limit(self.shared.config.request_timeout)
    }

    /// The registry's voters, by node name: the membership committed as of the read (a
    /// change still being made shows once it commits).
    pub async fn voters(&self) -> Result<Vec<String>, RegistryError> {
        match self.shared.read(Query::Voters).await? {
            Answer::Voters { names, .. } => Ok(names),
            _ => Ok(Vec::new()),
        }
    }

    /// Sets how many voters the registry keeps, for the whole cluster and every leader to
    /// come, in place of the nodes' `voters` setting, and returns the revision of the change
    /// once it is committed (docs/registry.md, "The number of voters"). The leader then adds
    /// or removes one voter at a time: a node that takes a vote is caught up first, a voter
    /// that gives its vote up stays a learner until its log holds the configuration without
    /// it. Votes go only to members that may vote (up, with a session, not labelled
    /// `registry.voter = "no"`), so a count above those is reached as such nodes join.
    /// [`voters`](Registry::voters) shows the change as it is made.
    ///
    /// Any node may ask; `count` must be from 1 to [`MAX_VOTERS`](crate::MAX_VOTERS)
    /// ([`RegistryError::BadVoterCount`] otherwise, before anything is sent).
    pub async fn set_voter_count(&self, count: usize) -> Result<u64, RegistryError> {
        let max = MAX_VOTERS as usize;
        if !(1..=max).contains(&count) {
            return Err(RegistryError::BadVoterCount { asked: count, max });
        }
        let command = Command::SetVoterCount {
            count: count as u32,
        };
        match self.shared.propose_one(command, true).await? {
            Outcome::Done { revision } => Ok(revision),
            other => Err(self.shared.unexpected(
                &format!("setting the registry's voter count to {count}"),
                other,
            )),
        }
    }

    /// How many voters the registry keeps, as last set by
    /// [`set_voter_count`](Registry::set_voter_count), from this node's copy; `None` if it was
    /// never set, when the leader grows the voters to its node's `voters` setting (and never
    /// shrinks them).
    pub fn voter_count(&self) -> Option<usize> {
        self.shared.view.read().state.voter_count()
    }

    /// A config key from this node's copy.
    pub fn get_cached(&self, key: &str) -> Option<KeyValue> {
        self.shared.view.read().state.get(key).cloned()
    }

    /// Whether this node's copy holds a full state from its current source (false from start
    /// until the first one arrives, and briefly while it follows a new leader).
    pub fn is_synced(&self) -> bool {
        self.shared.view.read().synced
    }

    /// The config keys under `prefix`, from this node's copy.
    pub fn get_prefix_cached(&self, prefix: &str) -> Vec<(String, KeyValue)> {
        self.shared
            .view
            .read()
            .state
            .prefix(prefix)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Changes to config keys under `prefix`, from now on, as (key, value or `None` if
    /// removed, revision).
    pub fn watch_prefix(&self, prefix: &str) -> Watch {
        Watch {
            prefix: prefix.to_owned(),
            effects: self.shared.effects.subscribe(),
            ended: self.shared.ended.subscribe(),
        }
    }

    /// Every change the registry makes, from now on, as this node's copy applies it.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEffect> {
        self.shared.effects.subscribe()
    }

    /// Renews this node's session now, as the periodic keepalive does (like etcd's
    /// `KeepAliveOnce`): answered once the leader has confirmed it still leads. An
    /// acknowledged renewal makes the session valid for another TTL less the drift margin,
    /// counted from when it was sent, and unfences a fenced node; `SessionExpired` marks the
    /// session expired, as the periodic keepalive would.
    pub async fn renew(&self) -> Result<(), RegistryError> {
        let sent = Instant::now();
        let renewed = self
            .shared
            .keepalive(self.shared.config.request_timeout)
            .await;
        if !self.shared.left.load(Ordering::Acquire) {
            session::take_renewal(&self.shared, sent, &renewed);
        }
        renewed
    }

    /// Whether this node is fenced: it could not renew its session in time, so its clock is
    /// past the session's validity or it fenced itself and has not renewed since.
    pub fn is_fenced(&self) -> bool {
        self.shared.is_fenced()
    }

    /// Whether this node's session expired.
    pub fn is_expired(&self) -> bool {
        self.shared.expired.load(Ordering::Acquire)
    }

    /// The registry revision this node's copy has applied.
    pub fn revision(&self) -> u64 {
        self.shared.view.read().state.revision()
    }

    /// The leader this node last heard of.
    pub fn leader(&self) -> Option<String> {
        self.shared.leader.lock().clone()
    }

    /// Whether this node leads the registry now, as its own Raft sees it. A leader cut off
    /// from the other voters may still count itself leader for a while, unable to commit.
    pub fn leads(&self) -> bool {
        self.shared.leadership.leads()
    }

    /// This node's part in the registry's Raft group, as its own Raft reports it now.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.shared.raft_metrics.borrow();
        let membership = metrics.membership_config.membership();
        let mut learners: Vec<String> = membership
            .learner_ids()
            .filter_map(|id| membership.get_node(&id).map(|voter| voter.name.clone()))
            .collect();
        learners.sort_unstable();
        RaftStatus {
            voter: membership.voter_ids().any(|id| id == metrics.id),
            stands: self.shared.stands(),
            learners,
            term: metrics.current_term,
            leader: metrics
                .current_leader
                .and_then(|id| membership.get_node(&id))
                .map(|voter| voter.name.clone()),
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot: metrics.snapshot.map(|id| id.index),
            purged: metrics.purged.map(|id| id.index),
        }
    }

    /// Ends this node's session on purpose: its names, group entries and locks are released at
    /// once, and other nodes see it as having left rather than failed. For good: the node
    /// stops renewing its session and does not open it again; calls that need a session
    /// answer [`RegistryError::NoSession`].
    ///
    /// A node that votes hands its vote to another node first, if a member may take it (the
    /// first by name that may vote, does not, and does not leave too), so that the registry
    /// keeps as many voters, all running; it waits for that for up to a new voter's catch-up
    /// time and a request timeout, then leaves all the same (docs/registry.md, "Voters").
    ///
    /// Answers [`RegistryError::SessionExpired`] at once if this node knows its session
    /// expired (it was fenced then, and counts as down already). Dropped before it ends (a
    /// caller's timeout), the node counts as left all the same: it stops renewing its session,
    /// which expires, and the actors bound to its leases are stopped at once.
    pub async fn leave(&self) -> Result<(), RegistryError> {
        let command = Command::CloseSession {
            node: self.node().id().clone(),
        };
        // The session is still renewed while the bound actors end (it must not expire, which
        // would release their locks just the same), but no renewal unfences the node.
        self.shared.leaving.store(true, Ordering::Release);
        // However the leave ends, even dropped by a caller's timeout: the node counts as
        // left, calls and lock waits still under way end, its lease-bound actors are stopped,
        // and the registry lets go of the node.
        let _closed = Closed {
            shared: &self.shared,
            node: self.node(),
        };
        // A session known to have expired cannot be closed, and its node was fenced: no vote
        // to hand over either (every member refuses the node), so say so now rather than
        // after a request timeout.
        if self.shared.expired.load(Ordering::Acquire) {
            return Err(RegistryError::SessionExpired(self.node().id().clone()));
        }
        // A voter does not stand for election while its vote moves, and never again once it
        // did: standing on a log that still names it a voter it would raise its term, keep
        // that term on disk, and make a leader step down when it is taken back one day
        // (`handover::hand_over_vote`).
        let voter = self.raft_status().voter;
        if handover::hand_over_vote(&self.shared, voter).await {
            // Its copy follows the leader again: its own log no longer gets every entry.
            self.shared.retired.store(true, Ordering::Release);
        }
        // Closing the session releases every lock of the node at once, with no margin of
        // time as self-fencing has: the actors bound to its leases must have ended first, or
        // a new holder could run beside one still finishing what it was doing. A kill ends an
        // actor at its next `.await`; one that does not get there within a session's TTL (the
        // time the registry would take to release its locks had the node died) is left
        // behind, and named. (A bound actor of another node is only told to stop: one that
        // cannot be reached counts as ended.)
        let (_, killed) = self.shared.lose_leases("this node left");
        // Said again while the actors end, so that a leader that took over meanwhile gives it
        // no vote either.
        tokio::select! {
            () = wait_for_ends(self.shared.me(), killed, self.shared.config.session_ttl) => {}
            () = handover::keep_saying_it_leaves(&self.shared) => {}
        }
        // From here on nothing renews the session or opens it again. Said again until the
        // session is closed: a leader elected meanwhile (this node's, if it led and handed its
        // vote over) gives it no vote either.
        self.shared.left.store(true, Ordering::Release);
        let closed = tokio::select! {
            closed = self.shared.propose_one(command, true) => closed,
            () = handover::keep_saying_it_leaves(&self.shared) => unreachable!("said until dropped"),
        };
        match closed {
            // An earlier attempt closed it, and its answer was lost: a leader that handed its
            // own vote over steps down about now, and the attempt it took may commit under the
            // next leader, which refuses the one sent again. (A session that expired instead
            // answers `SessionExpired`, once the node heard of it.)
            Err(RegistryError::NoSession(node)) if &node == self.node().id() => Ok(()),
            outcome => outcome.map(|_| ()),
        }
    }

    /// How long [`leave`](Registry::leave) may take: the hand-over of a voter's vote (a new
    /// voter's catch-up time and a request timeout), a session TTL for the actors bound to
    /// this node's leases to end, then a request timeout to close the session.
    pub fn leave_timeout(&self) -> Duration {
        let config = &self.shared.config;
        handover::handover_limit(config.request_timeout)
            + config.session_ttl
            + config.request_timeout
    }

    fn local_actor<M: RemoteMessage>(&self, actor: &ActorRef<M>) -> Result<(), RegistryError> {
        if actor.id().node() != self.node().id() || !actor.is_local() {
            return Err(RegistryError::NotLocal {
                actor: actor.id().clone(),
            });
        }
        Ok(())
    }
}

/// Changes to config keys under a prefix.
pub struct Watch {
    prefix: String,
    effects: broadcast::Receiver<Effect>,
    ended: watch::Receiver<bool>,
}

/// A node's part in the registry's Raft group ([`Registry::raft_status`]). Log positions are
/// indexes; `None` where there is none yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// Whether the node is one of the voters.
    pub voter: bool,
    /// Whether the node may stand for election now: a voter does once it knows that it
    /// votes (its log names it the only voter; or the leader counts it, its log holds that
    /// configuration and a leader replicates to it; or no leader answers and the other
    /// voters have no later log; or five silences passed), and not while it hands its vote
    /// over (docs/registry.md, "Voters").
    pub stands: bool,
    /// The learners of the Raft configuration the node follows, by node name: nodes being
    /// caught up to take a vote, and voters whose vote moved, kept until their logs hold the
    /// configuration without it (docs/registry.md, "Voters").
    pub learners: Vec<String>,
    /// The Raft term the node is in.
    pub term: u64,
    /// The leader the node knows of, by node name.
    pub leader: Option<String>,
    /// The last entry in the node's log.
    pub last_log_index: Option<u64>,
    /// The last entry applied to the node's state machine.
    pub last_applied: Option<u64>,
    /// The last entry the node's latest snapshot covers.
    pub snapshot: Option<u64>,
    /// The last entry dropped from the node's log (a snapshot covers it).
    pub purged: Option<u64>,
}

/// One change to a watched key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// Its value, or `None` if it was removed.
    pub value: Option<Vec<u8>>,
    /// The revision of the change.
    pub revision: u64,
}

/// What a [`Watch`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A watched key changed.
    Changed(KeyChange),
    /// The watcher fell more than 4096 of this node's registry changes (of every kind, not
    /// only its keys) behind, and those were dropped: changes to its keys may be among them.
    /// Read the prefix again with [`Registry::get_prefix`], then go on watching (etcd's
    /// "compacted" answer asks the same).
    Lagged {
        /// How many registry changes were dropped.
        skipped: u64,
    },
}

impl Watch {
    /// The next change, or word that some were missed; `None` once this node's part in the
    /// registry is over (it left, its session expired, or the node stopped), after the
    /// changes applied before.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            let effect = tokio::select! {
                biased;
                effect = self.effects.recv() => effect,
                _ = self.ended.wait_for(|ended| *ended) => match self.effects.try_recv() {
                    Ok(effect) => Ok(effect),
                    Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                        Err(broadcast::error::RecvError::Lagged(skipped))
                    }
                    Err(_) => return None,
                },
            };
            match effect {
                Ok(Effect::Key {
                    key,
                    value,
                    revision,
                }) if key.starts_with(&self.prefix) => {
                    return Some(WatchEvent::Changed(KeyChange {
                        key,
                        value,
                        revision,
                    }));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    return Some(WatchEvent::Lagged { skipped });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str, revision: u64) -> Effect {
        Effect::Key {
            key: key.to_owned(),
            value: Some(b"v".to_vec()),
            revision,
        }
    }

    /// A watch of `prefix`, with the channels that feed and end it.
    fn watch_of(prefix: &str) -> (broadcast::Sender<Effect>, watch::Sender<bool>, Watch) {
        let effects = broadcast::Sender::new(8);
        let ended = watch::Sender::new(false);
        let watch = Watch {
            prefix: prefix.into(),
            effects: effects.subscribe(),
            ended: ended.subscribe(),
        };
        (effects, ended, watch)
    }

    /// A watcher that fell behind is told so, instead of going on as if nothing was missed.
    #[tokio::test]
    async fn a_watch_that_fell_behind_says_so() {
        let (effects, _ended, mut watch) = watch_of("a/");
        effects.send(key("a/x", 1)).unwrap();
        for revision in 2..20 {
            effects.send(key("b/y", revision)).unwrap();
        }
        effects.send(key("a/z", 20)).unwrap();
        assert_eq!(
            watch.next().await,
            Some(WatchEvent::Lagged { skipped: 12 }),
            "a/x was dropped with eleven others"
        );
        assert_eq!(
            watch.next().await,
            Some(WatchEvent::Changed(KeyChange {
                key: "a/z".into(),
                value: Some(b"v".to_vec()),
                revision: 20,
            }))
        );
        drop(effects);
        assert_eq!(watch.next().await, None);
    }

    /// A watch ends once this node's part in the registry is over, after the changes it holds.
    #[tokio::test]
    async fn a_watch_ends_with_the_registry_after_what_it_holds() {
        let (effects, ended, mut watch) = watch_of("a/");
        effects.send(key("a/x", 1)).unwrap();
        ended.send_replace(true);
        assert!(matches!(watch.next().await, Some(WatchEvent::Changed(_))));
        // The sender of changes still lives (other handles hold the registry).
        assert_eq!(watch.next().await, None);
    }

    fn what() -> String {
        "compare-and-set of config key \"k\"".into()
    }

    #[test]
    fn a_write_that_raft_failed_on_the_leader_is_sent_again_only_if_that_is_safe() {
        let failed = || ServerError::Raft("raft stopped".into());
        match refused(failed(), "s0", Resend::Never, &what) {
            Err(RegistryError::Unknown { what, reason }) => {
                assert!(what.contains("compare-and-set"), "{what}");
                assert!(
                    reason.contains("s0") && reason.contains("raft stopped"),
                    "{reason}"
                );
            }
            other => panic!("a compare-and-set whose outcome is unknown answered {other:?}"),
        }
        assert!(
            refused(failed(), "s0", Resend::Idempotent, &what).is_ok(),
            "a put is sent again"
        );
        assert!(
            refused(failed(), "s0", Resend::Once, &what).is_ok(),
            "a compare-and-set the registry applies once is sent again"
        );
    }

    #[test]
    fn a_request_the_registry_could_not_tell_from_a_new_one_is_of_unknown_outcome() {
        let me = NodeId::new("s3", 1);
        let done = Outcome::Done { revision: 4 };
        let refused = Outcome::NoSession { node: me.clone() };
        assert_eq!(unknown_after(std::slice::from_ref(&done), true, &me), None);
        assert!(unknown_after(&[done, Outcome::Forgotten], false, &me).is_some());
        assert!(
            unknown_after(std::slice::from_ref(&refused), true, &me).is_some(),
            "refused after an attempt that may have taken effect"
        );
        assert_eq!(
            unknown_after(&[refused], false, &me),
            None,
            "refused, and no attempt before may have taken effect: refused"
        );
        let another = Outcome::NoSession {
            node: NodeId::new("s4", 1),
        };
        assert_eq!(
            unknown_after(&[another], true, &me),
            None,
            "another node's session (a reservation's): as the command says"
        );
    }

    #[test]
    fn an_overloaded_leader_is_tried_again_and_a_missing_session_is_not() {
        assert!(refused(ServerError::Overloaded(65_536), "s0", Resend::Never, &what).is_ok());
        let me = NodeId::new("s3", 1);
        assert!(matches!(
            refused(ServerError::NoSession(me.clone()), "s0", Resend::Idempotent, &what),
            Err(RegistryError::NoSession(node)) if node == me
        ));
    }
}
