//! Metrics, signed delivery-status callbacks (end to end with the
//! sandbox), and readiness behind the credential check.

use std::time::{Duration, Instant};

use kratos_phone_courier::config::{Config, Sources};
use kratos_phone_courier::http::app::App;
use serde_json::json;
use tokio::net::TcpListener;
use twilio_sandbox::{Sandbox, SandboxConfig};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn metrics_count_outcomes_with_bounded_labels_and_no_numbers() {
    let app = spawn_app().await;
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "on the API listener, /metrics is behind the API's auth"
    );
    app.post("/v1/sms", &fixture("login")).await;
    app.post("/v1/sms", &fixture("login")).await;
    app.post_json("/v1/sms", &sms_message("+1415555")).await;
    let text = metrics_text(&app).await;
    for line in [
        r#"phone_courier_requests_total{endpoint="/v1/sms",channel="sms",template_type="login_code_valid",outcome="accepted",reason="none"} 1"#,
        r#"phone_courier_requests_total{endpoint="/v1/sms",channel="sms",template_type="login_code_valid",outcome="duplicate",reason="none"} 1"#,
        r#"phone_courier_requests_total{endpoint="/v1/sms",channel="sms",template_type="login_code_valid",outcome="rejected",reason="invalid_recipient"} 1"#,
        r#"phone_courier_sends_total{channel="sms",country_code="1"} 1"#,
        r#"phone_courier_provider_request_duration_seconds_count{provider="twilio",channel="sms"} 1"#,
        "phone_courier_in_flight_requests 0",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    for secret in ["4155550123", "482917", "Your login"] {
        assert!(!text.contains(secret));
    }
}

