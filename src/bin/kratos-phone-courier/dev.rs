//! `serve --dev`: the service and a Twilio sandbox in one process, so a
//! first run needs no Twilio account. Authentication is off and every send
//! lands in the sandbox's inbox.

use std::future::Future;
use std::net::SocketAddr;

use secrecy::SecretString;
use tokio::net::TcpListener;

use kratos_phone_courier::config::{ConfigError, RouteSettings, Settings, Sources, StringList};
use kratos_phone_courier::startup::{self, StartupError};
use twilio_sandbox::{Sandbox, SandboxConfig};

/// The sandbox's preferred port; a free one is used when it is taken.
pub const SANDBOX_PORT: u16 = 4471;
/// The sender used in dev mode: Twilio's magic "valid From" test number.
pub const DEV_FROM: &str = "+15005550006";
/// The demo relay route's sender ("GitHub" texting the shared number).
pub const DEMO_SENDER: &str = "+15556667777";
/// The demo relay route's phone.
pub const DEMO_PHONE: &str = "+14155550123";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("cannot bind the sandbox on loopback: {0}")]
    SandboxBind(std::io::Error),
}

/// Run the service against an in-process sandbox until `shutdown`.
pub async fn run(sources: Sources, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    let mut settings = Settings::load(&sources)?;
    let sandbox_listener = match TcpListener::bind(("127.0.0.1", SANDBOX_PORT)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(DevError::SandboxBind)?,
    };
    let sandbox_addr = sandbox_listener
        .local_addr()
        .map_err(DevError::SandboxBind)?;
    let sandbox_config = SandboxConfig::default();
    apply_dev_overrides(&mut settings, &sandbox_config, sandbox_addr);
    // Bind the API first so the sandbox's delivery-status callbacks can be
    // pointed at it: the whole loop runs in dev mode too.
    let listen: SocketAddr = settings
        .server
        .listen
        .parse()
        .map_err(|_| ConfigError::Invalid {
            key: "server.listen".into(),
            reason: format!("`{}` is not an address:port", settings.server.listen),
        })?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: listen,
            source,
        })?;
    let api = listener.local_addr().map_err(StartupError::Io)?;
    if settings.status_callback.public_url.is_empty() {
        settings.status_callback.public_url = format!("http://{api}");
    }
    apply_demo_relay(&mut settings, api, sandbox_addr);
    let inbound_url = format!(
        "{}/v1/twilio/inbound",
        settings.relay.public_url.trim_end_matches('/')
    );
    let config = settings.check(&sources.env)?;

    let sandbox = Sandbox::new(sandbox_config);
    sandbox.set_inbound_url(inbound_url);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(());
    let sandbox_task = tokio::spawn({
        let sandbox = sandbox.clone();
        async move {
            sandbox
                .serve(sandbox_listener, async move {
                    let _ = stop_rx.changed().await;
                })
                .await
        }
    });

    println!("{}", banner(api, sandbox_addr));
    let result = startup::serve(config, listener, shutdown).await;
    drop(stop_tx);
    let _ = sandbox_task.await;
    result.map_err(DevError::from)
}

/// Point the Twilio settings at the sandbox and turn authentication off.
pub fn apply_dev_overrides(settings: &mut Settings, sandbox: &SandboxConfig, addr: SocketAddr) {
    settings.auth.disabled = true;
    // No load balancer to tell: Ctrl-C stops at once.
    settings.server.drain_ms = 0;
    let t = &mut settings.twilio;
    t.base_url = format!("http://{addr}");
    t.account_sid = Some(sandbox.account_sid.clone());
    t.auth_token = Some(SecretString::from(sandbox.auth_token.clone()));
    t.auth_token_file = None;
    t.api_key_sid = None;
    t.api_key_secret = None;
    t.api_key_secret_file = None;
    t.messaging_service_sid = None;
    t.from = Some(DEV_FROM.to_owned());
    t.voice_from = None;
    t.verify_credentials_on_start = false;
    // The verify API and its demo page (/verify/demo): with authentication
    // off, the page's forms may send.
    settings.verify.enabled = true;
    settings.verify.demo = true;
    // Twilio Lookup against the sandbox, every package: it costs nothing
    // here, and its magic numbers show each path of the policy (a line type
    // called or refused, a swapped SIM, a pumping score, a failed lookup).
    let l = &mut settings.lookup;
    l.enabled = true;
    l.base_url = format!("http://{addr}");
    l.fields = StringList(
        ["line_type_intelligence", "sim_swap", "sms_pumping_risk"]
            .map(str::to_owned)
            .to_vec(),
    );
}

