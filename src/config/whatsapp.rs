//! `[whatsapp]`: codes sent as a WhatsApp authentication template through
//! Twilio's Messages API, with SMS behind it.
//!
//! WhatsApp needs a sender (a WhatsApp-enabled number, or a Messaging
//! Service with one) and an approved template of type
//! `whatsapp/authentication` per language (`content_sid`, `content_sids`):
//! Meta fixes the template's text, the code goes in as variable 1. Only
//! providers of kind `twilio` send it (SignalWire has no WhatsApp), so a
//! provider list without one refuses `whatsapp.enabled` at start.
//!
//! Notifications (messages without a code) go by SMS unless the operator
//! names an approved *utility* template for them
//! (`notification_content_sid`, `notification_content_sids`): its
//! variable 1 carries the notification's text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::providers::{is_sid, whatsapp_sender, SmsSender};
use super::values::{list, ms};
use crate::domain::LanguageTag;
use crate::phone::CountryId;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSettings {
    pub enabled: bool,
    /// The WhatsApp sender's number (E.164, without `whatsapp:`).
    pub from: Option<String>,
    /// Or a Messaging Service with a WhatsApp sender in its pool.
    pub messaging_service_sid: Option<String>,
    /// The approved authentication template (`HX…`) used when no
    /// `content_sids` entry matches the end user's language.
    pub content_sid: Option<String>,
    /// Templates per language tag (`de-DE = "HX…"`).
    #[serde(default)]
    pub(crate) content_sids: BTreeMap<String, String>,
    /// An approved utility template (`HX…`) for notifications, their text
    /// as variable 1; empty: notifications go by SMS.
    pub(crate) notification_content_sid: Option<String>,
    /// Utility templates per language tag, as `content_sids`.
    #[serde(default)]
    pub(crate) notification_content_sids: BTreeMap<String, String>,
    /// Destination countries whose codes go by WhatsApp even when nobody
    /// asked for it (ISO 3166 codes); empty: only when asked.
    #[serde(deserialize_with = "list")]
    pub countries: Vec<CountryId>,
    /// With status callbacks: the SMS goes out when no `delivered` (or
    /// `read`) receipt came this long after the WhatsApp message was
    /// accepted; 0 turns this off. At most 10 minutes: a code lives
    /// minutes, and a later SMS would arrive after most codes expired.
    #[serde(deserialize_with = "ms::<_, 0, 600_000>")]
    pub(crate) fallback_after_ms: Duration,
}

/// The checked `[whatsapp]`; `Config::whatsapp` is `None` when off.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WhatsAppConfig {
    pub(crate) sender: SmsSender,
    pub(crate) content_sid: String,
    /// Normalized tags, each with its template.
    pub(crate) content_sids: BTreeMap<LanguageTag, String>,
    /// The utility template of notifications; `None`: they go by SMS.
    pub(crate) notification_content_sid: Option<String>,
    pub(crate) notification_content_sids: BTreeMap<LanguageTag, String>,
    pub(crate) countries: Vec<CountryId>,
    /// `None`: no SMS for a missing receipt (only for a refusal or a
    /// failed/undelivered report).
    pub(crate) fallback_after: Option<Duration>,
}

impl WhatsAppSettings {
    pub(super) fn check(self) -> Result<Option<WhatsAppConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let from = ("whatsapp.from", self.from);
        let service = ("whatsapp.messaging_service_sid", self.messaging_service_sid);
        let sender = whatsapp_sender(from, service)?.ok_or_else(|| {
            ConfigError::invalid(
                "whatsapp.from",
                "a WhatsApp sender is required when whatsapp.enabled is true: whatsapp.from (a WhatsApp-enabled number) or whatsapp.messaging_service_sid",
            )
        })?;
        let content_sid = checked_sid(
            "whatsapp.content_sid",
            self.content_sid.unwrap_or_default(),
            "authentication",
        )?;
        let content_sids = per_language("content_sids", self.content_sids, "authentication")?;
        let notification_content_sid = match self.notification_content_sid.filter(|s| !s.is_empty()) {
            Some(sid) => Some(checked_sid("whatsapp.notification_content_sid", sid, "utility")?),
            None if !self.notification_content_sids.is_empty() => {
                return Err(ConfigError::invalid(
                    "whatsapp.notification_content_sid",
                    "the default utility template is required when whatsapp.notification_content_sids is set",
                ))
            }
            None => None,
        };
        let notification_content_sids = per_language(
            "notification_content_sids",
            self.notification_content_sids,
            "utility",
        )?;
        let countries = self.countries;
        let fallback_after = Some(self.fallback_after_ms).filter(|d| !d.is_zero());
        Ok(Some(WhatsAppConfig {
            sender,
            content_sid,
            content_sids,
            notification_content_sid,
            notification_content_sids,
            countries,
            fallback_after,
        }))
    }
}

