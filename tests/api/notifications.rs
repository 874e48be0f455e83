//! Messages without a code (Kratos master's `verifiable_address_changed`,
//! `authenticator_key_added`, or any new template without a code): sent by
//! SMS whatever the voice preference, read out in a call to a landline,
//! exactly once, under their own per-recipient limit, never counted by the
//! fraud guard. And the Web OTP line (`@domain #code`) of code SMS: kept
//! last, never spoken. Every test asserts what Twilio got.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const MOBILE: &str = "+14155550123";
/// A London number: libphonenumber says FIXED_LINE.
const LANDLINE: &str = "+442071234567";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
/// Kratos master's `verifiable_address_changed/sms.body.gotmpl`, rendered.
const CHANGED: &str =
    "An address on your account was changed. If this wasn't you, contact support.\n";

/// `verifiable_address_changed` as the kit's Jsonnet passes it on, to a
/// user whose trait and flow both ask for voice.
fn address_changed(to: &str) -> Value {
    json!({
        "recipient": to,
        "body": CHANGED,
        "template_type": "verifiable_address_changed",
        "message_type": "sms",
        "template_data": {
            "to": to,
            "identity": {"traits": {"phone_channel": "voice"}},
            "transient_payload": {"phone_courier": {"channel": "voice"}}
        },
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

/// The TwiML that reads the notice (Twilio's default voice and language).
fn read_out() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
     <Say voice=\"alice\" language=\"en-US\">An address on your account was changed. \
     If this wasn&apos;t you, contact support.</Say></Response>"
        .to_owned()
}

fn paths(requests: &[wiremock::Request]) -> Vec<&str> {
    requests.iter().map(|r| r.url.path()).collect()
}

#[tokio::test]
async fn a_notice_goes_by_sms_whatever_the_voice_preference_once_over_six_attempts() {
    let app = spawn_app().await;
    // The trait and the transient payload say voice, on /v1/sms; and the
    // kit's voice variant posts to /v1/voice: both are one SMS.
    for (endpoint, to) in [("/v1/sms", MOBILE), ("/v1/voice", "+14155550124")] {
        let before = app.provider_requests().await.len();
        // Kratos's six attempts of one message.
        for attempt in 0..6 {
            let r = app.post_json(endpoint, &address_changed(to)).await;
            assert_eq!(r.status(), 200, "{endpoint} attempt {attempt}");
            let answer: Value = r.json().await.unwrap();
            assert_eq!(answer["channel"], "sms", "{endpoint} attempt {attempt}");
            assert_eq!(answer["duplicate"].as_bool().unwrap_or(false), attempt > 0);
        }
        let got = app.provider_requests().await;
        assert_eq!(got.len(), before + 1, "{endpoint}: one provider request");
        assert_eq!(got[before].url.path(), MESSAGES_PATH);
        // No ValidityPeriod: a notice has no code to expire.
        assert_eq!(
            form(&got[before]),
            pairs(&[("To", to), ("From", FROM), ("Body", CHANGED)]),
            "{endpoint}"
        );
    }
}

#[tokio::test]
async fn a_notice_to_a_landline_is_read_out_in_one_call() {
    let app = spawn_app().await;
    for attempt in 0..6 {
        let r = app.post_json("/v1/sms", &address_changed(LANDLINE)).await;
        assert_eq!(r.status(), 200, "attempt {attempt}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            (&answer["channel"], &answer["fallback"], &answer["sid"]),
            (&json!("voice"), &json!(true), &json!(CALL_SID)),
            "attempt {attempt}"
        );
    }
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(
        fields,
        pairs(&[("To", LANDLINE), ("From", FROM), ("Twiml", &read_out())])
    );
}

#[tokio::test]
async fn a_notice_twilio_answers_21614_is_read_out_in_the_same_request() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21614, "message": "'To' number is not a valid mobile number", "status": 400
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"})),
        )
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(twilio, &[]).await;
    for attempt in 0..3 {
        let r = app.post_json("/v1/sms", &address_changed(MOBILE)).await;
        assert_eq!(r.status(), 200, "attempt {attempt}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            (&answer["channel"], &answer["fallback"]),
            (&json!("voice"), &json!(true))
        );
    }
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH]);
    assert_eq!(
        form(&got[1]),
        pairs(&[("To", MOBILE), ("From", FROM), ("Twiml", &read_out())])
    );
}

/// A notice with its own text (the ledger knows a message by its text).
fn notice(to: &str, n: u32) -> Value {
    let mut m = address_changed(to);
    m["body"] = json!(format!(
        "Notice {n}: an address on your account was changed."
    ));
    // Not the address the codes below come from (limits.sms.ip).
    m["request_headers"] = json!({"X-Forwarded-For": ["198.51.100.9"]});
    m
}

