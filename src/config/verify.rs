//! `[verify]`: the verify API for applications without Kratos
//! (`POST /v1/verify/request`, `POST /v1/verify/check`): how long codes are
//! and live, how many tries a code gets, and the SMS text per language.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::language_tag::LanguageTag;
use super::values::ser_millis;

/// Codes shorter than this are guessed too easily within the attempts; a
/// call speaks at most 12 characters, and 10 digits are plenty.
const CODE_LENGTH: std::ops::RangeInclusive<u32> = 4..=10;
/// A code that lives less than a minute cannot be typed in from a slow SMS;
/// one that lives past a day is not a one-time code any more.
const TTL_MS: std::ops::RangeInclusive<u64> = 60_000..=86_400_000;
/// More tries than this turns a short code into a guessable one.
const MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=20;
/// Twilio's limit for an SMS body, less room for a 10-digit code and the
/// minutes.
const MAX_TEMPLATE_CHARS: usize = 1500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub enabled: bool,
    pub code_length: u32,
    pub ttl_ms: u64,
    pub max_attempts: u32,
    pub default_locale: String,
    pub demo: bool,
    pub templates: BTreeMap<String, String>,
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
    /// The language used when a request names none, or one without a text;
    /// always a key of `templates`.
    pub default_locale: LanguageTag,
    /// `GET /verify/demo` (`serve --dev` turns it on).
    pub demo: bool,
    /// The SMS text per language: `{code}` (required) and `{minutes}` are
    /// replaced.
    pub templates: BTreeMap<LanguageTag, String>,
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
        if !CODE_LENGTH.contains(&self.code_length) {
            return Err(ConfigError::invalid(
                "verify.code_length",
                "must be between 4 and 10 digits",
            ));
        }
        if !TTL_MS.contains(&self.ttl_ms) {
            return Err(ConfigError::invalid(
                "verify.ttl_ms",
                "must be between 60000 (a minute) and 86400000 (a day)",
            ));
        }
        if !MAX_ATTEMPTS.contains(&self.max_attempts) {
            return Err(ConfigError::invalid(
                "verify.max_attempts",
                "must be between 1 and 20",
            ));
        }
        let default_locale = LanguageTag::normalize(&self.default_locale).ok_or_else(|| {
            ConfigError::invalid(
                "verify.default_locale",
                "must be a language tag such as en or de-DE",
            )
        })?;
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
        Ok(Some(VerifyConfig {
            code_length: self.code_length,
            ttl: Duration::from_millis(self.ttl_ms),
            max_attempts: self.max_attempts,
            default_locale,
            demo: self.demo,
            templates,
        }))
    }
}

impl VerifyConfig {
    /// The text for `locale`: its own, else one of its language (`de-AT`
    /// finds `de` or `de-DE`), else the default language's.
    pub fn template(&self, locale: Option<&LanguageTag>) -> (&LanguageTag, &str) {
        let found = locale.and_then(|tag| {
            self.templates.get_key_value(tag).or_else(|| {
                let primary = tag.split('-').next().unwrap_or(tag);
                self.templates
                    .iter()
                    .find(|(k, _)| k.split('-').next() == Some(primary))
            })
        });
        let (tag, text) = found
            .or_else(|| self.templates.get_key_value(&self.default_locale))
            .expect("the default locale always has a text (checked)");
        (tag, text.as_str())
    }
}
