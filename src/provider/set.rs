//! The configured providers, in order of preference: each with its own
//! client (base URL, credentials, timeout), its own slots, its circuit
//! breaker and its own sender, status-callback URL and name.
//!
//! The delivery pipeline asks the set, never a client directly, for every
//! send and every reconciliation, so that failover, the breaker and the
//! ledger's record of "which provider may have it" apply to all of them.

use crate::telemetry::metrics::Metrics;
use crate::telemetry::provider_metrics::ProviderSeries;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, ProviderKind, SmsSender, WhatsAppUse};
use crate::provider::breaker::{Breaker, CircuitState};
use crate::provider::twilio::{
    ClientError, OutgoingCall, OutgoingSms, OutgoingWhatsApp, TwilioClient,
};

/// One provider, ready to send.
#[derive(Debug)]
pub(crate) struct Provider {
    /// From the configuration: the label in logs, metrics and the ledger.
    pub(crate) name: String,
    pub(crate) kind: ProviderKind,
    pub(crate) client: TwilioClient,
    pub(crate) breaker: Breaker,
    /// Its metric series (`telemetry::provider_metrics`), labelled with
    /// its name.
    pub(crate) series: ProviderSeries,
    /// Bounds this provider's requests in flight (`max_in_flight`): a
    /// provider that hangs cannot hold every connection; past it the next
    /// provider is tried.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Its SMS sender and caller id: each provider sends from its own
    /// numbers.
    sms_sender: SmsSender,
    voice_from: Option<String>,
    /// Whether it sends WhatsApp, and from which sender.
    whatsapp: WhatsAppUse,
    /// Where it posts statuses (its kind's path), when they are configured.
    status_callback: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) verify_credentials_on_start: bool,
    /// What the start-up credential check found ([`Credentials`]).
    credentials: AtomicU8,
}

/// What is known of a provider's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// `verify_credentials_on_start = false`.
    NotChecked = 0,
    /// Being checked (or checked and refused: retried until they work).
    Unverified = 1,
    Verified = 2,
}

impl Credentials {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Credentials::NotChecked => "not_checked",
            Credentials::Unverified => "unverified",
            Credentials::Verified => "verified",
        }
    }
}

/// Every provider, in order of preference (never empty).
#[derive(Debug, Clone)]
pub struct ProviderSet {
    providers: Arc<[Provider]>,
}

impl ProviderSet {
    pub fn new(config: &Config, clock: &Clock, metrics: &Metrics) -> Result<Self, ClientError> {
        let public = config
            .status_callback_url
            .as_deref()
            .and_then(|u| u.strip_suffix(ProviderKind::Twilio.status_path()));
        let providers = config
            .providers
            .iter()
            .map(|p| {
                Ok(Provider {
                    series: metrics.provider_series(&p.name),
                    name: p.name.clone(),
                    kind: p.kind,
                    client: TwilioClient::new(&p.api)?,
                    breaker: Breaker::new(&config.failover, clock.clone()),
                    slots: Arc::new(tokio::sync::Semaphore::new(p.api.max_in_flight)),
                    sms_sender: p.api.sms_sender.clone(),
                    whatsapp: p.api.whatsapp.clone(),
                    voice_from: p.api.voice_from.as_ref().map(ToString::to_string),
                    status_callback: public.map(|u| format!("{u}{}", p.kind.status_path())),
                    timeout: p.api.timeout,
                    verify_credentials_on_start: p.api.verify_credentials_on_start,
                    credentials: AtomicU8::new(if p.api.verify_credentials_on_start {
                        Credentials::Unverified as u8
                    } else {
                        Credentials::NotChecked as u8
                    }),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(ProviderSet {
            providers: providers.into(),
        })
    }

    /// In order of preference.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }

    /// The walk of one send: `first` (a provider an earlier attempt of the
    /// message used), then the others in order of preference. A name this
    /// replica does not have changes nothing.
    pub(crate) fn order(&self, first: Option<&str>) -> Vec<&Provider> {
        let first = first.and_then(|n| self.providers.iter().find(|p| p.name == n));
        first
            .into_iter()
            .chain(
                self.providers
                    .iter()
                    .filter(|p| first.is_none_or(|f| !std::ptr::eq(*p, f))),
            )
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.providers.len()
    }

    /// The provider a ledger record names. A record without a name comes
    /// from before providers were named, when the first was the only one.
    pub(crate) fn named(&self, name: Option<&str>) -> Option<&Provider> {
        match name {
            None => self.providers.first(),
            Some(n) => self.providers.iter().find(|p| p.name == n),
        }
    }

    /// The longest timeout: the ledger's lease covers any one call.
    pub(crate) fn longest_timeout(&self) -> Duration {
        self.iter().map(|p| p.timeout).max().unwrap_or_default()
    }

    /// Whether every provider that asks for a credential check passed it.
    pub(crate) fn credentials_ready(&self) -> bool {
        self.iter()
            .all(|p| p.credentials() != Credentials::Unverified)
    }

    /// Each provider's name, kind, credentials and circuit, for
    /// `/health/ready`.
    pub(crate) fn health(&self) -> Vec<(&str, ProviderKind, Credentials, CircuitState)> {
        self.iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.kind,
                    p.credentials(),
                    p.breaker.circuit(),
                )
            })
            .collect()
    }
}

impl Provider {
    pub(crate) fn credentials(&self) -> Credentials {
        match self.credentials.load(Ordering::SeqCst) {
            0 => Credentials::NotChecked,
            2 => Credentials::Verified,
            _ => Credentials::Unverified,
        }
    }

    /// The start-up check said yes.
    pub(crate) fn credentials_verified(&self) {
        self.credentials
            .store(Credentials::Verified as u8, Ordering::SeqCst);
    }

    /// Apply an outcome to the breaker and keep the circuit gauge in step.
    pub(crate) fn note_circuit(&self, outcome: impl FnOnce()) {
        outcome();
        let open = self.breaker.circuit() != CircuitState::Closed;
        self.series.circuit(open);
    }

    /// The SMS as this provider sends it: its sender and status callback.
    pub(crate) fn sms(&self, sms: &OutgoingSms) -> OutgoingSms {
        OutgoingSms {
            sender: self.sms_sender.clone(),
            status_callback: sms
                .status_callback
                .as_ref()
                .and(self.status_callback.clone()),
            ..sms.clone()
        }
    }

    /// The WhatsApp message as this provider sends it (from `[whatsapp]`'s
    /// sender or the account's own, the status callback its own); `None`
    /// for a provider without WhatsApp (SignalWire, or `whatsapp = false`).
    pub(crate) fn whatsapp(&self, message: &OutgoingWhatsApp) -> Option<OutgoingWhatsApp> {
        let sender = match &self.whatsapp {
            WhatsAppUse::Off => return None,
            WhatsAppUse::Shared => message.sender.clone(),
            WhatsAppUse::Own(sender) => sender.clone(),
        };
        Some(OutgoingWhatsApp {
            sender,
            status_callback: message
                .status_callback
                .as_ref()
                .and(self.status_callback.clone()),
            ..message.clone()
        })
    }

    /// The call as this provider places it; `None` when it has no caller id.
    pub(crate) fn call(&self, call: &OutgoingCall) -> Option<OutgoingCall> {
        Some(OutgoingCall {
            from: self.voice_from.clone()?,
            status_callback: call
                .status_callback
                .as_ref()
                .and(self.status_callback.clone()),
            ..call.clone()
        })
    }
}
