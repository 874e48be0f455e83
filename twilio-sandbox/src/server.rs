//! HTTP plumbing: the accept loop with graceful shutdown, routing and the
//! handlers of the Twilio endpoints and of the local admin endpoints.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::auth;
use super::body::SandboxBody;
use super::callback::{self, CallbackJob};
use super::error::TwilioError;
use super::fault::Fault;
use super::html;
use super::mask;
use super::model::{Channel, InboxEntry, RecordedRequest};
use super::resources;
use super::twiml;
use super::validate::{self, param};
use super::State;

/// Largest request body read (Twilio's own limits are far below this).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header selecting a fault for one request.
const FAULT_HEADER: &str = "x-sandbox-fault";
/// Where the `redirect` fault points.
const REDIRECT_PATH: &str = "/sandbox/redirected";

type Answer = Response<SandboxBody>;

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("sandbox fault: connection dropped without an answer")]
pub(crate) struct Dropped;

pub(crate) async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |request| handle(state.clone(), request));
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Where a path leads.
enum Route {
    Health,
    Inbox,
    InboxJson,
    RequestsJson,
    Faults,
    Account(String),
    Create(String, Channel),
    NotFound,
}

fn route(path: &str) -> Route {
    match path {
        "/health" => return Route::Health,
        "/inbox" => return Route::Inbox,
        "/inbox.json" => return Route::InboxJson,
        "/requests.json" => return Route::RequestsJson,
        "/sandbox/faults" => return Route::Faults,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/2010-04-01/Accounts/") else {
        return Route::NotFound;
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [account] => match account.strip_suffix(".json") {
            Some(sid) if !sid.is_empty() => Route::Account(sid.to_owned()),
            _ => Route::NotFound,
        },
        [sid, "Messages.json"] => Route::Create((*sid).to_owned(), Channel::Sms),
        [sid, "Calls.json"] => Route::Create((*sid).to_owned(), Channel::Voice),
        _ => Route::NotFound,
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Answer, Dropped> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let answer = match route(&path) {
        Route::Create(sid, channel) => return create(&state, request, &sid, channel).await,
        Route::Account(sid) => account(&state, &request, &sid),
        Route::Health => only(&method, &[Method::GET], || text(StatusCode::OK, "ok\n")),
        Route::Inbox => match method {
            Method::GET => html_page(&state),
            Method::DELETE => {
                state.inbox.clear();
                state.requests.clear();
                empty(StatusCode::NO_CONTENT)
            }
            _ => error(&TwilioError::method_not_allowed(method.as_str())),
        },
        Route::InboxJson => only(&method, &[Method::GET], || {
            json(
                StatusCode::OK,
                &serde_json::json!({ "messages": state.inbox.newest_first() }),
            )
        }),
        Route::RequestsJson => only(&method, &[Method::GET], || {
            json(
                StatusCode::OK,
                &serde_json::json!({ "requests": state.requests.oldest_first() }),
            )
        }),
        Route::Faults => match method {
            Method::POST => queue_fault(&state, request).await,
            Method::DELETE => {
                state.faults.clear();
                empty(StatusCode::NO_CONTENT)
            }
            _ => error(&TwilioError::method_not_allowed(method.as_str())),
        },
        Route::NotFound => error(&TwilioError::not_found(&path)),
    };
    Ok(answer)
}

fn only(method: &Method, allowed: &[Method], answer: impl FnOnce() -> Answer) -> Answer {
    if allowed.contains(method) {
        answer()
    } else {
        error(&TwilioError::method_not_allowed(method.as_str()))
    }
}

/// `GET /2010-04-01/Accounts/{AccountSid}.json`: the credential check.
fn account(state: &State, request: &Request<Incoming>, sid: &str) -> Answer {
    if request.method() != Method::GET {
        return error(&TwilioError::method_not_allowed(request.method().as_str()));
    }
    let config = &state.config;
    let credentials = auth::basic(request.headers());
    if !auth::authorized(
        credentials.as_ref(),
        &config.account_sid,
        &config.auth_token,
    ) {
        return error(&TwilioError::authenticate());
    }
    if sid != config.account_sid {
        return error(&TwilioError::not_found(request.uri().path()));
    }
    json(
        StatusCode::OK,
        &resources::account_json(&config.account_sid),
    )
}

/// `POST .../Messages.json` and `POST .../Calls.json`.
async fn create(
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
        basic_user: credentials.as_ref().map(|c| c.user.clone()),
        content_type: content_type.clone(),
        form: Vec::new(),
        answered_status: 0,
    };
    let outcome = create_inner(
        state,
        &parts,
        body,
        account_sid,
        channel,
        credentials,
        content_type.as_deref(),
        &mut record,
    )
    .await;
    record.answered_status = match &outcome {
        Ok(answer) => answer.status().as_u16(),
        Err(Dropped) => 0,
    };
    debug!(
        method = %record.method,
        path = %record.path,
        status = record.answered_status,
        "create request"
    );
    state.requests.push(record);
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn create_inner(
    state: &State,
    parts: &http::request::Parts,
    body: Incoming,
    account_sid: &str,
    channel: Channel,
    credentials: Option<auth::Credentials>,
    content_type: Option<&str>,
    record: &mut RecordedRequest,
) -> Result<Answer, Dropped> {
    if parts.method != Method::POST {
        return Ok(error(&TwilioError::method_not_allowed(
            parts.method.as_str(),
        )));
    }
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

    let mut undelivered = None;
    if let Some(fault) = fault {
        info!(fault = %fault, "applying sandbox fault");
        match fault {
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
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
        Fault::Latency(_) | Fault::Undelivered { .. } => {
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
            let sid = resources::new_sid("SM");
            let status = resources::message_status(form);
            let body = resources::message_json(&config.account_sid, &sid, &date, status, form);
            let from = param(form, "From")
                .or_else(|| param(form, "MessagingServiceSid"))
                .unwrap_or_default();
            (sid, status, body, from.to_owned())
        }
        Channel::Voice => {
            let sid = resources::new_sid("CA");
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
                };
                tokio::spawn(callback::deliver(client.clone(), job));
            }
            None => warn!("status callback requested but no HTTP client is available"),
        }
    }
    json(StatusCode::CREATED, &body)
}

