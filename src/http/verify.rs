//! The verify API's HTTP face: `POST /v1/verify/request` and `POST
//! /v1/verify/check` (authenticated like the courier endpoints, JSON
//! bodies), and the demo page of `serve --dev` (`/verify/demo`, HTML
//! forms). Each request gets one log line and one count in
//! `phone_courier_requests_total`, like `/v1/sms`; the work is the
//! [`Verifier`]'s. `POST /v1/verify/request` takes an `Idempotency-Key`
//! header (1 to 255 visible ASCII characters): see [`Verifier::request`].

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request};
use hyper::body::Body;

use crate::clock::Clock;
use crate::config::{Config, ServerConfig};
use crate::delivery::courier::Courier;
use crate::delivery::message::ParseError;
use crate::http::answer::{Answer, ApiError};
use crate::http::auth::Authenticator;
use crate::http::body;
use crate::store::{Keys, Store};
use crate::telemetry::metrics::Metrics;
use crate::verify::demo::{self, Outcome};
use crate::verify::{Bodies, CodeAttempt, CodeRequest, Verifier, VerifyError};

/// Which verify endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyEndpoint {
    Request,
    Check,
}

impl VerifyEndpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            VerifyEndpoint::Request => "/v1/verify/request",
            VerifyEndpoint::Check => "/v1/verify/check",
        }
    }
}

/// What the verify endpoints share with the rest of the service.
pub(crate) struct Context<'a> {
    pub(crate) auth: &'a Authenticator,
    pub(crate) courier: &'a Courier,
    pub(crate) server: &'a ServerConfig,
    pub(crate) metrics: &'a Metrics,
}

/// The verify endpoints; built only when `verify.enabled`.
pub(crate) struct VerifyApi {
    verifier: Verifier,
    bodies: Bodies,
}

impl VerifyApi {
    pub(crate) fn new(
        config: &Config,
        keys: Keys,
        store: Arc<Store>,
        clock: Clock,
    ) -> Option<Self> {
        let verify = config.verify.clone()?;
        Some(VerifyApi {
            verifier: Verifier::new(verify, keys, store, clock),
            bodies: Bodies::new(),
        })
    }

    /// Whether `/verify/demo` is served (`verify.demo`).
    pub(crate) fn demo_enabled(&self) -> bool {
        self.verifier.config().demo
    }

    /// One API request: authenticate, read, act, count, log.
    pub(crate) async fn handle<B>(
        &self,
        endpoint: VerifyEndpoint,
        request: Request<B>,
        cx: &Context<'_>,
    ) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let in_flight = cx.metrics.in_flight();
        let result = self.act(endpoint, request, cx).await;
        drop(in_flight);
        let (outcome, reason, channel, recipient) = match &result {
            Ok(Answer::VerifyPending(r)) => (
                "accepted",
                "none",
                r.channel.as_str(),
                Some(r.masked_recipient.as_str()),
            ),
            Ok(_) => ("approved", "none", "none", None),
            Err(e @ ApiError::Delivery(d)) if d.is_provider_failure() => {
                ("provider_error", e.code(), "none", None)
            }
            Err(e) => ("rejected", e.code(), "none", None),
        };
        cx.metrics
            .request(endpoint.path(), channel, "none", outcome, reason);
        let (status, error) = match &result {
            Ok(_) => (200, None),
            Err(e) => (e.status().as_u16(), Some(e.code())),
        };
        tracing::info!(
            method = %method,
            endpoint = endpoint.path(),
            channel,
            recipient,
            status,
            error,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        result.unwrap_or_else(Answer::Error)
    }

    async fn act<B>(
        &self,
        endpoint: VerifyEndpoint,
        request: Request<B>,
        cx: &Context<'_>,
    ) -> Result<Answer, ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // Read before the body takes the request; checked once the caller
        // is authenticated.
        let idempotency_key = request
            .headers()
            .get("idempotency-key")
            .map(|v| v.to_str().map(str::to_owned));
        let bytes = body::read_authenticated_json(request, cx.auth, cx.server).await?;
        let schema = |e| match e {
            ParseError::MalformedJson => ApiError::MalformedJson,
            ParseError::Schema(v) => ApiError::Schema(v),
        };
        match endpoint {
            VerifyEndpoint::Request => {
                let mut r = self.bodies.request(&bytes).map_err(schema)?;
                r.idempotency_key = match idempotency_key {
                    None => None,
                    Some(Ok(k)) if valid_idempotency_key(&k) => Some(k),
                    Some(_) => return Err(VerifyError::InvalidIdempotencyKey.into()),
                };
                let requested = self.verifier.request(cx.courier, &r).await?;
                Ok(Answer::VerifyPending(requested))
            }
            VerifyEndpoint::Check => {
                let c = self.bodies.check(&bytes).map_err(schema)?;
                self.verifier.check(cx.courier, &c).await?;
                Ok(Answer::VerifyApproved)
            }
        }
    }

    /// `/verify/demo` (GET: the page) and its forms (POST
    /// `/verify/demo/request`, `/verify/demo/check`). Every outcome is the
    /// page again with the outcome on it.
    pub(crate) async fn demo<B>(&self, request: Request<B>, cx: &Context<'_>) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/verify/demo") => {
                return Answer::Html(demo::page(None, ""))
            }
            (&Method::POST, "/verify/demo/request") => VerifyEndpoint::Request,
            (&Method::POST, "/verify/demo/check") => VerifyEndpoint::Check,
            (_, "/verify/demo") => return ApiError::MethodNotAllowed { allow: "GET" }.into(),
            (_, "/verify/demo/request" | "/verify/demo/check") => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            _ => return ApiError::NotFound.into(),
        };
        if !body::has_content_type(request.headers(), "application/x-www-form-urlencoded") {
            return ApiError::UnsupportedMediaType {
                expected: "application/x-www-form-urlencoded",
            }
            .into();
        }
        let bytes = match body::read_in_time(request, cx.server).await {
            Ok(b) => b,
            Err(e) => return e.into(),
        };
        let field = |name: &str| {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let to = field("to");
        let outcome = match endpoint {
            VerifyEndpoint::Request => {
                let r = CodeRequest {
                    to: to.clone(),
                    channel: match field("channel").as_str() {
                        "voice" => crate::domain::Channel::Voice,
                        _ => crate::domain::Channel::Sms,
                    },
                    locale: None,
                    // The demo runs on a developer's machine only.
                    client_ip: None,
                    idempotency_key: None,
                };
                match self.verifier.request(cx.courier, &r).await {
                    Ok(r) => Outcome {
                        status: "pending".into(),
                        text: format!(
                            "a code was sent by {} (send {} of this code); it can be checked for {} s",
                            r.channel.as_str(),
                            r.sends,
                            r.expires_in
                        ),
                    },
                    Err(e) => refused(e),
                }
            }
            VerifyEndpoint::Check => {
                let c = CodeAttempt {
                    to: to.clone(),
                    code: field("code"),
                };
                match self.verifier.check(cx.courier, &c).await {
                    Ok(()) => Outcome {
                        status: "approved".into(),
                        text: "the code is right; it is now spent".into(),
                    },
                    Err(e) => refused(e),
                }
            }
        };
        Answer::Html(demo::page(Some(&outcome), &to))
    }
}

/// An `Idempotency-Key` is 1 to 255 visible ASCII characters (what
/// clients send: UUIDs, random tokens).
fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A refusal as the demo page shows it: the API's error code and message.
fn refused(e: VerifyError) -> Outcome {
    let e = ApiError::from(e);
    Outcome {
        status: e.code().into(),
        text: e.message(),
    }
}
