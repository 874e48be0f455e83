//! Every answer the service gives, in one place (and so past 400 lines: one
//! table on purpose): successes, health,
//! metrics, errors, and the overload answer written straight to a socket at
//! accept time. [`Answer`] is the one type the HTTP layer returns; nothing
//! else in the crate writes a status code, a header of an answer or an error
//! body.
//!
//! Error bodies are `{"error":{"code":"...","message":"..."}}` (plus
//! `provider_code`, `limit`, `scope` or `violations` where they apply), kept
//! well under the 1024 bytes Kratos reads and logs of an answer. No message
//! ever quotes a phone number, a code or a message body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::delivery::courier::{Delivered, TestMessage};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::Violation;
use crate::phone::E164_HELP;
use crate::verify::{Requested, VerifyError};

/// Everything the service can answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The provider accepted the message (or had already, or it went to a
    /// test number).
    Accepted(Delivered),
    /// `/health/alive`.
    Alive,
    /// `/health/ready`, ready, with each provider's state.
    /// With the setup warnings this replica has seen (`warnings`, listed
    /// only when there are any).
    Ready(Vec<ProviderHealth>, Vec<&'static str>),
    /// `/health/ready`, not ready, why, and each provider's state.
    NotReady(NotReady, Vec<ProviderHealth>),
    /// `/metrics`: the Prometheus text.
    Metrics(String),
    /// `/v1/test-messages`.
    TestMessages(Vec<TestMessage>),
    /// A status callback was recorded.
    Recorded,
    /// An incoming message was taken (relayed or not, it is not Twilio's
    /// business): the empty TwiML answer, so Twilio replies nothing.
    TwimlEmpty,
    /// `/v1/kratos/confirmed`: how many of the numbers had a code
    /// outstanding (and so counted).
    Confirmed {
        counted: usize,
    },
    /// `/v1/verify/request`: a code is on its way (new or re-sent).
    VerifyPending(Requested),
    /// `/v1/verify/check`: the code matched (and is now spent).
    VerifyApproved,
    /// A page for a browser (the verify demo of `serve --dev`).
    Html(String),
    Error(ApiError),
}

/// One provider as `/health/ready` lists it: its configured name and kind,
/// whether its credentials were verified at start, and this replica's
/// circuit for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ProviderHealth {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) credentials: &'static str,
    pub(crate) circuit: &'static str,
}

/// Why `/health/ready` says no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// SIGTERM arrived: load balancers should stop sending here.
    ShuttingDown,
    /// `twilio.verify_credentials_on_start` and the provider has not said yes.
    CredentialsUnverified,
    /// `store.backend = "redis"` with `on_error = "fail_closed"`, and Redis
    /// does not answer.
    StoreUnavailable,
}

impl NotReady {
    fn reason(self) -> &'static str {
        match self {
            NotReady::ShuttingDown => "shutting down",
            NotReady::CredentialsUnverified => "provider credentials not verified yet",
            NotReady::StoreUnavailable => "the store (store.redis) does not answer",
        }
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Self {
        Answer::Error(e)
    }
}

impl Answer {
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            Answer::Accepted(d) => {
                // Every accepted send ends here: written straight from a
                // struct, without building a JSON tree first.
                let body = AcceptedBody {
                    channel: d.channel.as_str(),
                    duplicate: d.duplicate,
                    fallback: d.fallback,
                    sid: d.sid.as_deref(),
                    status: "accepted",
                    test: d.test,
                };
                json_bytes_response(StatusCode::OK, serde_json::to_vec(&body))
            }
            Answer::Alive => json_response(StatusCode::OK, &json!({"status": "alive"})),
            Answer::Ready(providers, warnings) => {
                let mut body = json!({"status": "ready", "providers": providers});
                if !warnings.is_empty() {
                    body["warnings"] = json!(warnings);
                }
                json_response(StatusCode::OK, &body)
            }
            Answer::NotReady(why, providers) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": why.reason(), "providers": providers}),
            ),
            Answer::Metrics(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Answer::TestMessages(messages) => {
                json_response(StatusCode::OK, &json!({ "messages": messages }))
            }
            Answer::Recorded => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            Answer::TwimlEmpty => {
                let mut response = Response::new(Full::new(Bytes::from_static(b"<Response/>")));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/xml; charset=utf-8"),
                );
                response
            }
            Answer::Confirmed { counted } => json_response(
                StatusCode::OK,
                &json!({"status": "recorded", "counted": counted}),
            ),
            Answer::VerifyPending(r) => json_response(
                StatusCode::OK,
                &json!({"status": "pending", "channel": r.channel.as_str(), "expires_in": r.expires_in}),
            ),
            Answer::VerifyApproved => json_response(StatusCode::OK, &json!({"status": "approved"})),
            Answer::Html(page) => {
                let mut response = Response::new(Full::new(Bytes::from(page)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            Answer::Error(e) => e.into_response(),
        }
    }
}

