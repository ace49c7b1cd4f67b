//! A map split into a fixed number of shared shards, so a copy of it costs one reference count per
//! shard and a write after a copy copies only the shard it lands in.
//!
//! The journal keeps a snapshot image of the committed ledger with `Ledger::clone()` while it
//! holds the ledger's lock. With [`Shards`] that clone takes [`SHARD_COUNT`] reference counts,
//! whatever the number of accounts; the next record that touches a shard still shared with the
//! image copies that one shard ([`Arc::make_mut`]), and the image is never changed.
//!
//! Each shard keeps its entries densely, one after the other in a vector, and finds them through
//! a hash table of their positions (four bytes a slot). A hash table of the entries themselves
//! (a `HashMap`) keeps a free slot as big as an entry for every one it fills, and between one
//! doubling and the next it is only seven sixteenths to seven eighths full: at a million accounts
//! it was under half full, about 115 bytes of empty slots per account. Here an empty slot costs
//! four bytes and a control byte, and the entries take only what the vector's growth leaves (at
//! most an eighth: a full shard grows by an eighth of its length, not double; none after
//! decoding, which gives back what it reserved beyond each shard's entries).
//!
//! Its serde form is exactly a `HashMap<K, V>`'s (a map: the length, then the entries), so data
//! written with a plain map decodes into shards and the other way round.

use hashbrown::HashTable;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Index;
use std::sync::Arc;

/// How many shards a map has: a clone costs this many reference counts, and the first write to a
/// shard after a clone copies about `1 / SHARD_COUNT` of the map.
pub const SHARD_COUNT: usize = 256;

/// The most entries a decoded map reserves room for up front, whatever length its bytes claim
/// (16 Mi): a damaged length cannot make decoding allocate without bound. A longer map still
/// decodes, growing as it goes.
const DECODE_RESERVE_ENTRIES_MAX: usize = 1 << 24;

/// A full shard's vector grows by its length divided by this (an eighth) rather than doubling:
/// a shard of a large map then keeps at most an eighth of its entries' room spare, where a
/// doubled vector keeps up to as much again (a shard copied from a snapshot's image has no spare
/// room, so the next account it gains would double it).
const SHARD_GROWTH_DIVISOR: usize = 8;

/// The fewest entries a full shard's vector grows by (a vector's own smallest room), so a small
/// shard does not grow one entry at a time.
const SHARD_GROWTH_ENTRIES_MIN: usize = 4;

/// A map from `K` to `V` in [`SHARD_COUNT`] copy-on-write shards, chosen by a hash of the key.
#[derive(Clone)]
pub struct Shards<K, V> {
    shards: Vec<Arc<Shard<K, V>>>,
    len: usize,
}

