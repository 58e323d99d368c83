//! The registry's state machine: pure, deterministic, no I/O and no clock.
//!
//! Every voter applies the same committed commands in the same order and so holds the same
//! state; so does every node's local copy, which is fed the same commands after a snapshot.
//! Time never enters here: session expiry is a command the leader proposes when its own clock
//! says a session is overdue.
//!
//! # Invariants
//!
//! - Every name, group entry, lock grant, lock waiter and reservation is bound to an open
//!   session; ending the session removes them all in the same command.
//! - A lock has at most one holder, and waiters are granted it in the order they queued.
//! - Every command applied takes the next revision (the head of a request takes none, and
//!   neither do the commands of a request sent again, which are not applied again); a lock
//!   grant's fencing token is the revision of the command that granted it, so tokens
//!   strictly increase per lock. Across locks they never decrease, but one command can grant
//!   several locks the same token (a session's end frees every lock its node held).
//! - A request of a node ([`Command::Request`]) takes effect at most once while the node's
//!   session is open, and never after its session ended (expired, or closed as it left).
//! - A node's reserved totals ([`RegistryState::reserved`]) are the sums of its reservations'
//!   needs, and a reservation is only made if it fits in the capacity its command gives: a
//!   node whose placers agree on its capacity is never reserved beyond it.

mod command;
mod diff;

use std::collections::{BTreeMap, VecDeque};

use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{ActorId, NodeId};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

pub use command::{Command, Effect, Holder, MAX_VOTERS, Outcome, REMEMBERED, Reservation};
pub use diff::changes;

/// A node's membership session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The node, with the incarnation that opened the session.
    pub node: NodeId,
    /// How long the session lives without a keepalive.
    pub ttl_ms: u64,
}

/// A lock's holder and line of waiters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The holder and the token of its grant.
    pub holder: Option<(Holder, u64)>,
    /// Waiters, first in line first.
    pub waiters: VecDeque<Holder>,
}

/// A config value and its history counters (as etcd keeps them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub created: u64,
    /// The revision of its last change.
    pub modified: u64,
    /// How many times it was set since it was created.
    pub version: u64,
}

/// The whole replicated state.
///
/// Its maps are persistent ones (`imbl::OrdMap`): a clone shares their nodes until either side
/// changes one, so it costs microseconds however large the state. A snapshot and a copy
/// subscribing to a voter rely on that to take the state without holding up the node
/// (`raft::state_machine`). They encode exactly as the standard maps did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    revision: u64,
    /// By node name: one session per name, held by its latest incarnation.
    sessions: OrdMap<String, Session>,
    names: OrdMap<String, WireRef>,
    groups: OrdMap<String, OrdMap<ActorId, WireRef>>,
    locks: OrdMap<String, Lock>,
    kv: OrdMap<String, KeyValue>,
    /// By node name, the latest incarnation whose session expired: it and older ones are down
    /// for good, so a late command from one is refused rather than reopening its session.
    expired: OrdMap<String, u64>,
    /// Placement reservations by id. Last, and defaulted, so that snapshots taken before
    /// reservations existed still load (they are encoded as arrays of fields).
    #[serde(default)]
    reservations: OrdMap<String, Reservation>,
    /// What each node's reservations add up to, by resource, kept in step with `reservations`
    /// so that a reserve looks its node up rather than scanning every reservation. Holds no
    /// zero totals and no node without any.
    #[serde(default)]
    reserved: OrdMap<NodeId, BTreeMap<String, u64>>,
    /// What each node with an open session sent as requests ([`Command::Request`]) and may
    /// send again: kept so that a request takes effect once. Ends with the session. Last, and
    /// defaulted, so that earlier snapshots still load.
    #[serde(default)]
    requests: OrdMap<NodeId, Requests>,
    /// How many voters the leader keeps, as last set ([`Command::SetVoterCount`]); `None`
    /// until then, when the leader grows the voters to its node's `voters` setting. Last, and
    /// defaulted, so that earlier snapshots still load.
    #[serde(default)]
    voter_count: Option<u32>,
    /// By node name, the latest incarnation whose session was closed ([`Command::CloseSession`]:
    /// it left for good). Like `expired`: a late copy of one of its requests, or of its
    /// `OpenSession`, is refused rather than applied again once the session forgot it. Last,
    /// and defaulted, so that earlier snapshots still load.
    #[serde(default)]
    closed: OrdMap<String, u64>,
}

