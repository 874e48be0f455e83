//! Checks of the Kratos kit in `kratos/`: the Kratos configuration validates
//! against Kratos v26.2.0's own schema, the identity schema is one Kratos
//! accepts, and the courier Jsonnet templates turn every message Kratos
//! sends into a body the service accepts, keeping nothing it does not need.
//!
//! Everything needed is in the repository (`tests/fixtures/kratos/vendor/`
//! holds the Ory schemas): these tests run offline.

mod common;

use std::path::Path;

use common::jsonnet::{fixture, kratos_file, render_kratos, repo_root, FIXTURES};
use serde_json::{json, Value};

const VENDOR: &str = "tests/fixtures/kratos/vendor";

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn vendored(name: &str) -> Value {
    read_json(&repo_root().join(VENDOR).join(name))
}

/// `kratos/kratos.yml`, as JSON.
fn kratos_config() -> Value {
    let path = kratos_file("kratos.yml");
    let text = std::fs::read_to_string(&path).expect("reading kratos/kratos.yml");
    serde_yaml::from_str(&text).expect("kratos/kratos.yml is not valid YAML")
}

/// Every schema error of `config` against Kratos v26.2.0's config schema,
/// with `ory://tracing-config` served from the vendored copy. Offline: any
/// other external reference would make building the validator fail.
fn kratos_config_errors(config: &Value) -> Vec<String> {
    config_errors("kratos-v26.2.0-config.schema.json", config)
}