/// One shard: its entries packed in a vector, and a hash table of their positions in it. Public
/// only because [`Shards`]' owning iterator names it; nothing outside this module can reach it.
#[derive(Clone)]
pub struct Shard<K, V> {
    /// The entries, in no meaningful order (a removal moves the last one into the gap).
    entries: Vec<(K, V)>,
    /// The position in `entries` of each entry, found by the hash of its key.
    positions: HashTable<u32>,
    /// The hash of keys inside this shard (seeded at random, like a `HashMap`'s).
    hasher: RandomState,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Shard {
            entries: Vec::new(),
            positions: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

/// A position in a shard's vector as its table keeps it. A shard never holds 2^32 entries (that
/// would be hundreds of GiB for one of [`SHARD_COUNT`] shards), so this never fails in practice.
fn position(index: usize) -> u32 {
    u32::try_from(index).expect("a shard holds fewer than 2^32 entries")
}

impl<K: Hash + Eq, V> Shard<K, V> {
    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The position of `key`'s entry, if it has one.
    fn find(&self, key: &K) -> Option<usize> {
        let entries = &self.entries;
        self.positions
            .find(self.hash(key), |&at| entries[at as usize].0 == *key)
            .map(|&at| at as usize)
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.find(key).map(|at| &self.entries[at].1)
    }

    /// Adds an entry for a key that has none; returns its position.
    fn push(&mut self, key: K, value: V) -> usize {
        let at = self.entries.len();
        let hash = self.hash(&key);
        let Shard {
            entries,
            positions,
            hasher,
        } = self;
        if entries.len() == entries.capacity() {
            let growth = (entries.len() / SHARD_GROWTH_DIVISOR).max(SHARD_GROWTH_ENTRIES_MIN);
            entries.reserve_exact(growth);
        }
        entries.push((key, value));
        positions.insert_unique(hash, position(at), |&other| {
            hasher.hash_one(&entries[other as usize].0)
        });
        at
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Some(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            None => {
                self.push(key, value);
                None
            }
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hash(key);
        let Shard {
            entries, positions, ..
        } = self;
        let (at, _) = positions
            .find_entry(hash, |&at| entries[at as usize].0 == *key)
            .ok()?
            .remove();
        let at = at as usize;
        let last = entries.len() - 1;
        let (_, value) = entries.swap_remove(at);
        if at != last {
            // The last entry moved into the gap: its slot must say so.
            let moved = self.hasher.hash_one(&self.entries[at].0);
            if let Some(slot) = self
                .positions
                .find_mut(moved, |&other| other as usize == last)
            {
                *slot = position(at);
            }
        }
        Some(value)
    }

    /// Finds every entry's slot again (after a removal of many at once).
    fn reindex(&mut self) {
        let Shard {
            entries,
            positions,
            hasher,
        } = self;
        positions.clear();
        for (at, (key, _)) in entries.iter().enumerate() {
            positions.insert_unique(hasher.hash_one(key), position(at), |&other| {
                hasher.hash_one(&entries[other as usize].0)
            });
        }
    }

    /// Gives back the vector's spare room. A new, exactly sized vector takes the entries: an
    /// allocator may keep a block that shrinks by little where it is (mimalloc keeps one that
    /// loses less than half), so shrinking in place would free nothing.
    fn fit(&mut self) {
        if self.entries.capacity() > self.entries.len() {
            let mut fitted = Vec::with_capacity(self.entries.len());
            fitted.append(&mut self.entries);
            self.entries = fitted;
        }
    }

    /// Room for `additional` more entries without growing.
    fn reserve(&mut self, additional: usize) {
        let Shard {
            entries,
            positions,
            hasher,
        } = self;
        entries.reserve_exact(additional);
        positions.reserve(additional, |&other| {
            hasher.hash_one(&entries[other as usize].0)
        });
    }
}

/// Equal when they hold the same entries, in whatever order.
impl<K: Hash + Eq, V: PartialEq> PartialEq for Shard<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .all(|(key, value)| other.get(key) == Some(value))
    }
}

/// Chooses a key's shard: a multiplicative hash (fixed, so every copy of a map agrees on where a
/// key lives). It only spreads keys over shards; lookups inside a shard use the shard's own
/// hasher.
#[derive(Default)]
struct ShardHasher(u64);

impl Hasher for ShardHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(MULTIPLIER);
    }
}

fn shard_of<K: Hash>(key: &K) -> usize {
    let mut hasher = ShardHasher::default();
    key.hash(&mut hasher);
    // The top bits: the multiplication mixes every input bit into them.
    (hasher.finish() >> (u64::BITS - SHARD_COUNT.trailing_zeros())) as usize
}

impl<K, V> Default for Shards<K, V> {
    fn default() -> Self {
        Shards {
            shards: (0..SHARD_COUNT)
                .map(|_| Arc::new(Shard::default()))
                .collect(),
            len: 0,
        }
    }
}

impl<K, V> Shards<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, shard by shard (in no particular order, like a `HashMap`).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.entries.iter().map(|(key, value)| (key, value)))
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    /// An empty map with room for about `entries` entries spread over its shards: each shard
    /// reserves its share and four standard deviations more, so that a map filled with that many
    /// keys seldom grows a shard (and never holds the spare half of a doubled vector).
    pub fn with_capacity(entries: usize) -> Self {
        let mut map = Self::new();
        if entries == 0 {
            return map;
        }
        let (share, spread) = shard_room(entries);
        for shard in &mut map.shards {
            Arc::make_mut(shard).reserve(share + spread);
        }
        map
    }

    fn shard_mut(&mut self, key: &K) -> &mut Shard<K, V> {
        Arc::make_mut(&mut self.shards[shard_of(key)])
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[shard_of(key)].get(key)
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.shards[shard_of(key)].find(key).is_some()
    }

    /// The value of `key` to change, if any (its shard is copied first if a clone shares it).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.shards[shard_of(key)].find(key)?;
        Some(&mut self.shard_mut(key).entries[at].1)
    }

    /// Sets the value of `key`; returns the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let replaced = self.shard_mut(&key).insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Takes the value of `key` out, if any.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let removed = self.shard_mut(key).remove(key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// The value of `key` to change, made the default first if there is none (a map's
    /// `entry(key).or_default()`).
    pub fn entry_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let found = self.shards[shard_of(&key)].find(&key);
        if found.is_none() {
            self.len += 1;
        }
        let shard = self.shard_mut(&key);
        let at = match found {
            Some(at) => at,
            None => shard.push(key, V::default()),
        };
        &mut shard.entries[at].1
    }

    /// Keeps only the entries for which `keep` is true. `keep` may change the values it keeps, so
    /// every shard with an entry is written (and copied, if a clone still shares it).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &mut self.shards {
            if shard.entries.is_empty() {
                continue;
            }
            let shard = Arc::make_mut(shard);
            let before = shard.entries.len();
            shard.entries.retain_mut(|(key, value)| keep(key, value));
            let removed = before - shard.entries.len();
            if removed > 0 {
                shard.reindex();
            }
            self.len -= removed;
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Index<&K> for Shards<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key indexed")
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for Shards<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = Shards::new();
        map.extend(entries);
        map
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Extend<(K, V)> for Shards<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> From<HashMap<K, V>> for Shards<K, V> {
    fn from(map: HashMap<K, V>) -> Self {
        map.into_iter().collect()
    }
}

