//! `[[providers]]` (one list tagged by `kind`), its `[twilio]` shorthand
//! (a list of one entry named `twilio`; it alone also reads Twilio's
//! `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`; both at once are refused),
//! `[failover]` and `[status_callback]`. Every kind speaks Twilio's
//! 2010-04-01 API, so each entry is checked into a [`TwilioConfig`] (for
//! SignalWire: `{space_url}/api/laml`, the project id, the API token), its
//! errors named under its prefix (`twilio.` or `providers[i].`).
//!
//! (Past 400 lines: two kinds of entry, the shorthand, the credentials each
//! may take from a file or the environment, and the checks that need more
//! than one key, each naming the key it refuses.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::load::built_in;
use super::secret::{secret, ser_redacted, ser_redacted_opt};
use super::values::{choice, ms, range_text, ser_millis, within, ANY};
use crate::phone::{SenderId, E164};

/// Twilio's API, where `[twilio]` and a `kind = "twilio"` entry point by default.
pub(crate) const TWILIO_API: &str = "https://api.twilio.com";

/// One `[[providers]]` entry: `kind` says which keys it takes. A file's
/// entry is kept as the table it is ([`ProviderSettings::Written`]) and read
/// into its kind's keys when checked, so that an error names the key inside
/// the entry (`providers[1].timeout_ms`); serde's tagged enums read an entry
/// without the keys' path.
#[derive(Debug, Deserialize)]
#[serde(from = "config::Value")]
pub enum ProviderSettings {
    Written(config::Value),
    Twilio(TwilioSettings),
    SignalWire(SignalWireSettings),
}

impl From<config::Value> for ProviderSettings {
    fn from(table: config::Value) -> Self {
        ProviderSettings::Written(table)
    }
}

/// `[twilio]`, or a `kind = "twilio"` entry. A key left out takes
/// `[twilio]`'s value in the compiled-in defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<SecretString>,
    pub auth_token_file: Option<PathBuf>,
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<SecretString>,
    pub api_key_secret_file: Option<PathBuf>,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub voice_from: Option<String>,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub verify_credentials_on_start: Option<bool>,
    pub max_in_flight: Option<usize>,
    pub whatsapp: Option<bool>,
    pub whatsapp_from: Option<String>,
    pub whatsapp_messaging_service_sid: Option<String>,
}

/// A `kind = "signalwire"` entry: a SignalWire space.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalWireSettings {
    pub name: Option<String>,
    pub space_url: Option<String>,
    pub project_id: Option<String>,
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    pub signing_key: Option<SecretString>,
    pub signing_key_file: Option<PathBuf>,
    pub from: Option<String>,
    pub voice_from: Option<String>,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub verify_credentials_on_start: Option<bool>,
    pub max_in_flight: Option<usize>,
}

/// When a provider's circuit opens and for how long.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    #[serde(deserialize_with = "within::<_, u32, 1, ANY>")]
    pub(crate) open_after: u32,
    #[serde(rename = "open_ms", deserialize_with = "ms::<_, 1, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub(crate) open: Duration,
}

/// Which API dialect a provider speaks (they differ in paths, ids and the
/// signature header, not in the request forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "lowercase"))]
pub enum ProviderKind {
    Twilio,
    SignalWire,
}

impl ProviderKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "twilio",
            ProviderKind::SignalWire => "signalwire",
        }
    }

    /// Where this kind's status callbacks are received, below the public URL.
    pub(crate) fn status_path(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "/v1/twilio/status",
            ProviderKind::SignalWire => "/v1/signalwire/status",
        }
    }
}

/// One checked provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    pub(crate) name: String,
    pub(crate) kind: ProviderKind,
    pub api: TwilioConfig,
    /// Where its keys are written: `twilio` or `providers[i]`.
    #[serde(skip)]
    pub(crate) key: String,
}

