//! `[server]`: the API listener, its bounds on clients, and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::ser_millis;

/// The longest `server.drain_ms`. A drain only has to outlast a few of a
/// load balancer's health-check intervals (seconds each); a minute is
/// already twice Kubernetes's default termination grace, so more is a
/// mistake, not a choice.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_ms: u64,
    pub drain_ms: u64,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(rename = "shutdown_grace_ms", serialize_with = "ser_millis")]
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long the service keeps accepting while
    /// /health/ready answers 503, so load balancers stop sending before the
    /// listener closes.
    #[serde(rename = "drain_ms", serialize_with = "ser_millis")]
    pub drain: Duration,
    #[serde(rename = "header_read_timeout_ms", serialize_with = "ser_millis")]
    pub header_read_timeout: Duration,
    #[serde(rename = "body_read_timeout_ms", serialize_with = "ser_millis")]
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl ServerSettings {
    pub(super) fn check(self) -> Result<ServerConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:4470 or 0.0.0.0:4470",
                    self.listen
                ),
            )
        })?;
        if self.max_body_bytes < 1024 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        let drain = Duration::from_millis(self.drain_ms);
        if drain > MAX_DRAIN {
            return Err(ConfigError::invalid(
                "server.drain_ms",
                format!(
                    "must be at most {} (a few health-check intervals of your load balancer; 0 turns draining off)",
                    MAX_DRAIN.as_millis()
                ),
            ));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.header_read_timeout_ms",
                "must be above 0",
            ));
        }
        if self.body_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.body_read_timeout_ms",
                "must be above 0",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        Ok(ServerConfig {
            listen,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            drain,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections,
        })
    }
}
