//! The fraud guard's metrics, per destination country calling code (never
//! per number or prefix: a prefix is counted, not named).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub(crate) struct FraudMetrics {
    sent: Family<Labels, Counter>,
    confirmed: Family<Labels, Counter>,
    conversion: Family<Labels, Gauge<f64, AtomicU64>>,
    suspect_country: Family<Labels, Gauge>,
    suspect_prefixes: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    ignored: Family<Labels, Counter>,
}

fn country(calling_code: u16) -> Labels {
    vec![("country_code", calling_code.to_string())]
}

impl FraudMetrics {
    pub(crate) fn register(registry: &mut Registry) -> FraudMetrics {
        let m = FraudMetrics::default();
        registry.register(
            "fraud_codes_sent",
            "Codes the provider accepted, counted by the fraud guard, by destination country calling code",
            m.sent.clone(),
        );
        registry.register(
            "fraud_codes_confirmed",
            "Codes Kratos reported used (POST /v1/kratos/confirmed), by destination country calling code",
            m.confirmed.clone(),
        );
        registry.register(
            "fraud_conversion_ratio",
            "Codes confirmed over codes sent in the last hour, by destination country calling code",
            m.conversion.clone(),
        );
        registry.register(
            "fraud_suspect_country",
            "1 while a destination country calling code is suspect (as last seen by this replica)",
            m.suspect_country.clone(),
        );
        registry.register(
            "fraud_suspect_prefixes",
            "Number prefixes suspect now, by destination country calling code (as last seen by this replica)",
            m.suspect_prefixes.clone(),
        );
        registry.register(
            "fraud_refused",
            "Codes refused with fraud_suspected (fraud.action = deny), by destination country calling code",
            m.refused.clone(),
        );
        registry.register(
            "fraud_confirmations_ignored",
            "Confirmations not counted, by reason (unauthenticated, never_sent, invalid)",
            m.ignored.clone(),
        );
        m
    }

    pub(crate) fn sent(&self, calling_code: u16, sent: u32, confirmed: u32) {
        self.sent.get_or_create(&country(calling_code)).inc();
        self.conversion(calling_code, sent, confirmed);
    }

    pub(crate) fn confirmed(&self, calling_code: u16, sent: u32, confirmed: u32) {
        self.confirmed.get_or_create(&country(calling_code)).inc();
        self.conversion(calling_code, sent, confirmed);
    }

    fn conversion(&self, calling_code: u16, sent: u32, confirmed: u32) {
        if sent > 0 {
            let ratio = f64::from(confirmed.min(sent)) / f64::from(sent);
            self.conversion
                .get_or_create(&country(calling_code))
                .set(ratio);
        }
    }

    pub(crate) fn suspects(&self, calling_code: u16, country_suspect: bool, prefixes: usize) {
        self.suspect_country
            .get_or_create(&country(calling_code))
            .set(i64::from(country_suspect));
        self.suspect_prefixes
            .get_or_create(&country(calling_code))
            .set(prefixes as i64);
    }

    pub(crate) fn refused(&self, calling_code: u16) {
        self.refused.get_or_create(&country(calling_code)).inc();
    }

    /// `reason` is one of a fixed few.
    pub(crate) fn ignored(&self, reason: &'static str) {
        self.ignored
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }
}
