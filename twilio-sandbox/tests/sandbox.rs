//! The Twilio sandbox against a real reqwest client over TCP.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use twilio_sandbox::signature;
use twilio_sandbox::{Channel, Fault, Sandbox, SandboxConfig};

const SID: &str = SandboxConfig::DEFAULT_ACCOUNT_SID;
const TOKEN: &str = SandboxConfig::DEFAULT_AUTH_TOKEN;

struct Harness {
    sandbox: Sandbox,
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start() -> Self {
        Self::with(SandboxConfig::default()).await
    }

    async fn with(config: SandboxConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let sandbox = Sandbox::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                sandbox
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            })
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            sandbox,
            base,
            client,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn messages(&self) -> String {
        self.url(&format!("/2010-04-01/Accounts/{SID}/Messages.json"))
    }

    fn calls(&self) -> String {
        self.url(&format!("/2010-04-01/Accounts/{SID}/Calls.json"))
    }

    fn form_request(&self, url: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.client
            .post(url)
            .basic_auth(SID, Some(TOKEN))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encode(form))
    }

    async fn send_sms(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.form_request(&self.messages(), form)
            .send()
            .await
            .expect("send")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("serve");
        }
    }
}

fn encode(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish()
}

fn owned(form: &[(&str, &str)]) -> Vec<(String, String)> {
    form.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const SMS: &[(&str, &str)] = &[
    ("To", "+14155550100"),
    ("From", "+15005550006"),
    ("Body", "Your code is 123456"),
];

fn assert_sid(sid: &str, prefix: &str) {
    assert_eq!(sid.len(), 34, "{sid}");
    assert!(sid.starts_with(prefix), "{sid}");
    assert!(
        sid[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{sid}"
    );
}

/// `Wed, 18 Aug 2010 20:01:40 +0000`
fn assert_rfc2822(date: &str) {
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 6, "{date}");
    assert!(
        ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&parts[0]),
        "{date}"
    );
    assert!(parts[1].len() == 2 && parts[1].chars().all(|c| c.is_ascii_digit()));
    assert_eq!(parts[2].len(), 3);
    assert_eq!(parts[3].len(), 4);
    assert_eq!(parts[4].len(), 8);
    assert_eq!(parts[5], "+0000");
}

async fn twilio_error(response: reqwest::Response, status: u16, code: u64) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

#[tokio::test]
async fn accepts_a_message_and_lists_it() {
    let h = Harness::start().await;
    let response = h.send_sms(SMS).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let sid = body["sid"].as_str().expect("sid").to_owned();
    assert_sid(&sid, "SM");
    assert_eq!(body["account_sid"], SID);
    assert_eq!(body["to"], "+14155550100");
    assert_eq!(body["from"], "+15005550006");
    assert_eq!(body["body"], "Your code is 123456");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["num_media"], "0");
    assert_eq!(body["direction"], "outbound-api");
    assert_eq!(body["api_version"], "2010-04-01");
    assert_eq!(body["price_unit"], "USD");
    assert!(body["price"].is_null() && body["error_code"].is_null() && body["date_sent"].is_null());
    assert!(body["messaging_service_sid"].is_null());
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
    );
    let date = body["date_created"].as_str().expect("date");
    assert_rfc2822(date);
    assert_eq!(body["date_updated"], date);

    let inbox = h.sandbox.inbox();
    assert_eq!(inbox.len(), 1);
    let entry = &inbox[0];
    assert_eq!(entry.sid, sid);
    assert_eq!(entry.channel, Channel::Sms);
    assert_eq!(entry.to, "+14155550100");
    assert_eq!(entry.from, "+15005550006");
    assert_eq!(entry.body.as_deref(), Some("Your code is 123456"));
    assert_eq!(entry.twiml, None);
    assert_eq!(entry.date_created, date);
    assert_eq!(entry.status, "queued");
    assert_eq!(entry.form, owned(SMS));

    let listed: Value = h
        .client
        .get(h.url("/inbox.json"))
        .send()
        .await
        .expect("inbox.json")
        .json()
        .await
        .expect("json");
    let first = &listed["messages"][0];
    assert_eq!(first["sid"], sid.as_str());
    assert_eq!(first["channel"], "sms");
    assert_eq!(first["to"], "+14155550100");
    assert_eq!(first["body"], "Your code is 123456");
    assert_eq!(first["date_created"], date);

    let requests = h.sandbox.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].basic_user.as_deref(), Some(SID));
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(requests[0].form, owned(SMS));
    assert_eq!(requests[0].answered_status, 201);
    h.stop().await;
}

#[tokio::test]
async fn decodes_forms_like_twilio() {
    let h = Harness::start().await;
    // A bare '+' is a space; only %2B is a plus.
    let response = h
        .client
        .post(h.messages())
        .basic_auth(SID, Some(TOKEN))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body("To=%2B14155550100&From=+15005550006&Body=a+b%2Bc")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    let entry = &h.sandbox.inbox()[0];
    assert_eq!(entry.to, "+14155550100");
    assert_eq!(entry.from, " 15005550006");
    assert_eq!(entry.body.as_deref(), Some("a b+c"));
    h.stop().await;
}

#[tokio::test]
async fn messaging_service_and_segments() {
    let h = Harness::start().await;
    let long = "é".repeat(200);
    let response = h
        .send_sms(&[
            ("To", "+14155550100"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", &long),
        ])
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert!(body["from"].is_null());
    assert_eq!(
        body["messaging_service_sid"],
        "MG0123456789abcdef0123456789abcdef"
    );
    assert_eq!(body["status"], "accepted");
    // 'é' is in GSM-7: 200 septets -> 2 segments of 153.
    assert_eq!(body["num_segments"], "2");
    let body: Value = h
        .send_sms(&[("To", "+1"), ("From", "+2"), ("Body", &"ж".repeat(71))])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["num_segments"], "2");
    h.stop().await;
}

