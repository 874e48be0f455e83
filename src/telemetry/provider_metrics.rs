//! Per-provider counters, registered with the service's
//! [`super::metrics::Metrics`]: which provider carried what, failovers
//! between them, providers skipped, and each circuit's state. The provider
//! label is the configured name (a short word checked at start), never a
//! number or a URL.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Default)]
pub struct ProviderMetrics {
    requests: Family<Labels, Counter>,
    failovers: Family<Labels, Counter>,
    skipped: Family<Labels, Counter>,
    circuit_open: Family<Labels, Gauge>,
}

impl ProviderMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = ProviderMetrics::default();
        registry.register(
            "provider_requests",
            "Create requests by provider, channel and outcome (accepted, recipient, configuration, transient, uncertain)",
            m.requests.clone(),
        );
        registry.register(
            "provider_failovers",
            "Sends passed on to the next provider after a certain transient failure, by the provider passed from and channel (the one passed to is in the log line)",
            m.failovers.clone(),
        );
        registry.register(
            "provider_skipped",
            "Providers passed over without a request, by provider and reason (circuit_open, no_slot, no_caller_id)",
            m.skipped.clone(),
        );
        registry.register(
            "provider_circuit_open",
            "1 while this replica's circuit breaker skips the provider (open or probing), else 0",
            m.circuit_open.clone(),
        );
        m
    }

    /// Every provider's series from the start, so a dashboard shows 0s
    /// and a rate over them works from the first failure.
    pub fn known(&self, provider: &str) {
        let _ = self
            .circuit_open
            .get_or_create(&vec![("provider", provider.to_owned())]);
        for channel in ["sms", "voice"] {
            let _ = self.failovers.get_or_create(&vec![
                ("from", provider.to_owned()),
                ("channel", channel.to_owned()),
            ]);
        }
        for reason in ["circuit_open", "no_slot", "no_caller_id"] {
            let _ = self.skipped.get_or_create(&vec![
                ("provider", provider.to_owned()),
                ("reason", reason.to_owned()),
            ]);
        }
    }

    pub fn request(&self, provider: &str, channel: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&vec![
                ("provider", provider.to_owned()),
                ("channel", channel.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    pub fn failover(&self, from: &str, channel: &'static str) {
        self.failovers
            .get_or_create(&vec![
                ("from", from.to_owned()),
                ("channel", channel.to_owned()),
            ])
            .inc();
    }

    pub fn skipped(&self, provider: &str, reason: &'static str) {
        self.skipped
            .get_or_create(&vec![
                ("provider", provider.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn circuit(&self, provider: &str, open: bool) {
        self.circuit_open
            .get_or_create(&vec![("provider", provider.to_owned())])
            .set(i64::from(open));
    }
}
