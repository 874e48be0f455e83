//! Reconciling an uncertain send: `TwilioClient::find_message` and
//! `find_call` against the real twilio-sandbox (what it finds, what it does
//! not, paging), and against wiremock for the failures (each an error that
//! forbids a resend, never a panic and never "not found"). Unit tests of
//! `reconcile.rs`, in a file of their own for their length; the service's
//! reconciliation end to end is in `tests/api/exactly_once.rs`.

use std::time::{Duration, SystemTime};

use crate::config::{Config, Sources, TwilioConfig};
use crate::provider::errors::FailureClass;
use crate::provider::reconcile::{RECONCILE_CLOCK_SKEW, RECONCILE_MAX_PAGES, RECONCILE_PAGE_SIZE};
use crate::provider::twilio::{OutgoingCall, OutgoingSms, ProviderError, TwilioClient};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use twilio_sandbox::{Fault, Sandbox, SandboxConfig};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "test-auth-token-7f3a";
const FROM: &str = "+15005550006";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const TO: &str = "+14155550100";

/// What the service needs to start, with Twilio at `base`.
fn base_env(base: &str) -> std::collections::HashMap<String, String> {
    [
        ("PHONE_COURIER__AUTH__BASIC__USERNAME", "kratos"),
        (
            "PHONE_COURIER__AUTH__BASIC__PASSWORD",
            "courier-password-91b2",
        ),
        ("PHONE_COURIER__TWILIO__BASE_URL", base),
        ("PHONE_COURIER__TWILIO__ACCOUNT_SID", ACCOUNT_SID),
        ("PHONE_COURIER__TWILIO__AUTH_TOKEN", AUTH_TOKEN),
        ("PHONE_COURIER__TWILIO__FROM", FROM),
        ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "8000"),
        (
            "PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START",
            "false",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
const OTHER: &str = "+14155550199";

/// The service's Twilio configuration, pointed at `base`.
fn twilio_config(base: &str, extra: &[(&str, &str)]) -> TwilioConfig {
    let mut env = base_env(base);
    for (key, value) in extra {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    Config::load(&Sources { file: None, env }).unwrap().twilio
}

/// A sandbox on a free port, and a client for it.
async fn sandbox_client(extra: &[(&str, &str)]) -> (Sandbox, TwilioClient) {
    let sandbox = Sandbox::new(SandboxConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.serve(listener, std::future::pending()).await }
    });
    let cfg = SandboxConfig::default();
    let mut env = vec![
        (
            "PHONE_COURIER__TWILIO__ACCOUNT_SID",
            cfg.account_sid.as_str(),
        ),
        ("PHONE_COURIER__TWILIO__AUTH_TOKEN", cfg.auth_token.as_str()),
    ];
    env.extend_from_slice(extra);
    let config = twilio_config(&format!("http://{addr}"), &env);
    (sandbox, TwilioClient::new(&config).unwrap())
}

fn sms(to: &str, body: &str) -> OutgoingSms {
    OutgoingSms {
        to: to.to_owned(),
        sender: crate::config::SmsSender::From(crate::phone::SenderId::parse(FROM).unwrap()),
        body: body.to_owned(),
        validity_period: None,
        status_callback: None,
    }
}

fn call(to: &str) -> OutgoingCall {
    OutgoingCall {
        to: to.to_owned(),
        from: FROM.to_owned(),
        twiml: "<Response><Say>1 2 3</Say></Response>".to_owned(),
        status_callback: None,
    }
}

async fn send(client: &TwilioClient, to: &str, body: &str) -> String {
    client.send_sms(&sms(to, body)).await.unwrap().sid.unwrap()
}

fn list_requests(sandbox: &Sandbox) -> Vec<twilio_sandbox::RecordedRequest> {
    sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test]
async fn finds_the_message_sent_since_with_the_same_body() {
    let (sandbox, client) = sandbox_client(&[]).await;
    let since = SystemTime::now();
    send(&client, OTHER, "Your code is 111111").await;
    let sid = send(&client, TO, "Your code is 111111").await;
    send(&client, TO, "Your code is 222222").await;

    let found = client
        .find_message(TO, "Your code is 111111", None, since)
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(sid.as_str()));
    // Another body, another number: not this message.
    assert_eq!(
        client
            .find_message(TO, "Your code is 333333", None, since)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        client
            .find_message("+14155550123", "Your code is 111111", None, since)
            .await
            .unwrap(),
        None
    );
    // Created before `since` (beyond the clock-skew allowance): not this
    // attempt's message. Within the allowance (Twilio's dates are whole
    // seconds): still found.
    assert_eq!(
        client
            .find_message(
                TO,
                "Your code is 111111",
                None,
                since + RECONCILE_CLOCK_SKEW + secs(10)
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        client
            .find_message(
                TO,
                "Your code is 111111",
                None,
                since + RECONCILE_CLOCK_SKEW - secs(2)
            )
            .await
            .unwrap()
            .as_deref(),
        Some(sid.as_str())
    );

    // It asked Twilio's way: To (encoded, decoded back intact) and PageSize.
    let asked = &list_requests(&sandbox)[0];
    assert_eq!(
        asked.path,
        format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            SandboxConfig::DEFAULT_ACCOUNT_SID
        )
    );
    assert_eq!(
        asked.query,
        vec![
            ("To".to_owned(), TO.to_owned()),
            ("PageSize".to_owned(), RECONCILE_PAGE_SIZE.to_string()),
        ]
    );
    assert_eq!(
        asked.basic_user.as_deref(),
        Some(SandboxConfig::DEFAULT_ACCOUNT_SID)
    );
}