/// Every schema error of `config` against the vendored config schema
/// `schema_file` (v26.2.0's, or master's of 2026-07-29).
fn config_errors(schema_file: &str, config: &Value) -> Vec<String> {
    let schema = vendored(schema_file);
    let registry = jsonschema::Registry::new()
        .add(
            "ory://tracing-config",
            vendored("ory-tracing-config.schema.json"),
        )
        .expect("registering ory://tracing-config")
        .prepare()
        .expect("preparing the schema registry");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_registry(&registry)
        .offline()
        .should_validate_formats(true)
        .build(&schema)
        .expect("building a validator for the Kratos config schema");
    validator
        .iter_errors(config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn channels(config: &Value) -> &Vec<Value> {
    config["courier"]["channels"]
        .as_array()
        .expect("courier.channels is a list")
}

/// `file:///etc/config/kratos/<name>` -> `<name>`, the file in `kratos/`
/// (mounted on /etc/config/kratos by docker-compose).
fn mounted_file_name(uri: &str) -> &str {
    uri.strip_prefix("file:///etc/config/kratos/")
        .unwrap_or_else(|| panic!("{uri} is not a file in /etc/config/kratos/"))
}

// ---------------------------------------------------------------- kratos.yml

#[test]
fn kratos_config_validates_against_kratos_v26_2_0_schema() {
    let errors = kratos_config_errors(&kratos_config());
    assert!(
        errors.is_empty(),
        "kratos/kratos.yml does not validate:\n{}",
        errors.join("\n")
    );
}

#[test]
fn schema_check_rejects_a_voice_channel_id() {
    // Kratos v26.2.0 only knows the channel id "sms": a "voice" channel
    // must be refused, which proves the schema check above really bites.
    let mut config = kratos_config();
    config["courier"]["channels"][0]["id"] = json!("voice");
    let errors = kratos_config_errors(&config);
    assert!(!errors.is_empty(), "a channel with id voice was accepted");
    assert!(
        errors.iter().any(|e| e.contains("/courier/channels/0/id")),
        "{errors:?}"
    );
}

#[test]
fn schema_check_rejects_a_bad_body_uri_and_unknown_keys() {
    let mut config = kratos_config();
    config["courier"]["channels"][0]["request_config"]["body"] =
        json!("ftp://example.com/body.jsonnet");
    assert!(!kratos_config_errors(&config).is_empty());

    let mut config = kratos_config();
    config["courier"]["channels"][0]["voice_url"] = json!("http://x");
    assert!(!kratos_config_errors(&config).is_empty());

    let mut config = kratos_config();
    config["selfservice"]["methods"]["code"]["mfa_enabled"] = json!(true);
    assert!(
        !kratos_config_errors(&config).is_empty(),
        "passwordless and mfa code at once must be refused"
    );
}

#[test]
fn courier_channel_is_the_phone_courier_sms_endpoint() {
    let config = kratos_config();
    let channels = channels(&config);
    assert_eq!(channels.len(), 1, "exactly one courier channel");
    let channel = &channels[0];
    assert_eq!(channel["id"], "sms");
    // List items get no schema defaults in Kratos: all three must be explicit.
    assert_eq!(channel["type"], "http");
    let rc = &channel["request_config"];
    assert_eq!(rc["method"], "POST");
    assert_eq!(rc["url"], "http://phone-courier:4470/v1/sms");

    // Kratos refuses any other Content-Type for a Jsonnet body.
    let headers = rc["headers"].as_object().expect("headers");
    let content_types: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .collect();
    assert_eq!(content_types.len(), 1, "{headers:?}");
    assert_eq!(content_types[0].1, "application/json");

    assert_eq!(rc["auth"]["type"], "basic_auth");
    assert!(rc["auth"]["config"]["user"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(rc["auth"]["config"]["password"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));

    let body = rc["body"].as_str().expect("body is a string");
    let name = mounted_file_name(body);
    assert_eq!(name, "courier-sms.jsonnet");
    assert!(kratos_file(name).is_file(), "kratos/{name} is missing");
}

#[test]
fn kratos_config_key_settings() {
    let c = kratos_config();
    let code = &c["selfservice"]["methods"]["code"];
    assert_eq!(code["enabled"], true);
    assert_eq!(code["passwordless_enabled"], true);
    let flows = &c["selfservice"]["flows"];
    for flow in ["verification", "recovery"] {
        assert_eq!(flows[flow]["enabled"], true, "{flow}");
        assert_eq!(flows[flow]["use"], "code", "{flow}");
    }
    assert_eq!(c["courier"]["message_retries"], 5);
    assert_eq!(c["serve"]["public"]["base_url"], "http://127.0.0.1:4433/");
    for flow in [
        "login",
        "registration",
        "verification",
        "recovery",
        "settings",
        "error",
    ] {
        let ui = flows[flow]["ui_url"].as_str().unwrap_or_default();
        assert!(ui.starts_with("http://127.0.0.1:4455/"), "{flow}: {ui}");
    }

    let allow: Vec<&str> = c["clients"]["web_hook"]["header_allowlist"]
        .as_array()
        .expect("header_allowlist")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Every header the Jsonnet keeps is forwarded, spelled as Kratos keys
    // request_headers (Go's canonical form), or the Jsonnet never sees it.
    for h in KEPT_HEADERS {
        assert!(allow.contains(&h), "{h} not in {allow:?}");
    }
    for h in &allow {
        let canonical: Vec<String> = h
            .split('-')
            .map(|part| {
                let mut c = part.chars();
                c.next().map_or(String::new(), |f| {
                    f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
                })
            })
            .collect();
        assert_eq!(*h, canonical.join("-"), "not in Go's canonical form");
    }
    // And the service's default client-address header is among them.
    let default = kratos_phone_courier::config::DEFAULT_TOML;
    let header = default
        .lines()
        .skip_while(|l| l.trim() != "[limits.client_ip]")
        .find_map(|l| l.strip_prefix("header = "))
        .expect("limits.client_ip.header in config/default.toml")
        .trim_matches('"');
    assert!(
        allow.iter().any(|h| h.eq_ignore_ascii_case(header)),
        "{header} not forwarded"
    );

    // Secrets are visibly placeholders, so nobody mistakes them for real ones.
    for kind in ["cookie", "cipher"] {
        let secrets = c["secrets"][kind].as_array().expect(kind);
        assert!(!secrets.is_empty());
        for s in secrets {
            assert!(s.as_str().unwrap().contains("change-me"), "{kind}: {s}");
        }
    }
}

#[test]
fn identity_schema_in_config_is_the_shipped_file() {
    let c = kratos_config();
    let id = c["identity"]["default_schema_id"].as_str().unwrap();
    assert_eq!(id, "phone");
    let schemas = c["identity"]["schemas"].as_array().unwrap();
    let entry = schemas
        .iter()
        .find(|s| s["id"] == id)
        .expect("default_schema_id is listed in identity.schemas");
    let url = entry["url"].as_str().unwrap();
    assert_eq!(url, "file:///etc/config/kratos/identity.schema.json");
    assert!(kratos_file(mounted_file_name(url)).is_file());
}

// ------------------------------------------------------- identity.schema.json

fn identity_schema() -> Value {
    read_json(&kratos_file("identity.schema.json"))
}

#[test]
fn identity_schema_passes_kratos_identity_meta_schema() {
    let registry = jsonschema::Registry::new()
        .add(
            "ory://identity-extension",
            vendored("ory-identity-extension.schema.json"),
        )
        .expect("registering ory://identity-extension")
        .prepare()
        .expect("preparing the schema registry");
    let meta = vendored("ory-identity-meta.schema.json");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_registry(&registry)
        .offline()
        .build(&meta)
        .expect("building the identity meta-schema validator");
    let schema = identity_schema();
    let errors: Vec<String> = validator
        .iter_errors(&schema)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // And the meta-schema bites: recovery by voice is not a Kratos thing.
    let mut bad = schema.clone();
    bad["properties"]["traits"]["properties"]["phone"]["ory.sh/kratos"]["recovery"]["via"] =
        json!("voice");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn identity_schema_has_the_phone_code_identifier() {
    let schema = identity_schema();
    let traits = &schema["properties"]["traits"];
    let phone = &traits["properties"]["phone"];
    assert_eq!(phone["type"], "string");
    assert_eq!(phone["format"], "tel");
    assert!(phone["title"].is_string());
    let kratos = &phone["ory.sh/kratos"];
    assert_eq!(kratos["credentials"]["code"]["identifier"], true);
    assert_eq!(kratos["credentials"]["code"]["via"], "sms");
    assert_eq!(kratos["verification"]["via"], "sms");
    assert_eq!(kratos["recovery"]["via"], "sms");
    assert_eq!(traits["required"], json!(["phone"]));

    let channel = &traits["properties"]["phone_channel"];
    assert_eq!(channel["enum"], json!(["sms", "voice"]));
    assert_eq!(traits["properties"]["email"]["format"], "email");
    // Only the phone is an identifier / gets codes.
    assert!(traits["properties"]["email"]["ory.sh/kratos"].is_null());
}

#[test]
fn identity_schema_accepts_and_rejects_traits() {
    let schema = identity_schema();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("identity.schema.json is a valid JSON Schema");
    let ok = |traits: Value| validator.is_valid(&json!({ "traits": traits }));

    // The traits of the fixtures (registration's identity is the traits).
    assert!(ok(
        fixture("login")["template_data"]["identity"]["traits"].clone()
    ));
    assert!(ok(
        fixture("registration")["template_data"]["identity"].clone()
    ));
    assert!(ok(
        json!({"phone": "+14155550123", "phone_channel": "voice"})
    ));

    assert!(
        !ok(json!({"email": "ada@example.com"})),
        "phone is required"
    );
    assert!(!ok(
        json!({"phone": "+14155550123", "phone_channel": "fax"})
    ));
    assert!(!ok(
        json!({"phone": "+14155550123", "email": "not an email"})
    ));
    assert!(!ok(json!({"phone": "+14155550123", "nickname": "ada"})));
}

// ----------------------------------------------------- courier Jsonnet files

const TEMPLATES: [&str; 2] = ["courier-sms.jsonnet", "courier-voice.jsonnet"];

fn courier_message_validator() -> jsonschema::Validator {
    let schema = read_json(&repo_root().join("schemas/courier-message.schema.json"));
    jsonschema::options()
        .offline()
        .build(&schema)
        .expect("building the courier message validator")
}

fn assert_accepted(validator: &jsonschema::Validator, out: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(out)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: output refused by courier-message.schema.json:\n{}\n{out:#}",
        errors.join("\n")
    );
}

const TOP_LEVEL_KEYS: [&str; 6] = [
    "recipient",
    "body",
    "template_type",
    "message_type",
    "request_headers",
    "template_data",
];
const TEMPLATE_DATA_KEYS: [&str; 7] = [
    "to",
    "login_code",
    "registration_code",
    "verification_code",
    "expires_in_minutes",
    "transient_payload",
    "identity",
];
const KEPT_HEADERS: [&str; 4] = [
    "Accept-Language",
    "X-Forwarded-For",
    "True-Client-Ip",
    "Cf-Connecting-Ip",
];

/// Data minimisation: only known keys, and nothing personal beyond the
/// recipient's number and the phone_channel preference.
fn assert_minimal(out: &Value, ctx: &Value, what: &str) {
    let obj = out.as_object().expect("output is an object");
    for k in obj.keys() {
        assert!(TOP_LEVEL_KEYS.contains(&k.as_str()), "{what}: key {k}");
    }
    if let Some(td) = out["template_data"].as_object() {
        for k in td.keys() {
            assert!(
                TEMPLATE_DATA_KEYS.contains(&k.as_str()),
                "{what}: template_data.{k}"
            );
        }
        if let Some(identity) = td.get("identity") {
            let mut expected = serde_json::Map::new();
            // The identity's id (limited per identity), never registration's.
            if ctx["template_type"] != "registration_code_valid" {
                if let Some(id) = ctx["template_data"]["identity"]["id"].as_str() {
                    expected.insert("id".into(), json!(id));
                }
            }
            if identity.get("traits").is_some() {
                expected.insert(
                    "traits".into(),
                    json!({"phone_channel": identity["traits"]["phone_channel"]}),
                );
            }
            assert_eq!(
                identity,
                &Value::Object(expected),
                "{what}: identity carries only its id and traits.phone_channel"
            );
        }
        if let Some(tp) = td.get("transient_payload") {
            let keys: Vec<_> = tp.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["phone_courier"], "{what}");
        }
    }
    if let Some(headers) = out["request_headers"].as_object() {
        for k in headers.keys() {
            assert!(KEPT_HEADERS.contains(&k.as_str()), "{what}: header {k}");
        }
    }

    let text = out.to_string();
    for needle in [
        "ada@example.com",
        "@example.com\"",
        "6a1b6b51",
        "7b2c7c62",
        "request_url",
        "self-service",
        "verifiable_addresses",
        "recovery_addresses",
        "schema_url",
        "Mozilla",
        "User-Agent",
        "Origin",
    ] {
        assert!(
            !text.contains(needle),
            "{what}: output contains {needle}: {text}"
        );
    }
    if let Some(email) = ctx["template_data"]["identity"]["traits"]["email"].as_str() {
        assert!(!text.contains(email), "{what}");
    }
}

/// What must pass through unchanged.
fn assert_carried(out: &Value, ctx: &Value, what: &str) {
    for k in ["recipient", "body", "template_type", "message_type"] {
        assert_eq!(out[k], ctx[k], "{what}: {k}");
    }
    let td = &ctx["template_data"];
    for k in [
        "to",
        "login_code",
        "registration_code",
        "verification_code",
        "expires_in_minutes",
    ] {
        if td[k].is_string() || td[k].is_number() {
            assert_eq!(out["template_data"][k], td[k], "{what}: template_data.{k}");
        }
    }
}

#[test]
fn templates_render_every_kratos_fixture() {
    let validator = courier_message_validator();
    let code_field = [
        ("login", "login_code"),
        ("registration", "registration_code"),
        ("verification", "verification_code"),
        // Kratos v26.2.0 sends the recovery code as verification_code.
        ("recovery", "verification_code"),
    ];
    for (name, field) in code_field {
        let ctx = fixture(name);
        for template in TEMPLATES {
            let what = format!("{template} on {name}.json");
            let out = render_kratos(template, &ctx);
            assert_accepted(&validator, &out, &what);
            assert_carried(&out, &ctx, &what);
            assert_minimal(&out, &ctx, &what);

            let code = ctx["template_data"][field].as_str().unwrap();
            assert_eq!(out["template_data"][field], code, "{what}");
            assert!(out["body"].as_str().unwrap().contains(code), "{what}");
            assert_eq!(out["template_data"]["expires_in_minutes"], 60, "{what}");
            assert_eq!(
                out["request_headers"],
                json!({
                    "Accept-Language": ["en-US,en;q=0.9"],
                    "True-Client-Ip": ["203.0.113.7"]
                }),
                "{what}"
            );
        }
    }
    assert_eq!(FIXTURES.len(), code_field.len());
}

#[test]
fn phone_channel_trait_is_forwarded_for_both_identity_shapes() {
    // login/verification/recovery: identity is the whole identity.
    let out = render_kratos("courier-sms.jsonnet", &fixture("login"));
    assert_eq!(
        out["template_data"]["identity"],
        json!({"id": "9f425a8d-7efc-4768-8f23-7647a74fdf13", "traits": {"phone_channel": "sms"}})
    );

    // registration: identity is the traits object itself.
    let mut ctx = fixture("registration");
    ctx["template_data"]["identity"]["phone_channel"] = json!("voice");
    let out = render_kratos("courier-sms.jsonnet", &ctx);
    assert_eq!(
        out["template_data"]["identity"],
        json!({"traits": {"phone_channel": "voice"}})
    );

    // No preference stored: no identity at all.
    let out = render_kratos("courier-sms.jsonnet", &fixture("registration"));
    assert!(out["template_data"].get("identity").is_none(), "{out}");
}

#[test]
fn the_identity_id_is_forwarded_for_every_code_template_but_registration() {
    // The courier limits per identity: verification codes carry no client
    // address, so the id is what stands between one account and many codes.
    for name in ["login", "verification", "recovery"] {
        let mut ctx = fixture(name);
        ctx["template_data"]["identity"]["traits"]
            .as_object_mut()
            .unwrap()
            .remove("phone_channel");
        let out = render_kratos("courier-sms.jsonnet", &ctx);
        assert_eq!(
            out["template_data"]["identity"],
            json!({"id": "9f425a8d-7efc-4768-8f23-7647a74fdf13"}),
            "{name}"
        );
    }
    // Registration's identity is the traits: an "id" trait is not passed.
    let mut ctx = fixture("registration");
    ctx["template_data"]["identity"]["id"] = json!("9f425a8d-7efc-4768-8f23-7647a74fdf13");
    let out = render_kratos("courier-sms.jsonnet", &ctx);
    assert!(out["template_data"].get("identity").is_none(), "{out}");
}

/// Messages Kratos may send that the fixtures do not show, each a variation
/// of a fixture. Each must render (a Jsonnet error would abort the send).
fn edge_cases() -> Vec<(&'static str, Value)> {
    let mut cases = Vec::new();
    let base = fixture("login");
    let mut with = |name: &'static str, f: &dyn Fn(&mut Value)| {
        let mut ctx = base.clone();
        f(&mut ctx);
        cases.push((name, ctx));
    };
    with("transient_payload null", &|c| {
        c["template_data"]["transient_payload"] = Value::Null
    });
    with("transient_payload missing", &|c| {
        c["template_data"]
            .as_object_mut()
            .unwrap()
            .remove("transient_payload");
    });
    with("transient_payload asks for voice", &|c| {
        c["template_data"]["transient_payload"] =
            json!({"phone_courier": {"channel": "voice"}, "other": "secret"})
    });
    with("transient_payload phone_courier null", &|c| {
        c["template_data"]["transient_payload"] = json!({"phone_courier": null})
    });
    with("transient_payload bad channel", &|c| {
        c["template_data"]["transient_payload"] = json!({"phone_courier": {"channel": "fax"}})
    });
    with("transient_payload not an object", &|c| {
        c["template_data"]["transient_payload"] = json!("x")
    });
    with("identity null", &|c| {
        c["template_data"]["identity"] = Value::Null
    });
    with("identity missing", &|c| {
        c["template_data"]
            .as_object_mut()
            .unwrap()
            .remove("identity");
    });
    with("identity traits null", &|c| {
        c["template_data"]["identity"]["traits"] = Value::Null
    });
    with("phone_channel voice", &|c| {
        c["template_data"]["identity"]["traits"]["phone_channel"] = json!("voice")
    });
    with("request_headers null", &|c| {
        c["request_headers"] = Value::Null
    });
    with("request_headers empty", &|c| {
        c["request_headers"] = json!({})
    });
    with("request_headers missing", &|c| {
        c.as_object_mut().unwrap().remove("request_headers");
    });
    with("X-Forwarded-For present", &|c| {
        c["request_headers"]["X-Forwarded-For"] = json!(["198.51.100.4, 10.0.0.1"])
    });
    with("expires_in_minutes null", &|c| {
        c["template_data"]["expires_in_minutes"] = Value::Null
    });
    with("template_data null", &|c| c["template_data"] = Value::Null);
    with("stub template", &|c| {
        c["template_type"] = json!("stub");
        c["template_data"] = json!({});
    });
    let mut reg = fixture("registration");
    reg["template_data"]["identity"] = json!({"phone": "+14155550123", "phone_channel": "voice"});
    cases.push(("registration identity = traits with voice", reg));
    cases
}

#[test]
fn templates_survive_edge_cases() {
    let validator = courier_message_validator();
    for (name, ctx) in edge_cases() {
        for template in TEMPLATES {
            let what = format!("{template}: {name}");
            let out = render_kratos(template, &ctx);
            assert_accepted(&validator, &out, &what);
            assert_carried(&out, &ctx, &what);
            assert_minimal(&out, &ctx, &what);
        }
    }
}

#[test]
fn edge_case_details() {
    let cases: std::collections::HashMap<_, _> = edge_cases().into_iter().collect();
    let render = |name: &str| render_kratos("courier-sms.jsonnet", &cases[name]);

    let out = render("transient_payload asks for voice");
    assert_eq!(
        out["template_data"]["transient_payload"],
        json!({"phone_courier": {"channel": "voice"}}),
        "the requested channel is kept, other payload keys are dropped"
    );
    for name in [
        "transient_payload null",
        "transient_payload missing",
        "transient_payload phone_courier null",
        "transient_payload bad channel",
        "transient_payload not an object",
    ] {
        assert!(
            render(name)["template_data"]
                .get("transient_payload")
                .is_none(),
            "{name}"
        );
    }
    for name in ["identity null", "identity missing"] {
        assert!(
            render(name)["template_data"].get("identity").is_none(),
            "{name}"
        );
    }
    // Traits null: the id is still passed (the courier limits per identity).
    assert_eq!(
        render("identity traits null")["template_data"]["identity"],
        json!({"id": "9f425a8d-7efc-4768-8f23-7647a74fdf13"})
    );
    assert_eq!(
        render("phone_channel voice")["template_data"]["identity"]["traits"]["phone_channel"],
        "voice"
    );
    assert_eq!(
        render("registration identity = traits with voice")["template_data"]["identity"],
        json!({"traits": {"phone_channel": "voice"}})
    );
    for name in [
        "request_headers null",
        "request_headers empty",
        "request_headers missing",
    ] {
        assert_eq!(render(name)["request_headers"], json!({}), "{name}");
    }
    assert_eq!(
        render("X-Forwarded-For present")["request_headers"]["X-Forwarded-For"],
        json!(["198.51.100.4, 10.0.0.1"])
    );
    assert!(render("expires_in_minutes null")["template_data"]
        .get("expires_in_minutes")
        .is_none());
    assert_eq!(render("template_data null")["template_data"], json!({}));
}

#[test]
fn voice_template_is_the_sms_template() {
    // Kratos disables Jsonnet imports, so the two files cannot share a
    // library: they must stay copies. Same code apart from comments...
    let code = |name: &str| -> Vec<String> {
        std::fs::read_to_string(kratos_file(name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(code("courier-sms.jsonnet"), code("courier-voice.jsonnet"));

    // ... and the same output on every message.
    let mut all: Vec<Value> = FIXTURES.iter().map(|n| fixture(n)).collect();
    all.extend(edge_cases().into_iter().map(|(_, c)| c));
    for ctx in &all {
        assert_eq!(
            render_kratos("courier-sms.jsonnet", ctx),
            render_kratos("courier-voice.jsonnet", ctx)
        );
    }
}

#[test]
fn a_jsonnet_error_is_reported() {
    // The renderer must not hide errors (Kratos would abort the send).
    let err = common::jsonnet::render_str("t", "function(ctx) ctx.missing", &json!({}))
        .expect_err("a missing field is an error");
    assert!(err.contains("missing"), "{err}");
    // (Not `function(ctx) ctx`: jrsonnet 0.5.0-pre98 turns an identity
    // function into a builtin that loses the parameter name, so a named
    // top-level argument cannot be bound to it. Kratos's go-jsonnet has no
    // such quirk; the kit's templates are not identity functions.)
    let ok = common::jsonnet::render_str("t", "function(ctx) ctx + {}", &fixture("login")).unwrap();
    assert_eq!(ok, fixture("login"));
}

/// The four flows a code completes, and where each keeps its after-hooks.
fn confirmed_hook_lists(c: &Value) -> Vec<(&'static str, &Value)> {
    let flows = &c["selfservice"]["flows"];
    vec![
        (
            "login.after.code.hooks",
            &flows["login"]["after"]["code"]["hooks"],
        ),
        (
            "registration.after.code.hooks",
            &flows["registration"]["after"]["code"]["hooks"],
        ),
        (
            "verification.after.hooks",
            &flows["verification"]["after"]["hooks"],
        ),
        ("recovery.after.hooks", &flows["recovery"]["after"]["hooks"]),
    ]
}

#[test]
fn every_code_flow_reports_its_confirmation_to_the_courier() {
    let c = kratos_config();
    let channel_auth = &channels(&c)[0]["request_config"]["auth"];
    for (what, hooks) in confirmed_hook_lists(&c) {
        let hooks = hooks.as_array().unwrap_or_else(|| panic!("{what} missing"));
        let web: Vec<&Value> = hooks.iter().filter(|h| h["hook"] == "web_hook").collect();
        assert_eq!(web.len(), 1, "{what}");
        let config = &web[0]["config"];
        assert_eq!(
            config["url"], "http://phone-courier:4470/v1/kratos/confirmed",
            "{what}"
        );
        assert_eq!(config["method"], "POST", "{what}");
        assert_eq!(config["headers"]["Content-Type"], "application/json");
        // Authenticated like the courier channel: the same credentials.
        assert_eq!(&config["auth"], channel_auth, "{what}");
        // In the background: a slow courier never holds up a sign-in.
        assert_eq!(config["response"]["ignore"], true, "{what}");
        let body = config["body"].as_str().expect("body");
        assert_eq!(mounted_file_name(body), "confirmed.jsonnet");
        assert!(kratos_file("confirmed.jsonnet").is_file());
    }
    // Registration still signs the new user in, as its last hook.
    let registration = confirmed_hook_lists(&c)[1].1.as_array().unwrap().clone();
    assert_eq!(registration.last().unwrap()["hook"], "session");
    // And the kit says that method hooks replace the flow's hooks.
    let text = std::fs::read_to_string(kratos_file("kratos.yml")).unwrap();
    assert!(text.contains("REPLACES, not merges"), "the kit must warn");
}

fn confirmation_validator() -> jsonschema::Validator {
    let schema = read_json(&repo_root().join("schemas/confirmation.schema.json"));
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn confirmed_jsonnet_passes_the_phone_numbers_and_the_flow() {
    let validator = confirmation_validator();
    let ctx = fixture("hook-login");
    let out = render_kratos("confirmed.jsonnet", &ctx);
    assert_eq!(
        out,
        json!({"recipients": ["+447400123456"], "flow": "login"}),
        "only sms addresses, nothing else of the identity"
    );
    assert!(validator.is_valid(&out));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = ctx.clone();
        edit(&mut c);
        let out = render_kratos("confirmed.jsonnet", &c);
        assert!(validator.is_valid(&out), "{out}");
        out
    };
    for (flow, url) in [
        ("registration", "http://k/self-service/registration?flow=1"),
        ("verification", "http://k/self-service/verification?flow=1"),
        ("recovery", "http://k/self-service/recovery?flow=1"),
        ("unknown", "http://k/elsewhere"),
    ] {
        let out = with(&|c| c["request_url"] = json!(url));
        assert_eq!(out["flow"], flow);
    }
    for edit in [
        &(|c: &mut Value| c["identity"] = Value::Null) as &dyn Fn(&mut Value),
        &|c| {
            c["identity"]
                .as_object_mut()
                .unwrap()
                .remove("verifiable_addresses");
        },
        &|c| c["identity"]["verifiable_addresses"] = json!([null, 3, {"via": "sms"}]),
        &|c| {
            c.as_object_mut().unwrap().remove("request_url");
        },
    ] {
        let out = with(edit);
        assert!(out["recipients"].as_array().unwrap().is_empty() || out["flow"] == "unknown");
    }
    // At most ten numbers, as the schema allows.
    let many: Vec<Value> = (0..15)
        .map(|i| json!({"via": "sms", "value": format!("+4474001234{i:02}")}))
        .collect();
    let out = with(&|c| c["identity"]["verifiable_addresses"] = json!(many));
    assert_eq!(out["recipients"].as_array().unwrap().len(), 10);
}

// ------------------------------------------- Kratos's next release (master)

/// `kratos/kratos.yml` with `kratos/kratos-next.yml` over it, merged the way
/// Kratos merges several `-c` files: objects key by key, the later file's
/// value winning for anything else (lists are replaced, not joined).
fn kratos_next_config() -> Value {
    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }
    let path = kratos_file("kratos-next.yml");
    let text = std::fs::read_to_string(&path).expect("reading kratos/kratos-next.yml");
    let overlay: Value = serde_yaml::from_str(&text).expect("kratos-next.yml is not valid YAML");
    let mut config = kratos_config();
    merge(&mut config, overlay);
    config
}

const MASTER_SCHEMA: &str = "kratos-master-2026-07-29-config.schema.json";

#[test]
fn kratos_next_overlay_validates_against_kratos_master_schema() {
    let config = kratos_next_config();
    let errors = config_errors(MASTER_SCHEMA, &config);
    assert!(
        errors.is_empty(),
        "kratos.yml + kratos-next.yml does not validate against Kratos master:\n{}",
        errors.join("\n")
    );
    // The plain kit is valid on master too (the overlay adds, never fixes).
    assert!(config_errors(MASTER_SCHEMA, &kratos_config()).is_empty());
    // Verify the new number first, then notify the one it replaced.
    let hooks = &config["selfservice"]["flows"]["settings"]["after"]["profile"]["hooks"];
    assert_eq!(
        hooks,
        &json!([
            {"hook": "verify_new_address"},
            {"hook": "notify_previous_addresses", "config": {"recipients": "removed"}}
        ])
    );
    // What the overlay leaves alone is kratos.yml's.
    assert_eq!(config["courier"], kratos_config()["courier"]);
}

#[test]
fn master_schema_check_bites_and_v26_2_0_does_not_know_the_hooks() {
    let mut config = kratos_next_config();
    config["selfservice"]["flows"]["settings"]["after"]["profile"]["hooks"][1]["config"]
        ["recipients"] = json!("everyone");
    let errors = config_errors(MASTER_SCHEMA, &config);
    assert!(
        !errors.is_empty(),
        "an unknown recipients value was accepted"
    );
    // Kratos v26.2.0 refuses the overlay: it is for the next release only.
    assert!(!kratos_config_errors(&kratos_next_config()).is_empty());
}

/// The fixtures of Kratos master's SMS (`tests/fixtures/kratos/next/`):
/// the two templates without a code, a login code with the Web OTP line and
/// `oauth2_login_request`, the verification of a new number.
const NEXT_FIXTURES: [&str; 4] = [
    "next/verifiable_address_changed",
    "next/authenticator_key_added",
    "next/login_web_otp",
    "next/verification_new_number",
];

#[test]
fn templates_render_kratos_masters_messages() {
    let validator = courier_message_validator();
    for name in NEXT_FIXTURES {
        let ctx = fixture(name);
        for template in TEMPLATES {
            let what = format!("{template} on {name}.json");
            let out = render_kratos(template, &ctx);
            assert_accepted(&validator, &out, &what);
            assert_carried(&out, &ctx, &what);
            assert_minimal(&out, &ctx, &what);
            // Nothing of the OAuth2 client, the change time or the request
            // domain reaches the courier: the body already says it all.
            let td = out["template_data"].as_object().unwrap();
            for k in [
                "oauth2_login_request",
                "changed_at",
                "added_at",
                "request_url_domain",
            ] {
                assert!(!td.contains_key(k), "{what}: {k} passed on");
            }
        }
    }
    // The notices exactly as Kratos master renders them: no code field, the
    // voice trait passed on (the courier sends them by SMS regardless).
    let out = render_kratos(
        "courier-sms.jsonnet",
        &fixture("next/verifiable_address_changed"),
    );
    assert_eq!(
        out,
        json!({
            "recipient": "+14155550123",
            "body": "An address on your account was changed. If this wasn't you, contact support.\n",
            "template_type": "verifiable_address_changed",
            "message_type": "sms",
            "request_headers": {
                "Accept-Language": ["en-US,en;q=0.9"],
                "True-Client-Ip": ["203.0.113.7"]
            },
            "template_data": {
                "to": "+14155550123",
                "identity": {
                    "id": "9f425a8d-7efc-4768-8f23-7647a74fdf13",
                    "traits": {"phone_channel": "voice"}
                }
            }
        })
    );
    let out = render_kratos(
        "courier-sms.jsonnet",
        &fixture("next/authenticator_key_added"),
    );
    assert_eq!(
        out["body"],
        "A new sign-in method (device key) was added to your account. If this wasn't you, secure your account.\n"
    );
    assert_eq!(out["template_type"], "authenticator_key_added");
    // The Web OTP line stays in the body as Kratos wrote it, last.
    let out = render_kratos("courier-sms.jsonnet", &fixture("next/login_web_otp"));
    assert_eq!(
        out["body"],
        "Your login code is: 482917\n\nIt expires in 60 minutes.\n\n@auth.example.com #482917\n"
    );
    assert_eq!(out["template_data"]["login_code"], "482917");
}
