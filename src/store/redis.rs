//! The Redis backend: state shared by every replica.
//!
//! (Longer than our usual 400 lines, on purpose: the Lua scripts sit next to
//! the Rust that calls them and decodes their answers, so a change to one is
//! seen with the other.)
//!
//! Every operation that reads and writes is one Lua script, run atomically
//! by Redis (sent by EVALSHA, loaded again after a Redis restart), so two
//! replicas asking at once get answers as if they had asked one after the
//! other. Every record carries the instant it stops counting, and reads
//! compare it with "now". Redis's own expiry (PX) only collects what no read
//! would count any more, a minute late ([`GC_MARGIN_MS`]), so clocks that
//! disagree never lose state early: a record past its time, or a TAT that
//! has passed, answers exactly as no record.
//!
//! # Whose clock
//!
//! **The delivery ledger** (`m:` records: claim, settle) is judged by
//! Redis's clock: the claim and settle scripts read `redis.call('TIME')`
//! and compute and compare every time in the record (`since`, the lease,
//! `until`) against it; the caller passes durations (lease, keep), never an
//! instant. So replicas whose wall clocks disagree (an NTP step, a VM that
//! resumed) still agree on whether a lease ran out or a record is still
//! kept: a claim made on one replica is `Busy` for another however far
//! ahead that replica's clock is, and no message is sent twice because of
//! it. `since`, which reconciliation compares with the provider's dates,
//! is Redis's time too (see `crate::provider::reconcile` for the skew
//! allowed). The record format is unchanged. (Scripts that read `TIME` and
//! then write need Redis 5 or newer, where scripts are replicated by their
//! effects.)
//!
//! Tests move time with [`Clock::advance`] instead of sleeping, and Redis's
//! clock cannot be moved: the scripts add the store's clock's test offset
//! ([`Clock::offset`], 0 in production) to `TIME`, sent as `T<ms>` in the
//! script's time argument. That is the one seam, chosen over passing the
//! caller's `now`: `now` is a reading of the very clock that may be wrong,
//! while the offset is only what a test moved (0 in production), so no
//! replica's wall clock enters the judgement. The store's transition tests,
//! which walk through exact instants, build the store with
//! [`RedisStore::judging_by_caller_time`]: the scripts then take the
//! caller's `now` (sent as plain digits) instead of `TIME`, and are
//! otherwise the same.
//!
//! Everything else (unreachable marks, rate-limit TATs, budget days, relay
//! marks, pending codes, records) uses the caller's `now`: the service
//! clock's wall time, read at each call ([`crate::clock`]). The memory
//! store uses the caller's clock for everything, the ledger included.
//!
//! # Keys and values
//!
//! Under `store.redis.key_prefix` (`kpc:` by default), keyed hashes in hex:
//!
//! | key | value |
//! |---|---|
//! | `m:<hash>` | a ledger record: `F\|until\|since\|lease_until\|owner` (in flight), `A\|until` or `A\|until\|sid` (accepted), `U\|until\|since` (uncertain); `F` and `U` end with `\|provider` once a provider was called |
//! | `u:<hash>` | an unreachable recipient: `until\|` or `until\|provider code` |
//! | `l:<channel>:<limiter>:<hash>` | a GCRA cell: its theoretical arrival time, Unix nanoseconds |
//! | `b:<day>:t`, `b:<day>:c:<calling code>` | the day's budget counters |
//! | `r:<hash>` | the inbound relay's marks: a message seen (`until`), a route's hourly count (`until\|count`); also the verify API's hourly check counts |
//! | `v:<hash>` | a pending verification code: `until\|attempts\|sends\|code hash\|seed` (hex) |
//! | `w:<hash>` | a verification code not sent yet: `until\|requests sending it\|sends\|code hash\|seed` (hex) |
//! | `i:<hash>` | a verify `Idempotency-Key`: `until\|P\|body hash` (in progress) or `until\|D\|body hash\|answer` |
//! | `s:<hash>` | a sealed fallback record (`records`): `until\|sealed bytes` (hex) |
//! | `k:<hash>` | a cached Lookup answer (`records`): `until\|answer` |
//!
//! Times in values are Unix milliseconds, except the GCRA's nanoseconds.
//!
//! # Rate limits
//!
//! The GCRA is governor's arithmetic to the nanosecond, so this backend and
//! the memory one (governor itself) answer alike. Lua numbers are doubles,
//! exact to 2^53: Unix nanoseconds do not fit, so a TAT is kept as a
//! decimal string and the script works with `TAT − now`, which fits as long
//! as a bucket's tolerance is under 104 days (`burst` × 3600 s / `per_hour`).
//!
//! # Failures
//!
//! Every call ends within `store.redis.timeout_ms`, connecting included. An
//! error names the operation and the kind of failure, never a key, a value
//! or the URL (which can hold a password). The connection is made on first
//! use, so the service starts while Redis is down; a lost connection is
//! made again on the next call.

mod fraud;
mod records;

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use super::{
    BudgetTake, BudgetUsed, Cell, Claim, Entry, MessageKey, Owner, RecipientKey, Refusal, RelayKey,
    Reservation, Settle, StoreError, UnixMs,
};
use super::{CodeCheck, Idempotency, Pending, PendingCode, VerifyKey};
use crate::clock::Clock;
use crate::config::RedisConfig;
use crate::domain::BudgetScope;

/// A shared Redis: see the module documentation.
pub struct RedisStore {
    client: redis::Client,
    /// Made on first use (and again on the next use after a failed attempt);
    /// once made, it reconnects by itself.
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    /// Whose clock judges the ledger (see the module documentation).
    ledger_time: LedgerTime,
}

