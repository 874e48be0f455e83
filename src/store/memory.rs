//! The memory backend: this process's state, for one replica.
//!
//! Each operation takes one mutex, so it is atomic like the Redis backend's
//! scripts. The ledger and the unreachable list are bounded: entries expire,
//! and past `max_entries` the oldest go first. Rate limits are governor's
//! GCRA limiters on a state store that can probe without writing (so a
//! refusal takes nothing from any limiter) and give a cell back (a refund).
//!
//! What a single memory replica cannot promise: another replica, or this one
//! after a restart, knows nothing of what this one sent.
//!
//! (Longer than our usual 400 lines, on purpose: the whole backend, its
//! compact ledger records and its governor state store sit together so that
//! "one mutex per call" can be checked in one file; a third of it is tests.)

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;

use super::expiring::Expiring;
use super::fraud::{Confirmed, FraudKeys, FraudScope, Tallies};
use super::{
    BudgetTake, BudgetUsed, Cell, Claim, Entry, Limiter, MessageKey, Owner, RecipientKey,
    RecordKey, Refusal, RelayKey, Reservation, Settle, StoreError, UnixMs,
};
use super::{CodeCheck, Idempotency, Pending, PendingCode, VerifyKey};
use crate::clock::Clock;
use crate::domain::BudgetScope;

pub struct MemoryStore {
    clock: Clock,
    ledger: Mutex<Ledger>,
    /// Woken whenever a ledger record is settled, for waiters.
    settled: Notify,
    limits: Mutex<HashMap<Limiter, Bucket>>,
    budget: Mutex<BudgetDay>,
    /// The inbound relay's marks (see the relay block below).
    relay: Mutex<RelayMarks>,
    /// The fraud guard's counters (`store::fraud`).
    fraud: super::fraud::MemoryFraud,
    /// The verify API's pending codes (see the verify block below).
    verify: Mutex<Expiring<VerifyKey, PendingRecord>>,
    /// The verify API's `Idempotency-Key`s.
    idempotency: Mutex<Expiring<VerifyKey, IdempotencyRecord>>,
    /// Sealed fallback records and cached lookups (`store::records`).
    records: super::records::MemoryRecords,
}

struct Ledger {
    entries: Expiring<MessageKey, Record>,
    unreachable: Expiring<RecipientKey, Option<u32>>,
}

/// A ledger record as kept in memory: sids packed (see [`Sid`]), so a
/// million remembered sends stay small.
#[derive(Debug, Clone)]
enum Record {
    InFlight {
        owner: Owner,
        since: UnixMs,
        lease_until: UnixMs,
        provider: Option<String>,
    },
    Accepted(Option<Sid>),
    Uncertain {
        since: UnixMs,
        provider: Option<String>,
    },
}

impl Record {
    fn entry(&self, now: UnixMs) -> Entry {
        match self {
            Record::InFlight {
                owner,
                since,
                lease_until,
                provider,
            } if *lease_until > now => Entry::InFlight {
                owner: *owner,
                since: *since,
                lease_until: *lease_until,
                provider: provider.clone(),
            },
            Record::InFlight {
                since, provider, ..
            }
            | Record::Uncertain { since, provider } => Entry::Uncertain {
                since: *since,
                provider: provider.clone(),
            },
            Record::Accepted(sid) => Entry::Accepted {
                sid: sid.as_ref().map(Sid::unpack),
            },
        }
    }
}

struct BudgetDay {
    day: u64,
    total: u32,
    per_country: HashMap<u16, u32>,
}

/// One governor limiter, and a handle on its state for refunds.
struct Bucket {
    limiter: RateLimiter<Probe, ProbeStore, Clock, NoOpMiddleware<Nanos>>,
    cells: Arc<Mutex<HashMap<u64, u64>>>,
    /// Governor's emission interval, in the limiter's nanoseconds.
    interval: u64,
}

