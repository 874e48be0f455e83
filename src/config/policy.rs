//! `[policy]`: which destinations may be sent to at all — premium-rate
//! numbers, and the countries allowed or denied per channel.

use serde::{Deserialize, Serialize};

use super::country::CountryId;
use super::error::ConfigError;
use super::values::StringList;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub refuse_premium: bool,
    pub sms: CountrySettings,
    pub voice: CountrySettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountrySettings {
    pub allowed_countries: StringList,
    pub denied_countries: StringList,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    pub refuse_premium: bool,
    pub sms: CountryPolicy,
    pub voice: CountryPolicy,
}

/// Regions per channel. An empty allow list allows all.
#[derive(Debug, Clone, Serialize)]
pub struct CountryPolicy {
    pub allowed_countries: Vec<CountryId>,
    pub denied_countries: Vec<CountryId>,
}

fn regions(key: &str, list: StringList) -> Result<Vec<CountryId>, ConfigError> {
    list.0
        .into_iter()
        .map(|c| {
            CountryId::parse(&c).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("`{c}` is not an ISO 3166 region code such as US or DE"),
                )
            })
        })
        .collect()
}

impl PolicySettings {
    pub(super) fn check(self) -> Result<PolicyConfig, ConfigError> {
        let country = |ch: &str, c: CountrySettings| -> Result<CountryPolicy, ConfigError> {
            Ok(CountryPolicy {
                allowed_countries: regions(
                    &format!("policy.{ch}.allowed_countries"),
                    c.allowed_countries,
                )?,
                denied_countries: regions(
                    &format!("policy.{ch}.denied_countries"),
                    c.denied_countries,
                )?,
            })
        };
        Ok(PolicyConfig {
            refuse_premium: self.refuse_premium,
            sms: country("sms", self.sms)?,
            voice: country("voice", self.voice)?,
        })
    }
}
