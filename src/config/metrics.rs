//! `[metrics]`: where `/metrics` is served — on the API listener behind its
//! authentication, or on a listener of its own without.

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub listen: String,
}

impl MetricsSettings {
    /// `None`: on the API listener.
    pub(super) fn check(self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen.trim() {
            "" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("`{addr}` is not an address:port (leave empty to serve /metrics on the API listener)"),
                )
            }),
        }
    }
}
