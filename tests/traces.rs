//! OpenTelemetry traces, end to end: the real binary with `[tracing]` on,
//! a Twilio stand-in that records headers, and an OTLP/HTTP receiver
//! stand-in that decodes what it is sent with the protocol's own protobuf
//! types. A courier request carrying Kratos's `traceparent` continues that
//! trace through every delivery stage to Twilio, the log line names the
//! trace, the spans are flushed at shutdown, and nothing secret is in them.

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use helpers::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const RECIPIENT: &str = "+14155550123";
const CODE: &str = "482917";

/// What the receiver stand-in was sent: each request decoded, with the
/// resource's `service.name`.
#[derive(Default, Clone)]
struct Received {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered with an empty (successful)
/// `ExportTraceServiceResponse`.
async fn otlp_receiver() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let r = r.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let ct = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        r.content_types.lock().unwrap().push(ct);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in export.resource_spans {
                            let service = rs
                                .resource
                                .as_ref()
                                .and_then(|res| {
                                    res.attributes.iter().find(|a| a.key == "service.name")
                                })
                                .and_then(|a| a.value.as_ref())
                                .and_then(|v| match &v.value {
                                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    r.spans.lock().unwrap().push((service.clone(), span));
                                }
                            }
                        }
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes as text (ints printed).
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), v)
        })
        .collect()
}

fn traced_env(twilio: &str, collector: SocketAddr) -> HashMap<String, String> {
    let mut env = base_env(twilio);
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "info".into());
    env.insert("PHONE_COURIER__TRACING__PROVIDER".into(), "otel".into());
    env.insert(
        "PHONE_COURIER__TRACING__PROVIDERS__OTLP__SERVER_URL".into(),
        collector.to_string(),
    );
    env
}

// Multi-threaded: the receiver stand-in must answer the flush at shutdown
// while the test waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_request_continues_kratoss_trace_to_twilio() {
    let twilio = twilio_accepting().await;
    let (collector, received) = otlp_receiver().await;
    let env = traced_env(&twilio.uri(), collector);
    let (mut child, addr, rx, _) = spawn_binary(&env);
    let client = reqwest::Client::new();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let sent = client
        .post(format!("http://{addr}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("traceparent", &traceparent)
        .header("tracestate", "kratos=a1")
        .json(&login_message(RECIPIENT, CODE))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    // A refusal, in a trace of its own (no traceparent).
    let refused = client
        .post(format!("http://{addr}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(&login_message("+1415555012", CODE))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    // The log line of the traced request names its trace.
    let mut logs = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs
        .lines()
        .any(|l| l.contains("trace_id") && l.contains(TRACE_ID))
    {
        assert!(
            Instant::now() < deadline,
            "no log line with the trace id:\n{logs}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            logs.push_str(&line);
            logs.push('\n');
        }
    }
    let line = logs.lines().find(|l| l.contains(TRACE_ID)).unwrap();
    assert!(
        line.contains("status=200") && line.contains("/v1/sms"),
        "{line}"
    );

    // Stop: what is still queued is flushed before the process exits.
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let spans = received.spans();
    assert!(
        received
            .content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/x-protobuf"),
        "OTLP over HTTP with protobuf"
    );

    // The traced request: its span's parent is Kratos's span.
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == TRACE_ID)
        .map(|(_, s)| s)
        .collect();
    assert!(spans
        .iter()
        .all(|(service, _)| service == "kratos-phone-courier"));
    let request = in_trace
        .iter()
        .find(|s| s.name == "/v1/sms")
        .unwrap_or_else(|| {
            panic!(
                "no request span in {:#?}",
                in_trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex(&request.parent_span_id), PARENT_ID);
    assert_eq!(request.kind, SpanKind::Server as i32);
    let a = attributes(request);
    assert_eq!(a["http.route"], "/v1/sms");
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["courier.channel"], "sms");
    assert_eq!(a["courier.template_type"], "login_code_valid");
    assert_eq!(a["courier.outcome"], "accepted");
    assert_eq!(a["http.response.status_code"], "200");
    assert!(!a.contains_key("error.type"));

    // One child per stage, each under the request's span.
    let child_named = |name: &str| {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span");
        assert_eq!(
            found[0].parent_span_id, request.span_id,
            "{name} is a child of the request"
        );
        *found[0]
    };
    let admission = child_named("admission");
    assert_eq!(attributes(admission)["courier.country"], "US");
    child_named("ledger");
    child_named("limits");
    let provider = child_named("provider");
    assert_eq!(provider.kind, SpanKind::Client as i32);
    let p = attributes(provider);
    assert_eq!(p["provider.name"], "twilio");
    assert_eq!(p["http.response.status_code"], "201");
    assert_eq!(p["courier.channel"], "sms");
    assert_eq!(p["courier.country"], "US");
    assert!(!p.contains_key("provider.error_code"));
    assert_eq!(
        in_trace.len(),
        5,
        "request, admission, ledger, limits, provider"
    );

    // Twilio's request continues the trace from the provider span, with
    // Kratos's tracestate.
    let creates: Vec<_> = twilio
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == MESSAGES_PATH)
        .collect();
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0]
            .headers
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("00-{TRACE_ID}-{}-01", hex(&provider.span_id))
    );
    assert_eq!(creates[0].headers.get("tracestate").unwrap(), "kratos=a1");

    // The refusal: a trace of its own, with the error code, no provider call.
    let refusal = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "/v1/sms" && hex(&s.trace_id) != TRACE_ID)
        .expect("the refused request's span");
    assert!(refusal.parent_span_id.is_empty(), "a root span");
    let r = attributes(refusal);
    assert_eq!(r["error.type"], "invalid_recipient");
    assert_eq!(r["courier.outcome"], "rejected");
    assert_eq!(r["http.response.status_code"], "422");
    assert!(!spans
        .iter()
        .any(|(_, s)| s.trace_id == refusal.trace_id && s.name == "provider"));

    // Nothing secret anywhere in what was exported: names, attributes,
    // events, status messages.
    let everything = format!("{spans:?}");
    for secret in [
        &RECIPIENT[1..],
        "4155550",
        "415555012",
        CODE,
        "login code is",
        KRATOS_PASSWORD,
        AUTH_TOKEN,
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} in the exported spans"
        );
    }
    for (_, span) in &spans {
        for (key, value) in attributes(span) {
            let digits = value.chars().filter(char::is_ascii_digit).count();
            assert!(digits <= 5, "{key}={value}: looks like a number or a code");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_fails_a_send_and_lost_spans_are_counted() {
    let twilio = twilio_accepting().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env = traced_env(&twilio.uri(), closed);
    let (mut child, addr, _rx, _) = spawn_binary(&env);
    let client = reqwest::Client::new();
    for code in ["111111", "222222", "333333"] {
        let r = client
            .post(format!("http://{addr}/v1/sms"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
            .json(&login_message(RECIPIENT, code))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(twilio.received_requests().await.unwrap().len(), 3);
    // The export fails in the background; its spans are counted (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = client
            .get(format!("http://{addr}/metrics"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let failed = text
            .lines()
            .find(|l| {
                l.starts_with(r#"phone_courier_trace_spans_dropped_total{reason="export_failed"}"#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if failed >= 15 {
            assert!(
                text.contains(r#"phone_courier_trace_spans_dropped_total{reason="queue_full"} 0"#)
            );
            break;
        }
        assert!(Instant::now() < deadline, "lost spans not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&child);
    assert!(
        child.wait().unwrap().success(),
        "shutdown does not hang on the collector"
    );
}
