//! `POST .../Messages.json` and `POST .../Calls.json`: checked the way
//! Twilio checks them (credentials, form encoding, the published schema,
//! magic test numbers), with the faults a test can ask for, then recorded in
//! the inbox and answered 201 with Twilio's resource JSON.
//!
//! [`resource`] is the entry point for every method on those two paths: it
//! records the request in the request log and sends `GET` to the list
//! endpoint (`list`), `POST` here.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use tracing::{debug, info, warn};

use super::answers::*;
use super::auth;
use super::body::SandboxBody;
use super::callback::{self, CallbackJob};
use super::error::TwilioError;
use super::fault::Fault;
use super::list;
use super::mask;
use super::model::{Channel, InboxEntry, RecordedRequest};
use super::resources;
use super::twiml;
use super::validate::{self, param};
use super::State;

/// Largest request body read (Twilio's own limits are far below this).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header selecting a fault for one request.
const FAULT_HEADER: &str = "x-sandbox-fault";
/// Where the `redirect` fault points.
const REDIRECT_PATH: &str = "/sandbox/redirected";

/// Any request to `.../Messages.json` or `.../Calls.json`: `POST` creates,
/// `GET` lists, anything else is 405. Every one is recorded in the request
/// log.
pub(crate) async fn resource(
    state: &State,
    request: Request<Incoming>,
    account_sid: &str,
    channel: Channel,
) -> Result<Answer, Dropped> {
    let (parts, body) = request.into_parts();
    let credentials = auth::basic(&parts.headers);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default(),
        basic_user: credentials.as_ref().map(|c| c.user.clone()),
        content_type: content_type.clone(),
        form: Vec::new(),
        answered_status: 0,
    };
    // How long to hold the answer back after recording it (the
    // `accept-then-latency` fault).
    let mut hold: Option<Duration> = None;
    let outcome = match parts.method {
        Method::POST => {
            create(
                state,
                &parts,
                body,
                account_sid,
                channel,
                credentials,
                content_type.as_deref(),
                &mut record,
                &mut hold,
            )
            .await
        }
        Method::GET => Ok(list::list(
            state,
            &parts,
            &record.query,
            account_sid,
            channel,
            credentials.as_ref(),
        )),
        _ => Ok(error(&TwilioError::method_not_allowed(
            parts.method.as_str(),
        ))),
    };
    record.answered_status = match &outcome {
        Ok(answer) => answer.status().as_u16(),
        Err(Dropped) => 0,
    };
    debug!(
        method = %record.method,
        path = %record.path,
        status = record.answered_status,
        "resource request"
    );
    // Recorded before an `accept-then-latency` hold: the client may give up
    // (and hyper drop this future) before the answer goes out, and the log
    // must still show that the message was accepted.
    state.requests.push(record);
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn create(
    state: &State,
    parts: &http::request::Parts,
    body: Incoming,
    account_sid: &str,
    channel: Channel,
    credentials: Option<auth::Credentials>,
    content_type: Option<&str>,
    record: &mut RecordedRequest,
    hold: &mut Option<Duration>,
) -> Result<Answer, Dropped> {
    let fault = match parts.headers.get(FAULT_HEADER) {
        Some(value) => match value.to_str().map(str::parse::<Fault>) {
            Ok(Ok(fault)) => Some(fault),
            Ok(Err(unknown)) => {
                return Ok(error(&TwilioError::invalid_parameter(unknown.to_string())))
            }
            Err(_) => {
                return Ok(error(&TwilioError::invalid_parameter(
                    "X-Sandbox-Fault is not valid text",
                )))
            }
        },
        None => state.faults.take(),
    };

    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Ok(self::error(&TwilioError::new(
                413,
                20001,
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            )));
        }
        Err(error) => {
            debug!(%error, "request body could not be read");
            return Err(Dropped);
        }
    };
    let is_form = content_type.is_some_and(is_form_content_type);
    if is_form {
        record.form = form_urlencoded::parse(&bytes).into_owned().collect();
    }

    let mut undelivered = undelivered_number(channel, &record.form);
    if let Some(fault) = fault {
        info!(fault = %fault, "applying sandbox fault");
        match fault {
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            // Processed now, answered later (whatever the answer is).
            Fault::AcceptThenLatency(delay) => *hold = Some(delay),
            Fault::Undelivered { error_code } => undelivered = Some(error_code),
            other => return fault_answer(&other, parts),
        }
    }

    let config = &state.config;
    if !auth::authorized(
        credentials.as_ref(),
        &config.account_sid,
        &config.auth_token,
    ) {
        return Ok(error(&TwilioError::authenticate()));
    }
    if account_sid != config.account_sid {
        return Ok(error(&TwilioError::not_found(parts.uri.path())));
    }
    if !is_form {
        return Ok(error(&TwilioError::invalid_parameter(
            "Content-Type must be application/x-www-form-urlencoded",
        )));
    }
    if let Err(refusal) = validate::check(channel, &record.form) {
        info!(code = refusal.code, channel = ?channel, "create request refused");
        return Ok(error(&refusal));
    }
    Ok(accept(state, channel, &record.form, undelivered))
}

