//! A hash map that grows a part at a time, for the product actor's maps that grow with a
//! sale (per-customer counts, recent idempotency keys).
//!
//! A `HashMap` grows by moving every entry into a table twice the size, at once: with a
//! million customers of one product that is tens of milliseconds (most of it the kernel
//! zeroing the new table's pages), during which the product's actor, and so every buyer
//! of the product, waits. A drop's p99 was made of those pauses. A [`Spread`] is one map
//! while small; past [`SPLIT_AT`] entries it becomes [`PARTS`] maps chosen by the key's
//! bits, each of which grows on its own, so no insert moves more than a part.
//!
//! Keys are keyed hashes already (uniform bits: [`tag64`], [`tag128`]), so a part is
//! chosen by their low bits.

use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

use foldhash::HashMap;

/// The process's keys for [`tag64`] and [`tag128`]: SipHash-1-3 (the standard library's
/// `RandomState`) under keys drawn at random when the process starts, so nobody can
/// craft a string whose tag is another's.
static TAG_KEYS: LazyLock<(RandomState, RandomState)> =
    LazyLock::new(|| (RandomState::new(), RandomState::new()));

/// A string's keyed 64-bit hash, to keep in its place.
pub fn tag64(s: &str) -> u64 {
    TAG_KEYS.0.hash_one(s)
}

/// A string's keyed 128-bit hash (two 64-bit ones under independent keys), to keep in
/// its place where a chance collision must be out of reach.
pub fn tag128(s: &str) -> u128 {
    (u128::from(TAG_KEYS.0.hash_one(s)) << 64) | u128::from(TAG_KEYS.1.hash_one(s))
}

/// Parts of a large map.
const PARTS: usize = 64;
/// Entries at which one map becomes [`PARTS`] (its last full move: a few hundred
/// microseconds).
const SPLIT_AT: usize = 16 * 1024;

/// A key made of uniform bits (a keyed hash).
pub trait PartKey: Copy + Eq + Hash {
    fn part(self) -> usize;
}

impl PartKey for u64 {
    fn part(self) -> usize {
        (self % PARTS as u64) as usize
    }
}

impl PartKey for u128 {
    fn part(self) -> usize {
        (self % PARTS as u128) as usize
    }
}

/// See the module's documentation.
#[derive(Debug, Clone)]
pub enum Spread<K, V> {
    One(HashMap<K, V>),
    Parts(Box<[HashMap<K, V>]>),
}

impl<K, V> Default for Spread<K, V> {
    fn default() -> Self {
        Spread::One(HashMap::default())
    }
}

impl<K: PartKey, V> Spread<K, V> {
    fn map(&self, key: K) -> &HashMap<K, V> {
        match self {
            Spread::One(map) => map,
            Spread::Parts(parts) => &parts[key.part()],
        }
    }

    /// The map that holds `key`, as the map is.
    fn part_mut(&mut self, key: K) -> &mut HashMap<K, V> {
        match self {
            Spread::One(map) => map,
            Spread::Parts(parts) => &mut parts[key.part()],
        }
    }

    /// The map that will hold `key`, once one map that is full has split.
    fn map_mut(&mut self, key: K) -> &mut HashMap<K, V> {
        if let Spread::One(map) = self {
            if map.len() >= SPLIT_AT {
                let mut parts: Vec<HashMap<K, V>> = (0..PARTS)
                    .map(|_| {
                        HashMap::with_capacity_and_hasher(2 * SPLIT_AT / PARTS, Default::default())
                    })
                    .collect();
                for (k, v) in map.drain() {
                    parts[k.part()].insert(k, v);
                }
                *self = Spread::Parts(parts.into_boxed_slice());
            }
        }
        self.part_mut(key)
    }

    pub fn get(&self, key: K) -> Option<&V> {
        self.map(key).get(&key)
    }

    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        self.part_mut(key).get_mut(&key)
    }

    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.map_mut(key).entry(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.map_mut(key).insert(key, value)
    }

    pub fn remove(&mut self, key: K) -> Option<V> {
        self.part_mut(key).remove(&key)
    }

    fn maps(&self) -> &[HashMap<K, V>] {
        match self {
            Spread::One(map) => std::slice::from_ref(map),
            Spread::Parts(parts) => parts,
        }
    }

    pub fn len(&self) -> usize {
        self.maps().iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.maps().iter().all(HashMap::is_empty)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.maps().iter().flat_map(HashMap::values)
    }

    /// Empties the map, keeping its tables for what comes next.
    pub fn clear(&mut self) {
        match self {
            Spread::One(map) => map.clear(),
            Spread::Parts(parts) => parts.iter_mut().for_each(HashMap::clear),
        }
    }

    pub fn shrink_to_fit(&mut self) {
        match self {
            Spread::One(map) => map.shrink_to_fit(),
            Spread::Parts(parts) => parts.iter_mut().for_each(HashMap::shrink_to_fit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_map_is_a_map_before_and_after_it_splits() {
        let mut map: Spread<u64, u64> = Spread::default();
        let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for i in 0..(3 * SPLIT_AT as u64) {
            assert_eq!(map.insert(key(i), i), None);
            if i == 10 {
                assert!(matches!(map, Spread::One(_)));
            }
        }
        assert!(matches!(map, Spread::Parts(_)));
        assert_eq!(map.len(), 3 * SPLIT_AT);
        for i in 0..(3 * SPLIT_AT as u64) {
            assert_eq!(map.get(key(i)), Some(&i));
        }
        *map.entry(key(7)).or_default() += 1;
        assert_eq!(map.get_mut(key(7)).copied(), Some(8));
        assert_eq!(map.remove(key(7)), Some(8));
        assert_eq!(map.get(key(7)), None);
        assert_eq!(map.values().count(), 3 * SPLIT_AT - 1);
        assert!(!map.is_empty());
    }
}
