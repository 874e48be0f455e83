//! WhatsApp as a channel (`[whatsapp]`), with SMS behind it
//! (`delivery::fallback`): the exact form Twilio receives, what Kratos gets
//! back on each of its attempts, and the SMS that stands in when WhatsApp
//! refuses the message or reports it undelivered.

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// São Paulo mobile: Brazil is in `whatsapp.countries` below.
pub(crate) const BRAZIL: &str = "+5511987654321";
pub(crate) const US_MOBILE: &str = "+14155550123";
pub(crate) const WA_FROM: &str = "+14155550100";
const HX_DEFAULT: &str = "HX0123456789abcdef0123456789abcdef";
const HX_PT: &str = "HXbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// The sid Twilio gives the WhatsApp message, and the SMS's.
pub(crate) const WA_SID: &str = "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub(crate) const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";
pub(crate) const PUBLIC_URL: &str = "http://courier.example.test";

pub(crate) fn whatsapp_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PHONE_COURIER__WHATSAPP__ENABLED", "true"),
        ("PHONE_COURIER__WHATSAPP__FROM", WA_FROM),
        ("PHONE_COURIER__WHATSAPP__CONTENT_SID", HX_DEFAULT),
        ("PHONE_COURIER__WHATSAPP__CONTENT_SIDS__PT-BR", HX_PT),
        ("PHONE_COURIER__WHATSAPP__COUNTRIES", "BR"),
    ]
}

fn code_message(to: &str) -> Value {
    json!({
        "recipient": to,
        "body": "Your login code is: 482917",
        "template_type": "login_code_valid",
        "template_data": {"login_code": "482917", "expires_in_minutes": 10},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

/// Twilio answering the WhatsApp create with `wa` (status, body) and
/// accepting every SMS.
pub(crate) async fn twilio(wa: (u16, Value)) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .and(body_string_contains("To=whatsapp%3A"))
        .respond_with(ResponseTemplate::new(wa.0).set_body_json(wa.1))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": SMS_SID, "status": "queued"})),
        )
        .mount(&server)
        .await;
    server
}

pub(crate) async fn twilio_accepting_whatsapp() -> MockServer {
    twilio((201, json!({"sid": WA_SID, "status": "queued"}))).await
}

pub(crate) async fn twilio_not_on_whatsapp() -> MockServer {
    twilio((
        400,
        json!({"code": 63003, "message": "Channel could not find To address", "status": 400}),
    ))
    .await
}

/// The WhatsApp form Twilio must receive for code 482917 to `to`.
fn whatsapp_form(to: &str, content_sid: &str) -> Vec<(String, String)> {
    pairs(&[
        ("To", &format!("whatsapp:{to}")),
        ("From", &format!("whatsapp:{WA_FROM}")),
        ("ContentSid", content_sid),
        ("ContentVariables", r#"{"1":"482917"}"#),
    ])
}

/// The SMS form of the same code (10 minutes of validity).
fn sms_form(to: &str) -> Vec<(String, String)> {
    pairs(&[
        ("To", to),
        ("From", FROM),
        ("Body", "Your login code is: 482917"),
        ("ValidityPeriod", "600"),
    ])
}

/// Kratos's first attempt and its five retries, each answered.
pub(crate) async fn six_attempts(app: &TestApp, message: &Value, expected: Value) {
    for attempt in 0..6 {
        let r = app.post_json("/v1/sms", message).await;
        assert_eq!(r.status(), 200, "attempt {attempt}");
        let mut expected = expected.clone();
        if attempt > 0 {
            expected["duplicate"] = json!(true);
        }
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            expected,
            "attempt {attempt}"
        );
    }
}

#[tokio::test]
async fn a_code_to_a_whatsapp_country_goes_as_the_template_with_the_code_and_no_body() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &whatsapp_env()).await;
    let mut message = code_message(BRAZIL);
    message["request_headers"]["Accept-Language"] = json!(["pt-BR,pt;q=0.9"]);
    six_attempts(
        &app,
        &message,
        json!({"status": "accepted", "channel": "whatsapp", "sid": WA_SID}),
    )
    .await;
    // One request for the six attempts: the template of the user's
    // language, the code as variable 1, no Body.
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    assert_eq!(fields, whatsapp_form(BRAZIL, HX_PT));
    assert!(metrics_text(&app)
        .await
        .contains(r#"phone_courier_sends_total{channel="whatsapp",country_code="55"} 1"#));
}

#[tokio::test]
async fn whatsapp_is_asked_for_like_voice_and_notifications_go_by_sms() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &whatsapp_env()).await;
    // A flow's transient payload asks for it (the US is not a WhatsApp
    // country): the default template.
    let mut asked = code_message(US_MOBILE);
    asked["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "whatsapp"}});
    let r = app.post_json("/v1/sms", &asked).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    // The identity's trait says sms: SMS, even to a WhatsApp country.
    let mut sms = login_message(BRAZIL, "111222");
    sms["template_data"]["identity"] =
        json!({"id": "6f1c2a1e-0000-4000-8000-000000000001", "traits": {"phone_channel": "sms"}});
    let r = app.post_json("/v1/sms", &sms).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    // A notification (no code) goes by SMS.
    let notice = json!({
        "recipient": BRAZIL,
        "body": "Your email address was changed.",
        "template_type": "verifiable_address_changed",
        "template_data": {},
    });
    let r = app.post_json("/v1/sms", &notice).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 3);
    assert_eq!(form(&got[0]), whatsapp_form(US_MOBILE, HX_DEFAULT));
    assert_eq!(form(&got[1])[0], ("To".to_owned(), BRAZIL.to_owned()));
    assert!(form(&got[1]).contains(&("Body".to_owned(), "Your login code is: 111222".to_owned())));
    assert!(form(&got[2]).contains(&(
        "Body".to_owned(),
        "Your email address was changed.".to_owned()
    )));
}