/// Who sends the SMS: an owned number (or alphanumeric id) or a Messaging
/// Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsSender {
    From(SenderId),
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
    pub voice_from: Option<E164>,
    /// One provider request, connection included. Under Kratos's 10 s (see
    /// `checks`).
    #[serde(rename = "timeout_ms", serialize_with = "ser_millis")]
    pub timeout: Duration,
    /// Connecting (DNS, TCP, TLS handshake), within `timeout` and always
    /// shorter: a connection that cannot be made means the message was
    /// certainly not sent, and the next provider can still be asked.
    #[serde(rename = "connect_timeout_ms", serialize_with = "ser_millis")]
    pub(crate) connect_timeout: Duration,
    pub verify_credentials_on_start: bool,
    /// At most this many provider requests at once.
    pub max_in_flight: usize,
    /// The account's auth token, which signs Twilio's webhooks; `None` when
    /// only an API key is configured.
    #[serde(serialize_with = "ser_redacted_opt")]
    pub(crate) signing_token: Option<SecretString>,
    /// Whether and from where this provider sends WhatsApp.
    pub whatsapp: WhatsAppUse,
}

/// Whether a provider sends WhatsApp messages, and from which sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhatsAppUse {
    /// Not this provider (SignalWire has no WhatsApp; a Twilio account
    /// with `whatsapp = false`).
    Off,
    /// With `[whatsapp]`'s sender.
    Shared,
    /// With its own (`whatsapp_from` or `whatsapp_messaging_service_sid`).
    Own(SmsSender),
}

/// Twilio account sids are `AC` + 32 hex digits; SignalWire project ids are
/// UUIDs. Both go into the URL path, so nothing else is accepted.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub(super) fn is_sid(s: &str, prefix: &str) -> bool {
    (s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        || is_uuid(s)
}

