//! Two short-lived records behind issue #14's features, in the store so
//! that every replica sees them:
//!
//! - a **fallback record** per SMS sent (`stash_*`): sealed bytes (see
//!   `delivery::fallback`) that say how to speak the code in a call, kept
//!   only until the code expires, and *taken* (read and removed at once) by
//!   the status callback that places the fallback call — so of two copies
//!   of a callback, on one replica or two, exactly one finds it;
//! - a **cached Lookup answer** per number and data package (`lookup_*`):
//!   a short text such as `landline`, kept for the configured time.
//!
//! Keys are keyed hashes ([`super::Keys::record_key`]); neither value holds
//! a number or a code in the clear. This file holds the memory backend's
//! part (which `memory.rs` holds and calls) and the dispatch;
//! `redis/records.rs` the Redis one.

use std::sync::Mutex;
use std::time::Duration;

use super::expiring::Expiring;
use super::{RecordKey, Store, StoreError, UnixMs};

/// The memory backend's records, bounded like the ledger.
pub(crate) struct MemoryRecords {
    stash: Mutex<Expiring<RecordKey, Vec<u8>>>,
    lookups: Mutex<Expiring<RecordKey, String>>,
}

impl MemoryRecords {
    pub(super) fn new(max_entries: usize) -> Self {
        MemoryRecords {
            stash: Mutex::new(Expiring::new(max_entries)),
            lookups: Mutex::new(Expiring::new(max_entries)),
        }
    }

    pub(super) fn prune(&self, now: UnixMs) {
        lock(&self.stash).prune(now);
        lock(&self.lookups).prune(now);
    }

    pub(super) fn stash_put(&self, key: &RecordKey, sealed: &[u8], now: UnixMs, until: UnixMs) {
        lock(&self.stash).insert(*key, sealed.to_vec(), now, keep(now, until));
    }

    pub(super) fn stash_take(&self, key: &RecordKey, now: UnixMs) -> Option<Vec<u8>> {
        let mut stash = lock(&self.stash);
        let found = stash.get(key, now).cloned();
        stash.remove(key);
        found
    }

    pub(super) fn lookup_get(&self, keys: &[RecordKey], now: UnixMs) -> Vec<Option<String>> {
        let lookups = lock(&self.lookups);
        keys.iter()
            .map(|key| lookups.get(key, now).cloned())
            .collect()
    }

    pub(super) fn lookup_put(&self, entries: &[(RecordKey, String, UnixMs)], now: UnixMs) {
        let mut lookups = lock(&self.lookups);
        for (key, value, until) in entries {
            lookups.insert(*key, value.clone(), now, keep(now, *until));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a record lives from `now` to `until` (at least a millisecond).
fn keep(now: UnixMs, until: UnixMs) -> Duration {
    Duration::from_millis(until.saturating_sub(now).max(1))
}

/// Dispatch, with the local fallback of `store.redis.on_error = "local"`
/// like every other record.
impl Store {
    /// Keep an SMS's sealed fallback record until `until` (the code's end).
    pub(crate) async fn stash_put(
        &self,
        key: &RecordKey,
        sealed: &[u8],
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        dispatch!(self.stash_put(key, sealed, now, until))
    }

    /// Read and remove an SMS's fallback record, atomically: `None` if there
    /// is none, it expired, or another caller took it first.
    pub(crate) async fn stash_take(
        &self,
        key: &RecordKey,
        now: UnixMs,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self.stash_take(key, now))
    }

    /// The cached Lookup answers under `keys`, each if it lives at `now`,
    /// in one store call.
    pub(crate) async fn lookup_get(
        &self,
        keys: &[RecordKey],
        now: UnixMs,
    ) -> Result<Vec<Option<String>>, StoreError> {
        dispatch!(self.lookup_get(keys, now))
    }

    /// Cache Lookup answers, each `(key, answer, until)`, in one store call.
    pub(crate) async fn lookup_put(
        &self,
        entries: &[(RecordKey, String, UnixMs)],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        dispatch!(self.lookup_put(entries, now))
    }
}
