//! The provider's transport: a provider that never takes the connection
//! (connect-phase failures are "not sent" and fail over), a provider that
//! cannot be asked about an uncertain message (it counts toward its
//! circuit), and answers too large to read (bounded, and an accepted
//! message is never sent twice). Real sockets on 127.0.0.1; what Kratos was
//! told and what each stand-in received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kratos_phone_courier::clock::Clock;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use twilio_sandbox::{Sandbox, SandboxConfig, SIGNALWIRE_PROJECT_ID};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::failover::{creates, serve, SW_FROM, SW_TOKEN};
use crate::helpers::*;

/// A listener that never accepts, its accept queue (backlog 1) full of idle
/// connections of our own: the kernel drops every further SYN, as a host
/// whose accept queue overflows (or a firewall that drops) does. A connect
/// to it hangs until the client's connect timeout.
pub struct Blackhole {
    pub addr: SocketAddr,
    listener: TcpListener,
    /// Our own connections in the queue (their local addresses).
    held: Vec<TcpStream>,
}

impl Blackhole {
    pub async fn new() -> Blackhole {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        // Linux queues backlog + 1 connections; the first connect that does
        // not complete shows the queue is full and SYNs are dropped.
        let mut full = false;
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => panic!("connecting to the listener failed: {e}"),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(
            full,
            "the accept queue never filled: this kernel does not drop SYNs"
        );
        Blackhole {
            addr,
            listener,
            held,
        }
    }

    /// Accept what is queued: the connections that reached the listener.
    /// Only ours may be there (no request of the service's got through).
    pub async fn assert_only_ours_arrived(self) {
        let ours: Vec<SocketAddr> = self.held.iter().map(|s| s.local_addr().unwrap()).collect();
        let mut arrived = Vec::new();
        while let Ok(Ok((_, peer))) =
            tokio::time::timeout(Duration::from_millis(100), self.listener.accept()).await
        {
            arrived.push(peer);
        }
        arrived.sort();
        let mut ours = ours;
        ours.sort();
        assert_eq!(arrived, ours, "a connection of the service's arrived");
    }
}

/// The app with `[[providers]]`: a Twilio entry at `primary_url` (with
/// `primary_extra` keys), then a SignalWire sandbox with its defaults
/// (timeout 8 s). `extra` TOML is appended.
async fn primary_then_sandbox(
    primary_url: &str,
    primary_extra: &str,
    extra: &str,
) -> (TestApp, Clock, Sandbox) {
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
verify_credentials_on_start = false
{primary_extra}

[[providers]]
name = "signalwire"
kind = "signalwire"
space_url = "{space_url}"
project_id = "{SIGNALWIRE_PROJECT_ID}"
api_token = "{SW_TOKEN}"
signing_key = "{SW_TOKEN}"
from = "{SW_FROM}"
verify_credentials_on_start = false

[dedup]
window_ms = 60000
{extra}
"#
    );
    let config = config_from_toml("transport", &toml);
    let clock = Clock::system();
    let app = start_with_clock(config, MockServer::start().await, clock.clone()).await;
    (app, clock, secondary)
}

async fn send(app: &TestApp, to: &str, code: &str) -> (u16, Value) {
    let r = app.post_json("/v1/sms", &login_message(to, code)).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn sms_form(from: &str, to: &str, code: &str) -> Vec<(String, String)> {
    pairs(&[
        ("To", to),
        ("From", from),
        ("Body", &format!("Your login code is: {code}")),
    ])
}

async fn circuit_of(app: &TestApp, name: &str) -> String {
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
        .find(|p| p["name"] == name)
        .and_then(|p| p["circuit"].as_str())
        .unwrap()
        .to_owned()
}

/// The defaults (primary: 8 s timeout, 2 s connect timeout; secondary:
/// 8 s): a connect timeout is "not sent", and the secondary, given the 7 s
/// left of Kratos's request, carries the message in the same request.
/// Kratos's six attempts get one sid; one SMS is sent in total.
#[tokio::test]
async fn a_primary_that_drops_syns_fails_over_in_the_same_request() {
    let primary = Blackhole::new().await;
    let (app, clock, secondary) =
        primary_then_sandbox(&format!("http://{}", primary.addr), "", "").await;
    let to = "+14155550123";
    let mut answers = Vec::new();
    for attempt in 0..6 {
        let started = Instant::now();
        let (status, body) = send(&app, to, "482917").await;
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
        assert_eq!(body["status"], "accepted");
        assert_eq!(body["duplicate"].as_bool().unwrap_or(false), attempt > 0);
        answers.push(body["sid"].clone());
        clock.advance(Duration::from_secs(1));
    }
    let inbox = secondary.inbox();
    assert_eq!(inbox.len(), 1, "one SMS in total");
    assert!(
        answers.iter().all(|s| *s == json!(inbox[0].sid)),
        "{answers:?}"
    );
    assert_eq!(creates(&secondary), vec![sms_form(SW_FROM, to, "482917")]);
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"phone_courier_provider_failovers_total{from="twilio",channel="sms"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"phone_courier_provider_requests_total{provider="twilio",channel="sms",outcome="transient"} 1"#),
        "{text}"
    );
    primary.assert_only_ours_arrived().await;
}

