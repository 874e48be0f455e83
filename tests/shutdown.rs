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
    // Many codes to one block of numbers, from no known address: the rate
    // limits are not what this tests.
    env.insert("PHONE_COURIER__LIMITS__ENABLED".into(), "false".into());
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

/// A rolling deploy: on SIGTERM readiness says no at once, the listener
/// keeps taking new connections (and sending) for `server.drain_ms` while
/// load balancers notice, then closes, and the process exits 0.
#[tokio::test]
async fn sigterm_drains_readiness_first_then_closes_the_listener() {
    const DRAIN: Duration = Duration::from_millis(3000);
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "info".into());
    // Many codes to one block of numbers, from no known address: the rate
    // limits are not what this tests.
    env.insert("PHONE_COURIER__LIMITS__ENABLED".into(), "false".into());
    env.insert(
        "PHONE_COURIER__SERVER__DRAIN_MS".into(),
        DRAIN.as_millis().to_string(),
    );
    let (mut child, addr, _logs, _) = spawn_binary(&env);
    // A fresh connection for every request: the point is that the listener
    // still accepts.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = format!("http://{addr}/health/ready");
    assert_eq!(client.get(&ready).send().await.unwrap().status(), 200);

    // Taken before the signal, so the drain cannot have begun earlier.
    let signalled = Instant::now();
    sigterm(&child);
    // Readiness turns off first.
    loop {
        let status = client.get(&ready).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "readiness still says {status} a second after SIGTERM"
        );
        tokio::task::yield_now().await;
    }
    let not_ready = Instant::now();
    // While draining, new connections are accepted and codes still go out.
    let mut accepted = 0;
    let mut i = 0;
    while not_ready.elapsed() < DRAIN * 2 / 3 {
        let r = client
            .post(format!("http://{addr}/v1/sms"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .header("Content-Type", "application/json")
            .body(serde_json::to_string(&sms_message(&format!("+1415555{:04}", 3000 + i))).unwrap())
            .send()
            .await
            .expect("still accepting while draining");
        assert_eq!(r.status(), 200, "sent while draining");
        accepted += 1;
        i += 1;
        let r = client.get(&ready).send().await.expect("still accepting");
        assert_eq!(r.status(), 503, "not ready for the whole drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted >= 5, "only {accepted} sends during the drain");
    // Then the listener closes and the process exits 0.
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit 0: {status}");
    assert!(
        signalled.elapsed() >= DRAIN,
        "the listener stayed open for the drain window"
    );
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "no new connection after the drain"
    );
    assert_eq!(
        twilio.received_requests().await.unwrap().len(),
        accepted,
        "every send accepted while draining reached Twilio once"
    );
}
