//! Rate limits per recipient, per end-user IP, per destination country
//! calling code and in total, for each channel (governor's GCRA).
//!
//! A request passes only if every limiter has room, and a request that is
//! refused consumes nothing from any of them. Governor has no "peek", so
//! each limiter sits on a [`ProbeStore`]: a keyed state store that, for a
//! probe, computes governor's decision without writing it. All limiters are
//! probed, then (only if all say yes) committed, under one lock.
//!
//! Keys are 64-bit keyed hashes (SipHash with a per-process random key), so
//! the limiters hold no phone number, and the state is pruned periodically
//! with governor's `retain_recent` so millions of one-off recipients do not
//! grow the process without bound.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::clock::Clock;
use crate::config::{ChannelRates, Rate};
use crate::delivery::channel::Channel;

/// A key and whether this check may write the limiter's state.
#[derive(Clone, Debug)]
pub struct Probe {
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
pub struct ProbeStore {
    cells: Mutex<HashMap<u64, u64>>,
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

type Limiter = RateLimiter<Probe, ProbeStore, Clock, NoOpMiddleware<Nanos>>;

/// Governor's quota for a configured rate; `None` when the rate is off
/// (0 per hour).
fn quota(rate: &Rate) -> Option<Quota> {
    let per_hour = NonZeroU32::new(rate.per_hour)?;
    let burst = NonZeroU32::new(rate.burst.max(1))?;
    Quota::with_period(Duration::from_secs(3600) / per_hour.get()).map(|q| q.allow_burst(burst))
}

/// Which limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    Recipient,
    Ip,
    Country,
    Global,
}

impl LimitName {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::Recipient => "recipient",
            LimitName::Ip => "ip",
            LimitName::Country => "country",
            LimitName::Global => "global",
        }
    }
}

/// A refusal: which limit, and when a retry could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: LimitName,
    pub channel: Channel,
    pub retry_after: Duration,
}

struct ChannelLimiters {
    limiters: Vec<(LimitName, Limiter)>,
}

impl ChannelLimiters {
    fn new(rates: &ChannelRates, clock: &Clock) -> Self {
        let limiters = [
            (LimitName::Recipient, rates.recipient),
            (LimitName::Ip, rates.ip),
            (LimitName::Country, rates.country),
            (LimitName::Global, rates.global),
        ]
        .into_iter()
        .filter_map(|(name, rate)| {
            quota(&rate).map(|q| {
                (
                    name,
                    RateLimiter::new(q, ProbeStore::default(), clock.clone()),
                )
            })
        })
        .collect();
        ChannelLimiters { limiters }
    }
}

/// What a request is limited by.
#[derive(Debug, Clone, Copy)]
pub struct LimitKeys {
    pub recipient: u64,
    pub ip: Option<u64>,
    pub country: u64,
}

/// All rate limiters of the service.
pub struct RateLimits {
    sms: ChannelLimiters,
    voice: ChannelLimiters,
    hasher: RandomState,
    clock: Clock,
    /// Probe-all-then-commit-all must not interleave with another request's.
    decide: Mutex<()>,
}

impl RateLimits {
    pub fn new(sms: &ChannelRates, voice: &ChannelRates, clock: Clock) -> Self {
        RateLimits {
            sms: ChannelLimiters::new(sms, &clock),
            voice: ChannelLimiters::new(voice, &clock),
            hasher: RandomState::new(),
            clock,
            decide: Mutex::new(()),
        }
    }

