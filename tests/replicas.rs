//! Two replicas of the real binary sharing one real `redis-server`, as two
//! pods behind one Kubernetes Service: Kratos's attempts may land on either,
//! and the answers (and what Twilio receives) must be those of one service.

#[path = "api/helpers.rs"]
mod helpers;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use helpers::*;
use redis_server::RedisServer;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SID: &str = "SM0123456789abcdef0123456789abcdef";

struct Replica {
    _child: KillOnDrop,
    addr: String,
    /// Kept: dropping it would close the child's standard error.
    _logs: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

fn env_for(provider: &str, redis: &RedisServer) -> HashMap<String, String> {
    let mut env = base_env(provider);
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "warn".into());
    env.insert("PHONE_COURIER__STORE__BACKEND".into(), "redis".into());
    env.insert("PHONE_COURIER__STORE__REDIS__URL".into(), redis.url());
    env
}

fn start(env: &HashMap<String, String>) -> Replica {
    let mut env = env.clone();
    env.insert("PHONE_COURIER__LOG__LEVEL".into(), "info".into());
    let (child, addr, logs, _) = spawn_binary(&env);
    Replica {
        _child: child,
        addr,
        _logs: std::sync::Mutex::new(logs),
    }
}

async fn post(client: &reqwest::Client, replica: &Replica, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("http://{}/v1/sms", replica.addr))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(body)
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("-")
}

async fn creates(twilio: &MockServer) -> usize {
    twilio
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

/// WhatsApp on for Brazil, with a sender and a template.
fn with_whatsapp(env: &mut HashMap<String, String>) {
    for (k, v) in [
        ("PHONE_COURIER__WHATSAPP__ENABLED", "true"),
        ("PHONE_COURIER__WHATSAPP__FROM", "+14155550100"),
        (
            "PHONE_COURIER__WHATSAPP__CONTENT_SID",
            "HX0123456789abcdef0123456789abcdef",
        ),
        ("PHONE_COURIER__WHATSAPP__COUNTRIES", "BR"),
    ] {
        env.insert(k.into(), v.into());
    }
}

async fn twilio_accepting(delay: Duration) -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": SID}))
                .set_delay(delay),
        )
        .mount(&twilio)
        .await;
    twilio
}

#[tokio::test]
async fn kratos_attempts_alternating_between_replicas_send_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": SID})))
        .mount(&twilio)
        .await;
    let env = env_for(&twilio.uri(), &redis);
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let mut seen = Vec::new();
    for attempt in 0..6 {
        let (status, v) = post(&client, &replicas[attempt % 2], &m).await;
        seen.push((status, code(&v).to_owned(), v["sid"].clone()));
    }
    let unavailable = (503, "provider_unavailable".to_owned(), Value::Null);
    assert_eq!(seen[..2], [unavailable.clone(), unavailable]);
    assert_eq!(seen[2], (200, "-".to_owned(), json!(SID)));
    for later in &seen[3..] {
        assert_eq!(
            later,
            &(200, "-".to_owned(), json!(SID)),
            "a duplicate, on either replica"
        );
    }
    assert_eq!(
        creates(&twilio).await,
        3,
        "two refused, one accepted, no second send"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_copies_across_replicas_make_one_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::from_millis(300)).await;
    let env = env_for(&twilio.uri(), &redis);
    let replicas = std::sync::Arc::new([start(&env), start(&env)]);
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let mut copies = Vec::new();
    for i in 0..100 {
        let (client, replicas, m) = (client.clone(), replicas.clone(), m.clone());
        copies.push(tokio::spawn(async move {
            post(&client, &replicas[i % 2], &m).await
        }));
    }
    for copy in copies {
        let (status, v) = copy.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["sid"], SID);
    }
    assert_eq!(creates(&twilio).await, 1);
}

