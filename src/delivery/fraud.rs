//! The fraud guard: SMS-pumping detection from Kratos's own confirmations.
//!
//! Pumped codes are never used; real users use most of theirs. So per
//! destination country (calling code) and per number prefix the store
//! counts codes sent (once the provider accepted them) and codes Kratos
//! reported confirmed, and a country or prefix is *suspect* while its
//! unconfirmed codes in the last hour exceed
//! `floor + ratio × max(confirmed in the last hour, the busiest hour of
//! confirmations in 14 days)`. Once the rule holds, the destination is
//! held suspect for `fraud.hold_minutes` (a refused campaign stops adding
//! unconfirmed codes, and must not be let back in an hour later).
//!
//! The busiest hour cannot be raised at once: each day's busiest hour
//! counts at most `fraud.peak_growth` times the (so bounded) busiest hour
//! of the days before it, and at least the floor ([`bounded_peak`]). So
//! completing N codes in one hour with one's own SIMs lifts the bar for the
//! next 14 days to `peak_growth` × the weeks before, not to N; the rolling
//! hour's own confirmations still count in full.
//!
//! A number that confirmed a code within 30 days (`store::fraud::
//! TRUSTED_MS`) is not refused for its prefix's hold: an attacker who makes
//! a block suspect with codes nobody uses cannot lock out the people in it
//! who use theirs. Its country's hold applies to it as to any number.
//!
//! With `fraud.action = "deny"` a code to a suspect destination is refused
//! (429 `fraud_suspected`) before any quota is taken; with `record_only` it
//! is sent, and the metrics and one warning per destination say so.
//! Destinations in `fraud.always_allow` are counted but never suspected.
//!
//! Nothing here names a number or a prefix: the store holds keyed hashes,
//! metrics and logs carry the calling code only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{FraudAction, FraudConfig};
use crate::delivery::error::DeliveryError;
use crate::delivery::limits::Prefixes;
use crate::phone::Recipient;
use crate::store::{
    Confirmed, FraudKeys, FraudScope, Keys, Store, StoreError, Tallies, Tally, UnixMs,
};
use crate::telemetry::metrics::Metrics;

/// What the guard knows of one send, computed once (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    keys: FraudKeys,
    /// In `fraud.always_allow`: counted, never suspected.
    always_allowed: bool,
}

/// See the module documentation.
pub struct FraudGuard {
    config: FraudConfig,
    prefixes: Prefixes,
    keys: Keys,
    metrics: Arc<Metrics>,
    /// Suspect prefixes this replica has seen, per calling code, with their
    /// hold: for the gauge only (decisions read the store).
    seen: Mutex<HashMap<u16, Seen>>,
}

#[derive(Default)]
struct Seen {
    country_until: UnixMs,
    prefixes: HashMap<u64, UnixMs>,
}

