//! The fraud guard's counters: per destination country (calling code) and
//! per hashed number prefix, the codes sent and confirmed in the last hour,
//! the busiest hour of confirmations in the last 14 days, and until when
//! the country or prefix is held as suspect; per hashed number, the codes
//! sent and not yet confirmed (so a confirmation for a number never sent
//! to counts for nothing).
//!
//! Both backends keep the same windows, computed from the caller's clock:
//! the last hour is the current 5-minute slot and the 11 before it, the
//! busiest hour is kept per UTC day as the largest count of one clock hour,
//! for the current day and the 13 before. This file holds those shapes and
//! the memory backend; `redis/fraud.rs` holds the same in one Lua script.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{LimitKey, UnixMs};

/// The width of one slot of the rolling hour.
pub(crate) const SLOT_MS: u64 = 300_000;
/// Slots in the rolling hour (the current one included).
pub(crate) const SLOTS: u64 = 12;
pub(crate) const HOUR_MS: u64 = 3_600_000;
pub(crate) const DAY_MS: u64 = 86_400_000;
/// Days of history behind the busiest-hour figure.
pub(crate) const PEAK_DAYS: u64 = 14;
/// How long a sent code can still be confirmed (Kratos's code lifespan is
/// at most this in practice; the kit sets 15 minutes).
pub(crate) const NUMBER_TTL_MS: u64 = DAY_MS;

/// How long a number that confirmed a code is *trusted*: the prefix
/// limiter and the prefix hold do not apply to it (`delivery::limits`,
/// `delivery::fraud`). Pumped numbers never confirm, so only the people
/// who use their codes earn it, each for their own number.
pub(crate) const TRUSTED_MS: u64 = 30 * DAY_MS;

/// What one send or confirmation is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FraudKeys {
    pub(crate) calling_code: u16,
    /// The keyed hash of the number's prefix.
    pub(crate) prefix: LimitKey,
    /// The keyed hash of the number.
    pub(crate) number: LimitKey,
}

/// Which of a number's two scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FraudScope {
    Country,
    Prefix,
}

/// The counts of one country or prefix as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    /// Codes sent in the rolling hour.
    pub(crate) sent: u32,
    /// Codes confirmed in the rolling hour.
    pub(crate) confirmed: u32,
    /// The most confirmations in one clock hour over the last 14 days.
    pub(crate) peak_confirmed: u32,
    /// The busiest hour of each of those days, oldest first (today last;
    /// 0 for a day with none): what `delivery::fraud` bounds the peak's
    /// growth with.
    pub(crate) daily_peaks: [u32; PEAK_DAYS as usize],
    /// Held as suspect until then (0: never).
    pub(crate) suspect_until: UnixMs,
}

/// The tallies of a number's country and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tallies {
    pub(crate) country: Tally,
    pub(crate) prefix: Tally,
    /// The number confirmed a code within [`TRUSTED_MS`].
    pub(crate) number_trusted: bool,
}

impl Tallies {
    pub(crate) fn of(&self, scope: FraudScope) -> &Tally {
        match scope {
            FraudScope::Country => &self.country,
            FraudScope::Prefix => &self.prefix,
        }
    }
}

/// What a confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// A code was outstanding for the number: counted.
    Counted(Tallies),
    /// No code sent to this number is waiting: ignored.
    NeverSent,
}

/// The memory backend's counters (one mutex of their own: they are
/// touched once per send, apart from the ledger and the limits).
#[derive(Default)]
pub(crate) struct MemoryFraud {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    countries: HashMap<u16, Counts>,
    prefixes: HashMap<LimitKey, Counts>,
    /// Outstanding codes per number, and when the last one stops counting.
    numbers: HashMap<LimitKey, (u32, UnixMs)>,
    /// Numbers that confirmed a code, until when they are trusted.
    trusted: HashMap<LimitKey, UnixMs>,
}

#[derive(Default, Clone, Copy)]
struct Slot {
    id: u64,
    sent: u32,
    confirmed: u32,
}

#[derive(Default)]
struct Counts {
    slots: [Slot; SLOTS as usize],
    /// The current clock hour and its confirmations.
    hour: (u64, u32),
    /// Per day (index day % 14): the day and its busiest hour.
    days: [(u64, u32); PEAK_DAYS as usize],
    suspect_until: UnixMs,
    touched: UnixMs,
}

