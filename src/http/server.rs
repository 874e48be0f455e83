//! The accept loop: serves an [`App`] on a listener it is handed, until the
//! shutdown future it is handed completes; then drains, stops accepting,
//! lets the requests in flight finish (bounded by a grace period) and
//! returns.
//!
//! Shutdown, in order (a rolling deploy behind a load balancer):
//!
//! ```text
//!  SIGTERM ─► /health/ready answers 503 ─► keep accepting for server.drain_ms
//!          ─► close the listener ─► wait for requests in flight, then for
//!             sends whose request went away, at most
//!             server.shutdown_grace_ms in all ─► return
//! ```
//!
//! Readiness turns off first and the listener stays open while load
//! balancers notice (they probe every few seconds): closing it at once would
//! refuse requests they still send here.
//!
//! The listener and the shutdown signal are injected so that tests bind
//! port 0 and stop the server when they want.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::http::answer::{Answer, ApiError};
use crate::http::app::App;

/// Serve until `shutdown` completes. Returns once every connection has
/// finished or the grace period has passed.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let grace = app.config().server.shutdown_grace;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().server.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    // The whole answer to a connection over `server.max_connections`.
    let overloaded: Arc<[u8]> = crate::http::answer::too_many_connections_bytes().into();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        app.config().server.max_connections,
    ));
    tokio::pin!(shutdown);
    // Until SIGTERM, then for the drain window: accept.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let draining = drain_until;
        let drained = async move {
            match draining {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (mut stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning or giving up.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Full: say so at once rather than leave the client in
                    // the backlog until its own timeout.
                    let overloaded = overloaded.clone();
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(&overloaded).await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            _ = &mut shutdown, if draining.is_none() => {
                app.begin_shutdown();
                let drain = app.config().server.drain;
                tracing::info!(
                    drain_ms = drain.as_millis() as u64,
                    "shutdown requested: not ready; still accepting while load balancers notice"
                );
                if drain.is_zero() {
                    break;
                }
                drain_until = Some(tokio::time::Instant::now() + drain);
            }
            _ = drained => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: waiting for requests in flight"
    );
    // Within one grace period: the connections, then the sends whose
    // request went away (their outcome is recorded in the ledger).
    let finished = async {
        graceful.shutdown().await;
        tracing::info!("all connections closed");
        app.courier().sends_finished().await;
    };
    tokio::select! {
        _ = finished => tracing::info!("all sends finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections and sends"),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is
/// first polled: the accept loop may not poll it before it has served its
/// first requests, and a SIGTERM in between would otherwise meet the
/// default action and kill the process mid-request. Call it inside the
/// runtime, before the service is announced.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            // No signal driver: nothing can ask us to stop but the process's
            // end.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serve only `GET /metrics` (no authentication) on its own listener, until
/// `shutdown` completes.
pub async fn run_metrics(
    listener: TcpListener,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let metrics = metrics.clone();
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let answer = match (request.method(), request.uri().path()) {
                            (&http::Method::GET, "/metrics") => Answer::Metrics(metrics.render()),
                            (_, "/metrics") => ApiError::MethodNotAllowed { allow: "GET" }.into(),
                            _ => ApiError::NotFound.into(),
                        };
                        let response = answer.into_response();
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}
