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

pub use auth::{ApiKeyAuth, ApiKeySettings, AuthConfig, AuthSettings, BasicAuth, BasicSettings};
pub use dedup::{BudgetConfig, BudgetUnits, DedupConfig};
pub use error::ConfigError;
pub use fraud::{FraudAction, FraudConfig, FraudSettings};
pub use limits::{
    ChannelRates, ClientIpSettings, ClientIpSource, LimitsConfig, LimitsSettings, Rate,
    NOTIFICATION_DEFAULT,
};
pub use load::{Sources, DEFAULT_TOML, ENV_PREFIX};
pub use lookup::{LineAction, LookupConfig, LookupOnError, LookupSettings, LINE_TYPES};
pub use policy::{
    CountryPolicy, FallbackConfig, FallbackSettings, PolicyConfig, TestNumbersSettings, VoiceOn,
};
pub use providers::{
    FailoverConfig, ProviderConfig, ProviderKind, ProviderSettings, SignalWireSettings, SmsSender,
    StatusCallbackSettings, TwilioConfig, TwilioSettings, WhatsAppUse,
};
pub use relay::{RelayConfig, RelaySettings, Route, RouteSettings};
pub use server::{LogConfig, LogFormat, MetricsSettings, ServerConfig};
pub use store::{Backend, OnError, RedisConfig, RedisSettings, StoreConfig, StoreSettings};
pub use tracing::{OtlpTracing, TracingSettings};
pub use values::StringList;
pub use verify::{VerifyConfig, VerifySettings};
pub use voice::{SentenceSettings, Sentences, VoiceConfig, VoiceSettings};
pub use whatsapp::{WhatsAppConfig, WhatsAppSettings};

/// The merged configuration as written, before checking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub auth: AuthSettings,
    pub twilio: TwilioSettings,
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
    pub failover: FailoverConfig,
    pub voice: VoiceSettings,
    pub limits: LimitsSettings,
    pub fraud: FraudSettings,
    pub policy: PolicyConfig,
    pub budget: BudgetConfig,
    pub dedup: DedupConfig,
    pub store: StoreSettings,
    pub test_numbers: TestNumbersSettings,
    pub metrics: MetricsSettings,
    pub status_callback: StatusCallbackSettings,
    pub relay: RelaySettings,
    pub verify: VerifySettings,
    pub tracing: TracingSettings,
    pub fallback: FallbackSettings,
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
    pub log: LogConfig,
    pub auth: AuthConfig,
    /// The first provider's settings (`[twilio]`, or the first of
    /// `[[providers]]`): what Twilio-only features (the relay's forwarding)
    /// use.
    pub twilio: TwilioConfig,
    pub providers: Vec<ProviderConfig>,
    pub failover: FailoverConfig,
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
    pub status_callback_url: Option<String>,
    pub relay: Option<RelayConfig>,
    pub verify: Option<VerifyConfig>,
    pub tracing: Option<OtlpTracing>,
    pub fallback: FallbackConfig,
    pub lookup: Option<LookupConfig>,
    pub whatsapp: Option<WhatsAppConfig>,
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
    pub fn twilio_account(&self) -> Option<&TwilioConfig> {
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
