//! Notifications (messages without a code, Kratos's next release) by
//! WhatsApp, when the operator turns it on
//! (`whatsapp.notification_content_sid`): the utility template with the
//! text as variable 1, no `Body`, and SMS behind it as for codes. Unset (the
//! default), they go by SMS as before. Every test asserts what Twilio got.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::whatsapp::{
    form_field, sent_through_the_sandbox, six_attempts, twilio_accepting_whatsapp,
    twilio_not_on_whatsapp, wait_for_requests, whatsapp_env, whatsapp_status, BRAZIL, PUBLIC_URL,
    SMS_SID, US_MOBILE, WA_FROM, WA_SID,
};

/// The utility templates: the default, and Brazilian Portuguese.
const HX_NOTICE: &str = "HXcccccccccccccccccccccccccccccccc";
const HX_NOTICE_PT: &str = "HXdddddddddddddddddddddddddddddddd";
/// Kratos's notice as it renders it: two lines, and a run of six spaces
/// (WhatsApp refuses a variable with either).
const CHANGED: &str =
    "An address on your account was changed.\nIf this wasn't you,      contact support.\n";
/// The same text as the template's variable.
const CHANGED_VARIABLE: &str =
    "An address on your account was changed. If this wasn't you, contact support.";

fn notice_env() -> Vec<(&'static str, &'static str)> {
    let mut env = whatsapp_env();
    env.push((
        "PHONE_COURIER__WHATSAPP__NOTIFICATION_CONTENT_SID",
        HX_NOTICE,
    ));
    env.push((
        "PHONE_COURIER__WHATSAPP__NOTIFICATION_CONTENT_SIDS__PT-BR",
        HX_NOTICE_PT,
    ));
    env
}

/// `verifiable_address_changed` to `to`, no channel asked for.
fn notice(to: &str) -> Value {
    json!({
        "recipient": to,
        "body": CHANGED,
        "template_type": "verifiable_address_changed",
        "message_type": "sms",
        "template_data": {"to": to},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

/// The WhatsApp form Twilio must receive for the notice.
fn notice_form(to: &str, content_sid: &str) -> Vec<(String, String)> {
    pairs(&[
        ("To", &format!("whatsapp:{to}")),
        ("From", &format!("whatsapp:{WA_FROM}")),
        ("ContentSid", content_sid),
        (
            "ContentVariables",
            &json!({ "1": CHANGED_VARIABLE }).to_string(),
        ),
    ])
}

/// The notice's SMS: Kratos's text as written, no `ValidityPeriod` (a
/// notice has no code to expire).
fn notice_sms(to: &str) -> Vec<(String, String)> {
    pairs(&[("To", to), ("From", FROM), ("Body", CHANGED)])
}

fn with_callback(mut fields: Vec<(String, String)>) -> Vec<(String, String)> {
    fields.push((
        "StatusCallback".to_owned(),
        format!("{PUBLIC_URL}/v1/twilio/status"),
    ));
    fields
}

/// The country's count of codes the fraud guard saw sent (none: absent).
fn fraud_sent(metrics: &str, calling_code: &str) -> Option<String> {
    let series =
        format!("phone_courier_fraud_codes_sent_total{{country_code=\"{calling_code}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series).map(str::to_owned))
}

#[tokio::test]
async fn a_notice_goes_as_the_utility_template_with_its_text_once_over_six_attempts() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &notice_env()).await;
    // To a WhatsApp country, in the user's language.
    let mut message = notice(BRAZIL);
    message["request_headers"]["Accept-Language"] = json!(["pt-BR,pt;q=0.9"]);
    six_attempts(
        &app,
        &message,
        json!({"status": "accepted", "channel": "whatsapp", "sid": WA_SID}),
    )
    .await;
    assert_eq!(
        single_provider_request(&app, MESSAGES_PATH).await,
        notice_form(BRAZIL, HX_NOTICE_PT)
    );
    // Asked for by the flow (the US is no WhatsApp country): the default
    // template.
    let mut asked = notice(US_MOBILE);
    asked["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "whatsapp"}});
    let r = app.post_json("/v1/sms", &asked).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    // Not chosen for WhatsApp: SMS, as before (a number in the US; one in
    // Brazil whose trait asks for voice, which a notice never takes).
    let r = app.post_json("/v1/sms", &notice("+14155550124")).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    let mut voice = notice("+5511987654322");
    voice["template_data"]["identity"] = json!({"traits": {"phone_channel": "voice"}});
    let r = app.post_json("/v1/sms", &voice).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    // A text too long for a template variable: SMS.
    let mut long = notice("+5511987654323");
    let long_text = format!("{}\n", "Your account changed. ".repeat(50));
    long["body"] = json!(long_text);
    let r = app.post_json("/v1/sms", &long).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 5);
    assert_eq!(form(&got[1]), notice_form(US_MOBILE, HX_NOTICE));
    assert_eq!(form(&got[2]), notice_sms("+14155550124"));
    assert_eq!(form(&got[3]), notice_sms("+5511987654322"));
    assert_eq!(
        form(&got[4]),
        pairs(&[
            ("To", "+5511987654323"),
            ("From", FROM),
            ("Body", &long_text)
        ])
    );
    // Sends carry their channel; a notice is no code for the fraud guard.
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_sends_total{channel="whatsapp",country_code="55"} 1"#),
        "{m}"
    );
    assert_eq!(fraud_sent(&m, "55"), None, "{m}");
}

#[tokio::test]
async fn by_default_notices_go_by_sms_even_where_codes_go_by_whatsapp() {
    let (app, _clock) = app_at_noon(twilio_accepting_whatsapp().await, &whatsapp_env()).await;
    // A WhatsApp country, and a flow asking for WhatsApp: both SMS.
    let mut asked = notice("+5511987654322");
    asked["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "whatsapp"}});
    for message in [notice(BRAZIL), asked] {
        let r = app.post_json("/v1/sms", &message).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["channel"], "sms");
    }
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 2);
    assert_eq!(form(&got[0]), notice_sms(BRAZIL));
    assert_eq!(form(&got[1]), notice_sms("+5511987654322"));
}

