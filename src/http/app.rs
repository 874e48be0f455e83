//! Routing, authentication, and one log line per request. The work itself
//! is done by [`Courier`]; what is said back is an [`Answer`], rendered in
//! `http::answer`.
//!
//! (Longer than our usual 400 lines, on purpose: the one routing table
//! (every path and method, and what is answered where none matches) and the
//! wiring of the rooms it routes to, read together.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Body;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::confirmation::{ConfirmationError, ConfirmationParser};
use crate::delivery::courier::{Courier, Delivered, Endpoint};
use crate::delivery::message::{MessageParser, ParseError};
use crate::http::answer::{Answer, ApiError, NotReady, ProviderHealth};
use crate::http::auth::Authenticator;
use crate::http::body;
use crate::http::status_callback::StatusCallbacks;
use crate::http::verify::{Context, VerifyApi, VerifyEndpoint};
use crate::provider::set::ProviderSet;
use crate::provider::twilio::TwilioClient;
use crate::relay::Relay;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces;

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Client(#[from] crate::provider::twilio::ClientError),
    #[error("configuration key `store.redis`: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
}

/// Everything a request needs, built once at start.
pub struct App {
    config: Arc<Config>,
    auth: Authenticator,
    parser: MessageParser,
    confirmations: ConfirmationParser,
    courier: Courier,
    /// Kratos's messages without what their templates should carry.
    setup: crate::delivery::client_ip::SetupCheck,
    metrics: Arc<Metrics>,
    /// `None` when `status_callback.public_url` is not set.
    status_callbacks: Option<StatusCallbacks>,
    /// `None` when `relay.enabled` is off.
    relay: Option<Relay>,
    /// `None` when `verify.enabled` is off.
    verify: Option<VerifyApi>,
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
    template_type: Option<&'static str>,
    channel: Option<&'static str>,
    recipient: Option<String>,
    sid: Option<String>,
    provider_code: Option<u32>,
    /// accepted, duplicate or test.
    outcome: &'static str,
}

impl App {
    pub fn new(config: Config) -> Result<Self, AppError> {
        App::with_clock(config, Clock::system())
    }

    /// Build with a given clock (tests move it forward instead of sleeping).
    pub fn with_clock(config: Config, clock: Clock) -> Result<Self, AppError> {
        App::with_metrics(config, clock, Arc::new(Metrics::new()))
    }

