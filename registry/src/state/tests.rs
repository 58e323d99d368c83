use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn node(name: &str, incarnation: u64) -> NodeId {
    NodeId::new(name, incarnation)
}

fn actor(node: &NodeId, seq: u64) -> WireRef {
    WireRef {
        id: ActorId::new(node.clone(), seq),
        msg_type: "Msg".into(),
    }
}

fn holder(node: &NodeId, id: u64) -> Holder {
    Holder {
        node: node.clone(),
        id,
    }
}

fn open(state: &mut RegistryState, node: &NodeId) {
    let (outcomes, _) = state.apply(&[Command::OpenSession {
        node: node.clone(),
        ttl_ms: 1000,
    }]);
    assert!(matches!(outcomes[0], Outcome::Done { .. }), "{outcomes:?}");
}

fn one(state: &mut RegistryState, command: Command) -> (Outcome, Vec<Effect>) {
    let (mut outcomes, effects) = state.apply(&[command]);
    (outcomes.remove(0), effects)
}

#[test]
fn a_name_is_held_by_one_actor_until_it_unregisters() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    let first = actor(&a, 1);
    let (outcome, _) = one(
        &mut state,
        Command::RegisterName {
            name: "master".into(),
            actor: first.clone(),
        },
    );
    assert!(matches!(outcome, Outcome::Done { .. }));
    let (outcome, _) = one(
        &mut state,
        Command::RegisterName {
            name: "master".into(),
            actor: actor(&a, 2),
        },
    );
    assert_eq!(
        outcome,
        Outcome::NameTaken {
            holder: first.clone()
        }
    );
    // Only the holder can free it.
    let (outcome, _) = one(
        &mut state,
        Command::UnregisterName {
            name: "master".into(),
            actor: actor(&a, 2).id,
        },
    );
    assert_eq!(outcome, Outcome::Unchanged);
    let (outcome, effects) = one(
        &mut state,
        Command::UnregisterName {
            name: "master".into(),
            actor: first.id,
        },
    );
    assert!(matches!(outcome, Outcome::Done { .. }));
    assert_eq!(
        effects,
        vec![Effect::Name {
            name: "master".into(),
            actor: None
        }]
    );
    assert!(state.name("master").is_none());
}

#[test]
fn commands_need_an_open_session() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    let (outcome, _) = one(
        &mut state,
        Command::RegisterName {
            name: "x".into(),
            actor: actor(&a, 1),
        },
    );
    assert_eq!(outcome, Outcome::NoSession { node: a.clone() });
    let (outcome, _) = one(
        &mut state,
        Command::Acquire {
            lock: "l".into(),
            holder: holder(&a, 1),
            wait: true,
        },
    );
    assert_eq!(outcome, Outcome::NoSession { node: a });
}

#[test]
fn expiry_releases_names_groups_and_locks_and_hands_locks_on() {
    let mut state = RegistryState::default();
    let (a, b) = (node("a", 1), node("b", 1));
    open(&mut state, &a);
    open(&mut state, &b);
    state.apply(&[
        Command::RegisterName {
            name: "master".into(),
            actor: actor(&a, 1),
        },
        Command::JoinGroup {
            group: "workers".into(),
            actor: actor(&a, 1),
        },
        Command::JoinGroup {
            group: "workers".into(),
            actor: actor(&b, 1),
        },
    ]);
    let (granted, _) = one(
        &mut state,
        Command::Acquire {
            lock: "l".into(),
            holder: holder(&a, 1),
            wait: true,
        },
    );
    let Outcome::Granted { token: first } = granted else {
        panic!("{granted:?}")
    };
    let (queued, _) = one(
        &mut state,
        Command::Acquire {
            lock: "l".into(),
            holder: holder(&b, 7),
            wait: true,
        },
    );
    assert_eq!(queued, Outcome::Queued { ahead: 0 });

    let (outcome, effects) = one(&mut state, Command::ExpireSession { node: a.clone() });
    assert!(matches!(outcome, Outcome::Done { .. }));
    assert!(state.name("master").is_none());
    assert_eq!(state.group("workers"), vec![actor(&b, 1)]);
    let (held_by, token) = state.lock("l").unwrap().holder.clone().unwrap();
    assert_eq!(held_by, holder(&b, 7));
    assert!(token > first);
    assert!(effects.contains(&Effect::Revoked {
        lock: "l".into(),
        holder: holder(&a, 1),
        token: first
    }));
    assert!(effects.contains(&Effect::Granted {
        lock: "l".into(),
        holder: holder(&b, 7),
        token
    }));
    assert_eq!(effects.last(), Some(&Effect::SessionExpired(a.clone())));
    assert!(state.has_expired(&a));
    // The expired incarnation cannot come back; a new one can.
    let (outcome, _) = one(
        &mut state,
        Command::OpenSession {
            node: a.clone(),
            ttl_ms: 1000,
        },
    );
    assert_eq!(outcome, Outcome::NoSession { node: a });
    open(&mut state, &node("a", 2));
}

#[test]
fn a_new_incarnation_ends_the_old_session() {
    let mut state = RegistryState::default();
    let old = node("a", 1);
    open(&mut state, &old);
    state.apply(&[Command::RegisterName {
        name: "n".into(),
        actor: actor(&old, 1),
    }]);
    let new = node("a", 2);
    let (outcome, effects) = one(
        &mut state,
        Command::OpenSession {
            node: new.clone(),
            ttl_ms: 1000,
        },
    );
    assert!(matches!(outcome, Outcome::Done { .. }));
    assert!(effects.contains(&Effect::SessionExpired(old.clone())));
    assert!(state.name("n").is_none());
    // The old incarnation is refused from now on.
    let (outcome, _) = one(
        &mut state,
        Command::OpenSession {
            node: old,
            ttl_ms: 1000,
        },
    );
    assert_eq!(outcome, Outcome::StaleIncarnation { current: 2 });
}

