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
//! is. Nothing stored is a phone number, a code or a body: keys are keyed
//! hashes ([`Keys`]), values are states, sids, counters and times.

pub mod keys;
pub mod memory;
pub mod redis;

use std::time::Duration;

pub use keys::{Keys, LimitKey, MessageKey, RecipientKey};

/// Who holds a claim: a random id made per send attempt, so a replica that
/// died (or a request that was cancelled) can be told from a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner(pub u128);

impl Owner {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        Owner(u128::from_be_bytes(bytes))
    }
}

/// Unix time in milliseconds, from the service's clock.
pub type UnixMs = u64;

/// The ledger's record of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `owner` is talking to the provider; its lease runs until `lease_until`.
    InFlight {
        owner: Owner,
        /// When the first attempt of this message began (reconciliation
        /// looks for provider records created at or after it).
        since: UnixMs,
        lease_until: UnixMs,
    },
    /// The provider accepted it; `sid` is its id (`None`: accepted, but the
    /// answer could not be read).
    Accepted { sid: Option<String> },
    /// The provider may or may not have it (timeout, broken connection, or
    /// an owner that died): ask the provider before sending again.
    Uncertain { since: UnixMs },
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No record: the caller now owns the message (`InFlight`) and sends it.
    Send,
    /// The record was `Uncertain`, or `InFlight` with an expired lease: the
    /// caller now owns it (`InFlight`, keeping `since`) and must reconcile
    /// with the provider before sending.
    Reconcile { since: UnixMs },
    /// Sent already.
    Accepted { sid: Option<String> },
    /// Another owner holds a live lease: wait for it.
    Busy,
}

/// How an owner leaves its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The provider accepted it: remember for the dedup window.
    Accepted { sid: Option<String> },
    /// The provider may have it: remember as `Uncertain` (keeping `since`)
    /// for the dedup window.
    Uncertain,
    /// Certainly not sent: forget it, so a retry sends.
    Release,
}

/// A rate-limit cell to take: one GCRA bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Which limiter (for the refusal, the metric and the backend's key).
    pub limiter: Limiter,
    pub key: LimitKey,
    /// The emission interval (one cell per `interval`) and the burst.
    pub interval: Duration,
    pub burst: u32,
}

/// The limiters: per channel, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limiter {
    pub channel: crate::delivery::channel::Channel,
    pub name: crate::delivery::limits::LimitName,
}

/// Budget counters to take one unit from: the day's total and the
/// destination country's, each with its cap (0: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetTake {
    /// Days since 1970-01-01 (UTC): the counters' day.
    pub day: u64,
    pub calling_code: u16,
    pub total_cap: u32,
    pub country_cap: u32,
}

/// What [`Store::reserve`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limiter has no cell: retry after `retry_after`.
    Limited {
        limiter: Limiter,
        retry_after: Duration,
    },
    /// The day's budget is used up.
    Budget {
        scope: crate::delivery::budget::BudgetScope,
    },
}

/// What a reservation took, to give back with [`Store::refund`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub cells: Vec<Cell>,
    pub budget: Option<BudgetTake>,
}

/// The budget used so far today (for the gauge and warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetUsed {
    pub total: u32,
    pub country: u32,
}

/// The store could not answer (Redis down or slow). Never carries a key or
/// a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store is unavailable: {0}")]
pub struct StoreError(pub String);