pub(super) fn is_http_url(s: &str) -> bool {
    matches!(reqwest::Url::parse(s), Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A Messaging Service sid (`MG…`) at `key`.
pub(super) fn service_sid(key: &str, sid: String) -> Result<String, ConfigError> {
    match is_sid(&sid, "MG") {
        true => Ok(sid),
        false => Err(ConfigError::invalid(
            key,
            "must be MG followed by 32 hex digits",
        )),
    }
}

/// A WhatsApp sender: a Messaging Service (`MG…`) at `service_key`, else
/// a number (written with or without `whatsapp:`) at `from_key`; `None`
/// when neither is given.
pub(super) fn whatsapp_sender(
    (from_key, from): (&str, Option<String>),
    (service_key, service): (&str, Option<String>),
) -> Result<Option<SmsSender>, ConfigError> {
    let from = from.filter(|s| !s.is_empty());
    Ok(match (from, service.filter(|s| !s.is_empty())) {
        (_, Some(mg)) => Some(SmsSender::MessagingServiceSid(service_sid(
            service_key,
            mg,
        )?)),
        (Some(f), None) => {
            let number = SenderId::parse(f.strip_prefix("whatsapp:").unwrap_or(&f));
            let why = "must be a WhatsApp sender's number in E.164 form, such as +14155550100";
            let number = number.filter(|s| s.number().is_some());
            Some(SmsSender::From(
                number.ok_or_else(|| ConfigError::invalid(from_key, why))?,
            ))
        }
        (None, None) => None,
    })
}

/// The key `k` of the provider at `at` (`twilio`, `providers[1]`), refused.
fn bad(at: &str, k: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::invalid(&format!("{at}.{k}"), why)
}

const NOT_E164: &str =
    "must be a phone number in E.164 form (+ then country code and number, e.g. +15005550006)";

/// The provider list: `[[providers]]` when given, else `[twilio]` alone.
pub(super) fn check_providers(
    twilio: TwilioSettings,
    list: Vec<ProviderSettings>,
    env: &HashMap<String, String>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    if list.is_empty() {
        refuse_if(
            twilio.name.is_some(),
            "twilio.name",
            "is always \"twilio\" for the [twilio] shorthand; name providers in [[providers]]",
        )?;
        return Ok(vec![twilio.check("twilio", "twilio".into(), Some(env))?]);
    }
    let t = twilio;
    let in_use = t.account_sid.is_some()
        || t.auth_token.is_some()
        || t.auth_token_file.is_some()
        || t.api_key_sid.is_some()
        || t.api_key_secret.is_some()
        || t.api_key_secret_file.is_some()
        || t.from.is_some()
        || t.messaging_service_sid.is_some()
        || t.voice_from.is_some()
        || t.base_url
            .is_some_and(|u| u.trim_end_matches('/') != TWILIO_API);
    refuse_if(
        in_use,
        "providers",
        "and [twilio] are both set: use [[providers]] alone (an entry with kind = \"twilio\" takes the keys [twilio] had), or [twilio] alone",
    )?;
    let mut out: Vec<ProviderConfig> = Vec::with_capacity(list.len());
    for (i, entry) in list.into_iter().enumerate() {
        let provider = entry.check(&format!("providers[{i}]"), &out)?;
        out.push(provider);
    }
    Ok(out)
}

impl ProviderSettings {
    /// The entry at `at` of the list; `earlier`: the entries before it.
    /// No TWILIO_* variables here: with several providers, which one they
    /// would belong to is a guess.
    fn check(self, at: &str, earlier: &[ProviderConfig]) -> Result<ProviderConfig, ConfigError> {
        match self {
            ProviderSettings::Written(table) => read_entry(at, table)?.check(at, earlier),
            ProviderSettings::Twilio(t) => {
                let name = list_name(at, &t.name, earlier)?;
                t.check(at, name, None)
            }
            ProviderSettings::SignalWire(s) => {
                let name = list_name(at, &s.name, earlier)?;
                s.check(at, name)
            }
        }
    }
}

/// A file's entry read as the keys of its `kind`.
fn read_entry(at: &str, table: config::Value) -> Result<ProviderSettings, ConfigError> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(deserialize_with = "choice")]
        kind: ProviderKind,
    }
    let kind = read_at::<Kind>(at, table.clone())?.kind;
    let mut table = table
        .into_table()
        .map_err(|e| ConfigError::loading(&e, None))?;
    table.retain(|k, _| k != "kind");
    Ok(match kind {
        ProviderKind::Twilio => ProviderSettings::Twilio(read_at(at, table.into())?),
        ProviderKind::SignalWire => ProviderSettings::SignalWire(read_at(at, table.into())?),
    })
}

/// `value` read as the value of the key `at`, so that an error names the
/// key inside it (`providers[1].timeout_ms`) as the loader names any other.
fn read_at<T: DeserializeOwned>(at: &str, value: config::Value) -> Result<T, ConfigError> {
    let one = config::Value::from(config::Map::from([(at.to_owned(), value)]));
    let read: HashMap<String, T> = one
        .try_deserialize()
        .map_err(|e| ConfigError::loading(&e, None))?;
    let value = read.into_values().next();
    value.ok_or_else(|| ConfigError::invalid(at, "is empty"))
}

/// A list entry's `name`: a metrics label and a ledger field, unique.
fn list_name(
    at: &str,
    written: &Option<String>,
    earlier: &[ProviderConfig],
) -> Result<String, ConfigError> {
    let name = written.clone().unwrap_or_default();
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(bad(
            at,
            "name",
            "must be 1 to 32 of a-z, 0-9, '_' and '-' (it is a metrics label and a ledger field)",
        ));
    }
    if earlier.iter().any(|o| o.name == name) {
        return Err(bad(
            at,
            "name",
            "is used by an earlier provider; names must be unique",
        ));
    }
    Ok(name)
}