#[test]
fn try_acquire_fails_on_a_held_lock_and_release_by_a_stranger_is_refused() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    one(
        &mut state,
        Command::Acquire {
            lock: "l".into(),
            holder: holder(&a, 1),
            wait: false,
        },
    );
    let (outcome, _) = one(
        &mut state,
        Command::Acquire {
            lock: "l".into(),
            holder: holder(&a, 2),
            wait: false,
        },
    );
    assert_eq!(
        outcome,
        Outcome::Busy {
            holder: holder(&a, 1)
        }
    );
    let (outcome, _) = one(
        &mut state,
        Command::Release {
            lock: "l".into(),
            holder: holder(&a, 2),
        },
    );
    assert_eq!(outcome, Outcome::NotHeld);
    let (outcome, _) = one(
        &mut state,
        Command::Release {
            lock: "l".into(),
            holder: holder(&a, 1),
        },
    );
    assert!(matches!(outcome, Outcome::Done { .. }));
    assert!(
        state.lock("l").is_none(),
        "a free lock nobody waits for is forgotten"
    );
}

#[test]
fn compare_and_set_follows_revisions() {
    let mut state = RegistryState::default();
    let (outcome, _) = one(
        &mut state,
        Command::CompareAndSet {
            key: "k".into(),
            expected: 0,
            value: Some(b"1".to_vec()),
        },
    );
    let Outcome::Done { revision } = outcome else {
        panic!("{outcome:?}")
    };
    let (outcome, _) = one(
        &mut state,
        Command::CompareAndSet {
            key: "k".into(),
            expected: 0,
            value: Some(b"2".to_vec()),
        },
    );
    assert_eq!(outcome, Outcome::RevisionMismatch { current: revision });
    one(
        &mut state,
        Command::CompareAndSet {
            key: "k".into(),
            expected: revision,
            value: Some(b"2".to_vec()),
        },
    );
    let kv = state.get("k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.created),
        (&b"2"[..], 2, revision)
    );
    one(
        &mut state,
        Command::Put {
            key: "kz".into(),
            value: vec![],
        },
    );
    one(
        &mut state,
        Command::Put {
            key: "l".into(),
            value: vec![],
        },
    );
    let keys: Vec<_> = state.prefix("k").map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, ["k", "kz"]);
}

#[test]
fn the_state_survives_a_serde_round_trip() {
    let mut state = RegistryState::default();
    let a = node("a", 3);
    open(&mut state, &a);
    state.apply(&[
        Command::RegisterName {
            name: "n".into(),
            actor: actor(&a, 1),
        },
        Command::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        },
    ]);
    let bytes = rmp_serde::to_vec(&state).unwrap();
    let back: RegistryState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
}

/// One step of a random lock workload.
#[derive(Clone, Debug)]
enum Step {
    Acquire { who: usize, lock: usize, wait: bool },
    Release { who: usize, lock: usize },
    Expire { node: usize },
    Reopen { node: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..6usize, 0..2usize, any::<bool>())
            .prop_map(|(who, lock, wait)| Step::Acquire { who, lock, wait }),
        4 => (0..6usize, 0..2usize).prop_map(|(who, lock)| Step::Release { who, lock }),
        1 => (0..3usize).prop_map(|node| Step::Expire { node }),
        1 => (0..3usize).prop_map(|node| Step::Reopen { node }),
    ]
}

proptest! {
    /// Against a simple model: at most one holder per lock, grants in queue order, and tokens
    /// strictly increasing per lock, whatever the mix of acquires, releases and expiries.
    #[test]
    fn locks_keep_one_holder_fifo_order_and_increasing_tokens(
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut state = RegistryState::default();
        let mut incarnations = [1u64; 3];
        for n in 0..3 {
            open(&mut state, &node(&format!("n{n}"), 1));
        }
        let holder_of = |incarnations: &[u64; 3], who: usize| Holder {
            node: node(&format!("n{}", who % 3), incarnations[who % 3]),
            id: who as u64,
        };
        let mut last_token: BTreeMap<String, u64> = BTreeMap::new();
        for step in &steps {
            let command = match *step {
                    Step::Acquire { who, lock, wait } => Command::Acquire {
                        lock: format!("l{lock}"),
                        holder: holder_of(&incarnations, who),
                        wait,
                    },
                    Step::Release { who, lock } => Command::Release {
                        lock: format!("l{lock}"),
                        holder: holder_of(&incarnations, who),
                    },
                    Step::Expire { node: n } => Command::ExpireSession {
                        node: node(&format!("n{n}"), incarnations[n]),
                    },
                    Step::Reopen { node: n } => {
                        incarnations[n] += 1;
                        Command::OpenSession { node: node(&format!("n{n}"), incarnations[n]), ttl_ms: 1 }
                    }
                };
            let before = state.clone();
            let (outcomes, effects) = state.apply(std::slice::from_ref(&command));
            prop_assert!(
                outcomes[0] != Outcome::Unchanged || RegistryState::may_answer_unchanged(&command),
                "{command:?} answered Unchanged"
            );
            for effect in &effects {
                if let Effect::Granted { lock, token, .. } = effect {
                    let last = last_token.insert(lock.clone(), *token).unwrap_or(0);
                    prop_assert!(*token > last, "token {token} after {last} on {lock}");
                }
            }
            for (name, lock) in state.locks() {
                // Nobody waits for a free lock, and the holder never waits in line too.
                prop_assert!(lock.holder.is_some(), "{name} has waiters but no holder");
                let (h, _) = lock.holder.as_ref().unwrap();
                prop_assert!(!lock.waiters.contains(h));
                prop_assert!(state.session(&h.node).is_some(), "{name} held by {h:?} without a session");
                // Waiters keep their relative order from the state before.
                if let Some(old) = before.lock(name) {
                    let kept: Vec<_> = old.waiters.iter().filter(|w| lock.waiters.contains(w)).collect();
                    let now: Vec<_> = lock.waiters.iter().filter(|w| old.waiters.contains(w)).collect();
                    prop_assert_eq!(kept, now);
                }
            }
        }
    }
}

fn amounts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(r, n)| (r.to_owned(), n)).collect()
}

fn reserve(id: &str, node: &NodeId, need: &[(&str, u64)], capacity: &[(&str, u64)]) -> Command {
    Command::Reserve {
        id: id.into(),
        node: node.clone(),
        need: amounts(need),
        capacity: amounts(capacity),
    }
}

