//! The hash maps of the runtime and the registry, with one hasher whose seed can be fixed.
//!
//! What a node does in a loop over a map (send heartbeats to its peers, fire the monitors of
//! a node that went down, stop its actors) happens in the map's iteration order, and that order
//! follows the hasher's seed. `std`'s `RandomState` draws a fresh seed from the operating
//! system for every map, so two runs of one simulation seed would part ways at the first such
//! loop. These maps hash with foldhash instead, seeded from one process-wide seed: random by
//! default (drawn once from the operating system, so map keys sent by peers cannot be aimed at
//! one bucket), fixed by [`seed`] before a deterministic simulation builds its nodes.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::{FixedState, FoldHasher};

/// A `std` hash map with the runtime's hasher.
pub type HashMap<K, V> = std::collections::HashMap<K, V, State>;
/// A `std` hash set with the runtime's hasher.
pub type HashSet<K> = std::collections::HashSet<K, State>;
/// A concurrent map with the runtime's hasher; make one with [`dash_map`].
pub type DashMap<K, V> = dashmap::DashMap<K, V, State>;

/// How many shards every [`DashMap`] has: fixed, where dashmap's default is four per core,
/// so that a map's iteration order is the same on every machine.
const SHARDS: usize = 64;

/// A new, empty [`DashMap`] with a fixed number of shards (64), whatever the core count.
pub fn dash_map<K: Eq + Hash, V>() -> DashMap<K, V> {
    DashMap::with_hasher_and_shard_amount(State::default(), SHARDS)
}

static SEED: LazyLock<AtomicU64> =
    LazyLock::new(|| AtomicU64::new(RandomState::new().hash_one("ensemble")));

/// Fixes the seed of every map made from now on (maps made before keep theirs). For
/// deterministic simulations; a node never needs it.
pub fn seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// The hasher of the runtime's maps: foldhash with the process-wide seed at the time the map
/// was made.
#[derive(Clone, Debug)]
pub struct State(FixedState);

impl Default for State {
    fn default() -> Self {
        State(FixedState::with_seed(SEED.load(Ordering::Relaxed)))
    }
}

impl BuildHasher for State {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed is process-wide: the tests that set it take turns.
    static SEEDING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    fn order(keys: &[&str]) -> Vec<String> {
        let map: HashMap<String, ()> = keys.iter().map(|k| (k.to_string(), ())).collect();
        map.into_keys().collect()
    }

    #[test]
    fn one_seed_gives_one_iteration_order() {
        let keys: Vec<String> = (0..64).map(|i| format!("node-{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _turn = SEEDING.lock();
        seed(7);
        let first = order(&keys);
        assert_eq!(first, order(&keys));
        let orders: std::collections::BTreeSet<Vec<String>> = (0..4)
            .map(|s| {
                seed(100 + s);
                order(&keys)
            })
            .collect();
        assert!(orders.len() > 1, "every seed gave the same order");
    }

    #[test]
    fn dash_maps_made_with_one_seed_iterate_alike() {
        let order = || {
            let map: DashMap<u64, ()> = dash_map();
            for k in 0..1000 {
                map.insert(k * 7919, ());
            }
            map.iter().map(|e| *e.key()).collect::<Vec<_>>()
        };
        let _turn = SEEDING.lock();
        seed(11);
        let first = order();
        assert_eq!(first, order());
        assert!(!first.is_sorted(), "the keys came out in insertion order");
    }
}