/// Whose clock the ledger scripts judge leases and record lifetimes by.
#[derive(Debug, Clone)]
enum LedgerTime {
    /// Redis's `TIME` plus this clock's test offset (0 in production).
    Redis(Clock),
    /// The caller's `now` (the store's transition tests).
    #[cfg(test)]
    Caller,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info holds the password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Redis drops a key this long after the caller's clock stops counting it.
pub(crate) const GC_MARGIN_MS: u64 = 60_000;
/// Budget counters live this long past the end of their UTC day, so a
/// refund just after midnight still finds them.
const BUDGET_MARGIN_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// Lua numbers are doubles: integers are exact below 2^53.
const LUA_EXACT: u64 = (1 << 53) - 1;
/// Expiries are capped here (10 years): Redis refuses ones that overflow.
const MAX_TTL_MS: u64 = 10 * 365 * DAY_MS;

impl RedisStore {
    /// A store on the configured Redis. Nothing is connected yet (the first
    /// call connects, within its timeout; [`RedisStore::ping`] at start says
    /// whether Redis answers). Needs a Tokio runtime when first used.
    pub(crate) fn connect(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        // The client's error could quote the URL: not passed on.
        let client = redis::Client::open(config.url.expose_secret())
            .map_err(|_| StoreError("store.redis.url is not a Redis URL".into()))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            ledger_time: LedgerTime::Redis(Clock::system()),
        })
    }

    /// The ledger is judged by Redis's `TIME` plus `clock`'s test offset
    /// (the service clock: 0 in production, moved by [`Clock::advance`] in
    /// tests). [`RedisStore::connect`] starts with the system clock's.
    pub(crate) fn with_clock(mut self, clock: Clock) -> Self {
        self.ledger_time = LedgerTime::Redis(clock);
        self
    }

    /// For tests of the scripts' transitions at exact instants: the ledger
    /// is judged by the caller's `now` instead of Redis's `TIME`. Never in
    /// production: replicas whose clocks disagree would then disagree on
    /// leases.
    #[cfg(test)]
    pub(crate) fn judging_by_caller_time(mut self) -> Self {
        self.ledger_time = LedgerTime::Caller;
        self
    }

    /// The ledger scripts' time argument: `T<offset ms>` (Redis's `TIME`
    /// plus the test offset) or the caller's `now` (read only in the tests'
    /// caller-time mode).
    #[cfg_attr(not(test), allow(unused_variables))]
    fn ledger_time(&self, now: UnixMs) -> String {
        match &self.ledger_time {
            LedgerTime::Redis(clock) => format!("T{}", clock.offset().as_millis()),
            #[cfg(test)]
            LedgerTime::Caller => now.to_string(),
        }
    }

    /// Runs `op` on the connection, within the timeout, connecting first if
    /// need be. `what` names the operation in errors.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self
                .conn
                .get_or_try_init(|| {
                    // One attempt per connect: the next call tries again, so
                    // no retries pile up behind a Redis that is down, and a
                    // Redis that is back is found at once. Each attempt and
                    // each command is bounded by the timeout.
                    let config = ConnectionManagerConfig::new()
                        .set_number_of_retries(0)
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(self.timeout);
                    ConnectionManager::new_with_config(self.client.clone(), config)
                })
                .await?
                .clone();
            op(conn).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failure(what, &e)),
            Err(_) => Err(StoreError(format!(
                "redis did not answer {what} within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    fn message_key(&self, key: &MessageKey) -> String {
        format!("{}m:{}", self.prefix, hex(key))
    }

    fn recipient_key(&self, key: &RecipientKey) -> String {
        format!("{}u:{}", self.prefix, hex(key))
    }

    fn cell_key(&self, cell: &Cell) -> String {
        format!(
            "{}l:{}:{}:{:016x}",
            self.prefix,
            cell.limiter.channel.as_str(),
            cell.limiter.name.as_str(),
            cell.key
        )
    }

    fn budget_keys(&self, day: u64, calling_code: u16) -> (String, String) {
        (
            format!("{}b:{day}:t", self.prefix),
            format!("{}b:{day}:c:{calling_code}", self.prefix),
        )
    }

    pub(crate) async fn claim(
        &self,
        key: &MessageKey,
        owner: Owner,
        now: UnixMs,
        lease: Duration,
        keep: Duration,
    ) -> Result<Claim, StoreError> {
        let key = self.message_key(key);
        let keep_ms = ttl_ms(keep);
        let time = self.ledger_time(now);
        let answer: String = self
            .run("claim", |mut conn| async move {
                CLAIM
                    .key(key)
                    .arg(time)
                    .arg(ttl_ms(lease))
                    .arg(keep_ms)
                    .arg(keep_ms + GC_MARGIN_MS)
                    .arg(owner_hex(owner))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match answer.as_bytes().first() {
            Some(b'S') => Ok(Claim::Send),
            Some(b'B') => Ok(Claim::Busy),
            Some(b'R') => {
                let (since, provider) = match answer[1..].split_once('|') {
                    Some((since, provider)) => (since, Some(provider.to_owned())),
                    None => (&answer[1..], None),
                };
                since
                    .parse()
                    .map(|since| Claim::Reconcile { since, provider })
                    .map_err(|_| corrupt("claim"))
            }
            // Live by the script's clock (which may not be the caller's).
            Some(b'A') => match parse_entry(&answer, 0) {
                Some(Some(Entry::Accepted { sid })) => Ok(Claim::Accepted { sid }),
                _ => Err(corrupt("claim")),
            },
            _ => Err(corrupt("claim")),
        }
    }

    pub(crate) async fn settle(
        &self,
        key: &MessageKey,
        owner: Owner,
        settle: Settle,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.message_key(key);
        let keep_ms = ttl_ms(keep);
        let time = self.ledger_time(now);
        let (kind, sid, provider) = match settle {
            Settle::Accepted { sid: None } => ("A", String::new(), String::new()),
            Settle::Accepted { sid: Some(sid) } => ("A", format!("|{sid}"), String::new()),
            // The lease as a length: the script adds it to its own now.
            Settle::Renew {
                lease_until,
                provider,
            } => ("N", lease_until.saturating_sub(now).to_string(), provider),
            Settle::Uncertain => ("U", String::new(), String::new()),
            Settle::Release => ("R", String::new(), String::new()),
        };
        let settled: i64 = self
            .run("settle", |mut conn| async move {
                SETTLE
                    .key(key)
                    .arg(time)
                    .arg(owner_hex(owner))
                    .arg(kind)
                    .arg(keep_ms)
                    .arg(keep_ms + GC_MARGIN_MS)
                    .arg(sid)
                    .arg(provider)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(settled == 1)
    }

    /// The ledger record as of now, by the ledger's clock (with Redis's
    /// `TIME`, `now` is not used).
    #[cfg(test)]
    pub(crate) async fn entry(
        &self,
        key: &MessageKey,
        now: UnixMs,
    ) -> Result<Option<Entry>, StoreError> {
        let key = self.message_key(key);
        let time = self.ledger_time(now);
        let (value, now): (String, String) = self
            .run("entry", |mut conn| async move {
                ENTRY.key(key).arg(time).invoke_async(&mut conn).await
            })
            .await?;
        let now: UnixMs = now.parse().map_err(|_| corrupt("entry"))?;
        match value.as_str() {
            "" => Ok(None),
            v => parse_entry(v, now).ok_or_else(|| corrupt("entry")),
        }
    }

    pub(crate) async fn unreachable(
        &self,
        key: &RecipientKey,
        now: UnixMs,
    ) -> Result<Option<Option<u32>>, StoreError> {
        let key = self.recipient_key(key);
        let value: Option<String> = self
            .run("unreachable", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        let Some(value) = value else { return Ok(None) };
        let (until, code) = value
            .split_once('|')
            .ok_or_else(|| corrupt("unreachable"))?;
        let until: UnixMs = until.parse().map_err(|_| corrupt("unreachable"))?;
        if until <= now {
            return Ok(None);
        }
        match code {
            "" => Ok(Some(None)),
            c => c
                .parse()
                .map(|c| Some(Some(c)))
                .map_err(|_| corrupt("unreachable")),
        }
    }

    pub(crate) async fn mark_unreachable(
        &self,
        key: &RecipientKey,
        code: Option<u32>,
        now: UnixMs,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.recipient_key(key);
        let ttl = ttl_ms(ttl);
        let value = match code {
            Some(c) => format!("{}|{c}", now.saturating_add(ttl)),
            None => format!("{}|", now.saturating_add(ttl)),
        };
        self.run("mark_unreachable", |mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl + GC_MARGIN_MS)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub(crate) async fn reserve(
        &self,
        cells: &[Cell],
        budget: Option<BudgetTake>,
        now: UnixMs,
    ) -> Result<Result<Reservation, Refusal>, StoreError> {
        if cells.is_empty() && budget.is_none() {
            return Ok(Ok(Reservation {
                cells: Vec::new(),
                budget: None,
                used: None,
            }));
        }
        let mut script = RESERVE.prepare_invoke();
        script.arg(now).arg(cells.len());
        for cell in cells {
            let (t, tau) = gcra(cell);
            script.key(self.cell_key(cell)).arg(t).arg(tau);
        }
        // The number's trust is read in the same script: a trusted number
        // skips the cells that say so, without a round trip of its own.
        let exempt = cells.iter().position(|c| c.unless_trusted.is_some());
        match exempt.and_then(|i| cells[i].unless_trusted) {
            Some(number) => {
                script
                    .key(self.trust_key(number))
                    .arg(exempt.map_or(0, |i| i + 1));
            }
            None => {
                script.arg(0);
            }
        }
        match budget {
            Some(b) => {
                let (total, country) = self.budget_keys(b.day, b.calling_code);
                script
                    .key(total)
                    .key(country)
                    .arg(b.units.max(1))
                    .arg(b.total_cap)
                    .arg(b.country_cap)
                    .arg(budget_ttl_ms(b.day, now));
            }
            None => {
                script.arg(0);
            }
        }
        let (answer, which, retry_ns, total, country): (i64, i64, u64, u32, u32) = self
            .run("reserve", |mut conn| async move {
                script.invoke_async(&mut conn).await
            })
            .await?;
        match answer {
            // `which`: 1 when the trusted number's exempt cells were skipped.
            0 => Ok(Ok(Reservation {
                cells: cells
                    .iter()
                    .filter(|c| which != 1 || c.unless_trusted.is_none())
                    .copied()
                    .collect(),
                budget,
                used: budget.map(|_| BudgetUsed { total, country }),
            })),
            1 => {
                let cell = usize::try_from(which)
                    .ok()
                    .and_then(|i| cells.get(i.wrapping_sub(1)))
                    .ok_or_else(|| corrupt("reserve"))?;
                Ok(Err(Refusal::Limited {
                    limiter: cell.limiter,
                    retry_after: Duration::from_nanos(retry_ns),
                }))
            }
            2 => Ok(Err(Refusal::Budget {
                scope: if which == 1 {
                    BudgetScope::Total
                } else {
                    BudgetScope::Country
                },
            })),
            _ => Err(corrupt("reserve")),
        }
    }

    pub(crate) async fn refund(
        &self,
        reservation: &Reservation,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        if reservation.cells.is_empty() && reservation.budget.is_none() {
            return Ok(());
        }
        let mut script = REFUND.prepare_invoke();
        script.arg(now).arg(reservation.cells.len());
        for cell in &reservation.cells {
            let (t, _) = gcra(cell);
            script.key(self.cell_key(cell)).arg(t);
        }
        match reservation.budget {
            Some(b) => {
                let (total, country) = self.budget_keys(b.day, b.calling_code);
                script.key(total).key(country).arg(b.units.max(1));
            }
            None => {
                script.arg(0);
            }
        }
        let _refunded: i64 = self
            .run("refund", |mut conn| async move {
                script.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn budget_used(
        &self,
        day: u64,
        calling_code: u16,
    ) -> Result<BudgetUsed, StoreError> {
        let (total, country) = self.budget_keys(day, calling_code);
        let (total, country): (Option<u64>, Option<u64>) = self
            .run("budget_used", |mut conn| async move {
                redis::cmd("MGET")
                    .arg(total)
                    .arg(country)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let count = |c: Option<u64>| u32::try_from(c.unwrap_or(0)).unwrap_or(u32::MAX);
        Ok(BudgetUsed {
            total: count(total),
            country: count(country),
        })
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }
}

/// What went wrong, in words that hold no key, no value and no URL: the
/// operation and the kind of failure only (the error's own text can quote a
/// server message or an address).
fn failure(what: &str, e: &RedisError) -> StoreError {
    let how = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_connection_dropped() {
        "connection lost".to_owned()
    } else {
        // Variant names only (IoError, ResponseError, AuthenticationFailed...).
        format!("{:?}", e.kind())
    };
    StoreError(format!("redis {what} failed: {how}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError(format!("redis {what}: a stored record could not be read"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn owner_hex(owner: Owner) -> String {
    format!("{:032x}", owner.0)
}

/// A duration as an expiry: whole milliseconds, rounded up (so a positive
/// duration never becomes "no time"), at least 1 (Redis refuses 0).
fn ttl_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// Governor's emission interval `t` and tolerance `tau`, in nanoseconds
/// (`t` at least 1 ns, as governor does; both within what Lua counts
/// exactly).
fn gcra(cell: &Cell) -> (u64, u64) {
    let t = u64::try_from(cell.interval.as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, LUA_EXACT);
    let tau = t
        .saturating_mul(u64::from(cell.burst.max(1) - 1))
        .min(LUA_EXACT);
    (t, tau)
}

/// The budget counters of `day` live until the end of that UTC day, plus a
/// margin.
fn budget_ttl_ms(day: u64, now: UnixMs) -> u64 {
    day.saturating_add(1)
        .saturating_mul(DAY_MS)
        .saturating_sub(now)
        .saturating_add(BUDGET_MARGIN_MS)
        .min(MAX_TTL_MS)
}

/// A ledger record as of `now`: `None` (outer) when it cannot be read,
/// `Some(None)` when it no longer counts, an in-flight record whose lease
/// ran out as `Uncertain`.
fn parse_entry(value: &str, now: UnixMs) -> Option<Option<Entry>> {
    let mut parts = value.splitn(3, '|');
    let kind = parts.next()?;
    let until: UnixMs = parts.next()?.parse().ok()?;
    let rest = parts.next();
    if until <= now {
        return Some(None);
    }
    let entry = match kind {
        "F" => {
            let mut f = rest?.split('|');
            let since: UnixMs = f.next()?.parse().ok()?;
            let lease_until: UnixMs = f.next()?.parse().ok()?;
            let owner = Owner(u128::from_str_radix(f.next()?, 16).ok()?);
            let provider = f.next().map(str::to_owned);
            if f.next().is_some() {
                return None;
            }
            if lease_until <= now {
                Entry::Uncertain { since, provider }
            } else {
                Entry::InFlight {
                    owner,
                    since,
                    lease_until,
                    provider,
                }
            }
        }
        "A" => Entry::Accepted {
            sid: rest.map(str::to_owned),
        },
        "U" => {
            let (since, provider) = match rest?.split_once('|') {
                Some((since, provider)) => (since, Some(provider.to_owned())),
                None => (rest?, None),
            };
            Entry::Uncertain {
                since: since.parse().ok()?,
                provider,
            }
        }
        _ => return None,
    };
    Some(Some(entry))
}

/// Shared by the scripts: the ledger's now (ms) from the time argument:
/// `T<offset>` is Redis's `TIME` plus the test offset, plain digits are the
/// caller's `now` (see the module documentation); `ms(n)` writes a time
/// as digits. Then a ledger record's kind, `until` and the rest, or
/// nothing if there is none or it no longer counts at `now`.
const LEDGER_READ: &str = r#"
local function ledger_now(arg)
  local offset = string.match(arg, '^T(%d+)$')
  if not offset then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(offset)
end
local function ms(n)
  return string.format('%.0f', n)
end
local function ledger(key, now)
  local v = redis.call('GET', key)
  if not v then return nil end
  local kind, untl, rest = string.match(v, '^(%u)|(%d+)(.*)$')
  if not kind then return redis.error_reply('unreadable ledger record') end
  if tonumber(untl) <= now then return nil end
  return kind, rest, v
end
"#;

/// KEYS: the record. ARGV: time (see [`LEDGER_READ`]), lease (ms), keep
/// (ms), expiry (ms), owner. Answers `S` (send), `B` (busy), `R<since>` or
/// `R<since>|<provider>` (reconcile) or the accepted record itself. A record
/// taken over keeps its provider, so an owner that dies before renewing
/// loses nothing.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LEDGER_READ}{}",
        r#"
local now = ledger_now(ARGV[1])
local function hold(since, prov)
  redis.call('SET', KEYS[1],
    'F|' .. ms(now + tonumber(ARGV[3])) .. '|' .. since .. '|' .. ms(now + tonumber(ARGV[2]))
      .. '|' .. ARGV[5] .. prov, 'PX', ARGV[4])
end
local kind, rest, v = ledger(KEYS[1], now)
if type(kind) == 'table' then return kind end
if not kind then
  hold(ms(now), '')
  return 'S'
end
if kind == 'A' then return v end
local since, prov
if kind == 'F' then
  local lease
  since, lease, prov = string.match(rest, '^|(%d+)|(%d+)|%x+(.*)$')
  if not since then return redis.error_reply('unreadable ledger record') end
  if tonumber(lease) > now then return 'B' end
elseif kind == 'U' then
  since, prov = string.match(rest, '^|(%d+)(.*)$')
  if not since then return redis.error_reply('unreadable ledger record') end
else
  return redis.error_reply('unreadable ledger record')
end
if prov ~= '' and not string.match(prov, '^|[%w_%-]+$') then
  return redis.error_reply('unreadable ledger record')
end
hold(since, prov)
return 'R' .. since .. prov
"#
    ))
});

/// KEYS: the record. ARGV: time (see [`LEDGER_READ`]), owner,
/// `A`/`U`/`R`/`N`, keep (ms: the record is kept until now + keep), expiry
/// (ms), and for `A` an empty string (no sid) or `|sid`, for `N` (renew)
/// the new lease's length (ms, from now); then, for `N`, the provider about
/// to be called (kept in the record, and in the `U` it may become). Answers
/// 1 if it settled, 0 if the record is no longer this owner's. `A` is
/// written whoever holds the record (the message was sent), unless it is
/// accepted already.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LEDGER_READ}{}",
        r#"
local now = ledger_now(ARGV[1])
local untl = ms(now + tonumber(ARGV[4]))
local kind, rest = ledger(KEYS[1], now)
if type(kind) == 'table' then return kind end
if ARGV[3] == 'A' then
  if kind ~= 'A' then
    redis.call('SET', KEYS[1], 'A|' .. untl .. ARGV[6], 'PX', ARGV[5])
  end
  return 1
end
if kind ~= 'F' then return 0 end
local since, owner, prov = string.match(rest, '^|(%d+)|%d+|(%x+)(.*)$')
if owner ~= ARGV[2] then return 0 end
if ARGV[3] == 'N' then
  redis.call('SET', KEYS[1],
    'F|' .. untl .. '|' .. since .. '|' .. ms(now + tonumber(ARGV[6])) .. '|' .. owner .. '|'
      .. ARGV[7], 'PX', ARGV[5])
elseif ARGV[3] == 'U' then
  redis.call('SET', KEYS[1], 'U|' .. untl .. '|' .. since .. prov, 'PX', ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
return 1
"#
    ))
});

/// KEYS: the record. ARGV: time (see [`LEDGER_READ`]). Answers the record
/// (or an empty string) and the ledger's now (ms), to read it as of then.
#[cfg(test)]
static ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LEDGER_READ}{}",
        r#"
return {redis.call('GET', KEYS[1]) or '', ms(ledger_now(ARGV[1]))}
"#
    ))
});

/// A GCRA cell's TAT (Unix ns as a decimal string) minus `now` (ms), in ns,
/// exact while the difference is under 2^53; and back. The key expires
/// when the TAT passes, plus [`GC_MARGIN_MS`] (`GC_MARGIN_MS` is replaced
/// by its value).
const TAT: &str = r#"
local E6 = 1000000
local function tat_minus(s, now)
  local ms, rem
  if #s > 6 then
    ms = tonumber(string.sub(s, 1, -7))
    rem = tonumber(string.sub(s, -6))
  else
    ms = 0
    rem = tonumber(s)
  end
  if not ms or not rem then return redis.error_reply('unreadable rate-limit cell') end
  return (ms - now) * E6 + rem
end
local function set_tat(key, now, d)
  local ms = now + math.floor(d / E6)
  local rem = d % E6
  redis.call('SET', key, string.format('%.0f', ms) .. string.format('%06d', rem),
    'PX', string.format('%.0f', math.ceil(d / E6) + GC_MARGIN_MS))
end
"#;

/// KEYS: the cells, then (with an exempt cell) the number's trust mark,
/// then (with a budget) the day's total and country counters. ARGV: now
/// (ms), the number of cells, `t` and `tau` (ns) of each cell, the exempt
/// cell (from 1; 0 for none: it is skipped while the trust mark is later
/// than now), then the units to take (at least 1) with total cap, country
/// cap and the counters' expiry (ms), or 0. Answers {0, 0, 0, total,
/// country} (taken; the day's counters after the take, 0 without a
/// budget), {0, 1, ...} (taken, the exempt cell skipped), {1, cell (from
/// 1), retry after (ns), 0, 0} or {2, 1 (total) / 2 (country), 0, 0, 0}.
/// Writes only when it takes.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        TAT.replace("GC_MARGIN_MS", &GC_MARGIN_MS.to_string()),
        r#"
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local exempt = tonumber(ARGV[3 + 2 * n])
local k = n + 1
local skip = 0
if exempt > 0 then
  local until_ms = tonumber(redis.call('GET', KEYS[k]) or '0')
  if until_ms and until_ms > now then skip = exempt end
  k = k + 1
end
local pending = {}
for i = 1, n do
  if i ~= skip then
    local key = KEYS[i]
    local t = tonumber(ARGV[1 + 2 * i])
    local tau = tonumber(ARGV[2 + 2 * i])
    local d = pending[key]
    if not d then
      local s = redis.call('GET', key)
      d = 0
      if s then
        d = tat_minus(s, now)
        if type(d) == 'table' then return d end
        if d < 0 then d = 0 end
      end
    end
    if d - tau > 0 then return {1, i, d - tau, 0, 0} end
    pending[key] = d + t
  end
end
local b = 4 + 2 * n
local units = tonumber(ARGV[b])
local budget = units > 0
local total, country = 0, 0
if budget then
  total = tonumber(redis.call('GET', KEYS[k]) or '0')
  country = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  local total_cap = tonumber(ARGV[b + 1])
  local country_cap = tonumber(ARGV[b + 2])
  if total_cap > 0 and total + units > total_cap then return {2, 1, 0, 0, 0} end
  if country_cap > 0 and country + units > country_cap then return {2, 2, 0, 0, 0} end
  total, country = total + units, country + units
end
for i = 1, n do
  if i ~= skip then set_tat(KEYS[i], now, pending[KEYS[i]]) end
end
if budget then
  for j = k, k + 1 do
    redis.call('INCRBY', KEYS[j], units)
    redis.call('PEXPIRE', KEYS[j], ARGV[b + 3])
  end
end
if skip > 0 then return {0, 1, 0, total, country} end
return {0, 0, 0, total, country}
"#
    ))
});

