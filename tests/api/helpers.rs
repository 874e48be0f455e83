#![allow(dead_code)]
//! Test harness: the real server on port 0, a mock Twilio (wiremock) on
//! port 0, a real HTTP client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use kratos_phone_courier::clock::Clock;
use kratos_phone_courier::config::{Config, Sources};
use kratos_phone_courier::http::app::App;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-7f3a";
pub const FROM: &str = "+15005550006";
pub const KRATOS_USER: &str = "kratos";
pub const KRATOS_PASSWORD: &str = "courier-password-91b2";
pub const MESSAGES_PATH: &str =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
pub const CALLS_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub twilio: MockServer,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
}

/// Rates the tests of the limiters count on, set in every [`base_env`];
/// the busy-hour simulation removes them to run the shipped defaults.
pub const FIXED_RATES: [(&str, &str); 5] = [
    ("PHONE_COURIER__LIMITS__SMS__RECIPIENT__PER_HOUR", "5"),
    ("PHONE_COURIER__LIMITS__SMS__RECIPIENT__BURST", "3"),
    ("PHONE_COURIER__LIMITS__SMS__IP__PER_HOUR", "10"),
    ("PHONE_COURIER__LIMITS__SMS__IP__BURST", "5"),
    ("PHONE_COURIER__FRAUD__PREFIX_MIN_UNCONFIRMED_PER_HOUR", "3"),
];

/// The environment for a standard app: basic auth, Twilio pointed at `base`.
pub fn base_env(base: &str) -> HashMap<String, String> {
    [
        ("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0"),
        // Stop at once: the drain is tested on its own (tests/shutdown.rs).
        ("PHONE_COURIER__SERVER__DRAIN_MS", "0"),
        ("PHONE_COURIER__AUTH__BASIC__USERNAME", KRATOS_USER),
        ("PHONE_COURIER__AUTH__BASIC__PASSWORD", KRATOS_PASSWORD),
        ("PHONE_COURIER__TWILIO__BASE_URL", base),
        ("PHONE_COURIER__TWILIO__ACCOUNT_SID", ACCOUNT_SID),
        ("PHONE_COURIER__TWILIO__AUTH_TOKEN", AUTH_TOKEN),
        ("PHONE_COURIER__TWILIO__FROM", FROM),
        ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "8000"),
        ("PHONE_COURIER__LOG__LEVEL", "trace"),
        // The limiters' behaviour is tested at small, fixed rates (a
        // refusal after 3 codes to one number, 5 from one address, a block
        // suspect after 3 unconfirmed codes), whatever the shipped defaults
        // are sized to (bench/fraud.md): see [`FIXED_RATES`].
        FIXED_RATES[0],
        FIXED_RATES[1],
        FIXED_RATES[2],
        FIXED_RATES[3],
        FIXED_RATES[4],
        (
            "PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START",
            "false",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A Twilio stand-in that accepts every message and call with 201.
pub async fn twilio_accepting() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SM0123456789abcdef0123456789abcdef",
            "status": "queued",
            "account_sid": ACCOUNT_SID
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "CA0123456789abcdef0123456789abcdef",
            "status": "queued"
        })))
        .mount(&server)
        .await;
    server
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start the app with the standard environment, changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    let twilio = twilio_accepting().await;
    spawn_app_against(twilio, tweak).await
}

pub async fn spawn_app_against(
    twilio: MockServer,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let mut env = base_env(&twilio.uri());
    tweak(&mut env);
    let config = Config::load(&Sources { file: None, env }).expect("test config is valid");
    start(config, twilio).await
}

pub async fn start(config: Config, twilio: MockServer) -> TestApp {
    start_with_clock(config, twilio, Clock::system()).await
}

/// Start with a clock the test moves forward (no sleeping).
pub async fn start_with_clock(config: Config, twilio: MockServer, clock: Clock) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(App::with_clock(config, clock).unwrap());
    let background = kratos_phone_courier::startup::spawn_background(app.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        kratos_phone_courier::http::server::run(listener, app, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        background.abort();
    });
    TestApp {
        addr,
        client: reqwest::Client::new(),
        twilio,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST a JSON body with Kratos's credentials.
    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request reaches the server")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post(path, &serde_json::to_string_pretty(body).unwrap())
            .await
    }

    /// Every request the Twilio stand-in received.
    pub async fn provider_requests(&self) -> Vec<wiremock::Request> {
        self.twilio.received_requests().await.unwrap_or_default()
    }

    pub async fn assert_provider_untouched(&self) {
        let got = self.provider_requests().await;
        assert!(got.is_empty(), "Twilio got {} request(s)", got.len());
    }

    /// Trigger shutdown and wait for the server to return.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The decoded form fields of a provider request, in order.