/// Magic numbers whose SMS is accepted and then reported undelivered, with
/// the carrier error, in a signed status callback (when the request named a
/// `StatusCallback`): the service's SMS-to-voice fallback can be seen with
/// no fault to set. Listed on the inbox page.
pub const UNDELIVERED_NUMBERS: [(&str, u32, &str); 3] = [
    ("+14155550191", 30003, "unreachable handset"),
    ("+14155550192", 30006, "landline or unreachable carrier"),
    ("+14155550193", 30004, "message blocked (no call helps)"),
];

/// Magic numbers whose WhatsApp message (`To=whatsapp:<number>`) is
/// accepted, then reported undelivered with the WhatsApp error in a signed
/// status callback: the service's WhatsApp-to-SMS fallback can be seen.
/// The same number by SMS is delivered. Listed on the inbox page.
pub const WHATSAPP_UNDELIVERED_NUMBERS: [(&str, u32, &str); 1] =
    [("+5511987650063", 63003, "not on WhatsApp")];

/// A magic number whose WhatsApp message is accepted and reported `sent`,
/// and never `delivered` (a phone offline, an account no longer used): the
/// service's SMS after `whatsapp.fallback_after_ms` can be seen. Listed on
/// the inbox page.
pub const WHATSAPP_NO_RECEIPT_NUMBER: &str = "+5511987650064";

/// Whether this request's status callbacks stop at `sent`: a WhatsApp
/// message to [`WHATSAPP_NO_RECEIPT_NUMBER`].
pub(crate) fn no_receipt_number(channel: Channel, form: &[(String, String)]) -> bool {
    channel == Channel::Sms
        && form.iter().any(|(k, v)| {
            k == "To" && v.strip_prefix(WHATSAPP_PREFIX) == Some(WHATSAPP_NO_RECEIPT_NUMBER)
        })
}

/// The prefix of a WhatsApp address in `To` and `From`.
pub const WHATSAPP_PREFIX: &str = "whatsapp:";

pub(crate) fn undelivered_number(channel: Channel, form: &[(String, String)]) -> Option<u32> {
    if channel != Channel::Sms {
        return None;
    }
    let to = form
        .iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.as_str())?;
    let (list, number) = match to.strip_prefix(WHATSAPP_PREFIX) {
        Some(number) => (&WHATSAPP_UNDELIVERED_NUMBERS[..], number),
        None => (&UNDELIVERED_NUMBERS[..], to),
    };
    list.iter()
        .find(|(magic, _, _)| *magic == number)
        .map(|(_, code, _)| *code)
}

fn is_form_content_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// The answer of a fault that replaces normal processing.
fn fault_answer(fault: &Fault, parts: &http::request::Parts) -> Result<Answer, Dropped> {
    let answer = match fault {
        Fault::Status500 => error(&TwilioError::new(
            500,
            20500,
            "An internal server error has occurred",
        )),
        Fault::Status503 => error(&TwilioError::new(503, 20503, "Service Unavailable")),
        Fault::TooManyRequests { retry_after } => {
            let mut answer = error(&TwilioError::new(429, 20429, "Too Many Requests"));
            if let Some(seconds) = retry_after {
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            answer
        }
        Fault::DropConnection => return Err(Dropped),
        Fault::ResetMidAnswer => {
            let partial = Bytes::from_static(b"{\"sid\": \"SM");
            let mut answer = Response::new(SandboxBody::reset(partial));
            *answer.status_mut() = StatusCode::CREATED;
            let headers = answer.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(1024u32));
            answer
        }
        Fault::NotJson => {
            let mut answer = Response::new(SandboxBody::full(
                "<html><body>502 Bad Gateway (sandbox fault: not-json)</body></html>",
            ));
            *answer.status_mut() = StatusCode::CREATED;
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            answer
        }
        Fault::Redirect => {
            let location = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(
                    || REDIRECT_PATH.to_owned(),
                    |host| format!("http://{host}{REDIRECT_PATH}"),
                );
            let mut answer = empty(StatusCode::TEMPORARY_REDIRECT);
            if let Ok(value) = HeaderValue::from_str(&location) {
                answer.headers_mut().insert(header::LOCATION, value);
            }
            answer
        }
        // Handled by the caller; answering normally is the safe fallback.
        Fault::Latency(_) | Fault::AcceptThenLatency(_) | Fault::Undelivered { .. } => {
            return Ok(error(&TwilioError::new(
                500,
                20500,
                "unexpected fault dispatch",
            )))
        }
    };
    Ok(answer)
}

