//! Twilio's error codes, in one table: what each means, whose problem it is,
//! whether the recipient is remembered as unreachable, and the label it gets
//! in metrics. Everything else (the client's classification, the delivery
//! pipeline's memory of unreachable numbers, metrics labels) reads this table;
//! no other module lists a Twilio code.
//!
//! Codes come in two kinds. Create codes answer `POST .../Messages.json` or
//! `.../Calls.json` at once. Delivery codes arrive later, in a status
//! callback's `ErrorCode`, after the message was accepted.

/// Whose problem a failed create request is; decides what Kratos is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The number can never be reached this way: retrying is pointless.
    Recipient,
    /// Our own configuration (credentials, sender, account): alert an operator.
    Configuration,
    /// Worth retrying later.
    Transient,
}

impl FailureClass {
    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Recipient => "recipient",
            FailureClass::Configuration => "configuration",
            FailureClass::Transient => "transient",
        }
    }
}

/// When a code reaches us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In the answer to a create request, with its class.
    Create(FailureClass),
    /// In a status callback, after the provider accepted the message.
    Delivery,
}

/// One known Twilio error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCode {
    pub code: u32,
    /// The code as a metrics label value (a `&'static str`, so a label never
    /// allocates and never holds anything but a listed code).
    pub label: &'static str,
    pub stage: Stage,
    /// After this answer, the same channel to the same recipient is refused
    /// for `dedup.unreachable_ms` without asking the provider again.
    pub remember_unreachable: bool,
    /// What Twilio means by it (documentation, and the reason a code is where
    /// it is in this table).
    pub meaning: &'static str,
}

use FailureClass::{Configuration, Recipient, Transient};
use Stage::{Create, Delivery};

const fn code(
    code: u32,
    label: &'static str,
    stage: Stage,
    remember_unreachable: bool,
    meaning: &'static str,
) -> KnownCode {
    KnownCode {
        code,
        label,
        stage,
        remember_unreachable,
        meaning,
    }
}

/// Every Twilio code this service knows, sorted by code. One line each:
/// code, label, when and whose, remembered as unreachable, meaning.
#[rustfmt::skip]
pub const CODES: &[KnownCode] = &[
    code(20003, "20003", Create(Configuration), false, "authentication failed (HTTP 401): wrong account sid, token or API key"),
    code(20404, "20404", Create(Configuration), false, "resource not found (HTTP 404): the account sid in the path does not exist"),
    code(20429, "20429", Create(Transient), false, "too many concurrent requests (HTTP 429): not processed, safe to retry"),
    code(20500, "20500", Create(Transient), false, "Twilio internal error (HTTP 500)"),
    code(21211, "21211", Create(Recipient), true, "`To` is not a valid phone number"),
    code(21212, "21212", Create(Configuration), false, "`From` is not a valid number"),
    code(21268, "21268", Create(Recipient), true, "premium-rate numbers are not allowed"),
    code(21408, "21408", Create(Recipient), true, "sending to this region is not enabled (the account's geo permissions)"),
    code(21606, "21606", Create(Configuration), false, "`From` is not an SMS-capable number of this account"),
    code(21610, "21610", Create(Recipient), true, "the recipient replied STOP (unsubscribed)"),
    code(21611, "21611", Create(Transient), false, "the `From` number's queue is full"),
    code(21612, "21612", Create(Recipient), true, "Twilio cannot route to this number"),
    code(21614, "21614", Create(Recipient), true, "`To` is not a mobile number (a landline): SMS cannot reach it, a call may"),
    code(21617, "21617", Create(Configuration), false, "the message body is longer than 1600 characters"),
    code(30001, "30001", Delivery, false, "queue overflow: the message was not sent in time"),
    code(30002, "30002", Delivery, false, "account suspended"),
    code(30003, "30003", Delivery, false, "unreachable handset (off or out of coverage)"),
    code(30004, "30004", Delivery, false, "message blocked by the recipient or the carrier"),
    code(30005, "30005", Delivery, false, "unknown destination handset"),
    code(30006, "30006", Delivery, false, "landline or unreachable carrier"),
    code(30007, "30007", Delivery, false, "filtered by the carrier as spam"),
    code(30008, "30008", Delivery, false, "unknown error from the carrier"),
    code(30010, "30010", Delivery, false, "the price is above the message's MaxPrice"),
    code(30034, "30034", Delivery, false, "sent from an unregistered US 10DLC number"),
    code(30450, "30450", Delivery, false, "blocked by SMS pumping protection"),
    code(30453, "30453", Delivery, false, "blocked by SMS pumping protection (suspected fraud)"),
];

/// The table's entry for `code`, if it has one.
pub fn lookup(code: u32) -> Option<&'static KnownCode> {
    CODES
        .binary_search_by_key(&code, |k| k.code)
        .ok()
        .map(|i| &CODES[i])
}

/// Whose problem a refused create request is, from Twilio's code and the
/// HTTP status. A code the table classes as recipient or transient decides;
/// otherwise 429 and 5xx are transient, and anything else (configuration
/// codes, unknown 4xx, redirects) is something no retry of the same request
/// can fix.
pub fn classify(http_status: u16, code: Option<u32>) -> FailureClass {
    match code.and_then(lookup).map(|k| k.stage) {
        Some(Create(Recipient)) => Recipient,
        Some(Create(Transient)) => Transient,
        _ if http_status == 429 || http_status >= 500 => Transient,
        _ => Configuration,
    }
}

/// Whether a refusal with this code marks the recipient as unreachable.
pub fn remembers_unreachable(code: Option<u32>) -> bool {
    code.and_then(lookup)
        .is_some_and(|k| k.remember_unreachable)
}

/// A Twilio code as a bounded metrics label: the code itself when the table
/// lists it, `other` when not, `none` when there was no code.
pub fn metric_label(code: Option<u32>) -> &'static str {
    match code {
        None => "none",
        Some(c) => lookup(c).map_or("other", |k| k.label),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_labels_match_codes() {
        for pair in CODES.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} is out of order",
                pair[1].code
            );
        }
        for k in CODES {
            assert_eq!(k.label, k.code.to_string());
            assert!(
                !k.remember_unreachable || k.stage == Create(Recipient),
                "{} is remembered but is not a recipient failure",
                k.code
            );
        }
    }

    #[test]
    fn classifies_like_twilio_documents() {
        for k in CODES {
            if let Create(class) = k.stage {
                assert_eq!(classify(400, Some(k.code)), class, "{}", k.code);
            }
        }
        assert_eq!(classify(503, None), Transient);
        assert_eq!(classify(500, Some(99999)), Transient);
        assert_eq!(classify(429, None), Transient);
        assert_eq!(classify(400, Some(99999)), Configuration);
        assert_eq!(classify(307, None), Configuration);
        // A delivery code on a create answer is classed by its HTTP status.
        assert_eq!(classify(400, Some(30003)), Configuration);
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(metric_label(Some(21211)), "21211");
        assert_eq!(metric_label(Some(30450)), "30450");
        assert_eq!(metric_label(Some(12345)), "other");
        assert_eq!(metric_label(None), "none");
    }

    #[test]
    fn only_permanent_recipient_codes_are_remembered() {
        let remembered: Vec<u32> = CODES
            .iter()
            .filter(|k| k.remember_unreachable)
            .map(|k| k.code)
            .collect();
        // Every recipient refusal: no retry of the same request can pass.
        assert_eq!(remembered, [21211, 21268, 21408, 21610, 21612, 21614]);
        assert!(!remembers_unreachable(None));
    }
}
