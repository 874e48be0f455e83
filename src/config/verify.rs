//! `[verify]`: the verify API's codes, tries and texts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::values::{ms, parsed, ser_millis, within};
use crate::domain::LanguageTag;

/// Twilio's limit for an SMS body, less room for a 10-digit code and the
/// minutes.
const MAX_TEMPLATE_CHARS: usize = 1500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub enabled: bool,
    #[serde(deserialize_with = "within::<_, u32, 4, 10>")]
    pub(crate) code_length: u32,
    #[serde(deserialize_with = "ms::<_, 60_000, 86_400_000>")]
    pub(crate) ttl_ms: Duration,
    #[serde(deserialize_with = "within::<_, u32, 1, 20>")]
    pub(crate) max_attempts: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, 1000>")]
    pub(crate) max_checks_per_hour: u32,
    #[serde(deserialize_with = "parsed")]
    pub(crate) default_locale: LanguageTag,
    pub demo: bool,
    pub(crate) templates: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) web_otp_domain: Option<String>,
}

/// The checked `[verify]`; `None` in [`super::Config`] when not enabled.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyConfig {
    pub(crate) code_length: u32,
    #[serde(rename = "ttl_ms", serialize_with = "ser_millis")]
    pub(crate) ttl: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) max_checks_per_hour: u32,
    pub(crate) default_locale: LanguageTag,
    pub(crate) demo: bool,
    pub(crate) templates: BTreeMap<LanguageTag, String>,
    pub(crate) web_otp_domain: Option<String>,
}

impl VerifySettings {
    pub(super) fn check(self) -> Result<Option<VerifyConfig>, ConfigError> {
        if !self.enabled {
            refuse_if(self.demo, "verify.demo", "needs verify.enabled = true")?;
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
            refuse_if(
                text.chars().count() > MAX_TEMPLATE_CHARS,
                &key,
                "must be at most 1500 characters (an SMS body is at most 1600)",
            )?;
            templates.insert(norm, text);
        }
        refuse_if(
            !templates.contains_key(&default_locale),
            "verify.default_locale",
            "has no text in verify.templates",
        )?;
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
