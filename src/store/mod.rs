//! Where the state that a retry touches lives: the delivery ledger, the
//! unreachable list, rate-limit cells and the daily budget. One interface,
//! two backends, chosen by `store.backend`:
//!
//! - [`memory`]: this process's memory. One replica; nothing survives a
//!   restart.
//! - [`redis`]: a Redis server shared by every replica, so Kratos's retries
//!   of one message give the same answer on any replica and after a restart.
//!
//! Every operation that decides something is atomic in the backend (a mutex
//! in memory, a Lua script in Redis), and takes the time from the caller's
//! [`crate::clock::Clock`] (Unix milliseconds), so tests decide what time it
//! is; except that Redis judges ledger leases by its own clock (plus the
//! clock's test offset), so replicas whose clocks disagree still agree on
//! them (see [`redis`]). Nothing stored is a phone number, a code or a body: keys are keyed
//! hashes ([`Keys`]), values are states, sids, counters and times.
//!
//! (Longer than our usual 400 lines, on purpose: the store's one interface:
//! each operation is declared and documented once here, with the types both
//! backends share, and dispatched to the backend (with
//! `store.redis.on_error = "local"`'s fallback) in the same place.)

#[cfg(test)]
#[path = "redis_tests.rs"]
mod against_redis;
mod expiring;
pub(crate) mod fraud;
pub(crate) mod keys;
pub mod memory;
pub(crate) mod redis;
/// A throwaway `redis-server` for the tests of both backends.
#[cfg(test)]
#[path = "../../tests/common/redis.rs"]
mod redis_server;
#[cfg(test)]
mod suite;

use std::time::Duration;

pub(crate) use fraud::{Confirmed, FraudKeys, FraudScope, Tallies, Tally};
pub use keys::{Keys, LimitKey, MessageKey, RecipientKey, RecordKey, RelayKey, VerifyKey};

/// Who holds a claim: a random id made per send attempt, so a replica that
/// died (or a request that was cancelled) can be told from a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Owner(pub u128);

impl Owner {
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        Owner(u128::from_be_bytes(bytes))
    }
}

/// Unix time in milliseconds, from the service's clock.
pub(crate) type UnixMs = u64;

/// The ledger's record of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `owner` is talking to the provider; its lease runs until `lease_until`.
    InFlight {
        owner: Owner,
        /// When the first attempt of this message began (reconciliation
        /// looks for provider records created at or after it).
        since: UnixMs,
        lease_until: UnixMs,
        /// The provider the owner is (or was last) sending to, from the
        /// last renewal; `None` before any (or in a record from before
        /// providers were named: the first provider's then).
        provider: Option<String>,
    },
    /// The provider accepted it; `sid` is its id (`None`: accepted, but the
    /// answer could not be read).
    Accepted { sid: Option<String> },
    /// The provider may or may not have it (timeout, broken connection, or
    /// an owner that died): ask the provider before sending again.
    Uncertain {
        since: UnixMs,
        /// The provider that may have it: the one to ask.
        provider: Option<String>,
    },
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// No record: the caller now owns the message (`InFlight`) and sends it.
    Send,
    /// The record was `Uncertain`, or `InFlight` with an expired lease: the
    /// caller now owns it (`InFlight`, keeping `since`) and must reconcile
    /// with the provider before sending.
    Reconcile {
        since: UnixMs,
        /// The provider to ask (see [`Entry::Uncertain`]).
        provider: Option<String>,
    },
    /// Sent already.
    Accepted { sid: Option<String> },
    /// Another owner holds a live lease: wait for it.
    Busy,
}

/// How an owner leaves (or keeps) its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The provider accepted it: remember for the dedup window. Written
    /// whoever holds the record now (the message *was* sent; an attempt
    /// that took over must learn so), unless it is `Accepted` already.
    Accepted { sid: Option<String> },
    /// About to call the provider: extend the lease to `lease_until`, so no
    /// other attempt takes the message over while the call may still land.
    /// Only if the caller still holds it; the caller must not send if not.
    /// The provider about to be called is recorded with it: an outcome
    /// left uncertain is reconciled with that provider.
    Renew {
        lease_until: UnixMs,
        provider: String,
    },
    /// The provider may have it: remember as `Uncertain` (keeping `since`)
    /// for the dedup window.
    Uncertain,
    /// Certainly not sent: forget it, so a retry sends.
    Release,
}

