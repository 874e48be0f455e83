//! Logging through `tracing`, plain or JSON, to standard error; and, when
//! `[tracing]` is on, the layer that makes this crate's spans OpenTelemetry
//! spans.
//!
//! What is logged is decided where events are emitted (see `app.rs`): codes,
//! bodies, secrets and whole numbers are never passed to a log macro.
//!
//! The log output takes events only. Spans exist for traces: with tracing
//! off no layer takes them, so creating one on the request path costs a
//! cached callsite check and nothing more.

use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};
use crate::telemetry::traces::Traces;

/// Install the global subscriber. Call once, from `main` (inside the Tokio
/// runtime when `traces` is given).
pub(crate) fn init(config: &LogConfig, traces: Option<&Traces>) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The level hint keeps the filter's own (`log.level`): without one the
    // combination would report "everything", and every disabled `debug!`
    // (and every `log` record of a dependency) would be looked at at run time.
    let events =
        filter.and(filter_fn(|meta| meta.is_event()).with_max_level_hint(LevelFilter::TRACE));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(events).boxed(),
        LogFormat::Plain => fmt.with_filter(events).boxed(),
    };
    // Two shapes rather than an `Option` layer: an absent layer still counts
    // as one that wants every span, which would make the log layer's
    // per-layer filter create (and then skip) each span on the request path.
    let _ = match traces {
        Some(traces) => Registry::default()
            .with(fmt)
            .with(traces.layer())
            .try_init(),
        None => Registry::default().with(fmt).try_init(),
    };
}
