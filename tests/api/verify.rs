//! The verify API (`/v1/verify/request`, `/v1/verify/check`): what the
//! caller is told, and what Twilio received (the code is read from the SMS
//! Twilio got, as a user would read it).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const TO: &str = "+14155550123";
const OTHER: &str = "+14155550124";

/// The standard app with the verify API on, on a clock the test moves.
async fn verify_app(extra: &[(&str, &str)]) -> (TestApp, kratos_phone_courier::clock::Clock) {
    let mut tweak = vec![("PHONE_COURIER__VERIFY__ENABLED", "true")];
    tweak.extend_from_slice(extra);
    app_at_noon(twilio_accepting().await, &tweak).await
}

async fn request(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app.post_json("/v1/verify/request", &body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn check(app: &TestApp, to: &str, code: &str) -> (u16, Value) {
    let r = app
        .post_json("/v1/verify/check", &json!({"to": to, "code": code}))
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The SMS bodies Twilio received, in order.
async fn sms_bodies(app: &TestApp) -> Vec<(String, String)> {
    app.provider_requests()
        .await
        .iter()
        .filter(|r| r.url.path() == MESSAGES_PATH)
        .map(|r| {
            let f = form(r);
            let get = |k: &str| f.iter().find(|(n, _)| n == k).unwrap().1.clone();
            (get("To"), get("Body"))
        })
        .collect()
}

/// The code in an SMS body: its run of digits.
fn code_in(body: &str) -> String {
    body.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {body:?}"))
        .to_owned()
}

/// Another 6-digit code than `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

#[tokio::test]
async fn a_code_is_sent_approved_once_and_never_again() {
    let (app, _clock) = verify_app(&[]).await;
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "pending", "channel": "sms", "expires_in": 600})
    );
    // Twilio got exactly one SMS, with the template's text and the code.
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 1);
    let fields = form(&got[0]);
    let code = code_in(&fields[2].1);
    assert_eq!(
        fields,
        pairs(&[
            ("To", TO),
            ("From", FROM),
            (
                "Body",
                &format!("Your verification code is {code}. It expires in 10 minutes.")
            ),
            ("ValidityPeriod", "600"),
        ])
    );
    assert_eq!(
        check(&app, TO, &code).await,
        (200, json!({"status": "approved"}))
    );
    // Spent: a replay of the approved code is refused.
    let (status, body) = check(&app, TO, &code).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("no_pending_code"))
    );
    assert_eq!(app.provider_requests().await.len(), 1);
    // The approval is a confirmation for the fraud guard, counted once.
    let text = crate::fraud::metrics_text(&app).await;
    let cc = "{country_code=\"1\"}";
    for (series, expected) in [
        ("phone_courier_fraud_codes_sent_total", 1.0),
        ("phone_courier_fraud_codes_confirmed_total", 1.0),
    ] {
        assert_eq!(
            crate::fraud::metric(&text, &format!("{series}{cc}")),
            expected,
            "{series}"
        );
    }
}

#[tokio::test]
async fn a_resend_sends_the_same_code_and_keeps_its_expiry() {
    let (app, clock) = verify_app(&[]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    clock.advance(Duration::from_secs(200));
    let (status, body) = request(&app, json!({"to": TO, "locale": "de-AT"})).await;
    assert_eq!(status, 200, "{body}");
    // The code's life is not extended by the resend.
    assert_eq!(body["expires_in"], 400);
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 2, "the resend reached Twilio, not the dedup");
    let code = code_in(&sent[0].1);
    assert_eq!(code_in(&sent[1].1), code);
    assert_eq!(
        sent[1].1,
        format!("Ihr Bestätigungscode lautet {code}. Er ist 7 Minuten gültig.")
    );
    assert_eq!(check(&app, TO, &code).await.0, 200);
    // After approval a request makes a new code.
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(check(&app, TO, &code_in(&sent[2].1)).await.0, 200);
}

#[tokio::test]
async fn resends_are_charged_to_the_recipient_limit() {
    // The SMS recipient limit's burst is 3: the fourth send within the
    // hour is refused, and Twilio sees three.
    let (app, _clock) = verify_app(&[]).await;
    for _ in 0..3 {
        assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    }
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["limit"], "recipient");
    assert_eq!(sms_bodies(&app).await.len(), 3);
}