#[tokio::test]
async fn with_whatsapp_off_the_same_code_is_an_sms() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &[]).await;
    let mut asked = code_message(BRAZIL);
    asked["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "whatsapp"}});
    let r = app.post_json("/v1/sms", &asked).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    assert_eq!(
        single_provider_request(&app, MESSAGES_PATH).await,
        sms_form(BRAZIL)
    );
}

#[tokio::test]
async fn a_number_not_on_whatsapp_gets_the_sms_in_the_same_request_once() {
    let (app, _clock) = app_at_noon(twilio_not_on_whatsapp().await, &whatsapp_env()).await;
    six_attempts(
        &app,
        &code_message(BRAZIL),
        json!({"status": "accepted", "channel": "sms", "fallback": true, "sid": SMS_SID}),
    )
    .await;
    // The WhatsApp create (63003), then one SMS; the retries send nothing.
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 2);
    assert_eq!(form(&got[0]), whatsapp_form(BRAZIL, HX_DEFAULT));
    assert_eq!(form(&got[1]), sms_form(BRAZIL));
    // Remembered: the next code to the number goes by SMS at once.
    let r = app
        .post_json("/v1/sms", &login_message(BRAZIL, "333444"))
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "sms", "fallback": true, "sid": SMS_SID})
    );
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 3);
    assert_eq!(form(&got[2])[0], ("To".to_owned(), BRAZIL.to_owned()));
    assert!(form(&got[2]).contains(&("Body".to_owned(), "Your login code is: 333444".to_owned())));
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_refused"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_whatsapp_configuration_error_sends_no_sms() {
    let (app, _clock) = app_at_noon(
        twilio((
            400,
            json!({"code": 63007, "message": "Twilio could not find a Channel with the specified From address", "status": 400}),
        ))
        .await,
        &whatsapp_env(),
    )
    .await;
    let (status, body) = error_of(app.post_json("/v1/sms", &code_message(BRAZIL)).await).await;
    assert_eq!((status, error_code(&body)), (502, "provider_configuration"));
    assert_eq!(
        single_provider_request(&app, MESSAGES_PATH).await,
        whatsapp_form(BRAZIL, HX_DEFAULT)
    );
}