/// A rate-limit cell to take: one GCRA bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    /// Which limiter (for the refusal, the metric and the backend's key).
    pub(crate) limiter: Limiter,
    pub(crate) key: LimitKey,
    /// The emission interval (one cell per `interval`) and the burst.
    pub(crate) interval: Duration,
    pub(crate) burst: u32,
    /// Not taken when this number (its keyed hash, as
    /// [`FraudKeys::number`]) confirmed a code within
    /// [`fraud::TRUSTED_MS`]: the prefix limiter's exemption for the people
    /// in a block who use their codes.
    pub(crate) unless_trusted: Option<LimitKey>,
}

/// The limiters: per channel, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Limiter {
    pub(crate) channel: crate::domain::Channel,
    pub(crate) name: crate::domain::LimitName,
}

/// Budget counters to take `units` from: the day's total and the
/// destination country's, each with its cap (0: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BudgetTake {
    /// Days since 1970-01-01 (UTC): the counters' day.
    pub(crate) day: u64,
    pub(crate) calling_code: u16,
    pub(crate) total_cap: u32,
    pub(crate) country_cap: u32,
    /// What the message's channel costs (`budget.units`), at least 1.
    pub(crate) units: u32,
}

/// What [`Store::reserve`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A limiter has no cell: retry after `retry_after`.
    Limited {
        limiter: Limiter,
        retry_after: Duration,
    },
    /// The day's budget is used up.
    Budget { scope: crate::domain::BudgetScope },
}

/// What a reservation took, to give back with [`Store::refund`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub(crate) cells: Vec<Cell>,
    pub(crate) budget: Option<BudgetTake>,
    /// The day's budget used once this reservation took its units, read in
    /// the same store call (the gauge and the warnings need no second
    /// round trip); `None` without a budget take.
    pub(crate) used: Option<BudgetUsed>,
}

/// The budget used so far today (for the gauge and warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BudgetUsed {
    pub(crate) total: u32,
    pub(crate) country: u32,
}

/// The store could not answer (Redis down or slow). Never carries a key or
/// a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store is unavailable: {0}")]
pub struct StoreError(pub String);

/// The store the configuration asks for, and the keys to use with it.
pub(crate) fn open(
    config: &crate::config::Config,
    clock: crate::clock::Clock,
    failures: Failures,
) -> Result<(std::sync::Arc<Store>, Keys), StoreError> {
    use crate::config::{Backend, OnError};
    use secrecy::ExposeSecret;
    let memory = || memory::MemoryStore::new(clock.clone(), config.dedup.max_entries);
    Ok(match &config.store.backend {
        Backend::Memory => (std::sync::Arc::new(Store::Memory(memory())), Keys::random()),
        Backend::Redis(r) => {
            let keys = match &r.key_secret {
                Some(secret) => Keys::from_secret(secret.expose_secret().as_bytes()),
                // Every replica has the provider credential: derive from it,
                // labelled, so the credential itself is never the key.
                None => Keys::from_secret(&keys::derive(
                    config.twilio.password.expose_secret().as_bytes(),
                    b"kratos-phone-courier store keys v1",
                )),
            };
            let store = Store::Redis {
                redis: redis::RedisStore::connect(r)?.with_clock(clock.clone()),
                fallback: (r.on_error == OnError::Local).then(memory),
                failures,
            };
            (std::sync::Arc::new(store), keys)
        }
    })
}

/// Which store holds a flight's records. With `store.redis.on_error =
/// "local"`, a claim Redis did not answer is made in this replica's memory,
/// and everything about that message stays there: a request never claims in
/// one store and settles, reserves or refunds in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The configured store (memory, or Redis).
    Shared,
    /// This replica's memory, standing in for Redis.
    Local,
}

/// A backend, borrowed.
enum Backend<'a> {
    Memory(&'a memory::MemoryStore),
    Redis(&'a redis::RedisStore),
}

/// Counts the calls the shared store did not answer (a metric).
pub(crate) type Failures = prometheus_client::metrics::counter::Counter;

/// The backend in use. (Made once per process: the size difference between
/// the variants does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redis {
        redis: redis::RedisStore,
        /// With `store.redis.on_error = "local"`: this replica's memory,
        /// used for each call Redis does not answer.
        fallback: Option<memory::MemoryStore>,
        /// Calls Redis did not answer (the metric's counter).
        failures: Failures,
    },
}