impl TwilioSettings {
    /// `[twilio]` (with `env`, for Twilio's own variables) or a list entry.
    fn check(
        self,
        at: &str,
        name: String,
        env: Option<&HashMap<String, String>>,
    ) -> Result<ProviderConfig, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let var = |name: &str| env?.get(name).filter(|v| !v.is_empty()).cloned();
        let or_var = |name: &str| env.map(|_| format!(" (or {name})")).unwrap_or_default();
        let base_url = self.base_url.as_deref().unwrap_or(TWILIO_API);
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !is_http_url(&base_url) {
            // Not quoted: a URL can carry a password (https://user:pass@host).
            let why = "is not an http(s) URL such as https://api.twilio.com";
            return Err(bad(at, "base_url", why));
        }
        let account_sid = self.account_sid.filter(|s| !s.is_empty());
        let Some(account_sid) = account_sid.or_else(|| var("TWILIO_ACCOUNT_SID")) else {
            let or = or_var("TWILIO_ACCOUNT_SID");
            let why = format!("is required{or}; for a local try without Twilio, run `serve --dev`");
            return Err(bad(at, "account_sid", why));
        };
        if !is_sid(&account_sid, "AC") {
            let why =
                "must be AC followed by 32 hex digits (Twilio) or a UUID (SignalWire project id)";
            return Err(bad(at, "account_sid", why));
        }
        let auth_token = secret(&key("auth_token"), self.auth_token, self.auth_token_file)?
            .or_else(|| var("TWILIO_AUTH_TOKEN").map(SecretString::from));
        let (api_key, secret_file) = (self.api_key_secret, self.api_key_secret_file);
        let api_key_secret = secret(&key("api_key_secret"), api_key, secret_file)?;
        let signing_token = auth_token.filter(|t| !t.expose_secret().is_empty());
        let (sid, secret) = (key("api_key_sid"), key("api_key_secret"));
        let (username, password) = match (self.api_key_sid, api_key_secret, signing_token.clone()) {
            (Some(id), Some(s), _) if is_sid(&id, "SK") => (id, s),
            (Some(_), Some(_), _) => {
                return Err(bad(
                    at,
                    "api_key_sid",
                    "must be SK followed by 32 hex digits",
                ))
            }
            (Some(_), None, _) => {
                return Err(bad(at, "api_key_secret", format!("is required with {sid}")))
            }
            (None, Some(_), _) => {
                return Err(bad(at, "api_key_sid", format!("is required with {secret}")))
            }
            (None, None, Some(token)) => (account_sid.clone(), token),
            (None, None, None) => {
                let or = or_var("TWILIO_AUTH_TOKEN");
                return Err(bad(
                    at,
                    "auth_token",
                    format!("is required{or}, or {sid} with {secret}"),
                ));
            }
        };
        let from = self.from.filter(|s| !s.is_empty());
        let from = from.map(|f| SenderId::parse(&f).ok_or_else(|| bad(at, "from", NOT_E164)));
        let from = from.transpose()?;
        let sms_sender = match (&from, self.messaging_service_sid.filter(|s| !s.is_empty())) {
            (_, Some(mg)) => {
                SmsSender::MessagingServiceSid(service_sid(&key("messaging_service_sid"), mg)?)
            }
            (Some(f), None) => SmsSender::From(f.clone()),
            (None, None) => {
                let (from, service) = (key("from"), key("messaging_service_sid"));
                let why =
                    format!("an SMS sender is required: {from} (a number you own) or {service}");
                return Err(bad(at, "from", why));
            }
        };
        // An alphanumeric sender id cannot place calls.
        let voice_from = voice_from(&key("voice_from"), self.voice_from, from.as_ref())?;
        let (on, wa_from) = (self.whatsapp, self.whatsapp_from);
        let whatsapp = whatsapp_use(at, on, wa_from, self.whatsapp_messaging_service_sid)?;
        // A limit left out takes the built-in `[twilio]`'s. The timeout's
        // upper bound depends on Kratos, not on the provider: `checks`.
        let d: TwilioSettings = built_in("twilio")?;
        let timeout_ms = self.timeout_ms.or(d.timeout_ms).unwrap_or_default();
        let max_in_flight = self.max_in_flight.or(d.max_in_flight).unwrap_or_default();
        for (k, v) in [
            ("timeout_ms", timeout_ms),
            ("max_in_flight", max_in_flight as u64),
        ] {
            if v == 0 {
                return Err(bad(at, k, range_text(1, ANY)));
            }
        }
        let connect_key = key("connect_timeout_ms");
        let connect_timeout = connect_timeout(&connect_key, self.connect_timeout_ms, timeout_ms)?;
        let verify = self
            .verify_credentials_on_start
            .or(d.verify_credentials_on_start);
        Ok(ProviderConfig {
            name,
            kind: ProviderKind::Twilio,
            key: at.to_owned(),
            api: TwilioConfig {
                base_url,
                account_sid,
                username,
                password,
                sms_sender,
                voice_from,
                timeout: Duration::from_millis(timeout_ms),
                connect_timeout,
                verify_credentials_on_start: verify.unwrap_or(true),
                max_in_flight,
                signing_token,
                whatsapp,
            },
        })
    }
}