#[tokio::test]
async fn a_notice_not_on_whatsapp_gets_its_sms_in_the_same_request_once() {
    let (app, _clock) = app_at_noon(twilio_not_on_whatsapp().await, &notice_env()).await;
    six_attempts(
        &app,
        &notice(BRAZIL),
        json!({"status": "accepted", "channel": "sms", "fallback": true, "sid": SMS_SID}),
    )
    .await;
    // The WhatsApp create (63003), then one SMS; the retries send nothing.
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 2);
    assert_eq!(form(&got[0]), notice_form(BRAZIL, HX_NOTICE));
    assert_eq!(form(&got[1]), notice_sms(BRAZIL));
    // Remembered: the next notice to the number goes by SMS at once.
    let mut next = notice(BRAZIL);
    next["body"] = json!("Your password was changed.");
    let r = app.post_json("/v1/sms", &next).await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "sms", "fallback": true, "sid": SMS_SID})
    );
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        form(&got[2]),
        pairs(&[
            ("To", BRAZIL),
            ("From", FROM),
            ("Body", "Your password was changed.")
        ])
    );
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_refused"} 2"#),
        "{m}"
    );
    assert_eq!(fraud_sent(&m, "55"), None, "{m}");
}

/// Callbacks on, and one SMS code an hour to a number (`limits.sms.recipient`).
async fn app_with_callbacks() -> (TestApp, kratos_phone_courier::clock::Clock) {
    let mut env = notice_env();
    env.push(("PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL", PUBLIC_URL));
    env.push(("PHONE_COURIER__LIMITS__SMS__RECIPIENT__PER_HOUR", "1"));
    env.push(("PHONE_COURIER__LIMITS__SMS__RECIPIENT__BURST", "1"));
    app_at_noon(twilio_accepting_whatsapp().await, &env).await
}