/// A primary that took a message without answering in time (uncertain),
/// then cannot be asked whether it has it (its list answers 503): each
/// failed question counts toward its circuit, which opens after
/// `open_after`, so the next message goes straight to the secondary.
#[tokio::test]
async fn failing_to_reconcile_opens_the_circuit() {
    let primary = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_secs(5)),
        )
        .up_to_n_times(1)
        .mount(&primary)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&primary)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&primary)
        .await;
    let (app, clock, secondary) = primary_then_sandbox(
        &primary.uri(),
        "timeout_ms = 300",
        "[failover]\nopen_after = 3\nopen_ms = 30000\n[limits]\nenabled = false\n",
    )
    .await;
    // Attempt 1 times out (failure 1); attempts 2 and 3 cannot reconcile
    // (failures 2 and 3): the circuit opens. Nothing is resent anywhere.
    for attempt in 0..3 {
        let (status, body) = send(&app, "+14155550123", "482917").await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert_eq!(body["error"]["code"], "provider_unavailable");
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(circuit_of(&app, "twilio").await, "open");
    assert!(metrics_text(&app)
        .await
        .contains(r#"phone_courier_provider_circuit_open{provider="twilio"} 1"#));
    let requests = primary.received_requests().await.unwrap();
    let count = |m: &str| requests.iter().filter(|r| r.method.as_str() == m).count();
    assert_eq!((count("POST"), count("GET")), (1, 2));
    assert!(
        creates(&secondary).is_empty(),
        "the uncertain one stays put"
    );
    // Another message skips the primary.
    let (status, body) = send(&app, "+14155550124", "739105").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        creates(&secondary),
        vec![sms_form(SW_FROM, "+14155550124", "739105")]
    );
    let requests = primary.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count(),
        1,
        "the open circuit skipped the primary"
    );
}

/// A Twilio stand-in that answers every create with 201 and a chunked JSON
/// body of `total` bytes (the sid first), written as fast as the client
/// reads it. Records each request's form and how many body bytes it got
/// out before the client stopped reading.
/// A request's form fields, in order.
type Form = Vec<(String, String)>;

#[derive(Clone, Default)]
struct HugeAnswers {
    forms: Arc<Mutex<Vec<Form>>>,
    written: Arc<AtomicUsize>,
}

impl HugeAnswers {
    async fn serve(total: usize) -> (HugeAnswers, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = HugeAnswers::default();
        let state = me.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(state.clone().answer(stream, total));
            }
        });
        (me, url)
    }

    async fn answer(self, mut stream: TcpStream, total: usize) {
        // The request: headers, then Content-Length bytes of form.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let form = form_urlencoded::parse(&buf[head_end..head_end + length])
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        self.forms.lock().unwrap().push(form);
        let head = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let open = br#"{"sid":"SM0123456789abcdef0123456789abcdef","padding":""#.to_vec();
        let mut sent = 0;
        let mut first = Some(open);
        while sent < total {
            let data = first
                .take()
                .unwrap_or_else(|| vec![b'x'; (total - sent).min(64 * 1024)]);
            let frame = [
                format!("{:x}\r\n", data.len()).into_bytes(),
                data.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if stream.write_all(&frame).await.is_err() {
                return;
            }
            sent += data.len();
            self.written.store(sent, Ordering::SeqCst);
        }
        let _ = stream.write_all(b"2\r\n\"}\r\n0\r\n\r\n").await;
    }
}

/// A 201 whose answer is 64 MiB (far over the 64 KiB bound): the service
/// stops reading, answers Kratos "accepted" without a sid (the provider
/// has the message), and Kratos's retries send nothing again.
#[tokio::test]
async fn an_acceptance_too_large_to_read_is_accepted_once_and_never_resent() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let (stand_in, url) = HugeAnswers::serve(TOTAL).await;
    let app = spawn_app_against(MockServer::start().await, |env| {
        env.insert("PHONE_COURIER__TWILIO__BASE_URL".into(), url);
    })
    .await;
    let message = login_message("+14155550123", "482917");
    let r = app.post_json("/v1/sms", &message).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "accepted", "channel": "sms", "sid": null})
    );
    for _ in 0..2 {
        let r = app.post_json("/v1/sms", &message).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sid"], Value::Null);
        assert_eq!(body["duplicate"], true, "{body}");
    }
    assert_eq!(
        *stand_in.forms.lock().unwrap(),
        vec![sms_form(FROM, "+14155550123", "482917")],
        "one create, never resent"
    );
    // The client stopped reading: the stand-in could not write the body
    // out (loopback buffers take a few MiB at most).
    let written = stand_in.written.load(Ordering::SeqCst);
    assert!(written < TOTAL / 4, "{written} bytes were read");
}

/// A Lookup answer over its 64 KiB bound is a failed lookup (here
/// `on_error = "refuse"`: 503, nothing sent), not a buffered one.
#[tokio::test]
async fn a_lookup_answer_too_large_to_read_is_a_failed_lookup() {
    let twilio = twilio_accepting().await;
    let padding = "x".repeat(1024 * 1024);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "phone_number": "+14155550123",
            "valid": true,
            "line_type_intelligence": {"type": "mobile", "error_code": null},
            "padding": padding,
        })))
        .mount(&twilio)
        .await;
    let uri = twilio.uri();
    let app = spawn_app_against(twilio, |env| {
        env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
        env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), uri);
        env.insert("PHONE_COURIER__LOOKUP__ON_ERROR".into(), "refuse".into());
    })
    .await;
    let r = app
        .post_json("/v1/sms", &login_message("+14155550123", "482917"))
        .await;
    let (status, body) = error_of(r).await;
    assert_eq!((status, error_code(&body)), (503, "lookup_unavailable"));
    let got = app.provider_requests().await;
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.url.path()))
        .collect();
    assert_eq!(seen, vec![("GET", "/v2/PhoneNumbers/+14155550123")]);
}
