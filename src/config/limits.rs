//! `[limits]`: each channel's rates and where the end user's address is
//! read from; `delivery::limits` turns the rates into GCRA cells.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::values::{ms, ser_millis, within, StringList, ANY};

/// A rate: so many per hour, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    #[serde(deserialize_with = "within::<_, u32, 0, MAX_PER_HOUR>")]
    pub per_hour: u32,
    pub(crate) burst: u32,
}

/// The rates of one channel. A rate of 0 per hour turns that limiter off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRates {
    pub(crate) recipient: Rate,
    pub(crate) ip: Rate,
    pub(crate) unknown_ip: Rate,
    pub(crate) identity: Rate,
    pub prefix: Rate,
    pub(crate) country: Rate,
    pub(crate) global: Rate,
    pub(crate) notification: Rate,
}

/// `limits.*.notification` in `config/default.toml` (a test keeps them
/// equal), for the limiters built without a configuration: a number gets
/// a few notices an hour (an address change, a new key), not a flood.
#[cfg(test)]
pub(crate) const NOTIFICATION_DEFAULT: Rate = Rate {
    per_hour: 6,
    burst: 3,
};

/// `[limits.client_ip]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientIpSettings {
    pub(crate) header: String,
    pub(crate) trusted_hops: u32,
}

/// Where the end user's address is read from Kratos's `request_headers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "header_kind", rename_all = "snake_case")]
pub enum ClientIpSource {
    /// `header = ""`: Kratos is reached directly, no header carries the
    /// address; every request counts in the `unknown_ip` bucket.
    None,
    /// `X-Forwarded-For`: the entry `trusted_hops` places from the right
    /// (the one the outermost trusted proxy appended); entries left of it
    /// are the end user's own writing and are ignored.
    ForwardedFor { trusted_hops: u32 },
    /// A header one trusted proxy or CDN sets to the address alone
    /// (`True-Client-Ip`, `CF-Connecting-IP`): lower-cased, as the message
    /// parser stores header names.
    Single { header: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    pub(crate) enabled: bool,
    #[serde(default)]
    pub(crate) ip_headers: Option<StringList>,
    pub(crate) client_ip: ClientIpSettings,
    #[serde(deserialize_with = "within::<_, u32, 1, 6>")]
    pub(crate) prefix_hidden_digits: u32,
    #[serde(deserialize_with = "ms::<_, 1000, ANY>")]
    pub(crate) prune_interval_ms: Duration,
    pub sms: ChannelRates,
    pub voice: ChannelRates,
    pub whatsapp: ChannelRates,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsConfig {
    pub(crate) enabled: bool,
    pub(crate) client_ip: ClientIpSource,
    pub prefix_hidden_digits: u32,
    #[serde(rename = "prune_interval_ms", serialize_with = "ser_millis")]
    pub(crate) prune_interval: Duration,
    pub(crate) sms: ChannelRates,
    pub(crate) voice: ChannelRates,
    pub(crate) whatsapp: ChannelRates,
}

/// One a millisecond: beyond it a limiter no longer limits anything, and
/// governor's period (3600 s / per_hour) would round to nothing.
const MAX_PER_HOUR: u64 = 3_600_000;

/// More proxies than this in front of Kratos is a typo, not a setup.
const MAX_TRUSTED_HOPS: u32 = 10;

impl LimitsSettings {
    pub(super) fn check(self) -> Result<LimitsConfig, ConfigError> {
        refuse_if(
            self.ip_headers.is_some(),
            "limits.ip_headers",
            "was replaced by [limits.client_ip] header and trusted_hops (README: \"Migrating from limits.ip_headers\"); remove it",
        )?;
        // A burst of 0 would refuse everything: only a limiter that is off
        // (0 per hour) may have one.
        for (channel, rates) in [
            ("sms", &self.sms),
            ("voice", &self.voice),
            ("whatsapp", &self.whatsapp),
        ] {
            for (name, rate) in rates.all() {
                refuse_if(
                    rate.per_hour > 0 && rate.burst == 0,
                    &format!("limits.{channel}.{name}.burst"),
                    "must be at least 1 (or per_hour = 0 turns the limit off)",
                )?;
            }
        }
        Ok(LimitsConfig {
            enabled: self.enabled,
            client_ip: self.client_ip.check()?,
            prefix_hidden_digits: self.prefix_hidden_digits,
            prune_interval: self.prune_interval_ms,
            sms: self.sms,
            voice: self.voice,
            whatsapp: self.whatsapp,
        })
    }
}

impl ChannelRates {
    /// Every rate with its key.
    fn all(&self) -> [(&'static str, Rate); 8] {
        [
            ("recipient", self.recipient),
            ("ip", self.ip),
            ("unknown_ip", self.unknown_ip),
            ("identity", self.identity),
            ("prefix", self.prefix),
            ("country", self.country),
            ("global", self.global),
            ("notification", self.notification),
        ]
    }
}

impl ClientIpSettings {
    fn check(self) -> Result<ClientIpSource, ConfigError> {
        let header = self.header.trim();
        if header.is_empty() {
            return Ok(ClientIpSource::None);
        }
        refuse_if(
            http::HeaderName::from_bytes(header.as_bytes()).is_err(),
            "limits.client_ip.header",
            "is not a header name",
        )?;
        if header.eq_ignore_ascii_case("x-forwarded-for") {
            refuse_if(
                !(1..=MAX_TRUSTED_HOPS).contains(&self.trusted_hops),
                "limits.client_ip.trusted_hops",
                "must be between 1 and 10 with X-Forwarded-For: the number of proxies in front of Kratos that append to it (with none, nothing in the header can be trusted: set header = \"\")",
            )?;
            return Ok(ClientIpSource::ForwardedFor {
                trusted_hops: self.trusted_hops,
            });
        }
        refuse_if(
            header.eq_ignore_ascii_case("forwarded"),
            "limits.client_ip.header",
            "Forwarded (RFC 7239) is not read; use X-Forwarded-For or a single-value header",
        )?;
        Ok(ClientIpSource::Single {
            header: header.to_ascii_lowercase(),
        })
    }
}
