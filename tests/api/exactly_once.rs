//! Exactly once through a bad day at the provider, in memory mode: each case
//! plays Kratos's retries (up to 6 attempts of the same JSON) and asserts
//! what Kratos was told on every attempt and what Twilio received in all.

use std::time::Duration;

use kratos_phone_courier::clock::Clock;
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const SID: &str = "SM0123456789abcdef0123456789abcdef";

/// Kratos's attempts of one message: the status and error code of each
/// (`"-"` for a 200), stopping after the first 2xx as Kratos does.
async fn kratos_attempts(app: &TestApp, body: &Value, clock: &Clock) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = app.post_json("/v1/sms", body).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        let code = v["error"]["code"].as_str().unwrap_or("-").to_owned();
        seen.push((status, code));
        if status == 200 {
            break;
        }
        // Kratos waits about a second between attempts.
        clock.advance(Duration::from_secs(1));
    }
    seen
}

fn creates(requests: &[wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

/// Twilio answering 503 to the first `failures` creates, then 201.
async fn twilio_503_then_201(failures: u64) -> MockServer {
    let twilio = MockServer::start().await;
    if failures > 0 {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(failures)
            .mount(&twilio)
            .await;
    }
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": SID})))
        .mount(&twilio)
        .await;
    twilio
}

/// Twilio lists these messages (newest first) for any `To`.
async fn mount_listing(twilio: &MockServer, messages: Value) {
    Mock::given(method("GET"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": messages, "page": 0, "page_size": 20, "next_page_uri": null
        })))
        .mount(twilio)
        .await;
}

/// The login message of these tests as Twilio lists it, created at noon.
fn listed_login_message() -> Value {
    json!([{
        "sid": SID,
        "to": "+14155550123",
        "from": FROM,
        "body": "Your login code is: 482917",
        "status": "queued",
        "date_created": "Sun, 22 Nov 2026 12:00:00 +0000"
    }])
}

/// Twilio takes the message but answers after 5 s (our timeout is shorter);
/// `times`: only for the first so many creates.
async fn mount_late_acceptance(twilio: &MockServer, times: Option<u64>) {
    let mock = Mock::given(method("POST")).respond_with(
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": SID}))
            .set_delay(Duration::from_secs(5)),
    );
    match times {
        Some(n) => mock.up_to_n_times(n).mount(twilio).await,
        None => mock.mount(twilio).await,
    }
}

