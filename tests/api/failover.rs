//! Two providers, each a real sandbox on its own port (the primary plays
//! Twilio, the secondary a SignalWire space): what each received, exact
//! form fields, and what Kratos was told, through failover, the circuit
//! breaker and Kratos's retries.

use std::time::Duration;

use kratos_phone_courier::clock::Clock;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use twilio_sandbox::{Fault, Sandbox, SandboxConfig, SIGNALWIRE_PROJECT_ID};
use wiremock::MockServer;

use crate::helpers::*;

/// The secondary's own sender: each provider sends from its numbers.
pub const SW_FROM: &str = "+15005550009";
pub const SW_TOKEN: &str = "signalwire-api-token-5c1d";

/// A sandbox serving on a port of its own until the test ends.
pub async fn serve(config: SandboxConfig) -> (Sandbox, String) {
    let sandbox = Sandbox::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = sandbox.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    (sandbox, url)
}

pub struct Pair {
    pub app: TestApp,
    pub clock: Clock,
    pub primary: Sandbox,
    pub secondary: Sandbox,
}

/// The app with `[[providers]]` twilio (primary) then signalwire, and
/// `extra` TOML appended (e.g. a `[failover]` or `[status_callback]`).
pub async fn two_providers(extra: &str, secondary_timeout_ms: u64) -> Pair {
    two_providers_with(false, extra, secondary_timeout_ms).await
}

/// As [`two_providers`]; with `calling`, each provider also has a caller id
/// (its own sender), so calls (and SMS-to-voice fallback) can be placed.
pub async fn two_providers_with(calling: bool, extra: &str, secondary_timeout_ms: u64) -> Pair {
    let (primary_voice, secondary_voice) = if calling {
        (
            format!("voice_from = \"{FROM}\""),
            format!("voice_from = \"{SW_FROM}\""),
        )
    } else {
        (String::new(), String::new())
    };
    let (primary, primary_url) = serve(SandboxConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.into(),
        ..SandboxConfig::default()
    })
    .await;
    let (secondary, space_url) = serve(SandboxConfig {
        auth_token: SW_TOKEN.into(),
        ..SandboxConfig::signalwire()
    })
    .await;
    let toml = format!(
        r#"
[[providers]]
name = "twilio"
kind = "twilio"
base_url = "{primary_url}"
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from = "{FROM}"
{primary_voice}
timeout_ms = 300
verify_credentials_on_start = false

[[providers]]
name = "signalwire"
kind = "signalwire"
space_url = "{space_url}"
project_id = "{SIGNALWIRE_PROJECT_ID}"
api_token = "{SW_TOKEN}"
signing_key = "{SW_TOKEN}"
from = "{SW_FROM}"
{secondary_voice}
timeout_ms = {secondary_timeout_ms}
verify_credentials_on_start = false

[dedup]
window_ms = 60000
{extra}
"#
    );
    let config = config_from_toml("failover", &toml);
    let clock = Clock::system();
    let app = start_with_clock(config, MockServer::start().await, clock.clone()).await;
    Pair {
        app,
        clock,
        primary,
        secondary,
    }
}

/// Creates (POSTs) a sandbox received, with their forms.
pub fn creates(s: &Sandbox) -> Vec<Vec<(String, String)>> {
    s.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.form)
        .collect()
}