#[tokio::test]
async fn limits_and_budget_are_shared_by_the_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::ZERO).await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__BUDGET__DAILY_TOTAL".into(), "4".into());
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    // Five fresh codes to one number, alternated: the recipient's burst is 3.
    let mut sent = 0;
    for i in 0..5 {
        let (status, v) = post(
            &client,
            &replicas[i % 2],
            &login_message("+14155550123", &format!("48291{i}")),
        )
        .await;
        match status {
            200 => sent += 1,
            429 => assert_eq!(code(&v), "rate_limited"),
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(sent, 3, "the burst, not twice the burst");
    // The budget of 4 has one send left, whichever replica asks.
    let (status, _) = post(
        &client,
        &replicas[1],
        // Another block of numbers: the recipient's used up its block's burst.
        &login_message("+14155551124", "111222"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = post(
        &client,
        &replicas[0],
        &login_message("+14155552125", "333444"),
    )
    .await;
    assert_eq!((status, code(&v)), (429, "budget_exhausted"));
    assert_eq!(creates(&twilio).await, 4);
}

#[tokio::test]
async fn a_restarted_replica_still_deduplicates() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::ZERO).await;
    let env = env_for(&twilio.uri(), &redis);
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let first = start(&env);
    assert_eq!(post(&client, &first, &m).await.0, 200);
    drop(first);
    let again = start(&env);
    let (status, v) = post(&client, &again, &m).await;
    assert_eq!(
        (status, v["duplicate"].clone(), v["sid"].clone()),
        (200, json!(true), json!(SID))
    );
    assert_eq!(creates(&twilio).await, 1);
}

/// Kratos hangs up on a slow send, then the replica is told to stop (a
/// rolling deploy): it waits for the send, records the provider's answer,
/// and the retry on the next replica is answered from the ledger, with no
/// second request and no need to ask the provider.
#[tokio::test]
async fn a_stopping_replica_finishes_the_send_whose_request_went_away() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::from_millis(1500)).await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__SERVER__DRAIN_MS".into(), "0".into());
    env.insert(
        "PHONE_COURIER__SERVER__SHUTDOWN_GRACE_MS".into(),
        "5000".into(),
    );
    let mut first = start(&env);
    let m = login_message("+14155550123", "482917");
    let hung_up = {
        let (m, addr) = (m.clone(), first.addr.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/v1/sms"))
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .json(&m)
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while creates(&twilio).await == 0 {
        assert!(Instant::now() < deadline, "the send never started");
        tokio::task::yield_now().await;
    }
    // Kratos gives up on the connection while Twilio takes its time.
    hung_up.abort();
    let _ = hung_up.await;
    sigterm(&first._child);
    let status = tokio::task::spawn_blocking(move || first._child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit 0: {status}");
    let next = start(&env);
    let (status, v) = post(&reqwest::Client::new(), &next, &m).await;
    assert_eq!(
        (status, v["duplicate"].clone(), v["sid"].clone()),
        (200, json!(true), json!(SID)),
        "{v}"
    );
    let requests = twilio.received_requests().await.unwrap_or_default();
    assert_eq!(creates(&twilio).await, 1, "sent once");
    assert!(
        requests.iter().all(|r| r.method.as_str() == "POST"),
        "answered from the ledger, without asking the provider"
    );
}

#[tokio::test]
async fn an_owner_killed_mid_send_is_reconciled_by_the_other_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sandbox = SandboxUnderTest::start().await;
    // The sandbox takes the next message at once but answers 5 s later.
    sandbox.queue_fault("accept-then-latency=5000").await;
    let mut env = env_for(&sandbox.base, &redis);
    env.insert(
        "PHONE_COURIER__TWILIO__ACCOUNT_SID".into(),
        sandbox.account_sid.clone(),
    );
    env.insert(
        "PHONE_COURIER__TWILIO__AUTH_TOKEN".into(),
        sandbox.auth_token.clone(),
    );
    env.insert("PHONE_COURIER__TWILIO__TIMEOUT_MS".into(), "1000".into());
    let owner = start(&env);
    let other = start(&env);
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let first = {
        let (client, m, addr) = (client.clone(), m.clone(), owner.addr.clone());
        tokio::spawn(async move {
            client
                .post(format!("http://{addr}/v1/sms"))
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .json(&m)
                .send()
                .await
        })
    };
    // Once the sandbox has the message, the owner dies before it hears back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.created().await == 0 {
        assert!(Instant::now() < deadline, "the owner never sent");
        tokio::task::yield_now().await;
    }
    drop(owner);
    assert!(
        first.await.unwrap().is_err(),
        "the owner died without answering"
    );
    // Kratos retries on the other replica, a second apart, until it is told
    // 200: the other replica waits out the dead owner's lease, then asks the
    // provider and finds the message.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (status, v) = post(&client, &other, &m).await;
        answers.push(status);
        if status == 200 {
            assert_eq!(v["duplicate"], true);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(answers.last(), Some(&200), "{answers:?}");
    assert_eq!(sandbox.created().await, 1, "never sent twice");
}

#[tokio::test]
async fn redis_going_away_fails_closed_or_falls_back_as_configured() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::ZERO).await;
    let closed = env_for(&twilio.uri(), &redis);
    let mut local = closed.clone();
    local.insert(
        "PHONE_COURIER__STORE__REDIS__ON_ERROR".into(),
        "local".into(),
    );
    let (closed, local) = (start(&closed), start(&local));
    let client = reqwest::Client::new();
    let ready = |r: &Replica| format!("http://{}/health/ready", r.addr);
    assert_eq!(
        client.get(ready(&closed)).send().await.unwrap().status(),
        200
    );
    redis.stop();
    let (status, v) = post(&client, &closed, &login_message("+14155550123", "482917")).await;
    assert_eq!((status, code(&v)), (503, "store_unavailable"));
    let r = client.get(ready(&closed)).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready while Redis is away");
    let (status, _) = post(&client, &local, &login_message("+14155550124", "482917")).await;
    assert_eq!(status, 200, "on_error = local sends from memory");
    assert_eq!(
        client.get(ready(&local)).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        creates(&twilio).await,
        1,
        "the fail-closed replica sent nothing"
    );
    let metrics = client
        .get(format!("http://{}/metrics", local.addr))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("phone_courier_store_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// The Twilio sandbox in this process, for the cases that need Twilio's
/// list endpoint and its accept-then-answer-late fault.
struct SandboxUnderTest {
    base: String,
    account_sid: String,
    auth_token: String,
    client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

impl SandboxUnderTest {
    async fn start() -> Self {
        use twilio_sandbox::{Sandbox, SandboxConfig};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = SandboxConfig::default();
        let (account_sid, auth_token) = (config.account_sid.clone(), config.auth_token.clone());
        let sandbox = Sandbox::new(config);
        let server = tokio::spawn(async move {
            let _ = sandbox.serve(listener, std::future::pending()).await;
        });
        SandboxUnderTest {
            base,
            account_sid,
            auth_token,
            client: reqwest::Client::new(),
            _server: server,
        }
    }

    async fn queue_fault(&self, fault: &str) {
        let r = self
            .client
            .post(format!("{}/sandbox/faults", self.base))
            .json(&json!({"fault": fault, "count": 1}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// Messages the sandbox accepted.
    async fn created(&self) -> usize {
        let v: Value = self
            .client
            .get(format!("{}/inbox.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["messages"].as_array().map_or(0, Vec::len)
    }
}

#[tokio::test]
async fn a_verify_code_requested_on_one_replica_is_checked_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::ZERO).await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__VERIFY__ENABLED".into(), "true".into());
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let call = |i: usize, path: &'static str, body: Value| {
        let client = client.clone();
        let url = format!("http://{}{path}", replicas[i].addr);
        async move {
            let r = client
                .post(url)
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .json(&body)
                .send()
                .await
                .expect("an answer");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let to = "+14155550123";
    assert_eq!(
        call(0, "/v1/verify/request", json!({"to": to})).await.0,
        200
    );
    // A resend on the other replica sends the same code.
    assert_eq!(
        call(1, "/v1/verify/request", json!({"to": to})).await.0,
        200
    );
    let bodies: Vec<String> = twilio
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            form(r)
                .into_iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1]);
    let sent: String = bodies[0]
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    let (status, v) = call(1, "/v1/verify/check", json!({"to": to, "code": sent})).await;
    assert_eq!((status, v), (200, json!({"status": "approved"})));
    let (status, v) = call(0, "/v1/verify/check", json!({"to": to, "code": sent})).await;
    assert_eq!((status, code(&v)), (404, "no_pending_code"));
}

/// `verify.max_checks_per_hour` on two replicas sharing Redis: the checks
/// of one number are counted together, so alternating replicas and fresh
/// codes buys no more guesses; past the cap the right code is refused on
/// either replica.
#[tokio::test]
async fn the_hourly_check_cap_is_shared_by_the_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = twilio_accepting(Duration::ZERO).await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__VERIFY__ENABLED".into(), "true".into());
    env.insert(
        "PHONE_COURIER__VERIFY__MAX_CHECKS_PER_HOUR".into(),
        "6".into(),
    );
    env.insert("PHONE_COURIER__VERIFY__MAX_ATTEMPTS".into(), "3".into());
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let call = |i: usize, path: &'static str, body: Value| {
        let client = client.clone();
        let url = format!("http://{}{path}", replicas[i].addr);
        async move {
            let r = client
                .post(url)
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .json(&body)
                .send()
                .await
                .expect("an answer");
            let status = r.status().as_u16();
            let retry = r.headers().contains_key("retry-after");
            (
                status,
                r.json::<Value>().await.unwrap_or(Value::Null),
                retry,
            )
        }
    };
    let to = "+14155550123";
    let latest_code = || async {
        let got = twilio.received_requests().await.unwrap_or_default();
        let body = form(got.last().unwrap())
            .into_iter()
            .find(|(k, _)| k == "Body")
            .unwrap()
            .1;
        body.chars()
            .filter(char::is_ascii_digit)
            .take(6)
            .collect::<String>()
    };
    let mut answers = Vec::new();
    for (round, replica) in [(0, 0), (1, 1)] {
        let (status, _, _) = call(replica, "/v1/verify/request", json!({"to": to})).await;
        assert_eq!(status, 200, "round {round}");
        let code = latest_code().await;
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        // Three wrong codes, alternating replicas: the code is dropped.
        for i in 0..3 {
            let (status, v, _) = call(
                (replica + i) % 2,
                "/v1/verify/check",
                json!({"to": to, "code": wrong}),
            )
            .await;
            answers.push((status, code_of(&v)));
        }
    }
    assert_eq!(
        answers,
        [
            (422, "code_mismatch".to_owned()),
            (422, "code_mismatch".to_owned()),
            (429, "too_many_attempts".to_owned()),
            (422, "code_mismatch".to_owned()),
            (422, "code_mismatch".to_owned()),
            (429, "too_many_attempts".to_owned()),
        ]
    );
    // A third code is sent, and its right code is refused on both.
    assert_eq!(
        call(0, "/v1/verify/request", json!({"to": to})).await.0,
        200
    );
    let code = latest_code().await;
    for replica in [0, 1] {
        let (status, v, retry) =
            call(replica, "/v1/verify/check", json!({"to": to, "code": code})).await;
        assert_eq!(
            (status, code_of(&v), retry),
            (429, "too_many_checks".to_owned(), true)
        );
    }
    assert_eq!(creates(&twilio).await, 3);
}

fn code_of(v: &Value) -> String {
    code(v).to_owned()
}

/// Twilio Lookup on two replicas sharing Redis: Kratos's six attempts of a
/// message (the first two refused by Twilio's Messages API), alternating
/// between the replicas, cost one lookup; the cache is in the store.
#[tokio::test]
async fn kratos_attempts_on_two_replicas_cost_one_lookup() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "phone_number": "+14155550123",
            "valid": true,
            "line_type_intelligence": {"type": "mobile", "error_code": null}
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": SID})))
        .mount(&twilio)
        .await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
    env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), twilio.uri());
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let mut statuses = Vec::new();
    for attempt in 0..6 {
        statuses.push(post(&client, &replicas[attempt % 2], &m).await.0);
    }
    assert_eq!(statuses, [503, 503, 200, 200, 200, 200]);
    let got = twilio.received_requests().await.unwrap_or_default();
    let lookups: Vec<&str> = got
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .map(|r| r.url.path())
        .collect();
    assert_eq!(lookups, ["/v2/PhoneNumbers/+14155550123"], "one lookup");
    assert_eq!(creates(&twilio).await, 3);
}