/// A notice reported undelivered goes by SMS once, counted as the notice
/// it is: under `limits.sms.notification`, not the code limit the user's
/// own SMS code already used up, and not by the fraud guard.
#[tokio::test]
async fn an_undelivered_whatsapp_notice_is_sent_by_sms_once_as_a_notice() {
    let (app, _clock) = app_with_callbacks().await;
    let mut code = login_message(BRAZIL, "111222");
    code["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "sms"}});
    assert_eq!(app.post_json("/v1/sms", &code).await.status(), 200);
    six_attempts(
        &app,
        &notice(BRAZIL),
        json!({"status": "accepted", "channel": "whatsapp", "sid": WA_SID}),
    )
    .await;
    let got = app.provider_requests().await;
    assert_eq!(got.len(), 2);
    assert_eq!(form(&got[1]), with_callback(notice_form(BRAZIL, HX_NOTICE)));
    // 63003, twice (Twilio retries webhooks): one SMS with Kratos's text.
    for status in ["failed", "undelivered"] {
        assert_eq!(
            whatsapp_status(&app, WA_SID, BRAZIL, status, Some("63003")).await,
            204
        );
    }
    let got = wait_for_requests(&app, 3).await;
    assert_eq!(form(&got[2]), with_callback(notice_sms(BRAZIL)));
    // Kratos's retry is answered from the ledger; nothing more is sent.
    let r = app.post_json("/v1/sms", &notice(BRAZIL)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(app.provider_requests().await.len(), 3);
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_undelivered"} 1"#),
        "{m}"
    );
    // Only the SMS code is a code.
    assert_eq!(fraud_sent(&m, "55").as_deref(), Some("1"), "{m}");
}

/// No receipt within `whatsapp.fallback_after_ms`: the notice's SMS goes
/// once (its record is kept though a notice has no code to expire).
#[tokio::test]
async fn a_whatsapp_notice_without_a_receipt_in_time_is_sent_by_sms_once() {
    let (app, clock) = app_with_callbacks().await;
    let r = app.post_json("/v1/sms", &notice(BRAZIL)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["channel"], "whatsapp");
    assert_eq!(
        whatsapp_status(&app, WA_SID, BRAZIL, "sent", None).await,
        204
    );
    clock.advance(std::time::Duration::from_secs(60));
    let got = wait_for_requests(&app, 2).await;
    assert_eq!(form(&got[0]), with_callback(notice_form(BRAZIL, HX_NOTICE)));
    assert_eq!(form(&got[1]), with_callback(notice_sms(BRAZIL)));
    // Late news sends nothing more.
    assert_eq!(
        whatsapp_status(&app, WA_SID, BRAZIL, "undelivered", Some("63024")).await,
        204
    );
    assert_eq!(app.provider_requests().await.len(), 2);
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"phone_courier_whatsapp_fallback_sms_total{reason="whatsapp_no_receipt"} 1"#),
        "{m}"
    );
}

/// End to end with the real sandbox: its not-on-WhatsApp number takes the
/// notice's template, reports it undelivered (63003) in a signed callback,
/// and the notice comes by SMS.
#[tokio::test]
async fn the_sandboxs_not_on_whatsapp_number_gets_the_notice_by_sms() {
    const MAGIC: &str = "+5511987650063";
    let sent = sent_through_the_sandbox(notice_env(), &notice(MAGIC), 2).await;
    let field = |i: usize, k: &str| form_field(&sent[i], k);
    assert_eq!(field(0, "To").as_deref(), Some("whatsapp:+5511987650063"));
    assert_eq!(field(0, "ContentSid").as_deref(), Some(HX_NOTICE));
    assert_eq!(
        field(0, "ContentVariables"),
        Some(json!({ "1": CHANGED_VARIABLE }).to_string())
    );
    assert_eq!(field(0, "Body"), None);
    assert_eq!(field(1, "To").as_deref(), Some(MAGIC));
    assert_eq!(field(1, "Body").as_deref(), Some(CHANGED));
    assert_eq!(sent.len(), 2);
}
