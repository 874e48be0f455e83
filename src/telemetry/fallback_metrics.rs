//! Metrics of the SMS-to-voice and WhatsApp-to-SMS fallbacks
//! (`delivery::fallback`). Every label value is a static name.

use crate::domain::{Channel, FallbackReason as Reason};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Static = [(&'static str, &'static str); 1];

#[derive(Default)]
pub(crate) struct FallbackMetrics {
    fallbacks: Family<Static, Counter>,
    whatsapp: Family<Static, Counter>,
}

impl FallbackMetrics {
    pub(crate) fn register(registry: &mut Registry) -> FallbackMetrics {
        let m = FallbackMetrics::default();
        // Every reason from the start, so a rate over them works from zero.
        for reason in Reason::ALL {
            let _ = m
                .family(reason)
                .get_or_create(&[("reason", reason.label())]);
        }
        registry.register(
            "fallback_calls",
            "Codes spoken in a call instead of an SMS (the call accepted), by reason: landline, not_mobile (21614), undelivered",
            m.fallbacks.clone(),
        );
        registry.register(
            "whatsapp_fallback_sms",
            "Codes (and notifications, with whatsapp.notification_content_sid) sent by SMS instead of WhatsApp (the SMS accepted), by reason: whatsapp_refused (63003, 63024 at the create, or a number known not to be on WhatsApp), whatsapp_undelivered (a status callback), whatsapp_no_receipt (no delivered receipt within whatsapp.fallback_after_ms)",
            m.whatsapp.clone(),
        );
        m
    }

    fn family(&self, reason: Reason) -> &Family<Static, Counter> {
        match reason.channel() {
            Channel::Sms => &self.whatsapp,
            _ => &self.fallbacks,
        }
    }

    pub(crate) fn fallback(&self, reason: Reason) {
        self.family(reason)
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }
}
