//! Configuration: compiled-in defaults, then a file, then environment
//! variables, merged by the `config` crate and then checked into a typed
//! [`Config`] that the rest of the service can trust.
//!
//! Loading is two steps on purpose. [`Settings`] mirrors the file format
//! (everything optional, secrets possibly behind `_file` keys); [`Config`]
//! is what is left once every key has been checked, every secret read and
//! every default applied. A mistake is reported as a [`ConfigError`] that
//! names the key, so `check-config` and `serve` can say exactly what to fix.
//!
//! | module | holds |
//! |---|---|
//! | `load` | the sources ([`Sources`], [`DEFAULT_TOML`]) and their merging into [`Settings`] |
//! | `error` | [`ConfigError`], and the `config` crate's errors rebuilt so they never quote a value or a line |
//! | `server`, `log`, `auth`, `twilio`, `voice`, `limits`, `fraud`, `policy`, `budget`, `dedup`, `store`, `test_numbers`, `metrics`, `status_callback`, `relay`, `verify`, `tracing`, `fallback`, `lookup` | one section each: its file format, its checked form, the check between them |
//! | `checks` | the rules that span sections (provider timeout against Kratos's, the dedup window against Kratos's retries, the budget's arithmetic), run after the sections |
//! | `phone_number`, `country`, `language_tag` | the value types read once here and kept: [`E164`], [`SenderId`], [`CountryId`], [`LanguageTag`] |
//! | `secret`, `values` | secrets inline or in files; lists, durations, string views |
//!
//! Values are parsed into their types at this edge and handed on as such,
//! so no consumer parses a configured string again. Configuration depends
//! on no other room but `phone` (for the shape of a number) and `domain`
//! (template names, for `lookup.sim_swap.refuse_for`); every room
//! reads it.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

mod auth;
mod budget;
mod checks;
mod country;
mod dedup;
mod error;
mod fallback;
mod fraud;
mod language_tag;
mod limits;
mod load;
mod log;
mod lookup;
mod metrics;
mod phone_number;
mod policy;
mod providers;
mod relay;
mod secret;
mod server;
mod status_callback;
mod store;
mod test_numbers;
mod tracing;
mod twilio;
mod values;
mod verify;
mod voice;

pub use auth::{ApiKeyAuth, ApiKeySettings, AuthConfig, AuthSettings, BasicAuth, BasicSettings};
pub use budget::BudgetConfig;
pub use checks::{min_dedup_window, KRATOS_TIMEOUT, MAX_DAILY_CAP};
pub use country::{CountryId, NotACountryId};
pub use dedup::{DedupConfig, DedupSettings};
pub use error::ConfigError;
pub use fallback::{FallbackConfig, FallbackSettings};
pub use fraud::{FraudAction, FraudConfig, FraudSettings};
pub use language_tag::{LanguageTag, NotALanguageTag};
pub use limits::{
    ChannelRates, ClientIpSettings, ClientIpSource, LimitsConfig, LimitsSettings, Rate,
};
pub use load::{Sources, DEFAULT_TOML, ENV_PREFIX};
pub use log::{LogConfig, LogFormat, LogSettings};
pub use lookup::{LineAction, LookupConfig, LookupOnError, LookupSettings, LINE_TYPES};
pub use metrics::MetricsSettings;
pub use phone_number::{NotASenderId, NotE164, SenderId, E164};
pub use policy::{CountryPolicy, CountrySettings, PolicyConfig, PolicySettings};
pub use providers::{
    FailoverConfig, FailoverSettings, ProviderConfig, ProviderKind, ProviderSettings, TWILIO_API,
};
pub use relay::{RelayConfig, RelaySettings, Route, RouteSettings, Sender};
pub use server::{ServerConfig, ServerSettings, MAX_DRAIN};
pub use status_callback::StatusCallbackSettings;
pub use store::{Backend, OnError, RedisConfig, RedisSettings, StoreConfig, StoreSettings};
pub use test_numbers::TestNumbersSettings;
pub use tracing::{OtlpTracing, TracingSettings};
pub use twilio::{is_account_sid, SmsSender, TwilioConfig, TwilioSettings};
pub use values::StringList;
pub use verify::{VerifyConfig, VerifySettings};
pub use voice::{SentenceSettings, Sentences, VoiceConfig, VoiceSettings};

