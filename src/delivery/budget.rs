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
pub use crate::domain::BudgetScope;
use crate::store::{BudgetTake, BudgetUsed};

/// The configured caps, and what a send takes from them.
pub struct Budget {
    /// 0 means no cap.
    daily_total: u32,
    daily_per_country: u32,
    warn_percent: u32,
    clock: Clock,
}

impl Budget {
    pub fn new(daily_total: u32, daily_per_country: u32, warn_percent: u32, clock: Clock) -> Self {
        Budget {
            daily_total,
            daily_per_country,
            warn_percent,
            clock,
        }
    }

    /// The unit a send to `calling_code` takes today; `None` when no cap is
    /// set (nothing to count).
    pub fn take(&self, calling_code: u16) -> Option<BudgetTake> {
        (self.daily_total > 0 || self.daily_per_country > 0).then(|| BudgetTake {
            day: self.clock.utc_day(),
            calling_code,
            total_cap: self.daily_total,
            country_cap: self.daily_per_country,
        })
    }

    /// Until the next UTC midnight, when the counters start again.
    pub fn until_midnight(&self) -> Duration {
        let secs = self.clock.unix().as_secs();
        Duration::from_secs(86_400 - secs % 86_400)
    }

    /// The share of the total cap used, for the gauge (`None`: no cap).
    pub fn used_ratio(&self, used: BudgetUsed) -> Option<f64> {
        (self.daily_total > 0).then(|| f64::from(used.total) / f64::from(self.daily_total))
    }

    /// Warn once when a send crosses `warn_percent` of a cap: the send that
    /// took the counter from below the mark to it or past it.
    pub fn warn_if_crossed(&self, used: BudgetUsed, calling_code: u16) {
        if crossed(used.total, self.daily_total, self.warn_percent) {
            tracing::warn!(
                used = used.total,
                cap = self.daily_total,
                "daily send budget is {}% used",
                self.warn_percent
            );
        }
        if crossed(used.country, self.daily_per_country, self.warn_percent) {
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

/// `used` has just reached `percent` of `cap` (and `used - 1` had not).
/// Caps are bounded by the configuration so that this cannot overflow.
fn crossed(used: u32, cap: u32, percent: u32) -> bool {
    let (used, cap, percent) = (u64::from(used), u64::from(cap), u64::from(percent));
    cap > 0 && used * 100 >= cap * percent && (used.saturating_sub(1)) * 100 < cap * percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_todays_unit_and_knows_midnight() {
        // 2026-11-22 23:00:00 UTC.
        let clock = Clock::starting_at(Duration::from_secs(20_414 * 86_400 + 23 * 3600));
        let b = Budget::new(3, 2, 80, clock);
        let t = b.take(44).unwrap();
        assert_eq!(
            (t.day, t.calling_code, t.total_cap, t.country_cap),
            (20_414, 44, 3, 2)
        );
        assert_eq!(b.until_midnight(), Duration::from_secs(3600));
        assert!(Budget::new(0, 0, 80, Clock::starting_at(Duration::ZERO))
            .take(1)
            .is_none());
    }

    #[test]
    fn warns_once_when_crossing() {
        assert!(!crossed(7, 10, 80));
        assert!(crossed(8, 10, 80));
        assert!(!crossed(9, 10, 80));
        assert!(!crossed(5, 0, 80));
        assert!(crossed(1, 1, 100));
        assert!(crossed(u32::MAX / 100, u32::MAX / 100, 100));
    }
}
