//! `schemas/openapi.yaml` against the running service: every documented
//! example is sent, and the answer must have the example's documented status
//! and match the documented response schema.

#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use serde_json::Value;

fn openapi() -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/schemas/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// Follow a local `#/…` reference.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with("#/") => doc
            .pointer(&r[1..])
            .unwrap_or_else(|| panic!("dangling {r}")),
        _ => v,
    }
}

fn check_answer(doc: &Value, op: &Value, name: &str, status: u16, content_type: &str, body: &str) {
    let responses = &op["responses"];
    let response = responses
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{name}: status {status} is not documented"));
    let response = resolve(doc, response);
    let Some(content) = response.get("content") else {
        assert!(body.is_empty(), "{name}: {status} documents no body");
        return;
    };
    let media = content_type.split(';').next().unwrap().trim();
    let Some(media_doc) = content.get(media) else {
        panic!("{name}: {status} answered {media}, documented {content}");
    };
    if media != "application/json" {
        return;
    }
    let schema = resolve(doc, &media_doc["schema"]);
    let validator = jsonschema::validator_for(schema).unwrap();
    let value: Value = serde_json::from_str(body).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{name}: {body} does not match: {errors:?}"
    );
}

/// Status callbacks and the inbound relay on (both are off by default), so
/// every documented endpoint exists.
fn every_endpoint(env: &mut std::collections::HashMap<String, String>) {
    for (k, v) in [
        (
            "PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL",
            "https://courier.example.com",
        ),
        ("PHONE_COURIER__RELAY__ENABLED", "true"),
        (
            "PHONE_COURIER__RELAY__PUBLIC_URL",
            "https://courier.example.com",
        ),
        ("PHONE_COURIER__RELAY__NUMBERS", "+15005550006"),
        ("PHONE_COURIER__RELAY__DEFAULT_ROUTE__NAME", "Unknown"),
        ("PHONE_COURIER__RELAY__DEFAULT_ROUTE__SMS", "+14155550123"),
        ("PHONE_COURIER__VERIFY__ENABLED", "true"),
    ] {
        env.insert(k.into(), v.into());
    }
    // Every documented example goes to a number of one block, from no
    // known address: the prefix and unknown-address limits are tested in
    // tests/api/client_address.rs, not here.
    for channel in ["SMS", "VOICE"] {
        for limit in ["PREFIX", "UNKNOWN_IP"] {
            env.insert(
                format!("PHONE_COURIER__LIMITS__{channel}__{limit}__PER_HOUR"),
                "0".into(),
            );
        }
    }
}

#[tokio::test]
async fn every_documented_example_gets_its_documented_answer() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let courier_schema: Value =
        serde_json::from_str(kratos_phone_courier::delivery::message::COURIER_MESSAGE_SCHEMA)
            .unwrap();
    let courier_validator = jsonschema::validator_for(&courier_schema).unwrap();
    // With status callbacks and the relay on, so their endpoints exist.
    let app = spawn_app_with(every_endpoint).await;
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let needs_auth = op
                .get("security")
                .and_then(Value::as_array)
                .is_none_or(|s| !s.is_empty());
            let request = |body: Option<(String, &str)>| {
                let mut r = app
                    .client
                    .request(method.to_uppercase().parse().unwrap(), app.url(path));
                if needs_auth {
                    r = r.basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD));
                }
                if let Some((b, ct)) = body {
                    r = r.header("Content-Type", ct).body(b);
                }
                r
            };
            if let Some(content) = op
                .pointer("/requestBody/content")
                .and_then(Value::as_object)
            {
                for (media, media_doc) in content {
                    for (name, example) in media_doc["examples"].as_object().unwrap() {
                        let expected = example["x-expect-status"].as_u64().unwrap() as u16;
                        let mut value = example["value"].clone();
                        if let Some(rep) = example.get("x-body-repeat") {
                            let field = rep["field"].as_str().unwrap();
                            let text = rep["char"]
                                .as_str()
                                .unwrap()
                                .repeat(rep["count"].as_u64().unwrap() as usize);
                            value[field] = Value::String(text);
                        }
                        let body = match &value {
                            Value::String(s) => s.clone(),
                            v => serde_json::to_string_pretty(v).unwrap(),
                        };
                        if media == "application/json" && expected == 200 {
                            let valid = match external_schema(path) {
                                Some(own) => {
                                    jsonschema::validator_for(&own).unwrap().is_valid(&value)
                                }
                                None => courier_validator.is_valid(&value),
                            };
                            assert!(valid, "{name} does not pass the service's request schema");
                        }
                        let answer = request(Some((body, media))).send().await.unwrap();
                        let status = answer.status().as_u16();
                        let ct = answer
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let text = answer.text().await.unwrap();
                        let label = format!("{method} {path} example {name}");
                        assert_eq!(status, expected, "{label}: {text}");
                        check_answer(&doc, op, &label, status, &ct, &text);
                        sent += 1;
                    }
                }
            } else if let Some(expected) = op.get("x-expect-status").and_then(Value::as_u64) {
                let answer = request(None).send().await.unwrap();
                let status = answer.status().as_u16();
                let ct = answer
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let text = answer.text().await.unwrap();
                let label = format!("{method} {path}");
                assert_eq!(status as u64, expected, "{label}: {text}");
                check_answer(&doc, op, &label, status, &ct, &text);
                sent += 1;
            }
        }
    }
    assert!(sent >= 12, "only {sent} examples were sent");
}

