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

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_request_fields() {
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "info".into());
    env.insert("PHONE_COURIER__LOG__FORMAT".into(), "json".into());
    let (mut child, addr, rx, seen) = spawn_binary(&env);
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Content-Type", "application/json")
        .body(fixture("login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let mut lines: Vec<String> = seen.lines().map(str::to_owned).collect();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
    }
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let request = objects
        .iter()
        .find(|o| o["message"] == "request")
        .expect("a request line");
    assert_eq!(request["endpoint"], "/v1/sms");
    assert_eq!(request["channel"], "sms");
    assert_eq!(request["template_type"], "login_code_valid");
    assert_eq!(request["recipient"], "+1…23");
    assert_eq!(request["status"], 200);
    assert_eq!(request["sid"], "SM0123456789abcdef0123456789abcdef");
    let all = lines.join("\n");
    assert!(!all.contains("482917") && !all.contains("4155550123"));
}

/// The relay logs the route, the MessageSid and each target's outcome, but
/// never the text, the sender's or a target's whole number, a Slack URL
/// (a credential) or the webhook secret.
#[tokio::test]
async fn the_relay_logs_no_body_number_or_slack_url() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = twilio_accepting().await;
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T000/B000/XXXXSECRET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&slack)
        .await;
    let file = std::env::temp_dir().join(format!("relay-logs-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            r#"
[relay]
enabled = true
public_url = "https://courier.example.com"
numbers = ["{FROM}"]
[[relay.routes]]
name = "GitHub"
from = ["+15556667777"]
sms = ["+14155550123"]
slack = ["{}/services/T000/B000/XXXXSECRET"]
"#,
            slack.uri()
        ),
    )
    .unwrap();
    let mut env = base_env(&twilio.uri());
    env.insert("PHONE_COURIER_CONFIG".into(), file.display().to_string());
    let (mut child, addr, rx, mut logs) = spawn_binary(&env);
    let form = pairs(&[
        ("MessageSid", "SM33333333333333333333333333333333"),
        ("From", "+15556667777"),
        ("To", FROM),
        ("Body", "Your GitHub code is 482917"),
        ("NumMedia", "0"),
    ]);
    let signature = twilio_sandbox::signature::sign(
        AUTH_TOKEN,
        "https://courier.example.com/v1/twilio/inbound",
        &form,
    );
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/twilio/inbound"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "<Response/>");
    // Both targets report, then the service stops.
    while logs.matches(" relayed").count() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("both targets report:\n{logs}"));
        logs.push_str(&line);
        logs.push('\n');
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        logs.push_str(&line);
        logs.push('\n');
    }
    let _ = std::fs::remove_file(&file);
    let sms = twilio.received_requests().await.unwrap();
    assert_eq!(sms.len(), 1, "the SMS was forwarded");
    assert!(logs.contains("SM33333333333333333333333333333333"));
    assert!(logs.contains("route=\"GitHub\""), "{logs}");
    assert!(logs.contains("…77"), "the sender, masked: {logs}");
    for secret in [
        "482917",
        "Your GitHub code",
        "5556667777",
        "4155550123",
        "XXXXSECRET",
        AUTH_TOKEN,
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}

/// Login codes that arrive without the end user's address (Kratos's
/// `header_allowlist` lost it): the service says so once, naming the Kratos
/// setting to fix, however many such codes come.
#[tokio::test]
async fn a_missing_client_address_is_warned_about_once() {
    let twilio = twilio_accepting().await;
    let env = base_env(&twilio.uri());
    let (mut child, addr, rx, mut logs) = spawn_binary(&env);
    let client = reqwest::Client::new();
    for i in 0..4 {
        let mut m = login_message(
            &format!("+4474000{i:02}555"),
            &format!("{:06}", 300_000 + i),
        );
        m["request_headers"] = json!({});
        let r = client
            .post(format!("http://{addr}/v1/sms"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .json(&m)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        logs.push_str(&line);
        logs.push('\n');
    }
    let warnings = logs
        .lines()
        .filter(|l| l.contains("clients.web_hook.header_allowlist"))
        .count();
    assert_eq!(warnings, 1, "{logs}");
}
