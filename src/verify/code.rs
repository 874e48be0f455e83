//! Verification codes: how one is made, how it is stored, and how a resend
//! finds it again.
//!
//! A code is `code_length` decimal digits drawn from a 128-bit seed that
//! comes from the operating system's CSPRNG (`rand::fill`): the digits are
//! keyed BLAKE3 of the seed under the store's secret
//! (`Keys::verify("digits", …)`), read by rejection sampling so that every
//! digit is uniform. The store keeps, per recipient, a keyed hash of the
//! code (`Keys::verify("code", [number, code])`, what a check is compared
//! with) and the seed; never the code.
//!
//! # Why a seed, not the code encrypted
//!
//! A resend within the code's lifetime must send the same code, so the
//! store must hold something the code can be recovered from. Two ways:
//! encrypt the code (an AEAD with a key derived from the store's secret and
//! a nonce per code), or keep the random seed and derive the code from it
//! with a keyed PRF. Both give the same protection: a reader of Redis
//! without the secret learns nothing of the code (the seed is random, the
//! derivation keyed; a ciphertext is random-looking), and one with the
//! secret can recover it either way — that is what "resend the same code"
//! requires of any design. The seed wins on what it does not need: no
//! cipher crate, no nonce to manage (a fresh random seed is the only input),
//! no ciphertext format to version, and the same keyed BLAKE3 as every other
//! key in the store. A tampered seed only yields a code whose hash does not
//! match the stored one, so it can never approve anything.
//!
//! The check itself never uses the seed: Redis compares the stored hash
//! with the hash of the typed code inside one Lua script (Lua has no
//! BLAKE3), which is why the hash is stored beside the seed.

use crate::store::{Keys, RelayKey, VerifyKey};

/// Makes codes and their keyed hashes with the store's keys.
#[derive(Debug, Clone)]
pub(crate) struct Codes {
    keys: Keys,
    length: u32,
}

impl Codes {
    pub(crate) fn new(keys: Keys, length: u32) -> Self {
        Codes { keys, length }
    }

    /// A new seed from the operating system's CSPRNG.
    pub(crate) fn fresh_seed() -> [u8; 16] {
        let mut seed = [0u8; 16];
        rand::fill(&mut seed);
        seed
    }

    /// The code a seed stands for: always the same for the same seed and
    /// secret, uniform over the `length`-digit codes.
    pub(crate) fn code(&self, seed: &[u8; 16]) -> String {
        let mut code = String::with_capacity(self.length as usize);
        let mut block = 0u32;
        while code.len() < self.length as usize {
            let bytes = self.keys.verify("digits", &[seed, &block.to_be_bytes()]);
            // 250 is the largest multiple of 10 in a byte: taking only
            // bytes below it keeps every digit equally likely.
            for b in bytes.iter().filter(|b| **b < 250) {
                if code.len() == self.length as usize {
                    break;
                }
                code.push(char::from(b'0' + b % 10));
            }
            block += 1;
        }
        code
    }

    /// The stored (and compared) form of `code` for the number `e164`: a
    /// code sent to one number never matches the hash of another's.
    pub(crate) fn hash(&self, e164: &str, code: &str) -> [u8; 32] {
        self.keys
            .verify("code", &[e164.as_bytes(), code.as_bytes()])
    }

    /// The store key of the number's count of checks in the clock hour
    /// `hour` (hours since 1970): `verify.max_checks_per_hour`.
    pub(crate) fn checks_key(&self, e164: &str, hour: u64) -> RelayKey {
        let full = self
            .keys
            .verify("checks", &[e164.as_bytes(), &hour.to_be_bytes()]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }

    /// The store key of an `Idempotency-Key` header's value.
    pub(crate) fn idempotency_key(&self, header: &str) -> VerifyKey {
        let full = self.keys.verify("idempotency", &[header.as_bytes()]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }

    /// What an `Idempotency-Key` is bound to: the number and the body's
    /// fields, hashed (a retry must ask for the same thing).
    pub(crate) fn fingerprint(&self, e164: &str, channel: &str, locale: &str) -> [u8; 32] {
        self.keys.verify(
            "request",
            &[e164.as_bytes(), channel.as_bytes(), locale.as_bytes()],
        )
    }

    /// The store key of the number's pending code.
    pub(crate) fn record_key(&self, e164: &str) -> VerifyKey {
        let full = self.keys.verify("pending", &[e164.as_bytes()]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_code_of_the_configured_length() {
        let codes = Codes::new(Keys::from_secret(b"s"), 6);
        let seed = [7u8; 16];
        let code = codes.code(&seed);
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(code, codes.code(&seed));
        assert_eq!(code, Codes::new(Keys::from_secret(b"s"), 6).code(&seed));
        // Another secret, another code: the seed alone says nothing.
        let others = (0..8u8)
            .map(|i| Codes::new(Keys::from_secret(&[i]), 6).code(&seed))
            .collect::<std::collections::HashSet<_>>();
        assert!(others.len() > 1);
        assert_eq!(
            Codes::new(Keys::from_secret(b"s"), 10).code(&seed).len(),
            10
        );
    }

    #[test]
    fn digits_are_uniform() {
        let codes = Codes::new(Keys::random(), 10);
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            for b in codes.code(&Codes::fresh_seed()).bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 20,000 digits: 2,000 expected each; 5 standard deviations is ~212.
        for (digit, n) in counts.iter().enumerate() {
            assert!((1750..=2250).contains(n), "digit {digit}: {n}");
        }
    }

    #[test]
    fn hashes_bind_the_number() {
        let codes = Codes::new(Keys::from_secret(b"s"), 6);
        assert_eq!(
            codes.hash("+14155550123", "123456"),
            codes.hash("+14155550123", "123456")
        );
        assert_ne!(
            codes.hash("+14155550123", "123456"),
            codes.hash("+14155550124", "123456")
        );
        assert_ne!(
            codes.record_key("+14155550123"),
            codes.record_key("+14155550124")
        );
    }
}
