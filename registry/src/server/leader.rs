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
use std::time::Duration;

use ensemble_runtime::NodeId;
use ensemble_runtime::cluster::{Cluster, MemberStatus};
use ensemble_runtime::hashing::{HashMap, HashSet};
use openraft::{Raft, ServerState};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::protocol::{Handover, ServerError};
use super::server_error;
use crate::raft::StateMachine;
use crate::raft::lease::LeaderLease;
use crate::raft::types::{Batch, TypeConfig, Voter, raft_id};
use crate::state::Command;

/// The label a node sets to `"no"` to never become a voter.
pub const VOTER_LABEL: &str = "registry.voter";

/// The leader's duties, shared between the server (keepalives) and the duty loop.
#[derive(Clone)]
pub(crate) struct Leadership {
    duties: Arc<Mutex<Duties>>,
    /// Who is connected, and may take a vote.
    cluster: Cluster,
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
    /// Voters that leave on purpose, by name, with when each last asked to hand its vote over
    /// ([`Leadership::hand_over`]). Their votes move without the voter grace. A node asks
    /// again and again while it waits; one that stopped asking for [`LEAVING_FORGOTTEN`] is
    /// forgotten, and counts as any other voter again.
    leaving: HashMap<String, Instant>,
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
        *self = Duties {
            since: Some(now),
            term,
            ..Duties::default()
        };
        true
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

    /// The names of the voters that leave, forgetting those that stopped asking as of `now`.
    fn leaving(&mut self, now: Instant) -> Vec<String> {
        self.leaving
            .retain(|_, asked| now.duration_since(*asked) < LEAVING_FORGOTTEN);
        let mut names: Vec<String> = self.leaving.keys().cloned().collect();
        names.sort_unstable();
        names
    }
}

