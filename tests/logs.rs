//! The real binary, logging at trace level, never writes a code, a message
//! body, a secret or a whole phone number (its own stderr is read back).

#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_full_send_logs_no_secret_code_body_or_number() {
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "trace".into());
    let (mut child, addr, rx, mut logs) = spawn_binary(&env);
    let client = reqwest::Client::new();
    let post = |path: &str, body: String| {
        client
            .post(format!("http://{addr}{path}"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        post("/v1/sms", fixture("login")).await.unwrap().status(),
        200
    );
    assert_eq!(
        post("/v1/voice", fixture("recovery"))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut bad = fixture_json("login");
    bad["recipient"] = json!("+1415555012");
    assert_eq!(
        post("/v1/sms", bad.to_string()).await.unwrap().status(),
        422
    );
    let wrong = client
        .post(format!("http://{addr}/v1/sms"))
        .basic_auth(KRATOS_USER, Some("a-wrong-password-55"))
        .header("Content-Type", "application/json")
        .body(fixture("login"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the service with 0: {status}"
    );
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        logs.push_str(&line);
        logs.push('\n');
    }

    assert!(logs.contains("request"), "one line per request: {logs}");
    assert!(
        logs.contains("+1…23"),
        "the masked recipient is logged: {logs}"
    );
    assert!(
        logs.contains("SM0123456789abcdef0123456789abcdef"),
        "the sid is logged"
    );
    for secret in [
        "4155550123",
        "415555012",
        "482917",
        "613570",
        "Your login code",
        "Your recovery code",
        KRATOS_PASSWORD,
        "a-wrong-password-55",
        AUTH_TOKEN,
        "ada@example.com",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}
