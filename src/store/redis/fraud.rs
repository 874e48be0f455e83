//! The fraud guard's counters in Redis: the shapes and windows of
//! `store::fraud`, in one Lua script so that a send or a confirmation is
//! counted and read back atomically, and every replica sees the same
//! counts.
//!
//! | key | value |
//! |---|---|
//! | `f:c:<calling code>:…`, `f:p:<prefix hash>:…` | a country's or prefix's counters: |
//! | `…:s:<slot>` | hash `s` (sent), `c` (confirmed) of one 5-minute slot |
//! | `…:h:<hour>` | confirmations in one clock hour |
//! | `…:d:<day>` | the day's busiest hour of confirmations |
//! | `…:x` | suspect until (Unix ms) |
//! | `f:n:<number hash>` | hash `n` (codes sent to the number and not yet confirmed), `u` (until when they count) |
//! | `f:t:<number hash>` | the number confirmed a code: trusted until (Unix ms) |
//!
//! The keys a script touches are derived in the script from the four it is
//! given (country, prefix, number, trust), so one Redis, not a cluster, serves them.

use std::sync::LazyLock;

use redis::Script;

use super::{corrupt, RedisStore, GC_MARGIN_MS};
use crate::store::fraud::{
    Confirmed, FraudKeys, FraudScope, Tallies, Tally, DAY_MS, HOUR_MS, NUMBER_TTL_MS, PEAK_DAYS,
    SLOTS, SLOT_MS, TRUSTED_MS,
};
use crate::store::{LimitKey, StoreError, UnixMs};

/// What the script does besides reading.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Sent,
    Confirmed,
    Mark(FraudScope, UnixMs),
}

impl RedisStore {
    pub(crate) async fn fraud_tallies(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        Ok(self.fraud(keys, Op::Read, now).await?.0)
    }

