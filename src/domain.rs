//! Small value types that several rooms share (delivery, store, provider,
//! telemetry):
//! names of things, with no behaviour beyond naming them, and the
//! [`LanguageTag`] they are said in. They live here,
//! below every room, so that no room imports another one back.

/// Which endpoint the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Sms,
    Voice,
}

impl Endpoint {
    /// The path, for logs and metrics.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Sms => "/v1/sms",
            Endpoint::Voice => "/v1/voice",
        }
    }
}

/// How a code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Voice,
    /// A WhatsApp authentication template through Twilio's Messages API.
    WhatsApp,
}

impl Channel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::WhatsApp => "whatsapp",
        }
    }
}

/// Which limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    Recipient,
    Ip,
    /// The one bucket of requests whose end-user address is not known.
    UnknownIp,
    /// A Kratos identity (`template_data.identity.id`).
    Identity,
    /// A block of numbers (the number without its last few digits).
    Prefix,
    Country,
    Global,
    /// Notifications (messages without a code) per recipient, apart from
    /// the codes' own recipient limit (`limits.*.notification`).
    Notification,
}

impl LimitName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitName::Recipient => "recipient",
            LimitName::Ip => "ip",
            LimitName::UnknownIp => "unknown_ip",
            LimitName::Identity => "identity",
            LimitName::Prefix => "prefix",
            LimitName::Country => "country",
            LimitName::Global => "global",
            LimitName::Notification => "notification",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Total,
    Country,
}

impl BudgetScope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Total => "total",
            BudgetScope::Country => "country",
        }
    }
}

/// Why a code went out on another channel than asked: a call for an SMS,
/// an SMS for a WhatsApp message (`delivery::fallback`). A metric label
/// and span attribute, so it lives here, below telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FallbackReason {
    /// The numbering plan says FIXED_LINE.
    Landline,
    /// Twilio answered the SMS "not a mobile number"
    /// (`provider::errors::NOT_MOBILE`).
    NotMobile,
    /// A status callback reported the SMS undelivered.
    Undelivered,
    /// Twilio refused the WhatsApp message (not on WhatsApp), or the number
    /// is remembered so: an SMS instead.
    WhatsAppRefused,
    /// A status callback reported the WhatsApp message failed or
    /// undelivered: an SMS instead.
    WhatsAppUndelivered,
    /// No `delivered` receipt came within `whatsapp.fallback_after_ms`:
    /// an SMS instead.
    WhatsAppNoReceipt,
}

impl FallbackReason {
    /// The metric label and span attribute.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FallbackReason::Landline => "landline",
            FallbackReason::NotMobile => "not_mobile",
            FallbackReason::Undelivered => "undelivered",
            FallbackReason::WhatsAppRefused => "whatsapp_refused",
            FallbackReason::WhatsAppUndelivered => "whatsapp_undelivered",
            FallbackReason::WhatsAppNoReceipt => "whatsapp_no_receipt",
        }
    }

    /// The channel that stands in: a call for an SMS, an SMS for WhatsApp.
    pub(crate) fn channel(self) -> Channel {
        match self {
            FallbackReason::Landline | FallbackReason::NotMobile | FallbackReason::Undelivered => {
                Channel::Voice
            }
            FallbackReason::WhatsAppRefused
            | FallbackReason::WhatsAppUndelivered
            | FallbackReason::WhatsAppNoReceipt => Channel::Sms,
        }
    }

    /// Whether a status callback started the stand-in (the code was counted
    /// when the first message was sent).
    pub(crate) fn after_delivery(self) -> bool {
        matches!(
            self,
            FallbackReason::Undelivered
                | FallbackReason::WhatsAppUndelivered
                | FallbackReason::WhatsAppNoReceipt
        )
    }

    pub(crate) const ALL: [FallbackReason; 6] = [
        FallbackReason::Landline,
        FallbackReason::NotMobile,
        FallbackReason::Undelivered,
        FallbackReason::WhatsAppRefused,
        FallbackReason::WhatsAppUndelivered,
        FallbackReason::WhatsAppNoReceipt,
    ];
}

