//! The Twilio Lookup v2 policy (`lookup`): each line type gets its
//! configured action, a swapped SIM and a high pumping score are refused,
//! a failed lookup follows `lookup.on_error`, and the cache answers
//! Kratos's retries. Every test asserts what Twilio (Lookup, Messages,
//! Calls) received and what Kratos got back.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

/// Numbers (all FIXED_LINE_OR_MOBILE to the numbering plan, so only
/// Lookup tells them apart) and the line type Lookup reports for each.
const LINE_TYPES: [(&str, &str); 12] = [
    ("+14155550101", "mobile"),
    ("+14155550102", "landline"),
    ("+14155550103", "fixedVoip"),
    ("+14155550104", "nonFixedVoip"),
    ("+14155550105", "personal"),
    ("+14155550106", "tollFree"),
    ("+14155550107", "premium"),
    ("+14155550108", "sharedCost"),
    ("+14155550109", "uan"),
    ("+14155550110", "voicemail"),
    ("+14155550111", "pager"),
    ("+14155550112", "unknown"),
];
const SWAPPED: &str = "+14155550120";
const PUMPING: &str = "+14155550121";

/// Lookup v2's answer for `number`, with the packages asked for
/// (`Fields`), as Twilio shapes it.
fn lookup_answer(request: &Request) -> ResponseTemplate {
    let number = request.url.path().rsplit('/').next().unwrap_or_default();
    let fields: String = request
        .url
        .query_pairs()
        .find(|(k, _)| k == "Fields")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let line_type = LINE_TYPES
        .iter()
        .find(|(n, _)| *n == number)
        .map(|(_, t)| *t)
        .unwrap_or("mobile");
    let mut body = json!({
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": number,
        "national_format": "(415) 555-0100",
        "valid": true,
        "validation_errors": [],
        "caller_name": null,
        "sim_swap": null,
        "call_forwarding": null,
        "line_type_intelligence": null,
        "sms_pumping_risk": null,
        "url": format!("https://lookups.twilio.com/v2/PhoneNumbers/{number}"),
    });
    for field in fields.split(',') {
        match field {
            "line_type_intelligence" => {
                body["line_type_intelligence"] = json!({
                    "carrier_name": "Example Carrier",
                    "error_code": null,
                    "mobile_country_code": "310",
                    "mobile_network_code": "456",
                    "type": line_type,
                })
            }
            "sim_swap" => {
                body["sim_swap"] = json!({
                    "last_sim_swap": {
                        "last_swap_date": null,
                        "swapped_period": "PT48H",
                        "swapped_in_period": number == SWAPPED,
                    },
                    "carrier_name": "Example Carrier",
                    "mobile_country_code": "310",
                    "mobile_network_code": "456",
                    "error_code": null,
                })
            }
            "sms_pumping_risk" => {
                body["sms_pumping_risk"] = json!({
                    "carrier_risk_category": "moderate",
                    "number_blocked": false,
                    "number_blocked_date": null,
                    "number_blocked_last_3_months": null,
                    "sms_pumping_risk_score": if number == PUMPING { 95 } else { 12 },
                    "error_code": null,
                })
            }
            _ => {}
        }
    }
    ResponseTemplate::new(200).set_body_json(body)
}

/// Twilio accepting messages and calls, and answering Lookup.
async fn twilio_with_lookup() -> MockServer {
    let server = twilio_accepting().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(lookup_answer)
        .mount(&server)
        .await;
    server
}

async fn app_with_lookup(tweak: &[(&str, &str)]) -> TestApp {
    let twilio = twilio_with_lookup().await;
    let uri = twilio.uri();
    spawn_app_against(twilio, |env| {
        env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
        env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), uri);
        for (k, v) in tweak {
            env.insert(k.to_string(), v.to_string());
        }
    })
    .await
}

