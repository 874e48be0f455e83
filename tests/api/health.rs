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
        json!({"status": "ready"})
    );
    app.assert_provider_untouched().await;
}
