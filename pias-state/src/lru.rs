//! A bounded map with least-recently-used eviction, for the proxy's caches (IAP cache, RAP groups, derived
//! keys, rate limiters).
//!
//! Entries live in a slab preallocated to the bound; an intrusive doubly linked list over slab indices keeps
//! them in use order, and a `hashbrown::HashTable<u32>` indexes the slab by key under a secret per-map key
//! ([`crate::keyhash`]: remote input cannot pick colliding keys, and a lookup costs a few multiplies, not a
//! SipHash). Lookups, touches, inserts into a full map (which evict) and
//! removals allocate nothing after construction.

use core::hash::{Hash, Hasher};

use hashbrown::HashTable;

use crate::keyhash::TableKey;

const NIL: u32 = u32::MAX;

#[inline]
fn hash_with<K: Hash>(tk: TableKey, key: &K) -> u64 {
    let mut h = tk.hasher();
    key.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
}

/// A bounded LRU map. `head` is the most recently used entry, `tail` the least.
#[derive(Debug, Clone)]
pub struct LruMap<K, V> {
    index: HashTable<u32>,
    slab: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    cap: usize,
    key: TableKey,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// A map holding at most `cap` entries (at least 1), hashing under `key` (secret: from
    /// [`crate::secrets::Secrets::table_key`], so spoofed keys cannot be made to collide).
    pub fn new(cap: usize, key: pias_proto::auth::SipKey) -> Self {
        let cap = cap.max(1);
        let mut slab = Vec::with_capacity(cap);
        slab.resize_with(cap, || None);
        LruMap {
            index: HashTable::with_capacity(cap),
            slab,
            free: (0..cap as u32).rev().collect(),
            head: NIL,
            tail: NIL,
            cap,
            key: TableKey::new(key.k0, key.k1),
            evictions: 0,
        }
    }

    fn hash(&self, key: &K) -> u64 {
        hash_with(self.key, key)
    }

    fn node(&self, i: u32) -> Option<&Node<K, V>> {
        self.slab.get(i as usize).and_then(|n| n.as_ref())
    }

    fn node_mut(&mut self, i: u32) -> Option<&mut Node<K, V>> {
        self.slab.get_mut(i as usize).and_then(|n| n.as_mut())
    }

    fn find(&self, key: &K) -> Option<u32> {
        let h = self.hash(key);
        let slab = &self.slab;
        self.index
            .find(h, |&i| {
                slab.get(i as usize)
                    .and_then(|n| n.as_ref())
                    .is_some_and(|n| n.key == *key)
            })
            .copied()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = match self.node(i) {
            Some(n) => (n.prev, n.next),
            None => return,
        };
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        if let Some(n) = self.node_mut(i) {
            n.prev = NIL;
            n.next = old;
        }
        match self.node_mut(old) {
            Some(o) => o.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.cap - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Entries evicted to make room, since construction.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Looks up without changing the use order.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.find(key).and_then(|i| self.node(i)).map(|n| &n.value)
    }

    /// Looks up and marks the entry most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(key)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        self.node_mut(i).map(|n| &mut n.value)
    }