#[tokio::test]
async fn follows_next_page_uri_while_the_page_is_recent() {
    let (sandbox, client) = sandbox_client(&[]).await;
    let since = SystemTime::now();
    let target = send(&client, TO, "Your code is 424242").await;
    for i in 0..RECONCILE_PAGE_SIZE + 5 {
        send(&client, TO, &format!("Your code is {i:06}")).await;
    }
    let found = client
        .find_message(TO, "Your code is 424242", None, since)
        .await
        .unwrap();
    assert_eq!(found, Some(target));
    let lists = list_requests(&sandbox);
    assert_eq!(lists.len(), 2);
    assert!(lists[1]
        .query
        .iter()
        .any(|(k, v)| k == "PageToken" && v.starts_with("PASM")));

    // A page that reaches back before `since` ends the search, even with a
    // next page: older pages are older still.
    let found = client
        .find_message(
            TO,
            "Your code is 424242",
            None,
            since + RECONCILE_CLOCK_SKEW + secs(30),
        )
        .await
        .unwrap();
    assert_eq!(found, None);
    assert_eq!(list_requests(&sandbox).len(), 3);
}

#[tokio::test]
async fn too_many_recent_messages_is_inconclusive_not_absent() {
    let (sandbox, client) = sandbox_client(&[]).await;
    let since = SystemTime::now();
    send(&client, TO, "Your code is 999999").await;
    let newer = RECONCILE_PAGE_SIZE as usize * RECONCILE_MAX_PAGES;
    for i in 0..newer {
        send(&client, TO, &format!("Your code is {i:06}")).await;
    }
    let error = client
        .find_message(TO, "Your code is 999999", None, since)
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Inconclusive);
    assert_eq!(error.class(), FailureClass::Transient);
    assert_eq!(list_requests(&sandbox).len(), RECONCILE_MAX_PAGES);
}

