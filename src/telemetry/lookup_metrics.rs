//! Metrics of the Twilio Lookup policy (`lookup`). Every label value is a
//! static name: a `lookup.line_types` key, `none`, `error`, or a refusal
//! code; never a number.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::LINE_TYPES;

type Static = [(&'static str, &'static str); 1];

/// The refusal codes a lookup can lead to.
pub(crate) const REFUSALS: [&str; 4] = [
    "line_type_refused",
    "sim_swap_suspected",
    "sms_pumping_risk",
    "lookup_unavailable",
];

#[derive(Default)]
pub(crate) struct LookupMetrics {
    lookups: Family<Static, Counter>,
    refusals: Family<Static, Counter>,
    /// Lookups not made: `lookup.max_per_hour` was reached.
    capped: Counter,
}

impl LookupMetrics {
    pub(crate) fn register(registry: &mut Registry) -> LookupMetrics {
        let m = LookupMetrics::default();
        // Every value from the start, so a rate over them works from zero.
        for (_, key) in LINE_TYPES {
            let _ = m.lookups.get_or_create(&[("result", key)]);
        }
        for result in ["none", "error"] {
            let _ = m.lookups.get_or_create(&[("result", result)]);
        }
        for reason in REFUSALS {
            let _ = m.refusals.get_or_create(&[("reason", reason)]);
        }
        registry.register(
            "lookups",
            "Twilio Lookup requests (each billed; cached answers are not counted), by result: the line type (lookup.line_types key), none, or error",
            m.lookups.clone(),
        );
        registry.register(
            "lookup_refusals",
            "Codes refused because of Twilio Lookup, by reason: line_type_refused, sim_swap_suspected, sms_pumping_risk, lookup_unavailable",
            m.refusals.clone(),
        );
        registry.register(
            "lookups_capped",
            "Twilio Lookups not made because lookup.max_per_hour was reached (lookup.on_error decides what the message gets)",
            m.capped.clone(),
        );
        m
    }

    pub(crate) fn capped(&self) {
        self.capped.inc();
    }

    pub(crate) fn answered(&self, result: &'static str) {
        self.lookups.get_or_create(&[("result", result)]).inc();
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&[("reason", reason)]).inc();
    }
}
