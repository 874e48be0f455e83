//! Abuse controls and exactly-once delivery, over HTTP: for each control,
//! what the caller got back and whether Twilio was called. Time is moved
//! with the service's clock, never slept through.

use std::collections::HashMap;
use std::time::Duration;

use kratos_phone_courier::clock::Clock;
use kratos_phone_courier::config::{Config, Sources};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn status_of(app: &TestApp, body: &Value) -> (u16, Value, Option<String>) {
    let r = app.post_json("/v1/sms", body).await;
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    (status, r.json().await.unwrap(), retry)
}

#[tokio::test]
async fn per_recipient_limit_refuses_then_refills() {
    let (app, clock) = app_at_noon(twilio_accepting().await, &[]).await;
    for code in ["100001", "100002", "100003"] {
        assert_eq!(
            status_of(&app, &login_message("+14155550123", code))
                .await
                .0,
            200
        );
    }
    let (status, body, retry) = status_of(&app, &login_message("+14155550123", "100004")).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
    assert_eq!(body["error"]["limit"], "recipient");
    assert_eq!(
        retry.as_deref(),
        Some("720"),
        "5 per hour: a cell every 12 minutes"
    );
    assert_eq!(app.provider_requests().await.len(), 3);
    clock.advance(Duration::from_secs(720));
    assert_eq!(
        status_of(&app, &login_message("+14155550123", "100005"))
            .await
            .0,
        200
    );
    assert_eq!(app.provider_requests().await.len(), 4);
}

#[tokio::test]
async fn a_trunk_prefix_after_the_calling_code_is_the_same_recipient() {
    // "+44 0 7400..." is how people write "+44 7400..."; libphonenumber reads
    // them as one number, so they share one limit and Twilio gets one form.
    let (app, _clock) = app_at_noon(twilio_accepting().await, &[]).await;
    for code in ["200001", "200002", "200003"] {
        assert_eq!(
            status_of(&app, &login_message("+447400123456", code))
                .await
                .0,
            200
        );
    }
    let (status, body, _) = status_of(&app, &login_message("+4407400123456", "200004")).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
    assert_eq!(body["error"]["limit"], "recipient");
    let sent = app.provider_requests().await;
    assert_eq!(sent.len(), 3);
    // And written with the prefix, it is sent without it.
    let (fresh, _clock) = app_at_noon(twilio_accepting().await, &[]).await;
    assert_eq!(
        status_of(&fresh, &login_message("+4407400123456", "200005"))
            .await
            .0,
        200
    );
    let fields = single_provider_request(&fresh, MESSAGES_PATH).await;
    assert_eq!(fields[0], ("To".to_owned(), "+447400123456".to_owned()));
}

#[tokio::test]
async fn per_ip_limit_counts_distinct_recipients_from_one_end_user() {
    let twilio = twilio_accepting().await;
    let file = write_config("ip", "[limits.sms.ip]\nper_hour = 10\nburst = 2\n");
    let mut env = base_env(&twilio.uri());
    env.remove("PHONE_COURIER__LOG__LEVEL");
    // The file's rate, not the environment's (which would win).
    env.remove("PHONE_COURIER__LIMITS__SMS__IP__PER_HOUR");
    env.remove("PHONE_COURIER__LIMITS__SMS__IP__BURST");
    let config = Config::load(&Sources {
        file: Some(file),
        env,
    })
    .unwrap();
    let app = start_with_clock(
        config,
        twilio,
        Clock::starting_at(Duration::from_secs(NOON)),
    )
    .await;
    // Invalid requests first: they consume nothing.
    for _ in 0..5 {
        assert_eq!(
            status_of(&app, &login_message("+1415555", "200000"))
                .await
                .0,
            422
        );
    }
    assert_eq!(
        status_of(&app, &login_message("+14155550001", "200001"))
            .await
            .0,
        200
    );
    assert_eq!(
        status_of(&app, &login_message("+14155551002", "200002"))
            .await
            .0,
        200
    );
    let (status, body, _) = status_of(&app, &login_message("+14155552003", "200003")).await;
    assert_eq!((status, body["error"]["limit"].as_str()), (429, Some("ip")));
    // Another end user (the address the proxy appended) is not affected,
    // nor is one with no address (the shared unknown_ip bucket).
    let mut other = login_message("+14155553004", "200004");
    other["request_headers"] = json!({"X-Forwarded-For": ["203.0.113.7, 198.51.100.9"]});
    assert_eq!(status_of(&app, &other).await.0, 200);
    let mut none = login_message("+14155554005", "200005");
    none["request_headers"] = json!(null);
    assert_eq!(status_of(&app, &none).await.0, 200);
    assert_eq!(app.provider_requests().await.len(), 4);
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kpc-abuse-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("config.toml");
    std::fs::write(&f, text).unwrap();
    f
}