#[tokio::test]
async fn provider_errors_and_rate_limits_are_counted() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"code": 21612, "status": 400})),
        )
        .mount(&twilio)
        .await;
    let app = spawn_app_against(twilio, |_| {}).await;
    for _ in 0..3 {
        app.post("/v1/sms", &fixture("login")).await;
    }
    let text = metrics_text(&app).await;
    // The first reaches Twilio; the retries are answered from memory.
    assert!(
        text.contains(r#"phone_courier_provider_errors_total{code="21612",class="recipient"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"phone_courier_requests_total{endpoint="/v1/sms",channel="sms",template_type="login_code_valid",outcome="provider_error",reason="recipient_unreachable"} 3"#), "{text}");

    let app = spawn_app().await;
    for code in ["111111", "222222", "333333", "444444"] {
        let mut m = fixture_json("login");
        m["body"] = json!(format!("Your login code is: {code}"));
        app.post_json("/v1/sms", &m).await;
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"phone_courier_rate_limited_total{channel="sms",limiter="recipient"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"outcome="rejected",reason="rate_limited"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_separate_metrics_listener_needs_no_auth() {
    let metrics = std::sync::Arc::new(kratos_phone_courier::telemetry::metrics::Metrics::new());
    metrics.sent("voice", 44);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kratos_phone_courier::http::server::run_metrics(
        listener,
        metrics,
        async {
            let _ = stopped.await;
        },
    ));
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(r#"phone_courier_sends_total{channel="voice",country_code="44"} 1"#));
    let r = reqwest::get(format!("http://{addr}/v1/sms")).await.unwrap();
    assert_eq!(r.status(), 404);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The service against the real sandbox, with status callbacks pointing
/// back at the service.
pub(crate) async fn service_with_sandbox() -> (String, Sandbox, tokio::task::JoinHandle<()>) {
    service_with_sandbox_and(|_, _| {}).await
}

/// As [`service_with_sandbox`], with the environment changed by `tweak`
/// (given the sandbox's base URL).
pub(crate) async fn service_with_sandbox_and(
    tweak: impl FnOnce(&mut std::collections::HashMap<String, String>, &str),
) -> (String, Sandbox, tokio::task::JoinHandle<()>) {
    service_with_sandbox_on(kratos_phone_courier::clock::Clock::system(), tweak).await
}

/// As [`service_with_sandbox_and`], on a clock the test moves.
pub(crate) async fn service_with_sandbox_on(
    clock: kratos_phone_courier::clock::Clock,
    tweak: impl FnOnce(&mut std::collections::HashMap<String, String>, &str),
) -> (String, Sandbox, tokio::task::JoinHandle<()>) {
    let sandbox = Sandbox::new(SandboxConfig::default());
    let sandbox_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_addr = sandbox_listener.local_addr().unwrap();
    tokio::spawn({
        let sandbox = sandbox.clone();
        async move {
            sandbox
                .serve(sandbox_listener, std::future::pending())
                .await
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut env = base_env(&format!("http://{sandbox_addr}"));
    let cfg = SandboxConfig::default();
    env.insert(
        "PHONE_COURIER__TWILIO__ACCOUNT_SID".into(),
        cfg.account_sid.clone(),
    );
    env.insert(
        "PHONE_COURIER__TWILIO__AUTH_TOKEN".into(),
        cfg.auth_token.clone(),
    );
    env.insert(
        "PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL".into(),
        format!("http://{addr}"),
    );
    tweak(&mut env, &format!("http://{sandbox_addr}"));
    let config = Config::load(&Sources { file: None, env }).unwrap();
    let app = std::sync::Arc::new(App::with_clock(config, clock).unwrap());
    let server = tokio::spawn(async move {
        kratos_phone_courier::http::server::run(listener, app, std::future::pending())
            .await
            .unwrap();
    });
    (format!("http://{addr}"), sandbox, server)
}

#[tokio::test]
async fn delivery_statuses_flow_back_signed_from_the_sandbox() {
    let (base, sandbox, _server) = service_with_sandbox().await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Content-Type", "application/json")
        .body(fixture("login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The request told Twilio where to report.
    let sent = &sandbox.requests()[0];
    assert!(sent.form.contains(&(
        "StatusCallback".to_owned(),
        format!("{base}/v1/twilio/status")
    )));
    // sent, then delivered: wait (bounded) for both to be counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(r#"phone_courier_delivery_status_total{channel="sms",status="delivered",error_code="none"} 1"#)
            && text.contains(r#"phone_courier_delivery_status_total{channel="sms",status="sent",error_code="none"} 1"#)
        {
            break;
        }
        assert!(Instant::now() < deadline, "callbacks not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unsigned_or_missigned_callbacks_are_refused() {
    let (base, _sandbox, _server) = service_with_sandbox().await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/twilio/status");
    let params = vec![
        (
            "MessageSid".to_owned(),
            "SM0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("MessageStatus".to_owned(), "delivered".to_owned()),
        ("To".to_owned(), "+14155550123".to_owned()),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let token = SandboxConfig::default().auth_token;
    let good = kratos_phone_courier::provider::signature::compute(&token, &url, &params);
    let bad = kratos_phone_courier::provider::signature::compute("another-token", &url, &params);
    for (signature, expected) in [
        (None, 403),
        (Some(bad.as_str()), 403),
        (Some("###"), 403),
        (Some(good.as_str()), 204),
    ] {
        let mut r = client
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(s) = signature {
            r = r.header("X-Twilio-Signature", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), expected, "{signature:?}");
        if expected == 403 {
            let (_, e) = error_of(r).await;
            assert_eq!(error_code(&e), "invalid_signature");
        }
    }
    // A tampered parameter breaks the signature.
    let tampered = body.replace("delivered", "failed");
    let r = client
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", &good)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // JSON where Twilio sends a form: 415, naming the form type.
    let r = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Twilio-Signature", &good)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let (_, e) = error_of(r).await;
    assert_eq!(error_code(&e), "unsupported_media_type");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("application/x-www-form-urlencoded"),
        "{e}"
    );
}

#[tokio::test]
async fn without_public_url_there_is_no_callback_endpoint() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/twilio/status"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM1&MessageStatus=delivered")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // And no StatusCallback is sent.
    app.post("/v1/sms", &fixture("login")).await;
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    assert!(fields.iter().all(|(k, _)| k != "StatusCallback"));
}

#[tokio::test]
async fn not_ready_until_twilio_accepts_the_credentials() {
    let twilio = twilio_accepting().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}\.json$"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"code": 20003, "status": 401})),
        )
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}\.json$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"sid": ACCOUNT_SID, "status": "active"})),
        )
        .mount(&twilio)
        .await;
    let app = spawn_app_against(twilio, |env| {
        env.insert(
            "PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START".into(),
            "true".into(),
        );
    })
    .await;
    // First answer: 401 → not ready, with the reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_not_ready = false;
    loop {
        let r = app
            .client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "not_ready");
            if !saw_not_ready {
                let text = metrics_text(&app).await;
                assert!(text.contains("\nphone_courier_ready 0\n"), "{text}");
            }
            saw_not_ready = true;
        } else if r.status() == 200 {
            let text = metrics_text(&app).await;
            assert!(text.contains("\nphone_courier_ready 1\n"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_not_ready, "readiness waited for the credential check");
    let checks = app
        .provider_requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(checks, 2, "retried after the 401, then stopped");
}
