//! The other side of the service's inbound relay: a Slack stand-in
//! (`POST /sandbox/slack/{name}`, answers `ok` as Slack's incoming webhooks
//! do) and a generic webhook receiver (`POST /sandbox/webhooks/{name}`).
//! Both record every post they answer (`GET /sandbox/hooks.json`, and the
//! inbox page), and take their own queued faults
//! (`POST /sandbox/faults {"fault":"500","count":2,"target":"hooks"}`,
//! with `"name"` for one `{name}` only): `latency=MS`, `500`, `503`, `429`,
//! `drop`; others answer normally.

use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::answers::*;
use super::create::MAX_BODY_BYTES;
use super::fault::Fault;
use super::resources;
use super::State;

/// Which stand-in a post went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    Slack,
    Webhook,
}

/// One post to the Slack stand-in or the webhook receiver.
#[derive(Debug, Clone, Serialize)]
pub struct HookEntry {
    pub kind: HookKind,
    /// The `{name}` in the path: which channel or receiver.
    pub name: String,
    /// The body, as text.
    pub body: String,
    /// `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// `X-Courier-Signature-256`, as sent (webhooks).
    pub signature: Option<String>,
    /// RFC 2822, when it was answered.
    pub date: String,
    /// The status answered (200 unless a fault said otherwise).
    pub answered_status: u16,
}

impl HookEntry {
    /// What a person reads in the inbox: Slack's `text`, or the body.
    pub fn text(&self) -> String {
        if self.kind == HookKind::Slack {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.body) {
                if let Some(t) = v["text"].as_str() {
                    return t.to_owned();
                }
            }
        }
        self.body.clone()
    }
}

/// `POST /sandbox/slack/{name}` and `/sandbox/webhooks/{name}`.
pub(crate) async fn receive(
    state: &State,
    request: Request<Incoming>,
    kind: HookKind,
    name: &str,
) -> Result<Answer, Dropped> {
    if request.method() != http::Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n"));
    }
    let header_text = |h: &str| {
        request
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_text(header::CONTENT_TYPE.as_str());
    let signature = header_text("x-courier-signature-256");
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "unreadable body\n")),
    };
    let status = match state.hook_faults.take(name) {
        Some(Fault::Latency(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
        Some(Fault::Status500) => StatusCode::INTERNAL_SERVER_ERROR,
        Some(Fault::Status503) => StatusCode::SERVICE_UNAVAILABLE,
        Some(Fault::TooManyRequests { .. }) => StatusCode::TOO_MANY_REQUESTS,
        Some(Fault::DropConnection) => {
            state
                .hooks
                .push(entry(kind, name, body, content_type, signature, 0));
            return Err(Dropped);
        }
        _ => StatusCode::OK,
    };
    state.hooks.push(entry(
        kind,
        name,
        body,
        content_type,
        signature,
        status.as_u16(),
    ));
    Ok(match status {
        StatusCode::OK => text(StatusCode::OK, "ok"),
        other => text(other, "error\n"),
    })
}

fn entry(
    kind: HookKind,
    name: &str,
    body: String,
    content_type: Option<String>,
    signature: Option<String>,
    answered_status: u16,
) -> HookEntry {
    HookEntry {
        kind,
        name: name.to_owned(),
        body,
        content_type,
        signature,
        date: resources::now_rfc2822(),
        answered_status,
    }
}

/// Faults queued for the next posts, each for one `{name}` or for any.
#[derive(Debug, Default)]
pub(crate) struct HookFaults {
    queue: std::sync::Mutex<Vec<(Option<String>, Fault, usize)>>,
}

impl HookFaults {
    pub(crate) fn push(&self, name: Option<String>, fault: Fault, count: usize) {
        if count > 0 {
            self.lock().push((name, fault, count));
        }
    }

    /// The first fault queued for `name` (or for any name).
    fn take(&self, name: &str) -> Option<Fault> {
        let mut queue = self.lock();
        let i = queue
            .iter()
            .position(|(n, _, _)| n.as_deref().is_none_or(|n| n == name))?;
        let fault = queue[i].1.clone();
        queue[i].2 -= 1;
        if queue[i].2 == 0 {
            queue.remove(i);
        }
        Some(fault)
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Option<String>, Fault, usize)>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A `{name}` in a path: letters, digits, `-`, `_`, `.`, at most 64.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
