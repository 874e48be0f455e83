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
    let text = metrics_text(&app).await;
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
    let text = metrics_text(&app).await;
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
    let text = metrics_text(&app).await;
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
    let text = metrics_text(&app).await;
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

// Where Lookup meets the ledger and the limits (the delivery module's
// order: every cheap check before the billed lookup; a retry keeps the
// channel and provider its first attempt used).

/// Kratos's six attempts of one message, a second apart on the service's
/// clock, whatever each is answered: (status, error code or "-", sid).
async fn six_attempts(
    app: &TestApp,
    clock: &kratos_phone_courier::clock::Clock,
    body: &Value,
) -> Vec<(u16, String, String)> {
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = app.post_json("/v1/sms", body).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        seen.push((
            status,
            v["error"]["code"].as_str().unwrap_or("-").to_owned(),
            v["sid"].as_str().unwrap_or("-").to_owned(),
        ));
        clock.advance(Duration::from_secs(1));
    }
    seen
}

/// Twilio whose first Lookup fails (503) and every later one says
/// `line_type`; whose first SMS create is taken but answered after our
/// timeout, later ones at once; and whose Messages list shows `listed`.
async fn twilio_changing_its_mind(line_type: &str, listed: Value) -> MockServer {
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
    let line_type = line_type.to_owned();
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(move |_: &Request| {
            ResponseTemplate::new(200).set_body_json(json!({
                "calling_country_code": "1", "country_code": "US",
                "phone_number": "+14155550123", "valid": true,
                "line_type_intelligence": {"type": line_type, "error_code": null},
            }))
        })
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": SMS_SID, "status": "queued"}))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    mount_accepting(&twilio).await;
    Mock::given(method("GET"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": listed, "page": 0, "page_size": 50, "next_page_uri": null
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/Calls\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "calls": [], "page": 0, "page_size": 50, "next_page_uri": null
        })))
        .mount(&twilio)
        .await;
    twilio
}

async fn app_changing_its_mind(
    twilio: MockServer,
) -> (TestApp, kratos_phone_courier::clock::Clock) {
    let uri = twilio.uri();
    app_at_noon(
        twilio,
        &[
            ("PHONE_COURIER__LOOKUP__ENABLED", "true"),
            ("PHONE_COURIER__LOOKUP__BASE_URL", &uri),
            ("PHONE_COURIER__LOOKUP__ON_ERROR", "allow"),
            ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "300"),
        ],
    )
    .await
}

fn creates_at(got: &[wiremock::Request], resource: &str) -> usize {
    got.iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with(resource))
        .count()
}

#[tokio::test]
async fn a_lookup_that_changes_its_mind_on_a_retry_adds_no_call() {
    // The seam: attempt 1's lookup fails (allowed), so the code goes by
    // SMS, which Twilio takes but answers too late (uncertain); attempt 2's
    // lookup would say fixedVoip (a call). The retry must ask Twilio about
    // the SMS it may have, find it, and never place the call.
    let listed = json!([{
        "sid": SMS_SID, "to": "+14155550123", "from": FROM,
        "body": "Your login code is: 482917", "status": "sent",
        "date_created": "Sat, 22 Nov 2025 12:00:00 +0000"
    }]);
    let (app, clock) =
        app_changing_its_mind(twilio_changing_its_mind("fixedVoip", listed).await).await;
    let seen = six_attempts(
        &app,
        &clock,
        &code_message("+14155550123", "login", "482917"),
    )
    .await;
    let sms = |s: &str| (200, "-".to_owned(), s.to_owned());
    assert_eq!(
        seen,
        vec![
            (503, "provider_unavailable".to_owned(), "-".to_owned()),
            sms(SMS_SID),
            sms(SMS_SID),
            sms(SMS_SID),
            sms(SMS_SID),
            sms(SMS_SID),
        ],
        "one sid for the message after the uncertain attempt"
    );
    let got = app.provider_requests().await;
    assert_eq!(creates_at(&got, "/Messages.json"), 1, "one SMS");
    assert_eq!(
        creates_at(&got, "/Calls.json"),
        0,
        "no call: the code went by SMS"
    );
    assert_eq!(
        lookup_requests(&got).len(),
        1,
        "the retries ask no lookup: the channel was fixed by the first attempt"
    );
    let listed_where: Vec<&str> = got
        .iter()
        .filter(|r| r.method.as_str() == "GET" && !r.url.path().starts_with("/v2/"))
        .map(|r| r.url.path().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        listed_where,
        ["Messages.json"],
        "reconciled against the SMS"
    );
}

#[tokio::test]
async fn an_uncertain_sms_the_provider_lacks_is_sent_again_as_an_sms() {
    // The same seam when Twilio does not have the SMS after all: the resend
    // keeps the first attempt's channel (an SMS), with the quota it kept.
    let (app, clock) =
        app_changing_its_mind(twilio_changing_its_mind("fixedVoip", json!([])).await).await;
    let seen = six_attempts(
        &app,
        &clock,
        &code_message("+14155550123", "login", "482917"),
    )
    .await;
    assert_eq!(
        seen[0],
        (503, "provider_unavailable".to_owned(), "-".to_owned())
    );
    for attempt in &seen[1..] {
        assert_eq!(attempt, &(200, "-".to_owned(), SMS_SID.to_owned()));
    }
    let got = app.provider_requests().await;
    let texts: Vec<Vec<(String, String)>> = got
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| {
            form(r)
                .into_iter()
                .filter(|(k, _)| k == "To" || k == "Body")
                .collect()
        })
        .collect();
    let sms = pairs(&[
        ("To", "+14155550123"),
        ("Body", "Your login code is: 482917"),
    ]);
    assert_eq!(texts, [sms.clone(), sms], "two SMS creates, no call");
    assert_eq!(lookup_requests(&got).len(), 1);
}