#[test]
fn every_error_code_the_service_has_is_documented() {
    let doc = openapi();
    let documented: Vec<&str> = doc
        .pointer("/components/schemas/Error/properties/error/properties/code/enum")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let source =
        std::fs::read_to_string(format!("{}/src/http/answer.rs", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let code_fn = source
        .split("fn code(&self)")
        .nth(1)
        .unwrap()
        .split("fn message")
        .next()
        .unwrap();
    let mut found = std::collections::BTreeSet::new();
    for piece in code_fn.split("=> \"").skip(1) {
        let code = piece.split('"').next().unwrap();
        assert!(
            documented.contains(&code),
            "{code} is not in schemas/openapi.yaml"
        );
        found.insert(code);
    }
    assert_eq!(
        found.len(),
        documented.len(),
        "the description lists codes the service does not have"
    );
}

/// `schema` with every `$ref` replaced by what it names: `#/…` in `doc`, and
/// `./courier-message.schema.json` by the schema the service enforces.
fn inline(doc: &Value, schema: &Value, courier: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                assert_eq!(map.len(), 1, "a $ref with siblings: {schema}");
                let target = if r == "./courier-message.schema.json" {
                    let mut c = courier.clone();
                    let o = c.as_object_mut().unwrap();
                    o.remove("$schema");
                    o.remove("$id");
                    return c;
                } else if let Some(mut own) = external_schema(r) {
                    let o = own.as_object_mut().unwrap();
                    o.remove("$schema");
                    o.remove("$id");
                    return own;
                } else {
                    let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}"));
                    doc.pointer(pointer)
                        .unwrap_or_else(|| panic!("dangling {r}"))
                };
                return inline(doc, target, courier);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline(doc, v, courier)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline(doc, v, courier)).collect())
        }
        other => other.clone(),
    }
}

/// The verify API's request schemas, as the service enforces them, by the
/// description's `$ref` (or by the path they are the request schema of).
fn external_schema(r: &str) -> Option<Value> {
    use kratos_phone_courier::verify::body::{CHECK_SCHEMA, REQUEST_SCHEMA};
    let text = match r {
        "./verify-request.schema.json" | "/v1/verify/request" => REQUEST_SCHEMA,
        "./verify-check.schema.json" | "/v1/verify/check" => CHECK_SCHEMA,
        "./confirmation.schema.json" | "/v1/kratos/confirmed" => {
            kratos_phone_courier::delivery::confirmation::CONFIRMATION_SCHEMA
        }
        _ => return None,
    };
    Some(serde_json::from_str(text).unwrap())
}

/// The validator of the JSON request body the description gives `path`.
fn request_validator(doc: &Value, path: &str) -> jsonschema::Validator {
    let courier: Value =
        serde_json::from_str(kratos_phone_courier::delivery::message::COURIER_MESSAGE_SCHEMA)
            .unwrap();
    let schema = doc["paths"][path]["post"]
        .pointer("/requestBody/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{path} has no JSON request schema"));
    jsonschema::validator_for(&inline(doc, schema, &courier)).unwrap()
}

