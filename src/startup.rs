//! Building the running service from a checked [`Config`]: bind the
//! listener, build the [`App`], serve until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;

/// Why the service could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration key `server.listen`: cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP client could not be built: {0}")]
    Client(#[from] reqwest::Error),
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

/// Serve `config` on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let app = Arc::new(App::new(config)?);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "kratos-phone-courier listening");
    }
    crate::server::run(listener, app, shutdown).await?;
    Ok(())
}
