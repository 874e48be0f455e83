//! The JSON bodies Twilio answers for created messages, calls and the
//! account, with the field names of the OpenAPI `api.v2010.account.*` schemas.

use rand::Rng as _;
use serde_json::{json, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::validate::param;

pub(crate) const API_VERSION: &str = "2010-04-01";

/// Twilio's date format (RFC 2822 with a numeric zone): `Wed, 18 Aug 2010 20:01:40 +0000`.
const RFC2822: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
);

/// Now, formatted like Twilio's `date_created`.
pub(crate) fn now_rfc2822() -> String {
    OffsetDateTime::now_utc()
        .format(RFC2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

/// A random SID: two-letter prefix and 32 lowercase hex digits.
pub(crate) fn new_sid(prefix: &str) -> String {
    let n: u128 = rand::rng().random();
    format!("{prefix}{n:032x}")
}

/// The GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM 03.38 extension table (each costs two septets).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How many SMS segments a body takes: GSM-7 (160 septets, 153 per part
/// when concatenated) or UCS-2 (70 UTF-16 units, 67 per part).
pub(crate) fn num_segments(body: &str) -> usize {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in body.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (units, single, part) = if gsm {
        (septets, 160, 153)
    } else {
        (body.encode_utf16().count(), 70, 67)
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

/// Status of a message at creation, as Twilio reports it.
pub(crate) fn message_status(form: &[(String, String)]) -> &'static str {
    if param(form, "ScheduleType") == Some("fixed") {
        "scheduled"
    } else if param(form, "MessagingServiceSid").is_some() {
        "accepted"
    } else {
        "queued"
    }
}

/// The 201 body for `POST .../Messages.json`.
pub(crate) fn message_json(
    account_sid: &str,
    sid: &str,
    date: &str,
    status: &str,
    form: &[(String, String)],
) -> Value {
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}");
    let body = param(form, "Body").unwrap_or_default();
    let num_media = form.iter().filter(|(k, _)| k == "MediaUrl").count();
    json!({
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": param(form, "From"),
        "messaging_service_sid": param(form, "MessagingServiceSid"),
        "num_media": num_media.to_string(),
        "num_segments": num_segments(body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {
            "media": format!("{uri}/Media.json"),
            "feedback": format!("{uri}/Feedback.json"),
        },
        "to": param(form, "To"),
        "uri": format!("{uri}.json"),
    })
}

/// The 201 body for `POST .../Calls.json`.
pub(crate) fn call_json(
    account_sid: &str,
    sid: &str,
    date: &str,
    form: &[(String, String)],
) -> Value {
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}");
    let to = param(form, "To");
    let from = param(form, "From");
    json!({
        "account_sid": account_sid,
        "annotation": null,
        "answered_by": null,
        "api_version": API_VERSION,
        "caller_name": null,
        "date_created": date,
        "date_updated": date,
        "direction": "outbound-api",
        "duration": null,
        "end_time": null,
        "forwarded_from": null,
        "from": from,
        "from_formatted": from,
        "group_sid": null,
        "parent_call_sid": null,
        "phone_number_sid": null,
        "price": null,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": sid,
        "start_time": null,
        "status": "queued",
        "subresource_uris": {
            "notifications": format!("{uri}/Notifications.json"),
            "recordings": format!("{uri}/Recordings.json"),
            "payments": format!("{uri}/Payments.json"),
            "events": format!("{uri}/Events.json"),
            "siprec": format!("{uri}/Siprec.json"),
            "streams": format!("{uri}/Streams.json"),
            "transcriptions": format!("{uri}/Transcriptions.json"),
            "user_defined_message_subscriptions": format!("{uri}/UserDefinedMessageSubscriptions.json"),
            "user_defined_messages": format!("{uri}/UserDefinedMessages.json"),
        },
        "to": to,
        "to_formatted": to,
        "trunk_sid": null,
        "uri": format!("{uri}.json"),
    })
}

/// The 200 body for `GET /2010-04-01/Accounts/{AccountSid}.json` (without
/// `auth_token`, which the sandbox never echoes).
pub(crate) fn account_json(account_sid: &str) -> Value {
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}");
    let date = "Thu, 01 Jan 2026 00:00:00 +0000";
    json!({
        "date_created": date,
        "date_updated": date,
        "friendly_name": "Twilio sandbox",
        "owner_account_sid": account_sid,
        "sid": account_sid,
        "status": "active",
        "subresource_uris": {
            "calls": format!("{uri}/Calls.json"),
            "messages": format!("{uri}/Messages.json"),
        },
        "type": "Trial",
        "uri": format!("{uri}.json"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_shape() {
        let sid = new_sid("SM");
        assert_eq!(sid.len(), 34);
        assert!(sid[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(new_sid("SM"), sid);
    }

    #[test]
    fn date_shape() {
        let date = now_rfc2822();
        assert_eq!(
            date.len(),
            "Wed, 18 Aug 2010 20:01:40 +0000".len(),
            "{date}"
        );
        assert!(date.ends_with(" +0000"));
    }

    #[test]
    fn segments() {
        assert_eq!(num_segments(""), 1);
        assert_eq!(num_segments(&"a".repeat(160)), 1);
        assert_eq!(num_segments(&"a".repeat(161)), 2);
        assert_eq!(num_segments(&"a".repeat(306)), 2);
        assert_eq!(num_segments(&"a".repeat(307)), 3);
        assert_eq!(num_segments(&"€".repeat(80)), 1);
        assert_eq!(num_segments(&"€".repeat(81)), 2);
        assert_eq!(num_segments(&"ж".repeat(70)), 1);
        assert_eq!(num_segments(&"ж".repeat(71)), 2);
        assert_eq!(num_segments(&"👍".repeat(35)), 1);
        assert_eq!(num_segments(&"👍".repeat(36)), 2);
    }
}
