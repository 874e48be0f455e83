//! `[budget]`: sends per UTC day, in total and per destination country
//! calling code. The file format is already the checked shape: three
//! numbers; how large they may be is in `checks` (it depends on all three).

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// The daily budget; 0 turns a cap off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub daily_total: u32,
    pub daily_per_country: u32,
    /// A warning is logged once a day when a cap is this many percent used.
    pub warn_percent: u32,
}

impl BudgetConfig {
    pub(super) fn check(self) -> Result<BudgetConfig, ConfigError> {
        if !(1..=100).contains(&self.warn_percent) {
            return Err(ConfigError::invalid(
                "budget.warn_percent",
                "must be between 1 and 100",
            ));
        }
        Ok(self)
    }
}