    /// Build with metrics made before the app (start-up hands the trace
    /// exporter their dropped-spans counter before the app exists).
    pub(crate) fn with_metrics(
        config: Config,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AppError> {
        let twilio = TwilioClient::new(&config.twilio)?;
        let (store, keys) = crate::store::open(&config, clock.clone(), metrics.store_errors())?;
        let relay = Relay::new(
            &config,
            twilio.clone(),
            store.clone(),
            keys.clone(),
            clock.clone(),
            metrics.clone(),
        )?;
        let verify = VerifyApi::new(&config, keys.clone(), store.clone(), clock.clone());
        let providers = ProviderSet::new(&config, &clock, &metrics)?;
        for p in providers.iter() {
            metrics.providers().known(&p.name);
        }
        let ready = providers.credentials_ready();
        // Lookup is Twilio's: asked with the first Twilio provider's
        // account (config::checks refuses Lookup without one).
        let lookup = match (&config.lookup, config.twilio_account()) {
            (Some(l), Some(account)) => Some(crate::lookup::Lookup::new(
                l.clone(),
                crate::lookup::LookupClient::new(l, account)?,
                store.clone(),
                keys.clone(),
                clock.clone(),
                metrics.clone(),
            )),
            _ => None,
        };
        let courier = Courier::new(
            &config,
            providers,
            lookup,
            store,
            keys,
            clock,
            metrics.clone(),
        );
        let plan = courier.recipients().plan().clone();
        metrics.set_ready(ready);
        Ok(App {
            auth: Authenticator::new(&config.auth),
            parser: MessageParser::new(),
            confirmations: ConfirmationParser::new(),
            courier,
            setup: crate::delivery::client_ip::SetupCheck::new(
                config.limits.client_ip.clone(),
                metrics.clone(),
            ),
            status_callbacks: StatusCallbacks::new(&config, metrics.clone(), plan),
            relay,
            verify,
            metrics,
            ready: AtomicBool::new(ready),
            shutting_down: AtomicBool::new(false),
            config: Arc::new(config),
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn courier(&self) -> &Courier {
        &self.courier
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics
            .set_ready(ready && !self.shutting_down.load(Ordering::SeqCst));
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.metrics.set_ready(false);
    }

    /// Answer one request. Never fails: every problem is an answer.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.route(request).await.into_response()
    }

    async fn route<B>(&self, request: Request<B>) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::POST, "/v1/sms") => Endpoint::Sms,
            (&Method::POST, "/v1/voice") => Endpoint::Voice,
            (_, path) if path.starts_with("/v1/verify/") || path.starts_with("/verify/demo") => {
                return self.verify_route(request).await
            }
            (&Method::GET | &Method::HEAD, "/health/alive") => return Answer::Alive,
            (&Method::GET | &Method::HEAD, "/health/ready") => return self.readiness().await,
            (&Method::GET, "/v1/test-messages") => {
                return self.authenticated(request.headers(), || {
                    Answer::TestMessages(self.courier.test_messages())
                })
            }
            (&Method::GET, "/metrics") if self.config.metrics_listen.is_none() => {
                return self
                    .authenticated(request.headers(), || Answer::Metrics(self.metrics.render()))
            }
            (&Method::POST, "/v1/kratos/confirmed") => return self.confirmed(request).await,
            (_, "/v1/kratos/confirmed") => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            (&Method::POST, "/v1/twilio/status") => {
                return match &self.status_callbacks {
                    Some(callbacks) => callbacks.handle(request, &self.courier).await,
                    None => ApiError::NotFound.into(),
                };
            }
            (&Method::POST, "/v1/signalwire/status") => {
                return match &self.status_callbacks {
                    Some(callbacks) => callbacks.handle_signalwire(request, &self.courier).await,
                    None => ApiError::NotFound.into(),
                };
            }
            (&Method::POST, "/v1/twilio/inbound") => {
                return match &self.relay {
                    Some(relay) => super::relay::handle(relay, request).await,
                    None => ApiError::NotFound.into(),
                };
            }
            (_, "/v1/test-messages") => return ApiError::MethodNotAllowed { allow: "GET" }.into(),
            (_, "/v1/sms" | "/v1/voice") => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            (_, "/health/alive" | "/health/ready") => {
                return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into()
            }
            // Where these endpoints exist on this listener; elsewhere every
            // method is answered 404, as GET or POST is.
            (_, "/metrics") if self.config.metrics_listen.is_none() => {
                return ApiError::MethodNotAllowed { allow: "GET" }.into()
            }
            (_, "/v1/twilio/status" | "/v1/signalwire/status")
                if self.status_callbacks.is_some() =>
            {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            (_, "/v1/twilio/inbound") if self.relay.is_some() => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            _ => return ApiError::NotFound.into(),
        };
        self.courier_request(endpoint, request).await
    }

    /// `/v1/sms` and `/v1/voice`: deliver, count, log.
    async fn courier_request<B>(&self, endpoint: Endpoint, request: Request<B>) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let mut log = RequestLog::default();
        let in_flight = self.metrics.in_flight();
        let span = traces::request_span(endpoint.path(), request.headers());
        let result = traces::in_span!(span.clone(), self.deliver(endpoint, request, &mut log));
        drop(in_flight);
        let (outcome, reason) = match &result {
            Ok(_) => (log.outcome, "none"),
            Err(e @ ApiError::Delivery(d)) if d.is_provider_failure() => {
                ("provider_error", e.code())
            }
            Err(e) => ("rejected", e.code()),
        };
        self.metrics.request(
            endpoint.path(),
            log.channel.unwrap_or("none"),
            log.template_type.unwrap_or("none"),
            outcome,
            reason,
        );
        let (answer, error) = match result {
            Ok(delivered) => (Answer::Accepted(delivered), None),
            Err(e) => {
                if matches!(&e, ApiError::Delivery(d) if d.needs_operator()) {
                    tracing::error!(
                        error = e.code(),
                        provider_code = log.provider_code,
                        "the provider refused our configuration: check twilio.* settings"
                    );
                }
                let code = e.code();
                (Answer::Error(e), Some(code))
            }
        };
        let status = answer_status(&answer);
        if !span.is_disabled() {
            span.record("courier.channel", log.channel);
            span.record("courier.template_type", log.template_type);
            span.record("courier.outcome", outcome);
            span.record("error.type", error);
            span.record("http.response.status_code", status);
        }
        tracing::info!(
            method = %method,
            endpoint = endpoint.path(),
            template_type = log.template_type,
            channel = log.channel,
            recipient = log.recipient.as_deref(),
            sid = log.sid.as_deref(),
            provider_code = log.provider_code,
            status,
            error,
            trace_id = traces::trace_id(&span),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        answer
    }

    /// `answer()` when the request carries the API's credentials.
    fn authenticated(&self, headers: &http::HeaderMap, answer: impl FnOnce() -> Answer) -> Answer {
        if !self.auth.check(headers) {
            return ApiError::Unauthorized {
                basic_challenge: self.auth.uses_basic(),
            }
            .into();
        }
        answer()
    }

    /// `/v1/kratos/confirmed`: Kratos's after-flow hook says a code was
    /// used. Counted for each of the identity's numbers a code is
    /// outstanding for; anything else is ignored and counted as such.
    async fn confirmed<B>(&self, request: Request<B>) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let fraud = self.metrics.fraud();
        let bytes = match self.read_kratos_json(request).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if matches!(e, ApiError::Unauthorized { .. }) {
                    fraud.ignored("unauthenticated");
                }
                return e.into();
            }
        };
        let confirmation = match self.confirmations.parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                fraud.ignored("invalid");
                return match e {
                    ConfirmationError::MalformedJson => ApiError::MalformedJson,
                    ConfirmationError::Schema(v) => ApiError::Schema(v),
                }
                .into();
            }
        };
        let mut counted = 0;
        for recipient in &confirmation.recipients {
            match self.courier.confirmed(recipient).await {
                Ok(true) => counted += 1,
                Ok(false) => {}
                Err(e) => return ApiError::from(e).into(),
            }
        }
        tracing::info!(
            endpoint = "/v1/kratos/confirmed",
            flow = confirmation.flow.as_deref(),
            numbers = confirmation.recipients.len(),
            counted,
            "confirmation"
        );
        Answer::Confirmed { counted }
    }

    async fn read_kratos_json<B>(&self, request: Request<B>) -> Result<Bytes, ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        body::read_authenticated_json(request, &self.auth, &self.config.server).await
    }

    /// What `/health/ready` answers, also kept in the `ready` metric (so an
    /// alert sees a replica that stays out of the load balancer; the store
    /// is only asked when a probe asks).
    async fn readiness(&self) -> Answer {
        let answer = self.readiness_now().await;
        self.metrics.set_ready(matches!(answer, Answer::Ready(..)));
        answer
    }

    async fn readiness_now(&self) -> Answer {
        let store = self.courier.store();
        let providers = self
            .courier
            .providers()
            .health()
            .into_iter()
            .map(|(name, kind, credentials, circuit)| ProviderHealth {
                name: name.to_owned(),
                kind: kind.as_str(),
                credentials: credentials.as_str(),
                circuit: circuit.as_str(),
            })
            .collect();
        if self.shutting_down.load(Ordering::SeqCst) {
            Answer::NotReady(NotReady::ShuttingDown, providers)
        } else if !self.ready.load(Ordering::SeqCst) {
            Answer::NotReady(NotReady::CredentialsUnverified, providers)
        } else if store.fails_closed() && store.ping().await.is_err() {
            // Every send would be refused: let the load balancer pick a
            // replica that reaches Redis (with on_error = local, this one
            // still sends from memory and stays ready).
            Answer::NotReady(NotReady::StoreUnavailable, providers)
        } else {
            Answer::Ready(providers, self.setup.warnings())
        }
    }

    async fn deliver<B>(
        &self,
        endpoint: Endpoint,
        request: Request<B>,
        log: &mut RequestLog,
    ) -> Result<Delivered, ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let bytes = self.read_kratos_json(request).await?;
        let message = self.parser.parse(&bytes).map_err(|e| match e {
            ParseError::MalformedJson => ApiError::MalformedJson,
            ParseError::Schema(v) => ApiError::Schema(v),
        })?;
        self.setup.observe(&message);
        log.template_type = Some(message.template_type.label());
        let recipient = self.courier.recipients().parse(&message.recipient).ok();
        let region = recipient.as_ref().and_then(|r| r.region());
        log.channel = Some(
            self.courier
                .channel_for(endpoint, &message, region)
                .as_str(),
        );
        let delivered = match self.courier.deliver(endpoint, &message).await {
            Ok(d) => d,
            Err(e) => {
                log.provider_code = e.provider_code();
                return Err(e.into());
            }
        };
        log.channel = Some(delivered.channel.as_str());
        log.recipient = Some(delivered.masked_recipient.clone());
        log.sid = delivered.sid.clone();
        if delivered.sid.is_none() && !delivered.duplicate {
            tracing::warn!("the provider accepted the message but its answer could not be read");
        }
        log.outcome = if delivered.test {
            "test"
        } else if delivered.duplicate {
            "duplicate"
        } else {
            "accepted"
        };
        Ok(delivered)
    }
}

/// The verify API (`src/verify/`, `http::verify`): its endpoints exist only
/// when `verify.enabled`, the demo page only with `verify.demo`.
impl App {
    async fn verify_route<B>(&self, request: Request<B>) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(verify) = &self.verify else {
            return ApiError::NotFound.into();
        };
        let cx = Context {
            auth: &self.auth,
            courier: &self.courier,
            server: &self.config.server,
            metrics: &self.metrics,
        };
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::POST, "/v1/verify/request") => VerifyEndpoint::Request,
            (&Method::POST, "/v1/verify/check") => VerifyEndpoint::Check,
            (_, "/v1/verify/request" | "/v1/verify/check") => {
                return ApiError::MethodNotAllowed { allow: "POST" }.into()
            }
            (_, "/verify/demo" | "/verify/demo/request" | "/verify/demo/check")
                if verify.demo_enabled() =>
            {
                return verify.demo(request, &cx).await
            }
            _ => return ApiError::NotFound.into(),
        };
        verify.handle(endpoint, request, &cx).await
    }
}

/// The HTTP status an answer will have, for the log line.
fn answer_status(answer: &Answer) -> u16 {
    match answer {
        Answer::Error(e) => e.status().as_u16(),
        _ => 200,
    }
}
