//! What each kind of target is sent: the forwarded SMS text, the Slack
//! incoming-webhook message, and the signed JSON of a webhook.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::inbound::Inbound;

/// Twilio refuses longer SMS bodies.
const MAX_SMS_CHARS: usize = 1600;

/// The header a webhook's signature is in: `sha256=` and the hex
/// HMAC-SHA256 of the exact body with `relay.webhook_secret`.
pub(crate) const SIGNATURE_HEADER: &str = "X-Courier-Signature-256";

/// The forwarded SMS: the template with `{name}` and `{body}` filled in,
/// cut to Twilio's 1600 characters. The body goes in last, so braces in
/// a text are never taken for a placeholder.
pub(crate) fn sms_text(template: &str, route: &str, message: &Inbound) -> String {
    let text = template
        .replace("{name}", route)
        .replace("{body}", &with_media_note(message));
    text.chars().take(MAX_SMS_CHARS).collect()
}

/// A Slack incoming-webhook message: the route's name, then the text in a
/// code block (so a code is easy to copy). Slack's control characters
/// (`&`, `<`, `>`) are escaped, and a run of three backquotes cannot close
/// the block early.
pub(crate) fn slack_json(route: &str, message: &Inbound) -> serde_json::Value {
    let body = slack_escape(&with_media_note(message)).replace("```", "`\u{200b}`\u{200b}`");
    json!({
        "text": format!("MFA code from *{}*:\n```{}```", slack_escape(route), body),
    })
}

/// The JSON a webhook receives. `message_sid` is the same on every retry,
/// for receivers that deduplicate.
pub(crate) fn webhook_json(route: &str, message: &Inbound, received_at: &str) -> Vec<u8> {
    let value = json!({
        "route": route,
        "message_sid": message.sid,
        "from": message.from,
        "to": message.to.as_ref().map(|n| n.as_str()),
        "body": message.body,
        "num_media": message.num_media,
        "received_at": received_at,
    });
    // Serializing a Value cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn with_media_note(message: &Inbound) -> String {
    match message.num_media {
        0 => message.body.clone(),
        n => format!("{}\n[{n} attachment(s) not relayed]", message.body),
    }
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{Sender, E164};

    fn message(body: &str) -> Inbound {
        Inbound {
            sid: "SM1".into(),
            from: "32665".into(),
            sender: Sender::parse("32665"),
            to: E164::parse("+15005550006"),
            body: body.into(),
            num_media: 0,
        }
    }

    #[test]
    fn sms_fills_the_template_and_cuts_to_1600() {
        let m = message("code {name} 123456");
        assert_eq!(
            sms_text("MFA code from {name}:\n{body}", "GitHub", &m),
            "MFA code from GitHub:\ncode {name} 123456"
        );
        let long = message(&"é".repeat(2000));
        assert_eq!(sms_text("{body}", "x", &long).chars().count(), 1600);
    }

    #[test]
    fn slack_escapes_and_keeps_the_code_block() {
        let v = slack_json("A<B", &message("<@here> ```x``` & 42"));
        assert_eq!(
            v["text"],
            "MFA code from *A&lt;B*:\n```&lt;@here&gt; `\u{200b}`\u{200b}`x`\u{200b}`\u{200b}` &amp; 42```"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