#[derive(Deserialize)]
struct FaultRequest {
    fault: String,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

/// `POST /sandbox/faults` with `{"fault":"503","count":3}`.
async fn queue_fault(state: &State, request: Request<Incoming>) -> Answer {
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
            info!(fault = %fault, count = parsed.count, "fault queued");
            state.faults.push(fault, parsed.count);
            empty(StatusCode::NO_CONTENT)
        }
        Err(unknown) => error(&TwilioError::invalid_parameter(unknown.to_string())),
    }
}

fn html_page(state: &State) -> Answer {
    let mut answer = Response::new(SandboxBody::full(html::inbox_page(
        &state.inbox.newest_first(),
    )));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    json_text(status, value.to_string())
}

fn json_text(status: StatusCode, text: String) -> Answer {
    let mut answer = Response::new(SandboxBody::full(text));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    answer
}

fn error(error: &TwilioError) -> Answer {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_text(status, error.to_json())
}

fn text(status: StatusCode, text: &'static str) -> Answer {
    let mut answer = Response::new(SandboxBody::full(text));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(SandboxBody::empty());
    *answer.status_mut() = status;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert!(
            matches!(route(&format!("/2010-04-01/Accounts/{sid}/Messages.json")), Route::Create(s, Channel::Sms) if s == sid)
        );
        assert!(
            matches!(route(&format!("/2010-04-01/Accounts/{sid}/Calls.json")), Route::Create(s, Channel::Voice) if s == sid)
        );
        assert!(
            matches!(route(&format!("/2010-04-01/Accounts/{sid}.json")), Route::Account(s) if s == sid)
        );
        assert!(matches!(
            route(&format!("/2010-04-01/Accounts/{sid}/Messages")),
            Route::NotFound
        ));
        assert!(matches!(
            route("/2010-04-01/Accounts/.json"),
            Route::NotFound
        ));
        assert!(matches!(route("/inbox"), Route::Inbox));
        assert!(matches!(route("/nope"), Route::NotFound));
    }

    #[test]
    fn form_content_type() {
        assert!(is_form_content_type("application/x-www-form-urlencoded"));
        assert!(is_form_content_type(
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        ));
        assert!(!is_form_content_type("application/json"));
    }
}