#[tokio::test]
async fn accepts_a_call_and_extracts_spoken_text() {
    let h = Harness::start().await;
    let twiml = r#"<Response><Say voice="alice" language="en-US">Your code is 4, 8, 2.</Say><Pause length="1"/><Say voice="alice">Again: 4, 8, 2. Tom &amp; Jerry</Say></Response>"#;
    let form = [
        ("To", "+14155550100"),
        ("From", "+15005550006"),
        ("Twiml", twiml),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "completed"),
        ("Timeout", "30"),
    ];
    let response = h
        .form_request(&h.calls(), &form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let sid = body["sid"].as_str().expect("sid").to_owned();
    assert_sid(&sid, "CA");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+14155550100");
    assert_eq!(body["from"], "+15005550006");
    assert_eq!(body["direction"], "outbound-api");
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{SID}/Calls/{sid}.json")
    );
    assert_rfc2822(body["date_created"].as_str().expect("date"));

    let entry = &h.sandbox.inbox()[0];
    assert_eq!(entry.sid, sid);
    assert_eq!(entry.channel, Channel::Voice);
    assert_eq!(entry.body, None);
    assert_eq!(entry.twiml.as_deref(), Some(twiml));
    assert_eq!(
        entry.spoken_text.as_deref(),
        Some("Your code is 4, 8, 2. Again: 4, 8, 2. Tom & Jerry")
    );
    assert_eq!(entry.form, owned(&form));
    h.stop().await;
}

#[tokio::test]
async fn refuses_missing_or_wrong_credentials() {
    let h = Harness::start().await;
    let expected = serde_json::json!({"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401});

    let no_auth = h
        .client
        .post(h.messages())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(SMS))
        .send()
        .await
        .expect("send");
    assert_eq!(no_auth.status(), 401);
    assert_eq!(no_auth.json::<Value>().await.expect("json"), expected);

    for (user, password) in [
        (SID, "wrong"),
        ("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", TOKEN),
        ("SKnot-hex", TOKEN),
    ] {
        let response = h
            .client
            .post(h.messages())
            .basic_auth(user, Some(password))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encode(SMS))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 401, "{user}");
        assert_eq!(response.json::<Value>().await.expect("json"), expected);
    }
    assert!(h.sandbox.inbox().is_empty());
    let requests = h.sandbox.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.answered_status == 401));
    assert_eq!(requests[0].basic_user, None);
    assert_eq!(requests[1].basic_user.as_deref(), Some(SID));

    // An API key SID with the token is accepted.
    let response = h
        .client
        .post(h.messages())
        .basic_auth("SK0123456789abcdef0123456789abcdef", Some(TOKEN))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(SMS))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    h.stop().await;
}

