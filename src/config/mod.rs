//! Configuration: compiled-in defaults (`config/default.toml`, the
//! reference with docs/src/configuration.md), then a file, then
//! `PHONE_COURIER__...` variables, merged by the `config` crate into
//! [`Settings`] and checked into the [`Config`] the service runs with. A
//! mistake is a [`ConfigError`] naming the key, never quoting a value.
//!
//! A section derives `Deserialize` with `deny_unknown_fields`, one field per
//! key, each of the type it is used as, checked as it is read by the readers
//! of `values` (`within::<_, u32, 1, 100>`, `ms::<_, 0, 60_000>` for a `_ms`
//! key read as a `Duration`, `parsed`, `list`, `choice`); the loader names the
//! key of a refused value, so no check spells it. A section that needs more
//! (secrets with `_file` twins, keys that depend on each other) has a
//! `...Settings` with a `check` that returns its `...Config`; rules across
//! sections are in `checks`. A default is written once, in
//! `config/default.toml`; code that needs one reads it (`load::built_in`).
//! Configuration uses no room but `phone` and `domain`.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::phone::E164;

mod auth;
mod checks;
mod dedup;
mod error;
mod fraud;
mod limits;
mod load;
mod lookup;
mod policy;
mod providers;
mod relay;
mod secret;
mod server;
mod store;
mod tracing;
mod values;
mod verify;
mod voice;
mod whatsapp;

pub use auth::{ApiKeyAuth, AuthConfig, AuthSettings, BasicAuth};
pub use dedup::{BudgetConfig, BudgetUnits, DedupConfig};
pub use error::ConfigError;
pub use fraud::FraudConfig;
pub use limits::{ChannelRates, ClientIpSource, LimitsConfig, LimitsSettings, Rate};
pub use load::{Sources, DEFAULT_TOML};
pub use lookup::{LineAction, LookupConfig, LookupOnError, LookupSettings};
pub use policy::{CountryPolicy, FallbackConfig, PolicyConfig};
pub use providers::{
    FailoverConfig, ProviderConfig, ProviderKind, ProviderSettings, SignalWireSettings, SmsSender,
    StatusCallbackSettings, TwilioConfig, TwilioSettings, WhatsAppUse,
};
pub use relay::{RelayConfig, RelaySettings, Route, RouteSettings};
pub use server::{LogConfig, ServerConfig};
pub use store::{Backend, OnError, RedisConfig, StoreConfig};
pub use tracing::OtlpTracing;
pub use values::StringList;
pub use verify::{VerifyConfig, VerifySettings};
pub use voice::{Sentences, VoiceConfig};
pub use whatsapp::WhatsAppSettings;

pub(crate) use fraud::FraudAction;
#[cfg(test)]
pub(crate) use limits::NOTIFICATION_DEFAULT;
pub(crate) use lookup::LINE_TYPES;
pub(crate) use server::LogFormat;
pub(crate) use whatsapp::WhatsAppConfig;

use fraud::FraudSettings;
use policy::{FallbackSettings, TestNumbersSettings};
use server::MetricsSettings;
use store::StoreSettings;
use tracing::TracingSettings;
use voice::VoiceSettings;

/// The merged configuration as written, before checking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub(crate) log: LogConfig,
    pub auth: AuthSettings,
    pub twilio: TwilioSettings,
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
    pub(crate) failover: FailoverConfig,
    pub(crate) voice: VoiceSettings,
    pub limits: LimitsSettings,
    pub(crate) fraud: FraudSettings,
    pub(crate) policy: PolicyConfig,
    pub(crate) budget: BudgetConfig,
    pub(crate) dedup: DedupConfig,
    pub(crate) store: StoreSettings,
    pub(crate) test_numbers: TestNumbersSettings,
    pub(crate) metrics: MetricsSettings,
    pub status_callback: StatusCallbackSettings,
    pub relay: RelaySettings,
    pub verify: VerifySettings,
    pub(crate) tracing: TracingSettings,
    pub(crate) fallback: FallbackSettings,
    pub lookup: LookupSettings,
    pub whatsapp: WhatsAppSettings,
}

