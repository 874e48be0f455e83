//! The service's own numbers as the configuration gives them: the SMS
//! sender, the caller id and the test numbers.
//!
//! Only the form is checked (`+`, a country code, up to 15 digits): whether
//! a sender exists is Twilio's to say (error 21212), and asking
//! libphonenumber here would load its whole database before the service can
//! even answer /health/alive. A number is never quoted in an error.

use crate::phone::is_e164_shape;

use super::values::str_views;

/// A number in E.164 form, `+15005550006`, without surrounding spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct E164(String);

/// Not a number in E.164 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a phone number in E.164 form (+ then country code and number, e.g. +15005550006)")]
pub struct NotE164;

impl E164 {
    /// The number, trimmed, if it has the E.164 form.
    pub fn parse(number: &str) -> Option<E164> {
        let trimmed = number.trim();
        is_e164_shape(trimmed).then(|| E164(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for E164 {
    type Err = NotE164;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        E164::parse(s).ok_or(NotE164)
    }
}

str_views!(E164);

/// Who an SMS says it is from: a number, or an alphanumeric sender id
/// (up to 11 ASCII letters, digits and spaces, at least one letter), which
/// Twilio accepts for SMS in many countries but which cannot place a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderId {
    Number(E164),
    Alphanumeric(String),
}

/// Neither an E.164 number nor an alphanumeric sender id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a phone number in E.164 form nor an alphanumeric sender id")]
pub struct NotASenderId;

impl SenderId {
    pub fn parse(sender: &str) -> Option<SenderId> {
        let alphanumeric = sender.len() <= 11
            && sender
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ')
            && sender.chars().any(|c| c.is_ascii_alphabetic());
        if alphanumeric {
            Some(SenderId::Alphanumeric(sender.to_owned()))
        } else {
            E164::parse(sender).map(SenderId::Number)
        }
    }

    /// The number, when this sender is one (only a number can place calls).
    pub fn number(&self) -> Option<&E164> {
        match self {
            SenderId::Number(n) => Some(n),
            SenderId::Alphanumeric(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SenderId::Number(n) => n.as_str(),
            SenderId::Alphanumeric(s) => s,
        }
    }
}

impl std::str::FromStr for SenderId {
    type Err = NotASenderId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SenderId::parse(s).ok_or(NotASenderId)
    }
}

str_views!(SenderId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sender_ids() {
        assert_eq!(E164::parse(" +15005550006 ").unwrap(), "+15005550006");
        for bad in [
            "15005550006",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1 500",
            "",
        ] {
            assert_eq!(E164::parse(bad), None, "{bad}");
        }
        assert_eq!(
            SenderId::parse("Acme 2FA"),
            Some(SenderId::Alphanumeric("Acme 2FA".into()))
        );
        let n = SenderId::parse("+15005550006").unwrap();
        assert_eq!(n.number().map(E164::as_str), Some("+15005550006"));
        assert_eq!(SenderId::parse("TooLongSenderId"), None);
        assert_eq!(SenderId::parse("12345"), None);
    }
}