fn code_message(to: &str, template: &str, code: &str) -> Value {
    let (name, field) = match template {
        "login" => ("login_code_valid", "login_code"),
        "recovery" => ("recovery_code_valid", "recovery_code"),
        _ => ("verification_code_valid", "verification_code"),
    };
    json!({
        "recipient": to,
        "body": format!("Your {template} code is: {code}"),
        "template_type": name,
        "template_data": {field: code, "expires_in_minutes": 10},
        "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
    })
}

/// The requests Twilio got, as (method, path, To or looked-up number).
async fn received(app: &TestApp) -> Vec<(String, String, String)> {
    app.provider_requests()
        .await
        .iter()
        .map(|r| {
            let to = form(r)
                .into_iter()
                .find(|(k, _)| k == "To")
                .map(|(_, v)| v)
                .unwrap_or_else(|| r.url.path().rsplit('/').next().unwrap().to_owned());
            let path = if r.url.path().starts_with("/v2/") {
                "lookup".to_owned()
            } else {
                r.url.path().rsplit('/').next().unwrap().to_owned()
            };
            (r.method.to_string(), path, to)
        })
        .collect()
}

fn lookup_requests(got: &[wiremock::Request]) -> Vec<&wiremock::Request> {
    got.iter()
        .filter(|r| r.url.path().starts_with("/v2/PhoneNumbers/"))
        .collect()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_line_type_gets_its_configured_action() {
    let app = app_with_lookup(&[]).await;
    let expected: HashMap<&str, &str> = [
        ("mobile", "sms"),
        ("landline", "voice"),
        ("fixedVoip", "voice"),
        ("nonFixedVoip", "refuse"),
        ("personal", "sms"),
        ("tollFree", "refuse"),
        ("premium", "refuse"),
        ("sharedCost", "refuse"),
        ("uan", "refuse"),
        ("voicemail", "refuse"),
        ("pager", "refuse"),
        ("unknown", "sms"),
    ]
    .into_iter()
    .collect();
    for (number, line_type) in LINE_TYPES {
        app.twilio.reset().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/v2/PhoneNumbers/"))
            .respond_with(lookup_answer)
            .mount(&app.twilio)
            .await;
        mount_accepting(&app.twilio).await;
        let r = app
            .post_json("/v1/sms", &code_message(number, "login", "482917"))
            .await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        let got = received(&app).await;
        let lookup = ("GET".to_owned(), "lookup".to_owned(), number.to_owned());
        match expected[line_type] {
            "sms" => {
                assert_eq!(status, 200, "{line_type}: {body}");
                assert_eq!(
                    body,
                    json!({"status": "accepted", "channel": "sms", "sid": SMS_SID}),
                    "{line_type}"
                );
                let sms = (
                    "POST".to_owned(),
                    "Messages.json".to_owned(),
                    number.to_owned(),
                );
                assert_eq!(got, [lookup, sms], "{line_type}");
            }
            "voice" => {
                assert_eq!(status, 200, "{line_type}: {body}");
                assert_eq!(
                    body,
                    json!({"status": "accepted", "channel": "voice", "fallback": true, "sid": CALL_SID}),
                    "{line_type}"
                );
                let call = (
                    "POST".to_owned(),
                    "Calls.json".to_owned(),
                    number.to_owned(),
                );
                assert_eq!(got, [lookup, call], "{line_type}");
            }
            _ => {
                assert_eq!(status, 422, "{line_type}: {body}");
                assert_eq!(body["error"]["code"], "line_type_refused", "{line_type}");
                assert_eq!(body["error"]["line_type"], line_type);
                assert_eq!(got, [lookup], "{line_type}: nothing sent");
            }
        }
    }
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"phone_courier_lookups_total{result="non_fixed_voip"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"phone_courier_lookup_refusals_total{reason="line_type_refused"} 7"#),
        "{text}"
    );
}