/// The request examples and the Kratos fixtures against the request schemas:
/// what the service accepts passes both the runtime schema and the
/// description's; what it answers 422 passes the runtime schema only (here
/// every 422 example is one a schema can foresee); what it answers 400 fails
/// the runtime schema.
#[test]
fn request_examples_and_kratos_fixtures_match_the_request_schemas() {
    let doc = openapi();
    let courier_schema: Value =
        serde_json::from_str(kratos_phone_courier::delivery::message::COURIER_MESSAGE_SCHEMA)
            .unwrap();
    let runtime = jsonschema::validator_for(&courier_schema).unwrap();
    let mut checked = 0;
    for path in ["/v1/sms", "/v1/voice"] {
        let described = request_validator(&doc, path);
        let examples = doc["paths"][path]["post"]
            .pointer("/requestBody/content/application~1json/examples")
            .and_then(Value::as_object)
            .unwrap();
        for (name, example) in examples {
            let mut value = example["value"].clone();
            if let Some(rep) = example.get("x-body-repeat") {
                let text = rep["char"]
                    .as_str()
                    .unwrap()
                    .repeat(rep["count"].as_u64().unwrap() as usize);
                value[rep["field"].as_str().unwrap()] = Value::String(text);
            }
            let expected = example["x-expect-status"].as_u64().unwrap();
            assert_eq!(
                runtime.is_valid(&value),
                expected != 400,
                "{path} {name}: runtime schema"
            );
            assert_eq!(
                described.is_valid(&value),
                expected == 200,
                "{path} {name}: request schema in openapi.yaml"
            );
            checked += 1;
        }
        for fixture in ["login", "registration", "verification", "recovery"] {
            let value = fixture_json(fixture);
            assert!(described.is_valid(&value), "{path}: Kratos's {fixture}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} checked");
}

/// Edge cases of the checks the description states as schemas: whatever the
/// description's request schema says, the service agrees (schema-valid is
/// accepted, schema-invalid is refused with 4xx).
#[tokio::test]
async fn the_request_schemas_agree_with_the_service_at_the_edges() {
    use serde_json::json;
    let doc = openapi();
    // Forty recipients in one block of numbers, from no known address: no
    // prefix or unknown-address limit here (tests/api/client_address.rs
    // tests them).
    let app = spawn_app_with(|env| {
        for channel in ["SMS", "VOICE"] {
            for limit in ["PREFIX", "UNKNOWN_IP"] {
                env.insert(
                    format!("PHONE_COURIER__LIMITS__{channel}__{limit}__PER_HOUR"),
                    "0".into(),
                );
            }
        }
    })
    .await;
    let sms = request_validator(&doc, "/v1/sms");
    let voice = request_validator(&doc, "/v1/voice");
    let mut n = 0u32;
    // Each its own recipient, so no answer comes from the dedup memory.
    let mut next_recipient = || {
        n += 1;
        format!("+1415555{:04}", 3000 + n)
    };
    let mut cases: Vec<(&str, &str, Value)> = Vec::new();
    let base = |r: String, body: &str| {
        json!({"recipient": r, "body": body, "template_type": "login_code_valid",
               "template_data": {"login_code": "482917"}})
    };
    for body in [
        "x",
        " \u{a0}x",
        "\u{200b}",
        " \t\n",
        "\u{feff}\u{2060}",
        "\u{7}",
        "\u{85}",
        "é",
    ] {
        cases.push(("body visibility", "/v1/sms", base(next_recipient(), body)));
    }
    for len in [1600, 1601] {
        cases.push((
            "body length",
            "/v1/sms",
            base(next_recipient(), &"é".repeat(len)),
        ));
    }
    for r in [
        " +14155553100 ",
        "\u{3000}+14155553101\n",
        "+1 4155553102",
        "\u{feff}+14155553103",
    ] {
        cases.push(("recipient form", "/v1/sms", base(r.to_owned(), "x")));
    }
    for (template, data) in [
        ("login_code_valid", json!({"login_code": "AB12"})),
        ("login_code_valid", json!({"login_code": "123"})),
        ("login_code_valid", json!({"login_code": "1234567890123"})),
        ("login_code_valid", json!({"login_code": "12 34"})),
        ("login_code_valid", json!({})),
        ("login_code_valid", json!({"registration_code": "123456"})),
        (
            "registration_code_valid",
            json!({"registration_code": "12", "login_code": "123456"}),
        ),
        (
            "registration_code_valid",
            json!({"login_code": "123456", "verification_code": "x"}),
        ),
        (
            "recovery_code_valid",
            json!({"verification_code": "613570", "login_code": "x"}),
        ),
        (
            "recovery_code_valid",
            json!({"login_code": "x", "verification_code": "x"}),
        ),
        ("stub", json!({"verification_code": "613570"})),
        (
            "stub",
            json!({"login_code": "x", "verification_code": "613570"}),
        ),
    ] {
        let m = json!({"recipient": next_recipient(), "body": "", "template_type": template,
                       "template_data": data});
        cases.push(("voice code", "/v1/voice", m));
    }
    for data in [
        json!({"transient_payload": {"phone_courier": {"channel": "voice"}}}),
        json!({"transient_payload": {"phone_courier": {"channel": "sms"}}}),
        json!({"identity": {"traits": {"phone_channel": "voice"}}}),
        json!({"identity": {"phone_channel": "voice"}}),
        json!({"identity": {"traits": {"phone_channel": "sms"}, "phone_channel": "voice"}}),
        json!({"identity": {"traits": {"email": "a@example.com"}, "phone_channel": "voice"}}),
        json!({"identity": {"traits": null, "phone_channel": "voice"}}),
    ] {
        for (body, code) in [("", "482917"), ("x", "1")] {
            let mut data = data.clone();
            data["login_code"] = json!(code);
            let m = json!({"recipient": next_recipient(), "body": body,
                           "template_type": "login_code_valid", "template_data": data});
            cases.push(("/v1/sms channel choice", "/v1/sms", m));
        }
    }
    assert_eq!(cases.len(), 40);
    for (what, path, message) in cases {
        let valid = if path == "/v1/sms" { &sms } else { &voice };
        let described = valid.is_valid(&message);
        let r = app.post_json(path, &message).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if described {
            assert_eq!(
                status, 200,
                "{what}: schema-valid {message} answered {text}"
            );
        } else {
            assert_eq!(
                status, 422,
                "{what}: schema-invalid {message} answered {text}"
            );
        }
    }
}

/// Methods a client may send a path; QUERY is the new safe method with a body.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY",
];

fn allow_of(r: &reqwest::Response) -> std::collections::BTreeSet<String> {
    r.headers()
        .get("allow")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Send `method` to `url` with Kratos's credentials; assert the answer is
/// 405 with `Allow` naming exactly `allowed` (HEAD aside: it may be listed
/// where GET is) and a method_not_allowed body. Returns the `Allow` set.
async fn expect_405(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    allowed: &std::collections::BTreeSet<String>,
    error_schema: &jsonschema::Validator,
) -> std::collections::BTreeSet<String> {
    let r = client
        .request(method.parse().unwrap(), url)
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .send()
        .await
        .unwrap();
    let label = format!("{method} {url}");
    assert_eq!(r.status(), 405, "{label}");
    let allow = allow_of(&r);
    let mut listed = allow.clone();
    listed.remove("HEAD");
    let mut documented = allowed.clone();
    documented.remove("HEAD");
    assert_eq!(listed, documented, "{label}: Allow");
    if allow.contains("HEAD") {
        assert!(allow.contains("GET"), "{label}: HEAD without GET");
    }
    let text = r.text().await.unwrap();
    if method != "HEAD" {
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(error_schema.is_valid(&body), "{label}: {text}");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{label}");
    }
    allow
}

#[tokio::test]
async fn every_documented_path_answers_other_methods_405_with_allow() {
    let doc = openapi();
    let error_schema = jsonschema::validator_for(&doc["components"]["schemas"]["Error"]).unwrap();
    // Status callbacks and the relay on, metrics on the API listener:
    // every path exists.
    let app = spawn_app_with(every_endpoint).await;
    let mut paths = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let documented: std::collections::BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .filter(|m| METHODS.contains(&m.as_str()))
            .collect();
        assert!(!documented.is_empty(), "{path}");
        let mut allow = None;
        for method in METHODS.iter().filter(|m| !documented.contains(**m)) {
            // HEAD where GET is documented may be served as GET is.
            if *method == "HEAD" && documented.contains("GET") {
                continue;
            }
            let got = expect_405(
                &app.client,
                &app.url(path),
                method,
                &documented,
                &error_schema,
            )
            .await;
            if let Some(previous) = &allow {
                assert_eq!(
                    previous, &got,
                    "{method} {path}: the same Allow for every method"
                );
            }
            allow = Some(got);
        }
        // What Allow lists is served.
        for method in allow.unwrap() {
            let r = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 405, "{method} {path} is in Allow");
        }
        paths += 1;
    }
    assert_eq!(paths, 12, "every documented path was checked");
}

