//! What only the leader does: keep session keepalive times, propose the expiry of overdue
//! sessions, grow the voter set to its target size, and replace voters that are gone or
//! leave.
//!
//! # Why a new leader waits a full TTL
//!
//! Keepalives are not written to the log: the leader keeps their times in memory. A new
//! leader has none, so it counts every session as renewed when it took over and expires
//! nothing before it has led for that session's TTL. A node counts its session valid until
//! (when it sent its last acknowledged keepalive) + TTL x (1 - drift margin), and a keepalive
//! is acknowledged only after the leader confirmed it still leads after the keepalive arrived
//! (by a heartbeat round to a quorum, or by its lease, which gives the same guarantee: see
//! `raft::lease`); so any later leader was elected after that, and expires the session no
//! earlier than a TTL after it: later than the node fenced itself.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ensemble_runtime::NodeId;
use ensemble_runtime::cluster::{Cluster, MemberStatus};
use ensemble_runtime::hashing::{HashMap, HashSet};
use openraft::{Raft, ServerState};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::protocol::{Handover, ServerError, VoteMove};
use super::server_error;
use crate::raft::StateMachine;
use crate::raft::lease::LeaderLease;
use crate::raft::types::{Batch, TypeConfig, Voter, raft_id};
use crate::state::{Command, RegistryState};

/// The label a node sets to `"no"` to never become a voter.
pub const VOTER_LABEL: &str = "registry.voter";

/// The leader's duties, shared between the server (keepalives) and the duty loop.
#[derive(Clone)]
pub(crate) struct Leadership {
    duties: Arc<Mutex<Duties>>,
    /// Who is connected, and may take a vote.
    cluster: Cluster,
    /// Whether a change of the voters is under way: one at a time.
    changing: Arc<AtomicBool>,
    /// Confirms leadership for reads and keepalives without a heartbeat round while it holds.
    lease: LeaderLease,
    /// How fast this node's clock runs (`RegistryConfig::clock_rate`): it measures a
    /// session's silence by its own clock.
    clock_rate: f64,
}

#[derive(Default)]
struct Duties {
    /// When this node became leader of the current term, if it leads.
    since: Option<Instant>,
    /// The term it leads.
    term: u64,
    /// When each session's last keepalive arrived, while this node leads. Only open sessions
    /// (and this node): an ended session's entry goes at the next tick (`forget_ended`), so
    /// that a long lead does not keep one per node incarnation it ever saw.
    last_seen: HashMap<NodeId, Instant>,
    /// Sessions whose expiry was proposed and not yet applied.
    expiring: HashSet<NodeId>,
    /// Since when each voter or learner (by Raft id) has been gone, as this leader saw it:
    /// no open session by its name, and no connection to this node.
    gone_since: HashMap<u64, Instant>,
    /// Nodes that leave on purpose (each incarnation), and what they said
    /// ([`Leadership::hand_over`]). None of them is given a vote. Kept while the node's
    /// session is open and for [`LEAVING_FORGOTTEN`] after its last word, across changes of
    /// lead (a node says it again every 0.5 s while it leaves: `client::handover`).
    leaving: HashMap<NodeId, Leaving>,
    /// Why the last vote move asked by an operator failed once tried, kept for the later asks
    /// of that move ([`Leadership::move_vote`]).
    move_failed: Option<MoveFailed>,
}

/// A vote move asked by an operator that failed ([`Leadership::move_vote`]).
struct MoveFailed {
    from: String,
    to: String,
    why: String,
    /// When; told to an ask of the same move for [`MOVE_FAILURE_KEPT`] after.
    at: Instant,
}

/// What a node that leaves said last.
#[derive(Clone, Copy, Debug)]
struct Leaving {
    /// When.
    at: Instant,
    /// It votes and waits for its vote to move: asked within [`HANDING_OVER`], and not told
    /// that it keeps its vote. Only then is its vote moved without the voter grace.
    hands_over: bool,
}

impl Duties {
    /// Notes that this node leads `term` as of `now`; says whether it only now began to.
    ///
    /// A term other than the one it led starts afresh even if the duty loop never saw this
    /// node lose the lead in between (watched metrics show only the latest state): the
    /// keepalive times of an earlier term say nothing of those the leaders in between took.
    fn lead(&mut self, term: u64, now: Instant) -> bool {
        if self.since.is_some() && self.term == term {
            return false;
        }
        // What nodes said of leaving still holds, whoever heard it.
        let leaving = std::mem::take(&mut self.leaving);
        *self = Duties {
            since: Some(now),
            term,
            leaving,
            ..Duties::default()
        };
        true
    }

    /// Stops leading: forgets all but what nodes said of leaving.
    fn step_down(&mut self) {
        let leaving = std::mem::take(&mut self.leaving);
        *self = Duties {
            leaving,
            ..Duties::default()
        };
    }

    /// Forgets the keepalive times and pending expiries of sessions no longer open (expired,
    /// closed, or replaced by a newer incarnation): `open` lists those that are. A session
    /// opened since `open` was read may lose the time of a keepalive taken meanwhile; the
    /// next tick counts it from then, which only puts its expiry later.
    fn forget_ended(&mut self, open: &[(NodeId, Duration)]) {
        let is_open = |node: &NodeId| open.iter().any(|(n, _)| n == node);
        self.expiring.retain(|node| is_open(node));
        self.last_seen.retain(|node, _| is_open(node));
    }

    /// Notes which members of the Raft configuration are gone as of `now` (`gone`: their Raft
    /// ids) and returns those gone without a break for longer than `grace`, measured on this
    /// node's clock at `clock_rate`, and for longer than this node has led.
    ///
    /// The grace (`RegistryConfig::voter_grace`) comes on top of the session expiry that made
    /// the node gone: a voter restarted within it opens a session again under its name and
    /// keeps its vote.
    fn gone_for_good(
        &mut self,
        gone: &[u64],
        now: Instant,
        grace: Duration,
        clock_rate: f64,
    ) -> Vec<u64> {
        let Some(since) = self.since else {
            return Vec::new();
        };
        self.gone_since.retain(|id, _| gone.contains(id));
        let mut long_gone: Vec<u64> = gone
            .iter()
            .filter(|id| {
                let first = (*self.gone_since.entry(**id).or_insert(now)).max(since);
                now.duration_since(first).mul_f64(clock_rate) > grace
            })
            .copied()
            .collect();
        long_gone.sort_unstable();
        long_gone
    }

    /// The nodes that leave as of `now`, sorted, forgetting those whose session is no
    /// longer open (`in_session`) and who have not said so for [`LEAVING_FORGOTTEN`].
    fn leaving(&mut self, now: Instant, in_session: &HashSet<NodeId>) -> Vec<NodeId> {
        self.leaving.retain(|node, said| {
            in_session.contains(node) || now.duration_since(said.at) < LEAVING_FORGOTTEN
        });
        let mut nodes: Vec<NodeId> = self.leaving.keys().cloned().collect();
        nodes
            .sort_unstable_by(|a, b| (a.name(), a.incarnation()).cmp(&(b.name(), b.incarnation())));
        nodes
    }