/// One node's requests that may still be sent again ([`Command::Request`]). Encoded without
/// `outcomes`, which loading counts afresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredRequests", into = "StoredRequests")]
struct Requests {
    /// The lowest number of a request the node may still send again, as its latest request
    /// said, or past the requests forgotten for room: a request numbered below it is over.
    below: u64,
    /// The outcomes of the requests from `below` on that took effect, by number.
    answered: BTreeMap<u64, Vec<Outcome>>,
    /// How many outcomes `answered` holds in all.
    outcomes: usize,
}

/// [`Requests`] as snapshots hold it.
#[derive(Clone, Serialize, Deserialize)]
struct StoredRequests {
    below: u64,
    answered: BTreeMap<u64, Vec<Outcome>>,
}

impl From<StoredRequests> for Requests {
    fn from(stored: StoredRequests) -> Self {
        let outcomes = stored.answered.values().map(Vec::len).sum();
        Requests {
            below: stored.below,
            answered: stored.answered,
            outcomes,
        }
    }
}

impl From<Requests> for StoredRequests {
    fn from(requests: Requests) -> Self {
        StoredRequests {
            below: requests.below,
            answered: requests.answered,
        }
    }
}

impl Requests {
    /// Remembers request `id`'s outcomes, forgetting the oldest requests' beyond
    /// [`REMEMBERED`] outcomes in all.
    fn remember(&mut self, id: u64, outcomes: Vec<Outcome>) {
        self.outcomes += outcomes.len();
        if let Some(replaced) = self.answered.insert(id, outcomes) {
            self.outcomes -= replaced.len();
        }
        while self.outcomes > REMEMBERED {
            let Some((oldest, forgotten)) = self.answered.pop_first() else {
                break;
            };
            self.outcomes -= forgotten.len();
            self.below = self.below.max(oldest + 1);
        }
    }
}

impl RegistryState {
    /// The revision of the last command applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The open sessions.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// The session of this node incarnation, if open.
    pub fn session(&self, node: &NodeId) -> Option<&Session> {
        self.sessions.get(node.name()).filter(|s| &s.node == node)
    }

    /// Whether this incarnation's session expired.
    pub fn has_expired(&self, node: &NodeId) -> bool {
        self.expired
            .get(node.name())
            .is_some_and(|&latest| node.incarnation() <= latest)
    }

    /// Whether this incarnation's session ended for good: it expired, or the node closed it
    /// as it left. Neither opens again.
    pub fn has_ended(&self, node: &NodeId) -> bool {
        self.has_expired(node)
            || self
                .closed
                .get(node.name())
                .is_some_and(|&latest| node.incarnation() <= latest)
    }

    /// The actor a global name resolves to.
    pub fn name(&self, name: &str) -> Option<&WireRef> {
        self.names.get(name)
    }

    /// Every global name and its actor.
    pub fn names(&self) -> impl Iterator<Item = (&String, &WireRef)> {
        self.names.iter()
    }

    /// The members of a group.
    pub fn group(&self, group: &str) -> Vec<WireRef> {
        self.groups
            .get(group)
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A lock's holder and waiters.
    pub fn lock(&self, lock: &str) -> Option<&Lock> {
        self.locks.get(lock)
    }

    /// Every lock with a holder or waiters.
    pub fn locks(&self) -> impl Iterator<Item = (&String, &Lock)> {
        self.locks.iter()
    }

    /// A config key.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.kv.get(key)
    }

