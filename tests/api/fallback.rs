//! SMS-to-voice fallback (`delivery::fallback`): landlines and Twilio's
//! 21614 are called in the same request; an undelivered status callback
//! calls once, while the code lives. Every test asserts what Twilio got.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// A London number: libphonenumber says FIXED_LINE.
const LANDLINE: &str = "+442071234567";
const MOBILE: &str = "+14155550123";
const PUBLIC_URL: &str = "http://courier.example.test";
const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

/// The TwiML that speaks login code 482917.
fn spoken_482917() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
     <Say voice=\"alice\" language=\"en-US\">Your login code is: 4, 8, 2, 9, 1, 7.</Say>\
     <Pause length=\"1\"/>\
     <Say voice=\"alice\" language=\"en-US\">Again: 4, 8, 2, 9, 1, 7.</Say></Response>"
        .to_owned()
}

fn code_message(to: &str, minutes: i64) -> Value {
    json!({
        "recipient": to,
        "body": "Your login code is: 482917",
        "template_type": "login_code_valid",
        "template_data": {"login_code": "482917", "expires_in_minutes": minutes},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

fn paths(requests: &[wiremock::Request]) -> Vec<&str> {
    requests.iter().map(|r| r.url.path()).collect()
}

#[tokio::test]
async fn a_landline_is_called_instead_and_a_retry_is_answered_from_the_ledger() {
    let app = spawn_app().await;
    let message = code_message(LANDLINE, 10);
    for attempt in 0..2 {
        let r = app.post_json("/v1/sms", &message).await;
        assert_eq!(r.status(), 200);
        let mut expected =
            json!({"status": "accepted", "channel": "voice", "fallback": true, "sid": CALL_SID});
        if attempt == 1 {
            expected["duplicate"] = json!(true);
        }
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            expected,
            "attempt {attempt}"
        );
    }
    // One Calls request and no Messages request, for both attempts.
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(
        fields,
        pairs(&[
            ("To", LANDLINE),
            ("From", FROM),
            ("Twiml", &spoken_482917())
        ])
    );
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
    assert!(
        metrics.contains(r#"phone_courier_fallback_calls_total{reason="landline"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_fallback_off_a_landline_gets_its_sms() {
    let app = spawn_app_with(|env| {
        env.insert("PHONE_COURIER__FALLBACK__VOICE_ON".into(), "".into());
    })
    .await;
    let r = app.post_json("/v1/sms", &code_message(LANDLINE, 10)).await;
    assert_eq!(r.status(), 200);
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    assert!(fields.contains(&("To".to_owned(), LANDLINE.to_owned())));
}

/// Twilio answering 21614 for the mobile-looking number, accepting calls.
async fn twilio_not_mobile() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21614, "message": "'To' number is not a valid mobile number", "status": 400
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"})),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn twilio_21614_places_the_call_in_the_same_request_and_charges_voice() {
    let (app, _clock) = app_at_noon(twilio_not_mobile().await, &[]).await;
    let message = code_message(MOBILE, 10);
    for attempt in 0..3 {
        let r = app.post_json("/v1/sms", &message).await;
        assert_eq!(r.status(), 200, "attempt {attempt}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["channel"], "voice");
        assert_eq!(answer["fallback"], true);
        assert_eq!(answer["sid"], CALL_SID);
        assert_eq!(answer["duplicate"].as_bool().unwrap_or(false), attempt > 0);
    }
    let got = app.provider_requests().await;
    // One Messages request (21614), then one Calls request; retries send
    // nothing.
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH]);
    assert_eq!(
        form(&got[1]),
        pairs(&[("To", MOBILE), ("From", FROM), ("Twiml", &spoken_482917())])
    );
    // Twilio said "not mobile": the next message to the number is called at
    // once, without trying an SMS.
    let other = json!({
        "recipient": MOBILE,
        "body": "Your login code is: 111222",
        "template_type": "login_code_valid",
        "template_data": {"login_code": "111222", "expires_in_minutes": 10},
    });
    let r = app.post_json("/v1/sms", &other).await;
    assert_eq!(r.status(), 200);
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH, CALLS_PATH]);
}