#[test]
fn a_reservation_within_capacity_is_made_and_counted() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    let capacity = [("cpu", 4), ("memory", 8)];
    let (outcome, effects) = one(
        &mut state,
        reserve("web.1", &a, &[("cpu", 1), ("memory", 2)], &capacity),
    );
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    let made = Reservation {
        node: a.clone(),
        need: amounts(&[("cpu", 1), ("memory", 2)]),
    };
    assert_eq!(
        effects,
        vec![Effect::Reservation {
            id: "web.1".into(),
            reservation: Some(made.clone())
        }]
    );
    // Up to the capacity exactly.
    let (outcome, _) = one(
        &mut state,
        reserve("web.2", &a, &[("cpu", 3), ("memory", 6)], &capacity),
    );
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    assert_eq!(state.reserved(&a), amounts(&[("cpu", 4), ("memory", 8)]));
    assert_eq!(state.reservation("web.1"), Some(&made));
    let ids: Vec<_> = state.reservations().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, ["web.1", "web.2"]);
    // Another node's totals are its own.
    assert!(state.reserved(&node("b", 1)).is_empty());
}

#[test]
fn a_reservation_that_does_not_fit_names_the_resource_and_what_is_free() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    let capacity = [("cpu", 4), ("memory", 8)];
    one(&mut state, reserve("one", &a, &[("cpu", 3)], &capacity));
    let before = state.clone();
    let (outcome, effects) = one(
        &mut state,
        reserve("two", &a, &[("cpu", 2), ("memory", 1)], &capacity),
    );
    assert_eq!(
        outcome,
        Outcome::Insufficient {
            resource: "cpu".into(),
            need: 2,
            free: 1
        }
    );
    assert!(effects.is_empty());
    // Nothing was taken, not even the memory that fitted.
    assert_eq!(state.reserved(&a), before.reserved(&a));
    assert!(state.reservation("two").is_none());
    // A resource the node does not have has none free; asking for 0 of it fits.
    let (outcome, _) = one(&mut state, reserve("three", &a, &[("gpu", 1)], &capacity));
    assert_eq!(
        outcome,
        Outcome::Insufficient {
            resource: "gpu".into(),
            need: 1,
            free: 0
        }
    );
    let (outcome, _) = one(
        &mut state,
        reserve("four", &a, &[("cpu", 1), ("gpu", 0)], &capacity),
    );
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    assert_eq!(state.reserved(&a), amounts(&[("cpu", 4)]));
    // A capacity figure below what is held already leaves nothing free, and never underflows.
    let (outcome, _) = one(
        &mut state,
        reserve("five", &a, &[("cpu", 1)], &[("cpu", 2)]),
    );
    assert_eq!(
        outcome,
        Outcome::Insufficient {
            resource: "cpu".into(),
            need: 1,
            free: 0
        }
    );
}

#[test]
fn reserving_again_changes_nothing_and_a_taken_id_is_refused() {
    let mut state = RegistryState::default();
    let (a, b) = (node("a", 1), node("b", 1));
    open(&mut state, &a);
    open(&mut state, &b);
    let capacity = [("cpu", 2)];
    one(&mut state, reserve("job", &a, &[("cpu", 2)], &capacity));
    // A retry of the same command: already done, even though the node is full now.
    let (outcome, effects) = one(&mut state, reserve("job", &a, &[("cpu", 2)], &capacity));
    assert_eq!(outcome, Outcome::Unchanged);
    assert!(effects.is_empty());
    assert_eq!(state.reserved(&a), amounts(&[("cpu", 2)]));
    // The same id for another need or another node is someone else's reservation.
    let taken = Outcome::ReservationTaken {
        node: a.clone(),
        need: amounts(&[("cpu", 2)]),
    };
    let (outcome, _) = one(&mut state, reserve("job", &a, &[("cpu", 1)], &capacity));
    assert_eq!(outcome, taken);
    let (outcome, _) = one(&mut state, reserve("job", &b, &[("cpu", 2)], &capacity));
    assert_eq!(outcome, taken);
    assert!(state.reserved(&b).is_empty());
}

#[test]
fn unreserving_frees_the_capacity() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    let capacity = [("cpu", 2)];
    one(&mut state, reserve("one", &a, &[("cpu", 2)], &capacity));
    let (outcome, _) = one(&mut state, reserve("two", &a, &[("cpu", 1)], &capacity));
    assert!(
        matches!(outcome, Outcome::Insufficient { .. }),
        "{outcome:?}"
    );
    let (outcome, effects) = one(&mut state, Command::Unreserve { id: "one".into() });
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    assert_eq!(
        effects,
        vec![Effect::Reservation {
            id: "one".into(),
            reservation: None
        }]
    );
    assert!(state.reserved(&a).is_empty());
    assert!(
        state.reserved.is_empty(),
        "no node is kept with nothing reserved"
    );
    let (outcome, _) = one(&mut state, Command::Unreserve { id: "one".into() });
    assert_eq!(outcome, Outcome::Unchanged);
    let (outcome, _) = one(&mut state, reserve("two", &a, &[("cpu", 1)], &capacity));
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
}

