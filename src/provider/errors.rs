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
pub(crate) enum FailureClass {
    /// The number can never be reached this way: retrying is pointless.
    Recipient,
    /// Our own configuration (credentials, sender, account): alert an operator.
    Configuration,
    /// Worth retrying later.
    Transient,
}

impl FailureClass {
    /// The label in metrics and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureClass::Recipient => "recipient",
            FailureClass::Configuration => "configuration",
            FailureClass::Transient => "transient",
        }
    }
}

/// When a code reaches us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// In the answer to a create request, with its class.
    Create(FailureClass),
    /// In a status callback, after the provider accepted the message.
    Delivery,
}

/// One known Twilio error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownCode {
    pub(crate) code: u32,
    /// The code as a metrics label value (a `&'static str`, so a label never
    /// allocates and never holds anything but a listed code).
    pub(crate) label: &'static str,
    pub(crate) stage: Stage,
    /// After this answer, the same channel to the same recipient is refused
    /// for `dedup.unreachable_ms` without asking the provider again.
    pub(crate) remember_unreachable: bool,
    /// What Twilio means by it (documentation, and the reason a code is where
    /// it is in this table).
    pub(crate) meaning: &'static str,
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

/// Declares the table and, for the codes the pipeline acts on by name, a
/// constant: each code is written once, here, and its label is its own
/// digits.
macro_rules! known_codes {
    ($( $code:literal $(as $name:ident)? => $stage:expr, $remember:expr, $meaning:literal; )*) => {
        $( $( #[doc = $meaning] pub const $name: u32 = $code; )? )*

        /// Every Twilio code this service knows, sorted by code.
        pub(crate) const CODES: &[KnownCode] = &[
            $( code($code, stringify!($code), $stage, $remember, $meaning), )*
        ];
    };
}

// One line each: code (and its constant's name), when and whose,
// remembered as unreachable, meaning.
known_codes! {
    20003 => Create(Configuration), false, "authentication failed (HTTP 401): wrong account sid, token or API key";
    20404 => Create(Configuration), false, "resource not found (HTTP 404): the account sid in the path does not exist";
    20429 => Create(Transient), false, "too many concurrent requests (HTTP 429): not processed, safe to retry";
    20500 => Create(Transient), false, "Twilio internal error (HTTP 500)";
    21211 => Create(Recipient), true, "`To` is not a valid phone number";
    21212 => Create(Configuration), false, "`From` is not a valid number";
    21268 => Create(Recipient), true, "premium-rate numbers are not allowed";
    21408 => Create(Recipient), true, "sending to this region is not enabled (the account's geo permissions)";
    21606 => Create(Configuration), false, "`From` is not an SMS-capable number of this account";
    21610 => Create(Recipient), true, "the recipient replied STOP (unsubscribed)";
    21611 => Create(Transient), false, "the `From` number's queue is full";
    21612 => Create(Recipient), true, "Twilio cannot route to this number";
    21614 as NOT_MOBILE => Create(Recipient), true, "`To` is not a mobile number (a landline): SMS cannot reach it, a call may";
    21617 => Create(Configuration), false, "the message body is longer than 1600 characters";
    30001 => Delivery, false, "queue overflow: the message was not sent in time";
    30002 => Delivery, false, "account suspended";
    30003 as UNREACHABLE_HANDSET => Delivery, false, "unreachable handset (off or out of coverage)";
    30004 => Delivery, false, "message blocked by the recipient or the carrier";
    30005 as UNKNOWN_HANDSET => Delivery, false, "unknown destination handset";
    30006 as LANDLINE_OR_UNREACHABLE_CARRIER => Delivery, false, "landline or unreachable carrier";
    30007 as CARRIER_FILTERED => Delivery, false, "filtered by the carrier as spam";
    30008 as CARRIER_UNKNOWN_ERROR => Delivery, false, "unknown error from the carrier";
    30010 => Delivery, false, "the price is above the message's MaxPrice";
    30034 => Delivery, false, "sent from an unregistered US 10DLC number";
    30450 => Delivery, false, "blocked by SMS pumping protection";
    30453 => Delivery, false, "blocked by SMS pumping protection (suspected fraud)";
    63003 as NOT_ON_WHATSAPP => Create(Recipient), true, "WhatsApp: the number is not on WhatsApp (Meta 1006, 1013, 1021); also a delivery code";
    63007 => Create(Configuration), false, "WhatsApp: `From` is not a WhatsApp sender of this account";
    63012 as WHATSAPP_CHANNEL_FAILED => Delivery, false, "WhatsApp: the channel failed (Meta 500, 1011, 1014, 1023, 1025)";
    63016 => Create(Configuration), false, "WhatsApp: free-form text outside the 24-hour window: a template (ContentSid) is needed";
    63018 as WHATSAPP_SENDER_OVER_LIMIT => Delivery, false, "WhatsApp: the sender is over its messaging limit (Meta 429, 471, 1015)";
    63024 as NOT_A_WHATSAPP_RECIPIENT => Create(Recipient), true, "WhatsApp: not a valid recipient (Meta 1002, 1026: not on WhatsApp, terms not accepted, an old app)";
    63032 as WHATSAPP_USER_LIMITATION => Delivery, false, "WhatsApp: not sent to this user because of a WhatsApp limitation (Meta 472)";
}

/// The table's entry for `code`, if it has one.
pub(crate) fn lookup(code: u32) -> Option<&'static KnownCode> {
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
pub(crate) fn classify(http_status: u16, code: Option<u32>) -> FailureClass {
    match code.and_then(lookup).map(|k| k.stage) {
        Some(Create(Recipient)) => Recipient,
        Some(Create(Transient)) => Transient,
        _ if http_status == 429 || http_status >= 500 => Transient,
        _ => Configuration,
    }
}

/// Whether a refusal with this code marks the recipient as unreachable.
pub(crate) fn remembers_unreachable(code: Option<u32>) -> bool {
    code.and_then(lookup)
        .is_some_and(|k| k.remember_unreachable)
}

/// A Twilio code as a bounded metrics label: the code itself when the table
/// lists it, `other` when not, `none` when there was no code.
pub(crate) fn metric_label(code: Option<u32>) -> &'static str {
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
        // Every recipient refusal: no retry of the same request can pass
        // (63003, 63024: not on WhatsApp, remembered for WhatsApp only).
        assert_eq!(
            remembered,
            [21211, 21268, 21408, 21610, 21612, 21614, 63003, 63024]
        );
        assert!(!remembers_unreachable(None));
    }
}
