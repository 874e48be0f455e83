//! The keys state is stored under: keyed hashes (keyed BLAKE3, truncated),
//! so no store — memory or a Redis that others can read — holds a phone
//! number, a code or a body.
//!
//! Every replica must compute the same keys, so with Redis the secret is
//! shared (see `store.redis`); in memory it is random per process.
//!
//! Keyed BLAKE3 is a PRF like HMAC-SHA256, in one pass over the input
//! instead of HMAC's two nested hashes: a send computes two of these keys,
//! and they were a tenth of its instructions (bench/instructions.md).

use crate::domain::Channel;

/// Identifies a message: channel, recipient, body and code.
pub type MessageKey = [u8; 16];
/// Identifies a recipient on a channel (the unreachable list).
pub type RecipientKey = [u8; 16];
/// Identifies what one rate limiter counts (a recipient, an address, a
/// country): 64 bits are plenty within one limiter.
pub type LimitKey = u64;
/// Identifies a relay mark: an incoming message seen, or a route's count in
/// one hour (see `Store::relay_first_seen`, `Store::relay_take`).
pub type RelayKey = [u8; 16];

/// Derives every key from one secret.
#[derive(Clone)]
pub struct Keys {
    /// The BLAKE3 key, derived from the configured secret (whatever its
    /// length) with a context string of this purpose.
    key: [u8; 32],
    /// SipHash-2-4 keys for rate-limit keys, derived from the secret: a
    /// keyed hash at a fraction of BLAKE3's cost for the few bytes a limit
    /// key covers (a send computes two or three of them), and a fixed
    /// algorithm, so every replica and every build computes the same keys.
    sip: (u64, u64),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Keys from a secret shared by every replica.
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = blake3::derive_key("kratos-phone-courier store keys v2", secret);
        let mut keys = Keys { key, sip: (0, 0) };
        let derived = keys.hash(&[b"limit keys: siphash-2-4"]);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&derived[i..i + 8]);
            u64::from_le_bytes(w)
        };
        keys.sip = (word(0), word(8));
        keys
    }

    /// Keys from a random secret: one process only.
    pub(crate) fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Keys::from_secret(&secret)
    }

    fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    fn hash16(&self, parts: &[&[u8]]) -> [u8; 16] {
        let full = self.hash(parts);
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }

    /// The ledger key of a message.
    pub(crate) fn message(
        &self,
        channel: Channel,
        e164: &str,
        body: &str,
        code: Option<&str>,
    ) -> MessageKey {
        self.hash16(&[
            channel.as_str().as_bytes(),
            e164.as_bytes(),
            body.as_bytes(),
            code.unwrap_or("").as_bytes(),
        ])
    }

    /// The unreachable-list key of a recipient on a channel.
    pub(crate) fn recipient(&self, channel: Channel, e164: &str) -> RecipientKey {
        self.hash16(&[b"unreachable", channel.as_str().as_bytes(), e164.as_bytes()])
    }

    /// A rate limiter's key for `what` (a number, an address prefix...),
    /// within the limiter named `scope`.
    pub(crate) fn limit(&self, scope: &str, what: &[u8]) -> LimitKey {
        use std::hash::Hasher as _;
        // std's SipHasher is deprecated only as a HashMap hasher; as a keyed
        // SipHash-2-4 its output is fixed, which is what shared keys need.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.sip.0, self.sip.1);
        h.write(&(scope.len() as u64).to_le_bytes());
        h.write(scope.as_bytes());
        h.write(what);
        h.finish()
    }
}

impl Keys {
    /// A relay mark's key: `kind` (`seen`, `route`) and what it marks (a
    /// MessageSid; a route's name and hour). Kept apart from the courier's
    /// keys by the leading label.
    pub(crate) fn relay(&self, kind: &str, what: &[&[u8]]) -> RelayKey {
        let mut parts: Vec<&[u8]> = vec![b"relay", kind.as_bytes()];
        parts.extend_from_slice(what);
        self.hash16(&parts)
    }
}

/// Identifies a recipient's pending verification code (`src/verify/`).
pub type VerifyKey = [u8; 16];

/// The verify API's keyed hashes (`src/verify/`), kept apart from the
/// courier's and the relay's by the leading label.
impl Keys {
    /// A keyed hash for the verify API: `kind` says what it is for
    /// (`pending`: the record of a recipient's pending code, cut to a
    /// [`VerifyKey`]; `code`: the stored hash of a code for a recipient;
    /// `digits`: the bytes a code is drawn from, given its seed) and `what`
    /// the parts it covers. Every replica with the same secret computes the
    /// same hashes, so a code requested on one is checked on another.
    pub(crate) fn verify(&self, kind: &str, what: &[&[u8]]) -> [u8; 32] {
        let mut parts: Vec<&[u8]> = vec![b"verify", kind.as_bytes()];
        parts.extend_from_slice(what);
        self.hash(&parts)
    }
}

/// Identifies a fallback record or a cached lookup (`store::records`).
pub type RecordKey = [u8; 16];

/// The keys and seals of the fallback and Lookup records
/// (`store::records`), kept apart from the others by the leading label.
impl Keys {
    /// A keyed hash for a fallback or Lookup record: `kind` says what it is
    /// for (`stash`: the key of an SMS's fallback record, from its sid;
    /// `seal`, `tag`: the keys that seal that record; `lookup`: a number's
    /// cached Lookup answer, per data package).
    pub(crate) fn record(&self, kind: &str, what: &[&[u8]]) -> [u8; 32] {
        let mut parts: Vec<&[u8]> = vec![b"record", kind.as_bytes()];
        parts.extend_from_slice(what);
        self.hash(&parts)
    }

    /// [`Self::record`] cut to a store key.
    pub(crate) fn record_key(&self, kind: &str, what: &[&[u8]]) -> RecordKey {
        let full = self.record(kind, what);
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }
}

/// A secret for [`Keys::from_secret`] derived from another secret, labelled
/// so that the derived key says nothing of the original.
pub(crate) fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    Keys::from_secret(secret).hash(&[label])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_same_keys_and_parts_do_not_run_together() {
        let a = Keys::from_secret(b"shared");
        let b = Keys::from_secret(b"shared");
        let m = |k: &Keys| k.message(Channel::Sms, "+14155550123", "Your code 1234", Some("1234"));
        assert_eq!(m(&a), m(&b));
        assert_ne!(m(&a), m(&Keys::from_secret(b"other")));
        assert_ne!(
            a.message(Channel::Sms, "+1415555012", "3Your code", None),
            a.message(Channel::Sms, "+14155550123", "Your code", None)
        );
        assert_ne!(
            a.message(Channel::Voice, "+14155550123", "b", None),
            a.message(Channel::Sms, "+14155550123", "b", None)
        );
        assert_ne!(a.limit("sms:recipient", b"x"), a.limit("sms:ip", b"x"));
        assert_eq!(a.limit("recipient", b"+1"), b.limit("recipient", b"+1"));
        assert_ne!(
            a.limit("recipient", b"+1"),
            Keys::from_secret(b"other").limit("recipient", b"+1")
        );
        assert_eq!(format!("{a:?}"), "Keys([redacted])");
    }
}