#[tokio::test]
async fn finds_the_call_made_since() {
    let (_sandbox, client) = sandbox_client(&[]).await;
    let since = SystemTime::now();
    send(&client, OTHER, "Your code is 111111").await;
    let sid = client.create_call(&call(TO)).await.unwrap().sid.unwrap();
    assert!(sid.starts_with("CA"));

    let found = client.find_call(TO, None, since).await.unwrap();
    assert_eq!(found.as_deref(), Some(sid.as_str()));
    let found = client.find_call(TO, Some(FROM), since).await.unwrap();
    assert_eq!(found.as_deref(), Some(sid.as_str()));
    assert_eq!(
        client
            .find_call(TO, Some("+15005550010"), since)
            .await
            .unwrap(),
        None
    );
    // A message to a number is not a call to it.
    assert_eq!(client.find_call(OTHER, None, since).await.unwrap(), None);
    assert_eq!(
        client
            .find_call(TO, None, since + RECONCILE_CLOCK_SKEW + secs(10))
            .await
            .unwrap(),
        None
    );
    // Calls are not messages either.
    assert_eq!(
        client
            .find_message(TO, "<Response><Say>1 2 3</Say></Response>", None, since)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_send_that_timed_out_is_found_by_reconciling() {
    // The whole uncertain path: the sandbox takes the message but answers
    // after the client's timeout; asking finds it, so it is not sent again.
    let (sandbox, client) = sandbox_client(&[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "300")]).await;
    sandbox.inject_fault(Fault::AcceptThenLatency(Duration::from_millis(3000)), 1);
    let since = SystemTime::now();
    let error = client
        .send_sms(&sms(TO, "Your code is 555555"))
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Timeout);
    let found = client
        .find_message(TO, "Your code is 555555", None, since)
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(sandbox.inbox()[0].sid.as_str()));
    assert_eq!(sandbox.inbox().len(), 1);
}

// ---- wiremock: failures --------------------------------------------------

fn rfc2822(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc2822).unwrap()
}

fn message(sid: &str, to: &str, body: &str, date: &str) -> Value {
    json!({"sid": sid, "to": to, "from": FROM, "body": body, "date_created": date, "status": "queued"})
}

fn page(items: Vec<Value>, next: Option<&str>) -> Value {
    json!({
        "messages": items,
        "next_page_uri": next,
        "page": 0,
        "page_size": 20,
        "start": 0,
        "end": 0,
        "first_page_uri": format!("{MESSAGES_PATH}?PageSize=20&Page=0"),
        "previous_page_uri": null,
        "uri": format!("{MESSAGES_PATH}?PageSize=20&Page=0"),
    })
}

async fn mock_answering(template: ResponseTemplate) -> (MockServer, TwilioClient) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(MESSAGES_PATH))
        .respond_with(template)
        .mount(&server)
        .await;
    let client = TwilioClient::new(&twilio_config(&server.uri(), &[])).unwrap();
    (server, client)
}

const SID_A: &str = "SM0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn reads_a_twilio_page_and_asks_with_to_and_page_size() {
    let now = SystemTime::now();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(MESSAGES_PATH))
        .and(query_param("To", TO))
        .and(query_param("PageSize", "20"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![message(SID_A, TO, "Your code is 1", &rfc2822(now))],
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let client = TwilioClient::new(&twilio_config(&server.uri(), &[])).unwrap();
    let found = client
        .find_message(TO, "Your code is 1", None, now)
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(SID_A));
}

#[tokio::test]
async fn provider_refusals_map_like_create_errors() {
    let cases = [
        (401, 20003, FailureClass::Configuration),
        (404, 20404, FailureClass::Configuration),
        (429, 20429, FailureClass::Transient),
        (503, 20503, FailureClass::Transient),
    ];
    for (status, code, class) in cases {
        let (_server, client) = mock_answering(
            ResponseTemplate::new(status)
                .insert_header("Retry-After", "4")
                .set_body_json(json!({
                    "code": code,
                    "message": "error",
                    "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                    "status": status,
                })),
        )
        .await;
        let error = client
            .find_message(TO, "Your code is 1", None, SystemTime::now())
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ProviderError::Rejected {
                status,
                code: Some(code),
                retry_after: Some(4)
            }
        );
        assert_eq!(error.class(), class, "{status}");
        let text = error.to_string();
        assert!(!text.contains(TO) && !text.contains("code is"), "{text}");
    }
    // A 503 without a JSON body, and a redirect (never followed).
    let (_server, client) =
        mock_answering(ResponseTemplate::new(503).set_body_string("<html>busy</html>")).await;
    let error = client
        .find_message(TO, "x", None, SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 503,
            code: None,
            retry_after: None
        }
    );
    let (_server, client) =
        mock_answering(ResponseTemplate::new(307).insert_header("Location", "/elsewhere")).await;
    let error = client
        .find_message(TO, "x", None, SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(error.class(), FailureClass::Configuration);
}