#[test]
fn a_session_end_releases_its_node_s_reservations() {
    let capacity = [("cpu", 1)];
    let (a, b) = (node("a", 1), node("b", 1));
    let ends = [
        ("close", Command::CloseSession { node: a.clone() }),
        ("expire", Command::ExpireSession { node: a.clone() }),
        (
            "newer incarnation",
            Command::OpenSession {
                node: node("a", 2),
                ttl_ms: 1000,
            },
        ),
    ];
    for (how, end) in ends {
        let mut state = RegistryState::default();
        open(&mut state, &a);
        open(&mut state, &b);
        one(&mut state, reserve("a.1", &a, &[("cpu", 1)], &capacity));
        one(&mut state, reserve("b.1", &b, &[("cpu", 1)], &capacity));
        let (outcome, effects) = one(&mut state, end);
        assert!(
            matches!(outcome, Outcome::Done { .. }),
            "{how}: {outcome:?}"
        );
        assert!(
            effects.contains(&Effect::Reservation {
                id: "a.1".into(),
                reservation: None
            }),
            "{how}: {effects:?}"
        );
        assert!(state.reservation("a.1").is_none(), "{how}");
        assert!(state.reserved(&a).is_empty(), "{how}");
        // The other node keeps its own.
        assert!(state.reservation("b.1").is_some(), "{how}");
        assert_eq!(state.reserved(&b), amounts(&[("cpu", 1)]), "{how}");
    }
    // The new incarnation starts with its whole capacity free.
    let mut state = RegistryState::default();
    let old = node("a", 1);
    open(&mut state, &old);
    one(&mut state, reserve("x", &old, &[("cpu", 1)], &capacity));
    let new = node("a", 2);
    open(&mut state, &new);
    let (outcome, _) = one(&mut state, reserve("x", &new, &[("cpu", 1)], &capacity));
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
}

#[test]
fn reserving_needs_the_node_s_session() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    let capacity = [("cpu", 1)];
    let (outcome, _) = one(&mut state, reserve("x", &a, &[("cpu", 1)], &capacity));
    assert_eq!(outcome, Outcome::NoSession { node: a.clone() });
    open(&mut state, &a);
    one(&mut state, Command::CloseSession { node: a.clone() });
    let (outcome, _) = one(&mut state, reserve("x", &a, &[("cpu", 1)], &capacity));
    assert_eq!(outcome, Outcome::NoSession { node: a.clone() });
    // Nor can an incarnation other than the open one reserve.
    open(&mut state, &node("a", 2));
    let (outcome, _) = one(&mut state, reserve("x", &a, &[("cpu", 1)], &capacity));
    assert_eq!(outcome, Outcome::NoSession { node: a });
    assert_eq!(state.reservations().count(), 0);
}

#[test]
fn a_resync_reports_reservations_made_and_released() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    let capacity = [("cpu", 4)];
    one(&mut state, reserve("gone", &a, &[("cpu", 1)], &capacity));
    let old = state.clone();
    state.apply(&[
        Command::Unreserve { id: "gone".into() },
        reserve("new", &a, &[("cpu", 2)], &capacity),
    ]);
    let effects = changes(&old, &state);
    assert_eq!(
        effects,
        vec![
            Effect::Reservation {
                id: "gone".into(),
                reservation: None
            },
            Effect::Reservation {
                id: "new".into(),
                reservation: state.reservation("new").cloned()
            },
        ]
    );
}

#[test]
fn reservations_survive_a_serde_round_trip() {
    let mut state = RegistryState::default();
    let a = node("a", 3);
    open(&mut state, &a);
    one(&mut state, reserve("r", &a, &[("cpu", 1)], &[("cpu", 1)]));
    let bytes = rmp_serde::to_vec(&state).unwrap();
    let back: RegistryState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.reserved(&a), amounts(&[("cpu", 1)]));
}

/// `state` as a snapshot of an earlier layout holds it: snapshots encode the state as an
/// array of its fields, and earlier layouts stop after the first `fields` of today's.
fn encoded_as_of(state: &RegistryState, fields: usize) -> Vec<u8> {
    fn encode<T: Serialize>(field: &T) -> Vec<u8> {
        rmp_serde::to_vec(field).unwrap()
    }
    let all: [Vec<u8>; 12] = [
        encode(&state.revision),
        encode(&state.sessions),
        encode(&state.names),
        encode(&state.groups),
        encode(&state.locks),
        encode(&state.kv),
        encode(&state.expired),
        encode(&state.reservations),
        encode(&state.reserved),
        encode(&state.requests),
        encode(&state.voter_count),
        encode(&state.closed),
    ];
    assert_eq!(
        rmp_serde::to_vec(state).unwrap(),
        [vec![0x90 | all.len() as u8], all.concat()].concat(),
        "the state has other fields than these, in another order"
    );
    [vec![0x90 | fields as u8], all[..fields].concat()].concat()
}

#[test]
fn a_snapshot_from_before_reservations_still_loads() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    // Older snapshots stop before `reservations`.
    let back: RegistryState = rmp_serde::from_slice(&encoded_as_of(&state, 7)).unwrap();
    assert_eq!(back, state);
}

#[test]
fn values_encoded_as_arrays_of_integers_still_load() {
    // Config values were once encoded byte by byte, as a MessagePack array of integers; they
    // are MessagePack bin now. Logs and snapshots written before must still read.
    #[derive(Serialize)]
    enum Old {
        Put {
            key: String,
            value: Vec<u8>,
        },
        CompareAndSet {
            key: String,
            expected: u64,
            value: Option<Vec<u8>>,
        },
    }
    let value = vec![0, 127, 128, 255];
    let cases = [
        (
            Old::Put {
                key: "k".into(),
                value: value.clone(),
            },
            Command::Put {
                key: "k".into(),
                value: value.clone(),
            },
        ),
        (
            Old::CompareAndSet {
                key: "k".into(),
                expected: 3,
                value: Some(value.clone()),
            },
            Command::CompareAndSet {
                key: "k".into(),
                expected: 3,
                value: Some(value.clone()),
            },
        ),
        (
            Old::CompareAndSet {
                key: "k".into(),
                expected: 0,
                value: None,
            },
            Command::CompareAndSet {
                key: "k".into(),
                expected: 0,
                value: None,
            },
        ),
    ];
    for (old, new) in cases {
        // Log entries are encoded with field names.
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let back: Command = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, new);
    }
    // Snapshots encode a key's record as an array of its fields.
    let old = (&value, 1_u64, 2_u64, 1_u64);
    let back: KeyValue = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert_eq!(back.value, value);
    // And what is written now is bin: a 0xc4 marker, the length, the bytes.
    let now = rmp_serde::to_vec_named(&Command::Put {
        key: "k".into(),
        value: value.clone(),
    })
    .unwrap();
    assert!(
        now.ends_with(&[0xc4, 4, 0, 127, 128, 255]),
        "not bin: {now:x?}"
    );
}

