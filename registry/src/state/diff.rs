//! The effects between two states: what a local copy that jumps to a new state (a resync)
//! tells its watchers, as if it had applied the commands in between.

use super::{Effect, RegistryState};

/// Effects that turn what watchers saw of `old` into `new`.
pub fn changes(old: &RegistryState, new: &RegistryState) -> Vec<Effect> {
    let mut effects = Vec::new();
    for session in old.sessions() {
        if new.session(&session.node).is_none() {
            effects.push(if new.has_expired(&session.node) {
                Effect::SessionExpired(session.node.clone())
            } else {
                Effect::SessionClosed(session.node.clone())
            });
        }
    }
    for session in new.sessions() {
        if old.session(&session.node).is_none() {
            effects.push(Effect::SessionOpened(session.node.clone()));
        }
    }
    for (name, _) in old.names() {
        if new.name(name).is_none() {
            effects.push(Effect::Name {
                name: name.clone(),
                actor: None,
            });
        }
    }
    for (name, actor) in new.names() {
        if old.name(name) != Some(actor) {
            effects.push(Effect::Name {
                name: name.clone(),
                actor: Some(actor.clone()),
            });
        }
    }
    for (lock, held) in old.locks() {
        let Some((holder, token)) = &held.holder else {
            continue;
        };
        let still = new.lock(lock).and_then(|l| l.holder.as_ref());
        if still.is_none_or(|(h, t)| h != holder || t != token) {
            effects.push(Effect::Revoked {
                lock: lock.clone(),
                holder: holder.clone(),
                token: *token,
            });
        }
    }
    for (lock, held) in new.locks() {
        let Some((holder, token)) = &held.holder else {
            continue;
        };
        let before = old.lock(lock).and_then(|l| l.holder.as_ref());
        if before.is_none_or(|(h, t)| h != holder || t != token) {
            effects.push(Effect::Granted {
                lock: lock.clone(),
                holder: holder.clone(),
                token: *token,
            });
        }
    }
    for (key, _) in old.prefix("") {
        if new.get(key).is_none() {
            effects.push(Effect::Key {
                key: key.clone(),
                value: None,
                revision: new.revision(),
            });
        }
    }
    for (key, kv) in new.prefix("") {
        if old
            .get(key)
            .is_none_or(|before| before.modified != kv.modified)
        {
            effects.push(Effect::Key {
                key: key.clone(),
                value: Some(kv.value.clone()),
                revision: kv.modified,
            });
        }
    }
    for (id, _) in old.reservations() {
        if new.reservation(id).is_none() {
            effects.push(Effect::Reservation {
                id: id.clone(),
                reservation: None,
            });
        }
    }
    for (id, reservation) in new.reservations() {
        if old.reservation(id) != Some(reservation) {
            effects.push(Effect::Reservation {
                id: id.clone(),
                reservation: Some(reservation.clone()),
            });
        }
    }
    effects
}
