//! The human-readable inbox page at `GET /inbox`.

use std::fmt::Write as _;

use super::hooks::{HookEntry, HookKind};
use super::model::{Channel, InboxEntry};

/// Escape text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The page, newest first; every dynamic value escaped. With an inbound
/// URL set, a form sends a text "to" the service's relay, and what the
/// relay posted to the Slack stand-in and webhook receiver is listed.
pub(crate) fn inbox_page(entries: &[InboxEntry], hooks: &[HookEntry], inbound: bool) -> String {
    let mut page = String::from(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta http-equiv=\"refresh\" content=\"5\">\n",
        "<title>Twilio sandbox inbox</title>\n",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}",
        "td,th{border:1px solid #ccc;padding:.4em;text-align:left;vertical-align:top}",
        "td.text{white-space:pre-wrap}</style>\n</head>\n<body>\n",
        "<h1>Twilio sandbox inbox</h1>\n",
        "<p>Messages and calls accepted by the sandbox, newest first. ",
        "This page refreshes every 5 seconds. Local development tool: do not expose it.</p>\n",
    ));
    if entries.is_empty() {
        page.push_str("<p>No messages yet.</p>\n");
    } else {
        page.push_str("<table>\n<thead><tr><th>Time</th><th>Channel</th><th>To</th><th>From</th><th>Text</th><th>Status</th><th>SID</th></tr></thead>\n<tbody>\n");
        for entry in entries {
            // A WhatsApp message is a message resource to `whatsapp:+…`:
            // shown apart, with its template and variables.
            let whatsapp = entry.to.starts_with(super::create::WHATSAPP_PREFIX);
            let channel = match entry.channel {
                Channel::Sms if whatsapp => "WhatsApp",
                Channel::Sms => "SMS",
                Channel::Voice => "Voice",
            };
            let template = whatsapp.then(|| {
                let field = |k: &str| {
                    entry
                        .form
                        .iter()
                        .find(|(n, _)| n == k)
                        .map_or("", |(_, v)| v.as_str())
                };
                format!(
                    "template {} with {}",
                    field("ContentSid"),
                    field("ContentVariables")
                )
            });
            let text = match entry.channel {
                Channel::Sms if whatsapp => template.as_deref().unwrap_or(""),
                Channel::Sms => entry.body.as_deref().unwrap_or(""),
                Channel::Voice => entry
                    .spoken_text
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .or(entry.twiml.as_deref())
                    .unwrap_or("(TwiML fetched from Url)"),
            };
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&entry.date_created),
                channel,
                escape(&entry.to),
                escape(&entry.from),
                escape(text),
                escape(&entry.status),
                escape(&entry.sid),
            );
        }
        page.push_str("</tbody>\n</table>\n");
    }
    if inbound {
        page.push_str(concat!(
            "<h2>Send a text to the service's relay</h2>\n",
            "<form method=\"post\" action=\"/sandbox/inbound\">",
            "<label>From <input name=\"from\" value=\"+15556667777\"></label> ",
            "<label>To <input name=\"to\" value=\"+15005550006\"></label> ",
            "<label>Text <input name=\"body\" size=\"40\" value=\"Your GitHub code is 482917\"></label> ",
            "<button>Send as Twilio</button></form>\n",
        ));
    }
    if !hooks.is_empty() {
        page.push_str("<h2>Relayed to Slack and webhooks</h2>\n<table>\n<thead><tr><th>Time</th><th>Where</th><th>Text</th><th>Answered</th></tr></thead>\n<tbody>\n");
        for hook in hooks {
            let kind = match hook.kind {
                HookKind::Slack => "Slack",
                HookKind::Webhook => "Webhook",
            };
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{} {}</td><td class=\"text\">{}</td><td>{}</td></tr>",
                escape(&hook.date),
                kind,
                escape(&hook.name),
                escape(&hook.text()),
                hook.answered_status,
            );
        }
        page.push_str("</tbody>\n</table>\n");
    }
    lookup_numbers(&mut page);
    page.push_str("</body>\n</html>\n");
    page
}

