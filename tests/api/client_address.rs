//! The dodges of the per-client limit, tried as an attacker would: every
//! request is a code to a fresh number (each in its own block of numbers,
//! so only the client limit can stop them), and each test counts both what
//! the caller was told and how many messages reached Twilio.
//!
//! The limits in force are the defaults: `[limits.client_ip]` reads
//! X-Forwarded-For with one trusted proxy; one client may have a burst of 5
//! SMS; requests without a trustworthy address share a burst of 10.

use serde_json::{json, Value};

use crate::helpers::*;

/// A fresh number in block `i` (+447400iii555): no two share a prefix.
fn number(i: usize) -> String {
    format!("+447400{i:03}555")
}

/// A login code to `to` whose end user's request carried `headers` (as
/// Kratos forwards them: each value a list of header lines).
fn from(to: &str, i: usize, headers: Value) -> Value {
    let mut m = login_message(to, &format!("{:06}", 300_000 + i));
    m["request_headers"] = headers;
    m
}

/// Send each message; the number sent (200) and the limiter named by each
/// refusal, in order.
async fn send_all(app: &TestApp, messages: &[Value]) -> (usize, Vec<String>) {
    let mut sent = 0;
    let mut refused = Vec::new();
    for m in messages {
        let r = app.post_json("/v1/sms", m).await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        match status {
            200 => sent += 1,
            429 => {
                assert_eq!(error_code(&body), "rate_limited", "{body}");
                refused.push(body["error"]["limit"].as_str().unwrap().to_owned());
            }
            other => panic!("{other}: {body}"),
        }
    }
    (sent, refused)
}

async fn app(tweak: &[(&str, &str)]) -> TestApp {
    app_at_noon(twilio_accepting().await, tweak).await.0
}

#[tokio::test]
async fn rotating_true_client_ip_from_one_address_is_one_client() {
    let app = app(&[]).await;
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            from(
                &number(i),
                i,
                json!({"X-Forwarded-For": ["203.0.113.7"], "True-Client-Ip": [format!("198.51.100.{i}")]}),
            )
        })
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 5, "the client's burst, whatever True-Client-Ip says");
    assert_eq!(refused, vec!["ip"; 15]);
    assert_eq!(app.provider_requests().await.len(), 5);
}

#[tokio::test]
async fn junk_leftmost_forwarded_for_entries_are_ignored() {
    let app = app(&[]).await;
    // Written by the end user before the proxy appended the real address:
    // in the same line, or as a header line of their own.
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            let xff = if i % 2 == 0 {
                json!([format!("10.0.{i}.1, 192.0.2.{i}, 203.0.113.7")])
            } else {
                json!([format!("192.0.2.{i}"), "203.0.113.7"])
            };
            from(&number(i), i, json!({ "X-Forwarded-For": xff }))
        })
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 5);
    assert_eq!(refused, vec!["ip"; 15]);
    assert_eq!(app.provider_requests().await.len(), 5);
    // Another real client (another address appended by the proxy) is not
    // held back by the first one's refusals.
    let other = from(
        &number(99),
        99,
        json!({"X-Forwarded-For": ["203.0.113.7, 198.51.100.99"]}),
    );
    assert_eq!(send_all(&app, &[other]).await, (1, vec![]));
}

#[tokio::test]
async fn requests_without_an_address_share_the_unknown_bucket() {
    let app = app(&[]).await;
    let shapes = [
        Value::Null,
        json!({}),
        json!({"X-Forwarded-For": []}),
        json!({"Accept-Language": ["en"]}),
        json!({"True-Client-Ip": ["198.51.100.1"]}),
    ];
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            let mut m = from(&number(i), i, shapes[i % shapes.len()].clone());
            if i % 7 == 3 {
                m.as_object_mut().unwrap().remove("request_headers");
            }
            m
        })
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 10, "limits.sms.unknown_ip burst");
    assert_eq!(refused, vec!["unknown_ip"; 10]);
    assert_eq!(app.provider_requests().await.len(), 10);
    // A client with an address still has its own allowance.
    let known = from(
        &number(50),
        50,
        json!({"X-Forwarded-For": ["203.0.113.50"]}),
    );
    assert_eq!(send_all(&app, &[known]).await, (1, vec![]));
}

#[tokio::test]
async fn malformed_addresses_count_as_unknown() {
    let app = app(&[("PHONE_COURIER__LIMITS__SMS__UNKNOWN_IP__BURST", "3")]).await;
    let bad = [
        "junk",
        "999.1.1.1",
        "",
        "unknown",
        "203.0.113.7, not-an-address",
        "203.0.113.7 203.0.113.8",
        "::ffff:999.0.0.1",
        "2001:db8::1::2",
        "[2001:db8::1]",
        "203.0.113.7:99999",
        "0x7f.0.0.1",
        "fe80::1%eth0",
    ];
    let messages: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, xff)| from(&number(i), i, json!({ "X-Forwarded-For": [xff] })))
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 3);
    assert_eq!(refused, vec!["unknown_ip"; bad.len() - 3]);
    assert_eq!(app.provider_requests().await.len(), 3);
}