/// `sid` if it is a ContentSid (`HX…`); `kind`: the template's category.
fn checked_sid(key: &str, sid: String, kind: &str) -> Result<String, ConfigError> {
    if is_sid(&sid, "HX") {
        Ok(sid)
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be the ContentSid of an approved WhatsApp {kind} template: HX followed by 32 hex digits"),
        ))
    }
}

/// A `[whatsapp.<table>]` of templates per language tag, tags normalized.
fn per_language(
    table: &str,
    sids: BTreeMap<String, String>,
    kind: &str,
) -> Result<BTreeMap<LanguageTag, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (tag, sid) in sids {
        let key = format!("whatsapp.{table}.{tag}");
        let norm = LanguageTag::normalize(&tag).ok_or_else(|| {
            ConfigError::invalid(&key, "the key must be a language tag such as de-DE")
        })?;
        out.insert(norm, checked_sid(&key, sid, kind)?);
    }
    Ok(out)
}

impl WhatsAppConfig {
    /// The template for the end user's `Accept-Language`: the first range
    /// (by quality) with a template of its tag, or of its primary language
    /// (`pt` or `pt-PT` is served by a `pt-BR` template); else the default.
    pub(crate) fn content_sid_for(&self, accept_language: Option<&str>) -> &str {
        template_for(&self.content_sids, accept_language).unwrap_or(&self.content_sid)
    }

    /// The utility template of a notification, chosen as
    /// [`Self::content_sid_for`]; `None` when notifications go by SMS.
    pub(crate) fn notification_content_sid_for(
        &self,
        accept_language: Option<&str>,
    ) -> Option<&str> {
        let default = self.notification_content_sid.as_deref()?;
        Some(template_for(&self.notification_content_sids, accept_language).unwrap_or(default))
    }
}