/// The Lookup v2 magic numbers (`lookup`), so a developer can try each path
/// of the service's Lookup policy from this page.
fn lookup_numbers(page: &mut String) {
    use super::lookup::{HIGH_PUMPING_RISK, LINE_TYPE_NUMBERS, LOOKUP_FAILS, SIM_SWAPPED};
    page.push_str(concat!(
        "<h2>Lookup magic numbers</h2>\n",
        "<p><code>GET /v2/PhoneNumbers/{number}</code> answers as Twilio Lookup v2. ",
        "Any other number is <code>mobile</code> (a UK geographic number, +441/+442/+443, ",
        "<code>landline</code>), with no SIM swap and a pumping score of 10. ",
        "Lookups answered: <code>/sandbox/lookups.json</code>.</p>\n",
        "<table>\n<thead><tr><th>Number</th><th>Lookup says</th></tr></thead>\n<tbody>\n",
    ));
    for (number, line_type) in LINE_TYPE_NUMBERS {
        page.push_str(&format!(
            "<tr><td>{number}</td><td>line_type_intelligence.type = {line_type}</td></tr>\n"
        ));
    }
    page.push_str(&format!(
        "<tr><td>{SIM_SWAPPED}</td><td>mobile, sim_swap.last_sim_swap.swapped_in_period = true</td></tr>\n\
         <tr><td>{HIGH_PUMPING_RISK}</td><td>mobile, sms_pumping_risk.sms_pumping_risk_score = 95</td></tr>\n\
         <tr><td>{LOOKUP_FAILS}</td><td>503 (Twilio error 20503): the lookup fails</td></tr>\n\
         </tbody>\n</table>\n"
    ));
    page.push_str(concat!(
        "<h2>Undelivered SMS</h2>\n",
        "<p>An SMS to these numbers is accepted, then reported <code>undelivered</code> ",
        "with the carrier error in a signed status callback (when the request named a ",
        "<code>StatusCallback</code>): the service calls instead, and the call shows here ",
        "next to the SMS. Any number: <code>POST /sandbox/faults</code> ",
        "<code>{\"fault\":\"undelivered=30003\"}</code>.</p>\n",
        "<table>\n<thead><tr><th>Number</th><th>ErrorCode</th></tr></thead>\n<tbody>\n",
    ));
    for (number, code, what) in super::create::UNDELIVERED_NUMBERS {
        page.push_str(&format!(
            "<tr><td>{number}</td><td>{code} ({what})</td></tr>\n"
        ));
    }
    page.push_str("</tbody>\n</table>\n");
    page.push_str(concat!(
        "<h2>Undelivered WhatsApp</h2>\n",
        "<p>A WhatsApp message to these numbers (<code>To=whatsapp:+…</code>) is accepted, ",
        "then reported <code>undelivered</code> with the WhatsApp error in a signed status ",
        "callback: the service sends the code by SMS instead, and the SMS shows here next ",
        "to the WhatsApp message.</p>\n",
        "<table>\n<thead><tr><th>Number</th><th>ErrorCode</th></tr></thead>\n<tbody>\n",
    ));
    for (number, code, what) in super::create::WHATSAPP_UNDELIVERED_NUMBERS {
        page.push_str(&format!(
            "<tr><td>{number}</td><td>{code} ({what})</td></tr>\n"
        ));
    }
    page.push_str("</tbody>\n</table>\n");
    page.push_str(&format!(
        concat!(
            "<p>A WhatsApp message to <code>{}</code> is reported <code>sent</code> and never ",
            "<code>delivered</code>: with <code>whatsapp.fallback_after_ms</code> on, the service ",
            "sends the code by SMS when no receipt has come in that time.</p>\n",
        ),
        super::create::WHATSAPP_NO_RECEIPT_NUMBER
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let entry = InboxEntry {
            sid: "SM1".into(),
            channel: Channel::Sms,
            to: "<b>".into(),
            from: "+1".into(),
            body: Some("<script>alert(1)</script>".into()),
            twiml: None,
            spoken_text: None,
            date_created: "now".into(),
            status: "queued".into(),
            form: vec![],
        };
        let page = inbox_page(&[entry], &[], false);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;"));
        assert!(page.contains(
            "<tr><td>+14155550171</td><td>line_type_intelligence.type = landline</td></tr>"
        ));
        assert!(page.contains("<tr><td>+14155550191</td><td>30003 (unreachable handset)</td></tr>"));
    }
}
