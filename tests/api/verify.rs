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
    let text = metrics_text(&app).await;
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
    let (app, _clock) = verify_app(&[
        ("PHONE_COURIER__VERIFY__MAX_ATTEMPTS", "20"),
        ("PHONE_COURIER__VERIFY__MAX_CHECKS_PER_HOUR", "20"),
    ])
    .await;
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
async fn web_otp_domain_ends_every_sms_and_is_never_spoken() {
    let domain = [("PHONE_COURIER__VERIFY__WEB_OTP_DOMAIN", "auth.example.com")];
    let (app, _clock) = verify_app(&domain).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
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
                &format!(
                    "Your verification code is {code}. It expires in 10 minutes.\n\n@auth.example.com #{code}"
                )
            ),
            ("ValidityPeriod", "600"),
        ])
    );
    // A call speaks the code only.
    let (status, body) = request(&app, json!({"to": OTHER, "channel": "voice"})).await;
    assert_eq!((status, &body["channel"]), (200, &json!("voice")), "{body}");
    let got = app.provider_requests().await;
    assert_eq!(got[1].url.path(), CALLS_PATH);
    let twiml = &form(&got[1])[2].1;
    assert!(
        !twiml.contains("example") && !twiml.contains('#'),
        "{twiml}"
    );
    // A value that is not a host name is refused at start-up.
    let mut env = base_env("http://127.0.0.1:9");
    env.insert("PHONE_COURIER__VERIFY__ENABLED".into(), "true".into());
    env.insert(
        "PHONE_COURIER__VERIFY__WEB_OTP_DOMAIN".into(),
        "https://auth.example.com/".into(),
    );
    let err = kratos_phone_courier::config::Config::load(&kratos_phone_courier::config::Sources {
        file: None,
        env,
    })
    .unwrap_err();
    assert!(err.to_string().contains("verify.web_otp_domain"), "{err}");
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

// ------------------------------------------------ guessing and idempotency

const DENIED: &str = "+4915123456789";

/// The code of `len` digits in an SMS body.
fn code_of_len(body: &str, len: usize) -> String {
    body.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == len)
        .unwrap_or_else(|| panic!("no {len}-digit code in {body:?}"))
        .to_owned()
}

/// The n-th 4-digit guess that is not `skip`.
fn guess(n: u32, skip: &str) -> String {
    let g = format!("{:04}", n % 10_000);
    if g == skip {
        format!("{:04}", (n + 1) % 10_000)
    } else {
        g
    }
}

/// The attacker's loop of the report: request a code, try five wrong ones
/// (the code is dropped), request a fresh one, and so on. Checks are capped
/// per number per hour across codes: past the cap even the right code of a
/// freshly sent one is refused, and 20,000 guesses at 4-digit codes never
/// approve. (The test reads each sent code from the Twilio stand-in and
/// keeps the first ten guesses off it, so the outcome does not depend on
/// luck; after the cap it tries the right code every round.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_capped_per_number_across_fresh_codes() {
    let (app, clock) = verify_app(&[
        ("PHONE_COURIER__VERIFY__CODE_LENGTH", "4"),
        ("PHONE_COURIER__LIMITS__SMS__RECIPIENT__BURST", "3"),
    ])
    .await;
    let mut checks = 0u32;
    let mut compared = Vec::new();
    let mut refused = 0u32;
    let mut approved = 0u32;
    let mut retry_after = None;
    let mut tally = |(status, code, retry): (u16, Value, Option<String>)| match status {
        200 => approved += 1,
        429 if code == "too_many_checks" => {
            refused += 1;
            retry_after = retry;
        }
        _ => compared.push((status, code)),
    };
    // The first rounds one by one: two codes' worth of wrong guesses, then
    // the right code of a third, freshly sent one.
    let mut code = String::new();
    for round in 0..3 {
        let (status, body) = request(&app, json!({"to": TO})).await;
        assert_eq!(status, 200, "round {round}: {body}");
        code = code_of_len(&sms_bodies(&app).await.last().unwrap().1, 4);
        for i in 0..5 {
            let g = if round == 2 && i == 4 {
                code.clone()
            } else {
                guess(checks, &code)
            };
            tally(check_with_retry(&app, &g).await);
            checks += 1;
        }
        if round == 1 {
            // The clock moves within the hour: the cap is per hour.
            clock.advance(Duration::from_secs(60));
        }
    }
    // Then the attacker's loop, many rounds at once, to 20,000 guesses:
    // each round a request and five guesses, the last the latest code sent.
    while checks < 20_000 {
        let rounds = 40.min((20_000 - checks) / 5);
        let requests = (0..rounds).map(|_| request(&app, json!({"to": TO})));
        for (status, body) in futures_join_all(requests).await {
            assert_eq!(
                (status, &body["error"]["code"]),
                (429, &json!("rate_limited")),
                "{body}"
            );
        }
        let guesses: Vec<String> = (0..rounds * 5)
            .map(|i| {
                if i % 5 == 4 {
                    code.clone()
                } else {
                    guess(checks + i, "")
                }
            })
            .collect();
        for answer in futures_join_all(guesses.iter().map(|g| check_with_retry(&app, g))).await {
            tally(answer);
        }
        checks += rounds * 5;
    }
    assert_eq!(approved, 0, "an approval after {checks} guesses");
    let one_code = [
        (422, json!("code_mismatch")),
        (422, json!("code_mismatch")),
        (422, json!("code_mismatch")),
        (422, json!("code_mismatch")),
        (429, json!("too_many_attempts")),
    ];
    assert_eq!(compared, [one_code.clone(), one_code].concat());
    assert_eq!(refused, 20_000 - 10);
    // Noon plus a minute (and the test's own run time): the hour ends in
    // a little under 59 minutes.
    let retry: u64 = retry_after.unwrap().parse().unwrap();
    assert!((3000..=3540).contains(&retry), "{retry}");
    // Twilio got the sends the recipient limit allows, no more.
    assert_eq!(sms_bodies(&app).await.len(), 3);
    // The next hour the number gets its checks again: a fresh code works.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let sent = sms_bodies(&app).await;
    let code = code_of_len(&sent.last().unwrap().1, 4);
    assert_eq!(check(&app, TO, &code).await.0, 200);
}

