//! `serve --dev`: the service and a Twilio sandbox in one process, so a
//! first run needs no Twilio account. Authentication is off and every send
//! lands in the sandbox's inbox.
//!
//! `serve --dev --failover` runs two sandboxes as `[[providers]]`: a
//! Twilio-flavor primary that answers every other create request with a
//! 503, and a SignalWire-flavor secondary, so failover can be watched in the
//! two inbox pages and in `/metrics` without an outage of one's own.

use std::future::Future;
use std::net::SocketAddr;

use secrecy::SecretString;
use tokio::net::TcpListener;

use kratos_phone_courier::config::{
    ConfigError, ProviderSettings, RouteSettings, Settings, SignalWireSettings, Sources,
    StringList, TwilioSettings,
};
use kratos_phone_courier::phone::{CountryId, Sender, E164};
use kratos_phone_courier::startup::{self, StartupError};
use twilio_sandbox::{Fault, Sandbox, SandboxConfig};

/// The sandbox's preferred port; a free one is used when it is taken.
pub const SANDBOX_PORT: u16 = 4471;
/// The secondary sandbox's preferred port (`--failover`).
pub const SECONDARY_PORT: u16 = 4472;
/// With `--failover`, the primary fails one create request in this many
/// (the first, the third…): every other send shows a failover, and the
/// primary's circuit never opens (no two failures in a row).
pub const PRIMARY_FAILS_EVERY: usize = 2;
/// The providers' names in `--failover`: the labels in metrics and logs.
pub const PRIMARY_NAME: &str = "twilio";
pub const SECONDARY_NAME: &str = "signalwire";
/// The sender used in dev mode: Twilio's magic "valid From" test number.
pub const DEV_FROM: &str = "+15005550006";
/// The WhatsApp template `serve --dev` names (the sandbox takes any).
pub const DEV_CONTENT_SID: &str = "HX00000000000000000000000000000de5";
/// The one country whose codes `serve --dev` sends by WhatsApp.
pub const DEV_WHATSAPP_COUNTRY: &str = "BR";
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

/// A loopback listener on `port`, or on a free one when it is taken.
async fn bind_loopback(port: u16) -> Result<(TcpListener, SocketAddr), DevError> {
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(DevError::SandboxBind)?,
    };
    let addr = listener.local_addr().map_err(DevError::SandboxBind)?;
    Ok((listener, addr))
}

/// Run the service against an in-process sandbox (two with `failover`)
/// until `shutdown`.
pub async fn run(
    sources: Sources,
    failover: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let mut settings = Settings::load(&sources)?;
    let (sandbox_listener, sandbox_addr) = bind_loopback(SANDBOX_PORT).await?;
    let sandbox_config = SandboxConfig::default();
    apply_dev_overrides(&mut settings, &sandbox_config, sandbox_addr);
    let secondary = if failover {
        let (listener, addr) = bind_loopback(SECONDARY_PORT).await?;
        let config = SandboxConfig::signalwire();
        apply_failover(&mut settings, &config, addr);
        Some((Sandbox::new(config), listener, addr))
    } else {
        None
    };
    // Bind the API first so the sandbox's delivery-status callbacks can be
    // pointed at it: the whole loop runs in dev mode too.
    let listen = settings.server.listen;
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
    if secondary.is_some() {
        sandbox.fail_every(Fault::Status503, PRIMARY_FAILS_EVERY);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut tasks = vec![spawn_sandbox(sandbox, sandbox_listener, stop_rx.clone())];
    let secondary_addr = secondary.map(|(sandbox, listener, addr)| {
        tasks.push(spawn_sandbox(sandbox, listener, stop_rx));
        addr
    });

    println!("{}", banner(api, sandbox_addr, secondary_addr));
    let result = startup::serve(config, listener, shutdown).await;
    drop(stop_tx);
    for task in tasks {
        let _ = task.await;
    }
    result.map_err(DevError::from)
}

/// Serve a sandbox until the service has stopped (the sender is dropped).
fn spawn_sandbox(
    sandbox: Sandbox,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        sandbox
            .serve(listener, async move {
                let _ = stop.changed().await;
            })
            .await
    })
}