#[tokio::test]
async fn requests_the_limits_refuse_cost_no_lookup() {
    // 20 messages to 20 numbers with one send allowed in total: one lookup,
    // for the one that is sent.
    let app = app_with_lookup(&[
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__PER_HOUR", "1"),
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__BURST", "1"),
    ])
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let to = format!("+1415555{:04}", 3000 + i * 37);
        let r = app
            .post_json("/v1/sms", &code_message(&to, "login", "482917"))
            .await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        statuses.push((
            status,
            body["error"]["code"].as_str().unwrap_or("-").to_owned(),
        ));
    }
    assert_eq!(statuses[0], (200, "-".to_owned()));
    assert_eq!(statuses[1..], vec![(429, "rate_limited".to_owned()); 19]);
    let got = app.provider_requests().await;
    assert_eq!(lookup_requests(&got).len(), 1, "one billed lookup");
    assert_eq!(creates_at(&got, "/Messages.json"), 1);
}

#[tokio::test]
async fn a_lookup_refusal_gives_the_quota_back() {
    // One send allowed in total: a number Lookup refuses takes nothing from
    // it, so the next code still goes.
    let app = app_with_lookup(&[
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__PER_HOUR", "1"),
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__BURST", "1"),
    ])
    .await;
    let (status, body) = error_of(
        app.post_json("/v1/sms", &code_message("+14155550104", "login", "482917"))
            .await,
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, "line_type_refused"));
    let r = app
        .post_json("/v1/sms", &code_message("+14155550101", "login", "482917"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let got = received(&app).await;
    let l = |n: &str| ("GET".to_owned(), "lookup".to_owned(), n.to_owned());
    let sms = |n: &str| ("POST".to_owned(), "Messages.json".to_owned(), n.to_owned());
    assert_eq!(
        got,
        [l("+14155550104"), l("+14155550101"), sms("+14155550101")]
    );
}

#[tokio::test]
async fn lookups_past_their_hourly_cap_follow_on_error() {
    for (on_error, third) in [("allow", 200), ("refuse", 503)] {
        let app = app_with_lookup(&[
            ("PHONE_COURIER__LOOKUP__MAX_PER_HOUR", "2"),
            ("PHONE_COURIER__LOOKUP__ON_ERROR", on_error),
        ])
        .await;
        let mut statuses = Vec::new();
        for to in ["+14155550101", "+14155550105", "+14155550112"] {
            let r = app
                .post_json("/v1/sms", &code_message(to, "login", "482917"))
                .await;
            statuses.push(r.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, third], "{on_error}");
        let got = app.provider_requests().await;
        assert_eq!(lookup_requests(&got).len(), 2, "{on_error}: the cap holds");
        let sent = if on_error == "allow" { 3 } else { 2 };
        assert_eq!(creates_at(&got, "/Messages.json"), sent, "{on_error}");
        let text = metrics_text(&app).await;
        assert!(
            text.contains("phone_courier_lookups_capped_total 1"),
            "{on_error}: {text}"
        );
        assert!(
            text.contains(r#"phone_courier_budget_used_ratio{scope="lookup_hour"} 1.0"#),
            "{on_error}: {text}"
        );
        assert!(
            text.contains(r#"phone_courier_lookups_total{result="error"} 0"#),
            "{on_error}: a capped lookup is not a failed one: {text}"
        );
    }
}

#[tokio::test]
async fn a_notice_to_a_lookup_landline_is_read_out_and_a_mobile_gets_the_sms() {
    let app = app_with_lookup(&[]).await;
    let notice = |to: &str| {
        json!({
            "recipient": to,
            "body": "An address on your account was changed. If this wasn't you, contact support.\n",
            "template_type": "verifiable_address_changed",
            "template_data": {"to": to, "identity": {"traits": {"phone_channel": "voice"}}},
            "request_headers": {"X-Forwarded-For": ["203.0.113.7"]}
        })
    };
    // Lookup says landline (the numbering plan cannot tell): a call reads it.
    let r = app.post_json("/v1/sms", &notice("+14155550102")).await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "voice", "fallback": true, "sid": CALL_SID})
    );
    // Lookup says mobile: the SMS, although the trait says voice.
    let r = app.post_json("/v1/sms", &notice("+14155550101")).await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "accepted", "channel": "sms", "sid": SMS_SID})
    );
    let got = app.provider_requests().await;
    let calls: Vec<_> = got.iter().filter(|r| r.url.path() == CALLS_PATH).collect();
    let messages: Vec<_> = got
        .iter()
        .filter(|r| r.url.path() == MESSAGES_PATH)
        .collect();
    assert_eq!((calls.len(), messages.len(), got.len()), (1, 1, 4));
    assert_eq!(
        form(calls[0]),
        pairs(&[
            ("To", "+14155550102"),
            ("From", FROM),
            (
                "Twiml",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say voice=\"alice\" language=\"en-US\">An address on your account was changed. If this wasn&apos;t you, contact support.</Say></Response>"
            ),
        ])
    );
    assert_eq!(
        form(messages[0]),
        pairs(&[
            ("To", "+14155550101"),
            ("From", FROM),
            (
                "Body",
                "An address on your account was changed. If this wasn't you, contact support.\n"
            ),
        ])
    );
}