    /// Looks up without changing the use order, mutably.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(key)?;
        self.node_mut(i).map(|n| &mut n.value)
    }

    /// Inserts or replaces; when the map is full the least recently used entry is evicted and returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(v) = self.get_mut(&key) {
            *v = value;
            return None;
        }
        let mut evicted = None;
        if self.free.is_empty() {
            let t = self.tail;
            if let Some(k) = self.node(t).map(|n| n.key.clone()) {
                evicted = self.remove_entry(&k);
                self.evictions += 1;
            }
        }
        let Some(i) = self.free.pop() else { return evicted };
        let h = self.hash(&key);
        if let Some(slot) = self.slab.get_mut(i as usize) {
            *slot = Some(Node {
                key,
                value,
                prev: NIL,
                next: NIL,
            });
        }
        let slab = &self.slab;
        let tk = self.key;
        self.index.insert_unique(h, i, |&j| {
            slab.get(j as usize)
                .and_then(|n| n.as_ref())
                .map_or(0, |n| hash_with(tk, &n.key))
        });
        self.push_front(i);
        evicted
    }

    /// Removes an entry.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.remove_entry(key).map(|(_, v)| v)
    }

    fn remove_entry(&mut self, key: &K) -> Option<(K, V)> {
        let h = self.hash(key);
        let slab = &self.slab;
        let i = match self.index.find_entry(h, |&i| {
            slab.get(i as usize)
                .and_then(|n| n.as_ref())
                .is_some_and(|n| n.key == *key)
        }) {
            Ok(e) => e.remove().0,
            Err(_) => return None,
        };
        self.unlink(i);
        let node = self.slab.get_mut(i as usize).and_then(|n| n.take())?;
        self.free.push(i);
        Some((node.key, node.value))
    }

    /// The least recently used entry.
    pub fn oldest(&self) -> Option<(&K, &V)> {
        self.node(self.tail).map(|n| (&n.key, &n.value))
    }

    /// All entries, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        let mut i = self.head;
        core::iter::from_fn(move || {
            let n = self.node(i)?;
            i = n.next;
            Some((&n.key, &n.value))
        })
    }

    /// Visits at most `budget` entries from the least recently used end and removes those for which `keep`
    /// returns false; returns how many it removed. A bounded sweep for timers, allocation-free.
    pub fn retain_budgeted(&mut self, budget: usize, mut keep: impl FnMut(&K, &mut V) -> bool) -> usize {
        let mut i = self.tail;
        let mut removed = 0;
        let mut visited = 0;
        while visited < budget {
            let Some(prev) = self.node(i).map(|n| n.prev) else {
                break;
            };
            let drop_it = match self.slab.get_mut(i as usize).and_then(|n| n.as_mut()) {
                Some(n) => !keep(&n.key, &mut n.value),
                None => false,
            };
            if drop_it && let Some(k) = self.node(i).map(|n| n.key.clone()) {
                self.remove_entry(&k);
                removed += 1;
            }
            i = prev;
            visited += 1;
        }
        removed
    }

    /// Bytes used by the map's own storage.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * core::mem::size_of::<Option<Node<K, V>>>()
            + self.index.capacity() * (core::mem::size_of::<u32>() + 1)
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut m = LruMap::new(2, crate::secrets::table_key_for_tests(1));
        assert!(m.insert(1, "a").is_none());
        assert!(m.insert(2, "b").is_none());
        assert!(m.get_mut(&1).is_some());
        assert_eq!(m.insert(3, "c"), Some((2, "b")));
        assert_eq!(m.evictions(), 1);
        assert_eq!(m.peek(&1), Some(&"a"));
        assert_eq!(m.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(m.oldest().map(|(k, _)| *k), Some(1));
        assert_eq!(m.remove(&1), Some("a"));
        assert_eq!(m.len(), 1);
    }

    proptest! {
        /// Against a model (Vec in use order): same contents, same order, never above the bound.
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..4, 0u16..20), 1..300), cap in 1usize..8) {
            let mut m = LruMap::new(cap, crate::secrets::table_key_for_tests(7));
            let mut model: Vec<(u16, u16)> = Vec::new(); // front = most recent
            for (op, k) in ops {
                match op {
                    0 | 1 => {
                        m.insert(k, k.wrapping_mul(3));
                        model.retain(|(x, _)| *x != k);
                        model.insert(0, (k, k.wrapping_mul(3)));
                        model.truncate(cap);
                    }
                    2 => {
                        let got = m.get_mut(&k).map(|v| *v);
                        let pos = model.iter().position(|(x, _)| *x == k);
                        prop_assert_eq!(got, pos.map(|p| model[p].1));
                        if let Some(p) = pos { let e = model.remove(p); model.insert(0, e); }
                    }
                    _ => {
                        let got = m.remove(&k);
                        let pos = model.iter().position(|(x, _)| *x == k);
                        prop_assert_eq!(got, pos.map(|p| model.remove(p).1));
                    }
                }
                prop_assert!(m.len() <= cap);
                let order: Vec<(u16, u16)> = m.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(&order, &model);
            }
        }
    }
}
