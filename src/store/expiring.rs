//! The memory backend's one container: entries that expire at a time
//! given on insertion, bounded by a count. Every memory-held record (the
//! ledger, the relay's marks, verify codes, fallback records, cached
//! Lookups) is kept in one.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use super::UnixMs;

/// Entries that expire at a time given on insertion; past `max`, the oldest
/// inserted go first.
pub(super) struct Expiring<K, V> {
    map: HashMap<K, (UnixMs, V)>,
    order: VecDeque<(UnixMs, K)>,
    max: usize,
}

impl<K: Copy + Eq + Hash, V> Expiring<K, V> {
    pub(super) fn new(max: usize) -> Self {
        Expiring {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    pub(super) fn prune(&mut self, now: UnixMs) {
        // `order` is by insertion; a record kept longer than the one in front
        // of it waits for that one, which is bounded by the longest keep.
        while let Some((expires, key)) = self.order.front().copied() {
            if expires > now && self.map.len() <= self.max {
                break;
            }
            self.order.pop_front();
            // Only remove if this queue entry is the live one.
            if self.map.get(&key).is_some_and(|(e, _)| *e == expires) {
                self.map.remove(&key);
            }
        }
        if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    pub(super) fn get(&self, key: &K, now: UnixMs) -> Option<&V> {
        self.map
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v)
    }

    pub(super) fn insert(&mut self, key: K, value: V, now: UnixMs, keep: Duration) {
        let expires = now + keep.as_millis() as u64;
        self.map.insert(key, (expires, value));
        self.order.push_back((expires, key));
        self.prune(now);
    }

    pub(super) fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
