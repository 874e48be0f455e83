use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn a_request_in_flight_is_answered_after_shutdown_begins() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&twilio)
        .await;
    let mut app = spawn_app_against(twilio, |_| {}).await;
    let url = app.url("/v1/sms");
    let client = app.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .header("Content-Type", "application/json")
            .body(fixture("login"))
            .send()
            .await
    });
    // Wait until Twilio has the request, then begin shutdown.
    loop {
        if !app.provider_requests().await.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    app.trigger_shutdown();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        200,
        "the send Twilio accepted is reported as accepted"
    );
    app.shutdown().await;
    // The listener is closed: new connections are refused.
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
}
