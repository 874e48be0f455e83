//! Every answer the API gives that is not a success, in one place: the
//! HTTP status, the stable machine-readable code and the message.
//!
//! Bodies are `{"error":{"code":"...","message":"..."}}` (plus
//! `provider_code` or `violations` where they apply), kept well under the
//! 1024 bytes Kratos reads and logs of an answer. No message ever quotes a
//! phone number, a code or a message body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::delivery::message::Violation;
use crate::phone::{RecipientError, E164_HELP};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("unauthorized")]
    Unauthorized { basic_challenge: bool },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("body too large")]
    BodyTooLarge { limit: usize },
    #[error("body could not be read")]
    BodyUnreadable,
    #[error("malformed JSON")]
    MalformedJson,
    #[error("schema violation")]
    Schema(Vec<Violation>),
    #[error("invalid recipient")]
    InvalidRecipient(RecipientError),
    #[error("SMS body too long")]
    BodyTooLong { chars: usize },
    #[error("SMS body empty")]
    BodyEmpty,
    #[error("invalid code")]
    InvalidCode { reason: &'static str },
    #[error("TwiML too long")]
    TwimlTooLong,
    #[error("voice not configured")]
    VoiceNotConfigured,
    #[error("recipient unreachable")]
    RecipientUnreachable { provider_code: Option<u32> },
    #[error("provider configuration")]
    ProviderConfiguration {
        provider_code: Option<u32>,
        http_status: Option<u16>,
    },
    #[error("provider unavailable")]
    ProviderUnavailable {
        provider_code: Option<u32>,
        retry_after: u64,
    },
    #[error("shutting down")]
    ShuttingDown,
    #[error("rate limited")]
    RateLimited {
        limit: &'static str,
        channel: &'static str,
        retry_after: u64,
    },
    #[error("budget exhausted")]
    BudgetExhausted {
        scope: &'static str,
        retry_after: u64,
    },
    #[error("recipient not allowed")]
    RecipientNotAllowed { reason: &'static str },
    #[error("invalid signature")]
    InvalidSignature,
    #[error("request timeout")]
    RequestTimeout,
    #[error("overloaded")]
    Overloaded,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::InvalidSignature => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable | ApiError::MalformedJson | ApiError::Schema(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::InvalidRecipient(_)
            | ApiError::BodyTooLong { .. }
            | ApiError::BodyEmpty
            | ApiError::InvalidCode { .. }
            | ApiError::TwimlTooLong
            | ApiError::RecipientUnreachable { .. }
            | ApiError::RecipientNotAllowed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::BudgetExhausted { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::VoiceNotConfigured | ApiError::ProviderConfiguration { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::ProviderUnavailable { .. } | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyUnreadable => "body_unreadable",
            ApiError::MalformedJson => "malformed_json",
            ApiError::Schema(_) => "schema_violation",
            ApiError::InvalidRecipient(_) => "invalid_recipient",
            ApiError::BodyTooLong { .. } => "body_too_long",
            ApiError::BodyEmpty => "body_empty",
            ApiError::InvalidCode { .. } => "invalid_code",
            ApiError::TwimlTooLong => "twiml_too_long",
            ApiError::VoiceNotConfigured => "voice_not_configured",
            ApiError::RecipientUnreachable { .. } => "recipient_unreachable",
            ApiError::ProviderConfiguration { .. } => "provider_configuration",
            ApiError::ProviderUnavailable { .. } => "provider_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BudgetExhausted { .. } => "budget_exhausted",
            ApiError::RecipientNotAllowed { .. } => "recipient_not_allowed",
            ApiError::InvalidSignature => "invalid_signature",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Overloaded => "overloaded",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::NotFound => "no such endpoint; the API is POST /v1/sms and POST /v1/voice".into(),
            ApiError::MethodNotAllowed { allow } => format!("this endpoint accepts {allow} only"),
            ApiError::Unauthorized { .. } => {
                "missing or wrong credentials; configure the Kratos channel's auth to match auth.basic or auth.api_key".into()
            }
            ApiError::UnsupportedMediaType => {
                "the body must be JSON with Content-Type: application/json".into()
            }
            ApiError::BodyTooLarge { limit } => {
                format!("the body is larger than server.max_body_bytes ({limit} bytes)")
            }
            ApiError::BodyUnreadable => "the request body could not be read".into(),
            ApiError::MalformedJson => "the body is not valid UTF-8 JSON".into(),
            ApiError::Schema(_) => {
                "the body does not match schemas/courier-message.schema.json".into()
            }
            ApiError::InvalidRecipient(e) => format!("recipient is {e}: {E164_HELP}"),
            ApiError::BodyTooLong { chars } => {
                format!("the SMS body has {chars} characters; Twilio accepts at most 1600")
            }
            ApiError::BodyEmpty => "the SMS body is empty".into(),
            ApiError::InvalidCode { reason } => format!(
                "cannot place a voice call: {reason}; a spoken code must be 4 to 12 letters or digits in template_data (login_code, registration_code or verification_code)"
            ),
            ApiError::TwimlTooLong => {
                "the call's TwiML would exceed Twilio's 4000 characters; shorten voice.sentences".into()
            }
            ApiError::VoiceNotConfigured => {
                "voice calls need a caller id: set twilio.voice_from or twilio.from".into()
            }
            ApiError::RecipientUnreachable { .. } => {
                "the provider says this recipient cannot be reached (see provider_code)".into()
            }
            ApiError::ProviderConfiguration { .. } => {
                "the provider refused the request because of this service's configuration (credentials, account or sender); an operator must fix it".into()
            }
            ApiError::ProviderUnavailable { .. } => {
                "the provider is unavailable or busy; retry later".into()
            }
            ApiError::ShuttingDown => "the service is shutting down; retry".into(),
            ApiError::RateLimited { limit, channel, .. } => format!(
                "the {channel} rate limit per {limit} is reached (see limits.{channel}.{limit}); retry after the Retry-After seconds"
            ),
            ApiError::BudgetExhausted { scope, .. } => format!(
                "the daily send budget ({scope}) is used up until midnight UTC (see budget.*)"
            ),
            ApiError::RecipientNotAllowed { reason } => {
                format!("the recipient is not allowed by policy: {reason}")
            }
            ApiError::RequestTimeout => {
                "the request body did not arrive within server.body_read_timeout_ms".into()
            }
            ApiError::Overloaded => {
                "too many requests in progress (server.max_connections or twilio.max_in_flight); retry".into()
            }
            ApiError::InvalidSignature => {
                "X-Twilio-Signature is missing or does not match this URL, these parameters and the auth token".into()
            }
        }
    }

    /// The provider's error code, when the answer carries one.
    pub fn provider_code(&self) -> Option<u32> {
        match self {
            ApiError::RecipientUnreachable { provider_code }
            | ApiError::ProviderConfiguration { provider_code, .. }
            | ApiError::ProviderUnavailable { provider_code, .. } => *provider_code,
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code(), "message": self.message() });
        match self {
            ApiError::RecipientUnreachable { provider_code }
            | ApiError::ProviderConfiguration { provider_code, .. }
            | ApiError::ProviderUnavailable { provider_code, .. } => {
                if let Some(c) = provider_code {
                    error["provider_code"] = json!(c);
                }
            }
            ApiError::RateLimited { limit, .. } => {
                error["limit"] = json!(limit);
            }
            ApiError::BudgetExhausted { scope, .. } => {
                error["scope"] = json!(scope);
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

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), &self.to_json());
        let headers = response.headers_mut();
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
            ApiError::ProviderUnavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::ShuttingDown | ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::RateLimited { retry_after, .. }
            | ApiError::BudgetExhausted { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A JSON answer with the right content type.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
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
            ApiError::InvalidRecipient(RecipientError::NotE164),
            ApiError::InvalidCode {
                reason: "the code is not 4 to 12 letters or digits",
            },
            ApiError::ProviderConfiguration {
                provider_code: Some(20003),
                http_status: Some(401),
            },
        ] {
            let len = e.to_json().to_string().len();
            assert!(len < 1024, "{} is {len} bytes", e.code());
        }
    }
}
