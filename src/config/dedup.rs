//! `[dedup]`: how long a sent message and an unreachable recipient are
//! remembered, and how many. The lower bound of the window depends on the
//! provider timeout, so it is in `checks`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::ser_millis;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSettings {
    pub window_ms: u64,
    pub unreachable_ms: u64,
    pub max_entries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DedupConfig {
    #[serde(rename = "window_ms", serialize_with = "ser_millis")]
    pub window: Duration,
    #[serde(rename = "unreachable_ms", serialize_with = "ser_millis")]
    pub unreachable: Duration,
    pub max_entries: usize,
}

impl DedupSettings {
    pub(super) fn check(self) -> Result<DedupConfig, ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "dedup.max_entries",
                "must be at least 1",
            ));
        }
        Ok(DedupConfig {
            window: Duration::from_millis(self.window_ms),
            unreachable: Duration::from_millis(self.unreachable_ms),
            max_entries: self.max_entries,
        })
    }
}
