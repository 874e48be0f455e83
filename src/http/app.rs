//! The HTTP face of the service: routing, authentication, content type,
//! bounded body reading, and one log line per request. The work itself is
//! done by [`Courier`]; errors become answers in [`ApiError`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use serde_json::json;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::courier::{Courier, Endpoint};
use crate::delivery::message::{MessageParser, ParseError};
use crate::http::answer::{json_response, ApiError};
use crate::http::auth::Authenticator;
use crate::provider::twilio::TwilioClient;
use crate::telemetry::metrics::Metrics;

/// Everything a request needs, built once at start.
pub struct App {
    config: Arc<Config>,
    auth: Authenticator,
    parser: MessageParser,
    courier: Courier,
    metrics: Arc<Metrics>,
    /// Set once the service can send (configuration loaded, credentials
    /// checked where that is asked for).
    ready: AtomicBool,
    /// Set when shutdown begins: readiness then says no, so a load balancer
    /// stops sending before the listener closes.
    shutting_down: AtomicBool,
}

/// What one request did, for its log line. Holds only loggable values.
#[derive(Default)]
struct RequestLog {
    endpoint: &'static str,
    template_type: Option<&'static str>,
    channel: Option<&'static str>,
    recipient: Option<String>,
    sid: Option<String>,
    provider_code: Option<u32>,
    /// accepted, duplicate or test.
    outcome: &'static str,
}

impl App {
    pub fn new(config: Config) -> Result<Self, crate::provider::twilio::ClientError> {
        App::with_clock(config, Clock::system())
    }

