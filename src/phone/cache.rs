//! What libphonenumber said about a number, remembered by the
//! [`RecipientCache`] that a courier owns.
//!
//! Matching a number against the numbering plan costs more than everything
//! else on the refusal path (an abusive burst against one number, or
//! Kratos's retries, repeat it). The cache keeps the verdict (calling code,
//! region, line type, or why it was refused) under a keyed hash of the
//! number, with a key drawn afresh for each cache: the number itself is
//! never kept, and one cache's keys say nothing about another's.
//!
//! Bounded at the capacity it is given ([`VERDICT_CACHE_CAPACITY`] for the
//! service): when full it starts over rather than track age. A fresh start
//! costs one numbering-plan match per number seen again, which is cheap
//! enough with the plan's compiled patterns that keeping ages would cost
//! more than it saves.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::{is_e164_shape, LineType, NumberingPlan, Recipient, RecipientError};

/// Verdicts a courier keeps: distinct numbers seen since the cache last
/// started over. An entry is a 64-bit hash and a few bytes of verdict, so a
/// full cache takes about 2 MB.
pub(crate) const VERDICT_CACHE_CAPACITY: usize = 100_000;

/// [`Recipient::parse_with`] over a shared [`NumberingPlan`], remembering
/// each number's verdict. Owns its entries: two caches share nothing but
/// the plan they were given.
pub(crate) struct RecipientCache {
    plan: Arc<NumberingPlan>,
    hasher: RandomState,
    map: Mutex<HashMap<u64, Result<Facts, RecipientError>>>,
    max: usize,
}

/// A recipient without its number.
#[derive(Debug, Clone, Copy)]
struct Facts {
    calling_code: u16,
    region: Option<phonenumber::country::Id>,
    line_type: LineType,
}

impl RecipientCache {
    /// A cache of at most `max` verdicts (at least one) over `plan`.
    pub(crate) fn new(plan: Arc<NumberingPlan>, max: usize) -> Self {
        RecipientCache {
            plan,
            hasher: RandomState::new(),
            map: Mutex::default(),
            max: max.max(1),
        }
    }

    /// The numbering plan this cache parses with, for whoever warms it up
    /// or parses with it too.
    pub(crate) fn plan(&self) -> &Arc<NumberingPlan> {
        &self.plan
    }

    /// [`Recipient::parse_with`], remembering the verdict for the number.
    /// The same answers, whether remembered or not.
    pub(crate) fn parse(&self, input: &str) -> Result<Recipient, RecipientError> {
        let s = input.trim();
        if !is_e164_shape(s) {
            return Err(RecipientError::NotE164);
        }
        let key = self.hasher.hash_one(s);
        let cached = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let facts = match cached {
            Some(f) => f,
            None => {
                let parsed = Recipient::parse_with(&self.plan, s);
                if let Ok(r) = &parsed {
                    if r.e164 != s {
                        // Not in canonical form: rare, and not remembered,
                        // so a hit can always use the input as it is.
                        return parsed;
                    }
                }
                let f = parsed.map(|r| Facts {
                    calling_code: r.calling_code,
                    region: r.region,
                    line_type: r.line_type,
                });
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= self.max {
                    // Crude but bounded: start over rather than track age.
                    map.clear();
                }
                map.insert(key, f);
                f
            }
        }?;
        Ok(Recipient {
            e164: s.to_owned(),
            calling_code: facts.calling_code,
            region: facts.region,
            line_type: facts.line_type,
        })
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: usize) -> RecipientCache {
        RecipientCache::new(Arc::new(NumberingPlan::new()), max)
    }

    #[test]
    fn the_cache_gives_the_same_answers() {
        let cache = cache(2);
        for _ in 0..3 {
            for n in [
                "+14155550123",
                " +4915123456789 ",
                "+99912345678",
                "123",
                "+449012345678",
                "+390212345678",
            ] {
                let direct = Recipient::parse(n);
                let cached = cache.parse(n);
                assert_eq!(
                    direct.clone().map(|r| r.e164().to_owned()),
                    cached.clone().map(|r| r.e164().to_owned()),
                    "{n}"
                );
                assert_eq!(
                    direct.map(|r| (
                        r.calling_code(),
                        r.region().map(str::to_owned),
                        r.line_type()
                    )),
                    cached.map(|r| (
                        r.calling_code(),
                        r.region().map(str::to_owned),
                        r.line_type()
                    )),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn a_trunk_prefix_after_the_calling_code_is_dropped_every_time() {
        let cache = cache(100);
        for _ in 0..2 {
            // Twice: the second time must not come from a cached verdict
            // with the input string.
            let r = cache.parse("+4407400123456").unwrap();
            assert_eq!(r.e164(), "+447400123456");
            assert_eq!(r.region(), Some("GB"));
        }
        assert_eq!(cache.entries(), 0, "the trunk-prefix spelling is not kept");
        // Italian numbers keep their leading zero: it is not a trunk prefix.
        for _ in 0..2 {
            assert_eq!(
                cache.parse("+390212345678").unwrap().e164(),
                "+390212345678"
            );
        }
        assert_eq!(cache.entries(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = cache(3);
        for i in 0..20 {
            let n = format!("+1415555{:04}", 100 + i);
            assert!(cache.parse(&n).is_ok(), "{n}");
            assert!(cache.entries() <= 3, "{} entries", cache.entries());
        }
        // Refusals count too: a flood of invalid numbers is bounded alike.
        for i in 0..20 {
            let n = format!("+99912345{i:03}");
            assert_eq!(cache.parse(&n), Err(RecipientError::NotValid));
            assert!(cache.entries() <= 3);
        }
        // What is not E.164 is refused before the cache.
        let before = cache.entries();
        assert_eq!(cache.parse("not a number"), Err(RecipientError::NotE164));
        assert_eq!(cache.entries(), before);
    }

    #[test]
    fn two_caches_share_nothing() {
        let (a, b) = (cache(10), cache(10));
        assert!(!Arc::ptr_eq(a.plan(), b.plan()));
        a.parse("+14155550123").unwrap();
        assert_eq!(a.entries(), 1);
        assert_eq!(b.entries(), 0, "a's verdict is not b's");
        assert_eq!(b.plan().compiled_patterns(), 0, "a's patterns are not b's");
        // Each draws its own hash key: the same number, different keys.
        assert_ne!(
            a.hasher.hash_one("+14155550123"),
            b.hasher.hash_one("+14155550123")
        );
    }

    #[test]
    fn caches_given_one_plan_compile_its_patterns_once() {
        let plan = Arc::new(NumberingPlan::new());
        let (a, b) = (
            RecipientCache::new(plan.clone(), 10),
            RecipientCache::new(plan.clone(), 10),
        );
        a.parse("+14155550123").unwrap();
        let compiled = plan.compiled_patterns();
        assert!(compiled > 0);
        b.parse("+14155550124").unwrap();
        assert_eq!(plan.compiled_patterns(), compiled);
        assert_eq!((a.entries(), b.entries()), (1, 1));
    }
}
