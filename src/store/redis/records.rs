//! The fallback records and cached Lookup answers of `store::records` in
//! Redis. A take is one Lua script (read, check the time, delete), so of
//! two replicas taking one record, exactly one gets it.

use std::sync::LazyLock;

use redis::Script;

use super::{corrupt, hex, RedisStore, GC_MARGIN_MS, MAX_TTL_MS};
use crate::store::{RecordKey, StoreError, UnixMs};

impl RedisStore {
    fn stash_key(&self, key: &RecordKey) -> String {
        format!("{}s:{}", self.prefix, hex(key))
    }

    fn lookup_key(&self, key: &RecordKey) -> String {
        format!("{}k:{}", self.prefix, hex(key))
    }

    /// Redis's own expiry: the record's end and the margin.
    fn px(now: UnixMs, until: UnixMs) -> u64 {
        until.saturating_sub(now).clamp(1, MAX_TTL_MS) + GC_MARGIN_MS
    }

    pub(crate) async fn stash_put(
        &self,
        key: &RecordKey,
        sealed: &[u8],
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        let (key, value, px) = (
            self.stash_key(key),
            format!("{until}|{}", hex(sealed)),
            Self::px(now, until),
        );
        self.run("stash_put", |mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(px)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub(crate) async fn stash_take(
        &self,
        key: &RecordKey,
        now: UnixMs,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.stash_key(key);
        let found: Option<String> = self
            .run("stash_take", |mut conn| async move {
                STASH_TAKE.key(key).arg(now).invoke_async(&mut conn).await
            })
            .await?;
        found
            .map(|h| unhex(&h).ok_or_else(|| corrupt("stash_take")))
            .transpose()
    }

    /// One MGET for all of a number's cached answers.
    pub(crate) async fn lookup_get(
        &self,
        keys: &[RecordKey],
        now: UnixMs,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for key in keys {
            mget.arg(self.lookup_key(key));
        }
        let found: Vec<Option<String>> = self
            .run("lookup_get", |mut conn| async move {
                mget.query_async(&mut conn).await
            })
            .await?;
        if found.len() != keys.len() {
            return Err(corrupt("lookup_get"));
        }
        found
            .into_iter()
            .map(|found| {
                let Some(found) = found else { return Ok(None) };
                let (until, answer) = found.split_once('|').ok_or_else(|| corrupt("lookup_get"))?;
                let until: UnixMs = until.parse().map_err(|_| corrupt("lookup_get"))?;
                Ok((until > now).then(|| answer.to_owned()))
            })
            .collect()
    }

    /// Every answer of one Lookup in one pipeline: one round trip.
    pub(crate) async fn lookup_put(
        &self,
        entries: &[(RecordKey, String, UnixMs)],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value, until) in entries {
            pipe.cmd("SET")
                .arg(self.lookup_key(key))
                .arg(format!("{until}|{value}"))
                .arg("PX")
                .arg(Self::px(now, *until))
                .ignore();
        }
        self.run("lookup_put", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// KEYS: the record. ARGV: now. The sealed bytes (hex) if the record lives
/// at `now`, else nil; either way the record is gone after.
static STASH_TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('DEL', KEYS[1])
local bar = string.find(v, '|', 1, true)
if not bar then return false end
if tonumber(string.sub(v, 1, bar - 1)) <= tonumber(ARGV[1]) then return false end
return string.sub(v, bar + 1)
"#,
    )
});