    /// The names of the voters whose votes move now without the grace: they asked within
    /// [`HANDING_OVER`] as of `now`, were not told they keep their votes, and no later
    /// incarnation of their name has a session open (`in_session`: one restarted at once).
    fn handing_over(&self, now: Instant, in_session: &HashSet<NodeId>) -> Vec<String> {
        let mut names: Vec<String> = self
            .leaving
            .iter()
            .filter(|(_, said)| said.hands_over && now.duration_since(said.at) < HANDING_OVER)
            .filter(|(node, _)| {
                !in_session
                    .iter()
                    .any(|n| n.name() == node.name() && n.incarnation() > node.incarnation())
            })
            .map(|(node, _)| node.name().to_owned())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Leadership {
    pub(crate) fn new(clock_rate: f64, lease: LeaderLease, cluster: Cluster) -> Self {
        Leadership {
            duties: Arc::default(),
            cluster,
            changing: Arc::default(),
            lease,
            clock_rate,
        }
    }

    /// Confirms that this node still leads, for a read or a keepalive that arrived before the
    /// call, and waits until its state machine has applied everything committed before: on
    /// the leader's lease while it holds (`raft::lease`), else by a heartbeat round to a
    /// quorum (`Raft::ensure_linearizable`).
    pub(crate) async fn confirm(&self, raft: &Raft<TypeConfig>) -> Result<(), ServerError> {
        let read = match self.lease.read_index(raft).await {
            Some(read) => {
                metrics::counter!("ensemble_registry_reads_total", "confirmed_by" => "lease")
                    .increment(1);
                Some(read)
            }
            None => {
                metrics::counter!("ensemble_registry_reads_total", "confirmed_by" => "heartbeat")
                    .increment(1);
                raft.ensure_linearizable().await.map_err(server_error)?
            }
        };
        let Some(read) = read else {
            return Ok(());
        };
        let index = read.index;
        raft.wait(None)
            .applied_index_at_least(Some(index), "a linearizable read")
            .await
            .map_err(|e| {
                ServerError::Raft(format!("waiting to apply entry {index} for a read: {e}"))
            })?;
        Ok(())
    }

    /// The nodes that leave and the nodes with an open session, as of now.
    fn leaving_now(&self, state_machine: &StateMachine) -> (Vec<NodeId>, HashSet<NodeId>) {
        let in_session = open_sessions(state_machine);
        let leaving = self.duties.lock().leaving(Instant::now(), &in_session);
        (leaving, in_session)
    }

    /// Whether the voter named `name` hands its vote over, as of now.
    fn hands_over(&self, name: &str, state_machine: &StateMachine) -> bool {
        let in_session = open_sessions(state_machine);
        let duties = self.duties.lock();
        duties
            .handing_over(Instant::now(), &in_session)
            .iter()
            .any(|n| n == name)
    }

    /// How fast this node's clock runs (`RegistryConfig::clock_rate`).
    pub(crate) fn clock_rate(&self) -> f64 {
        self.clock_rate
    }

    /// Whether this node leads the registry (its duty loop has seen it become leader of the
    /// current term and not lose it since).
    pub(crate) fn leads(&self) -> bool {
        self.duties.lock().since.is_some()
    }

    /// Notes that `node` leaves on purpose, and says how the hand-over of its vote stands,
    /// if it asks for one (`hand_over`): `applied` is the applied configuration, `effective`
    /// the last in this node's log. The duty loop makes the change (a
    /// [`VoterChange::Replace`] without the voter grace); a voter asks again until the answer
    /// is not [`Handover::UnderWay`]. A node that leaves is given no vote.
    pub(crate) fn hand_over(
        &self,
        node: &NodeId,
        hand_over: bool,
        applied: &openraft::Membership<u64, Voter>,
        effective: &openraft::Membership<u64, Voter>,
        state_machine: &StateMachine,
    ) -> Handover {
        let id = raft_id(node.name());
        let in_session = open_sessions(state_machine);
        let now = Instant::now();
        // Not done while a configuration that is not applied yet counts it.
        let counts = |m: &openraft::Membership<u64, Voter>| m.voter_ids().any(|v| v == id);
        let voter = counts(applied) || counts(effective);
        let mut duties = self.duties.lock();
        let said = Leaving {
            at: now,
            hands_over: voter && hand_over,
        };
        let earlier = duties.leaving.insert(node.clone(), said);
        if !voter {
            return Handover::NotAVoter;
        }
        if !hand_over {
            return Handover::NoneToTake;
        }
        let keeps = Leaving {
            hands_over: false,
            ..said
        };
        // Told once that it keeps its vote, it keeps it: it stands for election again.
        if earlier.is_some_and(|e| !e.hands_over) {
            duties.leaving.insert(node.clone(), keeps);
            return Handover::NoneToTake;
        }
        let leaving = duties.leaving(now, &in_session);
        // A change under way (maybe this one), or halfway (a joint configuration): the next
        // one waits for it.
        let joint = |m: &openraft::Membership<u64, Voter>| m.get_joint_config().len() > 1;
        if self.changing.load(Ordering::Acquire) || joint(applied) || joint(effective) {
            return Handover::UnderWay { to: None };
        }
        let voters: Vec<u64> = applied.voter_ids().collect();
        // More voters than an operator's count: the vote goes without a node to take it
        // ([`VoterChange::Shrink`] takes a voter that hands its vote over first).
        let count = state_machine.read(RegistryState::voter_count);
        if count.is_some_and(|count| voters.len() > count) {
            return Handover::UnderWay { to: None };
        }
        match candidate(&self.cluster, &voters, &leaving, &in_session) {
            Some(to) => Handover::UnderWay { to: Some(to) },
            None => {
                // Said once, for good: no change moves its vote after this.
                duties.leaving.insert(node.clone(), keeps);
                Handover::NoneToTake
            }
        }
    }

    /// Moves the vote of node `from` to node `to`, on an operator's word, and says how the move
    /// stands: `applied` is the applied configuration, `effective` the last in this node's
    /// log. The first ask starts the change (`to` caught up as a learner, then swapped in for
    /// `from`, which stays a learner until its log holds the configuration without its vote,
    /// then is dropped: so it never stands for election on a log that still names it a
    /// voter); the caller asks again (not `first`) until the answer is [`VoteMove::Done`] or
    /// an error.
    pub(crate) fn move_vote(
        &self,
        raft: &Raft<TypeConfig>,
        (from, to, first): (&str, &str, bool),
        applied: &openraft::Membership<u64, Voter>,
        effective: &openraft::Membership<u64, Voter>,
        state_machine: &StateMachine,
    ) -> Result<VoteMove, ServerError> {
        let refuse = |why: String| Err(ServerError::VoteNotMoved { why, tried: false });
        let (from_id, to_id) = (raft_id(from), raft_id(to));
        let votes = |m: &openraft::Membership<u64, Voter>, id: u64| m.voter_ids().any(|v| v == id);
        let joint = |m: &openraft::Membership<u64, Voter>| m.get_joint_config().len() > 1;
        if from == to {
            return refuse(format!(
                "node {from} was named both as the voter to move from and as the node to move to"
            ));
        }
        let settled = !joint(applied) && !joint(effective);
        if settled
            && !first
            && [applied, effective]
                .iter()
                .all(|m| votes(m, to_id) && !votes(m, from_id))
        {
            return Ok(VoteMove::Done);
        }
        // A later ask of a move that failed is told why (again, should an answer be lost); a
        // first ask tries anew.
        let failed = {
            let duties = self.duties.lock();
            let this_move = |f: &&MoveFailed| {
                f.from == from && f.to == to && f.at.elapsed() < MOVE_FAILURE_KEPT
            };
            duties
                .move_failed
                .as_ref()
                .filter(this_move)
                .map(|f| f.why.clone())
        };
        if let (false, Some(why)) = (first, failed) {
            return Err(ServerError::VoteNotMoved { why, tried: true });
        }
        // A change under way (maybe this one), or halfway: this one waits for it.
        if self.changing.load(Ordering::Acquire) || !settled {
            return Ok(VoteMove::UnderWay);
        }
        let names = voter_names(applied);
        if !votes(applied, from_id) {
            return refuse(format!(
                "node {from} does not vote in the registry (the voters are {names}); name one of \
                 them to move from"
            ));
        }
        if votes(applied, to_id) {
            return refuse(format!(
                "node {to} votes in the registry already (the voters are {names}); name a node \
                 that does not to move to"
            ));
        }
        let (leaving, in_session) = self.leaving_now(state_machine);
        if let Some(why) = may_not_vote(&self.cluster, to, &leaving, &in_session) {
            return refuse(why);
        }
        if self.changing.swap(true, Ordering::AcqRel) {
            return Ok(VoteMove::UnderWay);
        }
        self.duties.lock().move_failed = None;
        let change = VoterChange::Move {
            voters: applied.voter_ids().collect(),
            from: from_id,
            from_name: from.to_owned(),
            to: to.to_owned(),
        };
        let (raft, leadership, changing, state_machine) = (
            raft.clone(),
            self.clone(),
            self.changing.clone(),
            state_machine.clone(),
        );
        let me = raft_id(self.cluster.node().id().name());
        let (from, to) = (from.to_owned(), to.to_owned());
        tokio::spawn(async move {
            let _done = ChangeUnderWay(changing);
            let made = change.make(&raft, &leadership, &state_machine, me);
            let why = match tokio::time::timeout(CHANGE_LIMIT, made).await {
                Ok(Ok(())) => return,
                Ok(Err(why)) => why,
                Err(_) => format!("the change did not finish within {CHANGE_LIMIT:?}"),
            };
            leadership.duties.lock().move_failed = Some(MoveFailed {
                from,
                to,
                why,
                at: Instant::now(),
            });
        });
        Ok(VoteMove::UnderWay)
    }

    /// Records a keepalive from `node`, once leadership is confirmed after it arrived.
    pub(crate) async fn keepalive(
        &self,
        raft: &Raft<TypeConfig>,
        state_machine: &StateMachine,
        node: &NodeId,
    ) -> Result<(), ServerError> {
        let received = Instant::now();
        self.confirm(raft).await?;
        // After the read index: the state reflects every committed command.
        let (open, expired) =
            state_machine.read(|state| (state.session(node).is_some(), state.has_expired(node)));
        if expired {
            return Err(ServerError::SessionExpired(node.clone()));
        }
        if !open {
            return Err(ServerError::NoSession(node.clone()));
        }
        let mut duties = self.duties.lock();
        // An expiry this leader proposed already, not applied yet: acknowledging the keepalive
        // would let the node count its session valid (and take leases) for another TTL while
        // the expiry commits and hands its locks to others. Refused, the node stays fenced;
        // should the expiry fail, the next keepalive after it is taken again.
        if duties.expiring.contains(node) {
            return Err(ServerError::Raft(format!(
                "the session of node {node} is being expired: it was silent past its TTL"
            )));
        }
        if duties.since.is_some() {
            // The later of the two: a keepalive confirmed slowly must not take back a later one
            // confirmed before it.
            duties
                .last_seen
                .entry(node.clone())
                .and_modify(|seen| *seen = (*seen).max(received))
                .or_insert(received);
        }
        Ok(())
    }

    /// Runs the leader's duties for as long as the Raft node runs: `voters` is the size the
    /// voter set is grown to until an operator sets one for the cluster
    /// ([`Command::SetVoterCount`]), `grace` how long a voter may be gone (its session ended,
    /// its node not connected) before another node takes its vote. A voter that leaves on purpose
    /// ([`Leadership::hand_over`]) gives its vote up without the grace.
    pub(crate) async fn run(
        self,
        raft: Raft<TypeConfig>,
        state_machine: StateMachine,
        voters: usize,
        grace: Duration,
    ) {
        let cluster = self.cluster.clone();
        let me = raft_id(cluster.node().id().name());
        // Only the server's metrics (state, leader, vote, membership): the full metrics change
        // with every write, and a duty loop woken by each would spend CPU on every voter.
        let mut metrics = raft.server_metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_growth = Instant::now();
        // One change of the voters at a time: the next waits until this one is done.
        let changing = self.changing.clone();
        loop {
            let (leading, term, membership) = {
                let m = metrics.borrow_and_update();
                (
                    m.state == ServerState::Leader && m.current_leader == Some(me),
                    m.vote.leader_id().get_term(),
                    m.membership_config.clone(),
                )
            };
            if !leading {
                self.duties.lock().step_down();
                // Nothing to do until this node leads: no tick on followers.
                if metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            if self.duties.lock().lead(term, now) {
                tracing::info!(node = %cluster.node().id(), term, "became the registry leader");
            }
            self.expire_overdue(&raft, &state_machine, cluster.node().id(), now);
            if now.duration_since(last_growth) >= Duration::from_millis(200) {
                last_growth = now;
                let stored = &membership;
                let membership = membership.membership();
                let gone = gone_members(membership, &state_machine, &cluster, me);
                let in_session = open_sessions(&state_machine);
                let (mut gone, leaving, handing_over) = {
                    let mut duties = self.duties.lock();
                    let gone = duties.gone_for_good(&gone, now, grace, self.clock_rate);
                    let leaving = duties.leaving(now, &in_session);
                    (gone, leaving, duties.handing_over(now, &in_session))
                };
                // Voters that hand their votes over count as gone for good at once.
                gone.extend(
                    handing_over
                        .iter()
                        .map(|name| raft_id(name))
                        .filter(|id| membership.voter_ids().any(|voter| voter == *id)),
                );
                gone.sort_unstable();
                gone.dedup();
                let caught_up = learners_holding(&raft, membership);
                let unreachable = unreachable_members(membership, &cluster, me);
                let voter_ids: Vec<u64> = membership.voter_ids().collect();
                let leaving_ids: Vec<u64> = leaving.iter().map(|n| raft_id(n.name())).collect();
                let seen = Seen {
                    gone: &gone,
                    leaving: &leaving_ids,
                    unreachable: &unreachable,
                    caught_up: &caught_up,
                    candidate: candidate(&cluster, &voter_ids, &leaving, &in_session).is_some(),
                };
                // Set for the cluster by an operator, or this node's setting until then. Only
                // once this node applied an entry of its own term (so every count committed
                // before its election) and the last configuration in its log (the count that
                // led to it comes before it): a leader just elected must not act on a count it
                // has not read yet, undoing the change the count asked for.
                let applied_own_term = raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .is_some_and(|applied| applied.leader_id.term == term);
                let read = applied_own_term && state_machine.voters().1 == *stored.log_id();
                let size = read.then(|| {
                    state_machine
                        .read(RegistryState::voter_count)
                        .map_or(Size::AtLeast(voters), Size::Exactly)
                });
                let change = size.and_then(|size| VoterChange::next(membership, size, me, &seen));
                let idle = change.is_some() && !changing.swap(true, Ordering::AcqRel);
                if let (Some(change), true) = (change, idle) {
                    // Apart from the duty loop: a learner catching up must not delay expiries.
                    let (raft, leadership, changing, state_machine) = (
                        raft.clone(),
                        self.clone(),
                        changing.clone(),
                        state_machine.clone(),
                    );
                    tokio::spawn(async move {
                        let _done = ChangeUnderWay(changing);
                        let change = change.make(&raft, &leadership, &state_machine, me);
                        if tokio::time::timeout(CHANGE_LIMIT, change).await.is_err() {
                            tracing::warn!(
                                "a change of the registry's voters did not finish within {CHANGE_LIMIT:?}"
                            );
                        }
                    });
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    }

    /// Proposes the expiry of every session overdue by this leader's clock.
    fn expire_overdue(
        &self,
        raft: &Raft<TypeConfig>,
        state_machine: &StateMachine,
        me: &NodeId,
        now: Instant,
    ) {
        let sessions: Vec<(NodeId, Duration)> = state_machine.read(|state| {
            state
                .sessions()
                .map(|s| (s.node.clone(), Duration::from_millis(s.ttl_ms)))
                .collect()
        });
        let mut overdue = Vec::new();
        {
            let mut duties = self.duties.lock();
            let Some(since) = duties.since else { return };
            duties.forget_ended(&sessions);
            // The leader's own node is evidently alive while it runs this.
            duties.last_seen.insert(me.clone(), now);
            for (node, ttl) in sessions {
                // A session this leader sees for the first time (opened since the last tick)
                // counts its TTL from now, as if its opening were its first keepalive.
                let last = (*duties.last_seen.entry(node.clone()).or_insert(now)).max(since);
                let silent = now.duration_since(last).mul_f64(self.clock_rate);
                if silent > ttl && duties.expiring.insert(node.clone()) {
                    overdue.push(node);
                }
            }
        }
        for node in overdue {
            tracing::warn!(%node, "session overdue: proposing its expiry");
            metrics::counter!("ensemble_registry_sessions_expired_total").increment(1);
            let raft = raft.clone();
            let duties = self.duties.clone();
            tokio::spawn(async move {
                let command = Command::ExpireSession { node: node.clone() };
                match raft.client_write(Batch::new(vec![command])).await {
                    Ok(_) => tracing::info!(%node, "session expired"),
                    Err(err) => {
                        tracing::warn!(%node, %err, "could not expire the session; will retry");
                        duties.lock().expiring.remove(&node);
                    }
                }
            });
        }
    }
}

/// The Raft ids of the voters and learners that are gone: no open session under their name
/// and no connection to this node (`me`, never gone while it runs this).
///
/// Both, because each alone may mislead: a node that has just started is connected before
/// its session opens, and a session outlives its node by up to a TTL.
fn gone_members(
    membership: &openraft::Membership<u64, Voter>,
    state_machine: &StateMachine,
    cluster: &Cluster,
    me: u64,
) -> Vec<u64> {
    let connected: HashSet<String> = cluster
        .members()
        .into_iter()
        .map(|m| m.node.name().to_owned())
        .collect();
    let in_session: HashSet<String> =
        state_machine.read(|state| state.sessions().map(|s| s.node.name().to_owned()).collect());
    membership
        .nodes()
        .filter(|(id, voter)| {
            **id != me && !connected.contains(&voter.name) && !in_session.contains(&voter.name)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The Raft ids of the voters and learners whose nodes this node (`me`) is not connected to
/// now, or suspects: the first to let go of when the voters shrink, after those gone.
fn unreachable_members(
    membership: &openraft::Membership<u64, Voter>,
    cluster: &Cluster,
    me: u64,
) -> Vec<u64> {
    let up: HashSet<String> = cluster
        .members()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up)
        .map(|m| m.node.name().to_owned())
        .collect();
    membership
        .nodes()
        .filter(|(id, voter)| **id != me && !up.contains(&voter.name))
        .map(|(id, _)| *id)
        .collect()
}

/// The learners of `membership` whose logs, as this leader's replication to them shows, hold
/// the configuration this leader's log ends with (`membership` as a rule).
fn learners_holding(
    raft: &Raft<TypeConfig>,
    membership: &openraft::Membership<u64, Voter>,
) -> Vec<u64> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let config = *metrics.membership_config.log_id();
    let Some(replication) = metrics.replication.as_ref() else {
        return Vec::new();
    };
    membership
        .learner_ids()
        .filter(|id| {
            replication
                .get(id)
                .is_some_and(|matched| *matched >= config)
        })
        .collect()
}

/// The names of `membership`'s voters, joined by commas, for a message.
fn voter_names(membership: &openraft::Membership<u64, Voter>) -> String {
    let mut names: Vec<&str> = membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|voter| voter.name.as_str()))
        .collect();
    names.sort_unstable();
    names.join(", ")
}

/// What the leader sees of the configuration's nodes at a duty tick, by Raft id.
#[derive(Clone, Copy, Debug)]
struct Seen<'a> {
    /// Gone for good, or handing their votes over as they leave.
    gone: &'a [u64],
    /// Leaving (among them those told that they keep their votes, no node being free to
    /// take one).
    leaving: &'a [u64],
    /// Not connected to the leader now, or suspected.
    unreachable: &'a [u64],
    /// Learners whose logs hold the configuration the leader's log ends with.
    caught_up: &'a [u64],
    /// Whether a member that does not vote may take a vote now ([`candidate`]).
    candidate: bool,
}

/// How many voters the leader keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    /// Its node's `voters` setting: it grows the voters to it, and never shrinks them (nodes
    /// started with other settings, or a setting lowered across a restart, do not take votes
    /// away; a leader of each would undo the other's changes).
    AtLeast(usize),
    /// As an operator set it for the cluster ([`Command::SetVoterCount`]): grown or shrunk
    /// to it.
    Exactly(usize),
}

/// One change of the Raft configuration the leader makes, the most pressing first.
#[derive(Debug, PartialEq, Eq)]
enum VoterChange {
    /// A change left halfway (its leader lost the lead between the joint configuration and
    /// the final one) is finished first: to these voters, the joint configuration's last.
    FinishJoint(Vec<u64>),
    /// Learners gone for good leave the configuration, so the leader stops sending them the
    /// log (a learner is left by a change that timed out while it caught up).
    DropLearners(Vec<u64>),
    /// One more voter, the voter set being below its size: the first by name of the members
    /// that may vote.
    Grow { voters: Vec<u64> },
    /// One voter fewer, the voter set being above the size an operator set, chosen as
    /// [`VoterChange::next`] says (never the leader, unless it hands its vote over as it
    /// leaves). It stays a learner until its log holds the configuration without its vote.
    Shrink { out: u64, out_name: String },
    /// A voter gone for good gives its vote to a member that may vote, if there is one, so
    /// that the registry can lose another voter and still have a majority. With none, it
    /// keeps its vote: removing it would not let the registry lose another.
    Replace {
        voters: Vec<u64>,
        gone: u64,
        gone_name: String,
    },
    /// An operator moves the vote of `from` to node `to` ([`Leadership::move_vote`]); `from`
    /// stays a learner until its log holds the configuration without its vote.
    Move {
        voters: Vec<u64>,
        from: u64,
        from_name: String,
        to: String,
    },
}

impl VoterChange {
    /// What to change next in `membership`, if anything, to keep `size` voters of which none
    /// is gone (`seen`), and no learner once none is needed. Of more voters than a size set
    /// `Exactly`, one goes, of those whose going leaves a majority of voters the leader
    /// reaches: one unreachable first, then one gone (the leader itself only if it hands its
    /// vote over), then one leaving, else the last by name but the leader (`me`). A vote is
    /// added or moved only while a member may take it. With nothing else
    /// to do, the learners caught up (whose logs hold `membership`) are dropped. A learner is
    /// left by a voter whose vote went while it ran (kept until its log holds the
    /// configuration without its vote, so that it does not stand for election on a log that
    /// still names it a voter), or by a catch-up that timed out.
    fn next(
        membership: &openraft::Membership<u64, Voter>,
        size: Size,
        me: u64,
        seen: &Seen<'_>,
    ) -> Option<VoterChange> {
        let Seen {
            gone,
            leaving,
            unreachable,
            caught_up,
            candidate,
        } = *seen;
        let joint = membership.get_joint_config();
        if joint.len() > 1 {
            let last = joint.last().into_iter().flatten().copied().collect();
            return Some(VoterChange::FinishJoint(last));
        }
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership
            .learner_ids()
            .filter(|id| gone.contains(id))
            .collect();
        if !learners.is_empty() {
            return Some(VoterChange::DropLearners(learners));
        }
        let name_of = |id: u64| {
            membership
                .get_node(&id)
                .map_or_else(|| id.to_string(), |voter| voter.name.clone())
        };
        let (Size::AtLeast(wanted) | Size::Exactly(wanted)) = size;
        if voters.len() < wanted && candidate {
            return Some(VoterChange::Grow { voters });
        }
        // The voters left must hold a majority this leader reaches (itself among them): the
        // change's new configuration could never commit without one, and every write would
        // wait behind it.
        let leaves_a_majority = |out: u64| {
            let rest: Vec<u64> = voters.iter().copied().filter(|v| *v != out).collect();
            let reached = rest
                .iter()
                .filter(|v| **v == me || !unreachable.contains(v))
                .count();
            reached * 2 > rest.len()
        };
        let out = voters
            .iter()
            .copied()
            .filter(|id| *id != me || gone.contains(id))
            .filter(|id| leaves_a_majority(*id))
            .max_by_key(|id| {
                let rank = |among: &[u64]| among.contains(id);
                (rank(unreachable), rank(gone), rank(leaving), name_of(*id))
            });
        if let (Some(out), Size::Exactly(wanted)) = (out, size)
            && voters.len() > wanted
        {
            return Some(VoterChange::Shrink {
                out,
                out_name: name_of(out),
            });
        }
        if let Some(gone) = voters.iter().find(|id| gone.contains(id)).copied()
            && candidate
        {
            let gone_name = name_of(gone);
            return Some(VoterChange::Replace {
                voters,
                gone,
                gone_name,
            });
        }
        let idle: Vec<u64> = membership
            .learner_ids()
            .filter(|id| caught_up.contains(id))
            .collect();
        (!idle.is_empty()).then_some(VoterChange::DropLearners(idle))
    }

    /// Makes the change through Raft: a new voter is first added as a learner and caught up
    /// (for up to [`CATCH_UP`], and only while its node stays connected and does not leave),
    /// then swapped in, unless the voters changed meanwhile or the gone voter came back (and
    /// does not leave). Says why, if the change was not made.
    ///
    /// A voter whose vote goes stays a learner (openraft's `retain`) until its log holds the
    /// configuration without its vote ([`VoterChange::next`] drops it then, or once it is
    /// gone for good): the leader goes on replicating to it, so a voter removed while it
    /// still runs (one that leaves, one whose vote an operator moves, one removed when a new
    /// leader finishes a change left halfway) learns that it no longer votes, and openraft
    /// does not let it stand for election from then on. Removed outright, it would get no
    /// more of the log, and could stand on a log that still names it a voter, raise its
    /// term, and make a leader step down when it is taken back one day.
    ///
    /// The change itself is cut short only after [`CHANGE_LIMIT`]: openraft makes it in two
    /// entries (the joint configuration, then the final one), and one abandoned between them
    /// leaves the registry needing a majority of both until a leader finishes it
    /// ([`VoterChange::FinishJoint`]).
    async fn make(
        self,
        raft: &Raft<TypeConfig>,
        leadership: &Leadership,
        state_machine: &StateMachine,
        me: u64,
    ) -> Result<(), String> {
        let cluster = &leadership.cluster;
        // The voters, the one whose vote goes (if any), and the node to take a vote if an
        // operator chose it.
        let (voters, gone, chosen) = match self {
            VoterChange::FinishJoint(voters) => {
                tracing::info!(?voters, "finishing a change of the registry's voters");
                return raft
                    .change_membership(voters, true)
                    .await
                    .map(drop)
                    .map_err(|err| format!("could not finish the change of the voters: {err}"))
                    .inspect_err(|err| tracing::warn!("{err}"));
            }
            VoterChange::DropLearners(learners) => {
                tracing::info!(
                    ?learners,
                    "removing registry learners no longer needed (gone, or holding the \
                     configuration that left them without a vote)"
                );
                let remove = openraft::ChangeMembers::RemoveNodes(learners.into_iter().collect());
                return raft
                    .change_membership(remove, false)
                    .await
                    .map(drop)
                    .map_err(|err| format!("could not remove the learners: {err}"))
                    .inspect_err(|err| tracing::warn!("{err}"));
            }
            VoterChange::Shrink { out, out_name } => {
                tracing::info!(
                    voter = %out_name,
                    "the registry keeps fewer voters, as an operator asked: node {out_name} \
                     gives its vote up"
                );
                let remove = openraft::ChangeMembers::RemoveVoters([out].into());
                return raft
                    .change_membership(remove, true)
                    .await
                    .map(drop)
                    .map_err(|err| format!("could not remove voter {out_name}: {err}"))
                    .inspect_err(|err| tracing::warn!("{err}"));
            }
            VoterChange::Grow { voters } => (voters, None, None),
            VoterChange::Replace {
                voters,
                gone,
                gone_name,
            } => (voters, Some((gone, gone_name)), None),
            VoterChange::Move {
                voters,
                from,
                from_name,
                to,
            } => (voters, Some((from, from_name)), Some(to)),
        };
        let (leaving, in_session) = leadership.leaving_now(state_machine);
        let by_hand = chosen.is_some();
        let name = match chosen {
            Some(name) => name,
            None => candidate(cluster, &voters, &leaving, &in_session)
                .ok_or("no member may take a vote")?,
        };
        let id = raft_id(&name);
        match &gone {
            None => tracing::info!(voter = %name, "adding a registry voter"),
            Some((_, gone)) if by_hand => tracing::info!(
                voter = %name,
                %gone,
                "moving the registry vote of node {gone} to node {name}, as an operator asked"
            ),
            Some((_, gone)) if leadership.hands_over(gone, state_machine) => tracing::info!(
                voter = %name,
                %gone,
                "registry voter {gone} leaves the cluster: giving its vote to node {name}"
            ),
            Some((_, gone)) => tracing::warn!(
                voter = %name,
                %gone,
                "registry voter {gone} is gone (no session, no connection, for longer than the voter \
                 grace): giving its vote to node {name}"
            ),
        }
        let learner = raft.add_learner(id, Voter { name: name.clone() }, true);
        // A node that leaves, or goes, while it catches up will not: another is picked at a
        // later tick (nodes that stop together would otherwise hold each change for the whole
        // catch-up time).
        let candidate_went = async {
            loop {
                tokio::time::sleep(CANDIDATE_CHECK).await;
                let (leaving, in_session) = leadership.leaving_now(state_machine);
                if !still_candidate(cluster, &name, &leaving, &in_session) {
                    return;
                }
            }
        };
        let not_made = |why: String| {
            tracing::info!(voter = %name, "{why}");
            Err(why)
        };
        tokio::select! {
            caught_up = tokio::time::timeout(CATCH_UP, learner) => match caught_up {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    return not_made(format!("could not add node {name} as a learner: {err}"));
                }
                Err(_) => {
                    return not_made(format!("node {name} did not catch up within {CATCH_UP:?}"));
                }
            },
            () = candidate_went => {
                return not_made(format!("node {name} left or went while it caught up"));
            }
        }
        // The catch-up took a while: make the change only if it still holds. (`add_learner`
        // also returns when this node stopped leading meanwhile.)
        let (leads, now) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (
                metrics.current_leader == Some(me),
                metrics.membership_config.clone(),
            )
        };
        if !leads {
            return not_made(format!(
                "this node lost its lead while node {name} caught up"
            ));
        }
        let now = now.membership();
        let mut before = voters.clone();
        before.sort_unstable();
        let mut after: Vec<u64> = now.voter_ids().collect();
        after.sort_unstable();
        if before != after || now.get_joint_config().len() > 1 {
            return not_made(format!(
                "the registry's voters changed while node {name} caught up"
            ));
        }
        if let Some((gone, gone_name)) = &gone
            && !by_hand
            && !leadership.hands_over(gone_name, state_machine)
            && !gone_members(now, state_machine, cluster, me).contains(gone)
        {
            return not_made(format!(
                "the gone voter {gone_name} came back; it keeps its vote"
            ));
        }
        // Nor to a node that began to leave, or went, while it caught up.
        let (leaving, in_session) = leadership.leaving_now(state_machine);
        if !still_candidate(cluster, &name, &leaving, &in_session) {
            return not_made(format!("node {name} leaves or went while it caught up"));
        }
        let gone = gone.map(|(id, _)| id);
        let mut next: Vec<u64> = voters.into_iter().filter(|v| Some(*v) != gone).collect();
        next.push(id);
        match raft.change_membership(next, true).await {
            Ok(_) => {
                tracing::info!(voter = %name, "registry voter added");
                Ok(())
            }
            Err(err) => {
                let why = format!("could not make node {name} a voter: {err}");
                tracing::warn!("{why}");
                Err(why)
            }
        }
    }
}

/// Clears the flag of a change of the voters under way when the change ends, however it ends.
struct ChangeUnderWay(Arc<AtomicBool>);

impl Drop for ChangeUnderWay {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How long a new voter may take to catch up before the change is given up (and tried again
/// at a later tick).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(10);

/// How long a whole change may take before the duty loop stops waiting for it and may start
/// another: a leader cut off from its majority may wait for a commit that never comes.
const CHANGE_LIMIT: Duration = Duration::from_secs(60);

/// How long a node that leaves is remembered after its last word once its session is no
/// longer open ([`Duties::leaving`]); it says it every 0.5 s while it leaves
/// (`client::handover`).
const LEAVING_FORGOTTEN: Duration = Duration::from_secs(2);

/// How long after its last ask a voter's vote is moved without the grace
/// ([`Duties::handing_over`]); it asks every 100 ms while it waits, and one that stopped
/// asking gave up (and leaves a voter).
const HANDING_OVER: Duration = Duration::from_millis(500);

/// How long the failure of a vote move asked by an operator is kept for its next ask (it asks
/// every 0.1 s while it waits).
const MOVE_FAILURE_KEPT: Duration = Duration::from_secs(2);

/// How often a change checks that the node catching up to take a vote is still connected and
/// does not leave.
const CANDIDATE_CHECK: Duration = Duration::from_millis(100);

/// The first by name of the connected members that may vote and do not (`voters`), have an
/// open session (`in_session`: one that closed it is on its way out) and do not leave
/// (`leaving`).
fn candidate(
    cluster: &Cluster,
    voters: &[u64],
    leaving: &[NodeId],
    in_session: &HashSet<NodeId>,
) -> Option<String> {
    cluster
        .members()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up)
        .filter(|m| m.labels.get(VOTER_LABEL).is_none_or(|v| v != "no"))
        .filter(|m| in_session.contains(&m.node) && !leaving.contains(&m.node))
        .map(|m| m.node.name().to_owned())
        .filter(|name| !voters.contains(&raft_id(name)))
        .min()
}

/// Whether node `name`, catching up to take a vote, may still take it: a member (suspected
/// for a moment, say, but not down and not gone) with an open session that does not leave.
/// Not necessarily the first by name any more: one that joined meanwhile may come before
/// it.
fn still_candidate(
    cluster: &Cluster,
    name: &str,
    leaving: &[NodeId],
    in_session: &HashSet<NodeId>,
) -> bool {
    cluster.members().iter().any(|m| {
        m.node.name() == name && in_session.contains(&m.node) && !leaving.contains(&m.node)
    })
}

/// Why node `name` may not take a vote an operator moves to it, if it may not: it must be a
/// member that is up, may vote (its `registry.voter` label is not `no`), has an open session
/// and does not leave.
fn may_not_vote(
    cluster: &Cluster,
    name: &str,
    leaving: &[NodeId],
    in_session: &HashSet<NodeId>,
) -> Option<String> {
    let members = cluster.members();
    let Some(member) = members.iter().find(|m| m.node.name() == name) else {
        return Some(format!(
            "node {name} is not a member of the cluster as the registry's leader, node {}, sees it",
            cluster.node().id().name()
        ));
    };
    if member.status != MemberStatus::Up {
        return Some(format!(
            "node {name} is {:?}, not up, as the registry's leader sees it",
            member.status
        ));
    }
    if member.labels.get(VOTER_LABEL).is_some_and(|v| v == "no") {
        return Some(format!(
            "node {name} may not vote: its label {VOTER_LABEL} is \"no\""
        ));
    }
    if leaving.contains(&member.node) {
        return Some(format!("node {name} is leaving the cluster"));
    }
    if !in_session.contains(&member.node) {
        return Some(format!("node {name} has no open registry session"));
    }
    None
}

/// The nodes (incarnations) with an open session.
fn open_sessions(state_machine: &StateMachine) -> HashSet<NodeId> {
    state_machine.read(|state| state.sessions().map(|s| s.node.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_a_later_term_forgets_the_keepalives_of_the_earlier_one() {
        let start = Instant::now();
        let node = NodeId::new("n1", 1);
        let mut duties = Duties::default();
        assert!(duties.lead(5, start), "the first term led begins the lead");
        duties.last_seen.insert(node.clone(), start);
        duties.expiring.insert(node.clone());

        let later = start + Duration::from_secs(1);
        assert!(!duties.lead(5, later), "the same term goes on");
        assert_eq!(duties.since, Some(start));
        assert_eq!(duties.last_seen.get(&node), Some(&start));

        // Term 6 led by another node in between, never seen by this one's duty loop.
        let again = start + Duration::from_secs(2);
        assert!(duties.lead(7, again), "a later term begins a new lead");
        assert_eq!(duties.since, Some(again));
        assert!(
            duties.last_seen.is_empty(),
            "keepalive times of term 5 are gone"
        );
        assert!(duties.expiring.is_empty());
    }

    /// A node that leaves counts as leaving while its session is open, and for
    /// [`LEAVING_FORGOTTEN`] after its last word once it is not: one that gave up waiting and
    /// left a voter counts as any other then (its vote moves after the grace), and a later
    /// incarnation of its name is not taken for it.
    #[test]
    fn a_leaving_node_is_forgotten_once_its_session_ended_and_it_stopped_asking() {
        let start = Instant::now();
        let (a, b) = (NodeId::new("a", 1), NodeId::new("b", 1));
        let said = |at| Leaving {
            at,
            hands_over: false,
        };
        let mut duties = Duties::default();
        duties.leaving.insert(b.clone(), said(start));
        duties
            .leaving
            .insert(a.clone(), said(start + LEAVING_FORGOTTEN / 2));
        let none = HashSet::default();
        assert_eq!(
            duties.leaving(start, &none),
            [a.clone(), b.clone()],
            "sorted by name"
        );
        let later = start + LEAVING_FORGOTTEN;
        assert_eq!(
            duties.leaving(later, &none),
            vec![a.clone()],
            "b stopped asking"
        );
        let a_in_session: HashSet<NodeId> = [a.clone()].into_iter().collect();
        let much_later = later + LEAVING_FORGOTTEN;
        assert_eq!(
            duties.leaving(much_later, &a_in_session),
            vec![a.clone()],
            "a's session is still open"
        );
        let a_again: HashSet<NodeId> = [NodeId::new("a", 2)].into_iter().collect();
        assert!(duties.leaving(much_later, &a_again).is_empty());
        assert!(duties.leaving.is_empty(), "forgotten, not only left out");
    }

    /// A member counts as gone for good only after `grace` without a break, and never
    /// before this node has led for that long.
    #[test]
    fn members_are_gone_for_good_after_a_grace_without_a_break() {
        let start = Instant::now();
        let grace = Duration::from_secs(1);
        let at = |ms| start + Duration::from_millis(ms);
        let mut duties = Duties::default();
        assert!(
            duties.gone_for_good(&[7], start, grace, 1.0).is_empty(),
            "not leading: nothing is gone"
        );
        duties.lead(3, start);
        assert!(duties.gone_for_good(&[7, 9], at(0), grace, 1.0).is_empty());
        assert!(
            duties
                .gone_for_good(&[7, 9], at(900), grace, 1.0)
                .is_empty()
        );
        // 9 came back for a moment: its grace starts over.
        assert!(duties.gone_for_good(&[7], at(950), grace, 1.0).is_empty());
        assert_eq!(duties.gone_for_good(&[7, 9], at(1_100), grace, 1.0), [7]);
        assert_eq!(duties.gone_for_good(&[7, 9], at(2_000), grace, 1.0), [7]);
        assert_eq!(duties.gone_for_good(&[7, 9], at(2_200), grace, 1.0), [7, 9]);
        // A clock that runs slow counts the time it measured as longer.
        let mut slow = Duties::default();
        slow.lead(3, start);
        slow.gone_for_good(&[7], at(0), grace, 2.0);
        assert_eq!(slow.gone_for_good(&[7], at(600), grace, 2.0), [7]);
        // A new lead starts counting afresh, whatever the last one saw.
        duties.lead(4, at(2_200));
        assert!(duties.gone_for_good(&[7], at(2_200), grace, 1.0).is_empty());
        assert!(duties.gone_for_good(&[7], at(3_100), grace, 1.0).is_empty());
        assert_eq!(duties.gone_for_good(&[7], at(3_300), grace, 1.0), [7]);
    }

    /// What a leader sees, a member that does not vote being free to take a vote.
    fn seen<'a>(gone: &'a [u64], unreachable: &'a [u64], caught_up: &'a [u64]) -> Seen<'a> {
        Seen {
            gone,
            leaving: &[],
            unreachable,
            caught_up,
            candidate: true,
        }
    }

    fn membership(voters: &[u64], learners: &[u64]) -> openraft::Membership<u64, Voter> {
        let nodes: std::collections::BTreeMap<u64, Voter> = voters
            .iter()
            .chain(learners)
            .map(|id| {
                (
                    *id,
                    Voter {
                        name: format!("n{id}"),
                    },
                )
            })
            .collect();
        openraft::Membership::new(vec![voters.iter().copied().collect()], nodes)
    }

    #[test]
    fn the_next_change_finishes_a_joint_configuration_first() {
        let nodes: std::collections::BTreeMap<u64, Voter> = (1..=4)
            .map(|id| {
                (
                    id,
                    Voter {
                        name: format!("n{id}"),
                    },
                )
            })
            .collect();
        let old = [1, 2, 3].into_iter().collect();
        let new = [1, 2, 4].into_iter().collect();
        let joint = openraft::Membership::new(vec![old, new], nodes);
        assert_eq!(
            VoterChange::next(&joint, Size::AtLeast(3), 1, &seen(&[3], &[], &[])),
            Some(VoterChange::FinishJoint(vec![1, 2, 4])),
            "its voters are both sets together: four of them, with the gone one"
        );
    }

    #[test]
    fn the_next_change_drops_gone_learners_then_grows_then_replaces() {
        let full = membership(&[1, 2, 3], &[]);
        assert_eq!(
            VoterChange::next(&full, Size::AtLeast(3), 1, &seen(&[], &[], &[])),
            None,
            "nothing to do"
        );
        assert_eq!(
            VoterChange::next(&full, Size::AtLeast(3), 1, &seen(&[2], &[], &[])),
            Some(VoterChange::Replace {
                voters: vec![1, 2, 3],
                gone: 2,
                gone_name: "n2".into(),
            })
        );
        let short = membership(&[1, 2], &[]);
        assert_eq!(
            VoterChange::next(&short, Size::AtLeast(3), 1, &seen(&[2], &[], &[])),
            Some(VoterChange::Grow { voters: vec![1, 2] }),
            "growing first: a replacement needs a full voter set to keep"
        );
        let with_learners = membership(&[1, 2, 3], &[4, 5]);
        assert_eq!(
            VoterChange::next(
                &with_learners,
                Size::AtLeast(3),
                1,
                &seen(&[3, 5], &[], &[])
            ),
            Some(VoterChange::DropLearners(vec![5])),
            "a gone learner goes before anything else"
        );
        assert_eq!(
            VoterChange::next(&with_learners, Size::AtLeast(3), 1, &seen(&[], &[], &[])),
            None,
            "a learner catching up is left to catch up"
        );
        assert_eq!(
            VoterChange::next(
                &with_learners,
                Size::AtLeast(3),
                1,
                &seen(&[], &[], &[4, 2])
            ),
            Some(VoterChange::DropLearners(vec![4])),
            "a learner whose log holds the configuration goes once nothing else is to do"
        );
        let short_with_learner = membership(&[1, 2], &[3]);
        assert_eq!(
            VoterChange::next(
                &short_with_learner,
                Size::AtLeast(3),
                1,
                &seen(&[], &[], &[3])
            ),
            Some(VoterChange::Grow { voters: vec![1, 2] }),
            "but not before a change that may need it: growing"
        );
        let full_with_learner = membership(&[1, 2, 3], &[4]);
        assert_eq!(
            VoterChange::next(
                &full_with_learner,
                Size::AtLeast(3),
                1,
                &seen(&[2], &[], &[4])
            ),
            Some(VoterChange::Replace {
                voters: vec![1, 2, 3],
                gone: 2,
                gone_name: "n2".into(),
            }),
            "or replacing a gone voter"
        );
    }

    #[test]
    fn the_next_change_shrinks_to_a_smaller_count_sparing_the_leader() {
        let five = membership(&[1, 2, 3, 4, 5], &[]);
        assert_eq!(
            VoterChange::next(&five, Size::AtLeast(3), 1, &seen(&[], &[], &[])),
            None,
            "a node's own setting never takes votes away"
        );
        assert_eq!(
            VoterChange::next(&five, Size::Exactly(3), 1, &seen(&[], &[], &[])),
            Some(VoterChange::Shrink {
                out: 5,
                out_name: "n5".into(),
            }),
            "the last by name goes, as growth takes the first"
        );
        assert_eq!(
            VoterChange::next(&five, Size::Exactly(3), 5, &seen(&[], &[], &[])),
            Some(VoterChange::Shrink {
                out: 4,
                out_name: "n4".into(),
            }),
            "but never the leader: its going would stop writes for an election"
        );
        assert_eq!(
            VoterChange::next(&five, Size::Exactly(3), 1, &seen(&[2], &[], &[])),
            Some(VoterChange::Shrink {
                out: 2,
                out_name: "n2".into(),
            }),
            "a voter that hands its vote over goes first, rather than being replaced"
        );
        assert_eq!(
            VoterChange::next(&five, Size::Exactly(3), 1, &seen(&[], &[3], &[])),
            Some(VoterChange::Shrink {
                out: 3,
                out_name: "n3".into(),
            }),
            "before one the leader reaches"
        );
        assert_eq!(
            VoterChange::next(&five, Size::Exactly(3), 1, &seen(&[2], &[2, 3], &[])),
            Some(VoterChange::Shrink {
                out: 2,
                out_name: "n2".into(),
            }),
            "of those it cannot reach, one gone for good first"
        );
        let two = membership(&[1, 2], &[]);
        assert_eq!(
            VoterChange::next(&two, Size::Exactly(1), 2, &seen(&[], &[], &[])),
            Some(VoterChange::Shrink {
                out: 1,
                out_name: "n1".into(),
            }),
            "down to the leader alone"
        );
        let three_with_learner = membership(&[1, 2, 3], &[4]);
        assert_eq!(
            VoterChange::next(
                &three_with_learner,
                Size::Exactly(1),
                1,
                &seen(&[], &[], &[4])
            ),
            Some(VoterChange::Shrink {
                out: 3,
                out_name: "n3".into(),
            }),
            "shrinking before dropping a learner"
        );
        let one_with_learner = membership(&[1], &[3]);
        assert_eq!(
            VoterChange::next(
                &one_with_learner,
                Size::Exactly(1),
                1,
                &seen(&[], &[], &[3])
            ),
            Some(VoterChange::DropLearners(vec![3])),
            "the voter that went is dropped once its log holds the configuration without it"
        );
        let three = membership(&[1, 2, 3], &[]);
        assert_eq!(
            VoterChange::next(&three, Size::Exactly(2), 1, &seen(&[1], &[], &[])),
            Some(VoterChange::Shrink {
                out: 1,
                out_name: "n1".into(),
            }),
            "the leader's own vote goes if it hands it over as it leaves"
        );
        let leaving = Seen {
            leaving: &[2],
            ..seen(&[], &[], &[])
        };
        assert_eq!(
            VoterChange::next(&three, Size::Exactly(2), 1, &leaving),
            Some(VoterChange::Shrink {
                out: 2,
                out_name: "n2".into(),
            }),
            "a voter that leaves goes before the last by name, even one told it keeps its vote"
        );
        let leaving_and_unreachable = Seen {
            leaving: &[2],
            ..seen(&[], &[3], &[])
        };
        assert_eq!(
            VoterChange::next(&three, Size::Exactly(1), 1, &leaving_and_unreachable),
            Some(VoterChange::Shrink {
                out: 3,
                out_name: "n3".into(),
            }),
            "one unreachable before one that leaves: its going leaves the leader and the one \
             that leaves, both reached, where the other way round the leader would be one of \
             two"
        );
        let two_unreachable = membership(&[1, 2, 3, 4, 5], &[]);
        let reached_three = Seen {
            leaving: &[2],
            ..seen(&[], &[4, 5], &[])
        };
        assert_eq!(
            VoterChange::next(&two_unreachable, Size::Exactly(3), 1, &reached_three),
            Some(VoterChange::Shrink {
                out: 5,
                out_name: "n5".into(),
            })
        );
        let one_reached = Seen {
            gone: &[2],
            candidate: false,
            ..seen(&[], &[2, 3], &[])
        };
        assert_eq!(
            VoterChange::next(&three, Size::Exactly(2), 1, &one_reached),
            None,
            "no voter may go whose going leaves the leader without a majority it reaches"
        );
    }

    #[test]
    fn without_a_member_to_take_a_vote_the_next_change_is_neither_growth_nor_replacement() {
        let none_free = |gone, caught_up| Seen {
            candidate: false,
            ..seen(gone, &[], caught_up)
        };
        let short_with_learner = membership(&[1, 2], &[3]);
        assert_eq!(
            VoterChange::next(
                &short_with_learner,
                Size::Exactly(5),
                1,
                &none_free(&[], &[3])
            ),
            Some(VoterChange::DropLearners(vec![3])),
            "a learner holding the configuration is dropped, not kept for a growth that cannot be"
        );
        let full = membership(&[1, 2, 3], &[]);
        assert_eq!(
            VoterChange::next(&full, Size::AtLeast(3), 1, &none_free(&[2], &[])),
            None,
            "a gone voter keeps its vote"
        );
    }

    /// The keepalive times of sessions that ended go: one entry per node incarnation ever
    /// seen would pile up over a long lead.
    #[test]
    fn ended_sessions_are_forgotten() {
        let start = Instant::now();
        let (old, new, other) = (
            NodeId::new("n1", 1),
            NodeId::new("n1", 2),
            NodeId::new("n2", 1),
        );
        let mut duties = Duties::default();
        duties.lead(5, start);
        for node in [&old, &new, &other] {
            duties.last_seen.insert(node.clone(), start);
        }
        duties.expiring.insert(old.clone());
        let ttl = Duration::from_secs(1);
        duties.forget_ended(&[(new.clone(), ttl), (other.clone(), ttl)]);
        assert!(!duties.last_seen.contains_key(&old), "n1#1's session ended");
        assert!(duties.expiring.is_empty());
        assert_eq!(duties.last_seen.len(), 2);
    }
}
