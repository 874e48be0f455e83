//! Rate limits per recipient, per end-user address (or the shared bucket of
//! requests whose address is not known), per number prefix, per destination
//! country calling code and in total, for each channel: which GCRA cells a
//! message needs. The cells themselves live in the [`Store`](crate::store),
//! which takes all of them or none, and gives them back when the message was
//! certainly not sent; so a retry of one message never costs a second cell.
//!
//! Keys are keyed hashes ([`Keys::limit`]): the limiters hold no phone
//! number, address or identity id.
//!
//! (Longer than our usual 400 lines, on purpose: only by its tests (the
//! code is about 200 lines), which walk the limits through the clock.)

use std::time::Duration;

use crate::config::{ChannelRates, Rate};
use crate::delivery::channel::Channel;
use crate::delivery::client_ip::{Address, ClientAddr, ClientNet};
pub use crate::domain::LimitName;
use crate::phone::Recipient;
use crate::store::{Cell, Keys, LimitKey, Limiter};

/// The configured rates, turned into cells per message.
pub(crate) struct Limits {
    sms: ChannelRates,
    voice: ChannelRates,
    whatsapp: ChannelRates,
    prefixes: Prefixes,
    keys: Keys,
}

impl Limits {
    pub(crate) fn new(
        sms: ChannelRates,
        voice: ChannelRates,
        whatsapp: ChannelRates,
        prefixes: Prefixes,
        keys: Keys,
    ) -> Self {
        Limits {
            sms,
            voice,
            whatsapp,
            prefixes,
            keys,
        }
    }

    /// The cells a message to `recipient` on `channel` from `client` needs:
    /// one per limiter whose rate is on. A client whose address is not
    /// known takes a cell of the one `unknown_ip` bucket instead of its own;
    /// a verification code, whose template carries no address, takes none
    /// of either. A message for a Kratos identity takes one of that
    /// identity's. The prefix's cell is not taken for a number that
    /// confirmed a code lately ([`Cell::unless_trusted`]): an attacker
    /// cannot freeze a block for the people in it who use their codes.
    pub(crate) fn cells(
        &self,
        channel: Channel,
        recipient: &Recipient,
        client: ClientAddr,
    ) -> Vec<Cell> {
        let rates = match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
            Channel::WhatsApp => &self.whatsapp,
        };
        let address = match client.address {
            Address::Known(ClientNet::V4(net)) => {
                Some((LimitName::Ip, rates.ip, self.keys.limit("ip4", &net)))
            }
            Address::Known(ClientNet::V6(net)) => {
                Some((LimitName::Ip, rates.ip, self.keys.limit("ip6", &net)))
            }
            Address::Unknown => Some((LimitName::UnknownIp, rates.unknown_ip, 0)),
            Address::NotCarried => None,
        };
        let identity = client.identity.map(|id| {
            (
                LimitName::Identity,
                rates.identity,
                self.keys.limit("identity", &id.to_be_bytes()),
            )
        });
        let number = self.keys.limit("number", recipient.e164().as_bytes());
        [
            Some((
                LimitName::Recipient,
                rates.recipient,
                self.keys.limit("recipient", recipient.e164().as_bytes()),
            )),
            address,
            identity,
            Some((
                LimitName::Prefix,
                rates.prefix,
                self.prefixes.key(&self.keys, recipient),
            )),
            Some((
                LimitName::Country,
                rates.country,
                u64::from(recipient.calling_code()),
            )),
            Some((LimitName::Global, rates.global, 0)),
        ]
        .into_iter()
        .flatten()
        .filter_map(|(name, rate, key)| {
            Some(Cell {
                limiter: Limiter { channel, name },
                key,
                interval: interval(&rate)?,
                burst: rate.burst.max(1),
                unless_trusted: (name == LimitName::Prefix).then_some(number),
            })
        })
        .collect()
    }
}