    /// Keys for a request: the recipient's E.164 string, the end user's IP
    /// (IPv6 by /64, which one subscriber usually holds whole), the country
    /// calling code.
    pub fn keys(&self, e164: &str, ip: Option<IpAddr>, calling_code: u16) -> LimitKeys {
        let ip = ip.map(|ip| match ip {
            IpAddr::V4(v4) => self.hasher.hash_one((4u8, v4.octets())),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&o[..8]);
                self.hasher.hash_one((6u8, prefix))
            }
        });
        LimitKeys {
            recipient: self.hasher.hash_one(e164),
            ip,
            country: calling_code as u64,
        }
    }

    /// Take one cell from every limiter of `channel`, or none at all.
    pub fn check(&self, channel: Channel, keys: &LimitKeys) -> Result<(), RateLimited> {
        let set = match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
        };
        let key_for = |name: LimitName| match name {
            LimitName::Recipient => Some(keys.recipient),
            LimitName::Ip => keys.ip,
            LimitName::Country => Some(keys.country),
            LimitName::Global => Some(0),
        };
        let _decide = self.decide.lock().unwrap_or_else(|p| p.into_inner());
        for (name, limiter) in &set.limiters {
            let Some(key) = key_for(*name) else { continue };
            if let Err(not_until) = limiter.check_key(&Probe { key, commit: false }) {
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(RateLimited {
                    limit: *name,
                    channel,
                    retry_after: wait,
                });
            }
        }
        for (name, limiter) in &set.limiters {
            let Some(key) = key_for(*name) else { continue };
            // Cannot fail: the probe just passed under the same lock.
            let _ = limiter.check_key(&Probe { key, commit: true });
        }
        Ok(())
    }

    /// Drop state that no longer limits anything and give memory back.
    pub fn prune(&self) {
        for set in [&self.sms, &self.voice] {
            for (_, limiter) in &set.limiters {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    /// Keys held across all limiters (for tests and benchmarks).
    pub fn len(&self) -> usize {
        [&self.sms, &self.voice]
            .iter()
            .flat_map(|s| s.limiters.iter())
            .map(|(_, l)| l.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The end user's IP from Kratos's `request_headers`: the first header in
/// `names` that is present and parses (for X-Forwarded-For, its first
/// address). `None` when there is none: the IP limiter is then skipped.
pub fn client_ip<'a>(names: &[String], header: impl Fn(&str) -> Option<&'a str>) -> Option<IpAddr> {
    names.iter().find_map(|name| {
        let value = header(name)?;
        let first = value.split(',').next()?.trim();
        first.parse::<IpAddr>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(recipient: (u32, u32), global: (u32, u32)) -> ChannelRates {
        ChannelRates {
            recipient: Rate {
                per_hour: recipient.0,
                burst: recipient.1,
            },
            ip: Rate {
                per_hour: 10,
                burst: 10,
            },
            country: Rate {
                per_hour: 3_600_000,
                burst: 100_000,
            },
            global: Rate {
                per_hour: global.0,
                burst: global.1,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_on_a_paused_clock() {
        let clock = Clock::starting_at(Duration::ZERO);
        let limits = RateLimits::new(
            &rates((5, 3), (1000, 1000)),
            &rates((3, 1), (1000, 1000)),
            clock,
        );
        let k = limits.keys("+14155550123", None, 1);
        for _ in 0..3 {
            limits.check(Channel::Sms, &k).unwrap();
        }
        let refused = limits.check(Channel::Sms, &k).unwrap_err();
        assert_eq!(refused.limit, LimitName::Recipient);
        // 5 per hour: one cell every 12 minutes.
        assert_eq!(refused.retry_after, Duration::from_secs(720));
        tokio::time::advance(Duration::from_secs(719)).await;
        assert!(limits.check(Channel::Sms, &k).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        limits.check(Channel::Sms, &k).unwrap();
        assert!(limits.check(Channel::Sms, &k).is_err());
        // Voice has its own, stricter limiters.
        limits.check(Channel::Voice, &k).unwrap();
        assert!(limits.check(Channel::Voice, &k).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_consumes_no_quota_anywhere() {
        let clock = Clock::starting_at(Duration::ZERO);
        // Global allows 2; recipient allows 3.
        let limits = RateLimits::new(&rates((5, 3), (3600, 2)), &rates((3, 1), (1, 1)), clock);
        let a = limits.keys("+14155550001", None, 1);
        let b = limits.keys("+14155550002", None, 1);
        limits.check(Channel::Sms, &a).unwrap();
        limits.check(Channel::Sms, &a).unwrap();
        // Global is empty now: refused, and recipient a's third cell is kept.
        assert_eq!(
            limits.check(Channel::Sms, &a).unwrap_err().limit,
            LimitName::Global
        );
        assert_eq!(
            limits.check(Channel::Sms, &b).unwrap_err().limit,
            LimitName::Global
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        limits.check(Channel::Sms, &a).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // a has used its burst of 3; b has lost nothing to its refusal.
        assert_eq!(
            limits.check(Channel::Sms, &a).unwrap_err().limit,
            LimitName::Recipient
        );
        limits.check(Channel::Sms, &b).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn state_is_pruned_once_it_no_longer_limits() {
        let clock = Clock::starting_at(Duration::ZERO);
        let limits = RateLimits::new(
            &rates((5, 3), (1_000_000, 1_000_000)),
            &rates((3, 1), (1, 1)),
            clock,
        );
        for i in 0..1000u32 {
            let k = limits.keys(&format!("+1415555{i:04}"), None, 1);
            limits.check(Channel::Sms, &k).unwrap();
        }
        assert!(limits.len() >= 1000);
        tokio::time::advance(Duration::from_secs(3600)).await;
        limits.prune();
        assert!(limits.len() <= 2, "{}", limits.len());
    }

    #[test]
    fn client_ip_from_headers() {
        let names = vec!["True-Client-Ip".to_owned(), "X-Forwarded-For".to_owned()];
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| *v)
            }
        };
        assert_eq!(
            client_ip(&names, h(&[("true-client-ip", "203.0.113.7")])),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(
            client_ip(&names, h(&[("x-forwarded-for", "198.51.100.1, 10.0.0.1")])),
            "198.51.100.1".parse().ok()
        );
        assert_eq!(
            client_ip(
                &names,
                h(&[
                    ("true-client-ip", "junk"),
                    ("x-forwarded-for", "2001:db8::1")
                ])
            ),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(client_ip(&names, h(&[])), None);
    }
}