/// Messages and Calls accepted (after a reset of the mock).
async fn mount_accepting(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": SMS_SID, "status": "queued"})),
        )
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"})),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn the_lookup_request_carries_the_account_and_the_fields() {
    let app = app_with_lookup(&[(
        "PHONE_COURIER__LOOKUP__FIELDS",
        "line_type_intelligence,sim_swap,sms_pumping_risk",
    )])
    .await;
    let r = app
        .post_json("/v1/sms", &code_message(LINE_TYPES[0].0, "login", "482917"))
        .await;
    assert_eq!(r.status(), 200);
    let got = app.provider_requests().await;
    let lookups = lookup_requests(&got);
    assert_eq!(lookups.len(), 1);
    let l = lookups[0];
    assert_eq!(
        l.url.path(),
        format!("/v2/PhoneNumbers/{}", LINE_TYPES[0].0)
    );
    assert_eq!(
        l.url.query(),
        Some("Fields=line_type_intelligence%2Csim_swap%2Csms_pumping_risk")
    );
    assert_eq!(
        l.headers.get("authorization").unwrap().to_str().unwrap(),
        twilio_basic()
    );
}

#[tokio::test]
async fn a_swapped_sim_gets_no_recovery_code_but_a_verification_code() {
    let app = app_with_lookup(&[(
        "PHONE_COURIER__LOOKUP__FIELDS",
        "line_type_intelligence,sim_swap",
    )])
    .await;
    let r = app
        .post_json("/v1/sms", &code_message(SWAPPED, "recovery", "613570"))
        .await;
    let (status, body) = error_of(r).await;
    assert_eq!((status, error_code(&body)), (422, "sim_swap_suspected"));
    let got = received(&app).await;
    assert_eq!(
        got,
        [("GET".to_owned(), "lookup".to_owned(), SWAPPED.to_owned())],
        "nothing sent"
    );
    // SIM swap is asked (and billed) only for the templates it can refuse.
    let r = app
        .post_json("/v1/sms", &code_message(SWAPPED, "verification", "228133"))
        .await;
    assert_eq!(r.status(), 200);
    let requests = app.provider_requests().await;
    let lookups = lookup_requests(&requests);
    assert_eq!(
        lookups
            .iter()
            .map(|r| r.url.query().unwrap())
            .collect::<Vec<_>>(),
        ["Fields=line_type_intelligence%2Csim_swap"],
        "the line type was cached, SIM swap not needed"
    );
    let fields = form(requests.last().unwrap());
    assert!(fields.contains(&("To".to_owned(), SWAPPED.to_owned())));
    assert!(fields.contains(&(
        "Body".to_owned(),
        "Your verification code is: 228133".to_owned()
    )));
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"phone_courier_lookup_refusals_total{reason="sim_swap_suspected"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_number_above_the_pumping_score_is_refused() {
    let app = app_with_lookup(&[
        ("PHONE_COURIER__LOOKUP__FIELDS", "sms_pumping_risk"),
        ("PHONE_COURIER__LOOKUP__SMS_PUMPING_RISK__MAX_SCORE", "80"),
    ])
    .await;
    let r = app
        .post_json("/v1/sms", &code_message(PUMPING, "login", "482917"))
        .await;
    let (status, body) = error_of(r).await;
    assert_eq!((status, error_code(&body)), (422, "sms_pumping_risk"));
    assert_eq!(
        received(&app).await,
        [("GET".to_owned(), "lookup".to_owned(), PUMPING.to_owned())]
    );
    // A low score is sent.
    let mobile = LINE_TYPES[0].0;
    let r = app
        .post_json("/v1/sms", &code_message(mobile, "login", "482917"))
        .await;
    assert_eq!(r.status(), 200);
    let got = received(&app).await;
    assert_eq!(
        got[1..],
        [
            ("GET".to_owned(), "lookup".to_owned(), mobile.to_owned()),
            (
                "POST".to_owned(),
                "Messages.json".to_owned(),
                mobile.to_owned()
            )
        ]
    );
}

/// Twilio accepting messages, Lookup answering 500.
async fn twilio_lookup_down() -> MockServer {
    let server = twilio_accepting().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"code": 20500, "status": 500})),
        )
        .mount(&server)
        .await;
    server
}