/// The checked configuration the service runs with.
///
/// `Serialize` prints it for `check-config`; every secret serializes as
/// `"[redacted]"` so the output can be pasted into an issue.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub(crate) log: LogConfig,
    pub auth: AuthConfig,
    /// The first provider's settings (`[twilio]`, or the first of
    /// `[[providers]]`): what Twilio-only features (the relay's forwarding)
    /// use.
    pub twilio: TwilioConfig,
    pub providers: Vec<ProviderConfig>,
    pub(crate) failover: FailoverConfig,
    pub voice: VoiceConfig,
    pub limits: LimitsConfig,
    pub fraud: FraudConfig,
    pub policy: PolicyConfig,
    pub budget: BudgetConfig,
    pub dedup: DedupConfig,
    pub store: StoreConfig,
    pub test_numbers: Vec<E164>,
    /// A separate address for `/metrics` (no auth there); `None`: on the API
    /// listener, behind the API's auth.
    pub metrics_listen: Option<SocketAddr>,
    /// Where Twilio posts delivery statuses: `{public_url}/v1/twilio/status`.
    pub(crate) status_callback_url: Option<String>,
    pub relay: Option<RelayConfig>,
    pub(crate) verify: Option<VerifyConfig>,
    pub tracing: Option<OtlpTracing>,
    pub fallback: FallbackConfig,
    pub lookup: Option<LookupConfig>,
    pub(crate) whatsapp: Option<WhatsAppConfig>,
}

impl Settings {
    /// Check every key, section by section and then across sections, and
    /// produce the configuration the service runs with.
    pub fn check(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let providers = providers::check_providers(self.twilio, self.providers, env)?;
        // One base URL serves both webhooks unless the relay names its own.
        let mut relay = self.relay;
        if relay.public_url.trim().is_empty() {
            relay
                .public_url
                .clone_from(&self.status_callback.public_url);
        }
        let mut fallback = self.fallback.check();
        if !providers.iter().any(|p| p.api.voice_from.is_some()) {
            fallback = fallback.without_caller_id();
        }
        let config = Config {
            server: self.server,
            log: self.log,
            auth: self.auth.check()?,
            twilio: providers[0].api.clone(),
            providers,
            failover: self.failover,
            voice: self.voice.check()?,
            limits: self.limits.check()?,
            fraud: self.fraud.check()?,
            policy: self.policy,
            budget: self.budget,
            dedup: self.dedup,
            store: self.store.check()?,
            test_numbers: self.test_numbers.numbers,
            metrics_listen: self.metrics.listen,
            status_callback_url: self.status_callback.check()?,
            relay: relay.check()?,
            verify: self.verify.check()?,
            tracing: self.tracing.check()?,
            fallback,
            lookup: self.lookup.check()?,
            whatsapp: self.whatsapp.check()?,
        };
        let sends_whatsapp = config
            .providers
            .iter()
            .any(|p| p.api.whatsapp != WhatsAppUse::Off);
        if config.whatsapp.is_some() && !sends_whatsapp {
            // SignalWire has no WhatsApp: only a `twilio` provider sends it.
            let why = match config.twilio_account() {
                None => "WhatsApp is sent only through a provider of kind \"twilio\", and the provider list has none (SignalWire has no WhatsApp)",
                Some(_) => "every provider of kind \"twilio\" has whatsapp = false: no provider would send WhatsApp",
            };
            return Err(ConfigError::invalid("whatsapp.enabled", why));
        }
        checks::across_sections(&config)?;
        Ok(config)
    }
}

impl Config {
    /// The first provider of kind `twilio`: what Twilio-only features
    /// (Lookup) are asked with.
    pub(crate) fn twilio_account(&self) -> Option<&TwilioConfig> {
        self.providers
            .iter()
            .find(|p| p.kind == ProviderKind::Twilio)
            .map(|p| &p.api)
    }

    /// Load and check in one step.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Settings::load(sources)?.check(&sources.env)
    }
}