/// Owned entries: a shard still shared with a clone is copied, the others are moved out.
impl<K: Clone, V: Clone> IntoIterator for Shards<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Arc<Shard<K, V>>>,
        std::vec::IntoIter<(K, V)>,
        fn(Arc<Shard<K, V>>) -> std::vec::IntoIter<(K, V)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn entries<K: Clone, V: Clone>(shard: Arc<Shard<K, V>>) -> std::vec::IntoIter<(K, V)> {
            Arc::unwrap_or_clone(shard).entries.into_iter()
        }
        self.shards.into_iter().flat_map(entries as fn(_) -> _)
    }
}

impl<'a, K, V> IntoIterator for &'a Shards<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Equal when they hold the same entries. A key's shard depends only on the key, so comparing
/// shard by shard is comparing the maps.
impl<K: Hash + Eq, V: PartialEq> PartialEq for Shards<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .shards
                .iter()
                .zip(&other.shards)
                .all(|(mine, theirs)| Arc::ptr_eq(mine, theirs) || **mine == **theirs)
    }
}

impl<K: Hash + Eq, V: Eq> Eq for Shards<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Shards<K, V> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}

/// A map of exactly [`Shards::len`] entries: the bytes a `HashMap` with these entries encodes to.
impl<K: Serialize, V: Serialize> Serialize for Shards<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A shard's share of a map of `entries` entries, and the margin it reserves beyond it (four
/// standard deviations and 16).
fn shard_room(entries: usize) -> (usize, usize) {
    let share = entries / SHARD_COUNT;
    (share, 4 * (share as f64).sqrt() as usize + 16)
}

struct ShardsVisitor<K, V>(PhantomData<fn() -> (K, V)>);

impl<'de, K, V> Visitor<'de> for ShardsVisitor<K, V>
where
    K: Deserialize<'de> + Hash + Eq + Clone,
    V: Deserialize<'de> + Clone,
{
    type Value = Shards<K, V>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let expected = entries
            .size_hint()
            .unwrap_or(0)
            .min(DECODE_RESERVE_ENTRIES_MAX);
        let (share, spread) = shard_room(expected);
        let mut map = Shards::new();
        // A map's bytes hold its entries shard by shard (`Serialize` writes them in that order,
        // and a key's shard is fixed). Each shard reserves its share and a margin when its first
        // entry arrives, and gives back what it did not fill as soon as the next shard's entries
        // begin: the room freed is at hand for the next shard, and decoding never holds every
        // shard's margin and its fitted copy at once. A shard left with fewer than its share
        // less the margin (entries in another order: a `HashMap`'s bytes) is fitted only at the
        // end, and no shard is fitted twice on the way (each would copy it again).
        let mut filling: Option<usize> = None;
        let mut fitted = [false; SHARD_COUNT];
        while let Some((key, value)) = entries.next_entry()? {
            let at = shard_of(&key);
            if filling != Some(at) {
                if let Some(previous) = filling {
                    // The map is new: no clone shares its shards, so this copies nothing.
                    let shard = Arc::make_mut(&mut map.shards[previous]);
                    if !fitted[previous] && shard.entries.len() + spread >= share {
                        shard.fit();
                        fitted[previous] = true;
                    }
                }
                let shard = Arc::make_mut(&mut map.shards[at]);
                if expected > 0 && shard.entries.capacity() == 0 {
                    shard.reserve(share + spread);
                }
                filling = Some(at);
            }
            map.insert(key, value);
        }
        // What a shard did not fill of its room is given back (it grows by an eighth when it is
        // full again).
        for shard in &mut map.shards {
            if let Some(shard) = Arc::get_mut(shard) {
                shard.fit();
            }
        }
        Ok(map)
    }
}

