//! Configuration: compiled-in defaults, then a file, then environment
//! variables, merged by the `config` crate and then checked into a typed
//! [`Config`] that the rest of the service can trust.
//!
//! Loading is two steps on purpose. [`Settings`] mirrors the file format
//! (everything optional, secrets possibly behind `_file` keys); [`Config`]
//! is what is left once every key has been checked, every secret read and
//! every default applied. A mistake is reported as a [`ConfigError`] that
//! names the key, so `check-config` and `serve` can say exactly what to fix.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::delivery::limits::{ChannelRates, Rate};
use crate::phone::is_e164_shape;

/// The documented defaults, compiled in so that the binary needs no file.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "PHONE_COURIER";

/// A configuration mistake, always naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration could not be read: {0}")]
    Load(String),
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// The file format
// ---------------------------------------------------------------------------

/// The merged configuration as written, before checking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub twilio: TwilioSettings,
    pub voice: VoiceSettings,
    pub limits: LimitsSettings,
    pub policy: PolicySettings,
    pub budget: BudgetConfig,
    pub dedup: DedupSettings,
    pub test_numbers: TestNumbersSettings,
    pub metrics: MetricsSettings,
    pub status_callback: StatusCallbackSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCallbackSettings {
    pub public_url: String,
}

/// A list given as a TOML/YAML array or, from an environment variable, as a
/// comma-separated string.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of strings or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    pub enabled: bool,
    pub ip_headers: StringList,
    pub prune_interval_ms: u64,
    pub sms: ChannelRates,
    pub voice: ChannelRates,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub refuse_premium: bool,
    pub sms: CountrySettings,
    pub voice: CountrySettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountrySettings {
    pub allowed_countries: StringList,
    pub denied_countries: StringList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSettings {
    pub window_ms: u64,
    pub unreachable_ms: u64,
    pub max_entries: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestNumbersSettings {
    pub numbers: StringList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_ms: u64,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub max_connections: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub disabled: bool,
    pub basic: Option<BasicSettings>,
    pub api_key: Option<ApiKeySettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicSettings {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    pub header: Option<String>,
    pub value: Option<SecretString>,
    pub value_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: Option<String>,
    pub auth_token: Option<SecretString>,
    pub auth_token_file: Option<PathBuf>,
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<SecretString>,
    pub api_key_secret_file: Option<PathBuf>,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub voice_from: Option<String>,
    pub timeout_ms: u64,
    pub verify_credentials_on_start: bool,
    pub max_in_flight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    #[serde(rename = "trait")]
    pub trait_name: String,
    pub voice: String,
    pub language: String,
    pub pause_seconds: u32,
    pub sentences: BTreeMap<String, SentenceSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceSettings {
    pub voice: Option<String>,
    pub login: Option<String>,
    pub registration: Option<String>,
    pub verification: Option<String>,
    pub recovery: Option<String>,
    pub other: Option<String>,
    pub again: Option<String>,
}

// ---------------------------------------------------------------------------
// The checked configuration
// ---------------------------------------------------------------------------

/// The checked configuration the service runs with.
///
/// `Serialize` prints it for `check-config`; every secret serializes as
/// `"[redacted]"` so the output can be pasted into an issue.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub twilio: TwilioConfig,
    pub voice: VoiceConfig,
    pub limits: LimitsConfig,
    pub policy: PolicyConfig,
    pub budget: BudgetConfig,
    pub dedup: DedupConfig,
    /// Normalised E.164 numbers that are answered without sending.
    pub test_numbers: Vec<String>,
    /// A separate address for `/metrics` (no auth there); `None`: on the API
    /// listener, behind the API's auth.
    pub metrics_listen: Option<SocketAddr>,
    /// Where Twilio posts delivery statuses: `{public_url}/v1/twilio/status`.
    pub status_callback_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsConfig {
    pub enabled: bool,
    pub ip_headers: Vec<String>,
    #[serde(rename = "prune_interval_ms", serialize_with = "ser_millis")]
    pub prune_interval: Duration,
    pub sms: ChannelRates,
    pub voice: ChannelRates,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    pub refuse_premium: bool,
    pub sms: CountryPolicy,
    pub voice: CountryPolicy,
}

/// ISO 3166 region codes, upper case. An empty allow list allows all.
#[derive(Debug, Clone, Serialize)]
pub struct CountryPolicy {
    pub allowed_countries: Vec<String>,
    pub denied_countries: Vec<String>,
}

/// The daily budget; 0 turns a cap off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub daily_total: u32,
    pub daily_per_country: u32,
    pub warn_percent: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DedupConfig {
    #[serde(rename = "window_ms", serialize_with = "ser_millis")]
    pub window: Duration,
    #[serde(rename = "unreachable_ms", serialize_with = "ser_millis")]
    pub unreachable: Duration,
    pub max_entries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(rename = "shutdown_grace_ms", serialize_with = "ser_millis")]
    pub shutdown_grace: Duration,
    #[serde(rename = "header_read_timeout_ms", serialize_with = "ser_millis")]
    pub header_read_timeout: Duration,
    #[serde(rename = "body_read_timeout_ms", serialize_with = "ser_millis")]
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// No authentication at all (development only).
    pub disabled: bool,
    pub basic: Option<BasicAuth>,
    pub api_key: Option<ApiKeyAuth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BasicAuth {
    pub username: String,
    #[serde(serialize_with = "ser_redacted")]
    pub password: SecretString,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyAuth {
    /// Header name, kept as configured for display; matched case-insensitively.
    pub header: String,
    #[serde(serialize_with = "ser_redacted")]
    pub value: SecretString,
}

/// Who sends the SMS: an owned number or a Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsSender {
    From(String),
    MessagingServiceSid(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct TwilioConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub account_sid: String,
    /// The user of HTTP Basic: the account sid, or an API key sid.
    pub username: String,
    /// The auth token or the API key secret.
    #[serde(serialize_with = "ser_redacted")]
    pub password: SecretString,
    pub sms_sender: SmsSender,
    /// Caller id for calls; `None` disables voice.
    pub voice_from: Option<String>,
    #[serde(rename = "timeout_ms", serialize_with = "ser_millis")]
    pub timeout: Duration,
    pub verify_credentials_on_start: bool,
    /// At most this many provider requests at once.
    pub max_in_flight: usize,
    /// The account's auth token, which signs Twilio's webhooks; `None` when
    /// only an API key is configured.
    #[serde(serialize_with = "ser_redacted_opt")]
    pub signing_token: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VoiceConfig {
    #[serde(rename = "trait")]
    pub trait_name: String,
    pub voice: String,
    /// Normalised BCP 47 tag (`en-US`).
    pub language: String,
    pub pause_seconds: u32,
    /// Normalised language tag → sentences.
    pub sentences: BTreeMap<String, Sentences>,
}

/// What is said for one language. Missing entries fall back to the default
/// language's, then to English.
#[derive(Debug, Clone, Serialize)]
pub struct Sentences {
    pub voice: Option<String>,
    pub login: String,
    pub registration: String,
    pub verification: String,
    pub recovery: String,
    pub other: String,
    pub again: String,
}

fn ser_redacted<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

fn ser_redacted_opt<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

fn ser_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Where the configuration comes from. The environment is passed in (not
/// read from the process) so tests can give each case its own.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The file given on the command line and this process's environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    /// Merge defaults, file and environment.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        use config::{Environment, File, FileFormat};
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = &sources.file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "the file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).required(true));
        }
        let env: config::Map<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .source(Some(env)),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        merged
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// Check every key and produce the configuration the service runs with.
    pub fn check(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let public_url = self
            .status_callback
            .public_url
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let mut config = self.check_sections(env)?;
        if !public_url.is_empty() {
            match reqwest::Url::parse(&public_url) {
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() && u.query().is_none() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "status_callback.public_url",
                        format!("`{public_url}` is not the http(s) base URL Twilio can reach this service at"),
                    ))
                }
            }
            if config.twilio.signing_token.is_none() {
                return Err(ConfigError::invalid(
                    "status_callback.public_url",
                    "needs twilio.auth_token: Twilio signs status callbacks with the account's auth token, even when requests use an API key",
                ));
            }
            config.status_callback_url = Some(format!("{public_url}/v1/twilio/status"));
        }
        Ok(config)
    }

    fn check_sections(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Ok(Config {
            server: self.server.check()?,
            log: self.log.check()?,
            auth: self.auth.check()?,
            twilio: self.twilio.check(env)?,
            voice: self.voice.check()?,
            limits: self.limits.check()?,
            policy: self.policy.check()?,
            budget: check_budget(self.budget)?,
            dedup: self.dedup.check()?,
            test_numbers: check_test_numbers(self.test_numbers)?,
            metrics_listen: match self.metrics.listen.trim() {
                "" => None,
                addr => Some(addr.parse().map_err(|_| {
                    ConfigError::invalid(
                        "metrics.listen",
                        format!("`{addr}` is not an address:port (leave empty to serve /metrics on the API listener)"),
                    )
                })?),
            },
            status_callback_url: None,
        })
    }
}

impl Config {
    /// Load and check in one step.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Settings::load(sources)?.check(&sources.env)
    }
}

impl ServerSettings {
    fn check(self) -> Result<ServerConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:4470 or 0.0.0.0:4470",
                    self.listen
                ),
            )
        })?;
        if self.max_body_bytes < 1024 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.header_read_timeout_ms",
                "must be above 0",
            ));
        }
        if self.body_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.body_read_timeout_ms",
                "must be above 0",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        Ok(ServerConfig {
            listen,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections,
        })
    }
}

