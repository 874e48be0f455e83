//! A daily send budget: at most so many sends per UTC day in total and per
//! destination country calling code. An SMS-pumping burst that slips under
//! the rate limits still ends at the budget, not at the bill.
//!
//! A send reserves a unit before it goes to the provider and gives it back if
//! the provider refuses, so concurrent sends cannot overshoot the cap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Total,
    Country,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Total => "total",
            BudgetScope::Country => "country",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted {
    pub scope: BudgetScope,
    /// Until the next UTC midnight.
    pub retry_after: Duration,
}

struct Day {
    day: u64,
    total: u32,
    per_country: HashMap<u16, u32>,
    warned_total: bool,
    warned_countries: Vec<u16>,
}

pub struct Budget {
    /// 0 means no cap.
    daily_total: u32,
    daily_per_country: u32,
    warn_percent: u32,
    clock: Clock,
    state: Mutex<Day>,
}

/// A unit of budget held for one send.
#[must_use]
pub struct Reservation {
    calling_code: u16,
    day: u64,
}

impl Budget {
    pub fn new(daily_total: u32, daily_per_country: u32, warn_percent: u32, clock: Clock) -> Self {
        let day = clock.utc_day();
        Budget {
            daily_total,
            daily_per_country,
            warn_percent,
            clock,
            state: Mutex::new(Day {
                day,
                total: 0,
                per_country: HashMap::new(),
                warned_total: false,
                warned_countries: Vec::new(),
            }),
        }
    }

    fn until_midnight(&self) -> Duration {
        let secs = self.clock.unix().as_secs();
        Duration::from_secs(86_400 - secs % 86_400)
    }

    pub fn reserve(&self, calling_code: u16) -> Result<Reservation, BudgetExhausted> {
        let today = self.clock.utc_day();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.day != today {
            *s = Day {
                day: today,
                total: 0,
                per_country: HashMap::new(),
                warned_total: false,
                warned_countries: Vec::new(),
            };
        }
        if self.daily_total > 0 && s.total >= self.daily_total {
            return Err(BudgetExhausted {
                scope: BudgetScope::Total,
                retry_after: self.until_midnight(),
            });
        }
        let country = s.per_country.get(&calling_code).copied().unwrap_or(0);
        if self.daily_per_country > 0 && country >= self.daily_per_country {
            return Err(BudgetExhausted {
                scope: BudgetScope::Country,
                retry_after: self.until_midnight(),
            });
        }
        s.total += 1;
        let country = country + 1;
        s.per_country.insert(calling_code, country);
        if self.daily_total > 0
            && !s.warned_total
            && s.total * 100 >= self.daily_total * self.warn_percent
        {
            s.warned_total = true;
            tracing::warn!(
                used = s.total,
                cap = self.daily_total,
                "daily send budget is {}% used",
                self.warn_percent
            );
        }
        if self.daily_per_country > 0
            && country * 100 >= self.daily_per_country * self.warn_percent
            && !s.warned_countries.contains(&calling_code)
        {
            s.warned_countries.push(calling_code);
            tracing::warn!(
                country_code = calling_code,
                used = country,
                cap = self.daily_per_country,
                "daily send budget for a country is {}% used",
                self.warn_percent
            );
        }
        Ok(Reservation {
            calling_code,
            day: today,
        })
    }

    /// Give back a unit the provider did not use.
    pub fn release(&self, r: Reservation) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.day != r.day {
            return;
        }
        s.total = s.total.saturating_sub(1);
        if let Some(c) = s.per_country.get_mut(&r.calling_code) {
            *c = c.saturating_sub(1);
        }
    }

    /// Sends used today: (total, for this calling code).
    pub fn used(&self, calling_code: u16) -> (u32, u32) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.day != self.clock.utc_day() {
            return (0, 0);
        }
        (
            s.total,
            s.per_country.get(&calling_code).copied().unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn caps_per_day_and_rolls_over_at_utc_midnight() {
        // 2026-11-22 23:00:00 UTC.
        let clock = Clock::starting_at(Duration::from_secs(20_414 * 86_400 + 23 * 3600));
        let b = Budget::new(3, 2, 80, clock);
        let _a = b.reserve(1).unwrap();
        let _b = b.reserve(1).unwrap();
        let e = b.reserve(1).err().unwrap();
        assert_eq!(e.scope, BudgetScope::Country);
        assert_eq!(e.retry_after, Duration::from_secs(3600));
        let r = b.reserve(49).unwrap();
        assert_eq!(b.reserve(44).err().unwrap().scope, BudgetScope::Total);
        b.release(r);
        let _c = b.reserve(44).unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.used(1), (0, 0));
        let _d = b.reserve(1).unwrap();
        assert_eq!(b.used(1), (1, 1));
    }

    #[test]
    fn zero_means_no_cap() {
        let b = Budget::new(0, 0, 80, Clock::starting_at(Duration::ZERO));
        for _ in 0..10_000 {
            let _ = b.reserve(1).unwrap();
        }
    }
}