#[tokio::test]
async fn unknown_account_is_not_found() {
    let h = Harness::start().await;
    let url = h.url("/2010-04-01/Accounts/ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/Messages.json");
    let response = h.form_request(&url, SMS).send().await.expect("send");
    twilio_error(response, 404, 20404).await;
    assert!(h.sandbox.inbox().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn twilio_test_numbers_fail_with_their_codes() {
    let h = Harness::start().await;
    let cases = [
        ("To", "+15005550001", 21211),
        ("To", "+15005550002", 21612),
        ("To", "+15005550003", 21408),
        ("To", "+15005550004", 21610),
        ("To", "+15005550009", 21614),
        ("From", "+15005550001", 21212),
        ("From", "+15005550007", 21606),
        ("From", "+15005550008", 21611),
    ];
    for (field, number, code) in cases {
        let mut form = vec![
            ("To", "+14155550100"),
            ("From", "+15005550006"),
            ("Body", "x"),
        ];
        for pair in &mut form {
            if pair.0 == field {
                pair.1 = number;
            }
        }
        let body = twilio_error(h.send_sms(&form).await, 400, code).await;
        if code == 21211 {
            assert_eq!(
                body["message"],
                "The 'To' number +15005550001 is not a valid phone number."
            );
        }
    }
    assert!(h.sandbox.inbox().is_empty());
    assert_eq!(h.sandbox.requests().len(), cases.len());
    assert_eq!(h.send_sms(SMS).await.status(), 201);
    h.stop().await;
}

#[tokio::test]
async fn enforces_twilio_send_rules() {
    let h = Harness::start().await;
    let body = twilio_error(
        h.send_sms(&[("From", "+1"), ("Body", "x")]).await,
        400,
        21604,
    )
    .await;
    assert_eq!(body["message"], "A 'To' phone number is required.");
    twilio_error(h.send_sms(&[("To", "+1"), ("Body", "x")]).await, 400, 21603).await;
    twilio_error(
        h.send_sms(&[("To", "+1"), ("From", "+2")]).await,
        400,
        21602,
    )
    .await;
    let long = "a".repeat(1601);
    twilio_error(
        h.send_sms(&[("To", "+1"), ("From", "+2"), ("Body", &long)])
            .await,
        400,
        21617,
    )
    .await;
    let exact = "a".repeat(1600);
    assert_eq!(
        h.send_sms(&[("To", "+1"), ("From", "+2"), ("Body", &exact)])
            .await
            .status(),
        201
    );

    // Calls: instructions required, inline TwiML at most 4000 characters.
    let call = |form: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.form_request(&h.calls(), &pairs).send()
    };
    let response = call(vec![("To", "+1".into()), ("From", "+2".into())])
        .await
        .expect("send");
    twilio_error(response, 400, 21205).await;
    let twiml = format!("<Response><Say>{}</Say></Response>", "a".repeat(4000));
    let response = call(vec![
        ("To", "+1".into()),
        ("From", "+2".into()),
        ("Twiml", twiml),
    ])
    .await
    .expect("send");
    let body = twilio_error(response, 400, 20001).await;
    assert!(body["message"].as_str().expect("message").contains("Twiml"));
    assert_eq!(h.sandbox.inbox().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn refuses_bodies_that_are_not_forms() {
    let h = Harness::start().await;
    let response = h
        .client
        .post(h.messages())
        .basic_auth(SID, Some(TOKEN))
        .header("Content-Type", "application/json")
        .body(r#"{"To":"+14155550100","From":"+15005550006","Body":"x"}"#)
        .send()
        .await
        .expect("send");
    let body = twilio_error(response, 400, 20001).await;
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("application/x-www-form-urlencoded"));
    assert!(h.sandbox.inbox().is_empty());
    let requests = h.sandbox.requests();
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json")
    );
    assert!(requests[0].form.is_empty());
    assert_eq!(requests[0].answered_status, 400);

    let huge = "a".repeat(70 * 1024);
    let response = h
        .send_sms(&[("To", "+1"), ("From", "+2"), ("Body", &huge)])
        .await;
    twilio_error(response, 413, 20001).await;
    h.stop().await;
}

#[tokio::test]
async fn schema_catches_unknown_and_malformed_parameters() {
    let h = Harness::start().await;
    let mut form = SMS.to_vec();
    form.push(("Bodyy", "typo"));
    let body = twilio_error(h.send_sms(&form).await, 400, 20001).await;
    assert!(
        body["message"].as_str().expect("message").contains("Bodyy"),
        "{body}"
    );

    let mut form = SMS.to_vec();
    form.push(("ValidityPeriod", "ten minutes"));
    let body = twilio_error(h.send_sms(&form).await, 400, 20001).await;
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("ValidityPeriod"),
        "{body}"
    );

    let mut form = SMS.to_vec();
    form.push(("RiskCheck", "maybe"));
    twilio_error(h.send_sms(&form).await, 400, 20001).await;

    let mut form = SMS.to_vec();
    form.extend([
        ("ValidityPeriod", "300"),
        ("RiskCheck", "disable"),
        ("StatusCallback", "https://example.com/cb"),
    ]);
    // StatusCallback pointing nowhere reachable is fine: failures are only logged.
    assert_eq!(h.send_sms(&form).await.status(), 201);
    assert_eq!(h.sandbox.inbox().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn faults_selected_by_header() {
    let h = Harness::start().await;
    let with = |fault: &str| {
        h.form_request(&h.messages(), SMS)
            .header("X-Sandbox-Fault", fault)
            .send()
    };
    twilio_error(with("500").await.expect("send"), 500, 20500).await;
    twilio_error(with("503").await.expect("send"), 503, 20503).await;
    let response = with("429").await.expect("send");
    assert!(response.headers().get("retry-after").is_none());
    twilio_error(response, 429, 20429).await;
    let response = with("429-retry-after=7").await.expect("send");
    assert_eq!(response.headers()["retry-after"], "7");
    twilio_error(response, 429, 20429).await;

    let response = with("not-json").await.expect("send");
    assert_eq!(response.status(), 201);
    let text = response.text().await.expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let response = with("redirect").await.expect("send");
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().expect("location");
    assert!(
        location.starts_with(&h.base) && location != h.messages(),
        "{location}"
    );

    let dropped = with("drop").await;
    assert!(dropped.is_err(), "{dropped:?}");

    let reset = match with("reset").await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(reset.is_err(), "{reset:?}");

    let started = Instant::now();
    let response = with("latency=150").await.expect("send");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), 201);

    let body = twilio_error(with("teapot").await.expect("send"), 400, 20001).await;
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("teapot"));

    // Only the latency request was accepted; every one was recorded.
    assert_eq!(h.sandbox.inbox().len(), 1);
    let statuses: Vec<u16> = h
        .sandbox
        .requests()
        .iter()
        .map(|r| r.answered_status)
        .collect();
    assert_eq!(
        statuses,
        vec![500, 503, 429, 429, 201, 307, 0, 201, 201, 400]
    );
    assert_eq!(h.sandbox.requests()[6].form, owned(SMS));
    h.stop().await;
}

#[tokio::test]
async fn queued_faults_honour_their_count() {
    let h = Harness::start().await;
    let queued = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"503","count":2}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(queued.status(), 204);
    assert_eq!(h.send_sms(SMS).await.status(), 503);
    assert_eq!(h.send_sms(SMS).await.status(), 503);
    assert_eq!(h.send_sms(SMS).await.status(), 201);
    assert_eq!(h.sandbox.inbox().len(), 1);

    // A header fault wins and does not consume the queue.
    h.sandbox.inject_fault(
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        1,
    );
    let response = h
        .form_request(&h.messages(), SMS)
        .header("X-Sandbox-Fault", "500")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 500);
    let response = h.send_sms(SMS).await;
    assert_eq!(response.headers()["retry-after"], "3");
    twilio_error(response, 429, 20429).await;
    assert_eq!(h.send_sms(SMS).await.status(), 201);

    // Latency via the admin endpoint, then cleared before use.
    let queued = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"latency=5000","count":5}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(queued.status(), 204);
    let cleared = h
        .client
        .delete(h.url("/sandbox/faults"))
        .send()
        .await
        .expect("send");
    assert_eq!(cleared.status(), 204);
    let started = Instant::now();
    assert_eq!(h.send_sms(SMS).await.status(), 201);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Drop via inject_fault: count honoured on calls too.
    h.sandbox.inject_fault(Fault::DropConnection, 1);
    let form = [
        ("To", "+1"),
        ("From", "+2"),
        ("Url", "https://example.com/twiml"),
    ];
    assert!(h.form_request(&h.calls(), &form).send().await.is_err());
    let response = h
        .form_request(&h.calls(), &form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);

    let bad = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"explode"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    h.stop().await;
}