impl LogSettings {
    fn check(self) -> Result<LogConfig, ConfigError> {
        let format = match self.format.as_str() {
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is neither \"plain\" nor \"json\""),
                ))
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("`{}` is not a tracing filter such as \"info\"", self.level),
            ));
        }
        Ok(LogConfig {
            format,
            level: self.level,
        })
    }
}

/// A secret given inline or in a file, but not both.
fn secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(path)) => read_secret_file(&format!("{key}_file"), &path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    // Secret files usually end with a newline that is not part of the secret.
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

fn non_empty(s: &Option<SecretString>) -> bool {
    s.as_ref().is_some_and(|s| !s.expose_secret().is_empty())
}

impl AuthSettings {
    fn check(self) -> Result<AuthConfig, ConfigError> {
        let basic = match self.basic {
            None => None,
            Some(b) => {
                let password = secret("auth.basic.password", b.password, b.password_file)?;
                match (b.username, password) {
                    (None, None) => None,
                    (Some(u), Some(p)) if !u.is_empty() && non_empty(&Some(p.clone())) => {
                        if u.contains(':') {
                            return Err(ConfigError::invalid(
                                "auth.basic.username",
                                "must not contain ':' (HTTP basic auth cannot carry it)",
                            ));
                        }
                        Some(BasicAuth {
                            username: u,
                            password: p,
                        })
                    }
                    (None, _) | (Some(_), _) => {
                        return Err(ConfigError::invalid(
                            "auth.basic",
                            "needs both a non-empty username and a non-empty password",
                        ))
                    }
                }
            }
        };
        let api_key = match self.api_key {
            None => None,
            Some(k) => {
                let value = secret("auth.api_key.value", k.value, k.value_file)?;
                match (k.header, value) {
                    (None, None) => None,
                    (Some(h), Some(v)) if non_empty(&Some(v.clone())) => {
                        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                            return Err(ConfigError::invalid(
                                "auth.api_key.header",
                                format!("`{h}` is not a valid HTTP header name"),
                            ));
                        }
                        if h.eq_ignore_ascii_case("authorization") {
                            return Err(ConfigError::invalid(
                                "auth.api_key.header",
                                "use auth.basic for the Authorization header",
                            ));
                        }
                        Some(ApiKeyAuth {
                            header: h,
                            value: v,
                        })
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            "auth.api_key",
                            "needs both a header name and a non-empty value",
                        ))
                    }
                }
            }
        };
        if !self.disabled && basic.is_none() && api_key.is_none() {
            return Err(ConfigError::invalid(
                "auth",
                "configure auth.basic (username, password) or auth.api_key (header, value) \
                 to match the Kratos courier channel, or set auth.disabled = true for local \
                 development only",
            ));
        }
        Ok(AuthConfig {
            disabled: self.disabled,
            basic,
            api_key,
        })
    }
}

