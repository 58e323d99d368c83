//! Registry commands as the log and the proposals carry them, applied to a fresh state.
//!
//! # Input
//!
//! - byte 0: the wire form of the rest; even: log entries (`openraft::Entry<TypeConfig>`, as
//!   the log store writes them and `AppendEntries` carries them); odd: proposals (the
//!   `Vec<Command>` a node's `Propose` carries to the leader);
//! - the rest: MessagePack values of that form, one after the other, read until one does not
//!   decode.
//!
//! Each batch (an entry's payload, or a proposal) is applied to one state, in order, as a
//! voter's state machine applies committed entries.
//!
//! # Properties
//!
//! - Nothing panics, decoding or applying.
//! - Applying a batch at once gives the same outcomes, effects and state as applying its
//!   commands one by one, each request (`Command::Request`, with the commands it heads) as one
//!   (group commit does not change what commands mean); every command outside a request
//!   takes the next revision, and a request's grants take tokens in order.
//! - A request sent again at once changes nothing and has no effects, unless its node has no
//!   session (the registry remembers requests by their node's session).
//! - The invariants of `ensemble_registry::state` hold after every command: a lock has one
//!   holder, with a token no later than the revision, and never waits behind itself; waiters
//!   are unique; every holder, waiter, name, group member and reservation belongs to an open
//!   session; no expired incarnation has a session; a node's reserved totals are the sums of
//!   its reservations, and a reservation is made only if what it asks for fits the capacity
//!   given (with what the node's reservations hold of those resources already); a voter
//!   count, once set, is one the registry keeps (1 to `MAX_VOTERS`).
//! - Fencing tokens of the grants of one lock strictly increase; a revocation names the
//!   token of the grant it ends.
//! - The state survives a snapshot (encoded as `StateMachine` encodes it) unchanged, and the
//!   changes from a state to itself are none.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_registry::raft::TypeConfig;
use ensemble_registry::state::{Command, Effect, MAX_VOTERS, Outcome, RegistryState, changes};
use ensemble_runtime::NodeId;
use openraft::{Entry, EntryPayload};
use serde::de::DeserializeOwned;

/// At most this many commands are applied per input, to keep runs fast.
const MAX_COMMANDS: usize = 512;

/// Runs one input; panics if a property fails.
pub fn check(data: &[u8]) {
    let [form, rest @ ..] = data else {
        return;
    };
    let mut run = Run::default();
    if form % 2 == 0 {
        for entry in values::<Entry<TypeConfig>>(rest) {
            if let EntryPayload::Normal(batch) = entry.payload
                && !run.apply(&batch.0)
            {
                break;
            }
        }
    } else {
        for commands in values::<Vec<Command>>(rest) {
            if !run.apply(&commands) {
                break;
            }
        }
    }
    run.finish();
}

/// `Command::units` cuts a batch into its requests and other commands: in order, each unit
/// a head with at most as many commands as it counts (fewer only before another head or the
/// end), or one command without a head.
fn check_units(commands: &[Command]) {
    let units: Vec<&[Command]> = Command::units(commands).collect();
    assert_eq!(units.concat(), commands, "the units are not the batch");
    let mut at = 0;
    for unit in &units {
        at += unit.len();
        let heads = unit
            .iter()
            .filter(|c| matches!(c, Command::Request { .. }))
            .count();
        match unit {
            [
                Command::Request {
                    commands: count, ..
                },
                rest @ ..,
            ] => {
                assert_eq!(heads, 1, "a unit with two heads");
                let count = *count as usize;
                assert!(rest.len() <= count, "a head took more than it counts");
                if rest.len() < count {
                    assert!(
                        matches!(commands.get(at), None | Some(Command::Request { .. })),
                        "a head took fewer than it counts before another command"
                    );
                }
            }
            [_] => assert_eq!(heads, 0),
            _ => panic!("a unit of several commands without a head first: {unit:?}"),
        }
    }
}

/// The values of type `T` at the start of `bytes`, one after the other, up to the first that
/// does not decode.
fn values<T: DeserializeOwned>(mut bytes: &[u8]) -> impl Iterator<Item = T> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let mut de = rmp_serde::Deserializer::new(&mut bytes);
        serde::Deserialize::deserialize(&mut de).ok()
    })
}

/// A state and what the run has seen of it.
#[derive(Default)]
struct Run {
    state: RegistryState,
    applied: usize,
    /// The last fencing token granted, by lock.
    tokens: BTreeMap<String, u64>,
    /// Every node, group and lock the commands named, to look them up afterwards.
    nodes: BTreeSet<NodeId>,
    groups: BTreeSet<String>,
    locks: BTreeSet<String>,
}

