//! OpenTelemetry traces (`[tracing]`): the code's journey from Kratos to
//! Twilio in one trace.
//!
//! ```text
//!  Kratos (otelhttp) ── traceparent ──► request            (server span: route, channel,
//!                                        ├─ admission        template, outcome, error code)
//!                                        ├─ ledger
//!                                        │   └─ reconcile    (an uncertain earlier attempt)
//!                                        ├─ limits
//!                                        └─ provider ── traceparent ──► Twilio
//!                                                           (client span: provider, HTTP status,
//!                                                            Twilio error code)
//! ```
//!
//! Spans are `tracing` spans of this crate, turned into OpenTelemetry spans
//! by `tracing-opentelemetry` only when tracing is on. Off, no layer wants
//! them, so every span macro on the request path stops at its callsite's
//! cached "never" and nothing else is done (bench/instructions.md).
//!
//! Attributes name routes, channels, template types, outcomes, error codes,
//! countries and HTTP statuses: never a phone number, a code or a body.
//! Where a field is recorded decides that, not a filter here.

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

use crate::config::OtlpTracing;
use crate::telemetry::export::{self, DroppedSpans, ExportTask, ReqwestClient};

/// `$future.await` inside `$span` when tracing is on. Off, the future is
/// awaited where it was built: wrapping it in `Instrumented` would move it
/// (some of these futures are kilobytes) only to enter a span that does
/// nothing. The two arms are the same future; one runs.
macro_rules! in_span {
    ($span:expr, $future:expr) => {{
        let span: ::tracing::Span = $span;
        if span.is_disabled() {
            $future.await
        } else {
            ::tracing::Instrument::instrument($future, span).await
        }
    }};
}
pub(crate) use in_span;

/// How long the flush at shutdown may take.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why tracing could not start. Names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("configuration key `tracing.providers.otlp`: cannot build the exporter: {0}")]
    Exporter(String),
}

/// A running trace pipeline: the provider behind the `tracing` layer, and
/// the export task to flush at shutdown.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
    export: ExportTask,
}

impl Traces {
    /// Start exporting to the collector in `config`. Call from within the
    /// Tokio runtime (the export task runs on it).
    pub(crate) fn start(
        config: &OtlpTracing,
        dropped: DroppedSpans,
    ) -> Result<Traces, TracesError> {
        let client = ReqwestClient::new().map_err(|e| TracesError::Exporter(e.to_string()))?;
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(export::EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        exporter.set_resource(&resource);
        let (processor, export) = export::start(exporter, dropped);
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            // Kratos's sampling decision wins; new traces keep this share.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_span_processor(processor)
            .build();
        Ok(Traces { provider, export })
    }

    /// The layer that turns this crate's `tracing` spans into OpenTelemetry
    /// spans (events stay log lines: they are not copied into spans).
    pub(crate) fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        use tracing_subscriber::Layer;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("kratos-phone-courier"))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("kratos_phone_courier")
            }))
    }

    /// Export what is queued, then stop (at most [`FLUSH_TIMEOUT`]).
    pub(crate) async fn shutdown(&self) {
        self.export.shutdown(FLUSH_TIMEOUT).await;
        let _ = self.provider.shutdown();
    }
}

/// The span of one courier request, continuing the caller's trace when its
/// `traceparent` (and `tracestate`) say so. Fields are recorded as the
/// request goes: `courier.channel`, `courier.template_type`,
/// `courier.outcome`, `error.type`, `http.response.status_code`.
pub(crate) fn request_span(route: &'static str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        "request",
        otel.name = route,
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route,
        courier.channel = tracing::field::Empty,
        courier.template_type = tracing::field::Empty,
        courier.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The W3C trace id of `span`, for the request's log line; `None` when
/// tracing is off.
pub(crate) fn trace_id(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// `traceparent` (and `tracestate`) for an outgoing provider request, from
/// the current span; `None` when tracing is off.
pub(crate) fn outgoing_headers() -> Option<HeaderMap> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    Some(headers)
}

/// Record the provider's HTTP status on the current (provider) span.
pub(crate) fn record_status(status: u16) {
    let span = Span::current();
    if !span.is_disabled() {
        span.record("http.response.status_code", status);
    }
}