/// The template in `sids` for the first range of `accept_language` (by
/// quality) with one of its tag or of its primary language; `None`: the
/// default's.
fn template_for<'a>(
    sids: &'a BTreeMap<LanguageTag, String>,
    accept_language: Option<&str>,
) -> Option<&'a str> {
    if sids.is_empty() {
        return None;
    }
    let mut ranges: Vec<(LanguageTag, f32)> = accept_language
        .unwrap_or("")
        .split(',')
        .take(16)
        .filter_map(|part| {
            let mut it = part.split(';');
            let tag = LanguageTag::normalize(it.next()?.trim())?;
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                .unwrap_or(1.0);
            (q > 0.0).then_some((tag, q))
        })
        .collect();
    ranges.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (tag, _) in &ranges {
        if let Some(sid) = sids.get(tag) {
            return Some(sid);
        }
        let primary = tag.split('-').next().unwrap_or(tag);
        if let Some((_, sid)) = sids
            .iter()
            .find(|(k, _)| k.split('-').next() == Some(primary))
        {
            return Some(sid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::SenderId;

    const HX_DEFAULT: &str = "HX00000000000000000000000000000000";
    const HX_DE: &str = "HXde000000000000000000000000000000";

    fn settings() -> WhatsAppSettings {
        WhatsAppSettings {
            enabled: true,
            from: Some("whatsapp:+14155550100".into()),
            messaging_service_sid: None,
            content_sid: Some(HX_DEFAULT.into()),
            content_sids: BTreeMap::from([("de-de".to_owned(), HX_DE.to_owned())]),
            notification_content_sid: None,
            notification_content_sids: BTreeMap::new(),
            countries: vec![CountryId::parse("BR").unwrap()],
            fallback_after_ms: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_template_follows_the_language_and_defaults() {
        let c = settings().check().unwrap().unwrap();
        assert_eq!(c.content_sid_for(Some("de-AT, en;q=0.5")), HX_DE);
        assert_eq!(c.content_sid_for(Some("fr, de;q=0.1")), HX_DE);
        assert_eq!(c.content_sid_for(Some("fr")), HX_DEFAULT);
        assert_eq!(c.content_sid_for(None), HX_DEFAULT);
        assert_eq!(
            c.sender.clone(),
            SmsSender::From(SenderId::parse("+14155550100").unwrap())
        );
    }

    #[test]
    fn notifications_have_their_own_templates_only_when_named() {
        const HX_NOTE: &str = "HX1111111111111111111111111111111a";
        const HX_NOTE_DE: &str = "HX2222222222222222222222222222222b";
        // Unset or empty: notifications go by SMS.
        assert_eq!(
            settings()
                .check()
                .unwrap()
                .unwrap()
                .notification_content_sid_for(Some("de")),
            None
        );
        let mut s = settings();
        s.notification_content_sid = Some(String::new());
        let c = s.check().unwrap().unwrap();
        assert_eq!(c.notification_content_sid_for(None), None);
        // Named: by language as the code templates, never a code template.
        let mut s = settings();
        s.notification_content_sid = Some(HX_NOTE.into());
        s.notification_content_sids = BTreeMap::from([("de-DE".to_owned(), HX_NOTE_DE.to_owned())]);
        let c = s.check().unwrap().unwrap();
        assert_eq!(
            c.notification_content_sid_for(Some("de-AT")),
            Some(HX_NOTE_DE)
        );
        assert_eq!(c.notification_content_sid_for(Some("fr")), Some(HX_NOTE));
        assert_eq!(c.notification_content_sid_for(None), Some(HX_NOTE));
        assert_eq!(c.content_sid_for(Some("de-AT")), HX_DE);
        // Per-language templates without the default, or a bad sid: named.
        let key = |s: WhatsAppSettings| s.check().unwrap_err().to_string();
        let mut s = settings();
        s.notification_content_sids = BTreeMap::from([("de-DE".to_owned(), HX_NOTE_DE.to_owned())]);
        assert!(key(s).contains("whatsapp.notification_content_sid"));
        let mut s = settings();
        s.notification_content_sid = Some("HXnope".into());
        let e = key(s);
        assert!(
            e.contains("whatsapp.notification_content_sid") && e.contains("utility"),
            "{e}"
        );
        let mut s = settings();
        s.notification_content_sid = Some(HX_NOTE.into());
        s.notification_content_sids = BTreeMap::from([("de-DE".to_owned(), "HX1".to_owned())]);
        assert!(key(s).contains("whatsapp.notification_content_sids.de-DE"));
    }

    #[test]
    fn bad_keys_are_named() {
        let key = |s: WhatsAppSettings| s.check().unwrap_err().to_string();
        let mut s = settings();
        s.content_sid = Some("HXnope".into());
        assert!(key(s).contains("whatsapp.content_sid"));
        let mut s = settings();
        s.from = None;
        assert!(key(s).contains("whatsapp.from"));
        let mut s = settings();
        s.from = Some("Acme".into());
        assert!(key(s).contains("whatsapp.from"));
        let mut s = settings();
        s.fallback_after_ms = Duration::ZERO;
        assert_eq!(s.check().unwrap().unwrap().fallback_after, None);
        assert_eq!(
            settings().check().unwrap().unwrap().fallback_after,
            Some(std::time::Duration::from_secs(60))
        );
        let mut s = settings();
        s.enabled = false;
        s.content_sid = None;
        assert!(s.check().unwrap().is_none());
    }
}