/// Point the Twilio settings at the sandbox and turn authentication off.
/// A provider list of the configuration file gives way to the sandbox too.
pub fn apply_dev_overrides(settings: &mut Settings, sandbox: &SandboxConfig, addr: SocketAddr) {
    settings.auth.disabled = true;
    settings.providers.clear();
    // No load balancer to tell: Ctrl-C stops at once.
    settings.server.drain = std::time::Duration::ZERO;
    let t = &mut settings.twilio;
    t.base_url = Some(format!("http://{addr}"));
    t.account_sid = Some(sandbox.account_sid.clone());
    t.auth_token = Some(SecretString::from(sandbox.auth_token.clone()));
    t.auth_token_file = None;
    t.api_key_sid = None;
    t.api_key_secret = None;
    t.api_key_secret_file = None;
    t.messaging_service_sid = None;
    t.from = Some(DEV_FROM.to_owned());
    t.voice_from = None;
    t.verify_credentials_on_start = Some(false);
    // The verify API and its demo page (/verify/demo): with authentication
    // off, the page's forms may send.
    settings.verify.enabled = true;
    settings.verify.demo = true;
    // The sandbox's magic numbers all sit in +1 415 555 01xx, one block of
    // 1000: a newcomer trying them must not meet limits.*.prefix (a real
    // deployment's blocks hold real people; this one holds a test suite).
    for rates in [
        &mut settings.limits.sms,
        &mut settings.limits.voice,
        &mut settings.limits.whatsapp,
    ] {
        rates.prefix.per_hour = 0;
    }
    // WhatsApp for one demo country, so a newcomer sees the channel: a code
    // to a Brazilian number goes as the (made-up) template, and the
    // sandbox's not-on-WhatsApp number shows the SMS standing in.
    let w = &mut settings.whatsapp;
    w.enabled = true;
    w.from = Some(DEV_FROM.to_owned());
    w.messaging_service_sid = None;
    w.content_sid = Some(DEV_CONTENT_SID.to_owned());
    w.countries = CountryId::parse(DEV_WHATSAPP_COUNTRY).into_iter().collect();
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

/// `--failover`: the `[twilio]` section [`apply_dev_overrides`] pointed at
/// the primary sandbox becomes the first of two `[[providers]]` (the two
/// must not both be set), and the SignalWire space at `addr` the second.
pub fn apply_failover(settings: &mut Settings, secondary: &SandboxConfig, addr: SocketAddr) {
    let primary = TwilioSettings {
        name: Some(PRIMARY_NAME.to_owned()),
        verify_credentials_on_start: Some(false),
        ..std::mem::take(&mut settings.twilio)
    };
    // The sandbox signs its callbacks with its auth token, which SignalWire
    // calls the signing key.
    let token = SecretString::from(secondary.auth_token.clone());
    let signalwire = SignalWireSettings {
        name: Some(SECONDARY_NAME.to_owned()),
        space_url: Some(format!("http://{addr}")),
        project_id: Some(secondary.account_sid.clone()),
        api_token: Some(token.clone()),
        signing_key: Some(token),
        from: Some(DEV_FROM.to_owned()),
        timeout_ms: primary.timeout_ms,
        connect_timeout_ms: primary.connect_timeout_ms,
        max_in_flight: primary.max_in_flight,
        verify_credentials_on_start: Some(false),
        ..SignalWireSettings::default()
    };
    let (primary, signalwire) = (
        ProviderSettings::Twilio(primary),
        ProviderSettings::SignalWire(signalwire),
    );
    settings.providers = vec![primary, signalwire];
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
    relay.numbers = E164::parse(DEV_FROM).into_iter().collect();
    relay.routes = vec![RouteSettings {
        name: "GitHub".to_owned(),
        from: [DEMO_SENDER, "GitHub"]
            .iter()
            .filter_map(|s| Sender::parse(s))
            .collect(),
        sms: E164::parse(DEMO_PHONE).into_iter().collect(),
        slack: vec![SecretString::from(format!(
            "http://{sandbox}/sandbox/slack/demo"
        ))],
        slack_file: None,
        webhooks: StringList::default(),
    }];
}

/// What a newcomer needs to see a code arrive (and, with a `secondary`
/// sandbox, where each provider's messages land).
pub fn banner(api: SocketAddr, sandbox: SocketAddr, secondary: Option<SocketAddr>) -> String {
    let sms = r#"{"recipient":"+14155550123","body":"Your login code is: 482917","template_type":"login_code_valid","template_data":{"login_code":"482917","expires_in_minutes":10}}"#;
    let relay = format!(
        r#"{{"from":"{DEMO_SENDER}","to":"{DEV_FROM}","body":"Your GitHub code is 482917"}}"#
    );
    let whatsapp = r#"{"recipient":"+5511987654321","body":"Your login code is: 482917","template_type":"login_code_valid","template_data":{"login_code":"482917","expires_in_minutes":10}}"#;
    let voice = r#"{"recipient":"+14155550123","body":"Your login code is: 482917","template_type":"login_code_valid","template_data":{"login_code":"482917"}}"#;
    let inboxes = match secondary {
        None => vec![format!(
            "  Inbox:  http://{sandbox}/inbox   (JSON: http://{sandbox}/inbox.json)"
        )],
        Some(secondary) => vec![
            format!(
                "  Inbox:  http://{sandbox}/inbox   (JSON: http://{sandbox}/inbox.json)"
            ),
            format!(
                "          provider 1 \"{PRIMARY_NAME}\": a Twilio sandbox that answers every other request with a 503"
            ),
            format!(
                "  Inbox:  http://{secondary}/inbox   (JSON: http://{secondary}/inbox.json)"
            ),
            format!(
                "          provider 2 \"{SECONDARY_NAME}\": a SignalWire sandbox that carries what the first could not"
            ),
            format!(
                "  Metrics: http://{api}/metrics   (phone_courier_provider_failovers_total, phone_courier_provider_requests_total)"
            ),
        ],
    };
    let (intro, sandboxes) = match secondary {
        None => (
            "kratos-phone-courier is running in dev mode: messages go to the built-in Twilio",
            "sandbox",
        ),
        Some(_) => (
            "kratos-phone-courier is running in dev mode with failover: messages go to two built-in",
            "sandboxes",
        ),
    };
    let mut lines: Vec<String> = vec![
        String::new(),
        intro.into(),
        format!(
            "{sandboxes}, nothing is really sent, and authentication is OFF (never expose this)."
        ),
        String::new(),
        format!("  API:    http://{api}/v1/sms   http://{api}/v1/voice"),
    ];
    lines.extend(inboxes);
    lines.extend([
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
        format!("A code to a number in {DEV_WHATSAPP_COUNTRY} goes by WhatsApp (to +5511987650063, not on WhatsApp,"),
        "the sandbox reports it undelivered and the code comes by SMS; to +5511987650064 it is".into(),
        "never delivered, and the SMS comes after whatsapp.fallback_after_ms, 60 s):".into(),
        format!("  curl -sS http://{api}/v1/sms -H 'Content-Type: application/json' \\"),
        format!("    -d '{whatsapp}'"),
        String::new(),
        "Every path has a magic number (walk-through: docs/src/try-it.md; listed on the inbox page):"
            .into(),
        "  +14155550171 … 184  Twilio Lookup (on, against the sandbox): 171/172 a landline and".into(),
        "                      a fixed VoIP line get a call; 173, 175-180 line types refused;".into(),
        "                      182 a swapped SIM, 183 a pumping risk: refused; 184 Lookup fails,".into(),
        "                      and the SMS goes anyway (lookup.on_error = \"allow\")".into(),
        "  +14155550191 … 193  SMS reported undelivered: 191, 192 then get a call; 193 does not".into(),
        format!(
            "  +15005550009        Twilio's {}, not a mobile: a call at once",
            kratos_phone_courier::provider::errors::NOT_MOBILE
        ),
        "  +15005550001 … 004  Twilio's unreachable recipients: 422 recipient_unreachable".into(),
        "A curl request carries no client address, so all of them share one small limit".into(),
        "(limits.*.unknown_ip): to try every number in one go, start with".into(),
        "PHONE_COURIER__LIMITS__ENABLED=false.".into(),
        String::new(),
        "Or text a code to the shared number and watch the relay fan it out to a phone and Slack:"
            .into(),
        format!(
            "  curl -sS http://{sandbox}/sandbox/inbound -H 'Content-Type: application/json' \\"
        ),
        format!("    -d '{relay}'"),
        String::new(),
    ]);
    lines.join("\n")
}