impl Leadership {
    pub(crate) fn new(clock_rate: f64, lease: LeaderLease, cluster: Cluster) -> Self {
        Leadership {
            duties: Arc::default(),
            cluster,
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

    /// The names of the voters that leave, as of now.
    fn leaving_now(&self) -> Vec<String> {
        self.duties.lock().leaving(Instant::now())
    }

    /// Whether voter `name` leaves, as of now.
    fn is_leaving(&self, name: &str) -> bool {
        self.leaving_now().iter().any(|l| l == name)
    }

    /// Whether this node leads the registry (its duty loop has seen it become leader of the
    /// current term and not lose it since).
    pub(crate) fn leads(&self) -> bool {
        self.duties.lock().since.is_some()
    }

    /// Notes that node `name` leaves on purpose, and says how the hand-over of its vote
    /// stands in `membership`, the applied configuration. The duty loop makes the change (a
    /// [`VoterChange::Replace`] without the voter grace); the node asks again until the
    /// answer is not [`Handover::UnderWay`].
    pub(crate) fn hand_over(
        &self,
        name: &str,
        membership: &openraft::Membership<u64, Voter>,
    ) -> Handover {
        let id = raft_id(name);
        let mut duties = self.duties.lock();
        if !membership.voter_ids().any(|voter| voter == id) {
            duties.leaving.remove(name);
            return Handover::NotAVoter;
        }
        let now = Instant::now();
        duties.leaving.insert(name.to_owned(), now);
        let leaving = duties.leaving(now);
        drop(duties);
        // Halfway through a change (the joint configuration applied), the vote goes to the
        // voter that the final configuration adds.
        let joint = membership.get_joint_config();
        if let [first, .., last] = &joint[..]
            && let Some(added) = last.iter().find(|id| !first.contains(id))
        {
            let to = membership
                .get_node(added)
                .map_or_else(|| added.to_string(), |voter| voter.name.clone());
            return Handover::UnderWay { to };
        }
        let voters: Vec<u64> = membership.voter_ids().collect();
        match candidate(&self.cluster, &voters, &leaving) {
            Some(to) => Handover::UnderWay { to },
            None => Handover::NoneToTake,
        }
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
    /// voter set is kept at, `grace` how long a voter may be gone (its session ended, its node
    /// not connected) before another node takes its vote. A voter that leaves on purpose
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
        let changing = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
                *self.duties.lock() = Duties::default();
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
                let membership = membership.membership();
                let gone = gone_members(membership, &state_machine, &cluster, me);
                let (mut gone, leaving) = {
                    let mut duties = self.duties.lock();
                    let gone = duties.gone_for_good(&gone, now, grace, self.clock_rate);
                    (gone, duties.leaving(now))
                };
                // Voters that leave count as gone for good at once.
                gone.extend(
                    leaving
                        .iter()
                        .map(|name| raft_id(name))
                        .filter(|id| membership.voter_ids().any(|voter| voter == *id)),
                );
                gone.sort_unstable();
                gone.dedup();
                let change = VoterChange::next(membership, voters, &gone);
                let idle =
                    change.is_some() && !changing.swap(true, std::sync::atomic::Ordering::AcqRel);
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
    /// A voter gone for good gives its vote to a member that may vote, if there is one, so
    /// that the registry can lose another voter and still have a majority. With none, it
    /// keeps its vote: removing it would not let the registry lose another.
    Replace {
        voters: Vec<u64>,
        gone: u64,
        gone_name: String,
    },
}

impl VoterChange {
    /// What to change next in `membership`, if anything, to keep `size` voters of which none
    /// is among `gone` (Raft ids gone for good).
    fn next(
        membership: &openraft::Membership<u64, Voter>,
        size: usize,
        gone: &[u64],
    ) -> Option<VoterChange> {
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
        if voters.len() < size {
            return Some(VoterChange::Grow { voters });
        }
        let gone = voters.iter().find(|id| gone.contains(id)).copied()?;
        let gone_name = membership
            .get_node(&gone)
            .map_or_else(|| gone.to_string(), |voter| voter.name.clone());
        Some(VoterChange::Replace {
            voters,
            gone,
            gone_name,
        })
    }

    /// Makes the change through Raft: a new voter is first added as a learner and caught up
    /// (for up to [`CATCH_UP`], and only while its node stays connected and does not leave),
    /// then swapped in, unless the voters changed meanwhile or the gone voter came back (and
    /// does not leave).
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
    ) {
        let cluster = &leadership.cluster;
        let (voters, gone) = match self {
            VoterChange::FinishJoint(voters) => {
                tracing::info!(?voters, "finishing a change of the registry's voters");
                if let Err(err) = raft.change_membership(voters, false).await {
                    tracing::warn!(%err, "could not finish the change of the voters");
                }
                return;
            }
            VoterChange::DropLearners(learners) => {
                tracing::info!(?learners, "removing registry learners whose nodes are gone");
                let remove = openraft::ChangeMembers::RemoveNodes(learners.into_iter().collect());
                if let Err(err) = raft.change_membership(remove, false).await {
                    tracing::warn!(%err, "could not remove the learners");
                }
                return;
            }
            VoterChange::Grow { voters } => (voters, None),
            VoterChange::Replace {
                voters,
                gone,
                gone_name,
            } => (voters, Some((gone, gone_name))),
        };
        let Some(name) = candidate(cluster, &voters, &leadership.leaving_now()) else {
            return;
        };
        let id = raft_id(&name);
        match &gone {
            None => tracing::info!(voter = %name, "adding a registry voter"),
            Some((_, gone)) if leadership.is_leaving(gone) => tracing::info!(
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
                if !still_candidate(cluster, &name, &leadership.leaving_now()) {
                    return;
                }
            }
        };
        tokio::select! {
            caught_up = tokio::time::timeout(CATCH_UP, learner) => match caught_up {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(voter = %name, %err, "could not add the voter as a learner");
                    return;
                }
                Err(_) => {
                    tracing::warn!(voter = %name, "the new voter did not catch up within {CATCH_UP:?}; trying again later");
                    return;
                }
            },
            () = candidate_went => {
                tracing::info!(voter = %name, "the new voter left or went while it caught up; trying again later");
                return;
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
            return;
        }
        let now = now.membership();
        let mut before = voters.clone();
        before.sort_unstable();
        let mut after: Vec<u64> = now.voter_ids().collect();
        after.sort_unstable();
        if before != after || now.get_joint_config().len() > 1 {
            tracing::info!(voter = %name, "the registry's voters changed meanwhile; not adding");
            return;
        }
        if let Some((gone, gone_name)) = &gone
            && !leadership.is_leaving(gone_name)
            && !gone_members(now, state_machine, cluster, me).contains(gone)
        {
            tracing::info!(voter = %name, gone = %gone_name, "the gone voter came back; it keeps its vote");
            return;
        }
        let gone = gone.map(|(id, _)| id);
        let mut next: Vec<u64> = voters.into_iter().filter(|v| Some(*v) != gone).collect();
        next.push(id);
        match raft.change_membership(next, false).await {
            Ok(_) => tracing::info!(voter = %name, "registry voter added"),
            Err(err) => tracing::warn!(voter = %name, %err, "could not make the node a voter"),
        }
    }
}

/// Clears the flag of a change of the voters under way when the change ends, however it ends.
struct ChangeUnderWay(Arc<std::sync::atomic::AtomicBool>);

impl Drop for ChangeUnderWay {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// How long a new voter may take to catch up before the change is given up (and tried again
/// at a later tick).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(10);

/// How long a whole change may take before the duty loop stops waiting for it and may start
/// another: a leader cut off from its majority may wait for a commit that never comes.
const CHANGE_LIMIT: Duration = Duration::from_secs(60);

/// How long a voter that leaves may go without asking again before it is forgotten
/// ([`Duties::leaving`]); it asks every 100 ms while it waits (`client::handover`).
const LEAVING_FORGOTTEN: Duration = Duration::from_secs(2);

/// How often a change checks that the node catching up to take a vote is still connected and
/// does not leave.
const CANDIDATE_CHECK: Duration = Duration::from_millis(100);

/// The first by name of the connected members that may vote and do not (`voters`), and do not
/// leave (`leaving`, names).
fn candidate(cluster: &Cluster, voters: &[u64], leaving: &[String]) -> Option<String> {
    cluster
        .members()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up)
        .filter(|m| m.labels.get(VOTER_LABEL).is_none_or(|v| v != "no"))
        .map(|m| m.node.name().to_owned())
        .filter(|name| !voters.contains(&raft_id(name)) && !leaving.contains(name))
        .min()
}

/// Whether node `name`, catching up to take a vote, may still take it: a member (suspected
/// for a moment, say, but not down and not gone) that does not leave. Not necessarily the
/// first by name any more: one that joined meanwhile may come before it.
fn still_candidate(cluster: &Cluster, name: &str, leaving: &[String]) -> bool {
    !leaving.iter().any(|l| l == name) && cluster.members().iter().any(|m| m.node.name() == name)
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

    /// A voter that leaves counts as leaving while it keeps asking, and not once it stopped
    /// asking for [`LEAVING_FORGOTTEN`]: one that gave up waiting and left a voter counts as
    /// any other then (its vote moves after the grace, and a voter of that name restarted
    /// later keeps it).
    #[test]
    fn a_leaving_voter_is_forgotten_once_it_stops_asking() {
        let start = Instant::now();
        let mut duties = Duties::default();
        duties.leaving.insert("b".into(), start);
        duties
            .leaving
            .insert("a".into(), start + LEAVING_FORGOTTEN / 2);
        assert_eq!(duties.leaving(start), ["a", "b"], "sorted by name");
        let later = start + LEAVING_FORGOTTEN;
        assert_eq!(duties.leaving(later), ["a"], "b stopped asking");
        assert!(duties.leaving(later + LEAVING_FORGOTTEN).is_empty());
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
            VoterChange::next(&joint, 3, &[3]),
            Some(VoterChange::FinishJoint(vec![1, 2, 4])),
            "its voters are both sets together: four of them, with the gone one"
        );
    }

    #[test]
    fn the_next_change_drops_gone_learners_then_grows_then_replaces() {
        let full = membership(&[1, 2, 3], &[]);
        assert_eq!(VoterChange::next(&full, 3, &[]), None, "nothing to do");
        assert_eq!(
            VoterChange::next(&full, 3, &[2]),
            Some(VoterChange::Replace {
                voters: vec![1, 2, 3],
                gone: 2,
                gone_name: "n2".into(),
            })
        );
        let short = membership(&[1, 2], &[]);
        assert_eq!(
            VoterChange::next(&short, 3, &[2]),
            Some(VoterChange::Grow { voters: vec![1, 2] }),
            "growing first: a replacement needs a full voter set to keep"
        );
        let with_learners = membership(&[1, 2, 3], &[4, 5]);
        assert_eq!(
            VoterChange::next(&with_learners, 3, &[3, 5]),
            Some(VoterChange::DropLearners(vec![5])),
            "a gone learner goes before anything else"
        );
        assert_eq!(
            VoterChange::next(&with_learners, 3, &[]),
            None,
            "a learner catching up is left to catch up"
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