#[tokio::test]
async fn country_policy_and_premium_numbers_are_refused_before_twilio() {
    let (app, _) = app_at_noon(
        twilio_accepting().await,
        &[
            ("PHONE_COURIER__POLICY__SMS__DENIED_COUNTRIES", "DE, FR"),
            ("PHONE_COURIER__POLICY__VOICE__ALLOWED_COUNTRIES", "US"),
        ],
    )
    .await;
    let (status, body, _) = status_of(&app, &login_message("+4915123456789", "300001")).await;
    assert_eq!((status, error_code(&body)), (422, "recipient_not_allowed"));
    // UK premium rate (09…).
    let (status, body, _) = status_of(&app, &login_message("+449012345678", "300002")).await;
    assert_eq!((status, error_code(&body)), (422, "recipient_not_allowed"));
    app.assert_provider_untouched().await;
    // Voice is allowed to the US only; SMS to GB is fine.
    let r = app
        .post_json("/v1/voice", &login_message("+447400123456", "300003"))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        status_of(&app, &login_message("+447400123456", "300004"))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post_json("/v1/voice", &login_message("+14155550123", "300005"))
            .await
            .status(),
        200
    );
    assert_eq!(app.provider_requests().await.len(), 2);
}

#[tokio::test]
async fn the_daily_budget_ends_at_the_cap_and_returns_at_midnight_utc() {
    let (app, clock) = app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__BUDGET__DAILY_TOTAL", "2")],
    )
    .await;
    // The gauge follows each send, from the counters the reservation
    // itself brought back.
    let ratio = r#"phone_courier_budget_used_ratio{scope="total"}"#;
    assert_eq!(
        status_of(&app, &login_message("+14155550001", "400001"))
            .await
            .0,
        200
    );
    assert!(metrics_text(&app).await.contains(&format!("{ratio} 0.5")));
    assert_eq!(
        status_of(&app, &login_message("+14155551002", "400002"))
            .await
            .0,
        200
    );
    assert!(metrics_text(&app).await.contains(&format!("{ratio} 1.0")));
    let (status, body, retry) = status_of(&app, &login_message("+14155552003", "400003")).await;
    assert_eq!((status, error_code(&body)), (429, "budget_exhausted"));
    assert_eq!(body["error"]["scope"], "total");
    assert_eq!(retry.as_deref(), Some("43200"), "12 hours to midnight UTC");
    assert_eq!(app.provider_requests().await.len(), 2);
    clock.advance(Duration::from_secs(43_200));
    assert_eq!(
        status_of(&app, &login_message("+14155552003", "400003"))
            .await
            .0,
        200
    );
    assert_eq!(app.provider_requests().await.len(), 3);
}