async fn send(app: &TestApp, to: &str, code: &str) -> (u16, Value) {
    let r = app.post_json("/v1/sms", &login_message(to, code)).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn circuits(app: &TestApp) -> Vec<(String, String)> {
    let v: Value = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["circuit"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sms_form(from: &str, to: &str, code: &str) -> Vec<(String, String)> {
    pairs(&[
        ("To", to),
        ("From", from),
        ("Body", &format!("Your login code is: {code}")),
    ])
}

#[tokio::test]
async fn a_503_from_the_primary_goes_to_the_secondary_in_the_same_request() {
    let p = two_providers("", 2000).await;
    p.primary.inject_fault(Fault::Status503, 1);
    let (status, body) = send(&p.app, "+14155550123", "482917").await;
    assert_eq!(status, 200, "{body}");
    let inbox = p.secondary.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(body["sid"], json!(inbox[0].sid), "the secondary's sid");
    assert_eq!(inbox[0].sid.len(), 36, "a SignalWire sid is a UUID");
    // Each provider got the message once, from its own number.
    assert_eq!(
        creates(&p.primary),
        vec![sms_form(FROM, "+14155550123", "482917")]
    );
    assert_eq!(
        creates(&p.secondary),
        vec![sms_form(SW_FROM, "+14155550123", "482917")]
    );
    assert!(p.primary.inbox().is_empty(), "one message in total");
    let text = metrics_text(&p.app).await;
    assert!(
        text.contains(r#"phone_courier_provider_failovers_total{from="twilio",channel="sms"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"phone_courier_provider_requests_total{provider="signalwire",channel="sms",outcome="accepted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"phone_courier_provider_requests_total{provider="twilio",channel="sms",outcome="transient"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_primary_down_for_good_opens_its_circuit_and_a_probe_closes_it() {
    let p = two_providers(
        "[failover]\nopen_after = 2\nopen_ms = 30000\n[limits]\nenabled = false\n",
        2000,
    )
    .await;
    p.primary.inject_fault(Fault::Status503, 1000);
    let to = ["+14155550101", "+14155550102", "+14155550103"];
    for (i, to) in to.iter().enumerate() {
        let (status, body) = send(&p.app, to, &format!("10000{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    // Two failures opened the circuit: the third went straight to the
    // secondary.
    assert_eq!(creates(&p.primary).len(), 2);
    assert_eq!(creates(&p.secondary).len(), 3);
    assert_eq!(
        circuits(&p.app).await,
        vec![
            ("twilio".to_owned(), "open".to_owned()),
            ("signalwire".to_owned(), "closed".to_owned())
        ]
    );
    assert!(metrics_text(&p.app)
        .await
        .contains(r#"phone_courier_provider_circuit_open{provider="twilio"} 1"#));
    // Still open just before open_ms: skipped.
    p.clock.advance(Duration::from_millis(29_000));
    assert_eq!(send(&p.app, "+14155550104", "200004").await.0, 200);
    assert_eq!(creates(&p.primary).len(), 2);
    // The primary is back; after open_ms one request probes it and carries
    // the message, closing the circuit.
    p.primary.clear_faults();
    p.clock.advance(Duration::from_millis(1_000));
    assert_eq!(send(&p.app, "+14155550105", "200005").await.0, 200);
    assert_eq!(creates(&p.primary).len(), 3);
    assert_eq!(p.primary.inbox().len(), 1);
    assert_eq!(
        creates(&p.primary)[2],
        sms_form(FROM, "+14155550105", "200005")
    );
    assert_eq!(creates(&p.secondary).len(), 4);
    assert_eq!(
        circuits(&p.app).await[0],
        ("twilio".to_owned(), "closed".to_owned())
    );
}

#[tokio::test]
async fn a_recipient_error_on_the_primary_does_not_fail_over() {
    let p = two_providers("", 2000).await;
    // Twilio's magic "invalid number" (21211).
    let (status, body) = send(&p.app, "+15005550001", "482917").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "recipient_unreachable");
    assert_eq!(creates(&p.primary).len(), 1);
    assert!(
        creates(&p.secondary).is_empty(),
        "the number is wrong everywhere"
    );
}

/// Kratos's attempts of one message, a second apart, until a 2xx.
async fn kratos_attempts(p: &Pair, to: &str, code: &str) -> Vec<(u16, Value)> {
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (status, body) = send(&p.app, to, code).await;
        seen.push((status, body));
        if status == 200 {
            break;
        }
        p.clock.advance(Duration::from_secs(1));
    }
    seen
}

#[tokio::test]
async fn an_uncertain_send_on_the_secondary_is_reconciled_there_not_sent_again() {
    let p = two_providers("", 300).await;
    // Attempt 1: the primary refuses (certain), the secondary takes the
    // message but answers too late (uncertain).
    p.primary.inject_fault(Fault::Status503, 1);
    p.secondary
        .inject_fault(Fault::AcceptThenLatency(Duration::from_millis(1500)), 1);
    let seen = kratos_attempts(&p, "+14155550123", "482917").await;
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![503, 200]);
    // Attempt 2 asked the secondary (the ledger named it) and found it.
    let inbox = p.secondary.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(seen[1].1["sid"], json!(inbox[0].sid));
    assert_eq!(seen[1].1["duplicate"], json!(true));
    assert_eq!(
        creates(&p.primary).len(),
        1,
        "the primary was not asked to send again"
    );
    assert!(p.primary.inbox().is_empty());
    let listed = p.secondary.requests();
    assert!(
        listed.iter().any(|r| r.method == "GET"
            && r.path.ends_with("/Messages.json")
            && r.query.contains(&("To".into(), "+14155550123".into()))),
        "the secondary was asked"
    );
}

#[tokio::test]
async fn six_attempts_with_failover_in_between_send_one_message() {
    let p = two_providers("", 2000).await;
    // Attempt 1: the primary's connection breaks after the request was
    // written (uncertain). Attempt 2: reconciled "not sent" at the primary,
    // then the primary answers 503 and the secondary carries the message.
    p.primary.inject_fault(Fault::DropConnection, 1);
    p.primary.inject_fault(Fault::Status503, 1);
    let seen = kratos_attempts(&p, "+14155550123", "482917").await;
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![503, 200]);
    assert_eq!(seen[0].1["error"]["code"], "provider_unavailable");
    assert!(p.primary.inbox().is_empty());
    let inbox = p.secondary.inbox();
    assert_eq!(inbox.len(), 1, "one message in total");
    assert_eq!(seen[1].1["sid"], json!(inbox[0].sid));
    // Kratos asks again anyway (a lost answer): the same sid, nothing sent.
    let (status, again) = send(&p.app, "+14155550123", "482917").await;
    assert_eq!(status, 200);
    assert_eq!(again["sid"], json!(inbox[0].sid));
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(creates(&p.primary).len(), 2);
    assert_eq!(creates(&p.secondary).len(), 1);
    assert_eq!(p.secondary.inbox().len(), 1);
}

/// SMS-to-voice fallback and failover together: a landline's call goes
/// through the same provider walk as any send, and the ledger answers
/// Kratos's retry with the call the secondary placed.
#[tokio::test]
async fn a_landline_call_fails_over_and_the_retry_is_answered_from_the_ledger() {
    let p = two_providers_with(true, "", 2000).await;
    p.primary.inject_fault(Fault::Status503, 1);
    let landline = "+442071234567";
    let mut sids = Vec::new();
    for attempt in 0..3 {
        let (status, body) = send(&p.app, landline, "482917").await;
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        assert_eq!(body["channel"], "voice", "{body}");
        assert_eq!(body["fallback"], true, "{body}");
        assert_eq!(body["duplicate"].as_bool().unwrap_or(false), attempt > 0);
        sids.push(body["sid"].clone());
    }
    assert!(sids.iter().all(|s| *s == sids[0]), "{sids:?}");
    // The primary was asked for the call once (503), the secondary placed
    // it from its own caller id; no provider got an SMS, and the retries
    // sent nothing.
    let primary = creates(&p.primary);
    let secondary = creates(&p.secondary);
    assert_eq!(primary.len(), 1, "{primary:?}");
    assert_eq!(secondary.len(), 1, "{secondary:?}");
    for (form, from) in [(&primary[0], FROM), (&secondary[0], SW_FROM)] {
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(field("To"), Some(landline));
        assert_eq!(field("From"), Some(from));
        assert!(field("Body").is_none(), "no SMS: {form:?}");
        assert!(
            field("Twiml").is_some_and(|t| t.contains("4, 8, 2, 9, 1, 7")),
            "{form:?}"
        );
    }
    let calls = p.secondary.inbox();
    assert_eq!(calls.len(), 1);
    assert_eq!(sids[0], json!(calls[0].sid));
    let text = metrics_text(&p.app).await;
    assert!(
        text.contains(r#"phone_courier_provider_failovers_total{from="twilio",channel="voice"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"phone_courier_fallback_calls_total{reason="landline"} 1"#),
        "{text}"
    );
}
