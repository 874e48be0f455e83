//! Building the running service from a checked [`Config`]: bind the
//! listener, start logging and traces, build the [`App`], serve until
//! shutdown, flush the traces.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::http::app::App;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Traces;

/// Why the service could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration key `metrics.listen`: cannot listen on {addr}: {source}")]
    BindMetrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration key `server.listen`: cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    App(#[from] crate::http::app::AppError),
    #[error("{0}")]
    Traces(#[from] crate::telemetry::traces::TracesError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Bind `server.listen`.
pub async fn bind(config: &Config) -> Result<TcpListener, StartupError> {
    let addr = config.server.listen;
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// Install logging (and traces, when `[tracing]` is on), then serve
/// `config` on `listener` until `shutdown` completes, then export the spans
/// still queued.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::BindMetrics { addr, source })?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let traces = match &config.tracing {
        Some(otlp) => Some(Traces::start(otlp, metrics.spans_dropped())?),
        None => None,
    };
    crate::telemetry::init(&config.log, traces.as_ref());
    warn_about_fallback(&config);
    let app = Arc::new(App::with_metrics(config, Clock::system(), metrics)?);
    // Off the start-up path: /health/alive answers while this loads.
    let plan = app.courier().recipients().plan().clone();
    tokio::task::spawn_blocking(move || plan.warm_up());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "kratos-phone-courier listening");
    }
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        tokio::spawn(crate::http::server::run_metrics(
            l,
            app.metrics().clone(),
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let background = spawn_background(app.clone());
    let result = crate::http::server::run(listener, app, shutdown).await;
    background.abort();
    let _ = stop_metrics.send(());
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result?;
    Ok(())
}

/// The periodic work of a running service: pruning abuse-control state and,
/// when asked for, checking the provider credentials until they work.
pub fn spawn_background(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        verify_credentials(&app).await;
        let mut tick = tokio::time::interval(app.config().limits.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            app.courier().prune();
        }
    })
}

/// Ask each provider that wants it whether our credentials work, all at
/// once; readiness waits for every yes. Each retries with a growing pause,
/// since a 401 needs an operator and a network fault may pass.
async fn verify_credentials(app: &Arc<App>) {
    let mut checks = tokio::task::JoinSet::new();
    for (i, provider) in app.courier().providers().iter().enumerate() {
        if !provider.verify_credentials_on_start {
            continue;
        }
        let app = app.clone();
        checks.spawn(async move {
            let Some(provider) = app.courier().providers().iter().nth(i) else {
                return;
            };
            let mut pause = std::time::Duration::from_secs(1);
            loop {
                match provider.client.check_credentials().await {
                    Ok(()) => {
                        tracing::info!(provider = provider.name, "provider credentials verified");
                        provider.credentials_verified();
                        return;
                    }
                    Err(e) => {
                        tracing::error!(
                            provider = provider.name,
                            error = %e,
                            provider_code = e.provider_code(),
                            "provider credentials could not be verified; not ready (check the account or project id and the token or API key)"
                        );
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(60));
            }
        });
    }
    if checks.is_empty() {
        return;
    }
    while checks.join_next().await.is_some() {}
    app.set_ready(app.courier().providers().credentials_ready());
}

/// `fallback.voice_on` asked for what this configuration cannot do: say so
/// once at start rather than refuse to start (the default asks for both).
fn warn_about_fallback(config: &Config) {
    if config.fallback.no_caller_id {
        tracing::warn!(
            "SMS-to-voice fallback is off: no provider has a caller id (voice_from); set one, or fallback.voice_on = [] to silence this"
        );
    } else if config.fallback.undelivered && config.status_callback_url.is_none() {
        tracing::warn!(
            "the \"undelivered\" fallback needs status callbacks (status_callback.public_url): without them no SMS is reported undelivered"
        );
    }
}