/// Twilio account sids are `AC` + 32 hex digits; SignalWire project ids are
/// UUIDs. Both go into the URL path, so nothing else is accepted.
pub fn is_account_sid(s: &str) -> bool {
    let twilio =
        s.len() == 34 && s.starts_with("AC") && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    twilio || is_uuid(s)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_sid(s: &str, prefix: &str) -> bool {
    (s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        || is_uuid(s)
}

fn check_sender(key: &str, number: String) -> Result<String, ConfigError> {
    // Alphanumeric sender ids (up to 11 characters, at least one letter) are
    // allowed for SMS by Twilio in many countries.
    let alphanumeric = number.len() <= 11
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && number.chars().any(|c| c.is_ascii_alphabetic());
    if alphanumeric && key == "twilio.from" {
        return Ok(number);
    }
    // The form only: whether the number exists is Twilio's to say (21212),
    // and asking libphonenumber here would load its whole database before
    // the service can even answer /health/alive.
    let trimmed = number.trim();
    if is_e164_shape(trimmed) {
        Ok(trimmed.to_owned())
    } else {
        Err(ConfigError::invalid(
            key,
            "must be a phone number in E.164 form (+ then country code and number, e.g. +15005550006)",
        ))
    }
}

impl TwilioSettings {
    fn check(self, env: &HashMap<String, String>) -> Result<TwilioConfig, ConfigError> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base_url) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {}
            _ => {
                return Err(ConfigError::invalid(
                    "twilio.base_url",
                    format!("`{base_url}` is not an http(s) URL"),
                ))
            }
        }
        let env_nonempty = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let account_sid = self
            .account_sid
            .filter(|s| !s.is_empty())
            .or_else(|| env_nonempty("TWILIO_ACCOUNT_SID"))
            .ok_or_else(|| {
                ConfigError::invalid(
                    "twilio.account_sid",
                    "is required (or TWILIO_ACCOUNT_SID); for a local try without Twilio, run `serve --dev`",
                )
            })?;
        if !is_account_sid(&account_sid) {
            return Err(ConfigError::invalid(
                "twilio.account_sid",
                "must be AC followed by 32 hex digits (Twilio) or a UUID (SignalWire project id)",
            ));
        }
        let auth_token = secret("twilio.auth_token", self.auth_token, self.auth_token_file)?
            .or_else(|| env_nonempty("TWILIO_AUTH_TOKEN").map(SecretString::from));
        let api_key_secret = secret(
            "twilio.api_key_secret",
            self.api_key_secret,
            self.api_key_secret_file,
        )?;
        let signing_token = auth_token.clone().filter(|t| !t.expose_secret().is_empty());
        let (username, password) = match (self.api_key_sid, api_key_secret) {
            (Some(sid), Some(secret)) => {
                if !is_sid(&sid, "SK") {
                    return Err(ConfigError::invalid(
                        "twilio.api_key_sid",
                        "must be SK followed by 32 hex digits",
                    ));
                }
                (sid, secret)
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "twilio.api_key_secret",
                    "is required with twilio.api_key_sid",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "twilio.api_key_sid",
                    "is required with twilio.api_key_secret",
                ))
            }
            (None, None) => match auth_token {
                Some(token) if !token.expose_secret().is_empty() => (account_sid.clone(), token),
                _ => {
                    return Err(ConfigError::invalid(
                        "twilio.auth_token",
                        "is required (or TWILIO_AUTH_TOKEN, or twilio.api_key_sid with twilio.api_key_secret)",
                    ))
                }
            },
        };
        let from = self
            .from
            .filter(|s| !s.is_empty())
            .map(|f| check_sender("twilio.from", f))
            .transpose()?;
        let messaging_service_sid = self.messaging_service_sid.filter(|s| !s.is_empty());
        let sms_sender = match (from.clone(), messaging_service_sid) {
            (_, Some(mg)) => {
                if !is_sid(&mg, "MG") {
                    return Err(ConfigError::invalid(
                        "twilio.messaging_service_sid",
                        "must be MG followed by 32 hex digits",
                    ));
                }
                SmsSender::MessagingServiceSid(mg)
            }
            (Some(f), None) => SmsSender::From(f),
            (None, None) => {
                return Err(ConfigError::invalid(
                    "twilio.from",
                    "an SMS sender is required: twilio.from (a number you own) or twilio.messaging_service_sid",
                ))
            }
        };
        let voice_from = match self.voice_from.filter(|s| !s.is_empty()) {
            Some(v) => Some(check_sender("twilio.voice_from", v)?),
            // An alphanumeric sender id cannot place calls.
            None => from.filter(|f| f.starts_with('+')),
        };
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(ConfigError::invalid(
                "twilio.timeout_ms",
                "must be between 1 and 60000 (keep it under Kratos's 10 s)",
            ));
        }
        Ok(TwilioConfig {
            base_url,
            account_sid,
            username,
            password,
            sms_sender,
            voice_from,
            timeout: Duration::from_millis(self.timeout_ms),
            verify_credentials_on_start: self.verify_credentials_on_start,
            max_in_flight: if self.max_in_flight == 0 {
                return Err(ConfigError::invalid(
                    "twilio.max_in_flight",
                    "must be at least 1",
                ));
            } else {
                self.max_in_flight
            },
            signing_token,
        })
    }
}