async fn app_lookup_down(on_error: &str) -> TestApp {
    let twilio = twilio_lookup_down().await;
    let uri = twilio.uri();
    let on_error = on_error.to_owned();
    spawn_app_against(twilio, |env| {
        env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
        env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), uri);
        env.insert("PHONE_COURIER__LOOKUP__ON_ERROR".into(), on_error);
    })
    .await
}

#[tokio::test]
async fn lookup_down_with_on_error_allow_sends_the_sms() {
    let app = app_lookup_down("allow").await;
    let number = LINE_TYPES[1].0;
    let r = app
        .post_json("/v1/sms", &code_message(number, "login", "482917"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "sms", "sid": SMS_SID})
    );
    assert_eq!(
        received(&app).await,
        [
            ("GET".to_owned(), "lookup".to_owned(), number.to_owned()),
            (
                "POST".to_owned(),
                "Messages.json".to_owned(),
                number.to_owned()
            )
        ]
    );
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"phone_courier_lookups_total{result="error"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn lookup_down_with_on_error_refuse_answers_503_and_sends_nothing() {
    let app = app_lookup_down("refuse").await;
    let number = LINE_TYPES[0].0;
    for attempt in 0..2 {
        let r = app
            .post_json("/v1/sms", &code_message(number, "login", "482917"))
            .await;
        assert_eq!(
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("1".to_owned())
        );
        let (status, body) = error_of(r).await;
        assert_eq!(
            (status, error_code(&body)),
            (503, "lookup_unavailable"),
            "attempt {attempt}"
        );
    }
    // A failure is not cached: each attempt asks again; nothing is sent.
    let lookup = ("GET".to_owned(), "lookup".to_owned(), number.to_owned());
    assert_eq!(received(&app).await, [lookup.clone(), lookup]);
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"phone_courier_lookup_refusals_total{reason="lookup_unavailable"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn kratos_retries_cost_one_lookup() {
    let app = app_with_lookup(&[]).await;
    let landline = LINE_TYPES[1].0;
    let refused = LINE_TYPES[3].0;
    for attempt in 0..6 {
        let r = app
            .post_json("/v1/sms", &code_message(landline, "login", "482917"))
            .await;
        assert_eq!(r.status(), 200, "attempt {attempt}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["channel"], "voice");
        assert_eq!(body["fallback"], true);
        assert_eq!(body["sid"], CALL_SID);
        assert_eq!(body["duplicate"].as_bool().unwrap_or(false), attempt > 0);
        let r = app
            .post_json("/v1/sms", &code_message(refused, "login", "482917"))
            .await;
        let (status, body) = error_of(r).await;
        assert_eq!((status, error_code(&body)), (422, "line_type_refused"));
    }
    let got = received(&app).await;
    assert_eq!(
        got,
        [
            ("GET".to_owned(), "lookup".to_owned(), landline.to_owned()),
            (
                "POST".to_owned(),
                "Calls.json".to_owned(),
                landline.to_owned()
            ),
            ("GET".to_owned(), "lookup".to_owned(), refused.to_owned()),
        ],
        "one lookup per number, one call"
    );
}

#[tokio::test]
async fn a_sim_swap_answer_is_kept_an_hour_the_line_type_longer() {
    let twilio = twilio_with_lookup().await;
    let uri = twilio.uri();
    let (app, clock) = app_at_noon(
        twilio,
        &[
            ("PHONE_COURIER__LOOKUP__ENABLED", "true"),
            ("PHONE_COURIER__LOOKUP__BASE_URL", uri.as_str()),
            (
                "PHONE_COURIER__LOOKUP__FIELDS",
                "line_type_intelligence,sim_swap",
            ),
        ],
    )
    .await;
    let fields_asked = |got: Vec<wiremock::Request>| -> Vec<String> {
        lookup_requests(&got)
            .iter()
            .map(|r| r.url.query().unwrap().to_owned())
            .collect()
    };
    for code in ["111111", "222222"] {
        let r = app
            .post_json("/v1/sms", &code_message(SWAPPED, "login", code))
            .await;
        assert_eq!(r.status(), 422);
    }
    assert_eq!(
        fields_asked(app.provider_requests().await),
        ["Fields=line_type_intelligence%2Csim_swap"]
    );
    clock.advance(Duration::from_secs(61 * 60));
    let r = app
        .post_json("/v1/sms", &code_message(SWAPPED, "login", "333333"))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        fields_asked(app.provider_requests().await),
        [
            "Fields=line_type_intelligence%2Csim_swap",
            "Fields=sim_swap"
        ]
    );
}

