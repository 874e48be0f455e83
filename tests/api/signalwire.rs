//! SignalWire as a provider: the status callback it is given, its signed
//! callbacks at `/v1/signalwire/status` (and only there: each path takes
//! only its own kind of provider's keys), and the configuration of a
//! provider list.

use kratos_phone_courier::config::{Config, Sources};
use kratos_phone_courier::provider::signature;
use twilio_sandbox::Fault;

use crate::failover::{creates, two_providers, two_providers_with, SW_FROM, SW_TOKEN};
use crate::helpers::*;

const PUBLIC: &str = "https://courier.example.com";

fn callback_form(sid: &str) -> Vec<(String, String)> {
    pairs(&[
        ("MessageSid", sid),
        ("MessageStatus", "delivered"),
        ("To", "+14155550123"),
        ("From", SW_FROM),
    ])
}

async fn post_callback(
    app: &TestApp,
    path: &str,
    header: &str,
    signature: &str,
    form: &[(String, String)],
) -> u16 {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    app.client
        .post(app.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(header, signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn signalwire_is_given_its_own_callback_url_and_its_signed_callbacks_count() {
    let p = two_providers(
        &format!("[status_callback]\npublic_url = \"{PUBLIC}\"\n"),
        2000,
    )
    .await;
    p.primary.inject_fault(Fault::Status503, 1);
    let r = p
        .app
        .post_json("/v1/sms", &login_message("+14155550123", "482917"))
        .await;
    assert_eq!(r.status(), 200);
    // Each provider is told its own path.
    let twilio_cb = format!("{PUBLIC}/v1/twilio/status");
    let sw_cb = format!("{PUBLIC}/v1/signalwire/status");
    assert_eq!(
        creates(&p.primary)[0].last(),
        Some(&("StatusCallback".to_owned(), twilio_cb.clone()))
    );
    assert_eq!(
        creates(&p.secondary),
        vec![pairs(&[
            ("To", "+14155550123"),
            ("From", SW_FROM),
            ("Body", "Your login code is: 482917"),
            ("StatusCallback", &sw_cb),
        ])]
    );
    let sid = p.secondary.inbox()[0].sid.clone();
    let form = callback_form(&sid);
    let signed = signature::compute(SW_TOKEN, &sw_cb, &form);
    let path = "/v1/signalwire/status";
    // Signed with the signing key for this URL: counted, under either
    // header name.
    assert_eq!(
        post_callback(&p.app, path, "X-SignalWire-Signature", &signed, &form).await,
        204
    );
    assert_eq!(
        post_callback(&p.app, path, "X-Twilio-Signature", &signed, &form).await,
        204
    );
    // Signed for the other path, with another key, or tampered: refused.
    let other_url = signature::compute(SW_TOKEN, &twilio_cb, &form);
    assert_eq!(
        post_callback(&p.app, path, "X-SignalWire-Signature", &other_url, &form).await,
        403
    );
    let other_key = signature::compute("not-the-key", &sw_cb, &form);
    assert_eq!(
        post_callback(&p.app, path, "X-SignalWire-Signature", &other_key, &form).await,
        403
    );
    let mut tampered = form.clone();
    tampered[1].1 = "failed".into();
    assert_eq!(
        post_callback(&p.app, path, "X-SignalWire-Signature", &signed, &tampered).await,
        403
    );
    // Twilio's path takes only Twilio's keys: SignalWire's key signing for
    // it is refused, under either header.
    for header in ["X-SignalWire-Signature", "X-Twilio-Signature"] {
        assert_eq!(
            post_callback(&p.app, "/v1/twilio/status", header, &other_url, &form).await,
            403,
            "{header}"
        );
    }
    let text = metrics_text(&p.app).await;
    assert!(
        text.contains(
            r#"phone_courier_delivery_status_total{channel="sms",status="delivered",error_code="none"} 2"#
        ),
        "{text}"
    );
}

/// Calls (POSTs to `Calls.json`) a sandbox received.
fn calls(s: &twilio_sandbox::Sandbox) -> Vec<Vec<(String, String)>> {
    s.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
        .map(|r| r.form)
        .collect()
}

/// Item 9 of issue 23: a report that a Twilio message was undelivered
/// (which starts a fallback call) counts only when a Twilio key signed it.
/// A leaked SignalWire signing key cannot fake one, on either path or under
/// either header, nor can Twilio's token sign for SignalWire's path.
#[tokio::test]
async fn a_status_callback_counts_only_with_its_own_providers_key() {
    let p = two_providers_with(
        true,
        &format!("[status_callback]\npublic_url = \"{PUBLIC}\"\n"),
        2000,
    )
    .await;
    let to = "+14155550123";
    let mut message = login_message(to, "482917");
    message["template_data"]["expires_in_minutes"] = 10.into();
    let r = p.app.post_json("/v1/sms", &message).await;
    assert_eq!(r.status(), 200);
    let sid = p.primary.inbox()[0].sid.clone();
    assert!(sid.starts_with("SM"), "{sid}");
    let twilio_cb = format!("{PUBLIC}/v1/twilio/status");
    let sw_cb = format!("{PUBLIC}/v1/signalwire/status");
    let undelivered = pairs(&[
        ("MessageSid", &sid),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("To", to),
        ("From", FROM),
    ]);
    let forged = [
        (
            "/v1/twilio/status",
            "X-Twilio-Signature",
            signature::compute(SW_TOKEN, &twilio_cb, &undelivered),
        ),
        (
            "/v1/twilio/status",
            "X-SignalWire-Signature",
            signature::compute(SW_TOKEN, &twilio_cb, &undelivered),
        ),
        (
            "/v1/signalwire/status",
            "X-SignalWire-Signature",
            signature::compute(AUTH_TOKEN, &sw_cb, &undelivered),
        ),
        (
            "/v1/signalwire/status",
            "X-Twilio-Signature",
            signature::compute(AUTH_TOKEN, &sw_cb, &undelivered),
        ),
    ];
    for (path, header, signed) in &forged {
        assert_eq!(
            post_callback(&p.app, path, header, signed, &undelivered).await,
            403,
            "{path} {header}"
        );
    }
    assert!(calls(&p.primary).is_empty(), "a call placed at Twilio");
    assert!(
        calls(&p.secondary).is_empty(),
        "a call placed at SignalWire"
    );
    assert_eq!(creates(&p.secondary), Vec::<Vec<(String, String)>>::new());
    let text = metrics_text(&p.app).await;
    assert!(
        !text.contains(r#"phone_courier_delivery_status_total{channel="sms",status="undelivered""#),
        "a refused callback was counted: {text}"
    );

    // SignalWire's own callback at its path, signed with its key: counted
    // (under either header), and it starts nothing at Twilio.
    let sw_report = pairs(&[
        ("MessageSid", "5a1e0000-5a1e-4000-8000-00000000beef"),
        ("MessageStatus", "delivered"),
        ("To", to),
        ("From", SW_FROM),
    ]);
    let sw_signed = signature::compute(SW_TOKEN, &sw_cb, &sw_report);
    for header in ["X-SignalWire-Signature", "X-Twilio-Signature"] {
        assert_eq!(
            post_callback(
                &p.app,
                "/v1/signalwire/status",
                header,
                &sw_signed,
                &sw_report
            )
            .await,
            204,
            "{header}"
        );
    }
    // Twilio's report, signed with its auth token: counted, and the one
    // fallback call is placed, at Twilio.
    let signed = signature::compute(AUTH_TOKEN, &twilio_cb, &undelivered);
    assert_eq!(
        post_callback(
            &p.app,
            "/v1/twilio/status",
            "X-Twilio-Signature",
            &signed,
            &undelivered
        )
        .await,
        204
    );
    let placed = calls(&p.primary);
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert!(placed[0].contains(&("To".to_owned(), to.to_owned())));
    assert!(calls(&p.secondary).is_empty());
}

fn load(toml: &str) -> Result<Config, String> {
    let dir = std::env::temp_dir().join(format!(
        "kpc-providers-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, format!("[auth]\ndisabled = true\n{toml}")).unwrap();
    Config::load(&Sources {
        file: Some(file),
        env: Default::default(),
    })
    .map_err(|e| e.to_string())
}

const SIGNALWIRE: &str = r#"
[[providers]]
name = "signalwire"
kind = "signalwire"
space_url = "https://example.signalwire.com"
project_id = "5a1e0000-5a1e-4000-8000-000000000001"
api_token = "PTsecret-value-123"
from = "+15005550009"
"#;

#[tokio::test]
async fn a_provider_list_is_checked_key_by_key() {
    let config = load(SIGNALWIRE).expect("a SignalWire-only list is valid");
    assert_eq!(config.providers.len(), 1);
    assert_eq!(
        config.providers[0].api.base_url,
        "https://example.signalwire.com/api/laml"
    );
    assert_eq!(
        config.twilio.account_sid,
        "5a1e0000-5a1e-4000-8000-000000000001"
    );
    let cases = [
        (
            format!("[twilio]\naccount_sid = \"{ACCOUNT_SID}\"\n{SIGNALWIRE}"),
            "configuration key `providers`: and [twilio] are both set",
        ),
        (
            SIGNALWIRE.replace("5a1e0000-5a1e-4000-8000-000000000001", "AC123"),
            "configuration key `providers[0].project_id`: must be a UUID",
        ),
        (
            SIGNALWIRE.replace("kind = \"signalwire\"", "kind = \"nexmo\""),
            "configuration key `providers[0].kind`",
        ),
        (
            format!("{SIGNALWIRE}{SIGNALWIRE}"),
            "configuration key `providers[1].name`: is used by an earlier provider",
        ),
        (
            SIGNALWIRE.replace("from = \"+15005550009\"", "from = \"12\""),
            "configuration key `providers[0].from`",
        ),
        (
            format!("{SIGNALWIRE}auth_token = \"x\"\n"),
            "configuration key `providers[0].auth_token`: is not a key here; expected one of `name`, `space_url`",
        ),
        (
            format!(
                "{SIGNALWIRE}\n[status_callback]\npublic_url = \"https://courier.example.com\"\n"
            ),
            "needs providers[0].signing_key",
        ),
    ];
    for (toml, expected) in cases {
        let e = load(&toml).expect_err(expected);
        assert!(e.contains(expected), "{e}\nexpected: {expected}");
        assert!(!e.contains("PTsecret"), "a secret in an error: {e}");
    }
}

#[tokio::test]
async fn whatsapp_is_refused_at_start_without_a_twilio_provider() {
    let whatsapp = "\n[whatsapp]\nenabled = true\nfrom = \"+14155550100\"\ncontent_sid = \"HX0123456789abcdef0123456789abcdef\"\n";
    let error = load(&format!("{SIGNALWIRE}{whatsapp}")).unwrap_err();
    assert!(
        error.contains("configuration key `whatsapp.enabled`")
            && error.contains("SignalWire has no WhatsApp"),
        "{error}"
    );
}