#[tokio::test]
async fn a_code_expires_on_the_services_clock() {
    let (app, clock) = verify_app(&[]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let code = code_in(&sms_bodies(&app).await[0].1);
    clock.advance(Duration::from_millis(600_000));
    let (status, body) = check(&app, TO, &code).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("no_pending_code"))
    );
    // A request now makes a new code with a whole lifetime.
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!((status, &body["expires_in"]), (200, &json!(600)));
    let fresh = code_in(&sms_bodies(&app).await[1].1);
    // Still good a second before it expires (the clock also runs on in
    // real time while the test runs: a second is room for that).
    clock.advance(Duration::from_millis(599_000));
    assert_eq!(check(&app, TO, &fresh).await.0, 200);
}

#[tokio::test]
async fn wrong_codes_count_and_the_last_drops_the_code() {
    let (app, _clock) = verify_app(&[("PHONE_COURIER__VERIFY__MAX_ATTEMPTS", "3")]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let code = code_in(&sms_bodies(&app).await[0].1);
    for left in [2, 1] {
        let (status, body) = check(&app, TO, &wrong(&code)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "code_mismatch");
        assert_eq!(body["error"]["attempts_left"], left);
    }
    // A code of another shape is a wrong code too.
    let (status, body) = check(&app, TO, "12").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("too_many_attempts"))
    );
    // Dropped: the right code no longer works.
    let (status, body) = check(&app, TO, &code).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("no_pending_code"))
    );
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn a_code_for_one_number_never_approves_another() {
    let (app, _clock) = verify_app(&[]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let code = code_in(&sms_bodies(&app).await[0].1);
    let (status, body) = check(&app, OTHER, &code).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("no_pending_code"))
    );
    assert_eq!(request(&app, json!({"to": OTHER})).await.0, 200);
    let other = code_in(&sms_bodies(&app).await[1].1);
    if other != code {
        let (status, body) = check(&app, OTHER, &code).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("code_mismatch"))
        );
    }
    assert_eq!(check(&app, TO, &code).await.0, 200);
    // The number is compared in its canonical form: a trunk zero typed
    // after the calling code is the same number.
    assert_eq!(request(&app, json!({"to": "+447400123456"})).await.0, 200);
    let uk = code_in(&sms_bodies(&app).await[2].1);
    assert_eq!(check(&app, "+4407400123456", &uk).await.0, 200);
}

#[tokio::test]
async fn concurrent_checks_of_one_code_approve_exactly_once() {
    let (app, _clock) = verify_app(&[("PHONE_COURIER__VERIFY__MAX_ATTEMPTS", "20")]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let code = code_in(&sms_bodies(&app).await[0].1);
    let checks = (0..16).map(|_| check(&app, TO, &code));
    let results = futures_join_all(checks).await;
    let approved = results.iter().filter(|(s, _)| *s == 200).count();
    let gone = results
        .iter()
        .filter(|(s, b)| *s == 404 && b["error"]["code"] == "no_pending_code")
        .count();
    assert_eq!((approved, gone), (1, 15), "{results:?}");
}

/// Runs the futures at once on this task (no extra crate for join_all).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn voice_speaks_the_code() {
    let (app, _clock) = verify_app(&[]).await;
    let (status, body) = request(&app, json!({"to": TO, "channel": "voice"})).await;
    assert_eq!((status, &body["channel"]), (200, &json!("voice")), "{body}");
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].url.path(), CALLS_PATH);
    let twiml = form(&got[0])
        .into_iter()
        .find(|(k, _)| k == "Twiml")
        .unwrap()
        .1;
    assert!(twiml.contains("Your verification code is"), "{twiml}");
    // The code is spoken digit by digit: read it back from the TwiML.
    let spoken: String = twiml
        .split("Your verification code is")
        .nth(1)
        .unwrap()
        .split("</Say>")
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(spoken.len(), 6, "{twiml}");
    assert_eq!(check(&app, TO, &spoken).await.0, 200);
}

