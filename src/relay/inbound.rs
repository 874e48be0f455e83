//! The edge of the relay: Twilio's incoming-message webhook parsed into an
//! [`Inbound`]. Nothing past this file sees a form field.
//!
//! The signature is checked before anything else is looked at, by the
//! HTTP edge (`http::relay`, with the one implementation the service has,
//! `provider::signature`): a post without a valid `X-Twilio-Signature`
//! (keyed with the account's auth token; for a SignalWire account, its
//! signing key in `X-SignalWire-Signature` or its alias) is refused
//! whatever it carries, before this file sees it.

use crate::phone::{Sender, E164};

/// An incoming message, as Twilio described it.
#[derive(Clone)]
pub(crate) struct Inbound {
    /// `SM…`/`MM…`: Twilio's id, the same on every retry of the webhook.
    pub(crate) sid: String,
    /// `From`, as Twilio wrote it (a number, short code or sender id).
    pub(crate) from: String,
    /// `From` read as a sender, when it is one.
    pub(crate) sender: Option<Sender>,
    /// `To`: the number of ours that received it.
    pub(crate) to: Option<E164>,
    /// The text. Never logged.
    pub(crate) body: String,
    /// Pictures and files attached (not relayed; the forward says so).
    pub(crate) num_media: u32,
}

/// `Debug` without the body or whole numbers, so `{:?}` cannot leak them.
impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("sid", &self.sid)
            .field("from", &masked(&self.from))
            .finish_non_exhaustive()
    }
}

/// A sender for a log line: short codes and sender ids as they are (they
/// name a service, not a person), a number by its last two digits.
pub(crate) fn masked(from: &str) -> String {
    match Sender::parse(from) {
        Some(Sender::Number(n)) => format!("…{}", &n[n.len() - 2..]),
        Some(s) => s.as_str().to_owned(),
        None => "(unreadable)".to_owned(),
    }
}

/// The message in signed parameters; `None` when a field Twilio always sends is missing or malformed.
pub(crate) fn parse(params: &[(String, String)]) -> Option<Inbound> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let sid = field("MessageSid")
        .or(field("SmsSid"))
        .filter(|s| (2..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))?;
    let from = field("From").filter(|f| !f.trim().is_empty())?;
    let to = field("To")?;
    Some(Inbound {
        sid: sid.to_owned(),
        from: from.to_owned(),
        sender: Sender::parse(from),
        to: E164::parse(to),
        body: field("Body").unwrap_or("").to_owned(),
        num_media: field("NumMedia").and_then(|n| n.parse().ok()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_twilio_fields_and_refuses_what_is_missing() {
        let m = parse(&pairs(&[
            ("MessageSid", "SM0123"),
            ("From", "32665"),
            ("To", "+15005550006"),
            ("Body", "Your code is 123456"),
            ("NumMedia", "1"),
        ]))
        .unwrap();
        assert_eq!(m.sid, "SM0123");
        assert_eq!(m.sender, Some(Sender::ShortCode("32665".into())));
        assert_eq!(m.to.as_ref().map(|n| n.as_str()), Some("+15005550006"));
        assert_eq!(m.num_media, 1);
        assert!(!format!("{m:?}").contains("123456"));
        for missing in ["MessageSid", "From", "To"] {
            let params: Vec<_> = pairs(&[
                ("MessageSid", "SM0123"),
                ("From", "+15556667777"),
                ("To", "+15005550006"),
            ])
            .into_iter()
            .filter(|(k, _)| k != missing)
            .collect();
            assert!(parse(&params).is_none(), "{missing}");
        }
        assert!(parse(&pairs(&[
            ("MessageSid", "SM../x"),
            ("From", "a"),
            ("To", "b")
        ]))
        .is_none());
    }

    #[test]
    fn masks_numbers_only() {
        assert_eq!(masked("+15556667777"), "…77");
        assert_eq!(masked("32665"), "32665");
        assert_eq!(masked("GitHub"), "GitHub");
    }
}