    pub(crate) async fn fraud_record_sent(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Tallies, StoreError> {
        Ok(self.fraud(keys, Op::Sent, now).await?.0)
    }

    pub(crate) async fn fraud_record_confirmed(
        &self,
        keys: &FraudKeys,
        now: UnixMs,
    ) -> Result<Confirmed, StoreError> {
        let (tallies, counted) = self.fraud(keys, Op::Confirmed, now).await?;
        Ok(if counted {
            Confirmed::Counted(tallies)
        } else {
            Confirmed::NeverSent
        })
    }

    pub(crate) async fn fraud_mark_suspect(
        &self,
        keys: &FraudKeys,
        scope: FraudScope,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.fraud(keys, Op::Mark(scope, until), now).await?;
        Ok(())
    }

    /// Whether `number` confirmed a code lately (`fraud::TRUSTED_MS`).
    #[cfg(test)]
    pub(crate) async fn number_trusted(
        &self,
        number: LimitKey,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let key = self.trust_key(number);
        let until: Option<u64> = self
            .run("number_trusted", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(until.is_some_and(|u| u > now))
    }

    pub(super) fn trust_key(&self, number: LimitKey) -> String {
        format!("{}f:t:{:016x}", self.prefix, number)
    }

    async fn fraud(
        &self,
        keys: &FraudKeys,
        op: Op,
        now: UnixMs,
    ) -> Result<(Tallies, bool), StoreError> {
        let mut script = FRAUD.prepare_invoke();
        script
            .key(format!("{}f:c:{}", self.prefix, keys.calling_code))
            .key(format!("{}f:p:{:016x}", self.prefix, keys.prefix))
            .key(format!("{}f:n:{:016x}", self.prefix, keys.number))
            .key(self.trust_key(keys.number))
            .arg(now);
        match op {
            Op::Read => script.arg("r").arg(0).arg(0),
            Op::Sent => script.arg("s").arg(0).arg(0),
            Op::Confirmed => script.arg("c").arg(0).arg(0),
            Op::Mark(scope, until) => script
                .arg("x")
                .arg(match scope {
                    FraudScope::Country => 1,
                    FraudScope::Prefix => 2,
                })
                .arg(until),
        };
        let v: Vec<u64> = self
            .run("fraud", |mut conn| async move {
                script.invoke_async(&mut conn).await
            })
            .await?;
        // Per scope: sent, confirmed, suspect-until, then each day's
        // busiest hour, oldest first; then counted and trusted.
        const PER_SCOPE: usize = 3 + PEAK_DAYS as usize;
        if v.len() != 2 * PER_SCOPE + 2 {
            return Err(corrupt("fraud"));
        }
        let small = |n: u64| n.min(u32::MAX.into()) as u32;
        let tally = |s: &[u64]| {
            let mut daily_peaks = [0; PEAK_DAYS as usize];
            for (peak, v) in daily_peaks.iter_mut().zip(&s[3..]) {
                *peak = small(*v);
            }
            Tally {
                sent: small(s[0]),
                confirmed: small(s[1]),
                peak_confirmed: daily_peaks.iter().copied().max().unwrap_or(0),
                daily_peaks,
                suspect_until: s[2],
            }
        };
        Ok((
            Tallies {
                country: tally(&v[..PER_SCOPE]),
                prefix: tally(&v[PER_SCOPE..2 * PER_SCOPE]),
                number_trusted: v[2 * PER_SCOPE + 1] == 1,
            },
            v[2 * PER_SCOPE] == 1,
        ))
    }
}

/// KEYS: the country's base, the prefix's base, the number's key, the
/// number's trust key. ARGV: now (ms), the operation (`r` read, `s` sent,
/// `c` confirmed, `x` mark suspect), for `x` the scope (1 country, 2
/// prefix) and until when. Answers, for the country then the prefix, sent
/// and confirmed in the rolling hour, suspect-until and the busiest hour of
/// each of the 14 days, oldest first; then 1, or 0 for a confirmation of a
/// number with no code outstanding (not counted); then 1 if the number is
/// trusted (confirmed a code within `TRUSTED_MS`).
static FRAUD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &r#"
local now = tonumber(ARGV[1])
local op = ARGV[2]
local SLOT, SLOTS, HOUR, DAY, DAYS, NUMBER, GC, TRUSTED = SLOT_MS, SLOTS_N, HOUR_MS, DAY_MS, PEAK_DAYS, NUMBER_TTL_MS, GC_MARGIN_MS, TRUSTED_MS_N
local slot = math.floor(now / SLOT)
local hour = math.floor(now / HOUR)
local day = math.floor(now / DAY)
local counted = 1
local function outstanding()
  local v = redis.call('HMGET', KEYS[3], 'n', 'u')
  local n, u = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if u <= now then n = 0 end
  return n
end
if op == 's' then
  redis.call('HSET', KEYS[3], 'n', outstanding() + 1, 'u', now + NUMBER)
  redis.call('PEXPIRE', KEYS[3], NUMBER + GC)
elseif op == 'c' then
  local n = outstanding()
  if n <= 0 then
    counted = 0
  elseif n == 1 then
    redis.call('DEL', KEYS[3])
  else
    redis.call('HSET', KEYS[3], 'n', n - 1)
  end
  if counted == 1 then
    redis.call('SET', KEYS[4], string.format('%.0f', now + TRUSTED), 'PX', TRUSTED + GC)
  end
elseif op == 'x' then
  local key = KEYS[tonumber(ARGV[3])] .. ':x'
  local untl = tonumber(ARGV[4])
  local cur = tonumber(redis.call('GET', key) or '0')
  if untl > cur and untl > now then
    redis.call('SET', key, ARGV[4], 'PX', untl - now + GC)
  end
end
local out = {}
for b = 1, 2 do
  local base = KEYS[b]
  if op == 's' or (op == 'c' and counted == 1) then
    local sk = base .. ':s:' .. slot
    redis.call('HINCRBY', sk, op, 1)
    redis.call('PEXPIRE', sk, SLOT * (SLOTS + 1) + GC)
    if op == 'c' then
      local hk = base .. ':h:' .. hour
      local hc = redis.call('INCR', hk)
      redis.call('PEXPIRE', hk, HOUR + GC)
      local dk = base .. ':d:' .. day
      if hc > tonumber(redis.call('GET', dk) or '0') then
        redis.call('SET', dk, hc, 'PX', DAY * DAYS + GC)
      end
    end
  end
  local sent, confirmed = 0, 0
  for i = 0, SLOTS - 1 do
    local v = redis.call('HMGET', base .. ':s:' .. (slot - i), 's', 'c')
    sent = sent + tonumber(v[1] or '0')
    confirmed = confirmed + tonumber(v[2] or '0')
  end
  local untl = tonumber(redis.call('GET', base .. ':x') or '0')
  out[#out + 1] = sent
  out[#out + 1] = confirmed
  out[#out + 1] = untl
  for i = DAYS - 1, 0, -1 do
    out[#out + 1] = tonumber(redis.call('GET', base .. ':d:' .. (day - i)) or '0')
  end
end
out[#out + 1] = counted
local trusted = tonumber(redis.call('GET', KEYS[4]) or '0')
if trusted > now then out[#out + 1] = 1 else out[#out + 1] = 0 end
return out
"#
        .replace("SLOT_MS", &SLOT_MS.to_string())
        .replace("SLOTS_N", &SLOTS.to_string())
        .replace("HOUR_MS", &HOUR_MS.to_string())
        .replace("DAY_MS", &DAY_MS.to_string())
        .replace("PEAK_DAYS", &PEAK_DAYS.to_string())
        .replace("NUMBER_TTL_MS", &NUMBER_TTL_MS.to_string())
        .replace("TRUSTED_MS_N", &TRUSTED_MS.to_string())
        .replace("GC_MARGIN_MS", &GC_MARGIN_MS.to_string()),
    )
});