/// SMS-to-voice fallback on two replicas sharing Redis, Kratos's six
/// attempts alternating between them, the provider failing some: Twilio
/// answers the SMS 503, then 21614; the call 503, then accepts it. The
/// "not mobile" verdict and the call's ledger outcome live in Redis, so the
/// other replica goes straight to voice and the later attempts are answered
/// with the same call: one call placed in all.
#[tokio::test]
async fn a_21614_fallback_on_two_replicas_places_one_call() {
    use wiremock::matchers::path_regex;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = MockServer::start().await;
    let call_sid = "CA0123456789abcdef0123456789abcdef";
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21614, "message": "'To' number is not a valid mobile number", "status": 400
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": call_sid, "status": "queued"})),
        )
        .mount(&twilio)
        .await;
    let env = env_for(&twilio.uri(), &redis);
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let mut answers = Vec::new();
    for attempt in 0..6 {
        answers.push(post(&client, &replicas[attempt % 2], &m).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [503, 503, 200, 200, 200, 200], "{answers:?}");
    for (_, body) in &answers[2..] {
        assert_eq!(body["channel"], "voice", "{body}");
        assert_eq!(body["fallback"], true, "{body}");
        assert_eq!(body["sid"], call_sid, "{body}");
    }
    let got = twilio.received_requests().await.unwrap_or_default();
    let paths: Vec<&str> = got
        .iter()
        .map(|r| r.url.path().rsplit('/').next().unwrap_or_default())
        .collect();
    // SMS 503 (A), SMS 21614 then call 503 (B), call accepted (A); the
    // last three attempts send nothing.
    assert_eq!(
        paths,
        ["Messages.json", "Messages.json", "Calls.json", "Calls.json"]
    );
}

