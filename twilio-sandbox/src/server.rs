//! HTTP plumbing: the accept loop with graceful shutdown, and routing.
//! The Twilio endpoints' handlers are in `create` (creating messages and
//! calls), `list` (listing them) and here (the account); the local admin
//! endpoints in `admin`.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tracing::{debug, warn};

use super::admin::{html_page, queue_fault};
use super::answers::*;
use super::auth;
use super::create;
use super::error::TwilioError;
use super::hooks::{self, HookKind};
use super::inbound;
use super::lookup;
use super::model::Channel;
use super::resources;
use super::State;

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
    Inbound,
    HooksJson,
    LookupsJson,
    /// `GET /v2/PhoneNumbers/{number}`: Lookup v2.
    Lookup(String),
    /// The Slack stand-in or the webhook receiver, and the `{name}`.
    Hook(HookKind, String),
    Account(String),
    /// `.../Messages.json` or `.../Calls.json`: create (POST) or list (GET).
    Resource(String, Channel),
    NotFound,
}

fn route(path: &str) -> Route {
    match path {
        "/health" => return Route::Health,
        "/inbox" => return Route::Inbox,
        "/inbox.json" => return Route::InboxJson,
        "/requests.json" => return Route::RequestsJson,
        "/sandbox/faults" => return Route::Faults,
        "/sandbox/inbound" => return Route::Inbound,
        "/sandbox/hooks.json" => return Route::HooksJson,
        "/sandbox/lookups.json" => return Route::LookupsJson,
        _ => {}
    }
    if let Some(number) = path.strip_prefix("/v2/PhoneNumbers/") {
        return match number.is_empty() || number.contains('/') {
            true => Route::NotFound,
            false => Route::Lookup(percent_decoded(number)),
        };
    }
    for (prefix, kind) in [
        ("/sandbox/slack/", HookKind::Slack),
        ("/sandbox/webhooks/", HookKind::Webhook),
    ] {
        if let Some(name) = path.strip_prefix(prefix) {
            return match hooks::valid_name(name) {
                true => Route::Hook(kind, name.to_owned()),
                false => Route::NotFound,
            };
        }
    }
    let Some(rest) = path.strip_prefix("/2010-04-01/Accounts/") else {
        return Route::NotFound;
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [account] => match account.strip_suffix(".json") {
            Some(sid) if !sid.is_empty() => Route::Account(sid.to_owned()),
            _ => Route::NotFound,
        },
        [sid, "Messages.json"] => Route::Resource((*sid).to_owned(), Channel::Sms),
        [sid, "Calls.json"] => Route::Resource((*sid).to_owned(), Channel::Voice),
        _ => Route::NotFound,
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Answer, Dropped> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let routed = state
        .config
        .flavor
        .api_path(&path)
        .map_or(Route::NotFound, route);
    let answer = match routed {
        Route::Resource(sid, channel) => {
            return create::resource(&state, request, &sid, channel).await
        }
        Route::Hook(kind, name) => return hooks::receive(&state, request, kind, &name).await,
        Route::Inbound => match method {
            Method::POST => inbound::handle(&state, request).await,
            _ => error(&TwilioError::method_not_allowed(method.as_str())),
        },
        Route::HooksJson => only(&method, &[Method::GET], || {
            json(
                StatusCode::OK,
                &serde_json::json!({ "hooks": state.hooks.newest_first() }),
            )
        }),
        Route::Account(sid) => account(&state, &request, &sid),
        Route::Lookup(number) => lookup::handle(&state, &request, &number),
        Route::LookupsJson => only(&method, &[Method::GET], || {
            json(
                StatusCode::OK,
                &serde_json::json!({ "lookups": state.lookups.oldest_first() }),
            )
        }),
        Route::Health => only(&method, &[Method::GET], || text(StatusCode::OK, "ok\n")),
        Route::Inbox => match method {
            Method::GET => html_page(&state),
            Method::DELETE => {
                state.inbox.clear();
                state.requests.clear();
                state.hooks.clear();
                state.lookups.clear();
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
                state.hook_faults.clear();
                empty(StatusCode::NO_CONTENT)
            }
            _ => error(&TwilioError::method_not_allowed(method.as_str())),
        },
        Route::NotFound => error(&TwilioError::not_found(&path)),
    };
    Ok(answer)
}

/// A path segment as written (`%2B1415…` is `+1415…`).
fn percent_decoded(segment: &str) -> String {
    form_urlencoded::parse(format!("n={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert!(
            matches!(route(&format!("/2010-04-01/Accounts/{sid}/Messages.json")), Route::Resource(s, Channel::Sms) if s == sid)
        );
        assert!(
            matches!(route(&format!("/2010-04-01/Accounts/{sid}/Calls.json")), Route::Resource(s, Channel::Voice) if s == sid)
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
        assert!(
            matches!(route("/v2/PhoneNumbers/%2B14155550171"), Route::Lookup(n) if n == "+14155550171")
        );
        assert!(
            matches!(route("/v2/PhoneNumbers/+14155550171"), Route::Lookup(n) if n == "+14155550171")
        );
        assert!(matches!(route("/v2/PhoneNumbers/"), Route::NotFound));
        assert!(matches!(route("/nope"), Route::NotFound));
    }
}