/// A check of `TO`: the status, the error code and the Retry-After header.
async fn check_with_retry(app: &TestApp, code: &str) -> (u16, Value, Option<String>) {
    let r = app
        .post_json("/v1/verify/check", &json!({"to": TO, "code": code}))
        .await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    (status, body["error"]["code"].clone(), retry)
}

/// A number in a denied country gets no code: no request is ever sent, and
/// nothing is checkable (no pending code, not a wrong one), so no number of
/// guesses approves it.
#[tokio::test]
async fn a_denied_country_never_yields_a_checkable_code() {
    let (app, _clock) = verify_app(&[
        ("PHONE_COURIER__VERIFY__CODE_LENGTH", "4"),
        ("PHONE_COURIER__VERIFY__MAX_CHECKS_PER_HOUR", "1000"),
        ("PHONE_COURIER__POLICY__SMS__DENIED_COUNTRIES", "DE"),
    ])
    .await;
    for round in 0..50u32 {
        let (status, body) = request(&app, json!({"to": DENIED})).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("recipient_not_allowed")),
            "{body}"
        );
        for i in 0..5 {
            let (status, body) = check(&app, DENIED, &format!("{:04}", round * 5 + i)).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (404, &json!("no_pending_code")),
                "{body}"
            );
        }
    }
    app.assert_provider_untouched().await;
}

/// A request the limits refuse leaves nothing to check; a refused resend
/// leaves the code that was sent as it was.
#[tokio::test]
async fn a_limit_refusal_leaves_nothing_checkable() {
    let (app, _clock) = verify_app(&[("PHONE_COURIER__LIMITS__SMS__RECIPIENT__BURST", "2")]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 2);
    let code = code_in(&sent[0].1);
    // The refused resend did not touch the sent code.
    assert_eq!(check(&app, TO, &code).await.0, 200);
    // Now nothing is pending, and a refused request makes nothing.
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    let (status, body) = check(&app, TO, &wrong(&code)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("no_pending_code")),
        "{body}"
    );
    assert_eq!(sms_bodies(&app).await.len(), 2);
}

async fn request_with_key(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/v1/verify/request"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// An application's retry with the same `Idempotency-Key` (after a timeout,
/// say) gets the first answer, and Twilio gets one Messages request; the
/// key with another number or body is refused; a bad key is refused.
#[tokio::test]
async fn an_idempotent_retry_is_answered_without_a_second_send() {
    let (app, clock) = verify_app(&[]).await;
    let key = "3f1c9a52-7d0e-4b8a-9a31-0c6b1e2f4d77";
    let first = request_with_key(&app, key, json!({"to": TO})).await;
    assert_eq!(
        first,
        (
            200,
            json!({"status": "pending", "channel": "sms", "expires_in": 600})
        )
    );
    for _ in 0..3 {
        assert_eq!(request_with_key(&app, key, json!({"to": TO})).await, first);
    }
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 1, "one Messages request for the retries");
    assert_eq!(sent[0].0, TO);
    // Later, the answer says how long the code still lives.
    clock.advance(Duration::from_secs(100));
    let (status, body) = request_with_key(&app, key, json!({"to": TO})).await;
    assert_eq!((status, &body["expires_in"]), (200, &json!(500)));
    // The key with another number or another body: refused, nothing sent.
    for other in [
        json!({"to": OTHER}),
        json!({"to": TO, "channel": "voice"}),
        json!({"to": TO, "locale": "de"}),
    ] {
        let (status, body) = request_with_key(&app, key, other).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("idempotency_key_reused")),
            "{body}"
        );
    }
    for bad in ["", &"k".repeat(256), "two words"] {
        let (status, body) = request_with_key(&app, bad, json!({"to": OTHER})).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_idempotency_key")),
            "{bad:?}"
        );
    }
    assert_eq!(sms_bodies(&app).await.len(), 1);
    // The code sent is the one checked; a new key sends (a resend).
    assert_eq!(
        request_with_key(&app, "another", json!({"to": TO})).await.0,
        200
    );
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(check(&app, TO, &code_in(&sent[0].1)).await.0, 200);
}

