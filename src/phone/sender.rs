//! Numbers and senders as the configuration and Twilio write them: the
//! service's own numbers ([`E164`]: the SMS sender, the caller id, the test
//! numbers), who an SMS says it is from ([`SenderId`]) and who sent an
//! incoming text ([`Sender`]).
//!
//! Only the form is checked (`+`, a country code, up to 15 digits): whether
//! a sender exists is Twilio's to say (error 21212), and asking
//! libphonenumber here would load its whole database before the service can
//! even answer /health/alive. A number is never quoted in an error.

use super::is_e164_shape;

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

    pub(crate) fn as_str(&self) -> &str {
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
    pub(crate) fn number(&self) -> Option<&E164> {
        match self {
            SenderId::Number(n) => Some(n),
            SenderId::Alphanumeric(_) => None,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
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

/// Who sent a text: a number, a short code, or an alphanumeric sender id.
/// Compared as Twilio writes them in `From`; an alphanumeric id ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// `+15556667777`
    Number(E164),
    /// `32665`: 3 to 8 digits, the way Twilio gives short codes.
    ShortCode(String),
    /// `GitHub`: up to 11 letters, digits, spaces, `-`, `_`, `.`, with a letter.
    Alphanumeric(String),
}

impl Sender {
    /// A sender as configured or as Twilio's `From` carries it.
    pub fn parse(s: &str) -> Option<Sender> {
        let s = s.trim();
        if let Some(n) = E164::parse(s) {
            return Some(Sender::Number(n));
        }
        if (3..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Sender::ShortCode(s.to_owned()));
        }
        let alnum = !s.is_empty()
            && s.chars().count() <= 11
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
            && s.chars().any(|c| c.is_ascii_alphabetic());
        alnum.then(|| Sender::Alphanumeric(s.to_owned()))
    }

    /// Whether `other` is the same sender (alphanumeric ids ignore case).
    pub(crate) fn matches(&self, other: &Sender) -> bool {
        match (self, other) {
            (Sender::Alphanumeric(a), Sender::Alphanumeric(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Sender::Number(n) => n.as_str(),
            Sender::ShortCode(s) | Sender::Alphanumeric(s) => s,
        }
    }
}

impl std::str::FromStr for Sender {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sender::parse(s).ok_or("neither an E.164 number, a short code (3 to 8 digits) nor an alphanumeric sender id (up to 11 characters)")
    }
}

impl serde::Serialize for Sender {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

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

    #[test]
    fn senders() {
        assert!(matches!(
            Sender::parse("+15556667777"),
            Some(Sender::Number(_))
        ));
        assert_eq!(
            Sender::parse("32665"),
            Some(Sender::ShortCode("32665".into()))
        );
        assert_eq!(
            Sender::parse("GitHub"),
            Some(Sender::Alphanumeric("GitHub".into()))
        );
        assert!(Sender::parse("GitHub")
            .unwrap()
            .matches(&Sender::parse("GITHUB").unwrap()));
        assert!(!Sender::parse("32665")
            .unwrap()
            .matches(&Sender::parse("+32665").unwrap()));
        for bad in [
            "",
            "12",
            "123456789",
            "TooLongSenderId",
            "a<b",
            "15556667777x!",
        ] {
            assert_eq!(Sender::parse(bad), None, "{bad}");
        }
    }
}