/// The app with status callbacks on, at noon.
async fn app_with_callbacks() -> (TestApp, kratos_phone_courier::clock::Clock) {
    app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL)],
    )
    .await
}

/// Post a status callback signed as Twilio would.
async fn callback(app: &TestApp, status: &str, error_code: Option<&str>) -> u16 {
    let signed_url = format!("{PUBLIC_URL}/v1/twilio/status");
    let mut params = vec![
        ("MessageSid".to_owned(), SMS_SID.to_owned()),
        ("MessageStatus".to_owned(), status.to_owned()),
        ("To".to_owned(), MOBILE.to_owned()),
    ];
    if let Some(code) = error_code {
        params.push(("ErrorCode".to_owned(), code.to_owned()));
    }
    let signature =
        kratos_phone_courier::provider::signature::compute(AUTH_TOKEN, &signed_url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    app.client
        .post(app.url("/v1/twilio/status"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_undelivered_sms_is_called_once_with_the_original_code() {
    let (app, _clock) = app_with_callbacks().await;
    let r = app.post_json("/v1/sms", &code_message(MOBILE, 10)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(paths(&app.provider_requests().await), [MESSAGES_PATH]);
    // Delivered-path statuses and errors a call cannot help call nobody.
    assert_eq!(callback(&app, "sent", None).await, 204);
    assert_eq!(callback(&app, "undelivered", Some("30007x")).await, 204);
    assert_eq!(callback(&app, "undelivered", Some("21610")).await, 204);
    assert_eq!(paths(&app.provider_requests().await), [MESSAGES_PATH]);
    // 30003, twice (Twilio retries webhooks): one call.
    assert_eq!(callback(&app, "undelivered", Some("30003")).await, 204);
    assert_eq!(callback(&app, "failed", Some("30003")).await, 204);
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH]);
    let status_url = format!("{PUBLIC_URL}/v1/twilio/status");
    assert_eq!(
        form(&got[1]),
        pairs(&[
            ("To", MOBILE),
            ("From", FROM),
            ("Twiml", &spoken_482917()),
            ("StatusCallback", &status_url),
            ("StatusCallbackEvent", "completed"),
        ])
    );
}

#[tokio::test]
async fn an_undelivered_sms_whose_code_expired_is_not_called() {
    let (app, clock) = app_with_callbacks().await;
    let r = app.post_json("/v1/sms", &code_message(MOBILE, 10)).await;
    assert_eq!(r.status(), 200);
    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(callback(&app, "undelivered", Some("30005")).await, 204);
    assert_eq!(paths(&app.provider_requests().await), [MESSAGES_PATH]);
}

#[tokio::test]
async fn without_undelivered_in_voice_on_a_callback_calls_nobody() {
    let (app, _clock) = app_at_noon(
        twilio_accepting().await,
        &[
            ("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL),
            ("PHONE_COURIER__FALLBACK__VOICE_ON", "landline"),
        ],
    )
    .await;
    assert_eq!(
        app.post_json("/v1/sms", &code_message(MOBILE, 10))
            .await
            .status(),
        200
    );
    assert_eq!(callback(&app, "undelivered", Some("30003")).await, 204);
    assert_eq!(paths(&app.provider_requests().await), [MESSAGES_PATH]);
}

/// End to end with the real sandbox (as `serve --dev` runs): the sandbox
/// accepts the SMS, reports it undelivered (30003) through a callback signed
/// with the auth token, and the service calls once with the same code.
#[tokio::test]
async fn the_sandbox_reports_an_sms_undelivered_and_the_service_calls() {
    use twilio_sandbox::Fault;
    let (base, sandbox, _server) = crate::observability::service_with_sandbox().await;
    sandbox.inject_fault(Fault::Undelivered { error_code: 30003 }, 1);
    sms_then_one_fallback_call(&base, &sandbox, MOBILE).await;
}

/// The sandbox's magic number +14155550191 is reported undelivered (30003)
/// with no fault set: what `serve --dev` shows.
#[tokio::test]
async fn the_sandboxs_undelivered_magic_number_is_called() {
    let (base, sandbox, _server) = crate::observability::service_with_sandbox().await;
    sms_then_one_fallback_call(&base, &sandbox, "+14155550191").await;
}

/// Send a code SMS to `to` through the service, then wait (bounded) for the
/// sandbox's signed `undelivered` callback to make the service call: one
/// Messages request, one Calls request speaking the code.
async fn sms_then_one_fallback_call(base: &str, sandbox: &twilio_sandbox::Sandbox, to: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(&code_message(to, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    // The callback arrives a moment later: wait for the call (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let calls: Vec<_> = sandbox
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/Calls.json"))
            .collect();
        if !calls.is_empty() {
            break calls;
        }
        assert!(std::time::Instant::now() < deadline, "no fallback call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(calls.len(), 1);
    let field = |k: &str| {
        calls[0]
            .form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("To").as_deref(), Some(to));
    assert_eq!(field("Twiml"), Some(spoken_482917()));
    let messages = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/Messages.json"))
        .count();
    assert_eq!(messages, 1);
}

/// The call for an undelivered SMS is counted against the end user the SMS
/// was counted against (kept, sealed, in its record), not in the shared
/// `unknown_ip` bucket, which a busy site may have spent.
#[tokio::test]
async fn an_undelivered_sms_call_is_counted_against_its_end_user() {
    let (app, _clock) = app_at_noon(
        twilio_accepting().await,
        &[
            ("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL),
            ("PHONE_COURIER__LIMITS__VOICE__UNKNOWN_IP__PER_HOUR", "1"),
            ("PHONE_COURIER__LIMITS__VOICE__UNKNOWN_IP__BURST", "1"),
        ],
    )
    .await;
    // A call with no end-user address spends the unknown bucket.
    let mut anonymous = code_message("+14155550199", 10);
    anonymous.as_object_mut().unwrap().remove("request_headers");
    let r = app.post_json("/v1/voice", &anonymous).await;
    assert_eq!(r.status(), 200);
    let r = app.post_json("/v1/voice", &anonymous).await;
    assert_eq!(
        r.status(),
        200,
        "the same message: answered from the ledger"
    );
    let mut other = code_message("+14155550198", 10);
    other.as_object_mut().unwrap().remove("request_headers");
    let r = app.post_json("/v1/voice", &other).await;
    assert_eq!(r.status(), 429, "the unknown bucket is spent");
    // The SMS came from 203.0.113.7: its fallback call is that user's.
    let r = app.post_json("/v1/sms", &code_message(MOBILE, 10)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(callback(&app, "undelivered", Some("30003")).await, 204);
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [CALLS_PATH, MESSAGES_PATH, CALLS_PATH]);
    assert_eq!(
        form(&got[2])
            .into_iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v),
        Some(MOBILE.to_owned())
    );
}

/// Twilio may post its status callback before its answer to the create
/// request reaches the service (here the answer takes 600 ms, the callback
/// comes at once, as the sandbox's does): the callback waits for the
/// message's record instead of concluding there is none, and the call is
/// placed once.
#[tokio::test]
async fn a_callback_that_overtakes_the_create_answer_still_calls() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": SMS_SID, "status": "queued"}))
                .set_delay(Duration::from_millis(600)),
        )
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"})),
        )
        .mount(&twilio)
        .await;
    let (app, _clock) = app_at_noon(
        twilio,
        &[("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL)],
    )
    .await;
    let app = std::sync::Arc::new(app);
    let sending = {
        let app = app.clone();
        tokio::spawn(async move {
            app.post_json("/v1/sms", &code_message(MOBILE, 10))
                .await
                .status()
                .as_u16()
        })
    };
    // The create request is at Twilio, its answer not yet back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.provider_requests().await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no create request");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(callback(&app, "undelivered", Some("30003")).await, 204);
    assert_eq!(sending.await.unwrap(), 200);
    let got = app.provider_requests().await;
    assert_eq!(paths(&got), [MESSAGES_PATH, CALLS_PATH]);
    assert_eq!(
        form(&got[1]),
        pairs(&[
            ("To", MOBILE),
            ("From", FROM),
            ("Twiml", &spoken_482917()),
            ("StatusCallback", &format!("{PUBLIC_URL}/v1/twilio/status")),
            ("StatusCallbackEvent", "completed"),
        ])
    );
}