/// A retry while the first request is still at Twilio is told to wait
/// (409, Retry-After), and sends nothing; once answered, a retry gets the
/// answer. A refused request forgets its key: its retry is tried again.
#[tokio::test]
async fn a_retry_during_the_first_request_waits_and_a_refusal_is_not_kept() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(
        twilio,
        &[
            ("PHONE_COURIER__VERIFY__ENABLED", "true"),
            ("PHONE_COURIER__POLICY__SMS__DENIED_COUNTRIES", "DE"),
        ],
    )
    .await;
    let app = std::sync::Arc::new(app);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { request_with_key(&app, "k1", json!({"to": TO})).await })
    };
    // Wait (bounded) until the first request is at Twilio.
    for _ in 0..200 {
        if !app.provider_requests().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app
        .client
        .post(app.url("/v1/verify/request"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Idempotency-Key", "k1")
        .json(&json!({"to": TO}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_in_progress");
    let first = first.await.unwrap();
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(request_with_key(&app, "k1", json!({"to": TO})).await, first);
    assert_eq!(app.provider_requests().await.len(), 1);
    // Refused: the same refusal again (not a stored one), nothing sent.
    for _ in 0..2 {
        let (status, body) = request_with_key(&app, "k2", json!({"to": DENIED})).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("recipient_not_allowed"))
        );
    }
    assert_eq!(app.provider_requests().await.len(), 1);
}

/// Twilio refuses the number (21211): the request answers as before, and
/// the code it would have sent is not checkable.
#[tokio::test]
async fn a_provider_refusal_leaves_nothing_checkable() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211,
            "message": "error",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(twilio, &[("PHONE_COURIER__VERIFY__ENABLED", "true")]).await;
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("recipient_unreachable")),
        "{body}"
    );
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 1);
    let code = code_in(&sent[0].1);
    assert_nothing_pending(&app, TO, &[wrong(&code), code]).await;
}

/// Twilio answers 503 (it did not take the message; no other provider):
/// the request answers 503 as before, and the code is not checkable, on a
/// wrong guess nor the right one. Only an uncertain send (a timeout, a
/// lost answer) leaves a code the user may be reading.
#[tokio::test]
async fn a_send_the_provider_turned_away_leaves_nothing_checkable() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "code": 20503,
            "message": "Service unavailable",
            "status": 503
        })))
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(twilio, &[("PHONE_COURIER__VERIFY__ENABLED", "true")]).await;
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("provider_unavailable")),
        "{body}"
    );
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 1);
    let code = code_in(&sent[0].1);
    assert_nothing_pending(&app, TO, &[wrong(&code), code]).await;
}

/// Twilio takes the message and its answer is lost (here: later than
/// `twilio.timeout_ms`): the request answers 503, and the code is
/// checkable, since the user may be reading it.
#[tokio::test]
async fn an_uncertain_send_leaves_its_code_checkable() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(
                    json!({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}),
                )
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(
        twilio,
        &[
            ("PHONE_COURIER__VERIFY__ENABLED", "true"),
            ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "500"),
            ("PHONE_COURIER__TWILIO__CONNECT_TIMEOUT_MS", "250"),
        ],
    )
    .await;
    let (status, body) = request(&app, json!({"to": TO})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("provider_unavailable")),
        "{body}"
    );
    let sent = sms_bodies(&app).await;
    assert_eq!(sent.len(), 1);
    let (status, body) = check(&app, TO, &code_in(&sent[0].1)).await;
    assert_eq!((status, body), (200, json!({"status": "approved"})));
}

/// The day's budget refuses the second number's code: nothing is pending
/// for it (a check is 404 `no_pending_code`, not a mismatch), so the
/// refusal yields nothing to guess at.
#[tokio::test]
async fn a_budget_refusal_leaves_nothing_checkable() {
    const OTHER: &str = "+14155550177";
    let (app, _clock) = verify_app(&[("PHONE_COURIER__BUDGET__DAILY_TOTAL", "1")]).await;
    assert_eq!(request(&app, json!({"to": TO})).await.0, 200);
    let (status, body) = request(&app, json!({"to": OTHER})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("budget_exhausted")),
        "{body}"
    );
    assert_eq!(sms_bodies(&app).await.len(), 1);
    assert_nothing_pending(&app, OTHER, &["000000".into(), "123456".into()]).await;
}

/// Nothing is pending for `to`: each of `codes` is answered 404
/// `no_pending_code` (a pending code would answer a mismatch or approve).
async fn assert_nothing_pending(app: &TestApp, to: &str, codes: &[String]) {
    for c in codes {
        let (status, body) = check(app, to, c).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("no_pending_code")),
            "{body}"
        );
    }
}