impl Limits {
    /// The cells of a notification (a message without a code): those of
    /// [`Self::cells`], but the `notification` limiter's
    /// (`limits.*.notification`) in place of the recipient's and the
    /// prefix's (which is sized to a person's codes), so notices neither
    /// use up a person's codes nor flood a number.
    pub(crate) fn notification_cells(
        &self,
        channel: Channel,
        recipient: &Recipient,
        client: ClientAddr,
    ) -> Vec<Cell> {
        let rate = match channel {
            Channel::Sms => self.sms.notification,
            Channel::Voice => self.voice.notification,
            Channel::WhatsApp => self.whatsapp.notification,
        };
        let mut cells = self.cells(channel, recipient, client);
        cells.retain(|c| !matches!(c.limiter.name, LimitName::Recipient | LimitName::Prefix));
        if let Some(interval) = interval(&rate) {
            cells.insert(
                0,
                Cell {
                    limiter: Limiter {
                        channel,
                        name: LimitName::Notification,
                    },
                    key: self.keys.limit("notification", recipient.e164().as_bytes()),
                    interval,
                    burst: rate.burst.max(1),
                    unless_trusted: None,
                },
            );
        }
        cells
    }
}

/// Number prefixes: an E.164 number without its last few digits, the
/// blocks that pumping campaigns walk through.
#[derive(Debug, Clone, Copy)]
pub struct Prefixes {
    hidden_digits: usize,
}

impl Prefixes {
    pub fn new(hidden_digits: u32) -> Self {
        Prefixes {
            hidden_digits: hidden_digits as usize,
        }
    }

    /// The prefix of `recipient` (a slice of its E.164 form): never shorter
    /// than the calling code and one digit, so a short number is a block of
    /// its own rather than its whole country.
    pub(crate) fn of<'a>(&self, recipient: &'a Recipient) -> &'a str {
        let e164 = recipient.e164();
        let cc_len = 1 + decimal_len(recipient.calling_code());
        let keep = e164
            .len()
            .saturating_sub(self.hidden_digits)
            .max(cc_len + 1);
        &e164[..keep.min(e164.len())]
    }

    /// The keyed hash of the prefix of `recipient`: what limiters and the
    /// fraud detector count under.
    pub(crate) fn key(&self, keys: &Keys, recipient: &Recipient) -> LimitKey {
        keys.limit("prefix", self.of(recipient).as_bytes())
    }
}

fn decimal_len(n: u16) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    }
}