/// One backend method, whichever backend it is; with Redis and a local
/// fallback, a call Redis does not answer is answered from memory.
///
/// Redis's futures are boxed here and in the methods below: each is a few
/// KB (4 KB for a store call), and unboxed they made every future that
/// awaits the store that large, memory store or not; the delivery task's
/// future was 10 KB, copied whole into its box on every send. A Redis call
/// pays one allocation, next to a network round trip.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Memory(m) => m.$method($($arg),*).await,
            Store::Redis { redis, fallback, failures } => match Box::pin(redis.$method($($arg),*)).await {
                Err(e) => {
                    failures.inc();
                    match fallback {
                        Some(local) => {
                            tracing::warn!(error = %e, "the store did not answer; deciding with this replica's memory (store.redis.on_error = local)");
                            local.$method($($arg),*).await
                        }
                        None => Err(e),
                    }
                }
                answer => answer,
            },
        }
    };
}

impl Store {
    /// See [`Claim`]. Also says which store now holds the claim: every
    /// later call about this flight must go to the same one.
    pub(crate) async fn claim(
        &self,
        key: &MessageKey,
        owner: Owner,
        now: UnixMs,
        lease: Duration,
        keep: Duration,
    ) -> Result<(Claim, Side), StoreError> {
        match self {
            Store::Memory(m) => Ok((m.claim(key, owner, now, lease, keep).await?, Side::Shared)),
            Store::Redis {
                redis,
                fallback,
                failures,
            } => match Box::pin(redis.claim(key, owner, now, lease, keep)).await {
                Ok(claim) => Ok((claim, Side::Shared)),
                Err(e) => {
                    failures.inc();
                    let Some(local) = fallback else { return Err(e) };
                    tracing::warn!(error = %e, "the store did not answer; this message is decided with this replica's memory (store.redis.on_error = local)");
                    Ok((
                        local.claim(key, owner, now, lease, keep).await?,
                        Side::Local,
                    ))
                }
            },
        }
    }

