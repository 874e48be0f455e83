//! The inbound relay's counters, registered with the service's
//! [`super::metrics::Metrics`]. Labels come from fixed sets: the outcome of
//! an incoming message, the kind of a target and its outcome. Route names,
//! senders and bodies are never labels.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub(crate) struct RelayMetrics {
    inbound: Family<Labels, Counter>,
    forwards: Family<Labels, Counter>,
}

impl RelayMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = RelayMetrics::default();
        registry.register(
            "relay_inbound",
            "Incoming messages by outcome (relayed, duplicate, no_route, loop, not_our_number, rate_limited, invalid_signature)",
            m.inbound.clone(),
        );
        registry.register(
            "relay_forwards",
            "Relay targets by kind (sms, slack, webhook) and outcome (delivered, retried, dropped, uncertain, loop)",
            m.forwards.clone(),
        );
        m
    }

    /// One incoming message, and what became of it.
    pub(crate) fn inbound(&self, outcome: &'static str) {
        self.inbound
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// One try at a target: `delivered`, `retried` (a try failed, another
    /// follows), `dropped` (no try left, or a failure no retry can fix) or
    /// `uncertain` (an SMS that may have been sent, given up because
    /// Twilio's list could not tell).
    pub(crate) fn forward(&self, kind: &'static str, outcome: &'static str) {
        self.forwards
            .get_or_create(&vec![("kind", kind), ("outcome", outcome)])
            .inc();
    }
}