/// One step of a random placement workload.
#[derive(Clone, Debug)]
enum Placement {
    Reserve {
        id: usize,
        node: usize,
        need: BTreeMap<String, u64>,
    },
    Unreserve {
        id: usize,
    },
    Close {
        node: usize,
    },
    Expire {
        node: usize,
    },
    Reopen {
        node: usize,
    },
}

fn placement() -> impl Strategy<Value = Placement> {
    let need = proptest::collection::btree_map(
        proptest::sample::select(vec!["cpu".to_owned(), "memory".into(), "gpu".into()]),
        0..4u64,
        0..3,
    );
    prop_oneof![
        8 => (0..8usize, 0..3usize, need).prop_map(|(id, node, need)| Placement::Reserve { id, node, need }),
        4 => (0..8usize).prop_map(|id| Placement::Unreserve { id }),
        1 => (0..3usize).prop_map(|node| Placement::Close { node }),
        1 => (0..3usize).prop_map(|node| Placement::Expire { node }),
        1 => (0..3usize).prop_map(|node| Placement::Reopen { node }),
    ]
}

/// Each node's capacity in the placement workload; the third has no cpu at all.
fn capacity_of(n: usize) -> BTreeMap<String, u64> {
    match n {
        0 => amounts(&[("cpu", 4), ("memory", 6)]),
        1 => amounts(&[("cpu", 2), ("memory", 2), ("gpu", 1)]),
        _ => amounts(&[("memory", 3)]),
    }
}

/// Each node's totals, summed from the reservations themselves, without zeros.
fn recomputed(state: &RegistryState) -> BTreeMap<NodeId, BTreeMap<String, u64>> {
    let mut totals: BTreeMap<NodeId, BTreeMap<String, u64>> = BTreeMap::new();
    for (_, reservation) in state.reservations() {
        for (resource, &amount) in reservation.need.iter().filter(|(_, a)| **a > 0) {
            *totals
                .entry(reservation.node.clone())
                .or_default()
                .entry(resource.clone())
                .or_default() += amount;
        }
    }
    totals
}

/// The reservation effects in order, folded to where each id ended.
fn net_reservations(effects: &[Effect]) -> BTreeMap<String, Option<Reservation>> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Reservation { id, reservation } => Some((id.clone(), reservation.clone())),
            _ => None,
        })
        .collect()
}

proptest! {
    /// Whatever the mix of reserves, unreserves and session ends: no node is reserved beyond
    /// its capacity, each node's totals are the sums of its reservations, every reservation's
    /// node has an open session, a reserve is refused exactly when it does not fit (naming what
    /// is free), and a resync reports the same reservation changes as applying the commands.
    #[test]
    fn reservations_never_oversubscribe_a_node(
        steps in proptest::collection::vec(placement(), 1..200),
    ) {
        let mut state = RegistryState::default();
        let mut incarnations = [1u64; 3];
        let name = |n: usize| format!("n{n}");
        for n in 0..3 {
            open(&mut state, &node(&name(n), 1));
        }
        for step in &steps {
            let command = match step {
                Placement::Reserve { id, node: n, need } => Command::Reserve {
                    id: format!("r{id}"),
                    node: node(&name(*n), incarnations[*n]),
                    need: need.clone(),
                    capacity: capacity_of(*n),
                },
                Placement::Unreserve { id } => Command::Unreserve { id: format!("r{id}") },
                Placement::Close { node: n } => Command::CloseSession {
                    node: node(&name(*n), incarnations[*n]),
                },
                Placement::Expire { node: n } => Command::ExpireSession {
                    node: node(&name(*n), incarnations[*n]),
                },
                Placement::Reopen { node: n } => {
                    incarnations[*n] += 1;
                    Command::OpenSession { node: node(&name(*n), incarnations[*n]), ttl_ms: 1 }
                }
            };
            let before = state.clone();
            let (outcome, effects) = one(&mut state, command.clone());
            prop_assert!(
                outcome != Outcome::Unchanged || RegistryState::may_answer_unchanged(&command),
                "{command:?} answered Unchanged"
            );

            if let Command::Reserve { id, node: target, need, capacity } = &command {
                let held = before.reserved(target);
                let expected = if before.session(target).is_none() {
                    Outcome::NoSession { node: target.clone() }
                } else if let Some(existing) = before.reservation(id) {
                    if &existing.node == target && &existing.need == need {
                        Outcome::Unchanged
                    } else {
                        Outcome::ReservationTaken {
                            node: existing.node.clone(),
                            need: existing.need.clone(),
                        }
                    }
                } else {
                    need.iter()
                        .find_map(|(resource, &asked)| {
                            let cap = capacity.get(resource).copied().unwrap_or(0);
                            let used = held.get(resource).copied().unwrap_or(0);
                            (used + asked > cap && asked > 0).then(|| Outcome::Insufficient {
                                resource: resource.clone(),
                                need: asked,
                                free: cap - used,
                            })
                        })
                        .unwrap_or(Outcome::Done { revision: state.revision() })
                };
                prop_assert_eq!(outcome, expected);
            }

            let totals = recomputed(&state);
            let reserved: BTreeMap<_, _> = state.reserved.clone().into_iter().collect();
            prop_assert_eq!(&reserved, &totals);
            for (target, held) in &totals {
                let n: usize = target.name()[1..].parse().unwrap();
                let capacity = capacity_of(n);
                for (resource, &amount) in held {
                    let cap = capacity.get(resource).copied().unwrap_or(0);
                    prop_assert!(amount <= cap, "{target} holds {amount} of {resource}, capacity {cap}");
                }
                prop_assert_eq!(&state.reserved(target), held);
            }
            for (id, reservation) in state.reservations() {
                prop_assert!(
                    state.session(&reservation.node).is_some(),
                    "{id} is on {} which has no session", reservation.node
                );
            }
            prop_assert_eq!(net_reservations(&effects), net_reservations(&changes(&before, &state)));
        }
    }
}