/// `budget.units`: a call weighed at three SMS takes three units of the
/// day's cap; the call that would pass the cap is refused while an SMS
/// still fits, and Twilio gets exactly the messages the caps allowed.
#[tokio::test]
async fn each_channel_takes_its_units_of_the_daily_budget() {
    let (app, _clock) = app_at_noon(
        twilio_accepting().await,
        &[
            ("PHONE_COURIER__BUDGET__DAILY_TOTAL", "5"),
            ("PHONE_COURIER__BUDGET__UNITS__VOICE", "3"),
        ],
    )
    .await;
    let call = login_message("+14155550011", "500001");
    assert_eq!(app.post_json("/v1/voice", &call).await.status(), 200);
    // 3 + 3 > 5: the second call is refused, the same on Kratos's retry.
    let call = login_message("+14155551012", "500002");
    for _ in 0..2 {
        let r = app.post_json("/v1/voice", &call).await;
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (error_code(&body), &body["error"]["scope"]),
            ("budget_exhausted", &json!("total"))
        );
    }
    // Two SMS still fit (4, 5 of 5); the next does not.
    for (to, code) in [("+14155551012", "500003"), ("+14155552013", "500004")] {
        assert_eq!(status_of(&app, &login_message(to, code)).await.0, 200);
    }
    let (status, body, _) = status_of(&app, &login_message("+14155553014", "500005")).await;
    assert_eq!((status, error_code(&body)), (429, "budget_exhausted"));
    let sent: Vec<(String, String)> = app
        .provider_requests()
        .await
        .iter()
        .map(|r| {
            let kind = match r.url.path().ends_with("/Calls.json") {
                true => "call",
                false => "sms",
            };
            let to = form(r).into_iter().find(|(k, _)| k == "To").unwrap().1;
            (kind.to_owned(), to)
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("call".to_owned(), "+14155550011".to_owned()),
            ("sms".to_owned(), "+14155551012".to_owned()),
            ("sms".to_owned(), "+14155552013".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_repeat_within_the_window_is_answered_with_the_original_sid() {
    let (app, clock) = app_at_noon(twilio_accepting().await, &[]).await;
    let m = fixture_json("login");
    let (status, first, _) = status_of(&app, &m).await;
    assert_eq!(status, 200);
    assert!(first.get("duplicate").is_none());
    for _ in 0..5 {
        // Kratos's retries: the same JSON again.
        let (status, again, _) = status_of(&app, &m).await;
        assert_eq!(status, 200);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["sid"], first["sid"]);
    }
    assert_eq!(app.provider_requests().await.len(), 1);
    clock.advance(Duration::from_secs(600));
    let (_, late, _) = status_of(&app, &m).await;
    assert!(
        late.get("duplicate").is_none(),
        "after the window it is a new send"
    );
    assert_eq!(app.provider_requests().await.len(), 2);
}

#[tokio::test]
async fn a_hundred_concurrent_copies_make_one_twilio_request() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&twilio)
        .await;
    let (app, _) = app_at_noon(twilio, &[]).await;
    let body = fixture("login");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = app.client.clone();
        let url = app.url("/v1/sms");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut duplicates = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["sid"], "SM0123456789abcdef0123456789abcdef");
        if body["duplicate"] == true {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 99);
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn a_failed_send_may_be_retried() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"})),
        )
        .mount(&twilio)
        .await;
    let (app, _) = app_at_noon(twilio, &[]).await;
    let m = fixture_json("login");
    assert_eq!(status_of(&app, &m).await.0, 503);
    let (status, body, _) = status_of(&app, &m).await;
    assert_eq!(status, 200);
    assert!(body.get("duplicate").is_none());
    assert_eq!(app.provider_requests().await.len(), 2);
}

#[tokio::test]
async fn a_permanently_unreachable_recipient_is_not_tried_again() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"code": 21614, "message": "not a mobile number", "status": 400}),
            ),
        )
        .mount(&twilio)
        .await;
    // The list itself, without the call that 21614 would bring
    // (tests/api/fallback.rs).
    let (app, clock) = app_at_noon(twilio, &[("PHONE_COURIER__FALLBACK__VOICE_ON", "")]).await;
    let m = fixture_json("login");
    for _ in 0..6 {
        let (status, body, _) = status_of(&app, &m).await;
        assert_eq!((status, error_code(&body)), (422, "recipient_unreachable"));
        assert_eq!(body["error"]["provider_code"], 21614);
    }
    assert_eq!(
        app.provider_requests().await.len(),
        1,
        "Kratos's retries do not reach Twilio"
    );
    // A call may still reach a landline.
    app.post("/v1/voice", &fixture("login")).await;
    assert_eq!(app.provider_requests().await.len(), 2);
    clock.advance(Duration::from_secs(600));
    status_of(&app, &m).await;
    assert_eq!(app.provider_requests().await.len(), 3);
}

#[tokio::test]
async fn test_numbers_bypass_every_limit_and_every_send() {
    let (app, _) = app_at_noon(
        twilio_accepting().await,
        &[(
            "PHONE_COURIER__TEST_NUMBERS__NUMBERS",
            "+15555550100,+15555550101",
        )],
    )
    .await;
    let mut sids = HashMap::new();
    for i in 0..10 {
        let (status, body, _) =
            status_of(&app, &login_message("+15555550100", &format!("5000{i:02}"))).await;
        assert_eq!(status, 200);
        assert_eq!(body["test"], true);
        assert!(body["sid"].as_str().unwrap().starts_with("SM"));
        sids.insert(body["sid"].as_str().unwrap().to_owned(), i);
    }
    assert_eq!(sids.len(), 10);
    app.assert_provider_untouched().await;
    let listed = app
        .client
        .get(app.url("/v1/test-messages"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["messages"][0]["to"], "+15555550100");
    assert_eq!(listed["messages"][0]["code"], "500009");
    assert_eq!(listed["messages"][0]["body"], "Your login code is: 500009");
    let anonymous = app
        .client
        .get(app.url("/v1/test-messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