#[tokio::test]
async fn hostile_and_wrong_requests_get_stable_codes_and_send_nothing() {
    let (app, _clock) = verify_app(&[]).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/verify/request", "", 400, "malformed_json"),
        ("/v1/verify/request", "{", 400, "malformed_json"),
        ("/v1/verify/request", "[]", 400, "schema_violation"),
        (
            "/v1/verify/request",
            r#"{"to":"+1","to":"+2"}"#,
            400,
            "malformed_json",
        ),
        ("/v1/verify/request", r#"{}"#, 400, "schema_violation"),
        (
            "/v1/verify/request",
            r#"{"to":14155550123}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/request",
            r#"{"to":"+14155550123","channel":"fax"}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/request",
            r#"{"to":"+14155550123","locale":"<script>"}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/request",
            r#"{"to":"+14155550123","code":"123456"}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/request",
            r#"{"to":"4155550123"}"#,
            422,
            "invalid_recipient",
        ),
        (
            "/v1/verify/request",
            r#"{"to":"+1415555"}"#,
            422,
            "invalid_recipient",
        ),
        ("/v1/verify/request", "\u{0}\u{0}", 400, "malformed_json"),
        (
            "/v1/verify/check",
            r#"{"to":"+14155550123"}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/check",
            r#"{"to":"+14155550123","code":123456}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/check",
            r#"{"to":"+14155550123","code":""}"#,
            400,
            "schema_violation",
        ),
        (
            "/v1/verify/check",
            r#"{"to":"nope","code":"123456"}"#,
            422,
            "invalid_recipient",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = app.post(path, body).await;
        assert_eq!(r.status().as_u16(), *status, "{path} {body:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], *code, "{path} {body:?}: {v}");
        assert!(!v.to_string().contains("4155550123"), "{v}");
    }
    let long = format!(
        r#"{{"to":"+14155550123","code":"{}"}}"#,
        "1".repeat(100_000)
    );
    let r = app.post("/v1/verify/check", &long).await;
    assert_eq!(r.status().as_u16(), 413);
    // No credentials, another content type, another method.
    let r = app
        .client
        .post(app.url("/v1/verify/request"))
        .header("Content-Type", "application/json")
        .body(r#"{"to":"+14155550123"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = app
        .client
        .post(app.url("/v1/verify/request"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Content-Type", "text/plain")
        .body(r#"{"to":"+14155550123"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = app
        .client
        .get(app.url("/v1/verify/check"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // The demo page is off outside serve --dev.
    let r = app
        .client
        .get(app.url("/verify/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn the_endpoints_do_not_exist_unless_enabled() {
    let app = spawn_app().await;
    for path in ["/v1/verify/request", "/v1/verify/check"] {
        let r = app.post(path, r#"{"to":"+14155550123"}"#).await;
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn test_numbers_get_a_code_without_a_send() {
    let (app, _clock) =
        verify_app(&[("PHONE_COURIER__TEST_NUMBERS__NUMBERS", "+15005550123")]).await;
    let (status, body) = request(&app, json!({"to": "+15005550123"})).await;
    assert_eq!(status, 200, "{body}");
    app.assert_provider_untouched().await;
    let listed: Value = app
        .client
        .get(app.url("/v1/test-messages"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = listed["messages"][0]["code"].as_str().unwrap().to_owned();
    assert_eq!(check(&app, "+15005550123", &code).await.0, 200);
}

/// The application passes its end user's address: sends are limited per
/// address like Kratos's (IPv6 per /64); without one they share the
/// `unknown_ip` bucket, like one that does not parse.
#[tokio::test]
async fn the_callers_client_ip_is_limited_per_address() {
    let (app, _clock) = verify_app(&[
        ("PHONE_COURIER__LIMITS__SMS__IP__BURST", "2"),
        ("PHONE_COURIER__LIMITS__SMS__UNKNOWN_IP__BURST", "1"),
    ])
    .await;
    // Each number in its own block, so only the address limits apply.
    let to = |i: usize| format!("+447400{i:03}555");
    let ask = |i: usize, ip: Option<&str>| {
        let mut body = json!({"to": to(i)});
        if let Some(ip) = ip {
            body["client_ip"] = json!(ip);
        }
        body
    };
    let limit = |v: &Value| v["error"]["limit"].as_str().unwrap_or("-").to_owned();
    let mut answers = Vec::new();
    for (i, ip) in [
        (0, Some("203.0.113.7")),
        (1, Some(" 203.0.113.7 ")),
        (2, Some("203.0.113.7")),
        (3, Some("198.51.100.9")),
        (4, Some("2001:db8:1:2::1")),
        (5, Some("2001:db8:1:2:ffff::9")),
        (6, Some("2001:db8:1:2::42")),
        (7, None),
        (8, None),
    ] {
        let (status, body) = request(&app, ask(i, ip)).await;
        answers.push((status, limit(&body)));
    }
    let ok = (200, "-".to_owned());
    let refused = |l: &str| (429, l.to_owned());
    assert_eq!(
        answers,
        [
            ok.clone(),
            ok.clone(),
            refused("ip"),
            ok.clone(),
            ok.clone(),
            ok.clone(),
            refused("ip"),
            ok.clone(),
            refused("unknown_ip"),
        ]
    );
    assert_eq!(sms_bodies(&app).await.len(), 6);
    // An address that does not parse is no way out of the unknown bucket.
    let (status, body) = request(&app, json!({"to": to(9), "client_ip": "10.0.0.300"})).await;
    assert_eq!(
        (status, limit(&body)),
        (429, "unknown_ip".to_owned()),
        "{body}"
    );
    assert_eq!(sms_bodies(&app).await.len(), 6, "nothing sent for it");
}
