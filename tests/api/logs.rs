//! Logs never carry a code, a body, a secret or a whole number.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime keeps every task (server, connections, client)
// on this thread, so the thread-local subscriber sees all their events.
#[tokio::test(flavor = "current_thread")]
async fn a_full_send_logs_no_secret_code_body_or_number() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    assert_eq!(app.post("/v1/sms", &fixture("login")).await.status(), 200);
    assert_eq!(
        app.post("/v1/voice", &fixture("recovery")).await.status(),
        200
    );
    let mut bad = fixture_json("login");
    bad["recipient"] = json!("+1415555012");
    assert_eq!(app.post_json("/v1/sms", &bad).await.status(), 422);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request"),
        "the request line is logged: {logs}"
    );
    assert!(
        logs.contains("+1…23"),
        "the masked recipient is logged: {logs}"
    );
    assert!(
        logs.contains("SM0123456789abcdef0123456789abcdef"),
        "the sid is logged"
    );
    for secret in [
        "4155550123",
        "415555012",
        "482917",
        "613570",
        "Your login code",
        "Your recovery code",
        KRATOS_PASSWORD,
        AUTH_TOKEN,
        "ada@example.com",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}