/// The sandbox's Lookup magic numbers (what `serve --dev` shows), end to
/// end: the service asks the sandbox, and the inbox holds what was sent.
#[tokio::test]
async fn the_sandbox_magic_numbers_show_every_path() {
    use twilio_sandbox::lookup::{HIGH_PUMPING_RISK, LOOKUP_FAILS, SIM_SWAPPED};
    use twilio_sandbox::Channel;
    let (base, sandbox, _server) =
        crate::observability::service_with_sandbox_and(|env, sandbox| {
            env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
            env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), sandbox.to_owned());
            env.insert(
                "PHONE_COURIER__LOOKUP__FIELDS".into(),
                "line_type_intelligence,sim_swap,sms_pumping_risk".into(),
            );
        })
        .await;
    let client = reqwest::Client::new();
    let send = |to: &'static str, template: &'static str, code: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}/v1/sms"))
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .json(&code_message(to, template, code))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send("+14155550171", "login", "111111").await;
    assert_eq!(
        (status, &body["channel"], &body["fallback"]),
        (200, &json!("voice"), &json!(true))
    );
    let (status, body) = send("+14155550173", "login", "222222").await;
    assert_eq!((status, error_code(&body)), (422, "line_type_refused"));
    let (status, body) = send(SIM_SWAPPED, "recovery", "333333").await;
    assert_eq!((status, error_code(&body)), (422, "sim_swap_suspected"));
    let (status, body) = send(HIGH_PUMPING_RISK, "login", "444444").await;
    assert_eq!((status, error_code(&body)), (422, "sms_pumping_risk"));
    let (status, body) = send(LOOKUP_FAILS, "login", "555555").await;
    assert_eq!(
        (status, &body["channel"]),
        (200, &json!("sms")),
        "on_error allow"
    );
    // The inbox: one call to the landline, one SMS despite the failed
    // lookup; nothing for the refused numbers.
    let mut inbox: Vec<(Channel, String)> = sandbox
        .inbox()
        .into_iter()
        .map(|e| (e.channel, e.to))
        .collect();
    inbox.reverse();
    assert_eq!(
        inbox,
        [
            (Channel::Voice, "+14155550171".to_owned()),
            (Channel::Sms, LOOKUP_FAILS.to_owned())
        ]
    );
    let lookups: Vec<(String, u16)> = sandbox
        .lookups()
        .into_iter()
        .map(|l| (l.number, l.answered_status))
        .collect();
    assert_eq!(
        lookups,
        [
            ("+14…71".to_owned(), 200),
            ("+14…73".to_owned(), 200),
            ("+14…82".to_owned(), 200),
            ("+14…83".to_owned(), 200),
            ("+14…84".to_owned(), 503),
        ]
    );
}

/// Lookup's line type overrides the numbering plan's guess: a London
/// number (FIXED_LINE to libphonenumber, so called without Lookup) that
/// Twilio reports `mobile` (ported) gets its SMS.
#[tokio::test]
async fn a_line_type_from_lookup_overrides_the_numbering_plan() {
    let app = app_with_lookup(&[]).await;
    let london = "+442071234567";
    let r = app
        .post_json("/v1/sms", &code_message(london, "login", "482917"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "sms", "sid": SMS_SID})
    );
    assert_eq!(
        received(&app).await,
        [
            ("GET".to_owned(), "lookup".to_owned(), london.to_owned()),
            (
                "POST".to_owned(),
                "Messages.json".to_owned(),
                london.to_owned()
            )
        ]
    );
}
