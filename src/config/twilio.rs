//! `[twilio]`: where the provider is, who we are to it (account, auth token
//! or API key), who messages and calls come from, and how long and how many
//! requests may be in flight.
//!
//! Twilio's own variables (`TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`) are
//! honoured when the configuration is silent, as Twilio's tools do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::phone_number::{SenderId, E164};
use super::secret::{secret, ser_redacted, ser_redacted_opt};
use super::values::ser_millis;

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
    pub verify_credentials_on_start: bool,
    /// At most this many provider requests at once.
    pub max_in_flight: usize,
    /// The account's auth token, which signs Twilio's webhooks; `None` when
    /// only an API key is configured.
    #[serde(serialize_with = "ser_redacted_opt")]
    pub signing_token: Option<SecretString>,
}

/// Twilio account sids are `AC` + 32 hex digits; SignalWire project ids are
/// UUIDs. Both go into the URL path, so nothing else is accepted.
pub fn is_account_sid(s: &str) -> bool {
    let twilio =
        s.len() == 34 && s.starts_with("AC") && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    twilio || is_uuid(s)
}

pub(super) fn is_uuid(s: &str) -> bool {
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

const NOT_E164: &str =
    "must be a phone number in E.164 form (+ then country code and number, e.g. +15005550006)";

impl TwilioSettings {
    pub(super) fn check(self, env: &HashMap<String, String>) -> Result<TwilioConfig, ConfigError> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base_url) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {}
            // Not quoted: a URL can carry a password (https://user:pass@host).
            _ => {
                return Err(ConfigError::invalid(
                    "twilio.base_url",
                    "is not an http(s) URL such as https://api.twilio.com",
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
            .map(|f| {
                SenderId::parse(&f).ok_or_else(|| ConfigError::invalid("twilio.from", NOT_E164))
            })
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
            Some(v) => Some(
                E164::parse(&v)
                    .ok_or_else(|| ConfigError::invalid("twilio.voice_from", NOT_E164))?,
            ),
            // An alphanumeric sender id cannot place calls.
            None => from.as_ref().and_then(SenderId::number).cloned(),
        };
        // The upper bound depends on Kratos, not on Twilio: see `checks`.
        if self.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "twilio.timeout_ms",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "twilio.max_in_flight",
                "must be at least 1",
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
            max_in_flight: self.max_in_flight,
            signing_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_sids() {
        assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
        assert!(is_account_sid("a5c7a9f2-1b2c-4d5e-8f90-123456789abc"));
        assert!(!is_account_sid("AC0123"));
        assert!(!is_account_sid("AC0123456789abcdef0123456789abcdeg"));
        assert!(!is_account_sid("../AC0123456789abcdef0123456789abcd"));
    }
}