/// The merged configuration as written, before checking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub twilio: TwilioSettings,
    /// `[[providers]]`: empty unless written (then `[twilio]` must not be).
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
    pub failover: FailoverSettings,
    pub voice: VoiceSettings,
    pub limits: LimitsSettings,
    pub fraud: FraudSettings,
    pub policy: PolicySettings,
    pub budget: BudgetConfig,
    pub dedup: DedupSettings,
    pub store: StoreSettings,
    pub test_numbers: TestNumbersSettings,
    pub metrics: MetricsSettings,
    pub status_callback: StatusCallbackSettings,
    pub relay: RelaySettings,
    pub verify: VerifySettings,
    pub tracing: TracingSettings,
    pub fallback: FallbackSettings,
    pub lookup: LookupSettings,
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
    /// Every provider, in order of preference; `[twilio]` is a list of one.
    pub providers: Vec<ProviderConfig>,
    /// Whether the list came from `[[providers]]` (error messages then name
    /// its keys, not `[twilio]`'s).
    pub providers_listed: bool,
    pub failover: FailoverConfig,
    pub voice: VoiceConfig,
    pub limits: LimitsConfig,
    /// SMS-pumping detection from Kratos's confirmations.
    pub fraud: FraudConfig,
    pub policy: PolicyConfig,
    pub budget: BudgetConfig,
    pub dedup: DedupConfig,
    /// Where the ledger, the unreachable list, the limits and the budget live.
    pub store: StoreConfig,
    /// Numbers that are answered without sending.
    pub test_numbers: Vec<E164>,
    /// A separate address for `/metrics` (no auth there); `None`: on the API
    /// listener, behind the API's auth.
    pub metrics_listen: Option<SocketAddr>,
    /// Where Twilio posts delivery statuses: `{public_url}/v1/twilio/status`.
    pub status_callback_url: Option<String>,
    /// The inbound relay (`POST /v1/twilio/inbound`); `None` when off.
    pub relay: Option<RelayConfig>,
    /// The verify API (`/v1/verify/*`); `None` when off.
    pub verify: Option<VerifyConfig>,
    /// OpenTelemetry traces; `None`: off.
    pub tracing: Option<OtlpTracing>,
    /// SMS-to-voice fallback (`[fallback]`).
    pub fallback: FallbackConfig,
    /// The Twilio Lookup v2 policy (`[lookup]`); `None` when off.
    pub lookup: Option<LookupConfig>,
}

impl Settings {
    /// Check every key, section by section and then across sections, and
    /// produce the configuration the service runs with.
    pub fn check(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let providers_listed = !self.providers.is_empty();
        let providers = providers::check_providers(self.twilio, self.providers, env)?;
        let mut fallback = self.fallback.check()?;
        if !providers.iter().any(|p| p.api.voice_from.is_some()) {
            fallback = fallback.without_caller_id();
        }
        let config = Config {
            server: self.server.check()?,
            log: self.log.check()?,
            auth: self.auth.check()?,
            twilio: providers[0].api.clone(),
            providers,
            providers_listed,
            failover: self.failover.check()?,
            voice: self.voice.check()?,
            limits: self.limits.check()?,
            fraud: self.fraud.check()?,
            policy: self.policy.check()?,
            budget: self.budget.check()?,
            dedup: self.dedup.check()?,
            store: self.store.check()?,
            test_numbers: self.test_numbers.check()?,
            metrics_listen: self.metrics.check()?,
            status_callback_url: self.status_callback.check()?,
            relay: self.relay.check()?,
            verify: self.verify.check()?,
            tracing: self.tracing.check()?,
            fallback,
            lookup: self.lookup.check()?,
        };
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