#[tokio::test]
async fn a_standing_fault_fails_every_other_create_until_cleared() {
    let h = Harness::start().await;
    let standing = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"503","every":2}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(standing.status(), 204);
    let form = [
        ("To", "+1"),
        ("From", "+2"),
        ("Url", "https://example.com/twiml"),
    ];
    // Messages and calls share the turn: 503, 201, 503, 201.
    twilio_error(h.send_sms(SMS).await, 503, 20503).await;
    assert_eq!(h.send_sms(SMS).await.status(), 201);
    twilio_error(
        h.form_request(&h.calls(), &form)
            .send()
            .await
            .expect("send"),
        503,
        20503,
    )
    .await;
    assert_eq!(
        h.form_request(&h.calls(), &form)
            .send()
            .await
            .expect("send")
            .status(),
        201
    );
    // Listing takes no turn.
    let list = h
        .client
        .get(h.messages())
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("send");
    assert_eq!(list.status(), 200);
    twilio_error(h.send_sms(SMS).await, 503, 20503).await;
    assert_eq!(h.sandbox.inbox().len(), 2);

    // Not for the relay stand-ins, which have no turn to take.
    let refused = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"503","every":2,"target":"hooks"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 400);

    let cleared = h
        .client
        .delete(h.url("/sandbox/faults"))
        .send()
        .await
        .expect("send");
    assert_eq!(cleared.status(), 204);
    for _ in 0..3 {
        assert_eq!(h.send_sms(SMS).await.status(), 201);
    }
    h.stop().await;
}