impl Run {
    /// Applies a batch; false once the run has applied enough.
    fn apply(&mut self, commands: &[Command]) -> bool {
        if self.applied + commands.len() > MAX_COMMANDS {
            return false;
        }
        self.applied += commands.len();
        for command in commands {
            self.note(command);
        }
        let before = self.state.clone();
        let (outcomes, effects) = self.state.apply(commands);
        assert_eq!(outcomes.len(), Command::outcomes(commands));
        assert!(
            self.state.revision() <= before.revision() + outcomes.len() as u64,
            "a command took more than one revision"
        );

        check_units(commands);
        // The same batch a request (a head and its commands) or a command at a time, checking
        // each step.
        let mut single = before;
        let mut single_effects = Vec::new();
        let mut answered = outcomes.iter();
        for unit in Command::units(commands) {
            let revision = single.revision();
            let (got, effects) = single.apply(unit);
            let expected: Vec<Outcome> = answered.by_ref().take(got.len()).cloned().collect();
            assert_eq!(got, expected, "{unit:?}");
            match unit {
                [Command::Request { node, .. }, ..] => {
                    self.check_request(&single, unit, node, &got, &effects);
                }
                [command] => {
                    assert_eq!(
                        single.revision(),
                        revision + 1,
                        "every command outside a request takes one revision"
                    );
                    self.check_step(&single, command, &got[0], &effects);
                }
                _ => unreachable!("a unit without a head holds one command"),
            }
            single_effects.extend(effects);
        }
        assert_eq!(answered.next(), None, "outcomes left over");
        assert_eq!(
            single_effects, effects,
            "a batch has other effects than its commands"
        );
        assert!(
            single == self.state,
            "a batch leaves another state than its commands"
        );
        true
    }

    /// Checks the state after a request (`unit`: its head and commands), and that the request
    /// sent again at once changes nothing, unless its node has no session to remember it by
    /// (and never had one that ended: a request of an ended session is refused whole).
    fn check_request(
        &mut self,
        state: &RegistryState,
        unit: &[Command],
        node: &NodeId,
        answered: &[Outcome],
        effects: &[Effect],
    ) {
        let revision = state.revision();
        let mut last = None;
        for effect in effects {
            match effect {
                Effect::Granted { lock, token, .. } => {
                    assert!(*token <= revision, "a token after the revision");
                    assert!(last <= Some(*token), "tokens out of order within a request");
                    last = Some(*token);
                    if let Some(earlier) = self.tokens.insert(lock.clone(), *token) {
                        assert!(
                            *token > earlier,
                            "lock {lock:?}: token {token} after {earlier}"
                        );
                    }
                }
                Effect::Revoked { lock, token, .. } => assert_eq!(
                    self.tokens.get(lock),
                    Some(token),
                    "lock {lock:?}: a revocation of a grant that was not the last"
                ),
                _ => {}
            }
        }
        self.check_state(state);
        if state.session(node).is_none() && !state.has_ended(node) {
            return;
        }
        let mut again = state.clone();
        let (outcomes, effects) = again.apply(unit);
        assert!(
            effects.is_empty(),
            "a request sent again had effects: {effects:?}"
        );
        assert!(again == *state, "a request sent again changed the state");
        if state.has_ended(node) {
            // Its session ended (in this request, maybe): what it remembered went with it, and
            // every command is refused.
            let refused = Outcome::NoSession { node: node.clone() };
            assert!(
                outcomes.iter().all(|o| *o == refused) && outcomes.len() == answered.len(),
                "a request of an ended session sent again was answered {outcomes:?}"
            );
        } else {
            assert_eq!(
                outcomes, answered,
                "a request sent again was answered otherwise than the first time"
            );
        }
    }

    fn note(&mut self, command: &Command) {
        match command {
            Command::OpenSession { node, .. }
            | Command::CloseSession { node }
            | Command::ExpireSession { node }
            | Command::Reserve { node, .. } => {
                self.nodes.insert(node.clone());
            }
            Command::RegisterName { actor, .. } => {
                self.nodes.insert(actor.id.node().clone());
            }
            Command::JoinGroup { group, actor } => {
                self.groups.insert(group.clone());
                self.nodes.insert(actor.id.node().clone());
            }
            Command::LeaveGroup { group, .. } => {
                self.groups.insert(group.clone());
            }
            Command::Acquire { lock, holder, .. } | Command::Release { lock, holder } => {
                self.locks.insert(lock.clone());
                self.nodes.insert(holder.node.clone());
            }
            _ => {}
        }
    }

