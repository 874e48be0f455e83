//! How each provider answer is passed on to Kratos.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn twilio_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn twilio_error(status: u16, code: u32) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": "error",
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    }))
}

#[tokio::test]
async fn twilio_errors_map_to_documented_answers() {
    let cases: Vec<(u16, u32, u16, &str)> = vec![
        (400, 21211, 422, "recipient_unreachable"),
        (400, 21612, 422, "recipient_unreachable"),
        (400, 21614, 422, "recipient_unreachable"),
        (400, 21610, 422, "recipient_unreachable"),
        (400, 21408, 422, "recipient_unreachable"),
        (400, 21268, 422, "recipient_unreachable"),
        (401, 20003, 502, "provider_configuration"),
        (404, 20404, 502, "provider_configuration"),
        (400, 21212, 502, "provider_configuration"),
        (400, 21606, 502, "provider_configuration"),
        (429, 20429, 503, "provider_unavailable"),
        (400, 21611, 503, "provider_unavailable"),
        (500, 20500, 503, "provider_unavailable"),
    ];
    for (twilio_status, code, status, error) in cases {
        let app = spawn_app_against(
            twilio_answering(twilio_error(twilio_status, code)).await,
            // 21614 without the fallback call (tests/api/fallback.rs).
            |env| {
                env.insert("PHONE_COURIER__FALLBACK__VOICE_ON".into(), "".into());
            },
        )
        .await;
        let response = app.post("/v1/sms", &fixture("login")).await;
        let retry_after = response.headers().get("retry-after").cloned();
        let (got, body) = error_of(response).await;
        assert_eq!((got, error_code(&body)), (status, error), "Twilio {code}");
        assert_eq!(body["error"]["provider_code"], json!(code), "Twilio {code}");
        if status == 503 {
            assert_eq!(retry_after.unwrap(), "1", "Twilio {code}");
        } else {
            assert!(retry_after.is_none());
        }
        // One attempt: the service does not retry on its own.
        assert_eq!(app.provider_requests().await.len(), 1, "Twilio {code}");
    }
}

#[tokio::test]
async fn provider_retry_after_is_passed_on() {
    let template = ResponseTemplate::new(503)
        .insert_header("Retry-After", "7")
        .set_body_string("<html>busy</html>");
    let app = spawn_app_against(twilio_answering(template).await, |_| {}).await;
    let response = app.post("/v1/sms", &fixture("login")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    let (_, body) = error_of(response).await;
    assert_eq!(error_code(&body), "provider_unavailable");
    assert!(body["error"].get("provider_code").is_none());
}

#[tokio::test]
async fn a_slow_provider_is_cut_off_at_the_timeout() {
    let template = ResponseTemplate::new(201)
        .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
        .set_delay(Duration::from_secs(30));
    let app = spawn_app_against(twilio_answering(template).await, |env| {
        env.insert("PHONE_COURIER__TWILIO__TIMEOUT_MS".into(), "150".into());
    })
    .await;
    let (status, body) = error_of(app.post("/v1/sms", &fixture("login")).await).await;
    assert_eq!((status, error_code(&body)), (503, "provider_unavailable"));
    // Twilio may have the message: Kratos's retry asks before sending
    // again, and answers 503 again while Twilio cannot tell (this stand-in
    // has no list endpoint). Nothing is created twice.
    let (status, _) = error_of(app.post("/v1/sms", &fixture("login")).await).await;
    assert_eq!(status, 503);
    let requests = app.provider_requests().await;
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count(),
        1
    );
    assert!(requests.iter().any(|r| r.method.as_str() == "GET"));
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mock = MockServer::start().await;
    let app = spawn_app_against(mock, |env| {
        env.insert(
            "PHONE_COURIER__TWILIO__BASE_URL".into(),
            format!("http://127.0.0.1:{port}"),
        );
    })
    .await;
    let response = app.post("/v1/sms", &fixture("login")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = error_of(response).await;
    assert_eq!((status, error_code(&body)), (503, "provider_unavailable"));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let template = ResponseTemplate::new(307).insert_header("Location", "/elsewhere");
    let app = spawn_app_against(twilio_answering(template).await, |_| {}).await;
    let (status, body) = error_of(app.post("/v1/sms", &fixture("login")).await).await;
    assert_eq!((status, error_code(&body)), (502, "provider_configuration"));
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn an_accepted_message_with_an_unreadable_answer_is_still_accepted() {
    // Twilio said 201: the SMS is on its way. Telling Kratos otherwise would
    // make it retry and send a second SMS.
    let template = ResponseTemplate::new(201).set_body_string("<Response>not json</Response>");
    let app = spawn_app_against(twilio_answering(template).await, |_| {}).await;
    let response = app.post("/v1/sms", &fixture("login")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "accepted", "channel": "sms", "sid": null})
    );
}

#[tokio::test]
async fn an_unknown_twilio_error_is_not_retried_by_kratos_in_vain() {
    let app = spawn_app_against(twilio_answering(twilio_error(400, 21617)).await, |_| {}).await;
    let (status, body) = error_of(app.post("/v1/sms", &fixture("login")).await).await;
    assert_eq!((status, error_code(&body)), (502, "provider_configuration"));
    assert_eq!(body["error"]["provider_code"], 21617);
}

#[tokio::test]
async fn kratos_retrying_after_an_unreadable_acceptance_sends_nothing_twice() {
    let template = ResponseTemplate::new(201).set_body_string("not json");
    let app = spawn_app_against(twilio_answering(template).await, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(app.post("/v1/sms", &fixture("login")).await.status(), 200);
    }
    assert_eq!(app.provider_requests().await.len(), 1);
}