#[tokio::test]
async fn paths_not_on_a_listener_are_404_and_the_metrics_listener_answers_405() {
    let doc = openapi();
    let error_schema = jsonschema::validator_for(&doc["components"]["schemas"]["Error"]).unwrap();
    // Metrics on their own listener, no status callbacks, no relay: none
    // of these paths is on the API listener, whatever the method.
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__METRICS__LISTEN".into(),
            "127.0.0.1:0".into(),
        );
    })
    .await;
    for path in ["/metrics", "/v1/twilio/status", "/v1/twilio/inbound"] {
        for method in METHODS {
            let r = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {path} on the API listener");
            assert!(r.headers().get("allow").is_none(), "{method} {path}");
        }
    }
    // The metrics listener itself (as startup serves it).
    let metrics = std::sync::Arc::new(kratos_phone_courier::telemetry::metrics::Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kratos_phone_courier::http::server::run_metrics(
        listener,
        metrics,
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}/metrics");
    let client = reqwest::Client::new();
    let get: std::collections::BTreeSet<String> = ["GET".to_owned()].into();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    for method in METHODS.iter().filter(|m| **m != "GET") {
        expect_405(&client, &url, method, &get, &error_schema).await;
    }
    let r = client
        .get(format!("http://{addr}/v1/sms"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
