//! The local admin endpoints: queueing faults and the inbox page.

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use tracing::info;

use super::answers::*;
use super::body::SandboxBody;
use super::create::MAX_BODY_BYTES;
use super::error::TwilioError;
use super::fault::Fault;
use super::html;
use super::State;

#[derive(Deserialize)]
struct FaultRequest {
    fault: String,
    #[serde(default = "one")]
    count: usize,
    /// Instead of `count`: a standing fault for one create request in
    /// every this many, until `DELETE /sandbox/faults` (`twilio` target only).
    #[serde(default)]
    every: Option<usize>,
    /// `twilio` (the default): the Messages/Calls API; `hooks`: the Slack
    /// stand-in and the webhook receiver.
    #[serde(default)]
    target: Option<String>,
    /// With `target` `hooks`: only posts to this `{name}`.
    #[serde(default)]
    name: Option<String>,
}

fn one() -> usize {
    1
}

/// `POST /sandbox/faults` with `{"fault":"503","count":3}`, or
/// `{"fault":"503","every":2}` for a standing fault.
pub(crate) async fn queue_fault(state: &State, request: Request<Incoming>) -> Answer {
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(&TwilioError::invalid_parameter("unreadable body")),
    };
    let parsed: FaultRequest = match serde_json::from_slice(&bytes) {
        Ok(parsed) => parsed,
        Err(e) => {
            return error(&TwilioError::invalid_parameter(format!(
                "expected {{\"fault\":\"503\",\"count\":3}}: {e}"
            )))
        }
    };
    match parsed.fault.parse::<Fault>() {
        Ok(fault) => {
            info!(fault = %fault, count = parsed.count, every = parsed.every, "fault queued");
            match (parsed.target.as_deref(), parsed.every) {
                (None | Some("twilio"), Some(period)) => state.faults.set_every(fault, period),
                (None | Some("twilio"), None) => state.faults.push(fault, parsed.count),
                (Some("hooks"), Some(_)) => {
                    return error(&TwilioError::invalid_parameter(
                        "every applies to the twilio target only",
                    ))
                }
                (Some("hooks"), None) => state.hook_faults.push(parsed.name, fault, parsed.count),
                (Some(_), _) => {
                    return error(&TwilioError::invalid_parameter(
                        "target must be \"twilio\" or \"hooks\"",
                    ))
                }
            }
            empty(StatusCode::NO_CONTENT)
        }
        Err(unknown) => error(&TwilioError::invalid_parameter(unknown.to_string())),
    }
}

pub(crate) fn html_page(state: &State) -> Answer {
    let mut answer = Response::new(SandboxBody::full(html::inbox_page(
        &state.inbox.newest_first(),
        &state.hooks.newest_first(),
        state.inbound_url().is_some(),
    )));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
}
