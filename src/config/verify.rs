//! `[verify]`: the verify API for applications without Kratos
//! (`POST /v1/verify/request`, `POST /v1/verify/check`): how long codes are
//! and live, how many tries a code gets, how many checks a number gets per
//! hour whatever its codes, and the SMS text per language.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::{ms, parsed, ser_millis, within};
use crate::domain::LanguageTag;

/// Twilio's limit for an SMS body, less room for a 10-digit code and the
/// minutes.
const MAX_TEMPLATE_CHARS: usize = 1500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub enabled: bool,
    /// Shorter codes are guessed too easily within the attempts; a call
    /// speaks at most 12 characters, and 10 digits are plenty.
    #[serde(deserialize_with = "within::<_, u32, 4, 10>")]
    pub code_length: u32,
    /// A code that lives less than a minute cannot be typed in from a slow
    /// SMS; one that lives past a day is not a one-time code any more.
    #[serde(deserialize_with = "ms::<_, 60_000, 86_400_000>")]
    pub ttl_ms: Duration,
    /// More tries than 20 turn a short code into a guessable one.
    #[serde(deserialize_with = "within::<_, u32, 1, 20>")]
    pub max_attempts: u32,
    /// Checks of one number per clock hour, across all its codes: past a
    /// few hundred the cap no longer stops a guesser of short codes.
    #[serde(deserialize_with = "within::<_, u32, 1, 1000>")]
    pub max_checks_per_hour: u32,
    #[serde(deserialize_with = "parsed")]
    pub default_locale: LanguageTag,
    pub demo: bool,
    pub templates: BTreeMap<String, String>,
    /// Absent or empty: no Web OTP line.
    #[serde(default)]
    pub web_otp_domain: Option<String>,
}

/// The checked `[verify]`; `None` in [`super::Config`] when not enabled.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyConfig {
    /// Digits in a code.
    pub code_length: u32,
    /// How long a code can be checked (a resend does not extend it).
    #[serde(rename = "ttl_ms", serialize_with = "ser_millis")]
    pub ttl: Duration,
    /// Wrong codes a pending code survives, less one: the
    /// `max_attempts`-th wrong one drops it.
    pub max_attempts: u32,
    /// Checks of one number (right or wrong, whichever code is pending, or
    /// none) per clock hour (UTC), counted on every replica; past it a
    /// check is refused (429, `too_many_checks`) without being compared, so
    /// requesting fresh codes does not buy more guesses. A guesser gets at
    /// most this many tries per hour at a `code_length`-digit code.
    pub max_checks_per_hour: u32,
    /// The language used when a request names none, or one without a text;
    /// always a key of `templates`.
    pub default_locale: LanguageTag,
    /// `GET /verify/demo` (`serve --dev` turns it on).
    pub demo: bool,
    /// The SMS text per language: `{code}` (required) and `{minutes}` are
    /// replaced.
    pub templates: BTreeMap<LanguageTag, String>,
    /// The domain of the Web OTP line (`@<domain> #<code>`) that ends every
    /// SMS of the verify API, for browsers and Android to autofill the code
    /// on that site; `None`: no such line.
    pub web_otp_domain: Option<String>,
}

impl VerifySettings {
    pub(super) fn check(self) -> Result<Option<VerifyConfig>, ConfigError> {
        if !self.enabled {
            if self.demo {
                return Err(ConfigError::invalid(
                    "verify.demo",
                    "needs verify.enabled = true",
                ));
            }
            return Ok(None);
        }
        let default_locale = self.default_locale;
        let mut templates = BTreeMap::new();
        for (tag, text) in self.templates {
            let key = format!("verify.templates.{tag}");
            let norm = LanguageTag::normalize(&tag).ok_or_else(|| {
                ConfigError::invalid(&key, "the name must be a language tag such as de-DE")
            })?;
            if !text.contains("{code}") {
                return Err(ConfigError::invalid(&key, "must contain {code}"));
            }
            if text.chars().count() > MAX_TEMPLATE_CHARS {
                return Err(ConfigError::invalid(
                    &key,
                    "must be at most 1500 characters (an SMS body is at most 1600)",
                ));
            }
            templates.insert(norm, text);
        }
        if !templates.contains_key(&default_locale) {
            return Err(ConfigError::invalid(
                "verify.default_locale",
                "has no text in verify.templates",
            ));
        }
        let web_otp_domain = match self.web_otp_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(domain) if is_host_name(domain) => Some(domain.to_ascii_lowercase()),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "verify.web_otp_domain",
                    "must be a host name such as auth.example.com (no scheme, port or path)",
                ))
            }
        };
        Ok(Some(VerifyConfig {
            code_length: self.code_length,
            ttl: self.ttl_ms,
            max_attempts: self.max_attempts,
            max_checks_per_hour: self.max_checks_per_hour,
            default_locale,
            demo: self.demo,
            templates,
            web_otp_domain,
        }))
    }
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens.
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