#[tokio::test]
async fn account_fetch_checks_credentials() {
    let h = Harness::start().await;
    let url = h.url(&format!("/2010-04-01/Accounts/{SID}.json"));
    let response = h
        .client
        .get(&url)
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["sid"], SID);
    assert_eq!(body["status"], "active");
    assert_eq!(body["type"], "Trial");
    assert!(body["friendly_name"].is_string());
    assert!(body.get("auth_token").is_none());

    let response = h
        .client
        .get(&url)
        .basic_auth(SID, Some("nope"))
        .send()
        .await
        .expect("send");
    twilio_error(response, 401, 20003).await;
    let response = h.client.get(&url).send().await.expect("send");
    twilio_error(response, 401, 20003).await;
    // The readiness probe does not pollute the request log.
    assert!(h.sandbox.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn html_inbox_escapes_and_clears() {
    let h = Harness::start().await;
    let response = h
        .send_sms(&[
            ("To", "+1"),
            ("From", "+2"),
            ("Body", "<script>alert('x')</script>"),
        ])
        .await;
    assert_eq!(response.status(), 201);
    let page = h.client.get(h.url("/inbox")).send().await.expect("send");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/html"));
    let page = page.text().await.expect("text");
    assert!(!page.contains("<script>"));
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(page.contains(r#"<meta http-equiv="refresh" content="5">"#));

    let cleared = h.client.delete(h.url("/inbox")).send().await.expect("send");
    assert_eq!(cleared.status(), 204);
    assert!(h.sandbox.inbox().is_empty());
    assert!(h.sandbox.requests().is_empty());
    let listed: Value = h
        .client
        .get(h.url("/inbox.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listed, serde_json::json!({"messages": []}));
    h.stop().await;
}

#[tokio::test]
async fn inbox_and_request_log_are_bounded() {
    let h = Harness::with(SandboxConfig {
        inbox_capacity: 3,
        ..SandboxConfig::default()
    })
    .await;
    for i in 0..5 {
        let body = format!("message {i}");
        assert_eq!(
            h.send_sms(&[("To", "+1"), ("From", "+2"), ("Body", &body)])
                .await
                .status(),
            201
        );
    }
    let bodies: Vec<String> = h
        .sandbox
        .inbox()
        .into_iter()
        .filter_map(|e| e.body)
        .collect();
    assert_eq!(bodies, vec!["message 4", "message 3", "message 2"]);
    let logged: Vec<String> = h
        .sandbox
        .requests()
        .iter()
        .map(|r| r.form[2].1.clone())
        .collect();
    assert_eq!(logged, vec!["message 2", "message 3", "message 4"]);
    let listed: Value = h
        .client
        .get(h.url("/requests.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["requests"].as_array().map(Vec::len), Some(3));
    h.sandbox.clear();
    assert!(h.sandbox.inbox().is_empty() && h.sandbox.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn other_paths_and_methods() {
    let h = Harness::start().await;
    let health = h.client.get(h.url("/health")).send().await.expect("send");
    assert_eq!(health.status(), 200);
    let response = h
        .client
        .delete(h.messages())
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("send");
    twilio_error(response, 405, 20004).await;
    assert_eq!(h.sandbox.requests()[0].answered_status, 405);
    assert_eq!(h.sandbox.requests()[0].method, "DELETE");
    let response = h.client.get(h.url("/nope")).send().await.expect("send");
    twilio_error(response, 404, 20404).await;
    let response = h
        .client
        .post(h.url(&format!("/2010-04-01/Accounts/{SID}/Messages")))
        .send()
        .await
        .expect("send");
    twilio_error(response, 404, 20404).await;
    h.stop().await;
}

/// Waits (bounded) until the mock server has received `n` requests.
async fn received(server: &wiremock::MockServer, n: usize) -> Vec<wiremock::Request> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let requests = server.received_requests().await.unwrap_or_default();
        if requests.len() >= n || Instant::now() > deadline {
            return requests;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn decode(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn assert_signed(request: &wiremock::Request, url: &str) -> Vec<(String, String)> {
    let form = decode(&request.body);
    let signature = request.headers["x-twilio-signature"]
        .to_str()
        .expect("signature");
    assert_eq!(signature, signature::sign(TOKEN, url, &form));
    assert_ne!(signature, signature::sign("other-token", url, &form));
    assert_eq!(
        request.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    form
}

#[tokio::test]
async fn message_status_callbacks_are_signed() {
    use wiremock::matchers::{method, path};
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/status"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let h = Harness::start().await;
    let callback = format!("{}/status?attempt=1", receiver.uri());
    let mut form = SMS.to_vec();
    form.push(("StatusCallback", &callback));
    let body: Value = h.send_sms(&form).await.json().await.expect("json");
    let sid = body["sid"].as_str().expect("sid");

    let requests = received(&receiver, 2).await;
    assert_eq!(requests.len(), 2);
    let sent = assert_signed(&requests[0], &callback);
    let delivered = assert_signed(&requests[1], &callback);
    assert_eq!(field(&sent, "MessageStatus"), Some("sent"));
    assert_eq!(field(&delivered, "MessageStatus"), Some("delivered"));
    assert_eq!(field(&delivered, "SmsStatus"), Some("delivered"));
    assert_eq!(field(&delivered, "MessageSid"), Some(sid));
    assert_eq!(field(&delivered, "SmsSid"), Some(sid));
    assert_eq!(field(&delivered, "AccountSid"), Some(SID));
    assert_eq!(field(&delivered, "From"), Some("+15005550006"));
    assert_eq!(field(&delivered, "To"), Some("+14155550100"));
    assert_eq!(field(&delivered, "ApiVersion"), Some("2010-04-01"));
    assert_eq!(field(&delivered, "ErrorCode"), None);

    // The undelivered fault reports a delivery failure instead.
    let response = h
        .form_request(&h.messages(), &form)
        .header("X-Sandbox-Fault", "undelivered=30003")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    let requests = received(&receiver, 4).await;
    assert_eq!(requests.len(), 4);
    let failed = assert_signed(&requests[3], &callback);
    assert_eq!(field(&failed, "MessageStatus"), Some("undelivered"));
    assert_eq!(field(&failed, "ErrorCode"), Some("30003"));
    h.stop().await;
}

#[tokio::test]
async fn call_status_callback_reports_completed() {
    use wiremock::matchers::method;
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let h = Harness::start().await;
    let callback = format!("{}/calls/status", receiver.uri());
    let form = [
        ("To", "+14155550100"),
        ("From", "+15005550006"),
        ("Twiml", "<Response><Say>Hi</Say></Response>"),
        ("StatusCallback", &callback),
    ];
    let body: Value = h
        .form_request(&h.calls(), &form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let requests = received(&receiver, 1).await;
    assert_eq!(requests.len(), 1);
    let completed = assert_signed(&requests[0], &callback);
    assert_eq!(field(&completed, "CallSid"), body["sid"].as_str());
    assert_eq!(field(&completed, "CallStatus"), Some("completed"));
    assert_eq!(field(&completed, "Direction"), Some("outbound-api"));
    assert_eq!(field(&completed, "AccountSid"), Some(SID));
    h.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut h = Harness::start().await;
    let request = h
        .form_request(&h.messages(), SMS)
        .header("X-Sandbox-Fault", "latency=300")
        .send();
    let in_flight = tokio::spawn(request);
    // Wait until the request is inside the sandbox (it is recorded only
    // after answering, so poll the TCP side: give the request time to arrive).
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(stop) = h.stop.take() {
        let _ = stop.send(());
    }
    let response = in_flight.await.expect("join").expect("answered");
    assert_eq!(response.status(), 201);
    if let Some(server) = h.server.take() {
        server.await.expect("join").expect("serve");
    }
    assert_eq!(h.sandbox.inbox().len(), 1);
}

impl Harness {
    /// `GET` a list with the account's credentials.
    async fn list(&self, url: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .get(url)
            .basic_auth(SID, Some(TOKEN))
            .query(query)
            .send()
            .await
            .expect("list")
    }

    /// A list page that must answer 200.
    async fn page(&self, url: &str, query: &[(&str, &str)]) -> Value {
        let response = self.list(url, query).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// Creates a message and returns the 201 answer.
    async fn created(&self, form: &[(&str, &str)]) -> Value {
        let response = self.send_sms(form).await;
        assert_eq!(response.status(), 201);
        response.json().await.expect("json")
    }
}

fn sids_of(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {page}"))
        .iter()
        .map(|item| item["sid"].as_str().expect("sid").to_owned())
        .collect()
}

fn sid_of(answer: &Value) -> String {
    answer["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test]
async fn lists_what_was_accepted_as_it_was_answered() {
    let h = Harness::start().await;
    let first = h.created(SMS).await;
    let second = h
        .created(&[
            ("To", "+14155550199"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "Ваш код 654321"),
        ])
        .await;
    let third = h
        .created(&[
            ("To", "+14155550100"),
            ("From", "+15005550006"),
            ("Body", "Your code is 777777"),
        ])
        .await;
    let call = {
        let response = h
            .form_request(
                &h.calls(),
                &[
                    ("To", "+14155550100"),
                    ("From", "+15005550006"),
                    ("Twiml", "<Response><Say>1 2 3</Say></Response>"),
                ],
            )
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.expect("json")
    };

    let page = h.page(&h.messages(), &[]).await;
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    // Newest first, each item exactly the create answer (date_created in
    // RFC 2822, status as answered).
    assert_eq!(
        page,
        serde_json::json!({
            "messages": [third, second, first],
            "end": 2,
            "first_page_uri": format!("{path}?PageSize=50&Page=0"),
            "next_page_uri": null,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": null,
            "start": 0,
            "uri": format!("{path}?PageSize=50&Page=0"),
        })
    );
    assert_eq!(page["messages"][1]["status"], "accepted");
    assert_rfc2822(page["messages"][0]["date_created"].as_str().expect("date"));

    let calls = h.page(&h.calls(), &[]).await;
    assert_eq!(calls["calls"], serde_json::json!([call]));
    assert!(calls.get("messages").is_none());
    assert_eq!(
        calls["uri"],
        format!("/2010-04-01/Accounts/{SID}/Calls.json?PageSize=50&Page=0")
    );

    // Lists are recorded like creates, with their decoded query.
    let requests = h.sandbox.requests();
    let gets: Vec<_> = requests.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 2);
    assert!(gets.iter().all(|r| r.answered_status == 200));
    assert_eq!(gets[0].path, path);
    assert_eq!(gets[0].basic_user.as_deref(), Some(SID));
    let filtered = h
        .page(&h.messages(), &[("To", "+14155550100"), ("PageSize", "20")])
        .await;
    assert_eq!(filtered["messages"], serde_json::json!([third, first]));
    assert_eq!(
        h.sandbox.requests().last().expect("logged").query,
        owned(&[("To", "+14155550100"), ("PageSize", "20")])
    );
    h.stop().await;
}

#[tokio::test]
async fn list_filters_on_to_and_from_after_form_decoding() {
    let h = Harness::start().await;
    let to_a = sid_of(&h.created(SMS).await);
    let to_b = sid_of(
        &h.created(&[
            ("To", "+14155550199"),
            ("From", "+15005550006"),
            ("Body", "b"),
        ])
        .await,
    );
    let from_other = sid_of(
        &h.created(&[
            ("To", "+14155550100"),
            ("From", "+14155550111"),
            ("Body", "c"),
        ])
        .await,
    );
    let service = sid_of(
        &h.created(&[
            ("To", "+14155550100"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "d"),
        ])
        .await,
    );
    let list = |query: &'static [(&'static str, &'static str)]| {
        let h = &h;
        async move { sids_of(&h.page(&h.messages(), query).await, "messages") }
    };
    // reqwest encodes `+` as %2B.
    assert_eq!(
        list(&[("To", "+14155550100")]).await,
        [service.clone(), from_other, to_a.clone()]
    );
    assert_eq!(list(&[("To", "+14155550199")]).await, [to_b]);
    assert_eq!(
        list(&[("To", "+14155550100"), ("From", "+15005550006")]).await,
        [to_a]
    );
    // A message sent through a Messaging Service has no `from` yet.
    assert_eq!(
        list(&[("From", "MG0123456789abcdef0123456789abcdef")]).await,
        Vec::<String>::new()
    );
    assert_eq!(list(&[("To", "")]).await.len(), 4);
    assert!(list(&[("To", "+10000000000")]).await.is_empty());

    // A raw `+` is a space once form-decoded: it matches nothing.
    let raw = h
        .client
        .get(format!("{}?To=+14155550100", h.messages()))
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("send");
    let raw: Value = raw.json().await.expect("json");
    assert_eq!(raw["messages"], serde_json::json!([]));
    assert_eq!(
        h.sandbox.requests().last().expect("logged").query,
        owned(&[("To", " 14155550100")])
    );
    // The filters are kept, encoded, in the paging URIs.
    let page = h
        .page(&h.messages(), &[("To", "+14155550100"), ("PageSize", "1")])
        .await;
    let next = page["next_page_uri"].as_str().expect("next");
    assert!(
        next.starts_with(&format!(
            "/2010-04-01/Accounts/{SID}/Messages.json?To=%2B14155550100&PageSize=1&Page=1&PageToken=PA{service}"
        )),
        "{next}"
    );
    assert_eq!(
        page["first_page_uri"],
        format!("/2010-04-01/Accounts/{SID}/Messages.json?To=%2B14155550100&PageSize=1&Page=0")
    );

    // Calls filter the same way, and never list messages.
    for to in ["+14155550100", "+14155550199"] {
        let response = h
            .form_request(
                &h.calls(),
                &[
                    ("To", to),
                    ("From", "+15005550006"),
                    ("Url", "https://example.com/twiml"),
                ],
            )
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 201);
    }
    let calls = h.page(&h.calls(), &[("To", "+14155550199")]).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(1));
    assert_eq!(calls["calls"][0]["to"], "+14155550199");
    assert_eq!(list(&[]).await.len(), 4);
    h.stop().await;
}

#[tokio::test]
async fn list_pages_follow_next_page_uri() {
    let h = Harness::start().await;
    let mut sids = Vec::new();
    for i in 0..5 {
        let body = format!("code {i}");
        sids.push(sid_of(
            &h.created(&[
                ("To", "+14155550100"),
                ("From", "+15005550006"),
                ("Body", &body),
            ])
            .await,
        ));
    }
    sids.reverse(); // newest first

    let mut pages = Vec::new();
    let mut page = h.page(&h.messages(), &[("PageSize", "2")]).await;
    loop {
        pages.push(page.clone());
        let Some(next) = page["next_page_uri"].as_str() else {
            break;
        };
        assert!(pages.len() < 5, "paging does not end");
        page = h.page(&h.url(next), &[]).await;
    }
    let walked: Vec<Vec<String>> = pages.iter().map(|p| sids_of(p, "messages")).collect();
    assert_eq!(
        walked,
        vec![sids[0..2].to_vec(), sids[2..4].to_vec(), sids[4..].to_vec()]
    );
    let fields = |p: &Value| {
        (
            p["page"].as_u64(),
            p["page_size"].as_u64(),
            p["start"].as_u64(),
            p["end"].as_u64(),
        )
    };
    assert_eq!(fields(&pages[0]), (Some(0), Some(2), Some(0), Some(1)));
    assert_eq!(fields(&pages[1]), (Some(1), Some(2), Some(2), Some(3)));
    assert_eq!(fields(&pages[2]), (Some(2), Some(2), Some(4), Some(4)));
    assert!(pages[0]["previous_page_uri"].is_null());
    assert!(pages[2]["next_page_uri"].is_null());
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    for p in &pages {
        assert_eq!(p["first_page_uri"], format!("{path}?PageSize=2&Page=0"));
    }
    // `uri` is the page itself, token included.
    assert_eq!(
        pages[1]["uri"],
        format!("{path}?PageSize=2&Page=1&PageToken=PA{}", sids[1])
    );

    // A message arriving between pages does not shift the walk.
    let newest = sid_of(&h.created(SMS).await);
    let again = h
        .page(
            &h.url(pages[0]["next_page_uri"].as_str().expect("next")),
            &[],
        )
        .await;
    assert_eq!(sids_of(&again, "messages"), sids[2..4].to_vec());
    // Back from the second page: the page before its first item.
    let back = h
        .page(
            &h.url(pages[1]["previous_page_uri"].as_str().expect("previous")),
            &[],
        )
        .await;
    assert_eq!(sids_of(&back, "messages"), sids[0..2].to_vec());
    assert!(back["previous_page_uri"].is_string(), "{newest} is newer");

    // Offsets without a token, and past the end.
    // (the newest message is first now)
    let second = h
        .page(&h.messages(), &[("PageSize", "2"), ("Page", "1")])
        .await;
    assert_eq!(sids_of(&second, "messages"), sids[1..3].to_vec());
    let beyond = h
        .page(&h.messages(), &[("PageSize", "2"), ("Page", "9")])
        .await;
    assert_eq!(beyond["messages"], serde_json::json!([]));
    assert!(beyond["next_page_uri"].is_null());

    // The limits Twilio documents.
    let all = h.page(&h.messages(), &[("PageSize", "1000")]).await;
    assert_eq!(sids_of(&all, "messages").len(), 6);
    for bad in [
        &[("PageSize", "0")][..],
        &[("PageSize", "1001")],
        &[("PageSize", "many")],
        &[("Page", "-1")],
        &[("PageToken", "not-a-token")],
        &[("DateSent>", "2026-01-01")],
    ] {
        twilio_error(h.list(&h.messages(), bad).await, 400, 20001).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn lists_check_credentials_and_account() {
    let h = Harness::start().await;
    h.created(SMS).await;
    let expected = serde_json::json!({"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401});
    for url in [h.messages(), h.calls()] {
        let none = h.client.get(&url).send().await.expect("send");
        assert_eq!(none.status(), 401);
        assert_eq!(none.json::<Value>().await.expect("json"), expected);
        let wrong = h
            .client
            .get(&url)
            .basic_auth(SID, Some("wrong"))
            .send()
            .await
            .expect("send");
        twilio_error(wrong, 401, 20003).await;
    }
    // Bad credentials are refused before a bad query is looked at.
    let wrong = h
        .client
        .get(h.messages())
        .query(&[("PageSize", "0")])
        .send()
        .await
        .expect("send");
    twilio_error(wrong, 401, 20003).await;
    let other = h
        .list(
            &h.url("/2010-04-01/Accounts/ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/Messages.json"),
            &[],
        )
        .await;
    twilio_error(other, 404, 20404).await;
    let key = h
        .client
        .get(h.messages())
        .basic_auth("SK0123456789abcdef0123456789abcdef", Some(TOKEN))
        .send()
        .await
        .expect("send");
    assert_eq!(key.status(), 200);
    let statuses: Vec<u16> = h
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.answered_status)
        .collect();
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 404, 200]);
    h.stop().await;
}

#[tokio::test]
async fn accept_then_latency_lists_the_message_before_answering() {
    let h = Harness::start().await;
    let hold = Duration::from_millis(800);
    let started = Instant::now();
    let mut create = tokio::spawn(
        h.form_request(&h.messages(), SMS)
            .header("X-Sandbox-Fault", "accept-then-latency=800")
            .send(),
    );
    // The message is listed while its create answer is still held back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let page = h.page(&h.messages(), &[("To", "+14155550100")]).await;
        if let Some(item) = page["messages"].get(0) {
            break item.clone();
        }
        assert!(Instant::now() < deadline, "never listed");
        assert!(!create.is_finished(), "answered before it was listed");
        tokio::task::yield_now().await;
    };
    assert!(!create.is_finished(), "answered before it was listed");
    // Already in the request log as accepted.
    assert!(h
        .sandbox
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.answered_status == 201));

    let response = (&mut create).await.expect("join").expect("answered");
    assert!(started.elapsed() >= hold);
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer, listed);
    assert_eq!(h.sandbox.inbox().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn accept_then_latency_outlives_a_short_client_timeout() {
    let h = Harness::start().await;
    let queued = h
        .client
        .post(h.url("/sandbox/faults"))
        .body(r#"{"fault":"accept-then-latency=1000","count":1}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(queued.status(), 204);
    // The client gives up although the sandbox has the message: the
    // uncertain outcome a client reconciles by listing.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .expect("client");
    let timed_out = impatient
        .post(h.messages())
        .basic_auth(SID, Some(TOKEN))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(SMS))
        .send()
        .await
        .expect_err("the answer is held for longer than the timeout");
    assert!(timed_out.is_timeout(), "{timed_out:?}");
    let page = h.page(&h.messages(), &[("To", "+14155550100")]).await;
    let listed = page["messages"].as_array().expect("messages");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["body"], "Your code is 123456");
    assert_eq!(
        h.sandbox.inbox()[0].sid,
        listed[0]["sid"].as_str().expect("sid")
    );
    // The queued fault was used once: the next create answers at once.
    let started = Instant::now();
    assert_eq!(h.send_sms(SMS).await.status(), 201);
    assert!(started.elapsed() < Duration::from_millis(1000));
    // Lists never take (or consume) faults.
    h.sandbox.inject_fault(Fault::Status503, 1);
    assert_eq!(h.list(&h.messages(), &[]).await.status(), 200);
    assert_eq!(h.send_sms(SMS).await.status(), 503);
    h.stop().await;
}

/// The relay's other side: a signed incoming-text webhook posted to the
/// inbound URL with Twilio's fields, and the Slack and webhook stand-ins
/// recording what they were sent, faults included.
#[tokio::test]
async fn sends_signed_incoming_texts_and_records_slack_and_webhook_posts() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let h = Harness::start().await;
    // No inbound URL yet: a clear refusal.
    let r = h
        .client
        .post(h.url("/sandbox/inbound"))
        .json(&serde_json::json!({"from": "+15556667777", "to": "+15005550006", "body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let service = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/twilio/inbound"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/xml")
                .set_body_string("<Response/>"),
        )
        .mount(&service)
        .await;
    let url = format!("{}/v1/twilio/inbound", service.uri());
    h.sandbox.set_inbound_url(&url);
    let r = h
        .client
        .post(h.url("/sandbox/inbound"))
        .json(&serde_json::json!({
            "from": "32665", "to": "+15005550006", "body": "Code: 482917 & more",
            "message_sid": "SM44444444444444444444444444444444"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["answer"], "<Response/>");
    assert_eq!(answer["message_sid"], "SM44444444444444444444444444444444");
    let got = service.received_requests().await.unwrap();
    assert_eq!(got.len(), 1);
    let form: Vec<(String, String)> = form_urlencoded::parse(&got[0].body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("From"), Some("32665"));
    assert_eq!(field("To"), Some("+15005550006"));
    assert_eq!(field("Body"), Some("Code: 482917 & more"));
    assert_eq!(
        field("MessageSid"),
        Some("SM44444444444444444444444444444444")
    );
    assert_eq!(field("SmsStatus"), Some("received"));
    assert_eq!(field("AccountSid"), Some(SID));
    assert_eq!(
        got[0]
            .headers
            .get("x-twilio-signature")
            .unwrap()
            .to_str()
            .unwrap(),
        signature::sign(TOKEN, &url, &form)
    );
    // The inbox page's form: sent, then back to the inbox.
    let r = h
        .client
        .post(h.url("/sandbox/inbound"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("from=GitHub&to=%2B15005550006&body=hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/inbox");
    assert_eq!(service.received_requests().await.unwrap().len(), 2);

    // Slack answers 500 once (a fault for this channel only), then ok.
    let r = h
        .client
        .post(h.url("/sandbox/faults"))
        .json(&serde_json::json!({"fault": "500", "count": 1, "target": "hooks", "name": "team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for expected in [500, 200] {
        let r = h
            .client
            .post(h.url("/sandbox/slack/team"))
            .json(&serde_json::json!({"text": "MFA code from *Bank*:\n```482917```"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    let r = h
        .client
        .post(h.url("/sandbox/webhooks/ops"))
        .header("content-type", "application/json")
        .header("X-Courier-Signature-256", "sha256=ab")
        .body("{\"body\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let hooks: Value = h
        .client
        .get(h.url("/sandbox/hooks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hooks = hooks["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 3);
    assert_eq!(hooks[0]["kind"], "webhook");
    assert_eq!(hooks[0]["signature"], "sha256=ab");
    assert_eq!(hooks[1]["answered_status"], 200);
    assert_eq!(hooks[2]["answered_status"], 500);
    assert_eq!(hooks[2]["name"], "team");
    let page = h
        .client
        .get(h.url("/inbox"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Slack team"), "{page}");
    assert!(page.contains("MFA code from *Bank*:\n```482917```"));
    assert!(page.contains("action=\"/sandbox/inbound\""));
    // Bad names are not routes.
    let r = h
        .client
        .post(h.url("/sandbox/slack/a%2Fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
