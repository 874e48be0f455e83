//! Playing Twilio's part for incoming messages: `POST /sandbox/inbound`
//! (JSON `{"from","to","body"}`, optionally `"message_sid"`, or the inbox
//! page's form) makes the sandbox post a signed incoming-message webhook
//! to the URL set with `--inbound-url`, with the form parameters Twilio
//! sends and `X-Twilio-Signature` over that URL and the auth token.

use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::answers::*;
use super::body::SandboxBody;
use super::create::MAX_BODY_BYTES;
use super::resources::API_VERSION;
use super::State;
use crate::signature;

/// A text "arriving" at one of the service's numbers.
#[derive(Debug, Clone, Deserialize)]
pub struct InboundSms {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub body: String,
    /// Twilio's id; a new `SM…` when absent. Give the same one twice to
    /// play Twilio retrying a webhook.
    #[serde(default)]
    pub message_sid: Option<String>,
}

/// What the service answered the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct InboundSent {
    pub message_sid: String,
    /// The service's HTTP status.
    pub status: u16,
    pub content_type: Option<String>,
    /// The service's answer body (`<Response/>`).
    pub answer: String,
}

/// Why no webhook was sent.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("no inbound URL is set (twilio-sandbox --inbound-url, or Sandbox::set_inbound_url)")]
    NoUrl,
    #[error("the sandbox has no HTTP client")]
    NoClient,
    #[error("the webhook could not be delivered: {0}")]
    Send(String),
}

/// The form parameters Twilio posts for an incoming SMS, in its order.
pub fn params(account_sid: &str, sid: &str, sms: &InboundSms) -> Vec<(String, String)> {
    [
        ("ToCountry", "US"),
        ("ToState", ""),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", ""),
        ("FromZip", ""),
        ("SmsSid", sid),
        ("FromState", ""),
        ("SmsStatus", "received"),
        ("FromCity", ""),
        ("Body", &sms.body),
        ("FromCountry", ""),
        ("To", &sms.to),
        ("ToZip", ""),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", account_sid),
        ("From", &sms.from),
        ("ApiVersion", API_VERSION),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Post the signed webhook and report the service's answer.
pub(crate) async fn send(state: &State, sms: InboundSms) -> Result<InboundSent, InboundError> {
    let url = state.inbound_url().ok_or(InboundError::NoUrl)?;
    let client = state
        .callback_client
        .clone()
        .ok_or(InboundError::NoClient)?;
    let sid = sms
        .message_sid
        .clone()
        .unwrap_or_else(|| state.config.flavor.new_sid("SM"));
    let form = params(&state.config.account_sid, &sid, &sms);
    let signature = signature::sign(&state.config.auth_token, &url, &form);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let answer = client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(state.config.flavor.signature_header(), signature)
        .body(body)
        .send()
        .await
        .map_err(|e| InboundError::Send(e.without_url().to_string()))?;
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = answer.text().await.unwrap_or_default();
    Ok(InboundSent {
        message_sid: sid,
        status,
        content_type,
        answer,
    })
}

/// `POST /sandbox/inbound`: JSON answers JSON; the inbox page's form is
/// sent back to the inbox.
pub(crate) async fn handle(state: &State, request: Request<Incoming>) -> Answer {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body\n"),
    };
    let sms = if is_form {
        let mut sms = InboundSms {
            from: String::new(),
            to: String::new(),
            body: String::new(),
            message_sid: None,
        };
        for (k, v) in form_urlencoded::parse(&bytes) {
            match &*k {
                "from" => sms.from = v.into_owned(),
                "to" => sms.to = v.into_owned(),
                "body" => sms.body = v.into_owned(),
                _ => {}
            }
        }
        sms
    } else {
        match serde_json::from_slice::<InboundSms>(&bytes) {
            Ok(sms) => sms,
            Err(_) => return text(
                StatusCode::BAD_REQUEST,
                "expected {\"from\":\"+15556667777\",\"to\":\"+15005550006\",\"body\":\"...\"}\n",
            ),
        }
    };
    let result = send(state, sms).await;
    if is_form {
        let mut answer = hyper::Response::new(SandboxBody::empty());
        *answer.status_mut() = StatusCode::SEE_OTHER;
        answer
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/inbox"));
        return answer;
    }
    match result {
        Ok(sent) => json(StatusCode::OK, &serde_json::json!(sent)),
        Err(e @ InboundError::NoUrl) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({"error": e.to_string()}),
        ),
        Err(e) => json(
            StatusCode::BAD_GATEWAY,
            &serde_json::json!({"error": e.to_string()}),
        ),
    }
}
