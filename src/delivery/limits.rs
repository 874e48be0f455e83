//! Rate limits per recipient, per end-user IP, per destination country
//! calling code and in total, for each channel: which GCRA cells a message
//! needs. The cells themselves live in the [`Store`](crate::store), which
//! takes all of them or none, and gives them back when the message was
//! certainly not sent; so a retry of one message never costs a second cell.
//!
//! Keys are keyed hashes ([`Keys::limit`]): the limiters hold no phone
//! number or address.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{ChannelRates, Rate};
use crate::delivery::channel::Channel;
pub use crate::domain::LimitName;
use crate::phone::Recipient;
use crate::store::{Cell, Keys, Limiter};

/// The configured rates, turned into cells per message.
pub struct Limits {
    sms: ChannelRates,
    voice: ChannelRates,
    keys: Keys,
}

impl Limits {
    pub fn new(sms: ChannelRates, voice: ChannelRates, keys: Keys) -> Self {
        Limits { sms, voice, keys }
    }

    /// The cells a message to `recipient` on `channel` from the end user at
    /// `ip` needs: one per limiter whose rate is on (the IP's only when the
    /// address is known). IPv6 addresses count per /64, which one
    /// subscriber usually holds whole.
    pub fn cells(&self, channel: Channel, recipient: &Recipient, ip: Option<IpAddr>) -> Vec<Cell> {
        let rates = match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
        };
        let ip_key = ip.map(|ip| match ip {
            IpAddr::V4(v4) => self.keys.limit("ip4", &v4.octets()),
            IpAddr::V6(v6) => self.keys.limit("ip6", &v6.octets()[..8]),
        });
        [
            (
                LimitName::Recipient,
                rates.recipient,
                Some(self.keys.limit("recipient", recipient.e164().as_bytes())),
            ),
            (LimitName::Ip, rates.ip, ip_key),
            (
                LimitName::Country,
                rates.country,
                Some(u64::from(recipient.calling_code())),
            ),
            (LimitName::Global, rates.global, Some(0)),
        ]
        .into_iter()
        .filter_map(|(name, rate, key)| {
            Some(Cell {
                limiter: Limiter { channel, name },
                key: key?,
                interval: interval(&rate)?,
                burst: rate.burst.max(1),
            })
        })
        .collect()
    }
}

/// One cell per this long; `None` when the rate is off (0 per hour).
fn interval(rate: &Rate) -> Option<Duration> {
    (rate.per_hour > 0).then(|| Duration::from_secs(3600) / rate.per_hour)
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
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    use crate::store::Refusal;

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

    fn r(e164: &str) -> Recipient {
        Recipient::parse(e164).unwrap()
    }

    /// Reserve the cells of one message: Ok, or the limiter that refused
    /// and the wait.
    async fn take(
        store: &MemoryStore,
        limits: &Limits,
        channel: Channel,
        to: &Recipient,
    ) -> Result<(), (LimitName, Duration)> {
        match store
            .reserve(&limits.cells(channel, to, None), None, 0)
            .await
            .unwrap()
        {
            Ok(_) => Ok(()),
            Err(Refusal::Limited {
                limiter,
                retry_after,
            }) => Err((limiter.name, retry_after)),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_on_a_paused_clock() {
        let clock = Clock::starting_at(Duration::ZERO);
        let store = MemoryStore::new(clock, 1000);
        let limits = Limits::new(
            rates((5, 3), (1000, 1000)),
            rates((3, 1), (1000, 1000)),
            Keys::random(),
        );
        let k = r("+14155550123");
        for _ in 0..3 {
            take(&store, &limits, Channel::Sms, &k).await.unwrap();
        }
        let refused = take(&store, &limits, Channel::Sms, &k).await.unwrap_err();
        // 5 per hour: one cell every 12 minutes.
        assert_eq!(refused, (LimitName::Recipient, Duration::from_secs(720)));
        tokio::time::advance(Duration::from_secs(719)).await;
        assert!(take(&store, &limits, Channel::Sms, &k).await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        take(&store, &limits, Channel::Sms, &k).await.unwrap();
        assert!(take(&store, &limits, Channel::Sms, &k).await.is_err());
        // Voice has its own, stricter limiters.
        take(&store, &limits, Channel::Voice, &k).await.unwrap();
        assert!(take(&store, &limits, Channel::Voice, &k).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_consumes_no_quota_anywhere() {
        let clock = Clock::starting_at(Duration::ZERO);
        let store = MemoryStore::new(clock, 1000);
        // Global allows 2; recipient allows 3.
        let limits = Limits::new(
            rates((5, 3), (3600, 2)),
            rates((3, 1), (1, 1)),
            Keys::random(),
        );
        let (a, b) = (r("+14155550101"), r("+14155550102"));
        take(&store, &limits, Channel::Sms, &a).await.unwrap();
        take(&store, &limits, Channel::Sms, &a).await.unwrap();
        // Global is empty now: refused, and recipient a's third cell is kept.
        let global = |e: Result<(), (LimitName, Duration)>| e.unwrap_err().0;
        assert_eq!(
            global(take(&store, &limits, Channel::Sms, &a).await),
            LimitName::Global
        );
        assert_eq!(
            global(take(&store, &limits, Channel::Sms, &b).await),
            LimitName::Global
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        take(&store, &limits, Channel::Sms, &a).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // a has used its burst of 3; b has lost nothing to its refusal.
        assert_eq!(
            global(take(&store, &limits, Channel::Sms, &a).await),
            LimitName::Recipient
        );
        take(&store, &limits, Channel::Sms, &b).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn state_is_pruned_once_it_no_longer_limits() {
        let clock = Clock::starting_at(Duration::ZERO);
        let store = MemoryStore::new(clock, 1000);
        let limits = Limits::new(
            rates((5, 3), (1_000_000, 1_000_000)),
            rates((3, 1), (1, 1)),
            Keys::random(),
        );
        for i in 0..1000u32 {
            let k = r(&format!("+1415555{i:04}"));
            take(&store, &limits, Channel::Sms, &k).await.unwrap();
        }
        assert!(store.limit_keys() >= 1000);
        tokio::time::advance(Duration::from_secs(3600)).await;
        store.prune();
        assert!(store.limit_keys() <= 2, "{}", store.limit_keys());
    }

    #[test]
    fn ipv6_counts_per_64_and_rates_of_zero_are_off() {
        let mut sms = rates((5, 3), (0, 0));
        sms.ip = Rate {
            per_hour: 10,
            burst: 2,
        };
        let limits = Limits::new(sms, rates((3, 1), (1, 1)), Keys::random());
        let to = r("+14155550123");
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let a = limits.cells(Channel::Sms, &to, ip("2001:db8:1:2::1"));
        let b = limits.cells(Channel::Sms, &to, ip("2001:db8:1:2:ffff::9"));
        let c = limits.cells(Channel::Sms, &to, ip("2001:db8:1:3::1"));
        let ip_key = |cells: &[Cell]| {
            cells
                .iter()
                .find(|c| c.limiter.name == LimitName::Ip)
                .unwrap()
                .key
        };
        assert_eq!(ip_key(&a), ip_key(&b));
        assert_ne!(ip_key(&a), ip_key(&c));
        // No address: no IP cell. Global at 0 per hour: off.
        let none = limits.cells(Channel::Sms, &to, None);
        assert!(none.iter().all(|c| c.limiter.name != LimitName::Ip));
        assert!(a.iter().all(|c| c.limiter.name != LimitName::Global));
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
