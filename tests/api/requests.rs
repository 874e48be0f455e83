//! What the service refuses before any provider call: credentials, content
//! type, size, JSON, schema, routes.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_with_a_challenge() {
    let app = spawn_app().await;
    let body = fixture("login");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("wrong password", Some(basic(KRATOS_USER, "nope"))),
        ("wrong user", Some(basic("root", KRATOS_PASSWORD))),
        ("bearer", Some("Bearer abc".into())),
        ("not base64", Some("Basic %%%".into())),
        ("no colon", Some(format!("Basic {}", b64(KRATOS_USER)))),
        ("empty", Some(String::new())),
    ];
    for (name, header) in cases {
        let mut request = app
            .client
            .post(app.url("/v1/sms"))
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(h) = header {
            request = request.header("Authorization", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"kratos-phone-courier\", charset=\"UTF-8\"",
            "{name}"
        );
        let (_, error) = error_of(response).await;
        assert_eq!(error_code(&error), "unauthorized", "{name}");
    }
    app.assert_provider_untouched().await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

#[tokio::test]
async fn api_key_header_authenticates_kratos() {
    let app = spawn_app_with(|env| {
        env.remove("PHONE_COURIER__AUTH__BASIC__USERNAME");
        env.remove("PHONE_COURIER__AUTH__BASIC__PASSWORD");
        env.insert(
            "PHONE_COURIER__AUTH__API_KEY__HEADER".into(),
            "X-Courier-Key".into(),
        );
        env.insert(
            "PHONE_COURIER__AUTH__API_KEY__VALUE".into(),
            "k-123456".into(),
        );
    })
    .await;
    let send = |key: Option<&'static str>| {
        let mut r = app
            .client
            .post(app.url("/v1/sms"))
            .header("Content-Type", "application/json")
            .body(fixture("login"));
        if let Some(k) = key {
            r = r.header("x-courier-key", k);
        }
        r.send()
    };
    let wrong = send(Some("k-1234567")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("www-authenticate").is_none());
    assert_eq!(send(None).await.unwrap().status(), 401);
    app.assert_provider_untouched().await;
    assert_eq!(send(Some("k-123456")).await.unwrap().status(), 200);
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn only_json_content_type_is_accepted() {
    let app = spawn_app().await;
    for (ct, expected) in [
        (Some("text/plain"), 415),
        (Some("application/x-www-form-urlencoded"), 415),
        (Some("application/jsonx"), 415),
        (None, 415),
        (Some("application/json; charset=utf-8"), 200),
        (Some("Application/JSON"), 200),
    ] {
        let mut r = app
            .client
            .post(app.url("/v1/sms"))
            .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
            .body(fixture("login"));
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        let response = r.send().await.unwrap();
        assert_eq!(response.status(), expected, "{ct:?}");
        if expected == 415 {
            let (_, e) = error_of(response).await;
            assert_eq!(error_code(&e), "unsupported_media_type");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .ends_with("application/json"),
                "{e}"
            );
        }
    }
    // Both accepted requests carry the same message: the second is answered
    // as a duplicate, without a second SMS.
    assert_eq!(app.provider_requests().await.len(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_chunked() {
    let app = spawn_app_with(|env| {
        env.insert(
            "PHONE_COURIER__SERVER__MAX_BODY_BYTES".into(),
            "2048".into(),
        );
    })
    .await;
    let mut m = sms_message("+14155550123");
    m["padding"] = json!("x".repeat(4096));
    let (status, e) = error_of(app.post_json("/v1/sms", &m).await).await;
    assert_eq!((status, error_code(&e)), (413, "body_too_large"));
    // Chunked: no Content-Length, the limit still holds.
    let auth = format!("Basic {}", b64(&format!("{KRATOS_USER}:{KRATOS_PASSWORD}")));
    let mut raw = format!(
        "POST /v1/sms HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..8 {
        raw.extend_from_slice(format!("{:x}\r\n", 512).as_bytes());
        raw.extend_from_slice(&[b' '; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(app.addr, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn malformed_json_gets_400() {
    let app = spawn_app().await;
    for body in [
        "",
        "{",
        "not json",
        "{\"recipient\": \"+14155550123\",}",
        "\u{feff}{}",
    ] {
        let (status, e) = error_of(app.post("/v1/sms", body).await).await;
        assert_eq!(
            (status, error_code(&e)),
            (400, "malformed_json"),
            "{body:?}"
        );
    }
    // Invalid UTF-8.
    let response = app
        .client
        .post(app.url("/v1/sms"))
        .basic_auth(KRATOS_USER, Some(KRATOS_PASSWORD))
        .header("Content-Type", "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    let (status, e) = error_of(response).await;
    assert_eq!((status, error_code(&e)), (400, "malformed_json"));
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn schema_violations_name_each_pointer() {
    let app = spawn_app().await;
    let (status, e) = error_of(
        app.post_json(
            "/v1/sms",
            &json!({"recipient": 14155550123u64, "body": "x", "template_type": "login_code_valid", "message_type": "email"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, error_code(&e)), (400, "schema_violation"));
    let pointers: Vec<&str> = e["error"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/recipient"), "{e}");
    assert!(pointers.contains(&"/message_type"), "{e}");
    assert!(
        !e.to_string().contains("14155550123"),
        "no value is echoed: {e}"
    );

    for (body, pointer) in [
        (json!([]), ""),
        (json!({"body": "x", "template_type": "t"}), ""),
        (
            json!({"recipient": "+14155550123", "body": null, "template_type": "t"}),
            "/body",
        ),
        (
            json!({"recipient": "+14155550123", "body": "x", "template_type": "t", "template_data": {"login_code": 482917}}),
            "/template_data/login_code",
        ),
        (
            json!({"recipient": "+14155550123", "body": "x", "template_type": "t", "request_headers": {"Accept-Language": "en"}}),
            "/request_headers/Accept-Language",
        ),
    ] {
        let (status, e) = error_of(app.post_json("/v1/sms", &body).await).await;
        assert_eq!(
            (status, error_code(&e)),
            (400, "schema_violation"),
            "{body}"
        );
        assert_eq!(e["error"]["violations"][0]["pointer"], pointer, "{body}");
    }
    app.assert_provider_untouched().await;
}

#[tokio::test]
async fn unknown_fields_are_accepted() {
    let app = spawn_app().await;
    let mut m = fixture_json("login");
    m["a_field_from_a_newer_kratos"] = json!({"x": 1});
    m["template_data"]["oauth2_login_request"] = json!(null);
    assert_eq!(app.post_json("/v1/sms", &m).await.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/v1/sms")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = app
        .client
        .post(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let (status, e) = error_of(app.client.post(app.url("/v1/email")).send().await.unwrap()).await;
    assert_eq!((status, error_code(&e)), (404, "not_found"));
    let (status, _) = error_of(app.client.get(app.url("/")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    app.assert_provider_untouched().await;
}