/// A Twilio account's WhatsApp: off, `[whatsapp]`'s sender, or its own.
fn whatsapp_use(
    at: &str,
    on: Option<bool>,
    from: Option<String>,
    service: Option<String>,
) -> Result<WhatsAppUse, ConfigError> {
    let from_key = format!("{at}.whatsapp_from");
    let service_key = format!("{at}.whatsapp_messaging_service_sid");
    if on == Some(false) {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        refuse_if(
            given(&from) || given(&service),
            &format!("{at}.whatsapp"),
            format!("is false, yet {from_key} or {service_key} is set: remove one"),
        )?;
        return Ok(WhatsAppUse::Off);
    }
    let own = whatsapp_sender((&from_key, from), (&service_key, service))?;
    Ok(own.map_or(WhatsAppUse::Shared, WhatsAppUse::Own))
}

/// The caller id: `voice_from`, else `from` when it is a number.
fn voice_from(
    key: &str,
    written: Option<String>,
    from: Option<&SenderId>,
) -> Result<Option<E164>, ConfigError> {
    match written.filter(|s| !s.is_empty()) {
        Some(v) => E164::parse(&v)
            .map(Some)
            .ok_or_else(|| ConfigError::invalid(key, NOT_E164)),
        None => Ok(from.and_then(SenderId::number).cloned()),
    }
}

impl SignalWireSettings {
    /// A SignalWire space: Twilio's API at `{space_url}/api/laml`, with the
    /// project id for the account sid and the API token for the auth token;
    /// its webhooks are signed with the signing key.
    fn check(self, at: &str, name: String) -> Result<ProviderConfig, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let space_url = self.space_url.unwrap_or_default();
        let space_url = space_url.trim_end_matches('/');
        if !is_http_url(space_url) {
            // Not quoted: a URL can carry a password.
            let why = match space_url {
                "" => "is required, e.g. https://example.signalwire.com",
                _ => "is not an http(s) URL such as https://example.signalwire.com",
            };
            return Err(bad(at, "space_url", why));
        }
        let project_id = self.project_id.filter(|s| !s.is_empty());
        let project_id = project_id.ok_or_else(|| bad(at, "project_id", "is required"))?;
        if !is_uuid(&project_id) {
            let why = "must be a UUID (the project id in the SignalWire dashboard)";
            return Err(bad(at, "project_id", why));
        }
        let api_token = secret(&key("api_token"), self.api_token, self.api_token_file)?;
        let api_token = api_token.filter(|t| !t.expose_secret().is_empty());
        let api_token =
            api_token.ok_or_else(|| bad(at, "api_token", "is required (or api_token_file)"))?;
        let signing_token = secret(&key("signing_key"), self.signing_key, self.signing_key_file)?;
        if self.from.as_deref().unwrap_or_default().is_empty() {
            return Err(bad(
                at,
                "from",
                "is required: a number of the space, in E.164",
            ));
        }
        let as_twilio = TwilioSettings {
            base_url: Some(format!("{space_url}/api/laml")),
            account_sid: Some(project_id),
            auth_token: Some(api_token),
            from: self.from,
            voice_from: self.voice_from,
            timeout_ms: self.timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            verify_credentials_on_start: self.verify_credentials_on_start,
            max_in_flight: self.max_in_flight,
            // SignalWire has no WhatsApp.
            whatsapp: Some(false),
            ..TwilioSettings::default()
        };
        let mut provider = as_twilio.check(at, name, None)?;
        provider.kind = ProviderKind::SignalWire;
        provider.api.signing_token = signing_token;
        Ok(provider)
    }
}