/// KEYS: as for reserve. ARGV: now (ms), the number of cells, `t` (ns) of
/// each cell, then the units of budget to give back (0: none).
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        TAT.replace("GC_MARGIN_MS", &GC_MARGIN_MS.to_string()),
        r#"
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i = 1, n do
  local s = redis.call('GET', KEYS[i])
  if s then
    local d = tat_minus(s, now)
    if type(d) == 'table' then return d end
    d = d - tonumber(ARGV[2 + i])
    if d <= 0 then
      redis.call('DEL', KEYS[i])
    else
      set_tat(KEYS[i], now, d)
    end
  end
end
local units = tonumber(ARGV[3 + n])
if units > 0 then
  for j = n + 1, n + 2 do
    local c = tonumber(redis.call('GET', KEYS[j]) or '0')
    if c and c > 0 then redis.call('DECRBY', KEYS[j], math.min(c, units)) end
  end
end
return 1
"#
    ))
});

/// The inbound relay's marks (`src/relay/`), under `r:<hash>`: a message
/// seen (`until`), a route's hourly count (`until|count`). Like the ledger,
/// each is read against the caller's `now`, and Redis drops it a minute
/// after it stops counting.
impl RedisStore {
    fn relay_key(&self, key: &RelayKey) -> String {
        format!("{}r:{}", self.prefix, hex(key))
    }

