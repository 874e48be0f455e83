//! Building the sandbox's answers: Twilio-shaped JSON, errors, plain text.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::SandboxBody;
use super::error::TwilioError;

pub(crate) type Answer = Response<SandboxBody>;

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("sandbox fault: connection dropped without an answer")]
pub(crate) struct Dropped;

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    json_text(status, value.to_string())
}

pub(crate) fn json_text(status: StatusCode, text: String) -> Answer {
    let mut answer = Response::new(SandboxBody::full(text));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    answer
}

pub(crate) fn error(error: &TwilioError) -> Answer {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_text(status, error.to_json())
}

pub(crate) fn text(status: StatusCode, text: &'static str) -> Answer {
    let mut answer = Response::new(SandboxBody::full(text));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

pub(crate) fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(SandboxBody::empty());
    *answer.status_mut() = status;
    answer
}