/// The state's maps became persistent ones (so that a snapshot copies them in O(1)); they are
/// encoded exactly as the standard maps they replaced were, so snapshots and copies taken
/// before still load.
#[test]
fn persistent_maps_encode_as_the_standard_maps_did() {
    let entries = (0..300u64).map(|i| {
        let value = KeyValue {
            value: vec![i as u8; 3],
            created: i,
            modified: i + 1,
            version: 2,
        };
        (format!("key/{i:03}"), value)
    });
    let standard: BTreeMap<String, KeyValue> = entries.clone().collect();
    let persistent: OrdMap<String, KeyValue> = entries.collect();
    let bytes = rmp_serde::to_vec(&standard).unwrap();
    assert_eq!(rmp_serde::to_vec(&persistent).unwrap(), bytes);
    let loaded: OrdMap<String, KeyValue> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(loaded, persistent);
}

/// One step of a random workload of names, groups, keys and sessions.
#[derive(Clone, Debug)]
enum Entry {
    Register { actor: usize, name: usize },
    Unregister { actor: usize, name: usize },
    Join { actor: usize, group: usize },
    Leave { actor: usize, group: usize },
    Put { key: usize },
    Delete { key: usize },
    Open { node: usize },
    Close { node: usize },
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        3 => (0..4usize, 0..2usize).prop_map(|(actor, name)| Entry::Register { actor, name }),
        2 => (0..4usize, 0..2usize).prop_map(|(actor, name)| Entry::Unregister { actor, name }),
        3 => (0..4usize, 0..2usize).prop_map(|(actor, group)| Entry::Join { actor, group }),
        2 => (0..4usize, 0..2usize).prop_map(|(actor, group)| Entry::Leave { actor, group }),
        1 => (0..2usize).prop_map(|key| Entry::Put { key }),
        1 => (0..2usize).prop_map(|key| Entry::Delete { key }),
        1 => (0..2usize).prop_map(|node| Entry::Open { node }),
        1 => (0..2usize).prop_map(|node| Entry::Close { node }),
    ]
}

proptest! {
    /// `shows` is what a read-your-writes wait for an `Unchanged` answer waits on: the state
    /// shows a command's result right after any command that was done or answered unchanged,
    /// and before it already when it was answered unchanged (a retry of a command that
    /// committed unanswered).
    #[test]
    fn a_state_shows_what_it_did_or_left_unchanged(
        steps in proptest::collection::vec(entry(), 1..120),
    ) {
        let mut state = RegistryState::default();
        let nodes = [node("n0", 1), node("n1", 1)];
        let the_actor = |a: usize| actor(&nodes[a % 2], a as u64);
        for step in &steps {
            let command = match *step {
                Entry::Register { actor, name } => Command::RegisterName {
                    name: format!("name{name}"),
                    actor: the_actor(actor),
                },
                Entry::Unregister { actor, name } => Command::UnregisterName {
                    name: format!("name{name}"),
                    actor: the_actor(actor).id,
                },
                Entry::Join { actor, group } => Command::JoinGroup {
                    group: format!("group{group}"),
                    actor: the_actor(actor),
                },
                Entry::Leave { actor, group } => Command::LeaveGroup {
                    group: format!("group{group}"),
                    actor: the_actor(actor).id,
                },
                Entry::Put { key } => Command::Put { key: format!("k{key}"), value: vec![1] },
                Entry::Delete { key } => Command::Delete { key: format!("k{key}") },
                Entry::Open { node } => Command::OpenSession { node: nodes[node].clone(), ttl_ms: 1 },
                Entry::Close { node } => Command::CloseSession { node: nodes[node].clone() },
            };
            let before = state.clone();
            let (outcome, _) = one(&mut state, command.clone());
            match outcome {
                Outcome::Unchanged => {
                    prop_assert!(RegistryState::may_answer_unchanged(&command), "{command:?}");
                    prop_assert!(before.shows(&command), "{command:?} unchanged, not shown before");
                    prop_assert!(state.shows(&command), "{command:?} unchanged, not shown after");
                }
                Outcome::Done { .. } => {
                    prop_assert!(state.shows(&command), "{command:?} done, not shown after");
                }
                _ => {}
            }
        }
    }
}

fn request(node: &NodeId, id: u64, below: u64, commands: &[Command]) -> Vec<Command> {
    Command::request(node, id, below, commands)
}

fn put(key: &str, value: &[u8]) -> Command {
    Command::Put {
        key: key.into(),
        value: value.to_vec(),
    }
}

#[test]
fn a_request_sent_again_takes_effect_once_and_answers_as_the_first_time() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    one(&mut state, put("gone", b"x"));
    let commands = [
        put("k", b"v"),
        Command::Delete { key: "gone".into() },
        Command::CompareAndSet {
            key: "c".into(),
            expected: 0,
            value: Some(b"1".to_vec()),
        },
    ];
    let sent = request(&a, 7, 7, &commands);
    assert_eq!(Command::outcomes(&sent), 3);
    let (first, effects) = state.apply(&sent);
    assert_eq!(first.len(), 3, "the head has no outcome: {first:?}");
    assert!(
        first.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{first:?}"
    );
    assert_eq!(effects.len(), 3);
    let revision = state.revision();
    // The same request again (its answer was lost), in a later entry, with others around it.
    let mut later = vec![put("before", b"1")];
    later.extend(request(&a, 7, 7, &commands));
    later.push(put("after", b"2"));
    let (again, effects) = state.apply(&later);
    assert_eq!(again.len(), 5);
    assert_eq!(
        &again[1..4],
        &first[..],
        "answered with the outcomes of its first commit: the delete says it deleted, the \
         compare-and-set that it set"
    );
    assert_eq!(
        effects.len(),
        2,
        "only the commands around it changed anything: {effects:?}"
    );
    assert_eq!(state.revision(), revision + 2, "it took no revision");
    assert_eq!(state.get("k").map(|kv| kv.version), Some(1));
    assert_eq!(state.get("c").map(|kv| kv.version), Some(1));
}

