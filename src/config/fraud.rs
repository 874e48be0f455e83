//! `[fraud]`: SMS-pumping detection from Kratos's own confirmations — when
//! a destination country or number prefix counts as suspect, what is done
//! then, and which destinations are never suspected.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::country::CountryId;
use super::error::ConfigError;
use super::phone_number::E164;
use super::values::{ser_millis, StringList};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FraudSettings {
    pub action: String,
    pub min_unconfirmed_per_hour: u32,
    pub prefix_min_unconfirmed_per_hour: u32,
    pub ratio: f64,
    pub hold_minutes: u64,
    pub always_allow: StringList,
}

/// What a suspect destination gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudAction {
    /// A metric and a warning; the code is sent.
    RecordOnly,
    /// 429 `fraud_suspected` with Retry-After until it cools down.
    Deny,
}

#[derive(Debug, Clone, Serialize)]
pub struct FraudConfig {
    pub action: FraudAction,
    /// For a country: the floor of the unconfirmed codes an hour that make
    /// it suspect.
    pub min_unconfirmed_per_hour: u32,
    /// The same floor for a number prefix.
    pub prefix_min_unconfirmed_per_hour: u32,
    pub ratio: f64,
    /// How long a destination stays suspect after the rule last held.
    #[serde(rename = "hold_ms", serialize_with = "ser_millis")]
    pub hold: Duration,
    pub always_allow_countries: Vec<CountryId>,
    pub always_allow_numbers: Vec<E164>,
}

/// A year: a hold longer than that is a typo.
const MAX_HOLD_MINUTES: u64 = 366 * 24 * 60;

impl FraudSettings {
    pub(super) fn check(self) -> Result<FraudConfig, ConfigError> {
        let action = match self.action.as_str() {
            "record_only" => FraudAction::RecordOnly,
            "deny" => FraudAction::Deny,
            _ => {
                return Err(ConfigError::invalid(
                    "fraud.action",
                    "must be record_only or deny",
                ))
            }
        };
        if !(self.ratio.is_finite() && self.ratio > 0.0 && self.ratio <= 1000.0) {
            return Err(ConfigError::invalid(
                "fraud.ratio",
                "must be a number above 0 and at most 1000",
            ));
        }
        if self.min_unconfirmed_per_hour == 0 {
            return Err(ConfigError::invalid(
                "fraud.min_unconfirmed_per_hour",
                "must be at least 1 (or one unconfirmed code would make a country suspect)",
            ));
        }
        if self.prefix_min_unconfirmed_per_hour == 0 {
            return Err(ConfigError::invalid(
                "fraud.prefix_min_unconfirmed_per_hour",
                "must be at least 1 (or one unconfirmed code would make a prefix suspect)",
            ));
        }
        if !(1..=MAX_HOLD_MINUTES).contains(&self.hold_minutes) {
            return Err(ConfigError::invalid(
                "fraud.hold_minutes",
                "must be between 1 and 527040 (a year)",
            ));
        }
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
            action,
            min_unconfirmed_per_hour: self.min_unconfirmed_per_hour,
            prefix_min_unconfirmed_per_hour: self.prefix_min_unconfirmed_per_hour,
            ratio: self.ratio,
            hold: Duration::from_secs(self.hold_minutes * 60),
            always_allow_countries: countries,
            always_allow_numbers: numbers,
        })
    }
}
