//! `GET {base}/v2/PhoneNumbers/{E.164}?Fields=…` with the Twilio account's
//! credentials, and the parts of the answer the policy reads:
//! `line_type_intelligence.type`, `sim_swap.last_sim_swap.swapped_in_period`
//! and `sms_pumping_risk.sms_pumping_risk_score`. Carrier names and the
//! rest are personal data and are not read.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{LookupConfig, TwilioConfig};

/// A data package of Lookup v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    LineType,
    SimSwap,
    PumpingRisk,
}

impl Field {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::LineType => "line_type_intelligence",
            Field::SimSwap => "sim_swap",
            Field::PumpingRisk => "sms_pumping_risk",
        }
    }
}

/// What Twilio said, per package asked for; `None`: not asked, or Twilio
/// had no data (its package carried an `error_code`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LookupAnswer {
    /// Twilio's spelling (`fixedVoip`).
    pub(crate) line_type: Option<String>,
    pub(crate) sim_swapped: Option<bool>,
    pub(crate) pumping_score: Option<u64>,
}

/// Why a lookup gave no answer. Never carries the number (the URL holds
/// it, so reqwest's errors are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("the lookup timed out")]
    Timeout,
    #[error("the lookup could not reach Twilio")]
    Transport,
    #[error("Twilio answered the lookup with HTTP {0}")]
    Status(u16),
    #[error("Twilio's lookup answer could not be read")]
    Body,
    /// Not asked: `lookup.max_per_hour` was reached this hour.
    #[error("the hourly lookup cap (lookup.max_per_hour) was reached")]
    Capped,
}

/// The largest Lookup answer read: one number with every package asked
/// for is about 2 KiB.
pub(crate) const MAX_LOOKUP_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct LookupClient {
    http: reqwest::Client,
    base: String,
    authorization: http::HeaderValue,
}

impl std::fmt::Debug for LookupClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Wire {
    line_type_intelligence: Option<WireLineType>,
    sim_swap: Option<WireSimSwap>,
    sms_pumping_risk: Option<WirePumping>,
}

#[derive(Deserialize)]
struct WireLineType {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct WireSimSwap {
    last_sim_swap: Option<WireLastSwap>,
}

#[derive(Deserialize)]
struct WireLastSwap {
    swapped_in_period: Option<bool>,
}

#[derive(Deserialize)]
struct WirePumping {
    sms_pumping_risk_score: Option<u64>,
}

impl LookupClient {
    pub(crate) fn new(
        config: &LookupConfig,
        twilio: &TwilioConfig,
    ) -> Result<Self, crate::provider::twilio::ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kratos-phone-courier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(LookupClient {
            http,
            base: config.base_url.clone(),
            authorization: crate::provider::twilio::basic_authorization(
                &twilio.username,
                &twilio.password,
            ),
        })
    }

    /// One request for `fields` of `e164`.
    pub(crate) async fn fetch(
        &self,
        e164: &str,
        fields: &[Field],
    ) -> Result<LookupAnswer, LookupError> {
        let fields: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        let url = format!("{}/v2/PhoneNumbers/{e164}", self.base);
        let response = self
            .http
            .get(url)
            .query(&[("Fields", fields.join(","))])
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    LookupError::Timeout
                } else {
                    LookupError::Transport
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(LookupError::Status(status.as_u16()));
        }
        // Bounded: an answer larger than any Lookup answer is not buffered
        // (it is a failed lookup, as `lookup.on_error` says).
        let body = crate::provider::twilio::read_bounded(response, MAX_LOOKUP_ANSWER_BYTES)
            .await
            .ok_or(LookupError::Body)?;
        let wire: Wire = serde_json::from_slice(&body).map_err(|_| LookupError::Body)?;
        Ok(LookupAnswer {
            line_type: wire
                .line_type_intelligence
                .and_then(|l| l.kind)
                .filter(|t| t.len() <= 32),
            sim_swapped: wire
                .sim_swap
                .and_then(|s| s.last_sim_swap)
                .and_then(|l| l.swapped_in_period),
            pumping_score: wire.sms_pumping_risk.and_then(|p| p.sms_pumping_risk_score),
        })
    }
}
