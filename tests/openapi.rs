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

#[tokio::test]
async fn every_documented_example_gets_its_documented_answer() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let courier_schema: Value =
        serde_json::from_str(kratos_phone_courier::delivery::message::COURIER_MESSAGE_SCHEMA)
            .unwrap();
    let courier_validator = jsonschema::validator_for(&courier_schema).unwrap();
    // With status callbacks on, so their endpoint exists.
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL".into(),
            "https://courier.example.com".into(),
        );
    })
    .await;
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
                            assert!(
                                courier_validator.is_valid(&value),
                                "{name} is not a valid courier message"
                            );
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
        .split("pub fn code(&self)")
        .nth(1)
        .unwrap()
        .split("pub fn message")
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
