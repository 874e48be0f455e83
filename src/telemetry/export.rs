//! Getting finished spans to the collector without ever holding up a send.
//!
//! ```text
//!  span ends ──try_send──► bounded queue ──► export task ──► OTLP/HTTP POST
//!                │ full                       (batches,        (protobuf, over
//!                ▼                             one at a time)   our reqwest client)
//!        dropped{reason="queue_full"}           │ failed
//!                                               ▼
//!                                 dropped{reason="export_failed"}
//! ```
//!
//! The SDK's batch processor is not used: it runs its own thread and
//! blocks it on each export (which needs a blocking HTTP client, a second
//! reqwest), and it only logs the spans it drops. This one is a Tokio task
//! on the service's runtime with our async client, and it counts every span
//! it loses. [`ExportTask::shutdown`] flushes what is queued.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};

/// Spans waiting for export at most: about 400 requests' worth. Past it a
/// finished span is dropped (and counted) instead of buffered.
pub(crate) const QUEUE_CAPACITY: usize = 2048;

/// Spans in one export request at most.
const MAX_BATCH: usize = 512;

/// How long the task gathers spans before exporting a batch that is not
/// full: few requests to the collector, spans visible within seconds.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// One export request at most this long (the HTTP client's own timeout).
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dropped spans, by reason (`queue_full`, `export_failed`).
pub(crate) type DroppedSpans = Family<Vec<(&'static str, &'static str)>, Counter>;

fn count_dropped(dropped: &DroppedSpans, reason: &'static str, n: usize) {
    dropped
        .get_or_create(&vec![("reason", reason)])
        .inc_by(n as u64);
}

/// The span processor: hands each sampled span to the export task, or
/// counts it dropped when the queue is full. Never waits.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    dropped: DroppedSpans,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            count_dropped(&self.dropped, "queue_full", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// The flush at shutdown is [`ExportTask::shutdown`], awaited by the
    /// service: this is called from a synchronous context that must not
    /// block the runtime.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The background export task, and the way to stop it after a flush.
pub(crate) struct ExportTask {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Start the export task on the current Tokio runtime.
pub(crate) fn start<E>(exporter: E, dropped: DroppedSpans) -> (QueueProcessor, ExportTask)
where
    E: SpanExporter + 'static,
{
    start_with_capacity(exporter, dropped, QUEUE_CAPACITY)
}

fn start_with_capacity<E>(
    exporter: E,
    dropped: DroppedSpans,
    capacity: usize,
) -> (QueueProcessor, ExportTask)
where
    E: SpanExporter + 'static,
{
    let (queue, spans) = mpsc::channel(capacity);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(export_loop(spans, exporter, stopped, dropped.clone()));
    (
        QueueProcessor { queue, dropped },
        ExportTask {
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        },
    )
}

impl ExportTask {
    /// Export what is queued, then stop; at most `timeout`. Spans that end
    /// after this are dropped.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("traces: the last spans could not be exported in time");
            }
        }
    }
}

async fn export_loop<E: SpanExporter>(
    mut spans: mpsc::Receiver<SpanData>,
    exporter: E,
    mut stopped: oneshot::Receiver<()>,
    dropped: DroppedSpans,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            biased;
            _ = &mut stopped => stopping = true,
            n = spans.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    stopping = true;
                }
            }
        }
        if !stopping && batch.len() < MAX_BATCH {
            tokio::select! {
                biased;
                _ = &mut stopped => stopping = true,
                _ = tokio::time::sleep(BATCH_DELAY) => {}
            }
        }
        // What arrived meanwhile (and, when stopping, everything left).
        while let Ok(span) = spans.try_recv() {
            batch.push(span);
            if batch.len() == MAX_BATCH {
                export(&exporter, &mut batch, &dropped).await;
            }
        }
        export(&exporter, &mut batch, &dropped).await;
    }
}

async fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, dropped: &DroppedSpans) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            count_dropped(dropped, "export_failed", n);
            tracing::debug!(error = %short(&e), "traces: export failed");
        }
        Err(_) => {
            count_dropped(dropped, "export_failed", n);
            tracing::debug!("traces: export timed out");
        }
    }
}

/// The error's kind, without the collector's answer body.
fn short(e: &OTelSdkError) -> &'static str {
    match e {
        OTelSdkError::AlreadyShutdown => "already shut down",
        OTelSdkError::Timeout(_) => "timeout",
        OTelSdkError::InternalFailure(_) => "export request failed",
    }
}

/// The exporter's HTTP client: the service's reqwest (rustls), with a
/// timeout and no redirects, and without reqwest's own OpenTelemetry glue
/// (which is for another reqwest major version).
#[derive(Debug, Clone)]
pub(crate) struct ReqwestClient(pub reqwest::Client);

impl ReqwestClient {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(EXPORT_TIMEOUT.min(Duration::from_secs(2)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kratos-phone-courier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(ReqwestClient)
    }
}

/// Collector answers are small (a partial-success message at most).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())?;
        let mut response = self
            .0
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        let mut out = Response::builder()
            .status(status)
            .body(Bytes::from(answer))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::InstrumentationScope;
    use std::sync::Arc;
    use std::time::SystemTime;

    /// Records what it is asked to export.
    #[derive(Debug, Clone, Default)]
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl SpanExporter for Recording {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0
                .lock()
                .unwrap()
                .extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

    fn span(name: &'static str, sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(1u64),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn dropped(family: &DroppedSpans, reason: &'static str) -> u64 {
        family.get_or_create(&vec![("reason", reason)]).get()
    }

    // One thread: the export task cannot run between the three ends, so the
    // queue of one holds the first and the other two are dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_and_shutdown_flushes_the_rest() {
        let exported = Recording::default();
        let family = DroppedSpans::default();
        let (processor, task) = start_with_capacity(exported.clone(), family.clone(), 1);
        processor.on_end(span("first", true));
        processor.on_end(span("second", true));
        processor.on_end(span("third", true));
        // Not sampled: neither queued nor counted.
        processor.on_end(span("unsampled", false));
        assert_eq!(dropped(&family, "queue_full"), 2);
        task.shutdown(Duration::from_secs(5)).await;
        assert_eq!(*exported.0.lock().unwrap(), ["first"]);
        assert_eq!(dropped(&family, "export_failed"), 0);
        // After shutdown a span is dropped, never a panic or a wait.
        processor.on_end(span("late", true));
        assert_eq!(dropped(&family, "queue_full"), 3);
    }
}