#[test]
fn a_late_copy_of_a_request_its_node_is_done_with_changes_nothing() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    state.apply(&request(&a, 1, 1, &[put("k", b"1")]));
    // Request 2 goes out while 1 is still under way; then 1 is answered, and request 3 says
    // the node sends nothing below 2 again.
    state.apply(&request(&a, 2, 1, &[put("k", b"2")]));
    state.apply(&request(&a, 3, 2, &[put("other", b"3")]));
    assert_eq!(
        state
            .requests
            .get(&a)
            .map(|r| r.answered.keys().copied().collect::<Vec<_>>()),
        Some(vec![2, 3]),
        "request 1 is forgotten"
    );
    let revision = state.revision();
    // A copy of request 1 the network held back, and one of request 0 that never committed
    // (its caller gave up on it): neither takes effect, though nothing remembers them.
    for id in [1, 0] {
        let (outcomes, effects) = state.apply(&request(&a, id, 1, &[put("k", b"late")]));
        assert_eq!(outcomes, vec![Outcome::Forgotten]);
        assert!(effects.is_empty());
    }
    assert_eq!(state.revision(), revision);
    assert_eq!(
        state.get("k").map(|kv| kv.value.clone()),
        Some(b"2".to_vec())
    );
    // Request 2, sent again, is still answered as it was.
    let (outcomes, _) = state.apply(&request(&a, 2, 2, &[put("k", b"2")]));
    assert_eq!(outcomes, vec![Outcome::Done { revision: 3 }]);
}

#[test]
fn a_node_s_requests_are_remembered_while_its_session_is_open() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    // Without a session nothing is remembered: a request sent again takes effect again.
    state.apply(&request(&a, 1, 1, &[put("k", b"v")]));
    state.apply(&request(&a, 1, 1, &[put("k", b"v")]));
    assert_eq!(state.get("k").map(|kv| kv.version), Some(2));
    assert!(state.requests.is_empty());
    open(&mut state, &a);
    state.apply(&request(&a, 2, 2, &[put("k", b"w")]));
    assert!(state.requests.contains_key(&a));
    // The session ends: what it remembered goes with it.
    one(&mut state, Command::CloseSession { node: a.clone() });
    assert!(state.requests.is_empty());
    // A newer incarnation's session ends the older one's, and its requests.
    let b1 = node("b", 1);
    open(&mut state, &b1);
    state.apply(&request(&b1, 1, 1, &[put("b", b"1")]));
    open(&mut state, &node("b", 2));
    assert!(!state.requests.contains_key(&b1));
}

#[test]
fn a_request_of_an_incarnation_whose_session_expired_changes_nothing() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    state.apply(&request(&a, 1, 1, &[put("k", b"1")]));
    one(&mut state, Command::ExpireSession { node: a.clone() });
    let revision = state.revision();
    // Request 1 sent again after the expiry, and a new one: the node is down.
    for id in [1, 2] {
        let (outcomes, effects) = state.apply(&request(&a, id, 1, &[put("k", b"late")]));
        assert_eq!(outcomes, vec![Outcome::NoSession { node: a.clone() }]);
        assert!(effects.is_empty());
    }
    assert_eq!(state.revision(), revision);
    assert_eq!(state.get("k").map(|kv| kv.version), Some(1));
    // Its next incarnation writes as usual.
    let a2 = node("a", 2);
    open(&mut state, &a2);
    let (outcomes, _) = state.apply(&request(&a2, 1, 1, &[put("k", b"2")]));
    assert!(matches!(outcomes[0], Outcome::Done { .. }), "{outcomes:?}");
}

#[test]
fn a_request_or_session_of_an_incarnation_that_left_changes_nothing() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    state.apply(&request(&a, 1, 1, &[put("k", b"1")]));
    // The node leaves while its put is sent again (the answer of the first attempt was lost).
    one(&mut state, Command::CloseSession { node: a.clone() });
    assert!(state.has_ended(&a) && !state.has_expired(&a));
    let revision = state.revision();
    // The put sent again, a new request and a late copy of the session's opening: the node
    // left for good, and its session no longer remembers what it applied.
    for id in [1, 2] {
        let (outcomes, effects) = state.apply(&request(&a, id, 1, &[put("k", b"late")]));
        assert_eq!(outcomes, vec![Outcome::NoSession { node: a.clone() }]);
        assert!(effects.is_empty(), "{effects:?}");
    }
    let (outcome, effects) = one(
        &mut state,
        Command::OpenSession {
            node: a.clone(),
            ttl_ms: 1_000,
        },
    );
    assert_eq!(outcome, Outcome::NoSession { node: a.clone() });
    assert!(effects.is_empty() && state.session(&a).is_none());
    assert_eq!(
        state.revision(),
        revision + 1,
        "the refused opening took one"
    );
    assert_eq!(state.get("k").map(|kv| kv.version), Some(1));
    // It survives a snapshot; its next incarnation writes as usual.
    let back: RegistryState = rmp_serde::from_slice(&rmp_serde::to_vec(&state).unwrap()).unwrap();
    assert!(back.has_ended(&a));
    let a2 = node("a", 2);
    open(&mut state, &a2);
    let (outcomes, _) = state.apply(&request(&a2, 1, 1, &[put("k", b"2")]));
    assert!(matches!(outcomes[0], Outcome::Done { .. }), "{outcomes:?}");
    // Snapshots taken before closed sessions were kept stop after `voter_count`.
    let back: RegistryState = rmp_serde::from_slice(&encoded_as_of(&state, 11)).unwrap();
    assert!(back.closed.is_empty());
    assert_eq!(back.get("k"), state.get("k"));
}

#[test]
fn requests_survive_a_serde_round_trip_and_older_snapshots_load() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    state.apply(&request(&a, 4, 4, &[put("k", b"v")]));
    let bytes = rmp_serde::to_vec(&state).unwrap();
    let back: RegistryState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    // Snapshots taken before requests were remembered stop after `reserved`.
    let back: RegistryState = rmp_serde::from_slice(&encoded_as_of(&state, 9)).unwrap();
    assert!(back.requests.is_empty());
    assert_eq!(back.get("k"), state.get("k"));
}

