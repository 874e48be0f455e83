//! `[limits]`: the rate settings of each channel — per recipient, per
//! end-user IP, per destination country calling code and in total — and
//! where the end user's IP is read from.
//!
//! The rates are plain numbers here; `delivery::limits` turns them into
//! governor quotas. They live in `config` so that configuration depends on
//! nothing it configures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::{ser_millis, StringList};

/// A rate: so many per hour, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_hour: u32,
    pub burst: u32,
}

/// The four rates of one channel. A rate of 0 per hour turns that limiter off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRates {
    pub recipient: Rate,
    pub ip: Rate,
    pub country: Rate,
    pub global: Rate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    pub enabled: bool,
    pub ip_headers: StringList,
    pub prune_interval_ms: u64,
    pub sms: ChannelRates,
    pub voice: ChannelRates,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsConfig {
    pub enabled: bool,
    /// Header names, checked; looked up in Kratos's `request_headers`.
    pub ip_headers: Vec<String>,
    #[serde(rename = "prune_interval_ms", serialize_with = "ser_millis")]
    pub prune_interval: Duration,
    pub sms: ChannelRates,
    pub voice: ChannelRates,
}

/// One a millisecond: beyond it a limiter no longer limits anything, and
/// governor's period (3600 s / per_hour) would round to nothing.
const MAX_PER_HOUR: u32 = 3_600_000;

impl LimitsSettings {
    pub(super) fn check(self) -> Result<LimitsConfig, ConfigError> {
        for (channel, rates) in [("sms", &self.sms), ("voice", &self.voice)] {
            for (name, rate) in [
                ("recipient", rates.recipient),
                ("ip", rates.ip),
                ("country", rates.country),
                ("global", rates.global),
            ] {
                check_rate(&format!("limits.{channel}.{name}"), rate)?;
            }
        }
        for h in &self.ip_headers.0 {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::invalid(
                    "limits.ip_headers",
                    format!("`{h}` is not a header name"),
                ));
            }
        }
        if self.prune_interval_ms < 1000 {
            return Err(ConfigError::invalid(
                "limits.prune_interval_ms",
                "must be at least 1000",
            ));
        }
        Ok(LimitsConfig {
            enabled: self.enabled,
            ip_headers: self.ip_headers.0,
            prune_interval: Duration::from_millis(self.prune_interval_ms),
            sms: self.sms,
            voice: self.voice,
        })
    }
}

fn check_rate(key: &str, rate: Rate) -> Result<(), ConfigError> {
    if rate.per_hour > MAX_PER_HOUR {
        return Err(ConfigError::invalid(
            &format!("{key}.per_hour"),
            "must be at most 3600000 (0 turns the limit off)",
        ));
    }
    if rate.per_hour > 0 && rate.burst == 0 {
        return Err(ConfigError::invalid(
            &format!("{key}.burst"),
            "must be at least 1",
        ));
    }
    Ok(())
}