/// The body of [`Answer::Accepted`]; fields in the order `json!` wrote
/// them before (sorted), `duplicate`, `fallback` and `test` only when true.
#[derive(serde::Serialize)]
struct AcceptedBody<'a> {
    channel: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    /// A call stood in for the SMS asked for (`delivery::fallback`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fallback: bool,
    sid: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    test: bool,
}

/// The whole HTTP/1.1 answer to a connection over `server.max_connections`,
/// written to the socket before hyper sees it (so it closes the connection).
pub(crate) fn too_many_connections_bytes() -> Vec<u8> {
    let e = ApiError::TooManyConnections;
    let body = e.to_json().to_string();
    let status = e.status();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

/// Every error answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("unauthorized")]
    Unauthorized { basic_challenge: bool },
    /// The body is not of the media type the endpoint reads (`expected`, a
    /// content type: JSON for Kratos, a form for Twilio's webhooks).
    #[error("unsupported media type")]
    UnsupportedMediaType { expected: &'static str },
    #[error("body too large")]
    BodyTooLarge { limit: usize },
    #[error("body could not be read")]
    BodyUnreadable,
    #[error("malformed JSON")]
    MalformedJson,
    #[error("schema violation")]
    Schema(Vec<Violation>),
    #[error("invalid signature")]
    InvalidSignature,
    /// A signed incoming-message webhook without MessageSid, From or To.
    #[error("invalid webhook")]
    InvalidWebhook,
    #[error("request timeout")]
    RequestTimeout,
    /// `server.max_connections` reached, answered at accept time.
    #[error("too many connections")]
    TooManyConnections,
    /// The delivery pipeline refused or failed the message.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The verify API refused a check (its delivery refusals are
    /// [`ApiError::Delivery`]: see `From<VerifyError>`).
    #[error(transparent)]
    Verify(VerifyError),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        use DeliveryError as D;
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::InvalidSignature => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable
            | ApiError::MalformedJson
            | ApiError::Schema(_)
            | ApiError::InvalidWebhook => StatusCode::BAD_REQUEST,
            ApiError::Verify(v) => verify_status(v),
            ApiError::Delivery(d) => match d {
                D::InvalidRecipient(_)
                | D::BodyTooLong { .. }
                | D::BodyEmpty
                | D::InvalidCode { .. }
                | D::TwimlTooLong
                | D::RecipientUnreachable { .. }
                | D::RecipientNotAllowed { .. }
                | D::LineTypeRefused { .. }
                | D::SimSwapSuspected
                | D::SmsPumpingRisk => StatusCode::UNPROCESSABLE_ENTITY,
                D::RateLimited { .. } | D::BudgetExhausted { .. } | D::FraudSuspected { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                D::VoiceNotConfigured
                | D::WhatsAppNotConfigured
                | D::ProviderConfiguration { .. } => StatusCode::BAD_GATEWAY,
                D::ProviderUnavailable { .. }
                | D::NoProviderSlot
                | D::StoreUnavailable
                | D::LookupUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The stable, machine-readable error code.
    pub(crate) fn code(&self) -> &'static str {
        use DeliveryError as D;
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyUnreadable => "body_unreadable",
            ApiError::MalformedJson => "malformed_json",
            ApiError::Schema(_) => "schema_violation",
            ApiError::InvalidSignature => "invalid_signature",
            ApiError::InvalidWebhook => "invalid_webhook",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TooManyConnections => "overloaded",
            ApiError::Verify(v) => match v {
                VerifyError::CodeMismatch { .. } => "code_mismatch",
                VerifyError::TooManyAttempts => "too_many_attempts",
                VerifyError::NoPendingCode => "no_pending_code",
                VerifyError::TooManyChecks { .. } => "too_many_checks",
                VerifyError::InvalidIdempotencyKey => "invalid_idempotency_key",
                VerifyError::IdempotencyKeyReused => "idempotency_key_reused",
                VerifyError::IdempotencyKeyInProgress => "idempotency_key_in_progress",
                VerifyError::Delivery(d) => ApiError::Delivery(d.clone()).code(),
            },
            ApiError::Delivery(d) => match d {
                D::InvalidRecipient(_) => "invalid_recipient",
                D::BodyTooLong { .. } => "body_too_long",
                D::BodyEmpty => "body_empty",
                D::InvalidCode { .. } => "invalid_code",
                D::TwimlTooLong => "twiml_too_long",
                D::VoiceNotConfigured => "voice_not_configured",
                D::WhatsAppNotConfigured => "whatsapp_not_configured",
                D::RecipientUnreachable { .. } => "recipient_unreachable",
                D::ProviderConfiguration { .. } => "provider_configuration",
                D::ProviderUnavailable { .. } => "provider_unavailable",
                D::RateLimited { .. } => "rate_limited",
                D::BudgetExhausted { .. } => "budget_exhausted",
                D::FraudSuspected { .. } => "fraud_suspected",
                D::RecipientNotAllowed { .. } => "recipient_not_allowed",
                D::NoProviderSlot => "overloaded",
                D::StoreUnavailable => "store_unavailable",
                D::LineTypeRefused { .. } => "line_type_refused",
                D::SimSwapSuspected => "sim_swap_suspected",
                D::SmsPumpingRisk => "sms_pumping_risk",
                D::LookupUnavailable { .. } => "lookup_unavailable",
            },
        }
    }

    pub(crate) fn message(&self) -> String {
        use DeliveryError as D;
        match self {
            ApiError::NotFound => "no such endpoint; the API is POST /v1/sms and POST /v1/voice".into(),
            ApiError::MethodNotAllowed { allow } => format!("this endpoint accepts {allow} only"),
            ApiError::Unauthorized { .. } => {
                "missing or wrong credentials; configure the Kratos channel's auth to match auth.basic or auth.api_key".into()
            }
            ApiError::UnsupportedMediaType { expected } => {
                format!("the body must be sent with Content-Type: {expected}")
            }
            ApiError::BodyTooLarge { limit } => {
                format!("the body is larger than server.max_body_bytes ({limit} bytes)")
            }
            ApiError::BodyUnreadable => "the request body could not be read".into(),
            ApiError::MalformedJson => "the body is not valid UTF-8 JSON".into(),
            ApiError::Schema(_) => {
                "the body does not match the endpoint's JSON Schema (schemas/; see violations)".into()
            }
            ApiError::RequestTimeout => {
                "the request body did not arrive within server.body_read_timeout_ms".into()
            }
            ApiError::TooManyConnections => {
                "too many connections (server.max_connections); retry".into()
            }
            ApiError::InvalidSignature => {
                "X-Twilio-Signature is missing or does not match this URL, these parameters and the auth token".into()
            }
            ApiError::InvalidWebhook => {
                "the incoming-message webhook lacks MessageSid, From or To".into()
            }
            ApiError::Verify(v) => verify_message(v),
            ApiError::Delivery(d) => match d {
                D::InvalidRecipient(e) => format!("recipient is {e}: {E164_HELP}"),
                D::BodyTooLong { chars } => {
                    format!("the SMS body has {chars} characters; Twilio accepts at most 1600")
                }
                D::BodyEmpty => "the SMS body is empty".into(),
                D::InvalidCode { reason } => format!(
                    "cannot place a voice call: {reason}; a spoken code must be 4 to 12 letters or digits in template_data (login_code, registration_code or verification_code)"
                ),
                D::TwimlTooLong => {
                    "the call's TwiML would exceed Twilio's 4000 characters; shorten voice.sentences".into()
                }
                D::VoiceNotConfigured => {
                    "voice calls need a caller id: set twilio.voice_from or twilio.from".into()
                }
                D::WhatsAppNotConfigured => {
                    "this message was sent by WhatsApp on another replica, and [whatsapp] (for a notification, whatsapp.notification_content_sid) is off here; configure every replica alike".into()
                }
                D::RecipientUnreachable { .. } => {
                    "the provider says this recipient cannot be reached (see provider_code)".into()
                }
                D::ProviderConfiguration { .. } => {
                    "the provider refused the request because of this service's configuration (credentials, account or sender); an operator must fix it".into()
                }
                D::ProviderUnavailable { .. } => {
                    "the provider is unavailable or busy; retry later".into()
                }
                D::RateLimited { limit, channel, .. } => {
                    let channel = channel.as_str();
                    format!(
                        "the {channel} rate limit per {limit} is reached (see limits.{channel}.{limit}); retry after the Retry-After seconds"
                    )
                }
                D::BudgetExhausted { scope, .. } => format!(
                    "the daily send budget ({scope}) is used up until midnight UTC (see budget.*)"
                ),
                D::FraudSuspected { .. } => {
                    "codes to this destination are not being confirmed (suspected SMS pumping, fraud.action = deny); retry after the Retry-After seconds".into()
                }
                D::RecipientNotAllowed { reason } => {
                    format!("the recipient is not allowed by policy: {reason}")
                }
                D::NoProviderSlot => {
                    "too many provider requests in progress (twilio.max_in_flight); retry".into()
                }
                D::StoreUnavailable => {
                    "the shared store (store.redis) is unavailable; nothing was sent; retry".into()
                }
                D::LineTypeRefused { line_type } => format!(
                    "Twilio Lookup says this number is a {line_type} line, which lookup.line_types refuses; nothing was sent"
                ),
                D::SimSwapSuspected => {
                    "Twilio Lookup says this number's SIM was swapped recently; codes of this kind are refused (lookup.sim_swap.refuse_for); nothing was sent".into()
                }
                D::SmsPumpingRisk => {
                    "Twilio Lookup rates this number's SMS-pumping risk above lookup.sms_pumping_risk.max_score; nothing was sent".into()
                }
                D::LookupUnavailable { .. } => {
                    "Twilio Lookup did not answer and lookup.on_error is refuse; nothing was sent; retry".into()
                }
            },
        }
    }

    /// The provider's error code, when the answer carries one.
    pub(crate) fn provider_code(&self) -> Option<u32> {
        match self {
            ApiError::Delivery(d) => d.provider_code(),
            _ => None,
        }
    }

    /// Seconds the caller should wait before retrying, when that is known.
    fn retry_after(&self) -> Option<u64> {
        use DeliveryError as D;
        match self {
            ApiError::TooManyConnections => Some(1),
            ApiError::Delivery(
                D::ProviderUnavailable { retry_after, .. }
                | D::RateLimited { retry_after, .. }
                | D::BudgetExhausted { retry_after, .. }
                | D::FraudSuspected { retry_after }
                | D::LookupUnavailable { retry_after },
            ) => Some(*retry_after),
            ApiError::Delivery(D::NoProviderSlot | D::StoreUnavailable) => Some(1),
            ApiError::Verify(VerifyError::TooManyChecks { retry_after }) => Some(*retry_after),
            ApiError::Verify(VerifyError::IdempotencyKeyInProgress) => Some(1),
            _ => None,
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        use DeliveryError as D;
        let mut error = json!({ "code": self.code(), "message": self.message() });
        if let Some(c) = self.provider_code() {
            error["provider_code"] = json!(c);
        }
        match self {
            ApiError::Delivery(D::RateLimited { limit, .. }) => {
                error["limit"] = json!(limit);
            }
            ApiError::Delivery(D::BudgetExhausted { scope, .. }) => {
                error["scope"] = json!(scope);
            }
            ApiError::Delivery(D::LineTypeRefused { line_type }) => {
                error["line_type"] = json!(line_type);
            }
            ApiError::Verify(VerifyError::CodeMismatch { attempts_left }) => {
                error["attempts_left"] = json!(attempts_left);
            }
            ApiError::Schema(v) => {
                error["violations"] = json!(v
                    .iter()
                    .map(|v| json!({"pointer": clip(&v.pointer, 64), "reason": v.reason}))
                    .collect::<Vec<_>>());
            }
            _ => {}
        }
        json!({ "error": error })
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), &self.to_json());
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unauthorized {
                basic_challenge: true,
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Basic realm=\"kratos-phone-courier\", charset=\"UTF-8\"",
                    ),
                );
            }
            _ => {}
        }
        response
    }
}