impl FraudGuard {
    pub fn new(config: FraudConfig, prefixes: Prefixes, keys: Keys, metrics: Arc<Metrics>) -> Self {
        FraudGuard {
            config,
            prefixes,
            keys,
            metrics,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn watch(&self, recipient: &Recipient) -> Watch {
        let always_allowed = self
            .config
            .always_allow_numbers
            .iter()
            .any(|n| n.as_str() == recipient.e164())
            || recipient.region().is_some_and(|region| {
                self.config
                    .always_allow_countries
                    .iter()
                    .any(|c| c.as_str() == region)
            });
        Watch {
            keys: FraudKeys {
                calling_code: recipient.calling_code(),
                prefix: self.prefixes.key(&self.keys, recipient),
                number: self.keys.limit("number", recipient.e164().as_bytes()),
            },
            always_allowed,
        }
    }

    /// Before a send: with `deny`, refuse a code to a suspect destination.
    /// With `record_only`, or for an always-allowed one, asks nothing.
    pub(crate) async fn check(
        &self,
        store: &Store,
        watch: &Watch,
        now: UnixMs,
    ) -> Result<(), DeliveryError> {
        if self.config.action != FraudAction::Deny || watch.always_allowed {
            return Ok(());
        }
        let tallies = store.fraud_tallies(&watch.keys, now).await?;
        let until = self.judge(store, watch, &tallies, now).await;
        if until > now {
            self.metrics.fraud().refused(watch.keys.calling_code);
            return Err(DeliveryError::FraudSuspected {
                retry_after: (until - now).div_ceil(1000).max(1),
            });
        }
        Ok(())
    }

    /// After the provider accepted a code: count it, and see whether its
    /// destination became suspect. A store that does not answer loses the
    /// count, not the send.
    pub async fn sent(&self, store: &Store, watch: &Watch, now: UnixMs) {
        match store.fraud_record_sent(&watch.keys, now).await {
            Ok(tallies) => {
                let c = &tallies.country;
                self.metrics
                    .fraud()
                    .sent(watch.keys.calling_code, c.sent, c.confirmed);
                if !watch.always_allowed {
                    self.judge(store, watch, &tallies, now).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "the fraud guard could not count a send"),
        }
    }

    /// Kratos says a code to `recipient` was used: counted if one is
    /// outstanding for it. Answers whether it was counted.
    pub async fn confirmed(
        &self,
        store: &Store,
        recipient: &Recipient,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let watch = self.watch(recipient);
        match store.fraud_record_confirmed(&watch.keys, now).await? {
            Confirmed::Counted(tallies) => {
                let c = &tallies.country;
                self.metrics
                    .fraud()
                    .confirmed(watch.keys.calling_code, c.sent, c.confirmed);
                Ok(true)
            }
            Confirmed::NeverSent => {
                self.metrics.fraud().ignored("never_sent");
                Ok(false)
            }
        }
    }

    /// Whether the rule holds for one country or prefix now.
    pub(crate) fn rule_holds(&self, tally: &Tally, floor: u32) -> bool {
        let unconfirmed = f64::from(tally.sent.saturating_sub(tally.confirmed));
        let peak = bounded_peak(&tally.daily_peaks, floor, self.config.peak_growth);
        // The floor is slack on top of the ratio: a block of real users
        // with a handful of confirmations an hour must not be suspect for
        // a handful of abandoned codes (bench/fraud.md, the busy hour).
        let bar = f64::from(floor) + self.config.ratio * f64::from(tally.confirmed).max(peak);
        unconfirmed > bar
    }

    /// Hold each scope whose rule holds; the latest hold in force (0: none).
    async fn judge(&self, store: &Store, watch: &Watch, tallies: &Tallies, now: UnixMs) -> UnixMs {
        // A trusted number is not refused for its prefix's hold.
        let prefix_holds = !tallies.number_trusted;
        let mut until = tallies.country.suspect_until.max(if prefix_holds {
            tallies.prefix.suspect_until
        } else {
            0
        });
        let hold_until = now + self.config.hold.as_millis() as u64;
        for (scope, floor) in [
            (FraudScope::Country, self.config.min_unconfirmed_per_hour),
            (
                FraudScope::Prefix,
                self.config.prefix_min_unconfirmed_per_hour,
            ),
        ] {
            let tally = tallies.of(scope);
            if !self.rule_holds(tally, floor) {
                continue;
            }
            if tally.suspect_until <= now {
                tracing::warn!(
                    scope = match scope {
                        FraudScope::Country => "country",
                        FraudScope::Prefix => "prefix",
                    },
                    country_code = watch.keys.calling_code,
                    sent = tally.sent,
                    confirmed = tally.confirmed,
                    action = match self.config.action {
                        FraudAction::Deny => "deny",
                        FraudAction::RecordOnly => "record_only",
                    },
                    "SMS pumping suspected: codes to this destination are not being confirmed"
                );
            }
            if let Err(e) = store
                .fraud_mark_suspect(&watch.keys, scope, hold_until, now)
                .await
            {
                tracing::warn!(error = %e, "the fraud guard could not record a suspect");
            }
            if scope == FraudScope::Country || prefix_holds {
                until = until.max(hold_until);
            }
        }
        // Every judgement updates the gauges, so a hold that has ended reads
        // 0 at the next send to that country (and the alert clears).
        self.gauge(watch, tallies, hold_until, now);
        until
    }

    /// Update the suspect gauges of the watch's calling code.
    fn gauge(&self, watch: &Watch, tallies: &Tallies, hold_until: UnixMs, now: UnixMs) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(watch.keys.calling_code).or_default();
        let country = tallies.country.suspect_until.max(
            if self.rule_holds(&tallies.country, self.config.min_unconfirmed_per_hour) {
                hold_until
            } else {
                0
            },
        );
        entry.country_until = entry.country_until.max(country);
        let prefix = tallies.prefix.suspect_until.max(
            if self.rule_holds(&tallies.prefix, self.config.prefix_min_unconfirmed_per_hour) {
                hold_until
            } else {
                0
            },
        );
        if prefix > now {
            let held = entry.prefixes.entry(watch.keys.prefix).or_default();
            *held = (*held).max(prefix);
        }
        entry.prefixes.retain(|_, until| *until > now);
        self.metrics.fraud().suspects(
            watch.keys.calling_code,
            entry.country_until > now,
            entry.prefixes.len(),
        );
    }
}

/// The busiest hour of confirmations the rule may count, from each day's
/// busiest hour (oldest first): a day counts at most `growth` times the
/// bounded busiest hour of the days before it, and never less than `floor`
/// lets it. One hour of many confirmations (an attacker's own SIMs) lifts
/// the figure by `growth` at most; only a rise kept up day after day lifts
/// it further, `growth` times a day.
pub(crate) fn bounded_peak(daily_peaks: &[u32], floor: u32, growth: f64) -> f64 {
    let mut best = 0.0_f64;
    for &day in daily_peaks {
        let cap = f64::from(floor).max(growth * best);
        best = best.max(f64::from(day).min(cap));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_busy_hour_lifts_the_peak_by_the_growth_factor_only() {
        // Two weeks of about 20 confirmations in the busiest hour.
        let mut days = [20u32; 14];
        assert_eq!(bounded_peak(&days, 30, 2.0), 20.0);
        // 500 confirmed in one hour today: counts as 40.
        days[13] = 500;
        assert_eq!(bounded_peak(&days, 30, 2.0), 40.0);
        // A new deployment: the floor, then growth day by day.
        let mut fresh = [0u32; 14];
        fresh[13] = 500;
        assert_eq!(bounded_peak(&fresh, 30, 2.0), 30.0);
        let rising: Vec<u32> = (0..14).map(|d| 10 << d).collect();
        assert_eq!(bounded_peak(&rising, 30, 2.0), f64::from(10u32 << 13));
        assert_eq!(bounded_peak(&[], 30, 2.0), 0.0);
    }
}
