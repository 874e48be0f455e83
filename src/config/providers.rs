//! `[[providers]]` (one list tagged by `kind`), its `[twilio]` shorthand
//! (a list of one entry named `twilio`; it alone also reads Twilio's
//! `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`; both at once are refused),
//! `[failover]` and `[status_callback]`. Every kind speaks Twilio's
//! 2010-04-01 API, so each entry is checked into a [`TwilioConfig`] (for
//! SignalWire: `{space_url}/api/laml`, the project id, the API token), its
//! errors named under its prefix (`twilio.` or `providers[i].`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::load::built_in;
use super::secret::{secret, ser_redacted, ser_redacted_opt};
use super::values::{ms, range_text, ser_millis, within, ANY};
use crate::phone::{SenderId, E164};

/// Twilio's API, where `[twilio]` and a `kind = "twilio"` entry point by default.
pub const TWILIO_API: &str = "https://api.twilio.com";

/// One `[[providers]]` entry as written: `kind` says which keys it takes.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderSettings {
    Twilio(TwilioSettings),
    SignalWire(SignalWireSettings),
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

/// The keys every kind takes: how long and how many requests.
#[derive(Debug, Default, Clone, Deserialize)]
struct ProviderLimits {
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    verify_credentials_on_start: Option<bool>,
    max_in_flight: Option<usize>,
}

/// The limits of an entry of either kind.
macro_rules! limits {
    ($s:expr) => {
        ProviderLimits {
            timeout_ms: $s.timeout_ms,
            connect_timeout_ms: $s.connect_timeout_ms,
            verify_credentials_on_start: $s.verify_credentials_on_start,
            max_in_flight: $s.max_in_flight,
        }
    };
}

/// When a provider's circuit opens and for how long.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    #[serde(deserialize_with = "within::<_, u32, 1, ANY>")]
    pub open_after: u32,
    #[serde(rename = "open_ms", deserialize_with = "ms::<_, 1, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub open: Duration,
}

/// Which API dialect a provider speaks (they differ in paths, ids and the
/// signature header, not in the request forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Twilio,
    SignalWire,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "twilio",
            ProviderKind::SignalWire => "signalwire",
        }
    }

    /// Where this kind's status callbacks are received, below the public URL.
    pub fn status_path(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "/v1/twilio/status",
            ProviderKind::SignalWire => "/v1/signalwire/status",
        }
    }
}

/// One checked provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub api: TwilioConfig,
    /// Where its keys are written: `twilio` or `providers[i]`.
    #[serde(skip)]
    pub key: String,
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
    pub connect_timeout: Duration,
    pub verify_credentials_on_start: bool,
    /// At most this many provider requests at once.
    pub max_in_flight: usize,
    /// The account's auth token, which signs Twilio's webhooks; `None` when
    /// only an API key is configured.
    #[serde(serialize_with = "ser_redacted_opt")]
    pub signing_token: Option<SecretString>,
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
pub fn is_account_sid(s: &str) -> bool {
    is_sid(s, "AC")
}

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

const NOT_E164: &str =
    "must be a phone number in E.164 form (+ then country code and number, e.g. +15005550006)";