#[tokio::test]
async fn whatsapp_has_its_own_limits() {
    let mut env = whatsapp_env();
    env.push(("PHONE_COURIER__LIMITS__WHATSAPP__RECIPIENT__PER_HOUR", "1"));
    env.push(("PHONE_COURIER__LIMITS__WHATSAPP__RECIPIENT__BURST", "1"));
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &env).await;
    let r = app
        .post_json("/v1/sms", &login_message(BRAZIL, "111111"))
        .await;
    assert_eq!(r.status(), 200);
    let (status, body) = error_of(
        app.post_json("/v1/sms", &login_message(BRAZIL, "222222"))
            .await,
    )
    .await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.whatsapp.recipient"),
        "{body}"
    );
    // The SMS's own limiter is untouched.
    let mut sms = login_message(BRAZIL, "333333");
    sms["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "sms"}});
    assert_eq!(app.post_json("/v1/sms", &sms).await.status(), 200);
    assert_eq!(app.provider_requests().await.len(), 2);
}

/// Post a status callback for the WhatsApp message, signed as Twilio would.
async fn callback(app: &TestApp, status: &str, error_code: Option<&str>) -> u16 {
    whatsapp_status(app, WA_SID, BRAZIL, status, error_code).await
}

/// A signed status callback for WhatsApp message `sid` to `to`.
pub(crate) async fn whatsapp_status(
    app: &TestApp,
    sid: &str,
    to: &str,
    status: &str,
    error_code: Option<&str>,
) -> u16 {
    let signed_url = format!("{PUBLIC_URL}/v1/twilio/status");
    let mut params = vec![
        ("MessageSid".to_owned(), sid.to_owned()),
        ("MessageStatus".to_owned(), status.to_owned()),
        ("To".to_owned(), format!("whatsapp:{to}")),
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

async fn app_with_callbacks() -> (TestApp, kratos_phone_courier::clock::Clock) {
    let mut env = whatsapp_env();
    env.push(("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL));
    app_at_noon(twilio_accepting_whatsapp().await, &env).await
}

#[tokio::test]
async fn an_undelivered_whatsapp_message_is_sent_by_sms_once() {
    let (app, _clock) = app_with_callbacks().await;
    six_attempts(
        &app,
        &code_message(BRAZIL),
        json!({"status": "accepted", "channel": "whatsapp", "sid": WA_SID}),
    )
    .await;
    let status_url = format!("{PUBLIC_URL}/v1/twilio/status");
    let mut expected = whatsapp_form(BRAZIL, HX_DEFAULT);
    expected.push(("StatusCallback".to_owned(), status_url.clone()));
    assert_eq!(single_provider_request(&app, MESSAGES_PATH).await, expected);
    // A `sent` report, and errors an SMS does not get around (63016: the
    // operator's template), send nothing.
    assert_eq!(callback(&app, "sent", None).await, 204);
    assert_eq!(callback(&app, "failed", Some("63016")).await, 204);
    assert_eq!(app.provider_requests().await.len(), 1);
    // 63003, twice (Twilio retries webhooks): one SMS with the same text.
    assert_eq!(callback(&app, "failed", Some("63003")).await, 204);
    assert_eq!(callback(&app, "undelivered", Some("63003")).await, 204);
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 2);
    let mut sms = sms_form(BRAZIL);
    sms.push(("StatusCallback".to_owned(), status_url));
    assert_eq!(form(&got[1]), sms);
    // Kratos's retry of the message is still answered from the ledger.
    let r = app.post_json("/v1/sms", &code_message(BRAZIL)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // 63003 is remembered: the next code goes by SMS at once.
    let r = app
        .post_json("/v1/sms", &login_message(BRAZIL, "555666"))
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    assert_eq!(app.provider_requests().await.len(), 3);
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_undelivered"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"phone_courier_delivery_status_total{channel="whatsapp",status="failed",error_code="63003"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn an_undelivered_whatsapp_message_whose_code_expired_gets_no_sms() {
    let (app, clock) = app_with_callbacks().await;
    assert_eq!(
        app.post_json("/v1/sms", &code_message(BRAZIL))
            .await
            .status(),
        200
    );
    clock.advance(std::time::Duration::from_secs(10 * 60));
    assert_eq!(callback(&app, "undelivered", Some("63024")).await, 204);
    assert_eq!(app.provider_requests().await.len(), 1);
}

/// End to end with the real sandbox (as `serve --dev` runs it): its magic
/// number +5511987650063 takes the WhatsApp message, then reports it
/// undelivered (63003) in a callback signed with the auth token, and the
/// service sends the code by SMS, once.
#[tokio::test]
async fn the_sandboxs_not_on_whatsapp_number_gets_the_sms() {
    const MAGIC: &str = "+5511987650063";
    let sent = sent_through_the_sandbox(whatsapp_env(), &code_message(MAGIC), 2).await;
    let field = |i: usize, k: &str| form_field(&sent[i], k);
    assert_eq!(field(0, "To").as_deref(), Some("whatsapp:+5511987650063"));
    assert_eq!(
        field(0, "ContentVariables").as_deref(),
        Some(r#"{"1":"482917"}"#)
    );
    assert_eq!(field(1, "To").as_deref(), Some(MAGIC));
    assert_eq!(
        field(1, "Body").as_deref(),
        Some("Your login code is: 482917")
    );
    assert_eq!(sent.len(), 2);
}

/// Posts `message` to `/v1/sms` of a service in front of the real sandbox
/// (as `serve --dev` runs it, with `env` on top), checks that Kratos was
/// told 200 and `"channel":"whatsapp"`, and returns the forms of the
/// Messages requests the sandbox took once it has `n` (callbacks and the
/// SMS they send come a moment later).
pub(crate) async fn sent_through_the_sandbox(
    env: Vec<(&'static str, &'static str)>,
    message: &Value,
    n: usize,
) -> Vec<Vec<(String, String)>> {
    let (base, sandbox, _server) = crate::observability::service_with_sandbox_and(|e, _| {
        for (k, v) in env {
            e.insert(k.to_owned(), v.to_owned());
        }
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(message)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    sandbox_messages(&sandbox, n)
        .await
        .into_iter()
        .map(|r| r.form)
        .collect()
}

/// The value of `key` in a recorded form.
pub(crate) fn form_field(form: &[(String, String)], key: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Wait (bounded) until the sandbox has received `n` Messages requests,
/// and return them all.
pub(crate) async fn sandbox_messages(
    sandbox: &twilio_sandbox::Sandbox,
    n: usize,
) -> Vec<twilio_sandbox::RecordedRequest> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sent: Vec<_> = sandbox
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/Messages.json"))
            .collect();
        if sent.len() >= n {
            return sent;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n}: {sent:?}",
            sent.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Wait (bounded) until Twilio has received `n` requests; the SMS a timer
/// or a callback sends is sent in a task of its own.
pub(crate) async fn wait_for_requests(app: &TestApp, n: usize) -> Vec<wiremock::Request> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = app.provider_requests().await;
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} request(s), waited for {n}",
            got.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// No `delivered` receipt within `whatsapp.fallback_after_ms` (60 s by
/// default): the SMS goes, once, when the service's clock passes it; a
/// receipt or a failure report that comes later sends nothing more, and
/// Kratos's retries are answered from the ledger.
#[tokio::test]
async fn a_whatsapp_message_without_a_receipt_in_time_is_sent_by_sms_once() {
    let (app, clock) = app_with_callbacks().await;
    six_attempts(
        &app,
        &code_message(BRAZIL),
        json!({"status": "accepted", "channel": "whatsapp", "sid": WA_SID}),
    )
    .await;
    // `sent` is not a receipt.
    assert_eq!(callback(&app, "sent", None).await, 204);
    clock.advance(std::time::Duration::from_secs(60));
    let got = wait_for_requests(&app, 2).await;
    let mut sms = sms_form(BRAZIL);
    sms.push((
        "StatusCallback".to_owned(),
        format!("{PUBLIC_URL}/v1/twilio/status"),
    ));
    assert_eq!(form(&got[1]), sms);
    // Late news sends nothing more: the record is gone.
    assert_eq!(callback(&app, "delivered", None).await, 204);
    assert_eq!(callback(&app, "undelivered", Some("63024")).await, 204);
    let r = app.post_json("/v1/sms", &code_message(BRAZIL)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(app.provider_requests().await.len(), 2);
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_no_receipt"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_undelivered"} 0"#),
        "{m}"
    );
}

/// Twilio giving each WhatsApp message its own sid (`SMwa…0`, `SMwa…1`),
/// and accepting every SMS.
async fn twilio_numbering_whatsapp() -> MockServer {
    struct Numbered(std::sync::atomic::AtomicUsize);
    impl wiremock::Respond for Numbered {
        fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": format!("SMwa{n:030}"), "status": "queued"}))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .and(body_string_contains("To=whatsapp%3A"))
        .respond_with(Numbered(std::sync::atomic::AtomicUsize::new(0)))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": SMS_SID, "status": "queued"})),
        )
        .mount(&server)
        .await;
    server
}

/// A receipt (`delivered` or `read`, on any replica) takes the SMS record:
/// of two messages whose timers fire together, only the one without a
/// receipt gets its SMS. With `fallback_after_ms = 0`, nobody does.
#[tokio::test]
async fn a_receipt_in_time_stops_the_sms() {
    const OTHER: &str = "+5511987654322";
    for (after, expected_sms) in [("60000", vec![OTHER]), ("0", vec![])] {
        let mut env = whatsapp_env();
        env.push(("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL));
        env.push(("PHONE_COURIER__WHATSAPP__FALLBACK_AFTER_MS", after));
        let (app, clock) = app_at_noon(twilio_numbering_whatsapp().await, &env).await;
        for to in [BRAZIL, OTHER] {
            let r = app.post_json("/v1/sms", &code_message(to)).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
        }
        // The first message's receipts; the second gets none.
        let first = format!("SMwa{:030}", 0);
        for status in ["delivered", "read"] {
            assert_eq!(
                whatsapp_status(&app, &first, BRAZIL, status, None).await,
                204
            );
        }
        clock.advance(std::time::Duration::from_secs(61));
        // With the timer on, wait for the second message's SMS: both
        // timers fired at the same moment, and the first one's found
        // nothing (its store read is done long before the SMS is sent).
        let got = wait_for_requests(&app, 2 + expected_sms.len()).await;
        let sms_to: Vec<String> = got[2..]
            .iter()
            .map(|r| {
                form(r)
                    .into_iter()
                    .find(|(k, _)| k == "To")
                    .map(|(_, v)| v)
                    .unwrap()
            })
            .collect();
        assert_eq!(sms_to, expected_sms, "fallback_after_ms = {after}");
        // Kratos's retry of the first: its WhatsApp message, as before.
        let r = app.post_json("/v1/sms", &code_message(BRAZIL)).await;
        let body = r.json::<Value>().await.unwrap();
        assert_eq!(
            (body["channel"].as_str(), body["duplicate"].as_bool()),
            (Some("whatsapp"), Some(true))
        );
    }
}

/// End to end with the sandbox: its magic number +5511987650064 reports
/// the WhatsApp message `sent` and never `delivered`; when the service's
/// clock passes `whatsapp.fallback_after_ms`, the code goes by SMS.
#[tokio::test]
async fn the_sandboxs_no_receipt_number_gets_the_sms_after_the_wait() {
    const MAGIC: &str = "+5511987650064";
    let clock = kratos_phone_courier::clock::Clock::system();
    let (base, sandbox, _server) =
        crate::observability::service_with_sandbox_on(clock.clone(), |env, _| {
            for (k, v) in whatsapp_env() {
                env.insert(k.to_owned(), v.to_owned());
            }
        })
        .await;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(&code_message(MAGIC))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    assert_eq!(sandbox_messages(&sandbox, 1).await.len(), 1);
    clock.advance(std::time::Duration::from_secs(60));
    let sent = sandbox_messages(&sandbox, 2).await;
    let field = |k: &str| {
        sent[1]
            .form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("To").as_deref(), Some(MAGIC));
    assert_eq!(field("Body").as_deref(), Some("Your login code is: 482917"));
    assert_eq!(sent.len(), 2);
}

/// Two Twilio accounts: the first sends no WhatsApp (`whatsapp = false`),
/// the second sends it from its own sender (`whatsapp_from`). A WhatsApp
/// code goes to the second, from its sender; an SMS still goes to the
/// first.
#[tokio::test]
async fn whatsapp_goes_only_through_the_providers_that_send_it_from_their_own_sender() {
    use twilio_sandbox::SandboxConfig;
    const OWN: &str = "+14155550199";
    let sandbox = || SandboxConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.into(),
        ..SandboxConfig::default()
    };
    let (first, first_url) = crate::failover::serve(sandbox()).await;
    let (second, second_url) = crate::failover::serve(sandbox()).await;
    let toml = format!(
        r#"
[[providers]]
name = "first"
kind = "twilio"
base_url = "{first_url}"
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from = "{FROM}"
verify_credentials_on_start = false
whatsapp = false

[[providers]]
name = "second"
kind = "twilio"
base_url = "{second_url}"
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from = "{FROM}"
verify_credentials_on_start = false
whatsapp_from = "{OWN}"

[whatsapp]
enabled = true
from = "{WA_FROM}"
content_sid = "{HX_DEFAULT}"
countries = ["BR"]
"#
    );
    let config = config_from_toml("wa-providers", &toml);
    let app = start(config, MockServer::start().await).await;
    let r = app.post_json("/v1/sms", &code_message(BRAZIL)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    let r = app.post_json("/v1/sms", &code_message(US_MOBILE)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    let first_got = crate::failover::creates(&first);
    let second_got = crate::failover::creates(&second);
    assert_eq!(second_got.len(), 1, "{second_got:?}");
    assert_eq!(
        second_got[0],
        pairs(&[
            ("To", &format!("whatsapp:{BRAZIL}")),
            ("From", &format!("whatsapp:{OWN}")),
            ("ContentSid", HX_DEFAULT),
            ("ContentVariables", r#"{"1":"482917"}"#),
        ])
    );
    assert_eq!(first_got.len(), 1, "{first_got:?}");
    assert_eq!(
        first_got[0],
        pairs(&[
            ("To", US_MOBILE),
            ("From", FROM),
            ("Body", "Your login code is: 482917"),
            ("ValidityPeriod", "600"),
        ])
    );
}

/// The fraud guard counts a WhatsApp code as a code sent, and Kratos's
/// confirmation of it (`POST /v1/kratos/confirmed`) as confirmed: WhatsApp
/// codes weigh in a country's conversion ratio as SMS codes do.
#[tokio::test]
async fn a_whatsapp_code_and_its_confirmation_are_counted_by_the_fraud_guard() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &whatsapp_env()).await;
    let r = app.post_json("/v1/sms", &code_message(BRAZIL)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    assert_eq!(
        single_provider_request(&app, MESSAGES_PATH).await,
        whatsapp_form(BRAZIL, HX_DEFAULT)
    );
    let r = app
        .post_json(
            "/v1/kratos/confirmed",
            &json!({"recipients": [BRAZIL], "flow": "login"}),
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "recorded", "counted": 1})
    );
    let m = metrics_text(&app).await;
    let value = |name: &str| {
        let series = format!("{name}{{country_code=\"55\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        value("phone_courier_fraud_codes_sent_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value("phone_courier_fraud_codes_confirmed_total"),
        Some(1.0),
        "{m}"
    );
}