#[test]
fn the_voter_count_is_kept_clamped_and_loads_from_older_snapshots() {
    let mut state = RegistryState::default();
    assert_eq!(
        state.voter_count(),
        None,
        "the nodes' setting until one is set"
    );
    let (outcome, effects) = one(&mut state, Command::SetVoterCount { count: 5 });
    assert_eq!(outcome, Outcome::Done { revision: 1 });
    assert!(effects.is_empty());
    assert_eq!(state.voter_count(), Some(5));
    // Client and leader refuse these before the log; applied all the same, they are clamped.
    one(&mut state, Command::SetVoterCount { count: 0 });
    assert_eq!(state.voter_count(), Some(1));
    one(&mut state, Command::SetVoterCount { count: 1000 });
    assert_eq!(state.voter_count(), Some(MAX_VOTERS as usize));
    let bytes = rmp_serde::to_vec(&state).unwrap();
    let back: RegistryState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    // Snapshots taken before the count could be set stop after `requests`.
    let back: RegistryState = rmp_serde::from_slice(&encoded_as_of(&state, 10)).unwrap();
    assert_eq!(back.voter_count(), None);
    assert_eq!(back.revision(), state.revision());
}

#[test]
fn a_head_takes_no_more_commands_than_follow_it_and_none_of_the_next_request() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    // A head that claims more commands than the entry holds, or runs into the next head.
    let mut commands = request(&a, 1, 1, &[put("x", b"1")]);
    if let Command::Request {
        commands: count, ..
    } = &mut commands[0]
    {
        *count = 5;
    }
    commands.extend(request(&a, 2, 1, &[put("y", b"2")]));
    let (outcomes, _) = state.apply(&commands);
    assert_eq!(outcomes.len(), Command::outcomes(&commands));
    assert!(state.get("x").is_some() && state.get("y").is_some());
    let mut short = request(&a, 3, 1, &[]);
    if let Command::Request {
        commands: count, ..
    } = &mut short[0]
    {
        *count = 9;
    }
    assert_eq!(state.apply(&short).0, Vec::<Outcome>::new());
}

/// A step of a random stream of requests from one node: a new request, or one sent before
/// sent again.
#[derive(Clone, Debug)]
enum Sent {
    New { key: usize, cas: bool },
    Again { back: usize },
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        3 => (0..3usize, any::<bool>()).prop_map(|(key, cas)| Sent::New { key, cas }),
        2 => (0..8usize).prop_map(|back| Sent::Again { back }),
    ]
}

proptest! {
    /// However often and wherever requests are sent again, the state and every answer are
    /// those of each request applied once, at its first commit.
    #[test]
    fn requests_sent_again_leave_the_state_as_if_each_was_sent_once(
        steps in proptest::collection::vec(sent(), 1..80),
    ) {
        let a = node("a", 1);
        let mut once = RegistryState::default();
        let mut again = RegistryState::default();
        open(&mut once, &a);
        open(&mut again, &a);
        let mut requests: Vec<(u64, Vec<Command>, Vec<Outcome>)> = Vec::new();
        for step in steps {
            match step {
                Sent::New { key, cas } => {
                    let key = format!("k{key}");
                    let command = if cas {
                        let expected = once.get(&key).map_or(0, |kv| kv.modified);
                        Command::CompareAndSet { key, expected, value: Some(b"c".to_vec()) }
                    } else {
                        put(&key, b"p")
                    };
                    let id = requests.len() as u64 + 1;
                    let (expected, _) = once.apply(std::slice::from_ref(&command));
                    let (outcomes, _) = again.apply(&request(&a, id, 1, std::slice::from_ref(&command)));
                    prop_assert_eq!(&outcomes, &expected);
                    requests.push((id, vec![command], outcomes));
                }
                Sent::Again { back } => {
                    if requests.is_empty() {
                        continue;
                    }
                    let (id, commands, first) = &requests[requests.len() - 1 - back % requests.len()];
                    let (outcomes, effects) = again.apply(&request(&a, *id, 1, commands));
                    prop_assert_eq!(&outcomes, first);
                    prop_assert!(effects.is_empty());
                }
            }
            prop_assert_eq!(once.revision(), again.revision());
            prop_assert_eq!(once.prefix("").collect::<Vec<_>>(), again.prefix("").collect::<Vec<_>>());
        }
    }
}

#[test]
fn a_node_s_oldest_requests_are_forgotten_beyond_the_bound_and_say_so_when_sent_again() {
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    // Request 1 hangs (its node still says below 1) while later ones go on.
    let batch =
        |i: u64| -> Vec<Command> { (0..1024).map(|j| put(&format!("k{i}/{j}"), b"v")).collect() };
    let count = (REMEMBERED / 1024) as u64 + 1;
    for id in 1..=count {
        state.apply(&request(&a, id, 1, &batch(id)));
    }
    let requests = state.requests.get(&a).expect("remembered");
    assert!(requests.outcomes <= REMEMBERED, "{}", requests.outcomes);
    assert_eq!(
        requests.answered.keys().next(),
        Some(&2),
        "the oldest went first"
    );
    let revision = state.revision();
    let (outcomes, effects) = state.apply(&request(&a, 1, 1, &batch(1)));
    assert!(outcomes.iter().all(|o| *o == Outcome::Forgotten));
    assert!(effects.is_empty());
    assert_eq!(state.revision(), revision);
    // The others are still answered as they were.
    let (outcomes, _) = state.apply(&request(&a, 2, 1, &batch(2)));
    assert!(matches!(outcomes[0], Outcome::Done { .. }));
    assert_eq!(state.revision(), revision);
}

#[test]
fn a_number_met_again_with_other_commands_is_another_request() {
    // A node started again in the incarnation it had, numbering from where it was: the
    // registry must not answer its request with the outcomes of another.
    let mut state = RegistryState::default();
    let a = node("a", 1);
    open(&mut state, &a);
    state.apply(&request(&a, 5, 5, &[put("x", b"1")]));
    let (outcomes, effects) = state.apply(&request(&a, 5, 5, &[put("y", b"1"), put("z", b"1")]));
    assert_eq!(outcomes.len(), 2);
    assert_eq!(effects.len(), 2, "applied");
    let requests = state.requests.get(&a).expect("remembered");
    assert_eq!(requests.outcomes, 2, "the new outcomes replace the old");
}
