//! The fraud guard over HTTP: confirmations from Kratos's hooks (and
//! spoofed ones), codes to a destination whose codes are not confirmed,
//! refused with `deny` and only reported with `record_only`, and the
//! metrics. Time moves on the service's clock.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const CONFIRMED: &str = "/v1/kratos/confirmed";

/// The value of one metric line (`name{labels}`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A code to `to` from its own end user (address `i`).
async fn send(app: &TestApp, to: &str, i: u32) -> (u16, Value, Option<String>) {
    let mut m = login_message(to, &format!("{:06}", 400_000 + i));
    m["request_headers"] = json!({"X-Forwarded-For": [format!("198.51.{}.{}", i / 250, i % 250)]});
    let r = app.post_json("/v1/sms", &m).await;
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), r.json().await.unwrap(), retry)
}

async fn confirm(app: &TestApp, numbers: &[&str]) -> Value {
    let r = app
        .post_json(CONFIRMED, &json!({"recipients": numbers, "flow": "login"}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn spoofed_confirmations_are_ignored_and_counted() {
    let (app, _clock) = app_at_noon(twilio_accepting().await, &[]).await;
    // Unauthenticated: refused, and counted.
    let anonymous = app
        .client
        .post(app.url(CONFIRMED))
        .header("Content-Type", "application/json")
        .body(r#"{"recipients": ["+447400123456"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // Authenticated, but for numbers never sent to (and one not a number).
    assert_eq!(
        confirm(&app, &["+447400123456", "not a number"]).await,
        json!({"status": "recorded", "counted": 0})
    );
    // A code sent, then confirmed once: counted once, the second time not.
    assert_eq!(send(&app, "+447400123456", 1).await.0, 200);
    assert_eq!(confirm(&app, &["+447400123456"]).await["counted"], 1);
    assert_eq!(confirm(&app, &["+4407400123456"]).await["counted"], 0);
    let text = metrics_text(&app).await;
    let ignored = |reason: &str| {
        metric(
            &text,
            &format!("phone_courier_fraud_confirmations_ignored_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(ignored("unauthenticated"), 1.0);
    assert_eq!(ignored("never_sent"), 2.0);
    assert_eq!(ignored("invalid"), 1.0);
    let cc = "{country_code=\"44\"}";
    assert_eq!(
        metric(&text, &format!("phone_courier_fraud_codes_sent_total{cc}")),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("phone_courier_fraud_codes_confirmed_total{cc}")
        ),
        1.0
    );
    assert_eq!(
        metric(&text, &format!("phone_courier_fraud_conversion_ratio{cc}")),
        1.0
    );
    assert!(!text.contains("7400123456"), "no number in the metrics");
    // A body that is not a confirmation is refused as such.
    let r = app.post_json(CONFIRMED, &json!({"recipients": "x"})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "schema_violation");
    let r = app.client.get(app.url(CONFIRMED)).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// Four codes to one block of numbers (three at once, then one 12 minutes
/// later), none confirmed: more than the prefix floor of 3.
async fn pump_one_block(app: &TestApp, clock: &kratos_phone_courier::clock::Clock) {
    for i in 0..3 {
        assert_eq!(send(app, &format!("+44740012300{i}"), i).await.0, 200);
    }
    clock.advance(Duration::from_secs(720));
    assert_eq!(send(app, "+447400123003", 3).await.0, 200);
    clock.advance(Duration::from_secs(720));
}

#[tokio::test]
async fn deny_refuses_a_block_whose_codes_are_not_confirmed() {
    let (app, clock) = app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__FRAUD__ACTION", "deny")],
    )
    .await;
    pump_one_block(&app, &clock).await;
    let (status, body, retry) = send(&app, "+447400123004", 4).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "fraud_suspected"),
        "{body}"
    );
    // Held for fraud.hold_minutes (12 h) from now: the rule still holds.
    assert_eq!(retry.as_deref(), Some("43200"));
    assert!(!body.to_string().contains("7400123"), "{body}");
    assert_eq!(app.provider_requests().await.len(), 4);
    // Another block of the same country is not held back.
    assert_eq!(send(&app, "+447400999000", 5).await.0, 200);
    // The hold outlasts the hour in which the codes count...
    clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(send(&app, "+447400123005", 6).await.0, 429);
    // ...and ends.
    clock.advance(Duration::from_secs(10 * 3600));
    assert_eq!(send(&app, "+447400123006", 7).await.0, 200);
    assert_eq!(app.provider_requests().await.len(), 6);
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(
            &text,
            "phone_courier_fraud_refused_total{country_code=\"44\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn confirmed_codes_keep_a_block_clear() {
    let (app, clock) = app_at_noon(
        twilio_accepting().await,
        &[("PHONE_COURIER__FRAUD__ACTION", "deny")],
    )
    .await;
    for i in 0..3 {
        let to = format!("+44740012300{i}");
        assert_eq!(send(&app, &to, i).await.0, 200);
        assert_eq!(confirm(&app, &[&to]).await["counted"], 1);
    }
    clock.advance(Duration::from_secs(720));
    assert_eq!(send(&app, "+447400123003", 3).await.0, 200);
    clock.advance(Duration::from_secs(720));
    assert_eq!(send(&app, "+447400123004", 4).await.0, 200);
    assert_eq!(app.provider_requests().await.len(), 5);
}

#[tokio::test]
async fn record_only_sends_and_reports() {
    let (app, clock) = app_at_noon(twilio_accepting().await, &[]).await;
    pump_one_block(&app, &clock).await;
    assert_eq!(send(&app, "+447400123004", 4).await.0, 200);
    assert_eq!(app.provider_requests().await.len(), 5);
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(
            &text,
            "phone_courier_fraud_suspect_prefixes{country_code=\"44\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "phone_courier_fraud_suspect_country{country_code=\"44\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "phone_courier_fraud_refused_total{country_code=\"44\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_country_is_suspect_past_its_floor_and_always_allow_exempts() {
    let tweak = [
        ("PHONE_COURIER__FRAUD__ACTION", "deny"),
        ("PHONE_COURIER__FRAUD__MIN_UNCONFIRMED_PER_HOUR", "3"),
        (
            "PHONE_COURIER__FRAUD__PREFIX_MIN_UNCONFIRMED_PER_HOUR",
            "100",
        ),
    ];
    let (app, _clock) = app_at_noon(twilio_accepting().await, &tweak).await;
    // Four blocks, one code each, none confirmed.
    for i in 0..4 {
        assert_eq!(send(&app, &format!("+447400{i}00000"), i).await.0, 200);
    }
    let (status, body, _) = send(&app, "+447400900000", 9).await;
    assert_eq!((status, error_code(&body)), (429, "fraud_suspected"));
    // Another country is not affected.
    assert_eq!(send(&app, "+14155550100", 10).await.0, 200);
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(
            &text,
            "phone_courier_fraud_suspect_country{country_code=\"44\"}"
        ),
        1.0
    );

    let mut allow = tweak.to_vec();
    allow.push(("PHONE_COURIER__FRAUD__ALWAYS_ALLOW", "GB,+14155550199"));
    let (app, _clock) = app_at_noon(twilio_accepting().await, &allow).await;
    for i in 0..6 {
        assert_eq!(send(&app, &format!("+447400{i}00000"), i).await.0, 200);
    }
    for i in 0..6 {
        let to = format!("+1415555{}100", i);
        assert_eq!(
            send(&app, &to, 20 + i).await.0,
            if i < 4 { 200 } else { 429 }
        );
    }
    assert_eq!(
        send(&app, "+14155550199", 30).await.0,
        200,
        "an allowed number"
    );
}
