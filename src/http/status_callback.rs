//! `POST /v1/twilio/status`: delivery statuses Twilio posts for the
//! messages and calls this service created (when
//! `status_callback.public_url` is set).
//!
//! Only signed calls count: `X-Twilio-Signature` (or SignalWire's
//! `X-SignalWire-Signature`) must be Twilio's HMAC-SHA1 over the exact
//! callback URL and the sorted form parameters, keyed with the account's
//! auth token, compared in constant time. The status is recorded in metrics
//! and in one log line with the sid and the masked recipient.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use secrecy::ExposeSecret;

use crate::http::answer::ApiError;
use crate::http::app::{read_body, App};

/// Status callbacks are small; a few KiB is plenty.
const MAX_CALLBACK_BYTES: usize = 16 * 1024;

pub async fn handle<B>(app: &App, request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match check_and_record(app, request).await {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => {
            if matches!(e, ApiError::InvalidSignature) {
                tracing::warn!("status callback refused: missing or wrong signature");
            }
            e.into_response()
        }
    }
}

async fn check_and_record<B>(app: &App, request: Request<B>) -> Result<(), ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let config = app.config();
    let (Some(url), Some(token)) = (
        config.status_callback_url.as_deref(),
        config.twilio.signing_token.as_ref(),
    ) else {
        return Err(ApiError::NotFound);
    };
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::UnsupportedMediaType);
    }
    let signature = request
        .headers()
        .get("x-twilio-signature")
        .or_else(|| request.headers().get("x-signalwire-signature"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(request, MAX_CALLBACK_BYTES).await?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(signature) = signature else {
        return Err(ApiError::InvalidSignature);
    };
    if !crate::provider::signature::verify(token.expose_secret(), url, &params, &signature) {
        return Err(ApiError::InvalidSignature);
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (channel, sid, status) = if let Some(sid) = field("CallSid") {
        ("voice", sid, field("CallStatus").unwrap_or(""))
    } else {
        (
            "sms",
            field("MessageSid").or(field("SmsSid")).unwrap_or(""),
            field("MessageStatus").or(field("SmsStatus")).unwrap_or(""),
        )
    };
    let error_code = field("ErrorCode").and_then(|c| c.parse::<u32>().ok());
    let recipient = field("To")
        .and_then(|to| app.courier().recipients().parse(to).ok())
        .map(|r| r.masked());
    app.metrics().delivery_status(channel, status, error_code);
    let status_label = crate::telemetry::metrics::status_label(status);
    // A sid is Twilio's id, not personal data; cap it all the same.
    let sid: String = sid.chars().take(64).collect();
    if matches!(
        status_label,
        "undelivered" | "failed" | "busy" | "no-answer"
    ) {
        tracing::warn!(
            channel,
            sid,
            status = status_label,
            error_code,
            recipient,
            "delivery status"
        );
    } else {
        tracing::info!(
            channel,
            sid,
            status = status_label,
            error_code,
            recipient,
            "delivery status"
        );
    }
    Ok(())
}