    /// Config keys starting with `prefix`, in order.
    pub fn prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KeyValue)> {
        self.kv
            .range(prefix.to_owned()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    /// How many voters the registry's leader keeps, if it was set
    /// ([`Command::SetVoterCount`]); `None` while the leader grows the voters to its node's
    /// `voters` setting.
    pub fn voter_count(&self) -> Option<usize> {
        self.voter_count.map(|count| count as usize)
    }

    /// A placement reservation.
    pub fn reservation(&self, id: &str) -> Option<&Reservation> {
        self.reservations.get(id)
    }

    /// Every placement reservation, by id.
    pub fn reservations(&self) -> impl Iterator<Item = (&String, &Reservation)> {
        self.reservations.iter()
    }

    /// What a node's reservations add up to, by resource (resources with nothing reserved are
    /// left out).
    pub fn reserved(&self, node: &NodeId) -> BTreeMap<String, u64> {
        self.reserved.get(node).cloned().unwrap_or_default()
    }

    /// Whether this state shows what `command` asks for, as its answer `Unchanged` said the
    /// registry already did: a read-your-writes wait for that answer, whose command took no
    /// revision of its own, waits for this. `true` for commands whose `Unchanged` leaves
    /// nothing to see.
    pub fn shows(&self, command: &Command) -> bool {
        match command {
            Command::OpenSession { node, .. } => self.session(node).is_some(),
            Command::RegisterName { name, actor } => self.names.get(name) == Some(actor),
            Command::UnregisterName { name, actor } => self
                .names
                .get(name)
                .is_none_or(|holder| &holder.id != actor),
            Command::JoinGroup { group, actor } => self
                .groups
                .get(group)
                .is_some_and(|members| members.contains_key(&actor.id)),
            Command::LeaveGroup { group, actor } => self
                .groups
                .get(group)
                .is_none_or(|members| !members.contains_key(actor)),
            Command::Delete { key } => !self.kv.contains_key(key),
            Command::Reserve { id, .. } => self.reservations.contains_key(id),
            Command::Unreserve { id } => !self.reservations.contains_key(id),
            _ => true,
        }
    }

    /// Whether applying `command` may answer `Unchanged`: only those are kept for the wait
    /// on [`shows`](Self::shows).
    pub fn may_answer_unchanged(command: &Command) -> bool {
        matches!(
            command,
            Command::OpenSession { .. }
                | Command::RegisterName { .. }
                | Command::UnregisterName { .. }
                | Command::JoinGroup { .. }
                | Command::LeaveGroup { .. }
                | Command::Delete { .. }
                | Command::Reserve { .. }
                | Command::Unreserve { .. }
        )
    }

    /// Applies one log entry's commands, in order. Returns one outcome per command but the
    /// heads of requests ([`Command::Request`]), which have none, and the effects of all of
    /// them in the order they happened.
    pub fn apply(&mut self, commands: &[Command]) -> (Vec<Outcome>, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut outcomes = Vec::with_capacity(commands.len());
        for unit in Command::units(commands) {
            match unit {
                [
                    Command::Request {
                        node, id, below, ..
                    },
                    request @ ..,
                ] => {
                    self.apply_request(node, *id, *below, request, &mut outcomes, &mut effects);
                }
                _ => {
                    for command in unit {
                        outcomes.push(self.apply_one(command, &mut effects));
                    }
                }
            }
        }
        (outcomes, effects)
    }

    /// Applies the commands of `node`'s request `id`, unless they took effect before: a
    /// request sent again is answered with the outcomes of its first commit, and a late copy
    /// of a request its node no longer waits for (numbered below `below`, and forgotten)
    /// changes nothing. Remembers the outcomes while the node's session is open.
    ///
    /// A request of an incarnation whose session ended (it expired, or the node left) changes
    /// nothing either: what its session remembered went with it, so a request sent again
    /// after the end could not be told from a new one.
    fn apply_request(
        &mut self,
        node: &NodeId,
        id: u64,
        below: u64,
        commands: &[Command],
        outcomes: &mut Vec<Outcome>,
        effects: &mut Vec<Effect>,
    ) {
        if self.has_ended(node) {
            let refused = Outcome::NoSession { node: node.clone() };
            outcomes.extend(std::iter::repeat_n(refused, commands.len()));
            return;
        }
        if let Some(requests) = self.requests.get_mut(node) {
            if below > requests.below {
                requests.below = below;
                requests.answered = requests.answered.split_off(&below);
                requests.outcomes = requests.answered.values().map(Vec::len).sum();
            }
            // The same number with as many commands: the same request (a node that reused
            // its incarnation, and numbers, is not taken for it).
            if let Some(first) = requests.answered.get(&id)
                && first.len() == commands.len()
            {
                outcomes.extend(first.iter().cloned());
                return;
            }
            if id < requests.below {
                // Over for its node (answered by another attempt, or given up), or forgotten
                // (`REMEMBERED`), so maybe applied already: not again.
                outcomes.extend(std::iter::repeat_n(Outcome::Forgotten, commands.len()));
                return;
            }
        }
        let start = outcomes.len();
        for command in commands {
            outcomes.push(self.apply_one(command, effects));
        }
        if self.session(node).is_some() {
            let requests = self.requests.entry(node.clone()).or_default();
            requests.below = requests.below.max(below);
            requests.remember(id, outcomes[start..].to_vec());
        }
    }

    fn apply_one(&mut self, command: &Command, effects: &mut Vec<Effect>) -> Outcome {
        self.revision += 1;
        let revision = self.revision;
        if let Some(node) = command.session()
            && self.session(node).is_none()
        {
            return Outcome::NoSession { node: node.clone() };
        }
        let done = Outcome::Done { revision };
        match command {
            Command::OpenSession { node, ttl_ms } => {
                if let Some(current) = self.sessions.get(node.name()) {
                    if current.node.incarnation() > node.incarnation() {
                        return Outcome::StaleIncarnation {
                            current: current.node.incarnation(),
                        };
                    }
                    if &current.node == node {
                        self.sessions.get_mut(node.name()).expect("present").ttl_ms = *ttl_ms;
                        return Outcome::Unchanged;
                    }
                    // A newer incarnation: the old one is gone for good.
                    let old = current.node.clone();
                    self.end_session(&old, true, effects);
                }
                if self.has_ended(node) {
                    return Outcome::NoSession { node: node.clone() };
                }
                self.sessions.insert(
                    node.name().to_owned(),
                    Session {
                        node: node.clone(),
                        ttl_ms: *ttl_ms,
                    },
                );
                effects.push(Effect::SessionOpened(node.clone()));
                done
            }
            Command::CloseSession { node } | Command::ExpireSession { node } => {
                if self.session(node).is_none() {
                    return Outcome::NoSession { node: node.clone() };
                }
                let expired = matches!(command, Command::ExpireSession { .. });
                self.end_session(node, expired, effects);
                done
            }
            Command::RegisterName { name, actor } => match self.names.get(name) {
                Some(holder) if holder == actor => Outcome::Unchanged,
                Some(holder) => Outcome::NameTaken {
                    holder: holder.clone(),
                },
                None => {
                    self.names.insert(name.clone(), actor.clone());
                    effects.push(Effect::Name {
                        name: name.clone(),
                        actor: Some(actor.clone()),
                    });
                    done
                }
            },
            Command::UnregisterName { name, actor } => match self.names.get(name) {
                Some(holder) if &holder.id == actor => {
                    self.names.remove(name);
                    effects.push(Effect::Name {
                        name: name.clone(),
                        actor: None,
                    });
                    done
                }
                _ => Outcome::Unchanged,
            },
            Command::JoinGroup { group, actor } => {
                let members = self.groups.entry(group.clone()).or_default();
                match members.insert(actor.id.clone(), actor.clone()) {
                    Some(_) => Outcome::Unchanged,
                    None => done,
                }
            }
            Command::LeaveGroup { group, actor } => {
                let Some(members) = self.groups.get_mut(group) else {
                    return Outcome::Unchanged;
                };
                let removed = members.remove(actor).is_some();
                if members.is_empty() {
                    self.groups.remove(group);
                }
                if removed { done } else { Outcome::Unchanged }
            }
            Command::Acquire { lock, holder, wait } => {
                let entry = self.locks.entry(lock.clone()).or_default();
                match &entry.holder {
                    None => {
                        entry.holder = Some((holder.clone(), revision));
                        effects.push(Effect::Granted {
                            lock: lock.clone(),
                            holder: holder.clone(),
                            token: revision,
                        });
                        Outcome::Granted { token: revision }
                    }
                    Some((current, token)) if current == holder => {
                        Outcome::Granted { token: *token }
                    }
                    Some((current, _)) => {
                        if let Some(ahead) = entry.waiters.iter().position(|w| w == holder) {
                            return Outcome::Queued { ahead };
                        }
                        if *wait {
                            entry.waiters.push_back(holder.clone());
                            Outcome::Queued {
                                ahead: entry.waiters.len() - 1,
                            }
                        } else {
                            Outcome::Busy {
                                holder: current.clone(),
                            }
                        }
                    }
                }
            }
            Command::Release { lock, holder } => {
                let Some(entry) = self.locks.get_mut(lock) else {
                    return Outcome::NotHeld;
                };
                if entry.holder.as_ref().is_some_and(|(h, _)| h == holder) {
                    entry.holder = None;
                    self.grant_next(lock, revision, effects);
                    done
                } else if let Some(at) = entry.waiters.iter().position(|w| w == holder) {
                    entry.waiters.remove(at);
                    done
                } else {
                    Outcome::NotHeld
                }
            }
            Command::Put { key, value } => {
                self.set(key, Some(value.clone()), revision, effects);
                done
            }
            Command::Delete { key } => {
                if self.kv.contains_key(key) {
                    self.set(key, None, revision, effects);
                    done
                } else {
                    Outcome::Unchanged
                }
            }
            Command::CompareAndSet {
                key,
                expected,
                value,
            } => {
                let current = self.kv.get(key).map_or(0, |kv| kv.modified);
                if current != *expected {
                    return Outcome::RevisionMismatch { current };
                }
                if value.is_none() && current == 0 {
                    // Removing an absent key, as asked: it holds, though nothing changed.
                    return done;
                }
                self.set(key, value.clone(), revision, effects);
                done
            }
            Command::Reserve {
                id,
                node,
                need,
                capacity,
            } => {
                if let Some(existing) = self.reservations.get(id) {
                    if &existing.node == node && &existing.need == need {
                        return Outcome::Unchanged;
                    }
                    return Outcome::ReservationTaken {
                        node: existing.node.clone(),
                        need: existing.need.clone(),
                    };
                }
                if let Some(short) = self.shortage(node, need, capacity) {
                    return short;
                }
                let reservation = Reservation {
                    node: node.clone(),
                    need: need.clone(),
                };
                self.add_reserved(&reservation);
                self.reservations.insert(id.clone(), reservation.clone());
                effects.push(Effect::Reservation {
                    id: id.clone(),
                    reservation: Some(reservation),
                });
                done
            }
            // Never here: `apply` takes a request's head apart from its commands.
            Command::Request { .. } => Outcome::Unchanged,
            Command::Unreserve { id } => match self.reservations.remove(id) {
                Some(reservation) => {
                    self.remove_reserved(&reservation);
                    effects.push(Effect::Reservation {
                        id: id.clone(),
                        reservation: None,
                    });
                    done
                }
                None => Outcome::Unchanged,
            },
            Command::SetVoterCount { count } => {
                self.voter_count = Some((*count).clamp(1, MAX_VOTERS));
                done
            }
        }
    }

    /// The first resource of `need` (in name order) that does not fit on `node`, as the
    /// refusal to answer; `None` if all fit.
    fn shortage(
        &self,
        node: &NodeId,
        need: &BTreeMap<String, u64>,
        capacity: &BTreeMap<String, u64>,
    ) -> Option<Outcome> {
        let reserved = self.reserved.get(node);
        need.iter().find_map(|(resource, &asked)| {
            let held = reserved.and_then(|r| r.get(resource)).copied().unwrap_or(0);
            // Saturating: the capacity given may be less than what reservations made with an
            // earlier figure hold.
            let free = capacity
                .get(resource)
                .copied()
                .unwrap_or(0)
                .saturating_sub(held);
            (asked > free).then(|| Outcome::Insufficient {
                resource: resource.clone(),
                need: asked,
                free,
            })
        })
    }

    /// Adds a new reservation to its node's totals. Cannot overflow: it fitted in a capacity.
    fn add_reserved(&mut self, reservation: &Reservation) {
        for (resource, &amount) in reservation.need.iter().filter(|(_, a)| **a > 0) {
            *self
                .reserved
                .entry(reservation.node.clone())
                .or_default()
                .entry(resource.clone())
                .or_default() += amount;
        }
    }

    /// Takes a released reservation out of its node's totals.
    fn remove_reserved(&mut self, reservation: &Reservation) {
        let Some(totals) = self.reserved.get_mut(&reservation.node) else {
            return;
        };
        for (resource, &amount) in &reservation.need {
            if let Some(total) = totals.get_mut(resource) {
                *total = total.saturating_sub(amount);
                if *total == 0 {
                    totals.remove(resource);
                }
            }
        }
        if totals.is_empty() {
            self.reserved.remove(&reservation.node);
        }
    }

    fn set(&mut self, key: &str, value: Option<Vec<u8>>, revision: u64, effects: &mut Vec<Effect>) {
        match &value {
            Some(value) => match self.kv.get_mut(key) {
                Some(entry) => {
                    entry.value.clone_from(value);
                    entry.modified = revision;
                    entry.version += 1;
                }
                None => {
                    let entry = KeyValue {
                        value: value.clone(),
                        created: revision,
                        modified: revision,
                        version: 1,
                    };
                    self.kv.insert(key.to_owned(), entry);
                }
            },
            None => {
                self.kv.remove(key);
            }
        }
        effects.push(Effect::Key {
            key: key.to_owned(),
            value,
            revision,
        });
    }

    /// Grants a free lock to its first waiter, or forgets the lock if nobody waits.
    fn grant_next(&mut self, lock: &str, revision: u64, effects: &mut Vec<Effect>) {
        let Some(entry) = self.locks.get_mut(lock) else {
            return;
        };
        match entry.waiters.pop_front() {
            Some(next) => {
                entry.holder = Some((next.clone(), revision));
                effects.push(Effect::Granted {
                    lock: lock.to_owned(),
                    holder: next,
                    token: revision,
                });
            }
            None => {
                self.locks.remove(lock);
            }
        }
    }

    /// Ends `node`'s session and releases everything bound to it.
    fn end_session(&mut self, node: &NodeId, expired: bool, effects: &mut Vec<Effect>) {
        let revision = self.revision;
        self.sessions.remove(node.name());
        let gone: Vec<String> = self
            .names
            .iter()
            .filter(|(_, actor)| actor.id.node() == node)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.names.remove(&name);
            effects.push(Effect::Name { name, actor: None });
        }
        let left: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, members)| members.keys().any(|id| id.node() == node))
            .map(|(group, _)| group.clone())
            .collect();
        for group in left {
            let members = self.groups.get_mut(&group).expect("present");
            let gone: Vec<ActorId> = members
                .keys()
                .filter(|id| id.node() == node)
                .cloned()
                .collect();
            for id in gone {
                members.remove(&id);
            }
            if members.is_empty() {
                self.groups.remove(&group);
            }
        }
        let bound: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, lock)| {
                lock.waiters.iter().any(|w| &w.node == node)
                    || lock.holder.as_ref().is_some_and(|(h, _)| &h.node == node)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut freed = Vec::new();
        for name in bound {
            let lock = self.locks.get_mut(&name).expect("present");
            lock.waiters.retain(|w| &w.node != node);
            if let Some((holder, token)) = lock.holder.take_if(|(h, _)| &h.node == node) {
                effects.push(Effect::Revoked {
                    lock: name.clone(),
                    holder,
                    token,
                });
                freed.push(name);
            } else if lock.waiters.is_empty() && lock.holder.is_none() {
                self.locks.remove(&name);
            }
        }
        for name in freed {
            self.grant_next(&name, revision, effects);
        }
        let released: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, reservation)| &reservation.node == node)
            .map(|(id, _)| id.clone())
            .collect();
        for id in released {
            self.reservations.remove(&id);
            effects.push(Effect::Reservation {
                id,
                reservation: None,
            });
        }
        self.reserved.remove(node);
        self.requests.remove(node);
        if expired {
            let latest = self.expired.entry(node.name().to_owned()).or_default();
            *latest = (*latest).max(node.incarnation());
            effects.push(Effect::SessionExpired(node.clone()));
        } else {
            let latest = self.closed.entry(node.name().to_owned()).or_default();
            *latest = (*latest).max(node.incarnation());
            effects.push(Effect::SessionClosed(node.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