/// Kratos's SMS templates that carry no code (Kratos after v26.2.0): sent
/// as notifications, as is any other template without a code.
pub(crate) const KNOWN_NOTIFICATIONS: [&str; 2] =
    ["verifiable_address_changed", "authenticator_key_added"];

/// Kratos's code templates, and the rest by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateType {
    Login,
    Registration,
    Verification,
    Recovery,
    Other(String),
}

impl TemplateType {
    pub(crate) fn from_name(name: &str) -> TemplateType {
        match name {
            "login_code_valid" => TemplateType::Login,
            "registration_code_valid" => TemplateType::Registration,
            "verification_code_valid" => TemplateType::Verification,
            "recovery_code_valid" => TemplateType::Recovery,
            other => TemplateType::Other(other.to_owned()),
        }
    }

    /// A label safe for logs and metrics: Kratos's names for the four code
    /// templates and its notification templates, `other` for anything else
    /// (names are caller-chosen text).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            TemplateType::Login => "login_code_valid",
            TemplateType::Registration => "registration_code_valid",
            TemplateType::Verification => "verification_code_valid",
            TemplateType::Recovery => "recovery_code_valid",
            TemplateType::Other(name) => KNOWN_NOTIFICATIONS
                .iter()
                .find(|known| *known == name)
                .copied()
                .unwrap_or("other"),
        }
    }

    /// One of Kratos's four code templates: a message of one without its
    /// code is broken, not a notification.
    pub(crate) fn is_code_template(&self) -> bool {
        !matches!(self, TemplateType::Other(_))
    }
}

/// A normalised language tag (BCP 47), in the one form Twilio documents:
/// `en-US`. Tags compare case-insensitively but a map of sentences does
/// not (`en-US` in a file, `en-us` from an environment variable or an
/// `Accept-Language` header must find one entry), so only normalised tags
/// exist. Primary subtag in lower case, two-letter
/// (region) subtags in upper case, the others as given, joined by `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LanguageTag(String);

/// Not shaped like a language tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a language tag such as en-US")]
pub struct NotALanguageTag;

impl LanguageTag {
    /// `en-us` → `en-US`, `DE` → `de`, `zh_hant_TW` → `zh-hant-TW`; `None`
    /// for anything not shaped like a tag (a primary subtag of 2 or 3
    /// letters, then subtags of 1 to 8 letters or digits).
    pub(crate) fn normalize(tag: &str) -> Option<LanguageTag> {
        let mut parts = tag.trim().split(['-', '_']);
        let primary = parts.next()?;
        if primary.len() < 2
            || primary.len() > 3
            || !primary.bytes().all(|b| b.is_ascii_alphabetic())
        {
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
        Some(LanguageTag(out))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for LanguageTag {
    type Err = NotALanguageTag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LanguageTag::normalize(s).ok_or(NotALanguageTag)
    }
}

/// Lets a map keyed by tags be searched with a `&str` that is already in
/// normal form; order and equality are the inner string's, as `Borrow`
/// requires.
impl std::borrow::Borrow<str> for LanguageTag {
    fn borrow(&self) -> &str {
        &self.0
    }
}

str_views!(LanguageTag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalised() {
        let n = |s: &str| LanguageTag::normalize(s).map(|t| t.as_str().to_owned());
        assert_eq!(n("en-us").as_deref(), Some("en-US"));
        assert_eq!(n("DE").as_deref(), Some("de"));
        assert_eq!(n("zh_hant_TW").as_deref(), Some("zh-hant-TW"));
        assert_eq!(n(" de-at ").as_deref(), Some("de-AT"));
        assert_eq!(n("e"), None);
        assert_eq!(n("en-<x>"), None);
        assert_eq!(n("en--US"), None);
        assert_eq!("EN-gb".parse::<LanguageTag>().unwrap(), "en-GB");
        assert!("english!".parse::<LanguageTag>().is_err());
    }
}
