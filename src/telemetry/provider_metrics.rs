//! Per-provider counters, registered with the service's
//! [`super::metrics::Metrics`]: which provider carried what, failovers
//! between them, providers skipped, and each circuit's state. The provider
//! label is the configured name (a short word checked at start), never a
//! number or a URL.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Default)]
pub(crate) struct ProviderMetrics {
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
    pub(crate) fn known(&self, provider: &str) {
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

    /// One provider's series, created now and held by the provider, so a
    /// send counts and times itself without building labels (every send
    /// touches them). `latency` is [`super::metrics::Metrics`]'s histogram
    /// family's series for this provider, by channel.
    pub(crate) fn series(&self, provider: &str, latency: [Histogram; 2]) -> ProviderSeries {
        let requests = CHANNELS.map(|channel| {
            OUTCOMES.map(|outcome| {
                self.requests
                    .get_or_create(&vec![
                        ("provider", provider.to_owned()),
                        ("channel", channel.to_owned()),
                        ("outcome", outcome.to_owned()),
                    ])
                    .clone()
            })
        });
        let circuit_open = self
            .circuit_open
            .get_or_create(&vec![("provider", provider.to_owned())])
            .clone();
        ProviderSeries {
            requests,
            latency,
            circuit_open,
        }
    }

    pub(crate) fn failover(&self, from: &str, channel: &'static str) {
        self.failovers
            .get_or_create(&vec![
                ("from", from.to_owned()),
                ("channel", channel.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn skipped(&self, provider: &str, reason: &'static str) {
        self.skipped
            .get_or_create(&vec![
                ("provider", provider.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }
}

/// The channels and request outcomes a provider's series are made for.
pub(crate) const CHANNELS: [&str; 2] = ["sms", "voice"];
pub(crate) const OUTCOMES: [&str; 5] = [
    "accepted",
    "uncertain",
    "recipient",
    "configuration",
    "transient",
];

/// One provider's series, held by the provider (`provider::set`): handles
/// on the registered families' series, so updating one allocates nothing.
#[derive(Clone)]
pub(crate) struct ProviderSeries {
    requests: [[Counter; 5]; 2],
    latency: [Histogram; 2],
    circuit_open: Gauge,
}

impl std::fmt::Debug for ProviderSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderSeries")
    }
}

impl ProviderSeries {
    fn channel(channel: &str) -> usize {
        usize::from(channel != "sms")
    }

    /// `outcome` is one of [`OUTCOMES`] (anything else is not counted).
    pub(crate) fn request(&self, channel: &'static str, outcome: &'static str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.requests[Self::channel(channel)][i].inc();
        }
    }

    pub(crate) fn latency(&self, channel: &'static str, seconds: f64) {
        self.latency[Self::channel(channel)].observe(seconds);
    }

    pub(crate) fn circuit(&self, open: bool) {
        self.circuit_open.set(i64::from(open));
    }
}