impl MemoryStore {
    /// `max_entries` bounds the ledger and the unreachable list each.
    pub fn new(clock: Clock, max_entries: usize) -> Self {
        MemoryStore {
            clock,
            ledger: Mutex::new(Ledger {
                entries: Expiring::new(max_entries),
                unreachable: Expiring::new(max_entries),
            }),
            settled: Notify::new(),
            limits: Mutex::new(HashMap::new()),
            fraud: Default::default(),
            budget: Mutex::new(BudgetDay {
                day: 0,
                total: 0,
                per_country: HashMap::new(),
            }),
            relay: Mutex::new(RelayMarks {
                seen: Expiring::new(max_entries),
                counts: Expiring::new(max_entries),
            }),
            verify: Mutex::new(Expiring::new(max_entries)),
            idempotency: Mutex::new(Expiring::new(max_entries)),
            records: super::records::MemoryRecords::new(max_entries),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn claim(
        &self,
        key: &MessageKey,
        owner: Owner,
        now: UnixMs,
        lease: Duration,
        keep: Duration,
    ) -> Result<Claim, StoreError> {
        let lease_until = now + lease.as_millis() as u64;
        let mut ledger = self.ledger();
        let found = ledger.entries.get(key, now).map(|r| r.entry(now));
        let (claim, since, provider) = match found {
            None => (Claim::Send, now, None),
            Some(Entry::Accepted { sid }) => return Ok(Claim::Accepted { sid }),
            Some(Entry::InFlight { .. }) => return Ok(Claim::Busy),
            Some(Entry::Uncertain { since, provider }) => (
                Claim::Reconcile {
                    since,
                    provider: provider.clone(),
                },
                since,
                provider,
            ),
        };
        // The provider stays recorded: if this owner dies before it
        // renews, the next one still knows whom to ask.
        let record = Record::InFlight {
            owner,
            since,
            lease_until,
            provider,
        };
        ledger.entries.insert(*key, record, now, keep);
        Ok(claim)
    }

    pub(crate) async fn settle(
        &self,
        key: &MessageKey,
        owner: Owner,
        settle: Settle,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        {
            let mut ledger = self.ledger();
            let current = ledger.entries.get(key, now).cloned();
            if let Settle::Accepted { sid } = &settle {
                // The message was sent: recorded whoever holds it now.
                if !matches!(current, Some(Record::Accepted(_))) {
                    let record = Record::Accepted(sid.as_deref().map(Sid::pack));
                    ledger.entries.insert(*key, record, now, keep);
                }
                drop(ledger);
                self.settled.notify_waiters();
                return Ok(true);
            }
            let (since, provider) = match current {
                Some(Record::InFlight {
                    owner: holder,
                    since,
                    provider,
                    ..
                }) if holder == owner => (since, provider),
                // Someone took over (our lease ran out): theirs now.
                _ => return Ok(false),
            };
            match settle {
                Settle::Accepted { .. } => {}
                Settle::Renew {
                    lease_until,
                    provider,
                } => {
                    let record = Record::InFlight {
                        owner,
                        since,
                        lease_until,
                        provider: Some(provider),
                    };
                    ledger.entries.insert(*key, record, now, keep);
                    return Ok(true);
                }
                Settle::Uncertain => {
                    ledger
                        .entries
                        .insert(*key, Record::Uncertain { since, provider }, now, keep)
                }
                Settle::Release => ledger.entries.remove(key),
            }
        }
        self.settled.notify_waiters();
        Ok(true)
    }

    #[cfg(test)]
    pub(crate) async fn entry(
        &self,
        key: &MessageKey,
        now: UnixMs,
    ) -> Result<Option<Entry>, StoreError> {
        Ok(self.ledger().entries.get(key, now).map(|r| r.entry(now)))
    }

    /// Resolves at the next settlement of any record (then look again).
    pub(crate) async fn settled(&self) {
        self.settled.notified().await
    }

    pub(crate) async fn unreachable(
        &self,
        key: &RecipientKey,
        now: UnixMs,
    ) -> Result<Option<Option<u32>>, StoreError> {
        Ok(self.ledger().unreachable.get(key, now).copied())
    }

    pub(crate) async fn mark_unreachable(
        &self,
        key: &RecipientKey,
        code: Option<u32>,
        now: UnixMs,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.ledger().unreachable.insert(*key, code, now, ttl);
        Ok(())
    }

    pub(crate) async fn reserve(
        &self,
        cells: &[Cell],
        budget: Option<BudgetTake>,
        now: UnixMs,
    ) -> Result<Result<Reservation, Refusal>, StoreError> {
        // A trusted number skips the cells that say so (`Cell::unless_trusted`).
        let kept: Vec<Cell>;
        let cells = match cells.iter().find_map(|c| c.unless_trusted) {
            Some(number) if self.fraud.trusted(number, now) => {
                kept = cells
                    .iter()
                    .filter(|c| c.unless_trusted.is_none())
                    .copied()
                    .collect();
                &kept[..]
            }
            _ => cells,
        };
        // One lock for limits and budget: probe everything, then commit
        // everything, so a refusal takes nothing.
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut day = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        for cell in cells {
            let bucket = match limits.entry(cell.limiter) {
                MapEntry::Occupied(o) => o.into_mut(),
                MapEntry::Vacant(v) => v.insert(Bucket::new(cell, &self.clock)),
            };
            let probe = Probe {
                key: cell.key,
                commit: false,
            };
            if let Err(not_until) = bucket.limiter.check_key(&probe) {
                return Ok(Err(Refusal::Limited {
                    limiter: cell.limiter,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                }));
            }
        }
        if let Some(b) = budget {
            if day.day != b.day {
                *day = BudgetDay {
                    day: b.day,
                    total: 0,
                    per_country: HashMap::new(),
                };
            }
            let country = day.per_country.get(&b.calling_code).copied().unwrap_or(0);
            if b.total_cap > 0 && day.total.saturating_add(b.units) > b.total_cap {
                return Ok(Err(Refusal::Budget {
                    scope: BudgetScope::Total,
                }));
            }
            if b.country_cap > 0 && country.saturating_add(b.units) > b.country_cap {
                return Ok(Err(Refusal::Budget {
                    scope: BudgetScope::Country,
                }));
            }
            day.total = day.total.saturating_add(b.units);
            day.per_country
                .insert(b.calling_code, country.saturating_add(b.units));
        }
        let used = budget.map(|b| BudgetUsed {
            total: day.total,
            country: day.per_country.get(&b.calling_code).copied().unwrap_or(0),
        });
        for cell in cells {
            if let Some(bucket) = limits.get(&cell.limiter) {
                // Cannot fail: the probe just passed under the same lock.
                let _ = bucket.limiter.check_key(&Probe {
                    key: cell.key,
                    commit: true,
                });
            }
        }
        Ok(Ok(Reservation {
            cells: cells.to_vec(),
            budget,
            used,
        }))
    }

    pub(crate) async fn refund(
        &self,
        reservation: &Reservation,
        _now: UnixMs,
    ) -> Result<(), StoreError> {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now().as_u64();
        for cell in &reservation.cells {
            if let Some(bucket) = limits.get(&cell.limiter) {
                bucket.refund(cell.key, now);
            }
        }
        drop(limits);
        if let Some(b) = reservation.budget {
            let mut day = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if day.day == b.day {
                day.total = day.total.saturating_sub(b.units);
                if let Some(c) = day.per_country.get_mut(&b.calling_code) {
                    *c = c.saturating_sub(b.units);
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn budget_used(
        &self,
        day: u64,
        calling_code: u16,
    ) -> Result<BudgetUsed, StoreError> {
        let d = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if d.day != day {
            return Ok(BudgetUsed::default());
        }
        Ok(BudgetUsed {
            total: d.total,
            country: d.per_country.get(&calling_code).copied().unwrap_or(0),
        })
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Drop what no longer matters and give memory back (called
    /// periodically).
    pub(crate) fn prune(&self) {
        let now = self.clock.unix().as_millis() as u64;
        {
            let mut ledger = self.ledger();
            ledger.entries.prune(now);
            ledger.unreachable.prune(now);
        }
        self.fraud.prune(now);
        self.pending().prune(now);
        self.records.prune(now);
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        for bucket in limits.values() {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    /// Records held (ledger + unreachable), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let ledger = self.ledger();
        ledger.entries.len() + ledger.unreachable.len()
    }

    /// Keys held across all limiters (tests check that pruning bounds them).
    #[cfg(test)]
    pub(crate) fn limit_keys(&self) -> usize {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.values().map(|b| b.limiter.len()).sum()
    }
}

impl Bucket {
    fn new(cell: &Cell, clock: &Clock) -> Self {
        let burst = NonZeroU32::new(cell.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(cell.interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let cells = Arc::new(Mutex::new(HashMap::new()));
        let store = ProbeStore {
            cells: cells.clone(),
        };
        Bucket {
            interval: quota.replenish_interval().as_nanos() as u64,
            limiter: RateLimiter::new(quota, store, clock.clone()),
            cells,
        }
    }

    /// Give one cell back: the theoretical arrival time moves one interval
    /// earlier; a bucket back at rest is dropped.
    fn refund(&self, key: u64, now: u64) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = cells.get_mut(&key) {
            *tat = tat.saturating_sub(self.interval);
            if *tat <= now {
                cells.remove(&key);
            }
        }
    }
}

/// A key and whether this check may write the limiter's state.
#[derive(Clone, Debug)]
struct Probe {
    key: u64,
    commit: bool,
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Probe {}
impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// Governor state (theoretical arrival time per key) that writes only on
/// committing checks.
#[derive(Default, Debug)]
struct ProbeStore {
    cells: Arc<Mutex<HashMap<u64, u64>>>,
}

impl StateStore for ProbeStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, key: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let current = cells.get(&key.key).map(|n| Nanos::from(*n));
        let (answer, next) = f(current)?;
        if key.commit {
            cells.insert(key.key, next.as_u64());
        }
        Ok(answer)
    }
}

impl ShrinkableKeyedStateStore<Probe> for ProbeStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|_, tat| *tat >= drop_below.as_u64());
    }

    fn shrink_to_fit(&self) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.cells.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A provider sid in 18 bytes instead of a heap string: Twilio's are two
/// letters and 32 hex digits, SignalWire's a UUID (16 bytes too). Anything
/// else keeps its text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sid {
    Hex([u8; 2], [u8; 16]),
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Sid {
    fn pack(s: &str) -> Sid {
        let hex16 = |h: &str| -> Option<[u8; 16]> {
            if h.len() != 32
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            let mut out = [0u8; 16];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        };
        let b = s.as_bytes();
        if b.len() == 34 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() {
            if let Some(raw) = s.get(2..).and_then(hex16) {
                return Sid::Hex([b[0], b[1]], raw);
            }
        }
        if b.len() == 36 && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-') {
            if let Some(raw) = hex16(&s.replace('-', "")) {
                return Sid::Uuid(raw);
            }
        }
        Sid::Text(s.into())
    }

    fn unpack(&self) -> String {
        let hex = |raw: &[u8; 16]| raw.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Sid::Hex(p, raw) => format!("{}{}{}", p[0] as char, p[1] as char, hex(raw)),
            Sid::Uuid(raw) => {
                let h = hex(raw);
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            Sid::Text(t) => t.to_string(),
        }
    }
}

/// Sealed fallback records and cached Lookups (see `store::records`),
/// kept apart from the ledger.
impl MemoryStore {
    pub(crate) async fn stash_put(
        &self,
        key: &RecordKey,
        sealed: &[u8],
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        self.records.stash_put(key, sealed, now, until);
        Ok(())
    }

    pub(crate) async fn stash_take(
        &self,
        key: &RecordKey,
        now: UnixMs,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.stash_take(key, now))
    }

    pub(crate) async fn lookup_get(
        &self,
        keys: &[RecordKey],
        now: UnixMs,
    ) -> Result<Vec<Option<String>>, StoreError> {
        Ok(self.records.lookup_get(keys, now))
    }

    pub(crate) async fn lookup_put(
        &self,
        entries: &[(RecordKey, String, UnixMs)],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.records.lookup_put(entries, now);
        Ok(())
    }
}

/// The inbound relay's marks: messages seen, and routes' hourly counts.
/// Bounded like the ledger (past `max_entries` the oldest go first).
struct RelayMarks {
    seen: Expiring<RelayKey, ()>,
    counts: Expiring<RelayKey, u32>,
}

impl MemoryStore {
    fn relay_marks(&self) -> std::sync::MutexGuard<'_, RelayMarks> {
        self.relay.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn relay_first_seen(
        &self,
        key: &RelayKey,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut marks = self.relay_marks();
        if marks.seen.get(key, now).is_some() {
            return Ok(false);
        }
        marks.seen.insert(*key, (), now, keep);
        Ok(true)
    }

    pub(crate) async fn relay_take(
        &self,
        key: &RelayKey,
        limit: u32,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        Ok(self.count_take(key, limit, now, until).await?.is_some())
    }

    /// See [`super::Store::count_take`].
    pub(crate) async fn count_take(
        &self,
        key: &RelayKey,
        limit: u32,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<Option<u32>, StoreError> {
        let mut marks = self.relay_marks();
        let taken = marks.counts.get(key, now).copied().unwrap_or(0);
        if taken >= limit {
            return Ok(None);
        }
        let keep = Duration::from_millis(until.saturating_sub(now).max(1));
        marks.counts.insert(*key, taken + 1, now, keep);
        Ok(Some(taken + 1))
    }
}

/// The fraud guard's counters (see `store::fraud`), kept apart from the
/// ledger, limits and budget.
impl MemoryStore {
    pub(crate) async fn fraud_tallies(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        Ok(self.fraud.tallies(keys, now))
    }

    pub(crate) async fn fraud_record_sent(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        Ok(self.fraud.record_sent(keys, now))
    }

    pub(crate) async fn fraud_record_confirmed(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Confirmed, StoreError> {
        Ok(self.fraud.record_confirmed(keys, now))
    }

    pub(crate) async fn fraud_mark_suspect(
        &self,
        keys: &FraudKeys,
        scope: FraudScope,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.fraud.mark_suspect(keys, scope, until, now);
        Ok(())
    }
}

/// A pending code as kept in memory: the code's record, and its counts.
#[derive(Debug, Clone, Copy)]
struct PendingRecord {
    code: PendingCode,
    attempts: u32,
    sends: u32,
    /// 0: sent, checkable. More: not sent yet, by this many requests at
    /// work (`Store::verify_pending`).
    unsent: u32,
}

/// An `Idempotency-Key` as kept in memory: the body it was used with, and
/// the answer once there is one.
#[derive(Debug, Clone)]
struct IdempotencyRecord {
    fingerprint: [u8; 32],
    answer: Option<String>,
}

/// The verify API's pending codes, bounded like the ledger (past
/// `max_entries` the oldest go first), each under one mutex.
impl MemoryStore {
    fn pending(&self) -> std::sync::MutexGuard<'_, Expiring<VerifyKey, PendingRecord>> {
        self.verify.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn verify_pending(
        &self,
        key: &VerifyKey,
        fresh: &PendingCode,
        now: UnixMs,
    ) -> Result<Pending, StoreError> {
        let mut pending = self.pending();
        let record = match pending.get(key, now) {
            Some(r) => PendingRecord {
                sends: r.sends.saturating_add(1),
                unsent: if r.unsent > 0 { r.unsent + 1 } else { 0 },
                ..*r
            },
            None => PendingRecord {
                code: *fresh,
                attempts: 0,
                sends: 1,
                unsent: 1,
            },
        };
        let keep = Duration::from_millis(record.code.expires_at.saturating_sub(now));
        pending.insert(*key, record, now, keep);
        Ok(Pending {
            code: record.code,
            sends: record.sends,
        })
    }

    pub(crate) async fn verify_check(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        max_attempts: u32,
        now: UnixMs,
    ) -> Result<CodeCheck, StoreError> {
        use subtle::ConstantTimeEq;
        let mut pending = self.pending();
        let Some(record) = pending.get(key, now).copied().filter(|r| r.unsent == 0) else {
            return Ok(CodeCheck::NoPendingCode);
        };
        if bool::from(record.code.hash.ct_eq(hash)) {
            pending.remove(key);
            return Ok(CodeCheck::Approved);
        }
        let attempts = record.attempts.saturating_add(1);
        if attempts >= max_attempts {
            pending.remove(key);
            return Ok(CodeCheck::TooManyAttempts);
        }
        let keep = Duration::from_millis(record.code.expires_at.saturating_sub(now));
        pending.insert(
            key.to_owned(),
            PendingRecord { attempts, ..record },
            now,
            keep,
        );
        Ok(CodeCheck::Mismatch {
            attempts_left: max_attempts - attempts,
        })
    }

    pub(crate) async fn verify_sent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let mut pending = self.pending();
        let Some(record) = pending.get(key, now).copied() else {
            return Ok(false);
        };
        if record.code.hash != *hash {
            return Ok(false);
        }
        if record.unsent > 0 {
            let keep = Duration::from_millis(record.code.expires_at.saturating_sub(now));
            pending.insert(
                *key,
                PendingRecord {
                    unsent: 0,
                    ..record
                },
                now,
                keep,
            );
        }
        Ok(true)
    }

    pub(crate) async fn verify_unsent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut pending = self.pending();
        let Some(record) = pending.get(key, now).copied() else {
            return Ok(());
        };
        if record.code.hash != *hash || record.unsent == 0 {
            return Ok(());
        }
        if record.unsent == 1 {
            pending.remove(key);
        } else {
            let keep = Duration::from_millis(record.code.expires_at.saturating_sub(now));
            let unsent = record.unsent - 1;
            pending.insert(*key, PendingRecord { unsent, ..record }, now, keep);
        }
        Ok(())
    }

    fn idempotency(&self) -> std::sync::MutexGuard<'_, Expiring<VerifyKey, IdempotencyRecord>> {
        self.idempotency.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn verify_idempotency_begin(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        now: UnixMs,
        lease_until: UnixMs,
    ) -> Result<Idempotency, StoreError> {
        let mut keys = self.idempotency();
        if let Some(r) = keys.get(key, now) {
            return Ok(match &r.answer {
                Some(answer) => Idempotency::Done {
                    fingerprint: r.fingerprint,
                    answer: answer.clone(),
                },
                None => Idempotency::InProgress {
                    fingerprint: r.fingerprint,
                },
            });
        }
        let record = IdempotencyRecord {
            fingerprint: *fingerprint,
            answer: None,
        };
        let keep = Duration::from_millis(lease_until.saturating_sub(now).max(1));
        keys.insert(*key, record, now, keep);
        Ok(Idempotency::New)
    }

    pub(crate) async fn verify_idempotency_finish(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        answer: Option<&str>,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        let mut keys = self.idempotency();
        match keys.get(key, now) {
            Some(r) if r.answer.is_none() && r.fingerprint == *fingerprint => {}
            _ => return Ok(()),
        }
        match answer {
            Some(answer) => {
                let record = IdempotencyRecord {
                    fingerprint: *fingerprint,
                    answer: Some(answer.to_owned()),
                };
                let keep = Duration::from_millis(until.saturating_sub(now).max(1));
                keys.insert(*key, record, now, keep);
            }
            None => keys.remove(key),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (MemoryStore, Clock) {
        let clock = Clock::starting_at(Duration::from_secs(1_800_000_000));
        (MemoryStore::new(clock.clone(), 1000), clock)
    }

    const LEASE: Duration = Duration::from_secs(10);
    const KEEP: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn reserve_is_all_or_nothing_and_refund_gives_back() {
        use crate::domain::Channel;
        use crate::domain::LimitName;
        let (s, _) = store();
        let cell = |name, key, burst| Cell {
            limiter: Limiter {
                channel: Channel::Sms,
                name,
            },
            key,
            interval: Duration::from_secs(3600),
            burst,
            unless_trusted: None,
        };
        let recipient = cell(LimitName::Recipient, 1, 2);
        let global = cell(LimitName::Global, 0, 3);
        let budget = BudgetTake {
            day: 20_000,
            calling_code: 1,
            total_cap: 10,
            country_cap: 10,
            units: 1,
        };
        let r1 = s
            .reserve(&[recipient, global], Some(budget), 0)
            .await
            .unwrap()
            .unwrap();
        let _r2 = s
            .reserve(&[recipient, global], Some(budget), 0)
            .await
            .unwrap()
            .unwrap();
        // The recipient's burst of 2 is used: refused, and the global cell and
        // the budget are not taken.
        let refused = s
            .reserve(&[recipient, global], Some(budget), 0)
            .await
            .unwrap();
        assert!(
            matches!(refused, Err(Refusal::Limited { limiter, .. }) if limiter.name == LimitName::Recipient)
        );
        assert_eq!(s.budget_used(20_000, 1).await.unwrap().total, 2);
        let other = cell(LimitName::Recipient, 2, 2);
        s.reserve(&[other, global], Some(budget), 0)
            .await
            .unwrap()
            .unwrap();
        assert!(s
            .reserve(&[cell(LimitName::Recipient, 3, 2), global], None, 0)
            .await
            .unwrap()
            .is_err());
        // A refund makes room again, and gives the budget unit back.
        s.refund(&r1, 0).await.unwrap();
        assert_eq!(s.budget_used(20_000, 1).await.unwrap().total, 2);
        s.reserve(&[recipient, global], None, 0)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn sids_pack_and_unpack() {
        for sid in [
            "SM0123456789abcdef0123456789abcdef",
            "CAffffffffffffffffffffffffffffffff",
            "a5c7a9f2-1b2c-4d5e-8f90-123456789abc",
            "SM0123456789ABCDEF0123456789abcdef",
            "x",
            "SMé123456789abcdef0123456789abcde",
        ] {
            assert_eq!(Sid::pack(sid).unpack(), sid);
        }
        assert!(matches!(
            Sid::pack("SM0123456789abcdef0123456789abcdef"),
            Sid::Hex(..)
        ));
        assert!(matches!(
            Sid::pack("a5c7a9f2-1b2c-4d5e-8f90-123456789abc"),
            Sid::Uuid(..)
        ));
    }

    #[tokio::test]
    async fn bounded_by_max_entries() {
        let clock = Clock::starting_at(Duration::ZERO);
        let s = MemoryStore::new(clock, 100);
        for i in 0..1000u32 {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_be_bytes());
            s.claim(&k, Owner(1), 0, LEASE, KEEP).await.unwrap();
            s.settle(&k, Owner(1), Settle::Accepted { sid: None }, 0, KEEP)
                .await
                .unwrap();
        }
        assert_eq!(s.len(), 100);
    }
}