/// The connect timeout when none is written: 2 s (a provider's TCP and TLS
/// handshakes take well under a second when it is up), or half of
/// `timeout_ms` when that is less.
pub(super) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;

/// `connect_timeout_ms` (`key`), checked against the request's `timeout_ms`.
/// It must be shorter: reqwest reports the request timeout firing without
/// saying whether the connection was made, and only a connect timeout
/// proves the message was not sent (`provider::twilio::map_transport`).
pub(super) fn connect_timeout(
    key: &str,
    written: Option<u64>,
    timeout_ms: u64,
) -> Result<Duration, ConfigError> {
    let ms = match written {
        None => DEFAULT_CONNECT_TIMEOUT_MS.min(timeout_ms / 2).max(1),
        Some(0) => return Err(ConfigError::invalid(key, range_text(1, ANY))),
        Some(ms) if ms >= timeout_ms => {
            return Err(ConfigError::invalid(
                key,
                "must be less than timeout_ms: connecting is part of the request",
            ))
        }
        Some(ms) => ms,
    };
    Ok(Duration::from_millis(ms))
}

/// `[status_callback]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCallbackSettings {
    pub public_url: String,
}

impl StatusCallbackSettings {
    /// The full callback URL, `{public_url}/v1/twilio/status`; `None` when
    /// no public URL is set. That it needs every provider's signing key is
    /// in `checks`.
    pub(super) fn check(self) -> Result<Option<String>, ConfigError> {
        match public_url("status_callback.public_url", &self.public_url)? {
            None => Ok(None),
            Some(url) => Ok(Some(format!("{url}{}", ProviderKind::Twilio.status_path()))),
        }
    }
}

/// A base URL at which the provider reaches this service, without a
/// trailing slash; `None` when empty. Not quoted: a URL can carry a
/// password (https://user:pass@host).
pub(super) fn public_url(key: &str, written: &str) -> Result<Option<String>, ConfigError> {
    let url = written.trim().trim_end_matches('/');
    if url.is_empty() {
        return Ok(None);
    }
    match reqwest::Url::parse(url) {
        Ok(u) if is_http_url(url) && u.query().is_none() => {}
        _ => return Err(ConfigError::invalid(
            key,
            "is not the http(s) base URL Twilio can reach this service at, such as https://courier.example.com",
        )),
    }
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeouts() {
        let ms = |written, timeout| {
            connect_timeout("twilio.connect_timeout_ms", written, timeout)
                .map(|d| d.as_millis() as u64)
        };
        assert_eq!(ms(None, 8000).unwrap(), 2000);
        assert_eq!(ms(None, 3000).unwrap(), 1500);
        assert_eq!(ms(None, 300).unwrap(), 150);
        assert_eq!(ms(None, 1).unwrap(), 1);
        assert_eq!(ms(Some(500), 8000).unwrap(), 500);
        assert!(ms(Some(0), 8000).is_err());
        assert!(ms(Some(8000), 8000).is_err());
        assert!(ms(Some(9000), 8000).is_err());
    }

    #[test]
    fn account_sids() {
        let is_account_sid = |s| is_sid(s, "AC");
        assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
        assert!(is_account_sid("a5c7a9f2-1b2c-4d5e-8f90-123456789abc"));
        assert!(!is_account_sid("AC0123"));
        assert!(!is_account_sid("AC0123456789abcdef0123456789abcdeg"));
        assert!(!is_account_sid("../AC0123456789abcdef0123456789abcd"));
    }
}