    /// The backend a flight's records are in.
    fn side(&self, side: Side) -> Result<Backend<'_>, StoreError> {
        match (self, side) {
            (Store::Memory(m), _) => Ok(Backend::Memory(m)),
            (Store::Redis { redis, .. }, Side::Shared) => Ok(Backend::Redis(redis)),
            (
                Store::Redis {
                    fallback: Some(m), ..
                },
                Side::Local,
            ) => Ok(Backend::Memory(m)),
            (Store::Redis { fallback: None, .. }, Side::Local) => {
                Err(StoreError("no local store to answer from".into()))
            }
        }
    }

    /// See [`Settle`]. Does nothing unless `owner` still holds the claim
    /// (but `Accepted` is always recorded); answers whether it did.
    pub(crate) async fn settle(
        &self,
        side: Side,
        key: &MessageKey,
        owner: Owner,
        settle: Settle,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let result = match self.side(side)? {
            Backend::Memory(m) => m.settle(key, owner, settle, now, keep).await,
            Backend::Redis(r) => Box::pin(r.settle(key, owner, settle, now, keep)).await,
        };
        self.count_failure(&result);
        result
    }

    /// Wait a little for records to change: until the next settlement in
    /// memory; a short pause (growing with `round`) for Redis, which is
    /// polled. The caller looks again and bounds the whole wait.
    pub(crate) async fn changed(&self, round: u32) {
        match self {
            Store::Memory(m) => m.settled().await,
            Store::Redis { .. } => {
                let ms = (10u64 << round.min(5)).min(250);
                tokio::time::sleep(Duration::from_millis(ms)).await
            }
        }
    }

    pub(crate) async fn unreachable(
        &self,
        key: &RecipientKey,
        now: UnixMs,
    ) -> Result<Option<Option<u32>>, StoreError> {
        dispatch!(self.unreachable(key, now))
    }

    pub(crate) async fn mark_unreachable(
        &self,
        key: &RecipientKey,
        code: Option<u32>,
        now: UnixMs,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        dispatch!(self.mark_unreachable(key, code, now, ttl))
    }

    /// Take a cell from every limiter and a unit of budget, or nothing.
    pub(crate) async fn reserve(
        &self,
        side: Side,
        cells: &[Cell],
        budget: Option<BudgetTake>,
        now: UnixMs,
    ) -> Result<Result<Reservation, Refusal>, StoreError> {
        let backend = self.side(side)?;
        let result = match backend {
            Backend::Memory(m) => m.reserve(cells, budget, now).await,
            Backend::Redis(r) => Box::pin(r.reserve(cells, budget, now)).await,
        };
        self.count_failure(&result);
        result
    }

    /// Give back what a reservation took (the message was certainly not
    /// sent).
    pub(crate) async fn refund(
        &self,
        side: Side,
        reservation: &Reservation,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let result = match self.side(side)? {
            Backend::Memory(m) => m.refund(reservation, now).await,
            Backend::Redis(r) => Box::pin(r.refund(reservation, now)).await,
        };
        self.count_failure(&result);
        result
    }

    fn count_failure<T>(&self, result: &Result<T, StoreError>) {
        if let (Store::Redis { failures, .. }, Err(_)) = (self, result) {
            failures.inc();
        }
    }

    /// Whether the shared store answers (readiness). A local fallback does
    /// not count: readiness says how Redis is.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.ping().await,
            Store::Redis { redis, .. } => Box::pin(redis.ping()).await,
        }
    }

    /// Whether requests fail while Redis is down (no local fallback).
    pub(crate) fn fails_closed(&self) -> bool {
        matches!(self, Store::Redis { fallback: None, .. })
    }

    /// The fraud guard's counts of a number's country and prefix.
    pub(crate) async fn fraud_tallies(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        dispatch!(self.fraud_tallies(keys, now))
    }

    /// Count a code sent (and outstanding for the number); the counts after.
    pub(crate) async fn fraud_record_sent(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        dispatch!(self.fraud_record_sent(keys, now))
    }

    /// Count a confirmation, if a code sent to the number is outstanding.
    pub(crate) async fn fraud_record_confirmed(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Confirmed, StoreError> {
        dispatch!(self.fraud_record_confirmed(keys, now))
    }

    /// Hold the number's country or prefix as suspect until `until`.
    pub(crate) async fn fraud_mark_suspect(
        &self,
        keys: &FraudKeys,
        scope: FraudScope,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        dispatch!(self.fraud_mark_suspect(keys, scope, until, now))
    }

    /// Periodic clean-up (memory only: Redis expires keys itself).
    pub(crate) fn prune(&self) {
        match self {
            Store::Memory(m) => m.prune(),
            Store::Redis {
                fallback: Some(m), ..
            } => m.prune(),
            Store::Redis { .. } => {}
        }
    }
}

/// The inbound relay's marks (`src/relay/`): kept in the store so that
/// replicas agree on what was relayed, like the courier's ledger.
impl Store {
    /// Marks an incoming message seen for `keep`; `true` when it had not
    /// been (Twilio retries webhooks: a second copy is not relayed).
    pub(crate) async fn relay_first_seen(
        &self,
        key: &RelayKey,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self.relay_first_seen(key, now, keep))
    }

    /// Takes one from the counter `key` (a route's hour) if fewer than
    /// `limit` were taken; the counter lives until `until`.
    pub(crate) async fn relay_take(
        &self,
        key: &RelayKey,
        limit: u32,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        dispatch!(self.relay_take(key, limit, now, until))
    }

    /// [`Self::relay_take`] with the count: how many were taken in the
    /// window, this one included, or `None` if `limit` were taken already.
    /// Also the Lookup's hourly cap (`lookup.max_per_hour`).
    pub(crate) async fn count_take(
        &self,
        key: &RelayKey,
        limit: u32,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<Option<u32>, StoreError> {
        dispatch!(self.count_take(key, limit, now, until))
    }
}

/// A code the verify API sent and waits to see again (`src/verify/`): a
/// keyed hash of it, the random seed it is drawn from (so a resend can send
/// the same code; why a seed and not the code is in `src/verify/code.rs`)
/// and when it stops counting. Never the code itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingCode {
    /// `Keys::verify("code", [e164, code])`: what a check is compared with.
    pub(crate) hash: [u8; 32],
    pub(crate) seed: [u8; 16],
    pub(crate) expires_at: UnixMs,
}