/// The seam of a Lookup that changes its mind, across two replicas on one
/// Redis: attempt 1 (replica A) finds Lookup down (allowed) and sends the
/// SMS, which Twilio takes but answers too late; attempt 2 (replica B)
/// would get "fixedVoip" (a call) from Lookup. B must reconcile against the
/// SMS the record names, find it, and place no call; every later attempt,
/// on either replica, is answered with the SMS's sid.
#[tokio::test]
async fn a_retry_on_the_other_replica_keeps_the_channel_the_first_attempt_used() {
    use time::format_description::well_known::Rfc2822;
    use wiremock::matchers::path_regex;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"code": 20503, "message": "unavailable", "status": 503})),
        )
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "calling_country_code": "1", "country_code": "US",
            "phone_number": "+14155550123", "valid": true,
            "line_type_intelligence": {"type": "fixedVoip", "error_code": null},
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": SID, "status": "queued"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"}),
        ))
        .mount(&twilio)
        .await;
    let created = time::OffsetDateTime::now_utc().format(&Rfc2822).unwrap();
    Mock::given(method("GET"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{
                "sid": SID, "to": "+14155550123", "from": FROM,
                "body": "Your login code is: 482917", "status": "sent",
                "date_created": created
            }],
            "page": 0, "page_size": 50, "next_page_uri": null
        })))
        .mount(&twilio)
        .await;
    let mut env = env_for(&twilio.uri(), &redis);
    env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
    env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), twilio.uri());
    env.insert("PHONE_COURIER__TWILIO__TIMEOUT_MS".into(), "1000".into());
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let m = login_message("+14155550123", "482917");
    let mut answers = Vec::new();
    for attempt in 0..6 {
        answers.push(post(&client, &replicas[attempt % 2], &m).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [503, 200, 200, 200, 200, 200], "{answers:?}");
    for (_, body) in &answers[1..] {
        assert_eq!(body["channel"], "sms", "{body}");
        assert_eq!(body["sid"], SID, "{body}");
    }
    let got = twilio.received_requests().await.unwrap_or_default();
    let seen: Vec<String> = got
        .iter()
        .map(|r| {
            let last = r.url.path().rsplit('/').next().unwrap_or_default();
            let what = if r.url.path().starts_with("/v2/") {
                "lookup"
            } else {
                last
            };
            format!("{} {what}", r.method)
        })
        .collect();
    // One lookup (attempt 1), one SMS, one list read of Messages (attempt
    // 2 on the other replica); nothing else, and no call.
    assert_eq!(
        seen,
        ["GET lookup", "POST Messages.json", "GET Messages.json"]
    );
}