/// Unless the configuration sets up a relay of its own, a demo one: texts
/// from "GitHub" ([`DEMO_SENDER`]) to the dev number are relayed to a phone
/// and to the sandbox's Slack stand-in, both shown in the inbox.
pub fn apply_demo_relay(settings: &mut Settings, api: SocketAddr, sandbox: SocketAddr) {
    let relay = &mut settings.relay;
    if relay.public_url.is_empty() {
        relay.public_url = format!("http://{api}");
    }
    if relay.enabled {
        return;
    }
    relay.enabled = true;
    relay.numbers = StringList(vec![DEV_FROM.to_owned()]);
    relay.routes = vec![RouteSettings {
        name: "GitHub".to_owned(),
        from: StringList(vec![DEMO_SENDER.to_owned(), "GitHub".to_owned()]),
        sms: StringList(vec![DEMO_PHONE.to_owned()]),
        slack: vec![SecretString::from(format!(
            "http://{sandbox}/sandbox/slack/demo"
        ))],
        slack_file: None,
        webhooks: StringList::default(),
    }];
}

/// What a newcomer needs to see a code arrive.
pub fn banner(api: SocketAddr, sandbox: SocketAddr) -> String {
    let sms = r#"{"recipient":"+14155550123","body":"Your login code is: 482917","template_type":"login_code_valid","template_data":{"login_code":"482917","expires_in_minutes":10}}"#;
    let relay = format!(
        r#"{{"from":"{DEMO_SENDER}","to":"{DEV_FROM}","body":"Your GitHub code is 482917"}}"#
    );
    let voice = r#"{"recipient":"+14155550123","body":"Your login code is: 482917","template_type":"login_code_valid","template_data":{"login_code":"482917"}}"#;
    [
        String::new(),
        "kratos-phone-courier is running in dev mode: messages go to the built-in Twilio".into(),
        "sandbox, nothing is really sent, and authentication is OFF (never expose this).".into(),
        String::new(),
        format!("  API:    http://{api}/v1/sms   http://{api}/v1/voice"),
        format!("  Inbox:  http://{sandbox}/inbox   (JSON: http://{sandbox}/inbox.json)"),
        format!("  Verify: http://{api}/verify/demo   (the verify API in a browser)"),
        String::new(),
        "Send a code by SMS:".into(),
        format!("  curl -sS http://{api}/v1/sms -H 'Content-Type: application/json' \\"),
        format!("    -d '{sms}'"),
        String::new(),
        "Or have it spoken by a voice call:".into(),
        format!("  curl -sS http://{api}/v1/voice -H 'Content-Type: application/json' \\"),
        format!("    -d '{voice}'"),
        String::new(),
        "Twilio Lookup is on, against the sandbox: its magic numbers (landline, VoIP, swapped"
            .into(),
        format!("SIM, pumping risk, failed lookup) are listed at http://{sandbox}/inbox"),
        String::new(),
        "Or text a code to the shared number and watch the relay fan it out to a phone and Slack:"
            .into(),
        format!(
            "  curl -sS http://{sandbox}/sandbox/inbound -H 'Content-Type: application/json' \\"
        ),
        format!("    -d '{relay}'"),
        String::new(),
    ]
    .join("\n")
}