#[tokio::test]
async fn notices_have_their_own_per_recipient_limit() {
    let (app, clock) = app_at_noon(twilio_accepting().await, &[]).await;
    // limits.sms.notification: a burst of 3, then 6 an hour.
    for n in 0..3 {
        assert_eq!(
            app.post_json("/v1/sms", &notice(MOBILE, n)).await.status(),
            200
        );
    }
    let (status, body) = error_of(app.post_json("/v1/sms", &notice(MOBILE, 3)).await).await;
    assert_eq!(
        (status, error_code(&body), &body["error"]["limit"]),
        (429, "rate_limited", &json!("notification")),
        "{body}"
    );
    assert_eq!(app.provider_requests().await.len(), 3);
    // The notices took none of the person's codes (limits.sms.recipient).
    for (i, code) in ["482917", "482918", "482919"].iter().enumerate() {
        let r = app.post_json("/v1/sms", &login_message(MOBILE, code)).await;
        assert_eq!(r.status(), 200, "code {i}: {}", r.text().await.unwrap());
    }
    assert_eq!(app.provider_requests().await.len(), 6);
    // Ten minutes on, one more notice.
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        app.post_json("/v1/sms", &notice(MOBILE, 4)).await.status(),
        200
    );
    assert_eq!(app.provider_requests().await.len(), 7);
}

async fn code_to(app: &TestApp, to: &str, i: u32) -> u16 {
    let m = json!({
        "recipient": to,
        "body": format!("Your login code is: 4829{i:02}"),
        "template_type": "login_code_valid",
        "template_data": {"login_code": format!("4829{i:02}")},
        "request_headers": {"X-Forwarded-For": [format!("203.0.113.{}", 10 + i)]}
    });
    app.post_json("/v1/sms", &m).await.status().as_u16()
}

#[tokio::test]
async fn notices_are_never_codes_to_the_fraud_guard() {
    let (app, clock) = app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__FRAUD__ACTION", "deny")],
    )
    .await;
    // Four unconfirmed notices to one block of numbers (never confirmed,
    // as a notice never is), as tests/api/fraud.rs pumps four codes.
    for i in 0..3 {
        let r = app
            .post_json("/v1/sms", &notice(&format!("+44740012300{i}"), i))
            .await;
        assert_eq!(r.status(), 200);
    }
    clock.advance(Duration::from_secs(720));
    let r = app.post_json("/v1/sms", &notice("+447400123003", 3)).await;
    assert_eq!(r.status(), 200);
    clock.advance(Duration::from_secs(720));
    // The block is not suspect: a code to it is sent.
    assert_eq!(code_to(&app, "+447400123004", 4).await, 200);
    assert_eq!(app.provider_requests().await.len(), 5);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("phone_courier_fraud_codes_sent"))
        .collect();
    assert_eq!(
        sent,
        ["phone_courier_fraud_codes_sent_total{country_code=\"44\"} 1"]
    );
}

#[tokio::test]
async fn a_notice_to_a_held_block_is_still_sent() {
    let (app, clock) = app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__FRAUD__ACTION", "deny")],
    )
    .await;
    for i in 0..3 {
        assert_eq!(code_to(&app, &format!("+44740012300{i}"), i).await, 200);
    }
    clock.advance(Duration::from_secs(720));
    assert_eq!(code_to(&app, "+447400123003", 3).await, 200);
    clock.advance(Duration::from_secs(720));
    assert_eq!(code_to(&app, "+447400123004", 4).await, 429);
    // The security notice still reaches its number.
    let r = app.post_json("/v1/sms", &notice("+447400123004", 0)).await;
    assert_eq!(r.status(), 200);
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 5);
    assert_eq!(
        form(&got[4]),
        pairs(&[
            ("To", "+447400123004"),
            ("From", FROM),
            ("Body", "Notice 0: an address on your account was changed.")
        ])
    );
}

#[tokio::test]
async fn unknown_templates_are_notices_without_a_code_and_codes_with_one() {
    let app = spawn_app().await;
    let mut future = address_changed(MOBILE);
    future["template_type"] = json!("session_revoked_everywhere");
    future["body"] = json!("You were signed out everywhere.");
    let r = app.post_json("/v1/sms", &future).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    // The same new template with a code field: a code, called as asked.
    let mut coded = address_changed("+14155550124");
    coded["template_type"] = json!("session_revoked_everywhere");
    coded["body"] = json!("Your code is 482917");
    coded["template_data"]["verification_code"] = json!("482917");
    let r = app.post_json("/v1/sms", &coded).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "voice");
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH]);
    assert_eq!(
        form(&got[0]),
        pairs(&[
            ("To", MOBILE),
            ("From", FROM),
            ("Body", "You were signed out everywhere.")
        ])
    );
    let twiml = &form(&got[1])[2].1;
    assert!(twiml.contains("4, 8, 2, 9, 1, 7"), "{twiml}");
    // A known code template without its code stays refused.
    let mut broken = sms_message("+14155550125");
    broken["template_data"] = json!({});
    let (status, body) = error_of(app.post_json("/v1/voice", &broken).await).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_code"));
    assert_eq!(app.provider_requests().await.len(), 2);
}