impl Counts {
    fn add(&mut self, now: UnixMs, sent: u32, confirmed: u32) {
        let id = now / SLOT_MS;
        let slot = &mut self.slots[(id % SLOTS) as usize];
        if slot.id != id {
            *slot = Slot {
                id,
                ..Slot::default()
            };
        }
        slot.sent += sent;
        slot.confirmed += confirmed;
        if confirmed > 0 {
            let hour = now / HOUR_MS;
            if self.hour.0 != hour {
                self.hour = (hour, 0);
            }
            self.hour.1 += confirmed;
            let day = now / DAY_MS;
            let entry = &mut self.days[(day % PEAK_DAYS) as usize];
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 = entry.1.max(self.hour.1);
        }
        self.touched = now;
    }

    fn tally(&self, now: UnixMs) -> Tally {
        let id = now / SLOT_MS;
        let day = now / DAY_MS;
        let recent = self
            .slots
            .iter()
            .filter(|s| s.id <= id && s.id + SLOTS > id);
        let (sent, confirmed) =
            recent.fold((0, 0), |(s, c), slot| (s + slot.sent, c + slot.confirmed));
        let mut daily_peaks = [0; PEAK_DAYS as usize];
        for (d, max) in &self.days {
            if *d <= day && d + PEAK_DAYS > day {
                daily_peaks[(PEAK_DAYS - 1 - (day - d)) as usize] = *max;
            }
        }
        Tally {
            sent,
            confirmed,
            peak_confirmed: daily_peaks.iter().copied().max().unwrap_or(0),
            daily_peaks,
            suspect_until: self.suspect_until,
        }
    }

    /// Nothing in it counts any more.
    fn idle(&self, now: UnixMs) -> bool {
        self.suspect_until <= now
            && self.touched + HOUR_MS <= now
            && self.tally(now).peak_confirmed == 0
    }
}

impl MemoryFraud {
    pub(crate) fn tallies(&self, keys: &FraudKeys, now: UnixMs) -> Tallies {
        let state = self.lock();
        let tally = |c: Option<&Counts>| c.map_or(Tally::default(), |c| c.tally(now));
        Tallies {
            country: tally(state.countries.get(&keys.calling_code)),
            prefix: tally(state.prefixes.get(&keys.prefix)),
            number_trusted: state.is_trusted(keys.number, now),
        }
    }

    /// Whether `number` confirmed a code within [`TRUSTED_MS`].
    pub(crate) fn trusted(&self, number: LimitKey, now: UnixMs) -> bool {
        self.lock().is_trusted(number, now)
    }

    pub(crate) fn record_sent(&self, keys: &FraudKeys, now: UnixMs) -> Tallies {
        let mut state = self.lock();
        let number = state.numbers.entry(keys.number).or_insert((0, 0));
        if number.1 <= now {
            *number = (0, 0);
        }
        *number = (number.0 + 1, now + NUMBER_TTL_MS);
        state.add(keys, now, 1, 0)
    }

    pub(crate) fn record_confirmed(&self, keys: &FraudKeys, now: UnixMs) -> Confirmed {
        let mut state = self.lock();
        match state.numbers.get_mut(&keys.number) {
            Some((outstanding, until)) if *until > now && *outstanding > 0 => {
                *outstanding -= 1;
                if *outstanding == 0 {
                    state.numbers.remove(&keys.number);
                }
                state.trusted.insert(keys.number, now + TRUSTED_MS);
                Confirmed::Counted(state.add(keys, now, 0, 1))
            }
            _ => Confirmed::NeverSent,
        }
    }

    pub(crate) fn mark_suspect(
        &self,
        keys: &FraudKeys,
        scope: FraudScope,
        until: UnixMs,
        now: UnixMs,
    ) {
        let mut state = self.lock();
        let counts = match scope {
            FraudScope::Country => state.countries.entry(keys.calling_code).or_default(),
            FraudScope::Prefix => state.prefixes.entry(keys.prefix).or_default(),
        };
        counts.suspect_until = counts.suspect_until.max(until);
        counts.touched = counts.touched.max(now);
    }

    /// Drop what no longer counts.
    pub(crate) fn prune(&self, now: UnixMs) {
        let mut state = self.lock();
        state.countries.retain(|_, c| !c.idle(now));
        state.prefixes.retain(|_, c| !c.idle(now));
        state.numbers.retain(|_, (_, until)| *until > now);
        state.trusted.retain(|_, until| *until > now);
    }

