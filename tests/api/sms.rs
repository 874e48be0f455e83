use serde_json::{json, Value};

use crate::helpers::*;

const TEMPLATES: [(&str, &str, &str); 4] = [
    ("login", "Your login code is: 482917\n\nIt expires in 60 minutes.\n", "482917"),
    ("registration", "Your registration code is: 739105\n\nIt expires in 60 minutes.\n", "739105"),
    ("verification", "Your verification code is: 250864\n\nIf this was not you, do nothing. It expires in 60 minutes.\n", "250864"),
    ("recovery", "Your recovery code is: 613570\n\n@127.0.0.1 #613570\n", "613570"),
];

#[tokio::test]
async fn each_kratos_template_is_sent_as_an_sms_with_exact_fields() {
    for (name, body, _code) in TEMPLATES {
        let app = spawn_app().await;
        let response = app.post("/v1/sms", &fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"status": "accepted", "channel": "sms", "sid": "SM0123456789abcdef0123456789abcdef"}),
            "{name}"
        );
        let fields = single_provider_request(&app, MESSAGES_PATH).await;
        assert_eq!(
            fields,
            pairs(&[
                ("To", "+14155550123"),
                ("From", FROM),
                ("Body", body),
                ("ValidityPeriod", "3600"),
            ]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn plus_is_encoded_so_twilio_sees_it() {
    let app = spawn_app().await;
    app.post_json("/v1/sms", &sms_message("+14155550123")).await;
    let got = app.provider_requests().await;
    let raw = String::from_utf8(got[0].body.clone()).unwrap();
    assert!(
        raw.starts_with("To=%2B14155550123&From=%2B15005550006&Body="),
        "{raw}"
    );
}

#[tokio::test]
async fn messaging_service_replaces_from() {
    let app = spawn_app_with(|env| {
        env.remove("PHONE_COURIER__TWILIO__FROM");
        env.insert(
            "PHONE_COURIER__TWILIO__MESSAGING_SERVICE_SID".into(),
            "MG0123456789abcdef0123456789abcdef".into(),
        );
        // No caller id: the default fallback turns itself off (a warning
        // at start), and the set-up still starts.
    })
    .await;
    let response = app.post_json("/v1/sms", &sms_message("+14155550123")).await;
    assert_eq!(response.status(), 200);
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    assert_eq!(
        fields,
        pairs(&[
            ("To", "+14155550123"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "Your login code is: 482917"),
        ])
    );
}

#[tokio::test]
async fn validity_period_follows_the_code_lifetime_within_twilio_range() {
    for (minutes, expected) in [
        (json!(10), Some("600")),
        (json!(0), Some("1")),
        (json!(-5), Some("1")),
        (json!(1000), Some("36000")),
        (json!(9_007_199_254_740_991i64), Some("36000")),
        (Value::Null, None),
    ] {
        let app = spawn_app().await;
        let mut m = sms_message("+14155550123");
        m["template_data"]["expires_in_minutes"] = minutes.clone();
        let response = app.post_json("/v1/sms", &m).await;
        assert_eq!(response.status(), 200, "{minutes}");
        let fields = single_provider_request(&app, MESSAGES_PATH).await;
        let validity = fields
            .iter()
            .find(|(k, _)| k == "ValidityPeriod")
            .map(|(_, v)| v.as_str());
        assert_eq!(validity, expected, "{minutes}");
    }
}

#[tokio::test]
async fn recipient_is_trimmed() {
    let app = spawn_app().await;
    let response = app
        .post_json("/v1/sms", &sms_message("  +14155550123\t\n"))
        .await;
    assert_eq!(response.status(), 200);
    let fields = single_provider_request(&app, MESSAGES_PATH).await;
    assert_eq!(fields[0], ("To".to_owned(), "+14155550123".to_owned()));
}

#[tokio::test]
async fn invalid_recipients_get_422_and_twilio_gets_nothing() {
    let app = spawn_app().await;
    for bad in [
        "14155550123",
        "+1 415 555 0123",
        "+1-415-555-0123",
        "+014155550123",
        "+1415555012345678",
        "+99912345678",
        "+1234",
        "tel:+14155550123",
        "+１４１５５５５０１２３",
        "+1415555\u{200b}0123",
        " 14155550123",
        "ada@example.com",
    ] {
        let (status, body) = error_of(app.post_json("/v1/sms", &sms_message(bad)).await).await;
        assert_eq!(status, 422, "{bad:?}");
        assert_eq!(error_code(&body), "invalid_recipient", "{bad:?}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("E.164"), "{message}");
        assert!(
            !message.contains(bad.trim()),
            "the error must not echo the number"
        );
    }
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn body_length_is_checked_in_characters() {
    let app = spawn_app().await;
    let mut m = sms_message("+14155550123");
    // 1600 characters of 2 bytes each: accepted (Twilio counts characters).
    m["body"] = json!("é".repeat(1600));
    assert_eq!(app.post_json("/v1/sms", &m).await.status(), 200);
    m["body"] = json!("x".repeat(1601));
    let (status, body) = error_of(app.post_json("/v1/sms", &m).await).await;
    assert_eq!((status, error_code(&body)), (422, "body_too_long"));
    m["body"] = json!("   ");
    let (status, body) = error_of(app.post_json("/v1/sms", &m).await).await;
    assert_eq!((status, error_code(&body)), (422, "body_empty"));
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn sms_endpoint_calls_when_the_flow_asks_for_voice() {
    let app = spawn_app().await;
    let mut m = fixture_json("login");
    m["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "voice"}});
    let response = app.post_json("/v1/sms", &m).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["channel"], "voice");
    assert_eq!(answer["sid"], "CA0123456789abcdef0123456789abcdef");
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(fields[0].1, "+14155550123");
}

#[tokio::test]
async fn sms_endpoint_calls_when_the_identity_trait_says_voice() {
    // Whole identity (login) and traits only (registration).
    for (name, pointer) in [
        ("login", "/template_data/identity/traits"),
        ("registration", "/template_data/identity"),
    ] {
        let app = spawn_app().await;
        let mut m = fixture_json(name);
        m.pointer_mut(pointer).unwrap()["phone_channel"] = json!("voice");
        let response = app.post_json("/v1/sms", &m).await;
        assert_eq!(response.status(), 200, "{name}");
        single_provider_request(&app, CALLS_PATH).await;
    }
}

#[tokio::test]
async fn voice_trait_name_is_configurable() {
    let app = spawn_app_with(|env| {
        env.insert("PHONE_COURIER__VOICE__TRAIT".into(), "otp_by".into());
    })
    .await;
    let mut m = fixture_json("login");
    m["template_data"]["identity"]["traits"]["otp_by"] = json!("voice");
    assert_eq!(app.post_json("/v1/sms", &m).await.status(), 200);
    single_provider_request(&app, CALLS_PATH).await;
}

#[tokio::test]
async fn voice_preference_falls_back_to_sms_when_no_caller_id() {
    let app = spawn_app_with(|env| {
        env.remove("PHONE_COURIER__TWILIO__FROM");
        env.insert(
            "PHONE_COURIER__TWILIO__MESSAGING_SERVICE_SID".into(),
            "MG0123456789abcdef0123456789abcdef".into(),
        );
        // No caller id: the default fallback turns itself off (a warning
        // at start), and the set-up still starts.
    })
    .await;
    let mut m = fixture_json("login");
    m["template_data"]["identity"]["traits"]["phone_channel"] = json!("voice");
    let response = app.post_json("/v1/sms", &m).await;
    assert_eq!(response.status(), 200);
    single_provider_request(&app, MESSAGES_PATH).await;
    // The voice endpoint itself cannot call without a caller id.
    let (status, body) = error_of(app.post("/v1/voice", &fixture("login")).await).await;
    assert_eq!((status, error_code(&body)), (502, "voice_not_configured"));
}

#[tokio::test]
async fn signalwire_base_url_and_uuid_project_work_unchanged() {
    let twilio = twilio_accepting().await;
    let base = format!("{}/api/laml", twilio.uri());
    let project = "a5c7a9f2-1b2c-4d5e-8f90-123456789abc";
    let app = spawn_app_against(twilio, |env| {
        env.insert("PHONE_COURIER__TWILIO__BASE_URL".into(), base.clone());
        env.insert("PHONE_COURIER__TWILIO__ACCOUNT_SID".into(), project.into());
    })
    .await;
    assert_eq!(app.post("/v1/sms", &fixture("login")).await.status(), 200);
    let got = app.provider_requests().await;
    assert_eq!(
        got[0].url.path(),
        format!("/api/laml/2010-04-01/Accounts/{project}/Messages.json")
    );
}

#[tokio::test]
async fn api_key_credentials_authenticate_twilio_with_the_key() {
    let app = spawn_app_with(|env| {
        env.remove("PHONE_COURIER__TWILIO__AUTH_TOKEN");
        env.insert(
            "PHONE_COURIER__TWILIO__API_KEY_SID".into(),
            "SK0123456789abcdef0123456789abcdef".into(),
        );
        env.insert(
            "PHONE_COURIER__TWILIO__API_KEY_SECRET".into(),
            "key-secret".into(),
        );
    })
    .await;
    assert_eq!(app.post("/v1/sms", &fixture("login")).await.status(), 200);
    let got = app.provider_requests().await;
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode("SK0123456789abcdef0123456789abcdef:key-secret")
    );
    assert_eq!(
        got[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        expected
    );
    assert_eq!(got[0].url.path(), MESSAGES_PATH);
}