/// The verify API's answers (`src/verify/`). A refusal of the delivery
/// pipeline is the delivery's own answer, as for `/v1/sms`.
impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Delivery(d) => ApiError::Delivery(d),
            other => ApiError::Verify(other),
        }
    }
}

fn verify_status(v: &VerifyError) -> StatusCode {
    match v {
        VerifyError::CodeMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        VerifyError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
        VerifyError::NoPendingCode => StatusCode::NOT_FOUND,
        VerifyError::TooManyChecks { .. } => StatusCode::TOO_MANY_REQUESTS,
        VerifyError::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
        VerifyError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        VerifyError::IdempotencyKeyInProgress => StatusCode::CONFLICT,
        VerifyError::Delivery(d) => ApiError::Delivery(d.clone()).status(),
    }
}

fn verify_message(v: &VerifyError) -> String {
    match v {
        VerifyError::CodeMismatch { .. } => {
            "the code is not the one sent to this number (see attempts_left)".into()
        }
        VerifyError::TooManyAttempts => {
            "too many wrong codes (verify.max_attempts): the code is dropped; request a new one"
                .into()
        }
        VerifyError::NoPendingCode => {
            "no code is pending for this number: none was requested, it expired, or it was used"
                .into()
        }
        VerifyError::TooManyChecks { .. } => {
            "too many checks of this number this hour (verify.max_checks_per_hour), whatever its codes; retry after the Retry-After seconds"
                .into()
        }
        VerifyError::InvalidIdempotencyKey => {
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters".into()
        }
        VerifyError::IdempotencyKeyReused => {
            "this Idempotency-Key was used with another number or body; use a new key per request"
                .into()
        }
        VerifyError::IdempotencyKeyInProgress => {
            "a request with this Idempotency-Key is still being answered; retry after the Retry-After seconds"
                .into()
        }
        VerifyError::Delivery(d) => ApiError::Delivery(d.clone()).message(),
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A JSON answer with the right content type.
fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    json_bytes_response(status, Ok(value.to_string().into_bytes()))
}

fn json_bytes_response(
    status: StatusCode,
    body: Result<Vec<u8>, serde_json::Error>,
) -> Response<Full<Bytes>> {
    // Serialising a struct of strings and booleans cannot fail; if it ever
    // did, answer 500 rather than panic.
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":{"code":"internal","message":"the answer could not be written"}}"#
                .to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::RecipientError;

    #[test]
    fn error_bodies_stay_under_kratos_limit() {
        let violations = (0..3)
            .map(|_| Violation {
                pointer: "/request_headers/".to_owned() + &"x".repeat(500),
                reason: "r".repeat(100),
            })
            .collect();
        for e in [
            ApiError::Schema(violations),
            DeliveryError::InvalidRecipient(RecipientError::NotE164).into(),
            DeliveryError::InvalidCode {
                reason: "the code is not 4 to 12 letters or digits",
            }
            .into(),
            DeliveryError::ProviderConfiguration {
                provider_code: Some(20003),
                http_status: Some(401),
            }
            .into(),
        ] {
            let len = e.to_json().to_string().len();
            assert!(len < 1024, "{} is {len} bytes", e.code());
        }
    }

    #[test]
    fn the_accept_time_overload_answer_is_well_formed_http() {
        let bytes = too_many_connections_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"));
        assert!(head.contains("retry-after: 1"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
    }
}