async fn post_status(app: &TestApp, body: &Value) -> (u16, String) {
    let r = app.post_json("/v1/sms", body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    (
        status,
        v["error"]["code"].as_str().unwrap_or("-").to_owned(),
    )
}

fn ok() -> (u16, String) {
    (200, "-".to_owned())
}

fn refused(status: u16, code: &str) -> (u16, String) {
    (status, code.to_owned())
}

#[tokio::test]
async fn an_outage_of_four_attempts_then_the_fifth_delivers() {
    let (app, clock) = app_at_noon(twilio_503_then_201(4).await, &[]).await;
    let m = login_message("+14155550123", "482917");
    let unavailable = refused(503, "provider_unavailable");
    assert_eq!(
        kratos_attempts(&app, &m, &clock).await,
        vec![
            unavailable.clone(),
            unavailable.clone(),
            unavailable.clone(),
            unavailable,
            ok()
        ],
        "attempts the provider refused cost no quota: the fifth is not rate limited"
    );
    assert_eq!(creates(&app.provider_requests().await), 5);
    // The message was charged once: two more fresh codes fit the
    // recipient's burst of 3.
    assert_eq!(
        post_status(&app, &login_message("+14155550123", "111222")).await,
        ok()
    );
    assert_eq!(
        post_status(&app, &login_message("+14155550123", "333444")).await,
        ok()
    );
    assert_eq!(
        post_status(&app, &login_message("+14155550123", "555666")).await,
        refused(429, "rate_limited")
    );
}

#[tokio::test]
async fn six_failed_attempts_then_a_fresh_code_passes() {
    let (app, clock) = app_at_noon(twilio_503_then_201(6).await, &[]).await;
    let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"); 6]);
    assert_eq!(
        post_status(&app, &login_message("+14155550123", "111222")).await,
        ok()
    );
    assert_eq!(creates(&app.provider_requests().await), 7);
}

#[tokio::test]
async fn budget_refusals_stay_budget_exhausted() {
    let (app, clock) = app_at_noon(
        twilio_503_then_201(0).await,
        &[("PHONE_COURIER__BUDGET__DAILY_TOTAL", "1")],
    )
    .await;
    assert_eq!(
        post_status(&app, &login_message("+14155550123", "482917")).await,
        ok()
    );
    let seen = kratos_attempts(&app, &login_message("+14155550124", "111222"), &clock).await;
    assert_eq!(
        seen,
        vec![refused(429, "budget_exhausted"); 6],
        "the same reason on every attempt, not rate_limited"
    );
    assert_eq!(creates(&app.provider_requests().await), 1);
}

#[tokio::test]
async fn geo_permission_and_premium_refusals_are_remembered() {
    for code in [21408, 21268] {
        let twilio = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(json!({"code": code, "message": "refused", "status": 400})),
            )
            .mount(&twilio)
            .await;
        let (app, clock) = app_at_noon(twilio, &[]).await;
        let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
        assert_eq!(
            seen,
            vec![refused(422, "recipient_unreachable"); 6],
            "{code}"
        );
        assert_eq!(
            creates(&app.provider_requests().await),
            1,
            "{code}: Kratos's retries do not reach Twilio"
        );
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_send_gets_the_outcome_on_its_retry() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": SID}))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&twilio)
        .await;
    let (app, _) = app_at_noon(twilio, &[]).await;
    let m = login_message("+14155550123", "482917");
    // Kratos gives up on the first attempt while Twilio is still answering.
    let hung_up = app
        .client
        .post(app.url("/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(&m)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(hung_up.is_err(), "the first attempt was cut off");
    // The retry joins the send that went on without its request.
    let r = app.post_json("/v1/sms", &m).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sid"], SID);
    assert_eq!(v["duplicate"], true);
    assert_eq!(creates(&app.provider_requests().await), 1);
}

#[tokio::test]
async fn an_acceptance_after_the_timeout_is_found_not_resent() {
    let twilio = MockServer::start().await;
    // Twilio takes the message but answers after our timeout...
    mount_late_acceptance(&twilio, None).await;
    // ...and lists it when asked.
    mount_listing(&twilio, listed_login_message()).await;
    let (app, clock) = app_at_noon(twilio, &[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150")]).await;
    let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"), ok()]);
    let requests = app.provider_requests().await;
    assert_eq!(
        creates(&requests),
        1,
        "exactly one create across all attempts"
    );
    let list = requests
        .iter()
        .find(|r| r.method.as_str() == "GET")
        .expect("the retry asked Twilio");
    let query: Vec<(String, String)> = list.url.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("To".to_owned(), "+14155550123".to_owned())),
        "{query:?}"
    );
}

#[tokio::test]
async fn an_uncertain_send_that_twilio_does_not_have_is_sent_once_more() {
    let twilio = MockServer::start().await;
    mount_late_acceptance(&twilio, Some(1)).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": SID})))
        .mount(&twilio)
        .await;
    mount_listing(&twilio, json!([])).await;
    let (app, clock) = app_at_noon(twilio, &[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150")]).await;
    let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"), ok()]);
    assert_eq!(creates(&app.provider_requests().await), 2);
    // The uncertain attempt kept its quota and the resend used it: the
    // message cost one unit of the recipient's burst of 3, not two.
    let fresh = |code| login_message("+14155550123", code);
    assert_eq!(post_status(&app, &fresh("111222")).await, ok());
    assert_eq!(post_status(&app, &fresh("333444")).await, ok());
    assert_eq!(
        post_status(&app, &fresh("555666")).await,
        refused(429, "rate_limited")
    );
}

#[tokio::test]
async fn a_500_from_twilio_is_uncertain_and_found_on_the_retry() {
    let twilio = MockServer::start().await;
    // A 500 can come after the message was created.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"code": 20500, "message": "internal error", "status": 500})),
        )
        .mount(&twilio)
        .await;
    mount_listing(&twilio, listed_login_message()).await;
    let (app, clock) = app_at_noon(twilio, &[]).await;
    let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"), ok()]);
    assert_eq!(creates(&app.provider_requests().await), 1, "not sent again");
}

#[tokio::test]
async fn an_uncertain_send_is_not_resent_while_twilio_cannot_be_asked() {
    let twilio = MockServer::start().await;
    mount_late_acceptance(&twilio, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&twilio)
        .await;
    let (app, clock) = app_at_noon(twilio, &[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150")]).await;
    let seen = kratos_attempts(&app, &login_message("+14155550123", "482917"), &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"); 6]);
    assert_eq!(
        creates(&app.provider_requests().await),
        1,
        "never resent blindly"
    );
}

/// The fraud guard sees Kratos's attempts as Twilio does: one message. Two
/// refused attempts, the accepted one and three late copies count one code
/// sent; Kratos's confirmation counts once, and a replay of it counts
/// nothing more.
#[tokio::test]
async fn the_fraud_guard_counts_one_code_for_all_of_kratoss_attempts() {
    let (app, clock) = app_at_noon(twilio_503_then_201(2).await, &[]).await;
    let m = login_message("+14155550123", "482917");
    let unavailable = refused(503, "provider_unavailable");
    assert_eq!(
        kratos_attempts(&app, &m, &clock).await,
        vec![unavailable.clone(), unavailable, ok()]
    );
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        assert_eq!(post_status(&app, &m).await, ok(), "a duplicate");
    }
    assert_eq!(creates(&app.provider_requests().await), 3, "one accepted");
    let confirm = json!({"recipients": ["+14155550123"], "flow": "login"});
    for _ in 0..2 {
        assert_eq!(
            app.post_json("/v1/kratos/confirmed", &confirm)
                .await
                .status(),
            200
        );
    }
    let text = metrics_text(&app).await;
    let cc = "{country_code=\"1\"}";
    for (series, expected) in [
        (format!("phone_courier_fraud_codes_sent_total{cc}"), 1.0),
        (
            format!("phone_courier_fraud_codes_confirmed_total{cc}"),
            1.0,
        ),
        (
            "phone_courier_fraud_confirmations_ignored_total{reason=\"never_sent\"}".to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(crate::fraud::metric(&text, &series), expected, "{series}");
    }
}

#[tokio::test]
async fn an_uncertain_send_is_found_with_our_clock_30_s_ahead_of_twilios() {
    use time::format_description::well_known::Rfc2822;
    let twilio = MockServer::start().await;
    // Twilio takes the message but answers after our timeout...
    mount_late_acceptance(&twilio, None).await;
    // ...and dates it by its own clock: noon, while ours read 30 s later
    // (our first attempt's `since` is 30 s after Twilio's `date_created`).
    let noon = time::OffsetDateTime::from_unix_timestamp(NOON as i64).unwrap();
    let mut listed = listed_login_message();
    listed[0]["date_created"] = json!(noon.format(&Rfc2822).unwrap());
    mount_listing(&twilio, listed).await;
    let (app, clock) = app_at_noon(twilio, &[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150")]).await;
    clock.advance(Duration::from_secs(30));

    let m = login_message("+14155550123", "482917");
    let seen = kratos_attempts(&app, &m, &clock).await;
    assert_eq!(seen, vec![refused(503, "provider_unavailable"), ok()]);
    let requests = app.provider_requests().await;
    assert_eq!(
        creates(&requests),
        1,
        "found by reconciling, not sent again"
    );
    let lists: Vec<_> = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .collect();
    assert_eq!(lists.len(), 1, "the retry asked Twilio once");
    let query: Vec<(String, String)> = lists[0].url.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("To".to_owned(), "+14155550123".to_owned())),
        "{query:?}"
    );
    // Kratos's next copy is answered from the ledger with Twilio's sid.
    let r = app.post_json("/v1/sms", &m).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["sid"].as_str(), v["duplicate"].as_bool()),
        (Some(SID), Some(true))
    );
    assert_eq!(creates(&app.provider_requests().await), 1);
}
