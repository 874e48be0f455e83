//! Real slow and many clients: header and body read timeouts, the cap on
//! connections, the cap on provider requests in flight, keep-alive.

use std::time::Duration;

use kratos_phone_courier::config::{Config, Sources};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__SERVER__HEADER_READ_TIMEOUT_MS".into(),
            "200".into(),
        );
    })
    .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    // The server, not the test, decides when: reading ends when it closes.
    let answer = read_all(&mut s).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__SERVER__BODY_READ_TIMEOUT_MS".into(),
            "200".into(),
        );
    })
    .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{KRATOS_USER}:{KRATOS_PASSWORD}"))
    };
    s.write_all(
        format!("POST /v1/sms HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"recipient\":")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_at_once() {
    let app = spawn_app_with(|env| {
        env.insert("PHONE_COURIER__SERVER__MAX_CONNECTIONS".into(), "2".into());
    })
    .await;
    // Two idle keep-alive connections take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /health/alive HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let answer = read_all(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded");
    // Closing one frees its slot.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..100 {
        let r = app.client.get(app.url("/health/alive")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            ok = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(ok, "a freed slot is usable again");
}

#[tokio::test]
async fn provider_requests_in_flight_are_capped() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&twilio)
        .await;
    let app = spawn_app_against(twilio, |env| {
        env.insert("PHONE_COURIER__TWILIO__MAX_IN_FLIGHT".into(), "1".into());
    })
    .await;
    let first = {
        let client = app.client.clone();
        let url = app.url("/v1/sms");
        tokio::spawn(async move {
            client
                .post(url)
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .header("Content-Type", "application/json")
                .body(serde_json::to_string(&sms_message("+14155550001")).unwrap())
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    while app.provider_requests().await.is_empty() {
        tokio::task::yield_now().await;
    }
    let response = app.post_json("/v1/sms", &sms_message("+14155550002")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = error_of(response).await;
    assert_eq!((status, error_code(&body)), (503, "overloaded"));
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn keep_alive_serves_several_messages_on_one_connection() {
    let app = spawn_app().await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{KRATOS_USER}:{KRATOS_PASSWORD}"))
    };
    for i in 0..3 {
        let body = serde_json::to_string(&sms_message(&format!("+1415555010{i}"))).unwrap();
        s.write_all(
            format!("POST /v1/sms HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "request {i}"
        );
    }
    assert_eq!(app.provider_requests().await.len(), 3);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__SERVER__HEADER_READ_TIMEOUT_MS".into(),
            "200".into(),
        );
    })
    .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /health/alive HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // read_all returned: the server closed the idle connection itself.
}

/// Every endpoint that reads a body: the provider webhooks (signed forms)
/// and the JSON endpoints Kratos and the verify API's callers use.
const BODY_ENDPOINTS: [(&str, &str); 6] = [
    ("/v1/twilio/status", "application/x-www-form-urlencoded"),
    ("/v1/signalwire/status", "application/x-www-form-urlencoded"),
    ("/v1/twilio/inbound", "application/x-www-form-urlencoded"),
    ("/v1/verify/request", "application/json"),
    ("/v1/verify/check", "application/json"),
    ("/v1/kratos/confirmed", "application/json"),
];

/// Item 4 of issue 23: clients that declare a body and never send it, one
/// on each endpoint that reads a body, filling every connection slot. Each
/// gets 408 `request_timeout` within `server.body_read_timeout_ms` and its
/// connection is closed, so `/v1/sms` is answered afterwards instead of
/// 503 `overloaded`.
#[tokio::test]
async fn stalled_bodies_on_every_endpoint_time_out_and_free_their_connections() {
    const BODY_TIMEOUT_MS: u64 = 300;
    let toml = format!(
        r#"
[status_callback]
public_url = "http://courier.example.test"

[relay]
enabled = true
public_url = "http://courier.example.test"
numbers = ["{FROM}"]

[relay.default_route]
name = "Any"
sms = ["+14155550199"]

[verify]
enabled = true
"#
    );
    let file = std::env::temp_dir().join(format!(
        "kpc-slow-bodies-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::write(&file, toml).unwrap();
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    env.insert(
        "PHONE_COURIER__SERVER__MAX_CONNECTIONS".into(),
        BODY_ENDPOINTS.len().to_string(),
    );
    env.insert(
        "PHONE_COURIER__SERVER__BODY_READ_TIMEOUT_MS".into(),
        BODY_TIMEOUT_MS.to_string(),
    );
    let config = Config::load(&Sources {
        file: Some(file.clone()),
        env,
    });
    let _ = std::fs::remove_file(&file);
    let app = start(config.expect("test config is valid"), twilio).await;

    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{KRATOS_USER}:{KRATOS_PASSWORD}"))
    };
    // Every slot taken by a client that sent its headers and no body.
    let started = std::time::Instant::now();
    let mut stalled = Vec::new();
    for (path, content_type) in BODY_ENDPOINTS {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
                 X-Twilio-Signature: AAAA\r\nContent-Type: {content_type}\r\n\
                 Content-Length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push((path, s));
    }
    for (path, mut s) in stalled {
        // Bounded well above the body timeout; without one the server
        // never answers and the connection stays.
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out).into_owned();
        assert!(
            read.is_ok(),
            "{path}: no answer and no close within 5 s (got {answer:?})"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert_eq!(v["error"]["code"], "request_timeout", "{path}");
    }
    // Each one waited for its body about as long as it was given, no more.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(BODY_TIMEOUT_MS),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    app.assert_provider_untouched().await;

    // The slots are free again: Kratos's request is served.
    let r = app.post_json("/v1/sms", &sms_message("+14155550123")).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let sent = app.provider_requests().await;
    assert_eq!(sent.len(), 1);
    assert!(form(&sent[0]).contains(&("To".to_owned(), "+14155550123".to_owned())));
}