/// `en-us` → `en-US`, `DE` → `de`: BCP 47 tags compare case-insensitively,
/// and Twilio documents them in this form.
pub fn normalize_language_tag(tag: &str) -> Option<String> {
    let mut parts = tag.trim().split(['-', '_']);
    let primary = parts.next()?;
    if primary.len() < 2 || primary.len() > 3 || !primary.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = primary.to_ascii_lowercase();
    for p in parts {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        if p.len() == 2 {
            out.push_str(&p.to_ascii_uppercase());
        } else {
            out.push_str(p);
        }
    }
    Some(out)
}

fn english() -> Sentences {
    Sentences {
        voice: None,
        login: "Your login code is".into(),
        registration: "Your registration code is".into(),
        verification: "Your verification code is".into(),
        recovery: "Your recovery code is".into(),
        other: "Your code is".into(),
        again: "Again".into(),
    }
}

impl VoiceSettings {
    fn check(self) -> Result<VoiceConfig, ConfigError> {
        if self.trait_name.is_empty() {
            return Err(ConfigError::invalid("voice.trait", "must not be empty"));
        }
        if self.voice.is_empty() {
            return Err(ConfigError::invalid("voice.voice", "must not be empty"));
        }
        let language = normalize_language_tag(&self.language).ok_or_else(|| {
            ConfigError::invalid(
                "voice.language",
                format!("`{}` is not a language tag such as en-US", self.language),
            )
        })?;
        if !(1..=10).contains(&self.pause_seconds) {
            return Err(ConfigError::invalid(
                "voice.pause_seconds",
                "must be between 1 and 10",
            ));
        }
        let mut raw = BTreeMap::new();
        for (tag, s) in self.sentences {
            let norm = normalize_language_tag(&tag).ok_or_else(|| {
                ConfigError::invalid(
                    &format!("voice.sentences.{tag}"),
                    "the table name must be a language tag such as de-DE",
                )
            })?;
            // `en-US` from the file and `en-us` from the environment are
            // the same language: merge them, later keys winning per field.
            match raw.remove(&norm) {
                None => raw.insert(norm, s),
                Some(prev) => raw.insert(norm, overlay(prev, s)),
            };
        }
        let base = {
            let e = english();
            match raw.get(&language) {
                Some(d) => fill(d, &e),
                None => e,
            }
        };
        let mut sentences = BTreeMap::new();
        for (tag, s) in &raw {
            let filled = fill(s, &base);
            for (name, text) in [
                ("login", &filled.login),
                ("registration", &filled.registration),
                ("verification", &filled.verification),
                ("recovery", &filled.recovery),
                ("other", &filled.other),
                ("again", &filled.again),
            ] {
                if text.chars().count() > 500 {
                    return Err(ConfigError::invalid(
                        &format!("voice.sentences.{tag}.{name}"),
                        "must be at most 500 characters (TwiML is limited to 4000)",
                    ));
                }
            }
            sentences.insert(tag.clone(), filled);
        }
        sentences.entry(language.clone()).or_insert(base);
        Ok(VoiceConfig {
            trait_name: self.trait_name,
            voice: self.voice,
            language,
            pause_seconds: self.pause_seconds,
            sentences,
        })
    }
}

