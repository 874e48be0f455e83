//! `[server]`, `[log]` and `[metrics]`, read straight into their checked
//! form.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::values::{addr, choice, ms, refused, ser_millis, within, ANY};

/// The longest `server.drain_ms`, in milliseconds. A drain only has to outlast a few of a
/// load balancer's health-check intervals (seconds each); a minute is
/// already twice Kubernetes's default termination grace, so more is a
/// mistake, not a choice.
const MAX_DRAIN_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(deserialize_with = "listen")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "within::<_, usize, 1024, 16_777_216>")]
    pub max_body_bytes: usize,
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "ms::<_, 0, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub shutdown_grace: Duration,
    #[serde(rename = "drain_ms", deserialize_with = "ms::<_, 0, MAX_DRAIN_MS>")]
    #[serde(serialize_with = "ser_millis")]
    pub drain: Duration,
    #[serde(
        rename = "header_read_timeout_ms",
        deserialize_with = "ms::<_, 1, ANY>"
    )]
    #[serde(serialize_with = "ser_millis")]
    pub(crate) header_read_timeout: Duration,
    #[serde(rename = "body_read_timeout_ms", deserialize_with = "ms::<_, 1, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub(crate) body_read_timeout: Duration,
    #[serde(deserialize_with = "within::<_, usize, 1, ANY>")]
    pub(crate) max_connections: usize,
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    addr(d)?.ok_or_else(|| refused("is required: an address:port such as 127.0.0.1:4470"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(deserialize_with = "choice")]
    pub(crate) format: LogFormat,
    #[serde(deserialize_with = "log_filter")]
    pub(crate) level: String,
}

fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(_) => Ok(level),
        Err(_) => Err(refused("is not a tracing filter such as \"info\"")),
    }
}

/// `[metrics]`: `listen` empty serves `/metrics` on the API listener,
/// behind the API's auth.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSettings {
    #[serde(deserialize_with = "addr")]
    pub(crate) listen: Option<SocketAddr>,
}