/// A login code SMS of Kratos master, with the Web OTP line.
fn web_otp_login(to: &str, above: &str) -> Value {
    json!({
        "recipient": to,
        "body": format!("{above}\n\n@auth.example.com #482917\n"),
        "template_type": "login_code_valid",
        "template_data": {"to": to, "login_code": "482917", "expires_in_minutes": 60},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

#[tokio::test]
async fn a_body_too_long_loses_text_above_the_web_otp_line_never_the_line() {
    let app = spawn_app().await;
    let above = "x".repeat(1700);
    let r = app
        .post_json("/v1/sms", &web_otp_login(MOBILE, &above))
        .await;
    assert_eq!(r.status(), 200);
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    let tail = "@auth.example.com #482917\n";
    let expected = format!("{}…\n{tail}", "x".repeat(1600 - 2 - tail.len()));
    assert_eq!(expected.chars().count(), 1600);
    assert_eq!(
        fields,
        pairs(&[
            ("To", MOBILE),
            ("From", FROM),
            ("Body", &expected),
            ("ValidityPeriod", "3600"),
        ])
    );
    // One that fits is sent exactly as Kratos wrote it.
    let fits = web_otp_login(
        "+14155550124",
        "Your login code is: 482917\n\nIt expires in 60 minutes.",
    );
    assert_eq!(app.post_json("/v1/sms", &fits).await.status(), 200);
    let got = app.provider_requests().await;
    assert_eq!(form(&got[1])[2].1, fits["body"].as_str().unwrap());
    // Too long without a Web OTP line: refused, as before.
    let mut plain = sms_message("+14155550125");
    plain["body"] = json!("y".repeat(1601));
    let (status, body) = error_of(app.post_json("/v1/sms", &plain).await).await;
    assert_eq!((status, error_code(&body)), (422, "body_too_long"));
    assert_eq!(app.provider_requests().await.len(), 2);
}

#[tokio::test]
async fn a_call_never_speaks_the_web_otp_line() {
    let app = spawn_app().await;
    let message = web_otp_login(
        MOBILE,
        "Your login code is: 482917\n\nIt expires in 60 minutes.",
    );
    assert_eq!(app.post_json("/v1/voice", &message).await.status(), 200);
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(
        fields[2],
        (
            "Twiml".to_owned(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say voice=\"alice\" language=\"en-US\">Your login code is: 4, 8, 2, 9, 1, 7.</Say>\
             <Pause length=\"1\"/>\
             <Say voice=\"alice\" language=\"en-US\">Again: 4, 8, 2, 9, 1, 7.</Say></Response>"
                .to_owned()
        )
    );
}

/// Registration and recovery codes end with the Web OTP line too (Kratos
/// after v26.2.0: registration when it knows the domain, recovery always):
/// the SMS carries it exactly as written, a call never speaks it.
#[tokio::test]
async fn registration_and_recovery_codes_keep_the_web_otp_line_and_calls_skip_it() {
    for (template, field, word) in [
        (
            "registration_code_valid",
            "registration_code",
            "registration",
        ),
        // Kratos's recovery template carries its code as verification_code.
        ("recovery_code_valid", "verification_code", "recovery"),
    ] {
        let app = spawn_app().await;
        let body = format!("Your {word} code is: 613570\n\n@auth.example.com #613570\n");
        let message = json!({
            "recipient": MOBILE,
            "body": body,
            "template_type": template,
            "template_data": {"to": MOBILE, field: "613570", "expires_in_minutes": 15},
            "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
        });
        assert_eq!(
            app.post_json("/v1/sms", &message).await.status(),
            200,
            "{template}"
        );
        let fields = single_provider_request(&app, MESSAGES_PATH).await;
        assert_eq!(
            fields,
            pairs(&[
                ("To", MOBILE),
                ("From", FROM),
                ("Body", &body),
                ("ValidityPeriod", "900"),
            ]),
            "{template}"
        );
        let mut call = message.clone();
        call["recipient"] = json!("+14155550124");
        assert_eq!(
            app.post_json("/v1/voice", &call).await.status(),
            200,
            "{template}"
        );
        let got = app.provider_requests().await;
        let twiml = form(&got[1])
            .into_iter()
            .find(|(k, _)| k == "Twiml")
            .map(|(_, v)| v)
            .unwrap();
        assert!(
            twiml.contains(&format!("Your {word} code is: 6, 1, 3, 5, 7, 0.")),
            "{twiml}"
        );
        assert!(
            !twiml.contains("auth.example.com") && !twiml.contains('#'),
            "{twiml}"
        );
    }
}