impl LimitsSettings {
    fn check(self) -> Result<LimitsConfig, ConfigError> {
        for (channel, rates) in [("sms", &self.sms), ("voice", &self.voice)] {
            for (name, rate) in [
                ("recipient", rates.recipient),
                ("ip", rates.ip),
                ("country", rates.country),
                ("global", rates.global),
            ] {
                check_rate(&format!("limits.{channel}.{name}"), rate)?;
            }
        }
        for h in &self.ip_headers.0 {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::invalid(
                    "limits.ip_headers",
                    format!("`{h}` is not a header name"),
                ));
            }
        }
        if self.prune_interval_ms < 1000 {
            return Err(ConfigError::invalid(
                "limits.prune_interval_ms",
                "must be at least 1000",
            ));
        }
        Ok(LimitsConfig {
            enabled: self.enabled,
            ip_headers: self.ip_headers.0,
            prune_interval: Duration::from_millis(self.prune_interval_ms),
            sms: self.sms,
            voice: self.voice,
        })
    }
}

fn check_rate(key: &str, rate: Rate) -> Result<(), ConfigError> {
    if rate.per_hour > 3_600_000 {
        return Err(ConfigError::invalid(
            &format!("{key}.per_hour"),
            "must be at most 3600000 (0 turns the limit off)",
        ));
    }
    if rate.per_hour > 0 && rate.burst == 0 {
        return Err(ConfigError::invalid(
            &format!("{key}.burst"),
            "must be at least 1",
        ));
    }
    Ok(())
}

