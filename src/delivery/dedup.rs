//! Exactly once, despite Kratos's retries.
//!
//! Kratos retries every failed send up to 5 more times, a second apart, and
//! sends no message id; a send that succeeded but whose answer was lost
//! (timeout, restart) comes back as the same JSON. This module remembers
//! successful sends for a window and answers repeats with the original sid;
//! coalesces identical requests that arrive while the first is still talking
//! to the provider (single flight); and remembers recipients the provider
//! called permanently unreachable, so retries do not reach it again.
//!
//! Only keyed hashes are stored (HMAC-SHA256 with a per-process random key,
//! truncated to 128 bits): no code, body or number is kept in memory here.
//! Both stores are bounded: entries expire, and past `max_entries` the
//! oldest are dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::delivery::channel::Channel;
use crate::delivery::error::DeliveryError;
use crate::phone::Recipient;

/// A keyed hash of what identifies a message.
pub type Key = [u8; 16];

/// What a finished send left behind, for its duplicates.
#[derive(Debug, Clone)]
pub enum Outcome {
    Accepted {
        sid: Option<String>,
    },
    Failed(DeliveryError),
    /// The sender went away without an outcome (its request was cancelled):
    /// nothing is known, so the waiter should let Kratos retry.
    Abandoned,
}

/// What to do with an incoming message.
pub enum Admission<'a> {
    /// First of its kind: send it, then call [`Flight::finish`].
    Send(Flight<'a>),
    /// Sent already within the window: answer with the original sid.
    Duplicate { sid: Option<String> },
    /// The provider said this recipient is permanently unreachable.
    KnownUnreachable { provider_code: Option<u32> },
    /// An identical message is being sent right now: wait for its outcome.
    Wait(watch::Receiver<Option<Outcome>>),
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
                *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(out)
        };
        let b = s.as_bytes();
        if b.len() == 34 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() {
            if let Some(raw) = hex16(&s[2..]) {
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

/// Entries expire `ttl` after insertion; past `max`, the oldest go first.
/// Times are nanoseconds on the service clock.
struct Expiring<V> {
    map: HashMap<Key, (u64, V)>,
    order: VecDeque<(u64, Key)>,
    ttl: u64,
    max: usize,
}

impl<V> Expiring<V> {
    fn new(ttl: Duration, max: usize) -> Self {
        Expiring {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl: ttl.as_nanos() as u64,
            max: max.max(1),
        }
    }

    fn prune(&mut self, now: u64) {
        while let Some((expires, key)) = self.order.front().copied() {
            if expires > now && self.map.len() <= self.max {
                break;
            }
            self.order.pop_front();
            // Only remove if this queue entry is the live one.
            if self.map.get(&key).is_some_and(|(e, _)| *e == expires) {
                self.map.remove(&key);
            }
        }
        if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    fn get(&self, key: &Key, now: u64) -> Option<&V> {
        self.map
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v)
    }

    fn insert(&mut self, key: Key, value: V, now: u64) {
        let expires = now + self.ttl;
        self.map.insert(key, (expires, value));
        self.order.push_back((expires, key));
        self.prune(now);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

struct State {
    sent: Expiring<Option<Sid>>,
    unreachable: Expiring<Option<u32>>,
    in_flight: HashMap<Key, watch::Sender<Option<Outcome>>>,
}

pub struct Dedup {
    /// HMAC-SHA256 keyed with a random secret made at start: the key's
    /// padding blocks are hashed once here, and each key clones the state.
    keyed: Hmac<Sha256>,
    clock: Clock,
    state: Mutex<State>,
}

/// The right to send a message; tells waiting duplicates how it went.
/// Dropped without [`Flight::finish`] (a cancelled request), it releases the
/// waiters with a retryable error.
pub struct Flight<'a> {
    dedup: &'a Dedup,
    key: Key,
    unreachable_key: Key,
    done: bool,
}

impl Dedup {
    pub fn new(
        window: Duration,
        unreachable_for: Duration,
        max_entries: usize,
        clock: Clock,
    ) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let keyed = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes any key length");
        Dedup {
            keyed,
            clock,
            state: Mutex::new(State {
                sent: Expiring::new(window, max_entries),
                unreachable: Expiring::new(unreachable_for, max_entries),
                in_flight: HashMap::new(),
            }),
        }
    }

    fn hash(&self, parts: &[&[u8]]) -> Key {
        let mut mac = self.keyed.clone();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let full = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }

    /// Decide what to do with a message identified by its channel,
    /// recipient and body (and code, which the body normally contains).
    pub fn admit(
        &self,
        channel: Channel,
        recipient: &Recipient,
        body: &str,
        code: Option<&str>,
    ) -> Admission<'_> {
        let (channel, e164) = (channel.as_str(), recipient.e164());
        let key = self.hash(&[
            channel.as_bytes(),
            e164.as_bytes(),
            body.as_bytes(),
            code.unwrap_or("").as_bytes(),
        ]);
        let unreachable_key = self.hash(&[b"unreachable", channel.as_bytes(), e164.as_bytes()]);
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sent.prune(now);
        state.unreachable.prune(now);
        if let Some(sid) = state.sent.get(&key, now) {
            return Admission::Duplicate {
                sid: sid.as_ref().map(Sid::unpack),
            };
        }
        if let Some(code) = state.unreachable.get(&unreachable_key, now) {
            return Admission::KnownUnreachable {
                provider_code: *code,
            };
        }
        if let Some(tx) = state.in_flight.get(&key) {
            return Admission::Wait(tx.subscribe());
        }
        let (tx, _) = watch::channel(None);
        state.in_flight.insert(key, tx);
        Admission::Send(Flight {
            dedup: self,
            key,
            unreachable_key,
            done: false,
        })
    }

    /// Entries held (sent + unreachable), for tests and benchmarks.
    pub fn len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.sent.len() + s.unreachable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Drop expired entries.
    pub fn prune(&self) {
        let now = self.now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.sent.prune(now);
        s.unreachable.prune(now);
    }
}

impl Flight<'_> {
    /// Record how the send went and wake the duplicates waiting for it.
    /// Only successes are remembered as sent (a failure may be retried);
    /// permanent recipient failures are remembered as such.
    pub fn finish(mut self, outcome: Outcome, permanently_unreachable: Option<Option<u32>>) {
        self.done = true;
        let now = self.dedup.now();
        let mut state = self.dedup.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Outcome::Accepted { sid } = &outcome {
            state
                .sent
                .insert(self.key, sid.as_deref().map(Sid::pack), now);
        }
        if let Some(code) = permanently_unreachable {
            state.unreachable.insert(self.unreachable_key, code, now);
        }
        if let Some(tx) = state.in_flight.remove(&self.key) {
            let _ = tx.send(Some(outcome));
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.dedup.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = state.in_flight.remove(&self.key) {
            let _ = tx.send(Some(Outcome::Abandoned));
        }
    }
}

/// Wait for the outcome of the identical message in flight.
pub async fn wait(mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
    loop {
        if let Some(outcome) = rx.borrow_and_update().clone() {
            return outcome;
        }
        if rx.changed().await.is_err() {
            // The sender vanished without a word: let the caller retry.
            return rx.borrow().clone().unwrap_or(Outcome::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMS: Channel = Channel::Sms;
    const VOICE: Channel = Channel::Voice;

    fn r(e164: &str) -> Recipient {
        Recipient::parse(e164).expect("a valid test number")
    }

    fn dedup() -> Dedup {
        Dedup::new(
            Duration::from_secs(600),
            Duration::from_secs(600),
            1000,
            Clock::starting_at(Duration::ZERO),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn success_is_remembered_for_the_window() {
        let d = dedup();
        let Admission::Send(f) = d.admit(SMS, &r("+14155550123"), "code 1234", Some("1234")) else {
            panic!()
        };
        f.finish(
            Outcome::Accepted {
                sid: Some("SM1".into()),
            },
            None,
        );
        let Admission::Duplicate { sid } =
            d.admit(SMS, &r("+14155550123"), "code 1234", Some("1234"))
        else {
            panic!()
        };
        assert_eq!(sid.as_deref(), Some("SM1"));
        // Another channel, recipient or body is another message.
        assert!(matches!(
            d.admit(VOICE, &r("+14155550123"), "code 1234", Some("1234")),
            Admission::Send(_)
        ));
        assert!(matches!(
            d.admit(SMS, &r("+14155550124"), "code 1234", Some("1234")),
            Admission::Send(_)
        ));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(
            d.admit(SMS, &r("+14155550123"), "code 1234", Some("1234")),
            Admission::Duplicate { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            d.admit(SMS, &r("+14155550123"), "code 1234", Some("1234")),
            Admission::Send(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_remembered_but_unreachable_recipients_are() {
        let d = dedup();
        let Admission::Send(f) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        f.finish(
            Outcome::Failed(DeliveryError::ProviderUnavailable {
                provider_code: None,
                retry_after: 1,
            }),
            None,
        );
        let Admission::Send(f) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        f.finish(
            Outcome::Failed(DeliveryError::RecipientUnreachable {
                provider_code: Some(21614),
            }),
            Some(Some(21614)),
        );
        // Any message to that recipient on that channel, for a while.
        let Admission::KnownUnreachable { provider_code } =
            d.admit(SMS, &r("+14155550100"), "other body", None)
        else {
            panic!()
        };
        assert_eq!(provider_code, Some(21614));
        assert!(matches!(
            d.admit(VOICE, &r("+14155550100"), "b", None),
            Admission::Send(_)
        ));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(
            d.admit(SMS, &r("+14155550100"), "b", None),
            Admission::Send(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_copies_wait_for_the_first() {
        let d = dedup();
        let Admission::Send(f) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        let Admission::Wait(rx) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        let waiter = tokio::spawn(wait(rx));
        f.finish(
            Outcome::Accepted {
                sid: Some("SM9".into()),
            },
            None,
        );
        let Outcome::Accepted { sid } = waiter.await.unwrap() else {
            panic!()
        };
        assert_eq!(sid.as_deref(), Some("SM9"));
    }

    #[tokio::test]
    async fn an_abandoned_flight_releases_waiters() {
        let d = dedup();
        let Admission::Send(f) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        let Admission::Wait(rx) = d.admit(SMS, &r("+14155550100"), "b", None) else {
            panic!()
        };
        drop(f);
        assert!(matches!(wait(rx).await, Outcome::Abandoned));
        assert!(matches!(
            d.admit(SMS, &r("+14155550100"), "b", None),
            Admission::Send(_)
        ));
    }

    #[test]
    fn sids_pack_and_unpack() {
        for sid in [
            "SM0123456789abcdef0123456789abcdef",
            "CAffffffffffffffffffffffffffffffff",
            "a5c7a9f2-1b2c-4d5e-8f90-123456789abc",
            "SM0123456789ABCDEF0123456789abcdef",
            "x",
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

    #[test]
    fn bounded_by_max_entries() {
        let d = Dedup::new(
            Duration::from_secs(600),
            Duration::from_secs(600),
            100,
            Clock::starting_at(Duration::ZERO),
        );
        for i in 0..1000 {
            let Admission::Send(f) = d.admit(SMS, &r(&format!("+1415555{i:04}")), "b", None) else {
                panic!()
            };
            f.finish(Outcome::Accepted { sid: None }, None);
        }
        assert_eq!(d.len(), 100);
    }
}
