//! Prometheus metrics, owned by the running service (no global registry, so
//! every test app has its own). (Just past 400 lines only by its unit tests:
//! the families are registered in one place.)
//!
//! Label values come only from bounded sets: endpoint and channel names,
//! Kratos template names (anything else is `other`), our own error codes,
//! country calling codes (a few hundred), and Twilio error codes from the
//! provider's error table (anything else is `other`). No label ever carries a number, a
//! code or a body.

use super::fraud_metrics::FraudMetrics;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::telemetry::export::DroppedSpans;

type Labels = Vec<(&'static str, String)>;
/// Labels whose values are all static: looked up without allocating, for
/// the metrics every send touches.
type Static<const N: usize> = [(&'static str, &'static str); N];
/// `sends`: channel and calling code, written as a number.
type SendLabels = (Static<1>, [(&'static str, u16); 1]);

/// Delivery statuses Twilio reports; others become `other`.
const KNOWN_STATUSES: &[&str] = &[
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "accepted",
    "scheduled",
    "read",
    "canceled",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
];

pub(crate) fn status_label(status: &str) -> &'static str {
    KNOWN_STATUSES
        .iter()
        .find(|s| **s == status)
        .copied()
        .unwrap_or("other")
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Static<5>, Counter>,
    provider_latency: Family<Labels, Histogram>,
    provider_errors: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    limits_missing: Family<Static<2>, Counter>,
    in_flight: Gauge,
    sends: Family<SendLabels, Counter>,
    delivery_status: Family<Labels, Counter>,
    budget_used: Family<Labels, Gauge<f64, AtomicU64>>,
    store_errors: Counter,
    /// The inbound relay's counters (`relay_metrics`).
    relay: super::relay_metrics::RelayMetrics,
    /// The fraud guard's (`telemetry::fraud_metrics`).
    fraud: FraudMetrics,
    /// Per provider: requests, failovers, skips, circuits.
    providers: super::provider_metrics::ProviderMetrics,
    /// Fallback calls (`telemetry::fallback_metrics`).
    fallback: super::fallback_metrics::FallbackMetrics,
    /// Twilio Lookup (`telemetry::lookup_metrics`).
    lookup: super::lookup_metrics::LookupMetrics,
    /// What `/health/ready` last said, for an alert on a replica that stays
    /// out of the load balancer.
    ready: Gauge,
    /// Spans that never reached the collector (`[tracing]`), by reason.
    spans_dropped: DroppedSpans,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("phone_courier");
        let requests = Family::<Static<5>, Counter>::default();
        registry.register(
            "requests",
            "Courier requests by endpoint, channel, template type, outcome and reason",
            requests.clone(),
        );
        let provider_latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "provider_request_duration_seconds",
            "Time a provider took to answer a create request, by provider (its configured name) and channel",
            provider_latency.clone(),
        );
        let provider_errors = Family::<Labels, Counter>::default();
        registry.register(
            "provider_errors",
            "Provider failures by Twilio error code and class",
            provider_errors.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by channel and limiter",
            rate_limited.clone(),
        );
        let limits_missing = Family::<Static<2>, Counter>::default();
        registry.register(
            "limits_missing",
            "Kratos messages limited without what their template should carry (what: client_address, identity_id), by template type: a Kratos or kit setting drops it (README: Abuse controls)",
            limits_missing.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Courier requests being handled now",
            in_flight.clone(),
        );
        let sends = Family::<SendLabels, Counter>::default();
        registry.register(
            "sends",
            "Messages and calls the provider accepted, by channel and destination country calling code",
            sends.clone(),
        );
        let delivery_status = Family::<Labels, Counter>::default();
        registry.register(
            "delivery_status",
            "Status callbacks received, by channel, status and Twilio error code",
            delivery_status.clone(),
        );
        let budget_used = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "budget_used_ratio",
            "Share of a cap used (1.0 = exhausted), by scope: total (today's send budget), lookup_hour (this hour's lookup.max_per_hour)",
            budget_used.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Calls the shared store (Redis) did not answer in time",
            store_errors.clone(),
        );
        let relay = super::relay_metrics::RelayMetrics::register(&mut registry);
        let fraud = FraudMetrics::register(&mut registry);
        let providers = super::provider_metrics::ProviderMetrics::register(&mut registry);
        let fallback = super::fallback_metrics::FallbackMetrics::register(&mut registry);
        let lookup = super::lookup_metrics::LookupMetrics::register(&mut registry);
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while /health/ready answers 200, 0 while it answers 503 (its body says why)",
            ready.clone(),
        );
        let spans_dropped = DroppedSpans::default();
        // Both reasons from the start, so a rate over them works from zero.
        for reason in ["queue_full", "export_failed"] {
            let _ = spans_dropped.get_or_create(&vec![("reason", reason)]);
        }
        registry.register(
            "trace_spans_dropped",
            "Trace spans not exported: queue_full (the collector is slow or away) or export_failed",
            spans_dropped.clone(),
        );
        Metrics {
            relay,
            fraud,
            providers,
            fallback,
            lookup,
            spans_dropped,
            ready,
            store_errors,
            registry,
            requests,
            provider_latency,
            provider_errors,
            rate_limited,
            limits_missing,
            in_flight,
            sends,
            delivery_status,
            budget_used,
        }
    }

    pub(crate) fn request(
        &self,
        endpoint: &'static str,
        channel: &'static str,
        template_type: &'static str,
        outcome: &'static str,
        reason: &'static str,
    ) {
        self.requests
            .get_or_create(&[
                ("endpoint", endpoint),
                ("channel", channel),
                ("template_type", template_type),
                ("outcome", outcome),
                ("reason", reason),
            ])
            .inc();
    }

    /// A provider's series (`telemetry::provider_metrics`), its latency
    /// histograms included; `provider` is the configured name, never a URL.
    pub(crate) fn provider_series(
        &self,
        provider: &str,
    ) -> super::provider_metrics::ProviderSeries {
        let latency = super::provider_metrics::CHANNELS.map(|channel| {
            self.provider_latency
                .get_or_create(&vec![
                    ("provider", provider.to_owned()),
                    ("channel", channel.to_owned()),
                ])
                .clone()
        });
        self.providers.series(provider, latency)
    }

    /// `code` is a bounded label from the provider's error table
    /// (`provider::errors::metric_label`).
    pub(crate) fn provider_error(&self, code: &'static str, class: &'static str) {
        self.provider_errors
            .get_or_create(&vec![
                ("code", code.to_owned()),
                ("class", class.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn rate_limited(&self, channel: &'static str, limiter: &'static str) {
        self.rate_limited
            .get_or_create(&vec![
                ("channel", channel.to_owned()),
                ("limiter", limiter.to_owned()),
            ])
            .inc();
    }

    /// A Kratos message lacked what its template should carry (`what`:
    /// `client_address` or `identity_id`).
    pub(crate) fn limits_missing(&self, what: &'static str, template: &'static str) {
        self.limits_missing
            .get_or_create(&[("what", what), ("template", template)])
            .inc();
    }

    /// Counts a request in flight until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn sent(&self, channel: &'static str, calling_code: u16) {
        self.sends
            .get_or_create(&([("channel", channel)], [("country_code", calling_code)]))
            .inc();
    }

    /// `error_code` is a bounded label from the provider's error table.
    pub(crate) fn delivery_status(
        &self,
        channel: &'static str,
        status: &str,
        error_code: &'static str,
    ) {
        self.delivery_status
            .get_or_create(&vec![
                ("channel", channel.to_owned()),
                ("status", status_label(status).to_owned()),
                ("error_code", error_code.to_owned()),
            ])
            .inc();
    }

    /// The inbound relay's counters.
    pub(crate) fn relay(&self) -> &super::relay_metrics::RelayMetrics {
        &self.relay
    }

    /// The counter the store increments when Redis does not answer.
    pub(crate) fn store_errors(&self) -> Counter {
        self.store_errors.clone()
    }

    /// The counter the trace exporter increments for every span it loses.
    pub(crate) fn spans_dropped(&self) -> DroppedSpans {
        self.spans_dropped.clone()
    }

    /// Record what readiness answered (or would answer).
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub(crate) fn budget_used(&self, ratio: f64) {
        self.budget_used_in("total", ratio);
    }

    /// The share used of a cap other than the send budget's total
    /// (`lookup_hour`: `lookup.max_per_hour`).
    pub(crate) fn budget_used_in(&self, scope: &'static str, ratio: f64) {
        self.budget_used
            .get_or_create(&vec![("scope", scope.to_owned())])
            .set(ratio);
    }

    /// The per-provider counters.
    pub(crate) fn providers(&self) -> &super::provider_metrics::ProviderMetrics {
        &self.providers
    }

    /// A code spoken in a call instead of an SMS, or sent by SMS instead
    /// of WhatsApp, by reason.
    pub(crate) fn fallback(&self, reason: crate::domain::FallbackReason) {
        self.fallback.fallback(reason);
    }

    /// A Twilio Lookup answered (billed): by line type (`lookup.line_types`
    /// key, or `none` when the line type was not asked or had no data).
    pub(crate) fn lookup_answered(&self, line_type: &'static str) {
        self.lookup.answered(line_type);
    }

    /// A Twilio Lookup not made: `lookup.max_per_hour` was reached.
    pub(crate) fn lookup_capped(&self) {
        self.lookup.capped();
    }

    /// A Twilio Lookup failed (timeout, transport, HTTP error, bad body).
    pub(crate) fn lookup_failed(&self) {
        self.lookup.answered("error");
    }

    /// A code refused because of a Lookup answer (or its absence).
    pub(crate) fn lookup_refused(&self, reason: &'static str) {
        self.lookup.refused(reason);
    }

    pub(crate) fn fraud(&self) -> &FraudMetrics {
        &self.fraud
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_label("delivered"), "delivered");
        assert_eq!(status_label("+14155550123"), "other");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request("/v1/sms", "sms", "login_code_valid", "accepted", "none");
        m.sent("sms", 1);
        {
            let _g = m.in_flight();
        }
        let text = m.render();
        assert!(text.contains("phone_courier_requests_total{endpoint=\"/v1/sms\",channel=\"sms\",template_type=\"login_code_valid\",outcome=\"accepted\",reason=\"none\"} 1"), "{text}");
        assert!(text.contains("phone_courier_sends_total{channel=\"sms\",country_code=\"1\"} 1"));
        assert!(text.contains("phone_courier_in_flight_requests 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