/// The provider list: `[[providers]]` when given, else `[twilio]` alone.
pub(super) fn check_providers(
    twilio: TwilioSettings,
    list: Vec<ProviderSettings>,
    env: &HashMap<String, String>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    if list.is_empty() {
        if twilio.name.is_some() {
            return Err(ConfigError::invalid(
                "twilio.name",
                "is always \"twilio\" for the [twilio] shorthand; name providers in [[providers]]",
            ));
        }
        return Ok(vec![twilio.check("twilio", "twilio".into(), Some(env))?]);
    }
    let written = &twilio;
    let in_use = written.account_sid.is_some()
        || secret_given(&written.auth_token, &written.auth_token_file)
        || written.api_key_sid.is_some()
        || secret_given(&written.api_key_secret, &written.api_key_secret_file)
        || written.from.is_some()
        || written.messaging_service_sid.is_some()
        || written.voice_from.is_some()
        || written
            .base_url
            .as_deref()
            .is_some_and(|u| u.trim_end_matches('/') != TWILIO_API);
    if in_use {
        return Err(ConfigError::invalid(
            "providers",
            "and [twilio] are both set: use [[providers]] alone (an entry with kind = \"twilio\" takes the keys [twilio] had), or [twilio] alone",
        ));
    }
    let mut out: Vec<ProviderConfig> = Vec::with_capacity(list.len());
    for (i, entry) in list.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let name = match &entry {
            ProviderSettings::Twilio(t) => t.name.clone(),
            ProviderSettings::SignalWire(s) => s.name.clone(),
        };
        let valid = name.as_deref().is_some_and(|n| {
            (1..=32).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
        let name = name.filter(|_| valid).ok_or_else(|| {
            ConfigError::invalid(
                &format!("{at}.name"),
                "must be 1 to 32 of a-z, 0-9, '_' and '-' (it is a metrics label and a ledger field)",
            )
        })?;
        if out.iter().any(|o| o.name == name) {
            return Err(ConfigError::invalid(
                &format!("{at}.name"),
                "is used by an earlier provider; names must be unique",
            ));
        }
        // No TWILIO_* variables here: with several providers, which one
        // they would belong to is a guess.
        out.push(match entry {
            ProviderSettings::Twilio(t) => t.check(&at, name, None)?,
            ProviderSettings::SignalWire(s) => s.check(&at, name)?,
        });
    }
    Ok(out)
}

fn secret_given(inline: &Option<SecretString>, file: &Option<PathBuf>) -> bool {
    inline.is_some() || file.is_some()
}

/// `(timeout, connect_timeout, verify_credentials_on_start, max_in_flight)`,
/// checked alike for every kind, left-out keys taken from the built-in
/// `[twilio]`.
type Limits = (Duration, Duration, bool, usize);

impl ProviderLimits {
    fn check(self, at: &str) -> Result<Limits, ConfigError> {
        let d: ProviderLimits = built_in("twilio")?;
        let key = |k: &str| format!("{at}.{k}");
        // The upper bound depends on Kratos, not on the provider: `checks`.
        let timeout_ms = self.timeout_ms.or(d.timeout_ms).unwrap_or_default();
        let max_in_flight = self.max_in_flight.or(d.max_in_flight).unwrap_or_default();
        if timeout_ms == 0 {
            return Err(ConfigError::invalid(&key("timeout_ms"), range_text(1, ANY)));
        }
        if max_in_flight == 0 {
            return Err(ConfigError::invalid(
                &key("max_in_flight"),
                range_text(1, ANY),
            ));
        }
        let connect = connect_timeout(
            &key("connect_timeout_ms"),
            self.connect_timeout_ms,
            timeout_ms,
        )?;
        let verify = self.verify_credentials_on_start;
        let verify = verify.or(d.verify_credentials_on_start).unwrap_or(true);
        Ok((
            Duration::from_millis(timeout_ms),
            connect,
            verify,
            max_in_flight,
        ))
    }
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
        let var = |name: &str| {
            env.and_then(|e| e.get(name))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let or_var = |name: &str| match env {
            Some(_) => format!(" (or {name})"),
            None => String::new(),
        };
        let base_url = match self.base_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => TWILIO_API.to_owned(),
        };
        if !is_http_url(&base_url) {
            // Not quoted: a URL can carry a password (https://user:pass@host).
            return Err(ConfigError::invalid(
                &key("base_url"),
                "is not an http(s) URL such as https://api.twilio.com",
            ));
        }
        let account_sid = self
            .account_sid
            .filter(|s| !s.is_empty())
            .or_else(|| var("TWILIO_ACCOUNT_SID"))
            .ok_or_else(|| {
                ConfigError::invalid(
                    &key("account_sid"),
                    format!(
                        "is required{}; for a local try without Twilio, run `serve --dev`",
                        or_var("TWILIO_ACCOUNT_SID")
                    ),
                )
            })?;
        if !is_account_sid(&account_sid) {
            return Err(ConfigError::invalid(
                &key("account_sid"),
                "must be AC followed by 32 hex digits (Twilio) or a UUID (SignalWire project id)",
            ));
        }
        let auth_token = secret(&key("auth_token"), self.auth_token, self.auth_token_file)?
            .or_else(|| var("TWILIO_AUTH_TOKEN").map(SecretString::from));
        let api_key_secret = secret(
            &key("api_key_secret"),
            self.api_key_secret,
            self.api_key_secret_file,
        )?;
        let signing_token = auth_token.clone().filter(|t| !t.expose_secret().is_empty());
        let (username, password) = match (self.api_key_sid, api_key_secret) {
            (Some(sid), Some(secret)) if is_sid(&sid, "SK") => (sid, secret),
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    &key("api_key_sid"),
                    "must be SK followed by 32 hex digits",
                ))
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    &key("api_key_secret"),
                    format!("is required with {}", key("api_key_sid")),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    &key("api_key_sid"),
                    format!("is required with {}", key("api_key_secret")),
                ))
            }
            (None, None) => match auth_token {
                Some(token) if !token.expose_secret().is_empty() => (account_sid.clone(), token),
                _ => {
                    return Err(ConfigError::invalid(
                        &key("auth_token"),
                        format!(
                            "is required{}, or {} with {}",
                            or_var("TWILIO_AUTH_TOKEN"),
                            key("api_key_sid"),
                            key("api_key_secret")
                        ),
                    ))
                }
            },
        };
        let from = self
            .from
            .filter(|s| !s.is_empty())
            .map(|f| {
                SenderId::parse(&f).ok_or_else(|| ConfigError::invalid(&key("from"), NOT_E164))
            })
            .transpose()?;
        let sms_sender = match (
            from.clone(),
            self.messaging_service_sid.filter(|s| !s.is_empty()),
        ) {
            (_, Some(mg)) if is_sid(&mg, "MG") => SmsSender::MessagingServiceSid(mg),
            (_, Some(_)) => {
                return Err(ConfigError::invalid(
                    &key("messaging_service_sid"),
                    "must be MG followed by 32 hex digits",
                ))
            }
            (Some(f), None) => SmsSender::From(f),
            (None, None) => {
                return Err(ConfigError::invalid(
                    &key("from"),
                    format!(
                        "an SMS sender is required: {} (a number you own) or {}",
                        key("from"),
                        key("messaging_service_sid")
                    ),
                ))
            }
        };
        // An alphanumeric sender id cannot place calls.
        let voice_from = voice_from(&key("voice_from"), self.voice_from, from.as_ref())?;
        let whatsapp = whatsapp_use(
            &key,
            self.whatsapp,
            self.whatsapp_from,
            self.whatsapp_messaging_service_sid,
        )?;
        let (timeout, connect_timeout, verify_credentials_on_start, max_in_flight) =
            limits!(self).check(at)?;
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
                timeout,
                connect_timeout,
                verify_credentials_on_start,
                max_in_flight,
                signing_token,
                whatsapp,
            },
        })
    }
}

