//! The node's session: opened at start, renewed by keepalives to the leader, and watched by
//! a deadline after which the node fences itself; and the subscription that feeds the mirror.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ensemble_runtime::ActorRef;
use tokio::time::Instant;

use super::Shared;
use crate::error::RegistryError;
use crate::raft::TypeConfig;
use crate::raft::Voter;
use crate::raft::log_store::LastLogId;
use crate::server::LeaderContact;
use crate::server::protocol::{Answer, FeedMsg, Hearing, Query, ServerMsg};
use crate::state::{Command, Outcome};

/// Opens this node's session, retrying until a leader commits it or `timeout` passes.
///
/// Returns a time no later than the session's commit, from which the node may count it valid
/// (the leader counts its TTL from after the commit): when the request that opened it was
/// first sent, or, when an earlier request (whose answer was lost) opened it, when the first
/// was sent.
pub(crate) async fn open(shared: &Shared, timeout: Duration) -> Result<Instant, RegistryError> {
    let first = Instant::now();
    let deadline = first + timeout;
    let command = Command::OpenSession {
        node: shared.me().clone(),
        ttl_ms: ttl_millis(shared.config.session_ttl),
    };
    loop {
        let sent = Instant::now();
        match shared.propose_one(command.clone(), true).await {
            Ok(Outcome::Done { .. }) => return Ok(sent),
            Ok(Outcome::Unchanged) => return Ok(first),
            Ok(Outcome::StaleIncarnation { current }) => {
                return Err(RegistryError::Start(format!(
                    "incarnation {} of node {} already has a session; this one ({}) is stale",
                    current,
                    shared.me().name(),
                    shared.me().incarnation()
                )));
            }
            Ok(other) => return Err(shared.unexpected("open session", other)),
            Err(err @ (RegistryError::NoSession(_) | RegistryError::SessionExpired(_))) => {
                return Err(err);
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => {
                tracing::debug!(%err, "registry not ready yet; retrying to open the session");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A session TTL in the whole milliseconds the registry keeps, rounded up: the leader must
/// never count a session shorter than its node does (a TTL of 1.5 ms cut to 1 ms would let
/// the leader expire the session before the node fences itself).
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Renews the session, opened at `opened` (as [`open`] returns it), and fences the node when
/// renewals stop coming back in time.
///
/// Like the watchdog, it holds the registry only while it works, not while it waits: the
/// registry holds the node's cluster service, whose address must be free once the node stopped.
pub(crate) async fn keep(shared: Weak<Shared>, opened: Instant) {
    let (valid_for, mut tick) = {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let valid_for = shared.config.session_validity();
        // Not from now: the open may have taken a while (an answer lost and the request sent
        // again, the copy slow to show it), and the leader counts the TTL from the commit.
        *shared.valid_until.lock() = opened + valid_for;
        tokio::spawn(watchdog(Arc::downgrade(&shared)));
        let tick = tokio::time::interval(
            shared
                .config
                .on_local_clock(shared.config.keepalive_interval),
        );
        (valid_for, tick)
    };
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.expired.load(Ordering::Acquire) || shared.left.load(Ordering::Acquire) {
            return;
        }
        let sent = Instant::now();
        let me = shared.me().clone();
        let renewed = shared.keepalive(valid_for / 2).await;
        if shared.left.load(Ordering::Acquire) {
            // Left while the keepalive was under way: an acknowledgement must not unfence the
            // node, nor a refusal open the session again.
            return;
        }
        take_renewal(&shared, sent, &renewed);
        match renewed {
            Ok(()) => {}
            Err(RegistryError::SessionExpired(_)) => return,
            Err(RegistryError::NoSession(_)) => {
                // Not committed yet on a new leader, or the open was lost: open it again
                // (opening an open session changes nothing).
                let _ = open(&shared, valid_for / 2).await;
            }
            Err(err) => tracing::debug!(node = %me, %err, "keepalive failed"),
        }
    }
}

/// Takes what came of a keepalive sent at `sent` (the periodic one, or
/// [`Registry::renew`](super::Registry::renew)): an acknowledgement makes the session valid
/// until `sent` + the validity and unfences the node; `SessionExpired` marks the session
/// expired. Not for a node that left: nothing unfences it.
pub(crate) fn take_renewal(
    shared: &Arc<Shared>,
    sent: Instant,
    renewed: &Result<(), RegistryError>,
) {
    match renewed {
        Ok(()) => {
            // Past the validity already (the node was frozen, say): fence first, as the
            // watchdog would have, so that the leases held meanwhile are lost for good
            // rather than counted valid again by the renewal.
            fence_if_overdue(shared);
            let until = {
                let mut until = shared.valid_until.lock();
                *until = (*until).max(sent + shared.config.session_validity());
                *until
            };
            // A node leaving stays fenced: its leases were lost for good.
            if until > Instant::now()
                && !shared.leaving.load(Ordering::Acquire)
                && shared.fenced.swap(false, Ordering::AcqRel)
            {
                tracing::info!(node = %shared.me(), "session renewed again: no longer fenced");
            }
        }
        Err(RegistryError::SessionExpired(_)) => shared.session_expired(),
        Err(_) => {}
    }
}

/// Marks the session expired when a peer says the cluster declared this node down: a node cut
/// off while its session expired cannot hear it from the registry (every member refuses it),
/// only from the refusal of the first peer it reaches again.
///
/// Holds the registry only while it handles an event: waiting, it must not keep the registry,
/// and through it the cluster service, alive after the node stopped.
pub(crate) async fn watch_declared_down(shared: Weak<Shared>) {
    let mut events = {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Subscribed before the check: a `Down` between the two is then not missed.
        let events = shared.cluster.subscribe();
        if shared.cluster.is_declared_down() {
            shared.session_expired();
            return;
        }
        events
    };
    loop {
        let event = events.recv().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.left.load(Ordering::Acquire) {
            return;
        }
        match event {
            Ok(ensemble_runtime::cluster::MemberEvent::Down(node)) if &node == shared.me() => {
                shared.session_expired();
                return;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if shared.cluster.is_declared_down() {
                    shared.session_expired();
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Fences the node the moment its session may no longer be valid.
async fn watchdog(shared: Weak<Shared>) {
    loop {
        let Some(until) = shared.upgrade().map(|shared| *shared.valid_until.lock()) else {
            return;
        };
        tokio::time::sleep_until(until).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.expired.load(Ordering::Acquire) || shared.left.load(Ordering::Acquire) {
            return;
        }
        if fence_if_overdue(&shared) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Fences the node if its clock is past its session's validity and it is not fenced yet.
/// Returns whether the validity is past.
fn fence_if_overdue(shared: &Arc<Shared>) -> bool {
    if !shared.past_validity() {
        return false;
    }
    if !shared.fenced.load(Ordering::Acquire) {
        tracing::warn!(node = %shared.me(), "no session renewal in time: fencing this node");
        shared.fence("this node could not renew its session in time");
        metrics::counter!("ensemble_registry_fenced_total").increment(1);
    }
    true
}

/// How long a subscription may stay silent before the feed counts it dead and subscribes
/// again: a few of the server's
/// [`FEED_IDLE`](crate::server::protocol::FEED_IDLE) messages.
const FEED_SILENCE: Duration = Duration::from_millis(2_000);

/// How long the feed waits for the lookup of the leader's server before trying again.
const LOOKUP_LIMIT: Duration = Duration::from_millis(250);

/// Whether this node votes in the registry's Raft group: read from its Raft metrics.
#[derive(Clone)]
pub(crate) struct LocalVoter {
    pub(crate) id: u64,
    pub(crate) metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, Voter>>,
    /// When a leader last replicated to this node.
    pub(crate) leader_contact: LeaderContact,
    /// Whether the registry's leader said this node does not vote although its own log says
    /// it does ([`watch_standing`]).
    pub(crate) retired: Arc<AtomicBool>,
    /// The last entry of this node's Raft log.
    pub(crate) last_log: LastLogId<TypeConfig>,
}

impl LocalVoter {
    /// Whether this node's copy may follow its own state machine: its own log names it a
    /// voter, the leader did not say otherwise, and a leader has replicated to it since it
    /// started (or it leads). Until then it follows the leader like any other node's: a
    /// former voter back with its data dir (see [`watch_standing`]) has a log that names it
    /// a voter, but nothing feeds its state machine, and its first write (its session's
    /// opening) would wait for a copy that never shows it, while its session's time runs.
    fn votes(&self) -> bool {
        !self.retired.load(Ordering::Acquire)
            && self.named_a_voter()
            && (self.leader_contact.ever() || self.leads())
    }

    /// Whether this node's Raft leads (it sends AppendEntries rather than takes them).
    fn leads(&self) -> bool {
        let metrics = self.metrics.borrow();
        metrics.state == openraft::ServerState::Leader && metrics.current_leader == Some(self.id)
    }

    /// The names of the other voters this node's own Raft log names.
    fn other_voters(&self) -> Vec<String> {
        let metrics = self.metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .filter_map(|id| membership.get_node(&id).map(|voter| voter.name.clone()))
            .collect()
    }

    /// Whether this node's own Raft log names it the only voter.
    fn sole_voter(&self) -> bool {
        let metrics = self.metrics.borrow();
        let mut voters = metrics.membership_config.membership().voter_ids();
        voters.next() == Some(self.id) && voters.next().is_none()
    }

    /// The log entry of the configuration this node's Raft follows (the last in its log).
    fn config(&self) -> Option<openraft::LogId<u64>> {
        *self.metrics.borrow().membership_config.log_id()
    }

    /// Whether this node's own Raft log names it a voter.
    fn named_a_voter(&self) -> bool {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.id)
    }

    /// Whether a leader replicates to this node: it is a voter or a learner of the leader's
    /// configuration. (Not openraft's `current_leader`, which names the leader of the vote
    /// this node last saw committed, also when that leader no longer sends it anything.)
    fn hears_a_leader(&self) -> bool {
        self.leader_contact.recent()
    }
}

/// Waits for `tick`, then holds the registry for the work of that tick: none if it was dropped
/// or the node left for good (it stops next).
async fn next_tick(tick: &mut tokio::time::Interval, shared: &Weak<Shared>) -> Option<Arc<Shared>> {
    tick.tick().await;
    let shared = shared.upgrade()?;
    (!shared.left.load(Ordering::Acquire)).then_some(shared)
}

/// How often the node looks at whether its Raft should stand for election
/// ([`watch_standing`]).
const STANDING_CHECK: Duration = Duration::from_millis(50);

/// How often a node that stands for election, whose log names it a voter and which hears no
/// leader, asks the leader whether it still votes.
const RETIREMENT_CHECK: Duration = Duration::from_millis(500);

/// How often a node that does not stand yet asks (the first time at once).
const UNDECIDED_ASK: Duration = Duration::from_millis(200);

/// How many silences (no leader heard: `server::LeaderContact`) a node whose log names it a
/// voter waits, undecided, before it stands all the same: a voter whose word held it back
/// (a later log, or a lead) may be unable to act on it, its Raft stopped by a failed disk,
/// say, and the others must not wait on it forever.
const UNDECIDED_SILENCES: u32 = 5;

/// Decides whether this node's Raft stands for election: not before it knows it votes, and no
/// longer once it learns it lost its vote while it was away.
///
/// A voter gone for longer than the voter grace (`RegistryConfig::voter_grace`) gives its
/// vote to another node (`server::leader`). Back with its data dir, its log still names it a
/// voter of the old configuration. Standing for election on that log, it would raise its term
/// with each try (the voters refuse it, their logs being ahead); and when the leader later
/// takes it as a voter again, it would refuse the leader's first AppendEntries for that later
/// term, and the leader would step down: writes wait for the next election (openraft 0.9 has
/// no pre-vote round to spare this). So Raft starts without standing for election
/// (`enable_elect` off, `start`), and this node stands once:
/// - its log names it the only voter, and no leader replicates to it;
/// - its log names it a voter, the leader says it is among the voters, its log holds the
///   configuration the leader answers from, and a leader replicates to it: asked as soon as
///   its log names it a voter, whether a leader replicates to it or not. A learner that a
///   leader catches up may have an old log that names it a voter, and the leader may commit
///   the configuration that counts it with the others' copies before its own log holds it:
///   standing then, it would stand on the old log should that leader stop. And a voter back
///   from a crash is reached by the leader up to half a second after it answers
///   (`raft::network`, a voter unreachable for long is tried every 0.5 s), while openraft's
///   election timer runs from the node's start: standing before the leader's first
///   AppendEntries, it would stand on the log it came back with, raise its term past the
///   leader's and make it step down; and, rejected for its shorter log, it would keep openraft
///   0.9's mark of having seen a greater log, which delays its next election by twice the
///   longest election timeout until it stands again, caught up or not; or
/// - no leader answered, and the other voters its log names that answer neither lead nor
///   hear a leader, nor have a later log ([`ServerMsg::HearsLeader`]): the whole registry
///   started again, say, and no leader comes until a voter stands. (A node that reaches none
///   of them has no votes to win, and waits.) Or
/// - it has waited for [`UNDECIDED_SILENCES`] silences, told neither that it votes nor that
///   it does not, or told that it votes by a leader that does not replicate to it.
///
/// If the leader says it is not among the voters, it does not stand, and its copy follows the
/// leader ([`LocalVoter::votes`]); later, whenever its log names it a voter and no leader
/// replicates to it, it asks again. Once a leader replicates to it (the leader takes it back,
/// as a learner first), its copy follows its own state machine again, and it stands once the
/// leader counts it among the voters and its log holds that configuration.
pub(crate) async fn watch_standing(shared: Weak<Shared>, local: LocalVoter) {
    let mut stands = false;
    let mut asked: Option<Instant> = None;
    // Since when this node, named a voter, has waited without standing or retiring.
    let mut undecided_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(STANDING_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stand = |why: &str, shared: &Shared| {
        tracing::info!(node = %shared.me(), "this node's registry Raft stands for election: {why}");
        shared.set_stands(true);
    };
    loop {
        let Some(shared) = next_tick(&mut tick, &shared).await else {
            return;
        };
        if shared.standing_held() {
            // Its vote moves, or moved (`Registry::leave`); let go, it stands again at once if
            // it stood (`Shared::hold_standing`).
            continue;
        }
        let hears = local.hears_a_leader();
        if hears {
            // A leader replicates to it: it is a voter or a learner of the leader's
            // configuration, and its copy may follow its own state machine, which the leader
            // feeds. Whether it votes is the leader's to say (asked below): a learner being
            // caught up may have an old log naming it a voter (a former voter taken back),
            // and if that leader stopped before its log held the configuration that counts
            // it, it would stand on that old log, raise its term, and make the next leader
            // step down. The leader's word (and the configuration it answers from reaching
            // this node's log) is the answer, so no silences count meanwhile.
            local.retired.store(false, Ordering::Release);
            undecided_since = None;
            if stands || !local.named_a_voter() {
                continue;
            }
            if asked.is_some_and(|at| at.elapsed() < UNDECIDED_ASK) {
                continue;
            }
        } else if local.retired.load(Ordering::Acquire) || !local.named_a_voter() {
            undecided_since = None;
            continue;
        } else if local.sole_voter() {
            if !stands {
                stand("its log names it the only voter", &shared);
                stands = true;
            }
            continue;
        } else if stands {
            // Asked at most every so often, and only of a leader other than this node: during
            // an election there is none to ask.
            let me = shared.me().name();
            let leader = shared.leader.lock().clone().filter(|l| l != me);
            if leader.is_none() || asked.is_some_and(|at| at.elapsed() < RETIREMENT_CHECK) {
                continue;
            }
        } else {
            let since = *undecided_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= local.leader_contact.silence() * UNDECIDED_SILENCES {
                stand(
                    "it heard no leader for five silences, and was told neither that it \
                     votes nor that it does not, or was told that it votes by a leader that \
                     does not replicate to it",
                    &shared,
                );
                stands = true;
                continue;
            }
            if asked.is_some_and(|at| at.elapsed() < UNDECIDED_ASK) {
                continue;
            }
        }
        asked = Some(Instant::now());
        // One attempt's share of a call: longer on a cluster set up for slow links.
        let limit = shared.attempt_timeout(shared.config.request_timeout);
        let (voters, config) = match tokio::time::timeout(limit, shared.read(Query::Voters)).await {
            Ok(Ok(Answer::Voters { names, config })) if !names.is_empty() => (Some(names), config),
            _ => (None, None),
        };
        let me = shared.me().name().to_owned();
        match voters {
            // Checked again after the read: a leader may have begun to replicate meanwhile.
            // And only a leader whose log is ahead of this node's retires it: a leader of a
            // registry started anew beside this one (a first node whose data dir was lost,
            // started without `join`) is not one to give this node's vote up for.
            Some(voters)
                if !voters.contains(&me)
                    && !hears
                    && !local.hears_a_leader()
                    && leader_log_ahead(&shared, &local, limit).await =>
            {
                tracing::warn!(
                    node = %shared.me(),
                    voters = %voters.join(","),
                    "this node's registry log names it a voter, but the registry's voters are \
                     now others (it was away for longer than the voter grace): it does not \
                     stand for election, and its copy of the registry follows the leader"
                );
                shared.set_stands(false);
                local.retired.store(true, Ordering::Release);
                stands = false;
            }
            // Only once its own log holds the configuration that counts it: the leader may
            // have committed it with the others' copies while this node's log is still being
            // caught up, and its old log may name it a voter of an earlier configuration. And
            // only once a leader replicates to it: back from a crash, it would otherwise stand
            // on the log it came back with before the leader reaches it.
            Some(voters)
                if voters.contains(&me)
                    && !stands
                    && local.config() >= config
                    && (hears || local.hears_a_leader()) =>
            {
                stand(
                    "the registry's leader counts it among the voters, and its log holds that \
                     configuration",
                    &shared,
                );
                stands = true;
            }
            None if !stands && !hears && may_win_leaderless(&shared, &local, limit).await => {
                stand(
                    "no registry leader answered, and the other voters its log names that \
                     answered hear none either and have no later log (the whole registry \
                     started again, say)",
                    &shared,
                );
                stands = true;
            }
            _ => {}
        }
    }
}

/// Asks the server of node `name` whether it leads or hears a leader, and for its log's last
/// entry, within `limit`; `None` without an answer (its server found again at the next ask).
async fn hearing(shared: &Shared, name: &str, limit: Duration) -> Option<Hearing> {
    let server = tokio::time::timeout(limit, shared.servers.get(name))
        .await
        .ok()?
        .ok()?;
    let answer = server.ask(ServerMsg::HearsLeader, limit).await;
    if answer.is_err() {
        // A node restarted since it was looked up has a new server.
        shared.servers.forget(name);
    }
    answer.ok()
}

/// Whether this node should stand in a registry that has no leader, as far as it can tell: at
/// least one of the other voters its own log names answered, none of those that did leads or
/// hears a leader, and none has a later log than this node's. One with a later log would not
/// vote for it: it stands instead. And a former voter back with an old log, whose log names
/// voters that no longer vote, must not stand on their word and raise its term.
async fn may_win_leaderless(shared: &Shared, local: &LocalVoter, limit: Duration) -> bool {
    let mine = local.last_log.get();
    let mut answered = false;
    for name in local.other_voters() {
        match hearing(shared, &name, limit).await {
            Some(Hearing { leader: true, .. }) => return false,
            Some(Hearing { last_log, .. }) if last_log > mine => return false,
            Some(_) => answered = true,
            None => {}
        }
    }
    answered
}

/// Whether the leader this node's calls found has a later log than this node's (asked within
/// `limit`).
async fn leader_log_ahead(shared: &Shared, local: &LocalVoter, limit: Duration) -> bool {
    let Some(leader) = shared.leader.lock().clone() else {
        return false;
    };
    let mine = local.last_log.get();
    hearing(shared, &leader, limit)
        .await
        .is_some_and(|h| h.last_log > mine)
}

/// Keeps the mirror subscribed: a voter to its own server, whose state machine applies every
/// committed entry anyway, any other node to the leader.
///
/// A voter feeding itself saves the leader one message per committed entry and voter, and
/// lags the leader by no more than the follower's apply: the leader sends the new commit index
/// to every follower as soon as an entry commits.
///
/// Holds the registry only while it works, not while it waits: a registry that never got
/// going (its start failed) or was left must not stay alive through it.
pub(crate) async fn feed(shared: Weak<Shared>, mirror: ActorRef<FeedMsg>, local: LocalVoter) {
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        let Some(shared) = next_tick(&mut tick, &shared).await else {
            return;
        };
        let (source, heard, connection) = {
            let view = shared.view.read();
            (view.source.clone(), view.heard, view.connection)
        };
        let wanted = if local.votes() {
            Some(shared.me().name().to_owned())
        } else {
            // No leader known yet: wait for one rather than take a copy from a node that may
            // not be a voter at all.
            shared.leader.lock().clone()
        };
        let Some(wanted) = wanted else {
            continue;
        };
        // The subscription holds while its source is the wanted node, in the incarnation
        // subscribed to, over the connection subscribed over, and keeps talking: a source that
        // restarted, or a message lost with a connection, ends it without a word. Silence
        // catches what the other checks miss.
        let holds = source.as_ref().is_some_and(|source| {
            source.name() == wanted
                && shared.is_live(source)
                && (source == shared.me() || shared.cluster.connection(source) == connection)
                && heard.is_some_and(|heard| heard.elapsed() < FEED_SILENCE)
        });
        if holds {
            continue;
        }
        // Bounded: a lookup on a node that died with its connection still open would otherwise
        // wait for the cluster's request timeout, and the mirror would miss everything meanwhile.
        let lookup = shared.servers.get(&wanted);
        let Ok(Ok(server)) = tokio::time::timeout(LOOKUP_LIMIT, lookup).await else {
            continue;
        };
        if !shared.is_live(server.id().node()) {
            // Remembered from an incarnation that is gone: look it up afresh next time.
            shared.servers.forget(&wanted);
            continue;
        }
        // The old source may be dead (a leader that changed, say): tell it only if its server
        // is known, never wait on a lookup of it.
        if let Some(old) = source.filter(|old| old.name() != wanted)
            && let Some(old) = shared.servers.cached(old.name())
        {
            let _ = old.try_tell(ServerMsg::Unsubscribe(mirror.id().clone()));
        }
        let epoch = shared.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(node = %shared.me(), from = %server.id().node(), epoch, "subscribing to the registry feed");
        {
            let mut view = shared.view.write();
            view.source = Some(server.id().node().clone());
            view.heard = Some(Instant::now());
            view.synced = false;
        }
        let subscribe = ServerMsg::Subscribe {
            mirror: mirror.clone(),
            epoch,
        };
        if server.tell(subscribe).await.is_err() {
            shared.servers.forget(&wanted);
            shared.view.write().source = None;
        } else if server.id().node() != shared.me() {
            // Read once the request is on its way: the tell connects if it must. Were the
            // connection replaced in between, this is the new one, and the subscription,
            // lost with the old, ends by silence.
            shared.view.write().connection = shared.cluster.connection(server.id().node());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_kept_in_whole_milliseconds_rounded_up() {
        assert_eq!(ttl_millis(Duration::from_secs(1)), 1000);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }
}