fn regions(key: &str, list: StringList) -> Result<Vec<String>, ConfigError> {
    list.0
        .into_iter()
        .map(|c| {
            let up = c.trim().to_ascii_uppercase();
            if up.parse::<phonenumber::country::Id>().is_ok() {
                Ok(up)
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("`{c}` is not an ISO 3166 region code such as US or DE"),
                ))
            }
        })
        .collect()
}

impl PolicySettings {
    fn check(self) -> Result<PolicyConfig, ConfigError> {
        let country = |ch: &str, c: CountrySettings| -> Result<CountryPolicy, ConfigError> {
            Ok(CountryPolicy {
                allowed_countries: regions(
                    &format!("policy.{ch}.allowed_countries"),
                    c.allowed_countries,
                )?,
                denied_countries: regions(
                    &format!("policy.{ch}.denied_countries"),
                    c.denied_countries,
                )?,
            })
        };
        Ok(PolicyConfig {
            refuse_premium: self.refuse_premium,
            sms: country("sms", self.sms)?,
            voice: country("voice", self.voice)?,
        })
    }
}

fn check_budget(b: BudgetConfig) -> Result<BudgetConfig, ConfigError> {
    if !(1..=100).contains(&b.warn_percent) {
        return Err(ConfigError::invalid(
            "budget.warn_percent",
            "must be between 1 and 100",
        ));
    }
    Ok(b)
}

impl DedupSettings {
    fn check(self) -> Result<DedupConfig, ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "dedup.max_entries",
                "must be at least 1",
            ));
        }
        Ok(DedupConfig {
            window: Duration::from_millis(self.window_ms),
            unreachable: Duration::from_millis(self.unreachable_ms),
            max_entries: self.max_entries,
        })
    }
}

fn check_test_numbers(t: TestNumbersSettings) -> Result<Vec<String>, ConfigError> {
    t.numbers
        .0
        .into_iter()
        .map(|n| {
            let n = n.trim().to_owned();
            if is_e164_shape(&n) {
                Ok(n)
            } else {
                Err(ConfigError::invalid(
                    "test_numbers.numbers",
                    "every test number must be in E.164 form",
                ))
            }
        })
        .collect()
}

fn overlay(base: SentenceSettings, top: SentenceSettings) -> SentenceSettings {
    SentenceSettings {
        voice: top.voice.or(base.voice),
        login: top.login.or(base.login),
        registration: top.registration.or(base.registration),
        verification: top.verification.or(base.verification),
        recovery: top.recovery.or(base.recovery),
        other: top.other.or(base.other),
        again: top.again.or(base.again),
    }
}

fn fill(s: &SentenceSettings, base: &Sentences) -> Sentences {
    let pick = |v: &Option<String>, d: &String| v.clone().unwrap_or_else(|| d.clone());
    Sentences {
        voice: s.voice.clone().or_else(|| base.voice.clone()),
        login: pick(&s.login, &base.login),
        registration: pick(&s.registration, &base.registration),
        verification: pick(&s.verification, &base.verification),
        recovery: pick(&s.recovery, &base.recovery),
        other: pick(&s.other, &base.other),
        again: pick(&s.again, &base.again),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_are_normalised() {
        assert_eq!(normalize_language_tag("en-us").as_deref(), Some("en-US"));
        assert_eq!(normalize_language_tag("DE").as_deref(), Some("de"));
        assert_eq!(
            normalize_language_tag("zh_hant_TW").as_deref(),
            Some("zh-hant-TW")
        );
        assert_eq!(normalize_language_tag("e"), None);
        assert_eq!(normalize_language_tag("en-<x>"), None);
    }

    #[test]
    fn account_sids() {
        assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
        assert!(is_account_sid("a5c7a9f2-1b2c-4d5e-8f90-123456789abc"));
        assert!(!is_account_sid("AC0123"));
        assert!(!is_account_sid("AC0123456789abcdef0123456789abcdeg"));
        assert!(!is_account_sid("../AC0123456789abcdef0123456789abcd"));
    }
}