#[tokio::test]
async fn ipv6_rotation_inside_one_64_is_one_client() {
    let app = app(&[]).await;
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            let addr = format!("2001:db8:aa:bb:{i:x}::{:x}", 7 * i + 1);
            from(&number(i), i, json!({ "X-Forwarded-For": [addr] }))
        })
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 5);
    assert_eq!(refused, vec!["ip"; 15]);
    // The next /64 is another subscriber; an IPv4-mapped address is its
    // IPv4 address, the same client either way.
    let next = from(
        &number(40),
        40,
        json!({"X-Forwarded-For": ["2001:db8:aa:bc::1"]}),
    );
    assert_eq!(send_all(&app, &[next]).await, (1, vec![]));
    let mapped: Vec<Value> = (0..6)
        .map(|i| {
            let addr = if i % 2 == 0 {
                "203.0.113.9"
            } else {
                "::ffff:203.0.113.9"
            };
            from(
                &number(60 + i),
                60 + i,
                json!({ "X-Forwarded-For": [addr] }),
            )
        })
        .collect();
    assert_eq!(send_all(&app, &mapped).await, (5, vec!["ip".to_owned()]));
    assert_eq!(app.provider_requests().await.len(), 11);
}

#[tokio::test]
async fn behind_a_cdn_the_client_is_two_hops_from_the_right() {
    let app = app(&[("PHONE_COURIER__LIMITS__CLIENT_IP__TRUSTED_HOPS", "2")]).await;
    // client-written junk, the client (appended by the CDN), the CDN edge
    // (appended by the load balancer): the edge rotates, the client does not.
    let mut messages: Vec<Value> = (0..8)
        .map(|i| {
            let xff = format!("192.0.2.{i}, 203.0.113.7, 172.16.0.{i}");
            from(&number(i), i, json!({ "X-Forwarded-For": [xff] }))
        })
        .collect();
    // A request that skipped the CDN has one entry fewer: unknown, and so
    // it cannot pass its own writing off as the client.
    messages.push(from(
        &number(9),
        9,
        json!({"X-Forwarded-For": ["172.16.0.1"]}),
    ));
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!((sent, refused.len()), (6, 3));
    assert_eq!(refused[..2], ["ip", "ip"]);
    assert_eq!(app.provider_requests().await.len(), 6);
}

#[tokio::test]
async fn a_single_value_header_is_read_only_when_configured() {
    let app = app(&[("PHONE_COURIER__LIMITS__CLIENT_IP__HEADER", "True-Client-Ip")]).await;
    // The CDN sets True-Client-Ip; X-Forwarded-For rotates freely and is
    // not read. Two True-Client-Ip lines (the end user's and the CDN's?)
    // cannot be told apart: unknown.
    let mut messages: Vec<Value> = (0..8)
        .map(|i| {
            from(
                &number(i),
                i,
                json!({"True-Client-Ip": ["203.0.113.7"], "X-Forwarded-For": [format!("198.51.100.{i}")]}),
            )
        })
        .collect();
    messages.push(from(
        &number(20),
        20,
        json!({"True-Client-Ip": ["198.51.100.1", "203.0.113.70"]}),
    ));
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 6, "5 for the client, 1 in the unknown bucket");
    assert_eq!(refused, vec!["ip"; 3]);
    assert_eq!(app.provider_requests().await.len(), 6);
}

#[tokio::test]
async fn sequential_numbers_in_one_block_meet_the_prefix_limit() {
    let app = app(&[]).await;
    // A campaign from 20 different addresses, walking +447400123000..019.
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            from(
                &format!("+447400123{i:03}"),
                i,
                json!({ "X-Forwarded-For": [format!("198.51.100.{i}")] }),
            )
        })
        .collect();
    let (sent, refused) = send_all(&app, &messages).await;
    assert_eq!(sent, 10, "limits.sms.prefix burst");
    assert_eq!(refused, vec!["prefix"; 10]);
    let to: Vec<String> = app
        .provider_requests()
        .await
        .iter()
        .map(|r| {
            form_urlencoded::parse(&r.body)
                .find(|(k, _)| k == "To")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("+447400123{i:03}")).collect();
    assert_eq!(to, expected);
    // The next block is another prefix.
    let next = from(
        "+447400124000",
        30,
        json!({"X-Forwarded-For": ["198.51.100.30"]}),
    );
    assert_eq!(send_all(&app, &[next]).await, (1, vec![]));
}
