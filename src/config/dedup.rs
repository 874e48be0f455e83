//! `[dedup]` and `[budget]`, read straight into their checked form; their
//! bounds that depend on other keys are in `checks`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{ms, ser_millis, within, ANY};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    #[serde(rename = "window_ms", deserialize_with = "ms::<_, 0, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub window: Duration,
    #[serde(rename = "unreachable_ms", deserialize_with = "ms::<_, 0, ANY>")]
    #[serde(serialize_with = "ser_millis")]
    pub(crate) unreachable: Duration,
    #[serde(deserialize_with = "within::<_, usize, 1, ANY>")]
    pub max_entries: usize,
}

/// The daily budget; 0 turns a cap off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub daily_total: u32,
    pub(crate) daily_per_country: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, 100>")]
    pub(crate) warn_percent: u32,
    pub(crate) units: BudgetUnits,
}

/// What one message of each channel takes from the caps (`[budget.units]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetUnits {
    #[serde(deserialize_with = "within::<_, u32, 1, 1000>")]
    pub(crate) sms: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, 1000>")]
    pub(crate) voice: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, 1000>")]
    pub(crate) whatsapp: u32,
}