/// One cell per this long; `None` when the rate is off (0 per hour).
fn interval(rate: &Rate) -> Option<Duration> {
    (rate.per_hour > 0).then(|| Duration::from_secs(3600) / rate.per_hour)
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
            unknown_ip: Rate {
                per_hour: 3_600_000,
                burst: 100_000,
            },
            identity: Rate {
                per_hour: 10,
                burst: 5,
            },
            prefix: Rate {
                per_hour: 0,
                burst: 0,
            },
            country: Rate {
                per_hour: 3_600_000,
                burst: 100_000,
            },
            global: Rate {
                per_hour: global.0,
                burst: global.1,
            },
            notification: crate::config::NOTIFICATION_DEFAULT,
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
            .reserve(&limits.cells(channel, to, ClientAddr::UNKNOWN), None, 0)
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
            rates((2, 1), (1000, 1000)),
            Prefixes::new(3),
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
        // And WhatsApp its own (limits.whatsapp).
        take(&store, &limits, Channel::WhatsApp, &k).await.unwrap();
        assert!(take(&store, &limits, Channel::WhatsApp, &k).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_consumes_no_quota_anywhere() {
        let clock = Clock::starting_at(Duration::ZERO);
        let store = MemoryStore::new(clock, 1000);
        // Global allows 2; recipient allows 3.
        let limits = Limits::new(
            rates((5, 3), (3600, 2)),
            rates((3, 1), (1, 1)),
            rates((3, 1), (1, 1)),
            Prefixes::new(3),
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
            rates((3, 1), (1, 1)),
            Prefixes::new(3),
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
    fn unknown_addresses_share_one_bucket_and_rates_of_zero_are_off() {
        let mut sms = rates((5, 3), (0, 0));
        sms.unknown_ip = Rate {
            per_hour: 10,
            burst: 2,
        };
        let limits = Limits::new(
            sms,
            rates((3, 1), (1, 1)),
            rates((3, 1), (1, 1)),
            Prefixes::new(3),
            Keys::random(),
        );
        let to = r("+14155550123");
        let known =
            |a: [u8; 4]| limits.cells(Channel::Sms, &to, ClientAddr::known(ClientNet::V4(a)));
        let ip = |cells: &[Cell]| {
            cells
                .iter()
                .find(|c| matches!(c.limiter.name, LimitName::Ip | LimitName::UnknownIp))
                .map(|c| (c.limiter.name, c.key, c.interval))
                .unwrap()
        };
        let a = ip(&known([203, 0, 113, 7]));
        let b = ip(&known([203, 0, 113, 8]));
        assert_eq!(a.0, LimitName::Ip);
        assert_ne!(a.1, b.1);
        assert_eq!(a.2, Duration::from_secs(360));
        let unknown = limits.cells(Channel::Sms, &to, ClientAddr::UNKNOWN);
        assert_eq!(
            ip(&unknown),
            (LimitName::UnknownIp, 0, Duration::from_secs(360))
        );
        // Global at 0 per hour: off; prefix at 0: off.
        assert!(unknown
            .iter()
            .all(|c| !matches!(c.limiter.name, LimitName::Global | LimitName::Prefix)));
    }

    #[test]
    fn verification_takes_no_address_cell_and_identities_count_apart() {
        let mut sms = rates((5, 3), (0, 0));
        sms.prefix = Rate {
            per_hour: 10,
            burst: 10,
        };
        let keys = Keys::random();
        let limits = Limits::new(
            sms,
            rates((3, 1), (1, 1)),
            rates((3, 1), (1, 1)),
            Prefixes::new(3),
            keys.clone(),
        );
        let to = r("+14155550123");
        let names = |c: &[Cell]| c.iter().map(|c| c.limiter.name).collect::<Vec<_>>();
        let not_carried = |identity| ClientAddr {
            address: Address::NotCarried,
            identity,
        };
        // A verification code: neither ip nor unknown_ip, and the identity.
        let cells = limits.cells(Channel::Sms, &to, not_carried(Some(7)));
        assert_eq!(
            names(&cells),
            [
                LimitName::Recipient,
                LimitName::Identity,
                LimitName::Prefix,
                LimitName::Country
            ]
        );
        let identity = |c: &[Cell]| {
            c.iter()
                .find(|c| c.limiter.name == LimitName::Identity)
                .unwrap()
                .key
        };
        // Keyed: the same id under another key hashes apart; ids apart.
        assert_ne!(
            identity(&cells),
            identity(&limits.cells(Channel::Sms, &to, not_carried(Some(8))))
        );
        assert_eq!(
            identity(&cells),
            keys.limit("identity", &7u128.to_be_bytes())
        );
        // Without an identity, only the number's limiters.
        assert_eq!(
            names(&limits.cells(Channel::Sms, &to, not_carried(None))),
            [LimitName::Recipient, LimitName::Prefix, LimitName::Country]
        );
        // A login code with an address: both the address and the identity.
        let login = ClientAddr {
            identity: Some(7),
            ..ClientAddr::known(ClientNet::V4([203, 0, 113, 7]))
        };
        assert_eq!(
            names(&limits.cells(Channel::Sms, &to, login))[..3],
            [LimitName::Recipient, LimitName::Ip, LimitName::Identity]
        );
        // Only the prefix's cell spares a trusted number, by its key.
        for c in &cells {
            assert_eq!(
                c.unless_trusted,
                (c.limiter.name == LimitName::Prefix)
                    .then(|| keys.limit("number", b"+14155550123")),
                "{:?}",
                c.limiter.name
            );
        }
    }

    #[test]
    fn prefixes_hide_the_last_digits_but_keep_the_country_and_a_digit() {
        let p = Prefixes::new(3);
        assert_eq!(p.of(&r("+447946000123")), "+447946000");
        assert_eq!(p.of(&r("+14155550123")), "+14155550");
        let keys = Keys::random();
        assert_eq!(
            p.key(&keys, &r("+447946000123")),
            p.key(&keys, &r("+447946000999"))
        );
        assert_ne!(
            p.key(&keys, &r("+447946000123")),
            p.key(&keys, &r("+447946001123"))
        );
        // A 6-digit mask on a short number keeps "+CC" and one digit.
        assert_eq!(Prefixes::new(6).of(&r("+3546111234")), "+3546");
    }
}