#[tokio::test]
async fn unreadable_answers_are_errors_not_absences() {
    let now = rfc2822(SystemTime::now());
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        (
            "not JSON",
            ResponseTemplate::new(200).set_body_string("<Response>not json</Response>"),
        ),
        (
            "truncated JSON",
            ResponseTemplate::new(200).set_body_string(r#"{"messages": [{"sid": "SM"#),
        ),
        (
            "no list",
            ResponseTemplate::new(200).set_body_json(json!({})),
        ),
        (
            "the other list",
            ResponseTemplate::new(200).set_body_json(json!({"calls": []})),
        ),
        (
            "not an array",
            ResponseTemplate::new(200).set_body_json(json!({"messages": "none"})),
        ),
        (
            "an undated item",
            ResponseTemplate::new(200).set_body_json(page(
                vec![json!({"sid": SID_A, "to": TO, "body": "x"})],
                None,
            )),
        ),
        (
            "an ISO date",
            ResponseTemplate::new(200).set_body_json(page(
                vec![message(SID_A, TO, "x", "2026-01-01T00:00:00Z")],
                None,
            )),
        ),
        (
            "a match without a sid",
            ResponseTemplate::new(200).set_body_json(page(
                vec![json!({"to": TO, "body": "Your code is 1", "date_created": now})],
                None,
            )),
        ),
    ];
    for (case, template) in cases {
        let (_server, client) = mock_answering(template).await;
        let error = client
            .find_message(TO, "Your code is 1", None, SystemTime::now())
            .await
            .unwrap_err();
        assert_eq!(error, ProviderError::Unreadable, "{case}");
        assert_eq!(error.class(), FailureClass::Transient, "{case}");
    }
}

#[tokio::test]
async fn next_page_uri_is_followed_only_on_the_same_list() {
    let now = rfc2822(SystemTime::now());
    let elsewhere = MockServer::start().await;
    let nexts = [
        format!(
            "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?Page=1",
            elsewhere.uri()
        ),
        format!("//{}{MESSAGES_PATH}?Page=1", elsewhere.address()),
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json?Page=1".to_owned(),
    ];
    for next in &nexts {
        let (server, client) = mock_answering(ResponseTemplate::new(200).set_body_json(page(
            vec![message(SID_A, TO, "another code", &now)],
            Some(next),
        )))
        .await;
        let error = client
            .find_message(TO, "Your code is 1", None, SystemTime::now())
            .await
            .unwrap_err();
        assert_eq!(error, ProviderError::Unreadable, "{next}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }
    // The credentials never left for the other host.
    assert!(elsewhere.received_requests().await.unwrap().is_empty());

    // The same list on the same host is followed, query and all.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(MESSAGES_PATH))
        .and(query_param("PageToken", "PASM0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![message(SID_A, TO, "Your code is 1", &now)], None)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![message(
                "SMffffffffffffffffffffffffffffffff",
                TO,
                "another code",
                &now,
            )],
            Some(&format!(
                "{MESSAGES_PATH}?To=%2B14155550100&PageSize=20&Page=1&PageToken=PASM0"
            )),
        )))
        .mount(&server)
        .await;
    let client = TwilioClient::new(&twilio_config(&server.uri(), &[])).unwrap();
    let found = client
        .find_message(TO, "Your code is 1", None, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(SID_A));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_provider_that_pages_forever_is_inconclusive() {
    let now = rfc2822(SystemTime::now());
    let (server, client) = mock_answering(ResponseTemplate::new(200).set_body_json(page(
        vec![message(SID_A, TO, "another code", &now)],
        Some(&format!("{MESSAGES_PATH}?Page=1&PageToken=PASM0")),
    )))
    .await;
    let error = client
        .find_message(TO, "Your code is 1", None, SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Inconclusive);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        RECONCILE_MAX_PAGES
    );
}

#[tokio::test]
async fn a_slow_list_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![], None))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let config = twilio_config(
        &server.uri(),
        &[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150")],
    );
    let client = TwilioClient::new(&config).unwrap();
    let error = client
        .find_message(TO, "Your code is 1", None, SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Timeout);
    assert_eq!(error.class(), FailureClass::Transient);
}