/// Decodes any map (a `HashMap`'s bytes included), entry by entry into its shard.
impl<'de, K, V> Deserialize<'de> for Shards<K, V>
where
    K: Deserialize<'de> + Hash + Eq + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ShardsVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_stored, encode_stored};

    #[test]
    fn one_entry_encodes_to_the_bytes_of_a_hash_map() {
        let shards: Shards<u64, String> = [(123_456_789, "Joty".to_string())].into_iter().collect();
        let map: HashMap<u64, String> = [(123_456_789, "Joty".to_string())].into();
        assert_eq!(
            encode_stored(&shards).unwrap(),
            encode_stored(&map).unwrap()
        );
        assert_eq!(encode_stored(&Shards::<u64, u64>::new()).unwrap(), [0]);
    }

    #[test]
    fn many_entries_decode_as_a_hash_map_and_back() {
        let map: HashMap<u64, u64> = (0..5_000).map(|key| (key * 7_919, key)).collect();
        let shards: Shards<u64, u64> = decode_stored(&encode_stored(&map).unwrap()).unwrap();
        assert_eq!(shards.len(), map.len());
        assert_eq!(shards, Shards::from(map.clone()));
        let back: HashMap<u64, u64> = decode_stored(&encode_stored(&shards).unwrap()).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn a_clone_shares_every_shard_until_one_is_written() {
        let mut map: Shards<u64, u64> = (0..10_000).map(|key| (key, key)).collect();
        assert!(
            map.shards.iter().all(|shard| !shard.entries.is_empty()),
            "keys spread"
        );
        let image = map.clone();
        *map.get_mut(&5).unwrap() = 50;
        map.insert(10_000, 1);
        map.remove(&6);
        let shared = map
            .shards
            .iter()
            .zip(&image.shards)
            .filter(|(mine, theirs)| Arc::ptr_eq(mine, theirs))
            .count();
        assert!(shared >= SHARD_COUNT - 3, "{shared} shards still shared");
        assert_eq!(
            (image[&5], image.len(), image.get(&6)),
            (5, 10_000, Some(&6))
        );
        assert_eq!((map[&5], map.len(), map.get(&6)), (50, 10_000, None));
        map.retain(|key, _| key % 2 == 0);
        assert_eq!(map.len(), map.iter().count());
        assert_eq!(*map.entry_or_default(3), 0);
        assert_eq!(map.len(), map.iter().count());
    }

    #[test]
    fn removals_and_reinsertions_agree_with_a_hash_map() {
        // A fixed sequence of inserts, removals and updates (an xorshift, seeded), checked
        // against a plain map after every step: a removal moves the shard's last entry into the
        // gap, and the table must still find it.
        let mut shards: Shards<u64, u64> = Shards::with_capacity(2_000);
        let mut map: HashMap<u64, u64> = HashMap::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..40_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = state % 3_000;
            match state % 4 {
                0 => assert_eq!(shards.remove(&key), map.remove(&key)),
                1 => *shards.entry_or_default(key) += step,
                _ => assert_eq!(shards.insert(key, step), map.insert(key, step)),
            }
            if state % 4 == 1 {
                *map.entry(key).or_default() += step;
            }
            assert_eq!(shards.get(&key), map.get(&key));
            assert_eq!(shards.len(), map.len());
        }
        assert!(map
            .iter()
            .all(|(key, value)| shards.get(key) == Some(value)));
        assert_eq!(shards.iter().count(), map.len());
        shards.retain(|key, value| {
            *value += 1;
            key % 3 != 0
        });
        map.retain(|key, _| key % 3 != 0);
        assert!(map
            .iter()
            .all(|(key, value)| shards.get(key) == Some(&(value + 1))));
        assert_eq!(shards.len(), map.len());
        let decoded: Shards<u64, u64> = decode_stored(&encode_stored(&shards).unwrap()).unwrap();
        assert_eq!(decoded, shards);
    }

    #[test]
    fn decoded_shards_keep_no_spare_room_and_a_full_shard_grows_by_an_eighth() {
        let map: HashMap<u64, u64> = (0..20_000).map(|key| (key * 7_919, key)).collect();
        // From a map's bytes (any order) and from shards' (shard by shard).
        let mut shards: Shards<u64, u64> = decode_stored(&encode_stored(&map).unwrap()).unwrap();
        let again: Shards<u64, u64> = decode_stored(&encode_stored(&shards).unwrap()).unwrap();
        assert_eq!(again, shards);
        for decoded in [&shards, &again] {
            assert!(decoded
                .shards
                .iter()
                .all(|shard| shard.entries.capacity() == shard.entries.len()));
        }
        // The next key of a full shard grows it by an eighth of its length.
        let key = (20_000..)
            .map(|key| key * 7_919)
            .find(|key| !map.contains_key(key))
            .unwrap();
        let before = shards.shards[shard_of(&key)].entries.len();
        shards.insert(key, 1);
        let shard = &shards.shards[shard_of(&key)];
        assert_eq!(
            shard.entries.capacity(),
            before + (before / SHARD_GROWTH_DIVISOR).max(SHARD_GROWTH_ENTRIES_MIN)
        );
        assert_eq!(shards[&key], 1);
        assert_eq!(shards.len(), map.len() + 1);
    }
}