/// Record an accepted request, answer 201 and start its status callbacks.
fn accept(
    state: &State,
    channel: Channel,
    form: &[(String, String)],
    undelivered: Option<u32>,
) -> Answer {
    let config = &state.config;
    let date = resources::now_rfc2822();
    let to = param(form, "To").unwrap_or_default().to_owned();
    let (sid, status, body, entry_from) = match channel {
        Channel::Sms => {
            let sid = config.flavor.new_sid("SM");
            let status = resources::message_status(form);
            let body = resources::message_json(&config.account_sid, &sid, &date, status, form);
            let from = param(form, "From")
                .or_else(|| param(form, "MessagingServiceSid"))
                .unwrap_or_default();
            (sid, status, body, from.to_owned())
        }
        Channel::Voice => {
            let sid = config.flavor.new_sid("CA");
            let body = resources::call_json(&config.account_sid, &sid, &date, form);
            (
                sid,
                "queued",
                body,
                param(form, "From").unwrap_or_default().to_owned(),
            )
        }
    };
    let twiml = (channel == Channel::Voice)
        .then(|| param(form, "Twiml").map(str::to_owned))
        .flatten();
    let entry = InboxEntry {
        sid: sid.clone(),
        channel,
        to: to.clone(),
        from: entry_from,
        body: (channel == Channel::Sms).then(|| param(form, "Body").unwrap_or_default().to_owned()),
        spoken_text: twiml.as_deref().map(twiml::spoken_text),
        twiml,
        date_created: date,
        status: status.to_owned(),
        form: form.to_vec(),
    };
    info!(
        sid = %sid,
        channel = ?channel,
        to = %mask::phone(&entry.to),
        from = %mask::phone(&entry.from),
        "accepted"
    );
    state.inbox.push(entry);

    if let Some(url) = param(form, "StatusCallback") {
        match &state.callback_client {
            Some(client) => {
                let job = CallbackJob {
                    url: url.to_owned(),
                    auth_token: config.auth_token.clone(),
                    account_sid: config.account_sid.clone(),
                    sid,
                    channel,
                    from: param(form, "From").unwrap_or_default().to_owned(),
                    to,
                    undelivered,
                    no_receipt: no_receipt_number(channel, form),
                    signature_header: config.flavor.signature_header(),
                };
                tokio::spawn(callback::deliver(client.clone(), job));
            }
            None => warn!("status callback requested but no HTTP client is available"),
        }
    }
    json(StatusCode::CREATED, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_content_type() {
        assert!(is_form_content_type("application/x-www-form-urlencoded"));
        assert!(is_form_content_type(
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        ));
        assert!(!is_form_content_type("application/json"));
    }

    #[test]
    fn undelivered_magic_numbers_are_for_sms_only() {
        let to = |n: &str| vec![("To".to_owned(), n.to_owned())];
        assert_eq!(
            undelivered_number(Channel::Sms, &to("+14155550191")),
            Some(30003)
        );
        assert_eq!(
            undelivered_number(Channel::Sms, &to("+14155550192")),
            Some(30006)
        );
        assert_eq!(
            undelivered_number(Channel::Voice, &to("+14155550191")),
            None
        );
        assert_eq!(undelivered_number(Channel::Sms, &to("+14155550123")), None);
        // A WhatsApp magic number, only as a WhatsApp address.
        assert!(no_receipt_number(
            Channel::Sms,
            &to("whatsapp:+5511987650064")
        ));
        assert!(!no_receipt_number(Channel::Sms, &to("+5511987650064")));
        assert!(!no_receipt_number(
            Channel::Sms,
            &to("whatsapp:+5511987650063")
        ));
        assert_eq!(
            undelivered_number(Channel::Sms, &to("whatsapp:+5511987650063")),
            Some(63003)
        );
        assert_eq!(
            undelivered_number(Channel::Sms, &to("+5511987650063")),
            None
        );
        assert_eq!(
            undelivered_number(Channel::Sms, &to("whatsapp:+14155550191")),
            None
        );
    }
}