    /// Build with a given clock (tests move it forward instead of sleeping).
    pub fn with_clock(
        config: Config,
        clock: Clock,
    ) -> Result<Self, crate::provider::twilio::ClientError> {
        let twilio = TwilioClient::new(&config.twilio)?;
        let metrics = Arc::new(Metrics::new());
        let courier = Courier::new(&config, twilio, clock, metrics.clone());
        Ok(App {
            auth: Authenticator::new(&config.auth),
            parser: MessageParser::new(),
            courier,
            metrics,
            ready: AtomicBool::new(!config.twilio.verify_credentials_on_start),
            shutting_down: AtomicBool::new(false),
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn courier(&self) -> &Courier {
        &self.courier
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Answer one request. Never fails: every problem is an answer.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::POST, "/v1/sms") => Endpoint::Sms,
            (&Method::POST, "/v1/voice") => Endpoint::Voice,
            (&Method::GET | &Method::HEAD, "/health/alive") => {
                return json_response(StatusCode::OK, &json!({"status": "alive"}));
            }
            (&Method::GET | &Method::HEAD, "/health/ready") => return self.readiness(),
            (&Method::GET, "/v1/test-messages") => return self.test_messages(request.headers()),
            (&Method::GET, "/metrics") if self.config.metrics_listen.is_none() => {
                return self.metrics_answer(request.headers())
            }
            (&Method::POST, "/v1/twilio/status") => {
                return crate::http::status_callback::handle(self, request).await;
            }
            (_, "/v1/test-messages") => {
                return ApiError::MethodNotAllowed { allow: "GET" }.into_response()
            }
            (_, "/v1/sms" | "/v1/voice") => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into_response()
            }
            (_, "/health/alive" | "/health/ready") => {
                return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response()
            }
            // Where these endpoints exist on this listener; elsewhere every
            // method is answered 404, as GET or POST is.
            (_, "/metrics") if self.config.metrics_listen.is_none() => {
                return ApiError::MethodNotAllowed { allow: "GET" }.into_response()
            }
            (_, "/v1/twilio/status") if self.config.status_callback_url.is_some() => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into_response()
            }
            _ => return ApiError::NotFound.into_response(),
        };
        let mut log = RequestLog {
            endpoint: match endpoint {
                Endpoint::Sms => "/v1/sms",
                Endpoint::Voice => "/v1/voice",
            },
            ..RequestLog::default()
        };
        let in_flight = self.metrics.in_flight();
        let result = self.deliver(endpoint, request, &mut log).await;
        drop(in_flight);
        let (outcome, reason) = match &result {
            Ok(_) => (log.outcome, "none"),
            Err(
                e @ (ApiError::RecipientUnreachable { .. }
                | ApiError::ProviderConfiguration { .. }
                | ApiError::ProviderUnavailable { .. }),
            ) => ("provider_error", e.code()),
            Err(e) => ("rejected", e.code()),
        };
        self.metrics.request(
            log.endpoint,
            log.channel.unwrap_or("none"),
            log.template_type.unwrap_or("none"),
            outcome,
            reason,
        );
        let (response, error) = match result {
            Ok(r) => (r, None),
            Err(e) => {
                if matches!(
                    e,
                    ApiError::ProviderConfiguration { .. } | ApiError::VoiceNotConfigured
                ) {
                    tracing::error!(
                        error = e.code(),
                        provider_code = log.provider_code,
                        "the provider refused our configuration: check twilio.* settings"
                    );
                }
                let code = e.code();
                (e.into_response(), Some(code))
            }
        };
        let status = response.status().as_u16();
        tracing::info!(
            method = %method,
            endpoint = log.endpoint,
            template_type = log.template_type,
            channel = log.channel,
            recipient = log.recipient.as_deref(),
            sid = log.sid.as_deref(),
            provider_code = log.provider_code,
            status,
            error,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    /// `/metrics` on the API listener: behind the API's authentication.
    fn metrics_answer(&self, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
        if !self.auth.check(headers) {
            return ApiError::Unauthorized {
                basic_challenge: self.auth.uses_basic(),
            }
            .into_response();
        }
        metrics_response(&self.metrics)
    }

    /// Messages to configured test numbers (with their bodies and codes:
    /// nothing real was sent), for the operator's own CI.
    fn test_messages(&self, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
        if !self.auth.check(headers) {
            return ApiError::Unauthorized {
                basic_challenge: self.auth.uses_basic(),
            }
            .into_response();
        }
        json_response(
            StatusCode::OK,
            &json!({ "messages": self.courier.test_messages() }),
        )
    }

    fn readiness(&self) -> Response<Full<Bytes>> {
        if self.shutting_down.load(Ordering::SeqCst) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": "shutting down"}),
            )
        } else if !self.ready.load(Ordering::SeqCst) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": "provider credentials not verified yet"}),
            )
        } else {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        }
    }

    async fn deliver<B>(
        &self,
        endpoint: Endpoint,
        request: Request<B>,
        log: &mut RequestLog,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.auth.check(request.headers()) {
            return Err(ApiError::Unauthorized {
                basic_challenge: self.auth.uses_basic(),
            });
        }
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = tokio::time::timeout(
            self.config.server.body_read_timeout,
            read_body(request, self.config.server.max_body_bytes),
        )
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
        let message = self.parser.parse(&bytes).map_err(|e| match e {
            ParseError::MalformedJson => ApiError::MalformedJson,
            ParseError::Schema(v) => ApiError::Schema(v),
        })?;
        log.template_type = Some(message.template_type.label());
        log.channel = Some(self.courier.channel_for(endpoint, &message).as_str());
        let result = self.courier.deliver(endpoint, &message).await;
        let delivered = match result {
            Ok(d) => d,
            Err(e) => {
                log.provider_code = e.provider_code();
                return Err(e);
            }
        };
        log.channel = Some(delivered.channel.as_str());
        log.recipient = Some(delivered.masked_recipient.clone());
        log.sid = delivered.sid.clone();
        if delivered.sid.is_none() && !delivered.duplicate {
            tracing::warn!("the provider accepted the message but its answer could not be read");
        }
        let mut body = json!({
            "status": "accepted",
            "channel": delivered.channel.as_str(),
            "sid": delivered.sid,
        });
        log.outcome = "accepted";
        if delivered.duplicate {
            body["duplicate"] = json!(true);
            log.outcome = "duplicate";
        }
        if delivered.test {
            body["test"] = json!(true);
            log.outcome = "test";
        }
        Ok(json_response(StatusCode::OK, &body))
    }
}

/// `application/json`, optionally with parameters (`; charset=utf-8`).
fn is_json(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Read the body, refusing more than `max` bytes whether or not the length
/// was declared (chunked bodies are cut off as they pass the limit).
pub(crate) async fn read_body<B>(request: Request<B>, max: usize) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::BodyTooLarge { limit: max });
    }
    match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit: max })
        }
        Err(_) => Err(ApiError::BodyUnreadable),
    }
}

/// The Prometheus text answer.
pub fn metrics_response(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}
