//! SIGTERM to the real binary while requests are in flight: each still gets
//! its answer (a send Twilio accepted is reported as accepted), no new
//! connection is accepted, and the process exits 0 within the grace period.

#[path = "api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use helpers::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish_and_exits_0() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&twilio)
        .await;
    let mut env = base_env(&twilio.uri());
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "info".into());
    env.insert(
        "PHONE_COURIER__SERVER__SHUTDOWN_GRACE_MS".into(),
        "5000".into(),
    );
    let (mut child, addr, _logs, _) = spawn_binary(&env);
    let client = reqwest::Client::new();
    let mut in_flight = Vec::new();
    for i in 0..5 {
        let client = client.clone();
        let url = format!("http://{addr}/v1/sms");
        in_flight.push(tokio::spawn(async move {
            client
                .post(url)
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .header("Content-Type", "application/json")
                .body(serde_json::to_string(&sms_message(&format!("+1415555020{i}"))).unwrap())
                .send()
                .await
        }));
    }
    // Twilio has all five: the sends are under way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while twilio.received_requests().await.unwrap_or_default().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the requests never reached Twilio"
        );
        tokio::task::yield_now().await;
    }
    let signalled = Instant::now();
    sigterm(&child);
    for r in in_flight {
        let r = r.await.unwrap().expect("an answer, not a cut connection");
        assert_eq!(
            r.status(),
            200,
            "accepted by Twilio, so accepted for Kratos"
        );
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit 0: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "within the grace period"
    );
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "no new connection after shutdown"
    );
    assert_eq!(
        twilio.received_requests().await.unwrap().len(),
        5,
        "nothing sent twice"
    );
}
