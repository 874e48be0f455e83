//! A daily send budget: at most so many sends per UTC day in total and per
//! destination country calling code. An SMS-pumping burst that slips under
//! the rate limits still ends at the budget, not at the bill.
//!
//! A send reserves a unit (with its rate-limit cells, in the
//! [`Store`](crate::store)) before it goes to the provider and gives it back
//! when the message was certainly not sent, so concurrent sends cannot
//! overshoot the cap and a retried message is counted once.

use std::time::Duration;

use crate::clock::Clock;
use crate::config::BudgetUnits;
pub use crate::domain::BudgetScope;
use crate::domain::Channel;
use crate::store::{BudgetTake, BudgetUsed};

/// The configured caps, and what a send takes from them.
pub(crate) struct Budget {
    /// 0 means no cap.
    daily_total: u32,
    daily_per_country: u32,
    warn_percent: u32,
    /// What a message of each channel takes (`budget.units`).
    units: BudgetUnits,
    clock: Clock,
}

impl Budget {
    pub(crate) fn new(
        daily_total: u32,
        daily_per_country: u32,
        warn_percent: u32,
        units: BudgetUnits,
        clock: Clock,
    ) -> Self {
        Budget {
            daily_total,
            daily_per_country,
            warn_percent,
            units,
            clock,
        }
    }

    /// The units a message of `channel` to `calling_code` takes today;
    /// `None` when no cap is set (nothing to count).
    pub(crate) fn take(&self, channel: Channel, calling_code: u16) -> Option<BudgetTake> {
        let units = match channel {
            Channel::Sms => self.units.sms,
            Channel::Voice => self.units.voice,
            Channel::WhatsApp => self.units.whatsapp,
        };
        (self.daily_total > 0 || self.daily_per_country > 0).then(|| BudgetTake {
            day: self.clock.utc_day(),
            calling_code,
            total_cap: self.daily_total,
            country_cap: self.daily_per_country,
            units: units.max(1),
        })
    }

    /// Until the next UTC midnight, when the counters start again.
    pub(crate) fn until_midnight(&self) -> Duration {
        let secs = self.clock.unix().as_secs();
        Duration::from_secs(86_400 - secs % 86_400)
    }

    /// The share of the total cap used, for the gauge (`None`: no cap).
    pub(crate) fn used_ratio(&self, used: BudgetUsed) -> Option<f64> {
        (self.daily_total > 0).then(|| f64::from(used.total) / f64::from(self.daily_total))
    }

    /// Warn once when a send crosses `warn_percent` of a cap: the send that
    /// took the counter from below the mark to it or past it (`take`: what
    /// it took).
    pub(crate) fn warn_if_crossed(&self, used: BudgetUsed, take: BudgetTake) {
        let (calling_code, units) = (take.calling_code, take.units);
        if crossed(used.total, units, self.daily_total, self.warn_percent) {
            tracing::warn!(
                used = used.total,
                cap = self.daily_total,
                "daily send budget is {}% used",
                self.warn_percent
            );
        }
        if crossed(
            used.country,
            units,
            self.daily_per_country,
            self.warn_percent,
        ) {
            tracing::warn!(
                country_code = calling_code,
                used = used.country,
                cap = self.daily_per_country,
                "daily send budget for a country is {}% used",
                self.warn_percent
            );
        }
    }
}

/// `used` has just reached `percent` of `cap` (and `used - units`, before
/// the send, had not). Caps are bounded by the configuration so that this
/// cannot overflow.
fn crossed(used: u32, units: u32, cap: u32, percent: u32) -> bool {
    let (used, cap, percent) = (u64::from(used), u64::from(cap), u64::from(percent));
    let before = used.saturating_sub(u64::from(units));
    cap > 0 && used * 100 >= cap * percent && before * 100 < cap * percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_todays_unit_and_knows_midnight() {
        // 2026-11-22 23:00:00 UTC.
        let clock = Clock::starting_at(Duration::from_secs(20_414 * 86_400 + 23 * 3600));
        let units = BudgetUnits {
            sms: 1,
            voice: 5,
            whatsapp: 2,
        };
        let b = Budget::new(3, 2, 80, units, clock);
        let t = b.take(Channel::Sms, 44).unwrap();
        assert_eq!(
            (t.day, t.calling_code, t.total_cap, t.country_cap, t.units),
            (20_414, 44, 3, 2, 1)
        );
        assert_eq!(b.take(Channel::Voice, 44).unwrap().units, 5);
        assert_eq!(b.take(Channel::WhatsApp, 44).unwrap().units, 2);
        assert_eq!(b.until_midnight(), Duration::from_secs(3600));
        assert!(
            Budget::new(0, 0, 80, units, Clock::starting_at(Duration::ZERO))
                .take(Channel::Voice, 1)
                .is_none()
        );
    }

    #[test]
    fn warns_once_when_crossing() {
        assert!(!crossed(7, 1, 10, 80));
        assert!(crossed(8, 1, 10, 80));
        assert!(!crossed(9, 1, 10, 80));
        assert!(!crossed(5, 1, 0, 80));
        assert!(crossed(1, 1, 1, 100));
        assert!(crossed(u32::MAX / 100, 1, u32::MAX / 100, 100));
        // A 3-unit call from 7 to 10 jumps over the 8 of 10 mark: it warns,
        // and the next one (10 to 13 of 20) does not warn about the same mark.
        assert!(crossed(10, 3, 10, 80));
        assert!(!crossed(10, 3, 20, 80));
    }
}
