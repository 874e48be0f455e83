use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn health_endpoints_answer_without_auth() {
    let app = spawn_app().await;
    let alive = app
        .client
        .get(app.url("/health/alive"))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    assert_eq!(
        alive.json::<Value>().await.unwrap(),
        json!({"status": "alive"})
    );
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready", "providers": [
            {"name": "twilio", "kind": "twilio", "credentials": "not_checked", "circuit": "closed"}
        ]})
    );
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn readiness_says_no_while_shutting_down() {
    use http_body_util::Empty;
    let twilio = twilio_accepting().await;
    let config =
        kratos_phone_courier::config::Config::load(&kratos_phone_courier::config::Sources {
            file: None,
            env: base_env(&twilio.uri()),
        })
        .unwrap();
    let app = kratos_phone_courier::http::app::App::new(config).unwrap();
    let ready = || {
        http::Request::get("/health/ready")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(app.handle(ready()).await.status(), 200);
    app.begin_shutdown();
    let answer = app.handle(ready()).await;
    assert_eq!(answer.status(), 503);
    use http_body_util::BodyExt;
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"status": "not_ready", "reason": "shutting down", "providers": [
            {"name": "twilio", "kind": "twilio", "credentials": "not_checked", "circuit": "closed"}
        ]})
    );
}