    pub(crate) async fn relay_first_seen(
        &self,
        key: &RelayKey,
        now: UnixMs,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.relay_key(key);
        let keep_ms = ttl_ms(keep);
        let first: i64 = self
            .run("relay_first_seen", |mut conn| async move {
                RELAY_SEEN
                    .key(key)
                    .arg(now)
                    .arg(now.saturating_add(keep_ms))
                    .arg(keep_ms + GC_MARGIN_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(first == 1)
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
        let key = self.relay_key(key);
        let px = until.saturating_sub(now).clamp(1, MAX_TTL_MS) + GC_MARGIN_MS;
        let taken: i64 = self
            .run("relay_take", |mut conn| async move {
                RELAY_TAKE
                    .key(key)
                    .arg(now)
                    .arg(limit)
                    .arg(until)
                    .arg(px)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(u32::try_from(taken).ok().filter(|n| *n > 0))
    }
}

/// KEYS: the mark. ARGV: now, until, keep (ms). 1 if it was not seen (and
/// is marked now), 0 if it was.
static RELAY_SEEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#,
    )
});

/// KEYS: the counter. ARGV: now, limit, until, keep (ms). The count after
/// taking one, or 0 if `limit` were taken already.
static RELAY_TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local n = 0
local v = redis.call('GET', KEYS[1])
if v then
  local u, c = string.match(v, '^(%d+)|(%d+)$')
  if u and tonumber(u) > now then n = tonumber(c) end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. (n + 1), 'PX', ARGV[4])
return n + 1
"#,
    )
});

