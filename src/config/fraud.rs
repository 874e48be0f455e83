//! `[fraud]`: when a destination is suspect of SMS pumping, and what then.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::values::{choice, ser_millis, within, StringList, ANY};
use crate::phone::CountryId;
use crate::phone::E164;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FraudSettings {
    #[serde(deserialize_with = "choice")]
    pub(crate) action: FraudAction,
    #[serde(deserialize_with = "within::<_, u32, 1, ANY>")]
    pub(crate) min_unconfirmed_per_hour: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, ANY>")]
    pub(crate) prefix_min_unconfirmed_per_hour: u32,
    pub(crate) ratio: f64,
    pub(crate) peak_growth: f64,
    #[serde(deserialize_with = "within::<_, u64, 1, 527_040>")]
    pub(crate) hold_minutes: u64,
    pub(crate) always_allow: StringList,
}

/// What a suspect destination gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FraudAction {
    RecordOnly,
    Deny,
}

#[derive(Debug, Clone, Serialize)]
pub struct FraudConfig {
    pub(crate) action: FraudAction,
    pub(crate) min_unconfirmed_per_hour: u32,
    pub(crate) prefix_min_unconfirmed_per_hour: u32,
    pub(crate) ratio: f64,
    pub(crate) peak_growth: f64,
    #[serde(rename = "hold_ms", serialize_with = "ser_millis")]
    pub(crate) hold: Duration,
    pub(crate) always_allow_countries: Vec<CountryId>,
    pub(crate) always_allow_numbers: Vec<E164>,
}

impl FraudSettings {
    pub(super) fn check(self) -> Result<FraudConfig, ConfigError> {
        refuse_if(
            !(self.ratio.is_finite() && self.ratio > 0.0 && self.ratio <= 1000.0),
            "fraud.ratio",
            "must be a number above 0 and at most 1000",
        )?;
        refuse_if(
            !(self.peak_growth.is_finite() && (1.0..=100.0).contains(&self.peak_growth)),
            "fraud.peak_growth",
            "must be a number from 1 to 100",
        )?;
        let mut countries = Vec::new();
        let mut numbers = Vec::new();
        for entry in self.always_allow.0 {
            if entry.trim_start().starts_with('+') {
                numbers.push(E164::parse(entry.trim()).ok_or_else(|| {
                    ConfigError::invalid(
                        "fraud.always_allow",
                        "an entry starting with + is not an E.164 number",
                    )
                })?);
            } else {
                countries.push(CountryId::parse(&entry).ok_or_else(|| {
                    ConfigError::invalid(
                        "fraud.always_allow",
                        "an entry is neither an ISO 3166 region code such as US nor an E.164 number",
                    )
                })?);
            }
        }
        Ok(FraudConfig {
            action: self.action,
            min_unconfirmed_per_hour: self.min_unconfirmed_per_hour,
            prefix_min_unconfirmed_per_hour: self.prefix_min_unconfirmed_per_hour,
            ratio: self.ratio,
            peak_growth: self.peak_growth,
            hold: Duration::from_secs(self.hold_minutes * 60),
            always_allow_countries: countries,
            always_allow_numbers: numbers,
        })
    }
}
