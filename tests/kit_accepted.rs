//! The Kratos kit's courier Jsonnet (`kratos/courier-sms.jsonnet`,
//! `kratos/courier-voice.jsonnet`), rendered by a real Jsonnet engine the way
//! Kratos renders it, produces bodies the real server accepts, and Twilio
//! gets exactly the request it should: the kit and the service agree.

mod common;
#[path = "api/helpers.rs"]
mod helpers;

use common::jsonnet::{fixture, render_kratos, FIXTURES};
use helpers::{pairs, single_provider_request, spawn_app, CALLS_PATH, FROM, MESSAGES_PATH};
use serde_json::Value;

/// The one-time code a fixture carries (recovery codes travel as `verification_code`).
fn code_of(ctx: &Value) -> String {
    let td = &ctx["template_data"];
    ["login_code", "registration_code", "verification_code"]
        .iter()
        .find_map(|field| td[*field].as_str())
        .expect("every fixture carries a code")
        .to_owned()
}

/// "482917" -> "4, 8, 2, 9, 1, 7", as the call speaks it.
fn spaced(code: &str) -> String {
    code.chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(", ")
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn sms_jsonnet_output_is_sent_as_the_fixture_sms() {
    for name in FIXTURES {
        let ctx = fixture(name);
        let rendered = render_kratos("courier-sms.jsonnet", &ctx);
        let app = spawn_app().await;
        let response = app.post_json("/v1/sms", &rendered).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["channel"], "sms", "{name}");

        let fields = single_provider_request(&app, MESSAGES_PATH).await;
        assert_eq!(
            fields,
            pairs(&[
                ("To", ctx["recipient"].as_str().unwrap()),
                ("From", FROM),
                ("Body", ctx["body"].as_str().unwrap()),
                ("ValidityPeriod", "3600"),
            ]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn voice_jsonnet_output_is_spoken_by_a_call() {
    for name in FIXTURES {
        let ctx = fixture(name);
        let rendered = render_kratos("courier-voice.jsonnet", &ctx);
        let app = spawn_app().await;
        let response = app.post_json("/v1/voice", &rendered).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["channel"], "voice", "{name}");

        let fields = single_provider_request(&app, CALLS_PATH).await;
        assert_eq!(field(&fields, "To"), ctx["recipient"].as_str(), "{name}");
        assert_eq!(field(&fields, "From"), Some(FROM), "{name}");
        let twiml = field(&fields, "Twiml").expect("a Twiml parameter");
        let digits = spaced(&code_of(&ctx));
        assert!(twiml.contains(&digits), "{name}: {digits:?} not in {twiml}");
    }
}

#[tokio::test]
async fn voice_preference_survives_the_sms_jsonnet() {
    for name in FIXTURES {
        let mut ctx = fixture(name);
        let identity = &mut ctx["template_data"]["identity"];
        // Registration passes the traits themselves as `identity`.
        if identity.get("traits").is_some() {
            identity["traits"]["phone_channel"] = "voice".into();
        } else {
            identity["phone_channel"] = "voice".into();
        }
        let rendered = render_kratos("courier-sms.jsonnet", &ctx);
        let app = spawn_app().await;
        let response = app.post_json("/v1/sms", &rendered).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["channel"], "voice", "{name}");

        let fields = single_provider_request(&app, CALLS_PATH).await;
        let twiml = field(&fields, "Twiml").expect("a Twiml parameter");
        let digits = spaced(&code_of(&ctx));
        assert!(twiml.contains(&digits), "{name}: {digits:?} not in {twiml}");
    }
}

/// Kratos master's messages without a code, through the kit's Jsonnet (both
/// variants, so also when every message is pointed at /v1/voice), to a user
/// whose trait says voice: Kratos's six attempts are one SMS with the
/// notice exactly as Kratos wrote it.
#[tokio::test]
async fn kratos_masters_notices_are_one_sms_over_six_attempts() {
    let notices = [
        (
            "next/verifiable_address_changed",
            "An address on your account was changed. If this wasn't you, contact support.\n",
        ),
        (
            "next/authenticator_key_added",
            "A new sign-in method (device key) was added to your account. If this wasn't you, secure your account.\n",
        ),
    ];
    for (name, text) in notices {
        let ctx = fixture(name);
        assert_eq!(ctx["body"], text, "{name}");
        assert_eq!(
            ctx["template_data"]["identity"]["traits"]["phone_channel"],
            "voice"
        );
        for (template, endpoint) in [
            ("courier-sms.jsonnet", "/v1/sms"),
            ("courier-voice.jsonnet", "/v1/voice"),
        ] {
            let what = format!("{name} through {template}");
            let rendered = render_kratos(template, &ctx);
            let app = spawn_app().await;
            for attempt in 0..6 {
                let response = app.post_json(endpoint, &rendered).await;
                assert_eq!(response.status(), 200, "{what}, attempt {attempt}");
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["channel"], "sms", "{what}, attempt {attempt}");
            }
            let fields = single_provider_request(&app, MESSAGES_PATH).await;
            assert_eq!(
                fields,
                pairs(&[("To", "+14155550123"), ("From", FROM), ("Body", text)]),
                "{what}"
            );
        }
    }
}

/// Kratos master's code SMS end with the Web OTP line: sent as written,
/// spoken without it.
#[tokio::test]
async fn kratos_masters_web_otp_line_is_sent_and_never_spoken() {
    for (name, code) in [
        ("next/login_web_otp", "482917"),
        ("next/verification_new_number", "250864"),
    ] {
        let ctx = fixture(name);
        let body = ctx["body"].as_str().unwrap();
        assert!(
            body.ends_with(&format!("\n\n@auth.example.com #{code}\n")),
            "{name}"
        );
        let app = spawn_app().await;
        let rendered = render_kratos("courier-sms.jsonnet", &ctx);
        assert_eq!(app.post_json("/v1/sms", &rendered).await.status(), 200);
        let fields = single_provider_request(&app, MESSAGES_PATH).await;
        assert_eq!(
            fields,
            pairs(&[
                ("To", ctx["recipient"].as_str().unwrap()),
                ("From", FROM),
                ("Body", body),
                ("ValidityPeriod", "3600"),
            ]),
            "{name}"
        );
        let app = spawn_app().await;
        let rendered = render_kratos("courier-voice.jsonnet", &ctx);
        assert_eq!(app.post_json("/v1/voice", &rendered).await.status(), 200);
        let fields = single_provider_request(&app, CALLS_PATH).await;
        let twiml = field(&fields, "Twiml").unwrap();
        assert!(twiml.contains(&spaced(code)), "{name}: {twiml}");
        assert!(
            !twiml.contains("auth.example.com") && !twiml.contains('#'),
            "{name}: {twiml}"
        );
    }
}
