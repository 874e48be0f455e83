use serde_json::{json, Value};

use crate::helpers::*;

fn twiml(intro: &str, spaced: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Say voice=\"alice\" language=\"en-US\">{intro}: {spaced}.</Say>\
         <Pause length=\"1\"/>\
         <Say voice=\"alice\" language=\"en-US\">Again: {spaced}.</Say></Response>"
    )
}

#[tokio::test]
async fn each_kratos_template_is_spoken_by_a_call_with_exact_twiml() {
    for (name, intro, spaced) in [
        ("login", "Your login code is", "4, 8, 2, 9, 1, 7"),
        (
            "registration",
            "Your registration code is",
            "7, 3, 9, 1, 0, 5",
        ),
        (
            "verification",
            "Your verification code is",
            "2, 5, 0, 8, 6, 4",
        ),
        ("recovery", "Your recovery code is", "6, 1, 3, 5, 7, 0"),
    ] {
        let app = spawn_app().await;
        let response = app.post("/v1/voice", &fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"status": "accepted", "channel": "voice", "sid": "CA0123456789abcdef0123456789abcdef"})
        );
        let fields = single_provider_request(&app, CALLS_PATH).await;
        assert_eq!(
            fields,
            pairs(&[
                ("To", "+14155550123"),
                ("From", FROM),
                ("Twiml", &twiml(intro, spaced)),
            ]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn voice_from_overrides_the_sms_sender() {
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__TWILIO__VOICE_FROM".into(),
            "+14155550100".into(),
        );
    })
    .await;
    assert_eq!(app.post("/v1/voice", &fixture("login")).await.status(), 200);
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(fields[1], ("From".to_owned(), "+14155550100".to_owned()));
}

#[tokio::test]
async fn codes_that_cannot_be_spoken_are_refused() {
    let app = spawn_app().await;
    for code in [
        json!("123"),
        json!("1234567890123"),
        json!("12 34"),
        json!("12<Dial>"),
        json!("１２３４"),
    ] {
        let mut m = fixture_json("login");
        m["template_data"]["login_code"] = code.clone();
        let (status, body) = error_of(app.post_json("/v1/voice", &m).await).await;
        assert_eq!((status, error_code(&body)), (422, "invalid_code"), "{code}");
    }
    let mut m = fixture_json("login");
    m["template_data"]
        .as_object_mut()
        .unwrap()
        .remove("login_code");
    let (status, body) = error_of(app.post_json("/v1/voice", &m).await).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_code"));
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn accept_language_picks_a_configured_language() {
    let dir = std::env::temp_dir().join(format!("kpc-voice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        r#"
[voice.sentences.de-DE]
voice = "Polly.Marlene"
login = "Ihr Anmeldecode lautet"
again = "Noch einmal"
"#,
    )
    .unwrap();
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    env.remove("PHONE_COURIER__LOG__LEVEL");
    let config =
        kratos_phone_courier::config::Config::load(&kratos_phone_courier::config::Sources {
            file: Some(file),
            env,
        })
        .unwrap();
    let app = start(config, twilio).await;
    let mut m = fixture_json("login");
    m["request_headers"]["Accept-Language"] = json!(["de-CH,de;q=0.9,en;q=0.5"]);
    assert_eq!(app.post_json("/v1/voice", &m).await.status(), 200);
    let fields = single_provider_request(&app, CALLS_PATH).await;
    assert_eq!(
        fields[2].1,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Say voice=\"Polly.Marlene\" language=\"de-DE\">Ihr Anmeldecode lautet: 4, 8, 2, 9, 1, 7.</Say>\
         <Pause length=\"1\"/>\
         <Say voice=\"Polly.Marlene\" language=\"de-DE\">Noch einmal: 4, 8, 2, 9, 1, 7.</Say></Response>"
    );
}

#[tokio::test]
async fn twiml_over_twilio_limit_is_refused_not_sent() {
    let app = spawn_app_with(|env| {
        // 500 ampersands escape to 2500 characters, said twice: over 4000.
        let long = "&".repeat(500);
        env.insert(
            "PHONE_COURIER__VOICE__SENTENCES__EN-US__LOGIN".into(),
            long.clone(),
        );
        env.insert("PHONE_COURIER__VOICE__SENTENCES__EN-US__AGAIN".into(), long);
    })
    .await;
    let (status, body) = error_of(app.post("/v1/voice", &fixture("login")).await).await;
    assert_eq!((status, error_code(&body)), (422, "twiml_too_long"));
    app.assert_provider_untouched().await;
}