pub fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Authorization header Twilio must receive.
pub fn twilio_basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    )
}

/// Assert the provider got exactly one request on `path`, properly
/// authenticated and form-encoded, and return its fields.
pub async fn single_provider_request(app: &TestApp, path: &str) -> Vec<(String, String)> {
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 1, "Twilio should get exactly one request");
    let r = &got[0];
    assert_eq!(r.method.as_str(), "POST");
    assert_eq!(r.url.path(), path);
    assert_eq!(
        r.headers.get("authorization").unwrap().to_str().unwrap(),
        twilio_basic()
    );
    assert_eq!(
        r.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/x-www-form-urlencoded"
    );
    form(r)
}

/// One of the Kratos payload fixtures, exactly as Kratos renders it.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/kratos/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// A minimal valid SMS message.
pub fn sms_message(recipient: &str) -> Value {
    serde_json::json!({
        "recipient": recipient,
        "body": "Your login code is: 482917",
        "template_type": "login_code_valid",
        "template_data": {"login_code": "482917"},
        "message_type": "sms"
    })
}

pub async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error bodies are JSON");
    (status, body)
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Send raw bytes on a fresh connection and read the answer until the
/// server closes it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless
/// it has already exited: a test that fails or panics half-way leaves no
/// server running. Derefs to the [`std::process::Child`].
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The real `kratos-phone-courier serve` binary with exactly `env`; returns
/// the child (killed when dropped), the address it listens on (read from its
/// log) and its stderr lines, as they come.
pub fn spawn_binary(
    env: &HashMap<String, String>,
) -> (
    KillOnDrop,
    String,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .arg("serve")
            .env_clear()
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let addr = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the service starts");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        // The JSON log format.
        if let Some(rest) = line.split("\"addr\":\"").nth(1) {
            break rest.split('"').next().unwrap().to_owned();
        }
    };
    (child, addr, rx, seen)
}

/// Send SIGTERM to a child process.
pub fn sigterm(child: &std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// 2025-11-22 12:00:00 UTC: tests that move the service's clock start here.
pub const NOON: u64 = 20_414 * 86_400 + 12 * 3600;

/// The app with the standard environment changed by `tweak`, on a clock the
/// test moves (starting at [`NOON`]).
pub async fn app_at_noon(twilio: MockServer, tweak: &[(&str, &str)]) -> (TestApp, Clock) {
    let mut env = base_env(&twilio.uri());
    for (k, v) in tweak {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::load(&Sources { file: None, env }).unwrap();
    let clock = Clock::starting_at(std::time::Duration::from_secs(NOON));
    (start_with_clock(config, twilio, clock.clone()).await, clock)
}

/// A login-code message as Kratos renders it, from one end-user address
/// (as the one proxy in front of Kratos appended it to X-Forwarded-For, the
/// default `limits.client_ip`).
pub fn login_message(recipient: &str, code: &str) -> Value {
    serde_json::json!({
        "recipient": recipient,
        "body": format!("Your login code is: {code}"),
        "template_type": "login_code_valid",
        "template_data": {"login_code": code},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

/// The configuration a test writes as a TOML file (`label` names its
/// folder), over the standard environment without its `[twilio]` variables:
/// for tests that list `[[providers]]` themselves.
pub fn config_from_toml(label: &str, toml: &str) -> Config {
    let dir = std::env::temp_dir().join(format!(
        "kpc-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(&file, toml).unwrap();
    let env = base_env("http://unused")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("PHONE_COURIER__TWILIO__"))
        .collect();
    Config::load(&Sources {
        file: Some(file),
        env,
    })
    .unwrap_or_else(|e| panic!("the {label} test's configuration is valid: {e}"))
}

/// What `/metrics` answers on the API listener (behind the API's auth).
pub async fn metrics_text(app: &TestApp) -> String {
    let r = app
        .client
        .get(app.url("/metrics"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}
