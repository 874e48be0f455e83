//! The whole HTTP handler: an arbitrary body (and endpoint, and
//! Content-Type choice) with valid basic auth, through `App::handle`, with
//! Twilio pointed at a closed loopback port. It must always answer, never
//! panic, and never answer 5xx except the documented provider errors.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kratos_phone_courier::http::app::App;
use kratos_phone_courier::config::{Config, Sources};
use libfuzzer_sys::fuzz_target;

const AUTH: &str = "Basic a3JhdG9zOmZ1enotcGFzc3dvcmQ="; // kratos:fuzz-password

struct World {
    runtime: tokio::runtime::Runtime,
    app: App,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let env: HashMap<String, String> = [
            ("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0"),
            ("PHONE_COURIER__AUTH__BASIC__USERNAME", "kratos"),
            ("PHONE_COURIER__AUTH__BASIC__PASSWORD", "fuzz-password"),
            // Port 9 (discard) is closed on loopback: every send is refused
            // at once, so the whole path runs without a network.
            ("PHONE_COURIER__TWILIO__BASE_URL", "http://127.0.0.1:9"),
            (
                "PHONE_COURIER__TWILIO__ACCOUNT_SID",
                "AC0123456789abcdef0123456789abcdef",
            ),
            ("PHONE_COURIER__TWILIO__AUTH_TOKEN", "fuzz-token"),
            ("PHONE_COURIER__TWILIO__FROM", "+15005550006"),
            ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "1000"),
            (
                "PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START",
                "false",
            ),
            // Keep every input on the full path: no limiter or budget state
            // building up across runs.
            ("PHONE_COURIER__LIMITS__ENABLED", "false"),
            ("PHONE_COURIER__BUDGET__DAILY_TOTAL", "0"),
            ("PHONE_COURIER__BUDGET__DAILY_PER_COUNTRY", "0"),
            ("PHONE_COURIER__TEST_NUMBERS__NUMBERS", "+14155550100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::load(&Sources { file: None, env }).expect("fuzz config is valid");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = {
            let _guard = runtime.enter();
            App::new(config).expect("app builds")
        };
        World { runtime, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let path = if selector & 1 == 0 {
        "/v1/sms"
    } else {
        "/v1/voice"
    };
    let content_type = match (selector >> 1) & 3 {
        0 | 1 => "application/json",
        2 => "application/json; charset=utf-8",
        _ => "text/plain",
    };
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", AUTH)
        .header("content-type", content_type)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = w.runtime.block_on(w.app.handle(request));
    let status = response.status().as_u16();
    let bytes = w
        .runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    assert!(bytes.len() < 1024, "answer of {} bytes", bytes.len());
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("answers are JSON");
    if status != 200 {
        assert!(value["error"]["code"].is_string(), "no error.code: {value}");
    }
    match status {
        200 | 400 | 413 | 415 | 422 => {}
        // Refused connection to the closed port: provider_unavailable.
        503 => {}
        // Voice without a caller id cannot happen here (from is set), and
        // the closed port gives no provider answer to misread.
        other => panic!(
            "unexpected status {other}: {}",
            String::from_utf8_lossy(&bytes)
        ),
    }
});