/// A Twilio account's WhatsApp: off, `[whatsapp]`'s sender, or its own.
fn whatsapp_use(
    key: &dyn Fn(&str) -> String,
    on: Option<bool>,
    from: Option<String>,
    service: Option<String>,
) -> Result<WhatsAppUse, ConfigError> {
    let from = from.filter(|s| !s.is_empty());
    let service = service.filter(|s| !s.is_empty());
    if on == Some(false) {
        if from.is_some() || service.is_some() {
            return Err(ConfigError::invalid(
                &key("whatsapp"),
                format!(
                    "is false, yet {} or {} is set: remove one",
                    key("whatsapp_from"),
                    key("whatsapp_messaging_service_sid")
                ),
            ));
        }
        return Ok(WhatsAppUse::Off);
    }
    Ok(match (from, service) {
        (_, Some(mg)) if is_sid(&mg, "MG") => WhatsAppUse::Own(SmsSender::MessagingServiceSid(mg)),
        (_, Some(_)) => {
            return Err(ConfigError::invalid(
                &key("whatsapp_messaging_service_sid"),
                "must be MG followed by 32 hex digits",
            ))
        }
        (Some(f), None) => {
            let f = f.strip_prefix("whatsapp:").unwrap_or(&f);
            match SenderId::parse(f).filter(|s| s.number().is_some()) {
                Some(s) => WhatsAppUse::Own(SmsSender::From(s)),
                None => {
                    return Err(ConfigError::invalid(
                        &key("whatsapp_from"),
                        "must be a WhatsApp sender's number in E.164 form, such as +14155550100",
                    ))
                }
            }
        }
        (None, None) => WhatsAppUse::Shared,
    })
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
    /// A SignalWire space: its compatibility API at `{space_url}/api/laml`.
    fn check(self, at: &str, name: String) -> Result<ProviderConfig, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let space_url = self
            .space_url
            .ok_or_else(|| {
                ConfigError::invalid(
                    &key("space_url"),
                    "is required, e.g. https://example.signalwire.com",
                )
            })?
            .trim_end_matches('/')
            .to_owned();
        if !is_http_url(&space_url) {
            // Not quoted: a URL can carry a password.
            return Err(ConfigError::invalid(
                &key("space_url"),
                "is not an http(s) URL such as https://example.signalwire.com",
            ));
        }
        let project_id = self
            .project_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConfigError::invalid(&key("project_id"), "is required"))?;
        if !is_uuid(&project_id) {
            return Err(ConfigError::invalid(
                &key("project_id"),
                "must be a UUID (the project id in the SignalWire dashboard)",
            ));
        }
        let api_token = secret(&key("api_token"), self.api_token, self.api_token_file)?
            .ok_or_else(|| {
                ConfigError::invalid(&key("api_token"), "is required (or api_token_file)")
            })?;
        let signing_token = secret(&key("signing_key"), self.signing_key, self.signing_key_file)?;
        let from = self.from.filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::invalid(&key("from"), "is required: a number of the space, in E.164")
        })?;
        let from =
            SenderId::parse(&from).ok_or_else(|| ConfigError::invalid(&key("from"), NOT_E164))?;
        let voice_from = voice_from(&key("voice_from"), self.voice_from, Some(&from))?;
        let (timeout, connect_timeout, verify_credentials_on_start, max_in_flight) =
            limits!(self).check(at)?;
        Ok(ProviderConfig {
            name,
            kind: ProviderKind::SignalWire,
            key: at.to_owned(),
            api: TwilioConfig {
                base_url: format!("{space_url}/api/laml"),
                account_sid: project_id.clone(),
                username: project_id,
                password: api_token,
                sms_sender: SmsSender::From(from),
                voice_from,
                timeout,
                connect_timeout,
                verify_credentials_on_start,
                max_in_flight,
                signing_token,
                // SignalWire has no WhatsApp.
                whatsapp: WhatsAppUse::Off,
            },
        })
    }
}

/// The connect timeout when none is written: 2 s (a provider's TCP and TLS
/// handshakes take well under a second when it is up), or half of
/// `timeout_ms` when that is less.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;

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
        assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
        assert!(is_account_sid("a5c7a9f2-1b2c-4d5e-8f90-123456789abc"));
        assert!(!is_account_sid("AC0123"));
        assert!(!is_account_sid("AC0123456789abcdef0123456789abcdeg"));
        assert!(!is_account_sid("../AC0123456789abcdef0123456789abcd"));
    }
}
