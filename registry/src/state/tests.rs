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
            let (_, effects) = state.apply(&[command]);
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