/// The verify API's pending codes (`src/verify/`), under `v:<hash>`:
/// `until|attempts|sends|code hash|seed`. Each call is one script, so of
/// concurrent checks of one code (on any replicas) exactly one approves.
impl RedisStore {
    fn verify_key(&self, key: &VerifyKey) -> String {
        format!("{}v:{}", self.prefix, hex(key))
    }

    /// Where a code waits for its first accepted send (not checkable).
    fn unsent_key(&self, key: &VerifyKey) -> String {
        format!("{}w:{}", self.prefix, hex(key))
    }

    fn idempotency_key(&self, key: &VerifyKey) -> String {
        format!("{}i:{}", self.prefix, hex(key))
    }

    pub(crate) async fn verify_sent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let (sent, unsent) = (self.verify_key(key), self.unsent_key(key));
        let hash = hex(hash);
        let moved: i64 = self
            .run("verify_sent", |mut conn| async move {
                VERIFY_SENT
                    .key(sent)
                    .key(unsent)
                    .arg(now)
                    .arg(hash)
                    .arg(GC_MARGIN_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(moved == 1)
    }

    pub(crate) async fn verify_unsent(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let unsent = self.unsent_key(key);
        let hash = hex(hash);
        self.run("verify_unsent", |mut conn| async move {
            VERIFY_UNSENT
                .key(unsent)
                .arg(now)
                .arg(hash)
                .arg(GC_MARGIN_MS)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn verify_idempotency_begin(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        now: UnixMs,
        lease_until: UnixMs,
    ) -> Result<Idempotency, StoreError> {
        let key = self.idempotency_key(key);
        let value = format!("{lease_until}|P|{}", hex(fingerprint));
        let px = lease_until.saturating_sub(now).clamp(1, MAX_TTL_MS) + GC_MARGIN_MS;
        let found: Vec<String> = self
            .run("verify_idempotency_begin", |mut conn| async move {
                IDEMPOTENCY_BEGIN
                    .key(key)
                    .arg(now)
                    .arg(value)
                    .arg(px)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let bad = || corrupt("verify_idempotency_begin");
        match found.as_slice() {
            [] => Ok(Idempotency::New),
            [state, fp, answer] => {
                let fingerprint = unhex::<32>(fp).ok_or_else(bad)?;
                match state.as_str() {
                    "P" => Ok(Idempotency::InProgress { fingerprint }),
                    "D" => Ok(Idempotency::Done {
                        fingerprint,
                        answer: answer.clone(),
                    }),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }

    pub(crate) async fn verify_idempotency_finish(
        &self,
        key: &VerifyKey,
        fingerprint: &[u8; 32],
        answer: Option<&str>,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        let key = self.idempotency_key(key);
        let fp = hex(fingerprint);
        // An empty value: forget the key.
        let value = answer
            .map(|a| format!("{until}|D|{fp}|{a}"))
            .unwrap_or_default();
        let px = until.saturating_sub(now).clamp(1, MAX_TTL_MS) + GC_MARGIN_MS;
        self.run("verify_idempotency_finish", |mut conn| async move {
            IDEMPOTENCY_FINISH
                .key(key)
                .arg(now)
                .arg(fp)
                .arg(value)
                .arg(px)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn verify_pending(
        &self,
        key: &VerifyKey,
        fresh: &PendingCode,
        now: UnixMs,
    ) -> Result<Pending, StoreError> {
        let unsent = self.unsent_key(key);
        let key = self.verify_key(key);
        let value = format!(
            "{}|1|1|{}|{}",
            fresh.expires_at,
            hex(&fresh.hash),
            hex(&fresh.seed)
        );
        let px = fresh.expires_at.saturating_sub(now).clamp(1, MAX_TTL_MS) + GC_MARGIN_MS;
        let stored: String = self
            .run("verify_pending", |mut conn| async move {
                VERIFY_PENDING
                    .key(key)
                    .key(unsent)
                    .arg(now)
                    .arg(value)
                    .arg(px)
                    .arg(GC_MARGIN_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_pending(&stored).ok_or_else(|| corrupt("verify_pending"))
    }

    pub(crate) async fn verify_check(
        &self,
        key: &VerifyKey,
        hash: &[u8; 32],
        max_attempts: u32,
        now: UnixMs,
    ) -> Result<CodeCheck, StoreError> {
        let key = self.verify_key(key);
        let hash = hex(hash);
        let answer: Vec<i64> = self
            .run("verify_check", |mut conn| async move {
                VERIFY_CHECK
                    .key(key)
                    .arg(now)
                    .arg(hash)
                    .arg(max_attempts)
                    .arg(GC_MARGIN_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match answer.as_slice() {
            [0] => Ok(CodeCheck::NoPendingCode),
            [1] => Ok(CodeCheck::Approved),
            [2, left] => Ok(CodeCheck::Mismatch {
                attempts_left: u32::try_from(*left).map_err(|_| corrupt("verify_check"))?,
            }),
            [3] => Ok(CodeCheck::TooManyAttempts),
            _ => Err(corrupt("verify_check")),
        }
    }
}

/// A pending code's value, as [`VERIFY_PENDING`] returns it.
fn parse_pending(value: &str) -> Option<Pending> {
    let mut parts = value.split('|');
    let expires_at = parts.next()?.parse().ok()?;
    let _attempts: u32 = parts.next()?.parse().ok()?;
    let sends = parts.next()?.parse().ok()?;
    let hash = unhex::<32>(parts.next()?)?;
    let seed = unhex::<16>(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(Pending {
        code: PendingCode {
            hash,
            seed,
            expires_at,
        },
        sends,
    })
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// KEYS: the pending code, the unsent code. ARGV: now, the fresh value
/// (`until|1|1|hash|seed`), its expiry (ms), the GC margin (ms). The live
/// pending value with its send count raised, else the live unsent one with
/// its send count and requests raised, else the fresh one stored as
/// unsent; returns what is stored.
static VERIFY_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if v then
  local u, a, s, rest = string.match(v, '^(%d+)|(%d+)|(%d+)|(.+)$')
  if u and tonumber(u) > now then
    local nv = u .. '|' .. a .. '|' .. (tonumber(s) + 1) .. '|' .. rest
    redis.call('SET', KEYS[1], nv, 'PX', tonumber(u) - now + tonumber(ARGV[4]))
    return nv
  end
end
local w = redis.call('GET', KEYS[2])
if w then
  local u, f, s, rest = string.match(w, '^(%d+)|(%d+)|(%d+)|(.+)$')
  if u and tonumber(u) > now then
    local nw = u .. '|' .. (tonumber(f) + 1) .. '|' .. (tonumber(s) + 1) .. '|' .. rest
    redis.call('SET', KEYS[2], nw, 'PX', tonumber(u) - now + tonumber(ARGV[4]))
    return nw
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
"#,
    )
});

/// KEYS: the pending code, the unsent code. ARGV: now, the sent code's hash
/// (hex), the GC margin (ms). 1 if the unsent code was that one and is now
/// pending (checkable, no attempts), 0 if there was none, another, or it
/// expired.
static VERIFY_SENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local w = redis.call('GET', KEYS[2])
if not w then return 0 end
local u, f, s, h, seed = string.match(w, '^(%d+)|(%d+)|(%d+)|(%x+)|(%x+)$')
if not u or h ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
if tonumber(u) <= now then return 0 end
redis.call('SET', KEYS[1], u .. '|0|' .. s .. '|' .. h .. '|' .. seed,
  'PX', tonumber(u) - now + tonumber(ARGV[3]))
return 1
"#,
    )
});

/// KEYS: the unsent code. ARGV: now, the refused code's hash (hex), the GC
/// margin (ms). One request fewer is sending it; with none left it is
/// dropped. 1 if it was that code, 0 if not.
static VERIFY_UNSENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local w = redis.call('GET', KEYS[1])
if not w then return 0 end
local u, f, rest = string.match(w, '^(%d+)|(%d+)|(.+)$')
local h = rest and string.match(rest, '^%d+|(%x+)|')
if not u or h ~= ARGV[2] then return 0 end
if tonumber(f) <= 1 or tonumber(u) <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], u .. '|' .. (tonumber(f) - 1) .. '|' .. rest,
    'PX', tonumber(u) - now + tonumber(ARGV[3]))
end
return 1
"#,
    )
});

/// KEYS: the idempotency key. ARGV: now, the in-progress value
/// (`lease_until|P|body hash`), its expiry (ms). {}: unknown, now in
/// progress; {state, body hash, answer}: what is recorded.
static IDEMPOTENCY_BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if v then
  local u, st, fp, rest = string.match(v, '^(%d+)|(%u)|(%x+)(.*)$')
  if u and tonumber(u) > now then
    return {st, fp, string.sub(rest, 2)}
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {}
"#,
    )
});

/// KEYS: the idempotency key. ARGV: now, the body hash, the answer value
/// (`until|D|body hash|answer`, or empty: forget), its expiry (ms). Only
/// if the key is in progress for that body. 1 if done, 0 if not.
static IDEMPOTENCY_FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local u, st, fp = string.match(v, '^(%d+)|(%u)|(%x+)$')
if not u or st ~= 'P' or fp ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"#,
    )
});

/// KEYS: the pending code. ARGV: now, the checked code's hash (hex), the
/// attempts allowed, the GC margin (ms). {0}: nothing pending; {1}:
/// approved (and removed); {2, left}: wrong; {3}: wrong, the last attempt
/// (removed); {-1}: a record that cannot be read. The hashes are compared
/// byte by byte over their whole length (XOR, OR), never with `==`, so the
/// time taken does not depend on where they differ.
static VERIFY_CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local u, a, s, h, seed = string.match(v, '^(%d+)|(%d+)|(%d+)|(%x+)|(%x+)$')
if not u then return {-1} end
if tonumber(u) <= now then return {0} end
local c = ARGV[2]
local diff = 0
if #c ~= #h then diff = 1 end
for i = 1, #h do
  diff = bit.bor(diff, bit.bxor(string.byte(h, i), string.byte(c, i) or 0))
end
if diff == 0 then
  redis.call('DEL', KEYS[1])
  return {1}
end
local attempts = tonumber(a) + 1
local max = tonumber(ARGV[3])
if attempts >= max then
  redis.call('DEL', KEYS[1])
  return {3}
end
redis.call('SET', KEYS[1], u .. '|' .. attempts .. '|' .. s .. '|' .. h .. '|' .. seed,
  'PX', tonumber(u) - now + tonumber(ARGV[4]))
return {2, max - attempts}
"#,
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_records_read_back_as_of_now() {
        let owner = Owner(0xabc);
        let f = format!("F|100|10|50|{}", owner_hex(owner));
        assert_eq!(
            parse_entry(&f, 20),
            Some(Some(Entry::InFlight {
                owner,
                since: 10,
                lease_until: 50,
                provider: None
            }))
        );
        assert_eq!(
            parse_entry(&f, 50),
            Some(Some(Entry::Uncertain {
                since: 10,
                provider: None
            }))
        );
        assert_eq!(parse_entry(&f, 100), Some(None));
        assert_eq!(
            parse_entry("A|100", 0),
            Some(Some(Entry::Accepted { sid: None }))
        );
        assert_eq!(
            parse_entry("A|100|SM|x", 0),
            Some(Some(Entry::Accepted {
                sid: Some("SM|x".into())
            }))
        );
        assert_eq!(
            parse_entry("U|100|7", 0),
            Some(Some(Entry::Uncertain {
                since: 7,
                provider: None
            }))
        );
        // A record names the provider that may have the message.
        assert_eq!(
            parse_entry(&format!("{f}|signalwire"), 50),
            Some(Some(Entry::Uncertain {
                since: 10,
                provider: Some("signalwire".into())
            }))
        );
        assert_eq!(
            parse_entry("U|100|7|twilio", 0),
            Some(Some(Entry::Uncertain {
                since: 7,
                provider: Some("twilio".into())
            }))
        );
        assert_eq!(parse_entry("X|100|7", 0), None);
        assert_eq!(parse_entry("F|100|7", 0), None);
    }

    #[test]
    fn durations_become_expiries_that_redis_accepts() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
        // End of day 1 is 172_800_000.
        assert_eq!(budget_ttl_ms(1, 172_000_000), 800_000 + BUDGET_MARGIN_MS);
        assert_eq!(budget_ttl_ms(0, 172_000_000), BUDGET_MARGIN_MS);
    }
}