/// WhatsApp-to-SMS fallback on two replicas sharing Redis, Kratos's six
/// attempts alternating between them, the provider failing some: Twilio
/// answers the WhatsApp message 503, then 63003 (not on WhatsApp); the SMS
/// that stands in 503, then accepts it. The "not on WhatsApp" verdict and
/// the SMS's ledger outcome live in Redis, so the other replica goes
/// straight to SMS and the later attempts are answered with the same SMS:
/// one SMS sent in all.
#[tokio::test]
async fn a_63003_whatsapp_fallback_on_two_replicas_sends_one_sms() {
    use wiremock::matchers::{body_string_contains, path_regex};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let twilio = MockServer::start().await;
    let sms_sid = "SM0123456789abcdef0123456789abcdef";
    let whatsapp = || {
        Mock::given(method("POST"))
            .and(path_regex(r"/Messages\.json$"))
            .and(body_string_contains("To=whatsapp%3A"))
    };
    whatsapp()
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&twilio)
        .await;
    whatsapp()
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 63003, "message": "Channel could not find To address", "status": 400
        })))
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": sms_sid, "status": "queued"})),
        )
        .mount(&twilio)
        .await;
    let mut env = env_for(&twilio.uri(), &redis);
    with_whatsapp(&mut env);
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let m = login_message("+5511987654321", "482917");
    let mut answers = Vec::new();
    for attempt in 0..6 {
        answers.push(post(&client, &replicas[attempt % 2], &m).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [503, 503, 200, 200, 200, 200], "{answers:?}");
    for (_, body) in &answers[2..] {
        assert_eq!(body["channel"], "sms", "{body}");
        assert_eq!(body["fallback"], true, "{body}");
        assert_eq!(body["sid"], sms_sid, "{body}");
    }
    let got = twilio.received_requests().await.unwrap_or_default();
    let to: Vec<String> = got
        .iter()
        .map(|r| {
            form_urlencoded::parse(&r.body)
                .find(|(k, _)| k == "To")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    // WhatsApp 503 (A), WhatsApp 63003 then SMS 503 (B), SMS accepted (A);
    // the last three attempts send nothing.
    assert_eq!(
        to,
        [
            "whatsapp:+5511987654321",
            "whatsapp:+5511987654321",
            "+5511987654321",
            "+5511987654321"
        ]
    );
    let sms = form_urlencoded::parse(&got[3].body)
        .into_owned()
        .collect::<Vec<_>>();
    assert!(
        sms.contains(&("Body".into(), "Your login code is: 482917".into())),
        "{sms:?}"
    );
}

/// A WhatsApp message's later news on two replicas sharing Redis: the
/// message was sent by replica A, its status callbacks reach either
/// replica, and A's receipt timer (`whatsapp.fallback_after_ms`, short
/// here: real binaries keep real time) fires later. Of three messages, X
/// gets a `delivered` receipt (on B), Y gets nothing, Z is reported
/// undelivered with 63003 on both replicas at once: one SMS to Y, one to Z,
/// none to X.
#[tokio::test]
async fn whatsapp_receipts_and_failures_on_either_replica_send_each_sms_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wiremock::matchers::{body_string_contains, path_regex};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    const PUBLIC_URL: &str = "http://courier.example.test";
    // Long enough that the sends and callbacks below come before the
    // timers even on a loaded 2-core CI machine (3 s was not: five sends
    // and callbacks to real binaries took longer while the other replica
    // tests ran beside it).
    const FALLBACK_AFTER_MS: &str = "8000";
    const X: &str = "+5511987654321";
    const Y: &str = "+5511987654322";
    const Z: &str = "+5511987654323";
    struct Numbered(AtomicUsize);
    impl wiremock::Respond for Numbered {
        fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": format!("SMwa{n:030}"), "status": "queued"}))
        }
    }
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .and(body_string_contains("To=whatsapp%3A"))
        .respond_with(Numbered(AtomicUsize::new(0)))
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": SID})))
        .mount(&twilio)
        .await;
    let mut env = env_for(&twilio.uri(), &redis);
    with_whatsapp(&mut env);
    for (k, v) in [
        (
            "PHONE_COURIER__WHATSAPP__FALLBACK_AFTER_MS",
            FALLBACK_AFTER_MS,
        ),
        ("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL),
    ] {
        env.insert(k.into(), v.into());
    }
    let replicas = [start(&env), start(&env)];
    let client = reqwest::Client::new();
    let sent_at = Instant::now();
    for (n, to) in [X, Y, Z].into_iter().enumerate() {
        // With the code's lifetime: a record is kept only while it lives.
        let mut m = login_message(to, "482917");
        m["template_data"]["expires_in_minutes"] = json!(10);
        let (status, body) = post(&client, &replicas[0], &m).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["sid"], format!("SMwa{n:030}"), "{body}");
    }
    let callback = |replica: &Replica, sid: String, to: &str, status: &str, error: Option<&str>| {
        let mut params = vec![
            ("MessageSid".to_owned(), sid),
            ("MessageStatus".to_owned(), status.to_owned()),
            ("To".to_owned(), format!("whatsapp:{to}")),
        ];
        if let Some(code) = error {
            params.push(("ErrorCode".to_owned(), code.to_owned()));
        }
        let signature = kratos_phone_courier::provider::signature::compute(
            AUTH_TOKEN,
            &format!("{PUBLIC_URL}/v1/twilio/status"),
            &params,
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        client
            .post(format!("http://{}/v1/twilio/status", replica.addr))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .body(body)
            .send()
    };
    let sid = |n: usize| format!("SMwa{n:030}");
    // X delivered, reported to B.
    let r = callback(&replicas[1], sid(0), X, "delivered", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Z undelivered, reported to both at once (Twilio retried).
    let (a, b) = tokio::join!(
        callback(&replicas[0], sid(2), Z, "undelivered", Some("63003")),
        callback(&replicas[1], sid(2), Z, "undelivered", Some("63003")),
    );
    assert_eq!(
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16()),
        (204, 204)
    );
    assert!(
        sent_at.elapsed() < Duration::from_millis(FALLBACK_AFTER_MS.parse().unwrap()),
        "the callbacks came after the timers: the test proves nothing"
    );
    // Y's SMS comes when A's timer fires; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let sms_to = loop {
        let got = twilio.received_requests().await.unwrap_or_default();
        let sms_to: Vec<String> = got
            .iter()
            .filter_map(|r| {
                form_urlencoded::parse(&r.body)
                    .find(|(k, _)| k == "To")
                    .map(|(_, v)| v.into_owned())
            })
            .filter(|to| !to.starts_with("whatsapp:"))
            .collect();
        if sms_to.iter().any(|to| to == Y) {
            break sms_to;
        }
        assert!(Instant::now() < deadline, "no SMS to Y: {sms_to:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut sms_to = sms_to;
    sms_to.sort();
    assert_eq!(sms_to, [Y, Z]);
}
