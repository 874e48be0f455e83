//! Metrics of the SMS-to-voice fallback (`delivery::fallback`). Every
//! label value is a static name.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Static = [(&'static str, &'static str); 1];

#[derive(Default)]
pub struct FallbackMetrics {
    fallbacks: Family<Static, Counter>,
}

impl FallbackMetrics {
    pub fn register(registry: &mut Registry) -> FallbackMetrics {
        let m = FallbackMetrics::default();
        // Every reason from the start, so a rate over them works from zero.
        for reason in crate::delivery::fallback::Reason::ALL {
            let _ = m.fallbacks.get_or_create(&[("reason", reason.label())]);
        }
        registry.register(
            "fallback_calls",
            "Codes spoken in a call instead of an SMS (the call accepted), by reason: landline, not_mobile (21614), undelivered",
            m.fallbacks.clone(),
        );
        m
    }

    pub fn fallback(&self, reason: &'static str) {
        self.fallbacks.get_or_create(&[("reason", reason)]).inc();
    }
}