/// What [`Store::verify_pending`] found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) code: PendingCode,
    /// Which send of this code the caller makes: 1 for a new code, 2 for
    /// its first resend, and so on.
    pub(crate) sends: u32,
}

/// What one check of a code came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeCheck {
    /// The code matched: it is spent (removed), and no other check of it
    /// can approve.
    Approved,
    /// Wrong code; `attempts_left` more may be tried.
    Mismatch { attempts_left: u32 },
    /// Wrong code, and the last attempt: the pending code is dropped.
    TooManyAttempts,
    /// Nothing pending for this recipient, or it expired.
    NoPendingCode,
}

/// What [`Store::verify_idempotency_begin`] found for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Unknown: the caller now holds it (in progress) and does the work.
    New,
    /// Another request with the key is still at work.
    InProgress { fingerprint: [u8; 32] },
    /// A request with the key was answered: `answer` (the verifier's own
    /// encoding; never a code or a number).
    Done {
        fingerprint: [u8; 32],
        answer: String,
    },
}

/// The verify API's pending codes (`src/verify/`): in the store so that a
/// code requested on one replica can be checked on another. Each call is
/// atomic (a mutex in memory, a Lua script in Redis): of concurrent checks
/// of one code, exactly one is approved.
impl Store {
    /// The pending code of `key` if one lives at `now` (its send count
    /// raised by one), or else `fresh`, stored with no attempts until its
    /// `expires_at` but *unsent*: a check finds nothing until
    /// [`Store::verify_sent`] says a send of it was accepted, and
    /// [`Store::verify_unsent`] drops it if no send of it was. (Concurrent
    /// first requests find the same unsent code; each is one "in flight"
    /// until it says which.)
    pub(crate) async fn verify_pending(
        &self,
        key: &VerifyKey,
        fresh: &PendingCode,
        now: UnixMs,
    ) -> Result<Pending, StoreError> {
        dispatch!(self.verify_pending(key, fresh, now))
    }

    /// A send of the code `hash` was accepted by a provider (or may have
    /// been: uncertain): the code becomes checkable. `false` if the record
    /// holds another code or none (an approved or dropped code is never
    /// made checkable again).
    pub(crate) async fn verify_sent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        dispatch!(self.verify_sent(key, hash, now))
    }

    /// A send of the code `hash` was certainly not made (refused): if it is
    /// still unsent and no other request is sending it, it is dropped, so
    /// a refused request leaves nothing to check. A code sent already
    /// (this was a resend) is left as it is.
    pub(crate) async fn verify_unsent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        dispatch!(self.verify_unsent(key, hash, now))
    }

    /// Starts the request `key` made with an `Idempotency-Key` (a keyed
    /// hash of it) for the body `fingerprint` (a keyed hash of the number
    /// and body): [`Idempotency::New`] and marked in progress until
    /// `lease_until` if the key is unknown at `now`, else what is recorded.
    pub(crate) async fn verify_idempotency_begin(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        now: UnixMs,
        lease_until: UnixMs,
    ) -> Result<Idempotency, StoreError> {
        dispatch!(self.verify_idempotency_begin(key, fingerprint, now, lease_until))
    }

    /// Ends what [`Store::verify_idempotency_begin`] started for
    /// `fingerprint`: `Some(answer)` keeps the answer until `until` (a retry
    /// is given it), `None` forgets the key (a retry runs again). Does
    /// nothing if the key is not in progress for `fingerprint`.
    pub(crate) async fn verify_idempotency_finish(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        answer: Option<&str>,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        dispatch!(self.verify_idempotency_finish(key, fingerprint, answer, now, until))
    }

    /// Compares `hash` with the pending code's in constant time; approves
    /// (and removes) on a match, counts an attempt otherwise and drops the
    /// code at the `max_attempts`-th wrong one.
    pub(crate) async fn verify_check(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        max_attempts: u32,
        now: UnixMs,
    ) -> Result<CodeCheck, StoreError> {
        dispatch!(self.verify_check(key, hash, max_attempts, now))
    }
}

// After `dispatch!`, which it uses.
pub(crate) mod records;