    /// Checks the state after one command, and what the command answered and did.
    fn check_step(
        &mut self,
        state: &RegistryState,
        command: &Command,
        outcome: &Outcome,
        effects: &[Effect],
    ) {
        let revision = state.revision();
        for effect in effects {
            match effect {
                Effect::Granted { lock, token, .. } => {
                    assert_eq!(
                        *token, revision,
                        "a grant's token is its command's revision"
                    );
                    if let Some(last) = self.tokens.insert(lock.clone(), *token) {
                        assert!(*token > last, "lock {lock:?}: token {token} after {last}");
                    }
                }
                Effect::Revoked { lock, token, .. } => {
                    assert_eq!(
                        self.tokens.get(lock),
                        Some(token),
                        "lock {lock:?}: a revocation of a grant that was not the last"
                    );
                }
                _ => {}
            }
        }
        if let Some(count) = state.voter_count() {
            assert!(
                (1..=MAX_VOTERS as usize).contains(&count),
                "a voter count of {count} kept"
            );
        }
        match (command, outcome) {
            (Command::Acquire { lock, holder, .. }, Outcome::Granted { token }) => {
                let held = state.lock(lock).and_then(|l| l.holder.as_ref());
                assert_eq!(
                    held,
                    Some(&(holder.clone(), *token)),
                    "granted but not held"
                );
            }
            (Command::Acquire { lock, holder, .. }, Outcome::Queued { ahead }) => {
                let waiters = &state.lock(lock).expect("queued on a lock").waiters;
                assert_eq!(waiters.get(*ahead), Some(holder), "queued elsewhere");
            }
            (
                Command::Reserve {
                    node,
                    need,
                    capacity,
                    ..
                },
                Outcome::Done { .. },
            ) => {
                // Only what is asked for is held to this command's capacity: other resources
                // were reserved against the capacities their own commands gave.
                let reserved = state.reserved(node);
                for (resource, _) in need.iter().filter(|(_, asked)| **asked > 0) {
                    let total = reserved.get(resource).copied().unwrap_or(0);
                    let cap = capacity.get(resource).copied().unwrap_or(0);
                    assert!(total <= cap, "{node}: {total} of {resource} over {cap}");
                }
            }
            _ => {}
        }
        self.check_state(state);
    }

    /// The invariants of the registry state.
    fn check_state(&self, state: &RegistryState) {
        let open = |node: &NodeId| state.session(node).is_some();
        for session in state.sessions() {
            assert!(
                !state.has_expired(&session.node),
                "{} has a session but expired",
                session.node
            );
        }
        let mut locks = 0;
        for (name, lock) in state.locks() {
            locks += 1;
            let (holder, token) = lock.holder.as_ref().unwrap_or_else(|| {
                panic!("lock {name:?} is kept without a holder: {lock:?}");
            });
            assert!(open(&holder.node), "lock {name:?} held without a session");
            assert!(*token <= state.revision());
            assert_eq!(
                self.tokens.get(name),
                Some(token),
                "lock {name:?}: token not granted"
            );
            assert!(!lock.waiters.contains(holder), "{name:?}: the holder waits");
            let unique: BTreeSet<_> = lock.waiters.iter().collect();
            assert_eq!(unique.len(), lock.waiters.len(), "{name:?}: a waiter twice");
            for waiter in &lock.waiters {
                assert!(
                    open(&waiter.node),
                    "lock {name:?} waited for without a session"
                );
            }
        }
        assert!(locks <= self.locks.len());
        for (name, actor) in state.names() {
            assert!(
                open(actor.id.node()),
                "name {name:?} bound without a session"
            );
        }
        for group in &self.groups {
            for actor in state.group(group) {
                assert!(
                    open(actor.id.node()),
                    "group {group:?}: a member without a session"
                );
            }
        }
        let mut sums: BTreeMap<&NodeId, BTreeMap<String, u64>> = BTreeMap::new();
        for (id, reservation) in state.reservations() {
            assert!(
                open(&reservation.node),
                "reservation {id:?} without a session"
            );
            let sum = sums.entry(&reservation.node).or_default();
            for (resource, &amount) in &reservation.need {
                if amount > 0 {
                    *sum.entry(resource.clone()).or_default() += amount;
                }
            }
        }
        for node in &self.nodes {
            let expected = sums.remove(node).unwrap_or_default();
            assert_eq!(state.reserved(node), expected, "{node}: reserved totals");
        }
        assert!(
            sums.is_empty(),
            "reservations of nodes never named: {sums:?}"
        );
    }

    /// Checks what must hold of the final state.
    fn finish(self) {
        let snapshot = rmp_serde::to_vec(&self.state).expect("a state encodes");
        let restored: RegistryState = rmp_serde::from_slice(&snapshot).expect("a snapshot loads");
        assert!(restored == self.state, "a snapshot changed the state");
        assert_eq!(changes(&self.state, &self.state), Vec::new());
    }
}