    /// Prefixes and numbers held (tests check that pruning bounds them).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        let state = self.lock();
        state.prefixes.len() + state.numbers.len() + state.trusted.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts, never a broken
        // invariant: keep counting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn is_trusted(&self, number: LimitKey, now: UnixMs) -> bool {
        self.trusted.get(&number).is_some_and(|until| *until > now)
    }

    fn add(&mut self, keys: &FraudKeys, now: UnixMs, sent: u32, confirmed: u32) -> Tallies {
        let country = self.countries.entry(keys.calling_code).or_default();
        country.add(now, sent, confirmed);
        let country = country.tally(now);
        let prefix = self.prefixes.entry(keys.prefix).or_default();
        prefix.add(now, sent, confirmed);
        let prefix = prefix.tally(now);
        Tallies {
            country,
            prefix,
            number_trusted: self.is_trusted(keys.number, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: FraudKeys = FraudKeys {
        calling_code: 44,
        prefix: 7,
        number: 9,
    };

    #[test]
    fn the_rolling_hour_forgets_and_the_peak_remembers_14_days() {
        let f = MemoryFraud::default();
        let t0 = 100 * DAY_MS;
        for _ in 0..3 {
            f.record_sent(&K, t0);
        }
        assert_eq!(
            f.record_confirmed(&K, t0 + 1000).clone(),
            Confirmed::Counted(f.tallies(&K, t0 + 1000))
        );
        let now = f.tallies(&K, t0 + 1000);
        assert_eq!(
            (
                now.country.sent,
                now.country.confirmed,
                now.country.peak_confirmed
            ),
            (3, 1, 1)
        );
        assert_eq!(now.prefix, now.country);
        // 55 minutes on: still in the hour; 60: gone, but the peak stays.
        assert_eq!(f.tallies(&K, t0 + 55 * 60_000).prefix.sent, 3);
        let later = f.tallies(&K, t0 + HOUR_MS);
        assert_eq!(
            (
                later.prefix.sent,
                later.prefix.confirmed,
                later.prefix.peak_confirmed
            ),
            (0, 0, 1)
        );
        assert_eq!(f.tallies(&K, t0 + 13 * DAY_MS).prefix.peak_confirmed, 1);
        assert_eq!(f.tallies(&K, t0 + 14 * DAY_MS).prefix.peak_confirmed, 0);
    }

    #[test]
    fn a_confirmed_number_is_trusted_for_30_days_and_days_are_kept_apart() {
        let f = MemoryFraud::default();
        let t0 = 100 * DAY_MS;
        f.record_sent(&K, t0);
        assert!(!f.tallies(&K, t0).number_trusted);
        assert!(!f.trusted(K.number, t0));
        f.record_confirmed(&K, t0 + 1000);
        assert!(f.tallies(&K, t0 + 1000).number_trusted);
        assert!(f.trusted(K.number, t0 + TRUSTED_MS));
        assert!(!f.trusted(K.number, t0 + 1000 + TRUSTED_MS));
        // Another number of the same prefix is not.
        assert!(!f.trusted(K.number + 1, t0 + 1000));
        // Two confirmations the next day: oldest first, today last.
        for i in 0..2 {
            f.record_sent(&K, t0 + DAY_MS + i);
            f.record_confirmed(&K, t0 + DAY_MS + 10 + i);
        }
        let peaks = f.tallies(&K, t0 + DAY_MS + 100).prefix.daily_peaks;
        assert_eq!(peaks[12..], [1, 2]);
        assert_eq!(peaks[..12], [0; 12]);
        f.prune(t0 + 1000 + TRUSTED_MS + DAY_MS);
        assert_eq!(f.entries(), 0);
    }

    #[test]
    fn a_confirmation_counts_only_against_an_outstanding_code() {
        let f = MemoryFraud::default();
        assert_eq!(f.record_confirmed(&K, 0), Confirmed::NeverSent);
        f.record_sent(&K, 0);
        assert!(matches!(f.record_confirmed(&K, 1), Confirmed::Counted(_)));
        assert_eq!(f.record_confirmed(&K, 2), Confirmed::NeverSent);
        f.record_sent(&K, 10);
        assert_eq!(
            f.record_confirmed(&K, 10 + NUMBER_TTL_MS),
            Confirmed::NeverSent
        );
    }

    #[test]
    fn suspects_are_held_and_idle_state_is_pruned() {
        let f = MemoryFraud::default();
        f.record_sent(&K, 0);
        f.mark_suspect(&K, FraudScope::Prefix, 5 * HOUR_MS, 0);
        assert_eq!(f.tallies(&K, HOUR_MS).prefix.suspect_until, 5 * HOUR_MS);
        assert_eq!(f.tallies(&K, HOUR_MS).country.suspect_until, 0);
        f.prune(2 * HOUR_MS);
        assert_eq!(f.tallies(&K, 2 * HOUR_MS).prefix.suspect_until, 5 * HOUR_MS);
        f.prune(NUMBER_TTL_MS);
        assert_eq!(f.entries(), 0);
    }
}
