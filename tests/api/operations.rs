//! The operator's files against the running service: every metric the
//! Grafana dashboard (`deploy/grafana/kratos-phone-courier.json`) and the
//! alert rules (`deploy/prometheus/alerts.yml`) name, with every label they
//! select or group by, is one the service exposes after traffic; and every
//! metric the service exposes is on the dashboard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;
use twilio_sandbox::Fault;

use crate::helpers::*;
use crate::observability::service_with_sandbox_and;

/// Labels Prometheus adds when it scrapes (`instance`, `job`), and the
/// histogram bucket bound.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

fn deploy(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard: panel targets and variable
/// queries, wherever they are nested.
fn dashboard_expressions() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        ("query", Value::String(s)) if s.contains("phone_courier_") => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value =
        serde_json::from_str(&deploy("grafana/kratos-phone-courier.json")).unwrap();
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

fn alert_expressions() -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&deploy("prometheus/alerts.yml")).unwrap();
    doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// Exposed sample names and the label names each carries.
fn exposed(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(c) = sample.captures(line) else {
            continue;
        };
        let labels = out.entry(c[1].to_owned()).or_default();
        if let Some(l) = c.get(2) {
            labels.extend(label.captures_iter(l.as_str()).map(|c| c[1].to_owned()));
        }
    }
    out
}

/// What one expression asks of the metrics: the names it reads, the labels
/// each selector matches on, and the labels it groups by.
struct Uses {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

fn uses(expr: &str) -> Uses {
    let selector = Regex::new(r"\b(phone_courier_[a-z0-9_]+)(\{[^}]*\})?").unwrap();
    let matcher = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    let by =
        Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)|label_values\([^,]+,\s*([a-z_]+)\)").unwrap();
    Uses {
        selectors: selector
            .captures_iter(expr)
            .map(|c| {
                let labels = c
                    .get(2)
                    .map(|m| {
                        matcher
                            .captures_iter(m.as_str())
                            .map(|l| l[1].to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                (c[1].to_owned(), labels)
            })
            .collect(),
        grouping: by
            .captures_iter(expr)
            .flat_map(|c| {
                let list = c.get(1).or(c.get(2)).unwrap().as_str().to_owned();
                list.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

/// Send one message; the answer's status.
async fn send(client: &reqwest::Client, base: &str, body: &Value) -> u16 {
    client
        .post(format!("{base}/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exposed_after_traffic() {
    // Twilio Lookup on, against the sandbox, so that its families count.
    let (base, sandbox, _server) = service_with_sandbox_and(|env, sandbox| {
        env.insert("PHONE_COURIER__LOOKUP__ENABLED".into(), "true".into());
        env.insert("PHONE_COURIER__LOOKUP__BASE_URL".into(), sandbox.to_owned());
    })
    .await;
    let client = reqwest::Client::new();
    // A throwaway VoIP number (the sandbox's magic +14155550173): refused
    // after one lookup.
    assert_eq!(
        send(&client, &base, &login_message("+14155550173", "777777")).await,
        422
    );
    // Traffic that makes every family appear: accepted sends (and their
    // status callbacks), a recipient over its limit, a provider failure.
    for (i, code) in ["111111", "222222", "333333"].iter().enumerate() {
        assert_eq!(
            send(&client, &base, &login_message("+14155550123", code)).await,
            200,
            "send {i}"
        );
    }
    assert_eq!(
        send(&client, &base, &login_message("+14155550123", "444444")).await,
        429
    );
    // A landline: its code is spoken in a call (the fallback counter).
    assert_eq!(
        send(&client, &base, &login_message("+442071234567", "666666")).await,
        200
    );
    sandbox.inject_fault(Fault::Status503, 1);
    assert_eq!(
        send(&client, &base, &login_message("+447400123456", "555555")).await,
        503
    );
    // Kratos's confirmation of the first code, and one without credentials
    // (the fraud guard's counts).
    for auth in [true, false] {
        let mut r = client
            .post(format!("{base}/v1/kratos/confirmed"))
            .json(&serde_json::json!({"recipients": ["+14155550123"], "flow": "login"}));
        if auth {
            r = r.basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD));
        }
        assert_eq!(
            r.send().await.unwrap().status(),
            if auth { 200 } else { 401 }
        );
    }
    let _ = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    // Status callbacks arrive on their own: wait (bounded) until counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = client
            .get(format!("{base}/metrics"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(r#"status="delivered""#) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery status counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exposed = exposed(&text);

    let mut used_families = BTreeSet::new();
    let expressions: Vec<(&str, String)> = dashboard_expressions()
        .into_iter()
        .map(|e| ("dashboard", e))
        .chain(alert_expressions().into_iter().map(|e| ("alerts.yml", e)))
        .collect();
    assert!(
        expressions.len() > 20,
        "expressions found: {}",
        expressions.len()
    );
    for (file, expr) in &expressions {
        let u = uses(expr);
        assert!(
            !u.selectors.is_empty(),
            "{file}: `{expr}` reads no metric of the service"
        );
        let mut labels_here = BTreeSet::new();
        for (name, matchers) in &u.selectors {
            let Some(labels) = exposed.get(name) else {
                panic!("{file}: `{expr}` reads {name}, which the service does not expose:\n{text}");
            };
            for m in matchers {
                assert!(
                    labels.contains(m),
                    "{file}: {name} has no label {m} (`{expr}`)"
                );
            }
            labels_here.extend(labels.iter().cloned());
            used_families.insert(
                name.trim_end_matches("_total")
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum")
                    .to_owned(),
            );
        }
        for g in &u.grouping {
            assert!(
                labels_here.contains(g) || SCRAPE_LABELS.contains(&g.as_str()),
                "{file}: grouped by {g}, which no metric of `{expr}` has"
            );
        }
    }
    // The other way round: every family the service exposes is on the
    // dashboard (a new metric needs a panel).
    let dashboard_families: BTreeSet<String> = dashboard_expressions()
        .iter()
        .flat_map(|e| uses(e).selectors.into_iter().map(|(n, _)| n))
        .collect();
    for name in exposed.keys() {
        let family = name
            .trim_end_matches("_total")
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum")
            .trim_end_matches("_created");
        assert!(
            dashboard_families.iter().any(|d| d.starts_with(family)),
            "{name} is exposed but on no dashboard panel"
        );
    }
    assert!(used_families.len() >= 9, "{used_families:?}");
}

/// Panels added by separate changes must not share an id (Grafana keeps
/// one of them) nor sit on top of each other.
#[test]
fn dashboard_panels_have_unique_ids_and_do_not_overlap() {
    let d: Value = serde_json::from_str(&deploy("grafana/kratos-phone-courier.json")).unwrap();
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        if let Some(id) = p["id"].as_i64() {
            assert!(ids.insert(id), "panel id {id} used twice ({title})");
        }
        let g = &p["gridPos"];
        let b = ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap());
        for (other, o) in &boxes {
            let apart = b[0] + b[2] <= o[0]
                || o[0] + o[2] <= b[0]
                || b[1] + b[3] <= o[1]
                || o[1] + o[3] <= b[1];
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title, b));
    }
}
