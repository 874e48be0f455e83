//! `POST /v1/twilio/status` and `POST /v1/signalwire/status`: delivery
//! statuses the providers post for the messages and calls this service
//! created (when `status_callback.public_url` is set). One handler for
//! both: only the URL that was signed differs.
//!
//! Only signed calls count: `X-Twilio-Signature` (or SignalWire's
//! `X-SignalWire-Signature`) must be Twilio's HMAC-SHA1 over the exact
//! callback URL and the sorted form parameters, keyed with a configured
//! provider's auth token or signing key, compared in constant time. The status is recorded in metrics
//! and in one log line with the sid and the masked recipient.

use std::sync::Arc;

use http::Request;
use hyper::body::Body;
use secrecy::SecretString;

use crate::config::Config;
use crate::delivery::courier::Courier;
use crate::http::answer::{Answer, ApiError};
use crate::http::body;
use crate::phone::{NumberingPlan, Recipient};
use crate::provider::errors;
use crate::telemetry::metrics::Metrics;

/// Status callbacks are small; a few KiB is plenty.
const MAX_CALLBACK_BYTES: usize = 16 * 1024;

/// The receiver of status callbacks, present only when they are configured.
pub struct StatusCallbacks {
    /// The exact URL Twilio calls (and signs): `{public_url}/v1/twilio/status`.
    url: String,
    /// The exact URL SignalWire is given: `{public_url}/v1/signalwire/status`.
    signalwire_url: String,
    /// Every provider's auth token or signing key: a callback signed by any
    /// of them counts (a SignalWire space may post to either path).
    tokens: Vec<SecretString>,
    metrics: Arc<Metrics>,
    /// To mask the `To` of the log line (shared with the courier's parser).
    plan: Arc<NumberingPlan>,
}

impl StatusCallbacks {
    /// `None` unless `status_callback.public_url` is set (the configuration
    /// check makes sure the auth token is there too).
    pub fn new(config: &Config, metrics: Arc<Metrics>, plan: Arc<NumberingPlan>) -> Option<Self> {
        let url = config.status_callback_url.clone()?;
        let twilio_path = crate::config::ProviderKind::Twilio.status_path();
        let signalwire_path = crate::config::ProviderKind::SignalWire.status_path();
        let tokens: Vec<SecretString> = config
            .providers
            .iter()
            .filter_map(|p| p.api.signing_token.clone())
            .collect();
        if tokens.is_empty() {
            return None;
        }
        Some(StatusCallbacks {
            signalwire_url: format!("{}{signalwire_path}", url.strip_suffix(twilio_path)?),
            url,
            tokens,
            metrics,
            plan,
        })
    }

    /// `POST /v1/twilio/status`. Records the status; an undelivered SMS
    /// may be called instead (`delivery::fallback`), before the provider is
    /// answered.
    pub async fn handle<B>(&self, request: Request<B>, courier: &Courier) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_at(request, &self.url, courier).await
    }

    /// `POST /v1/signalwire/status`: the same, signed for its own URL.
    pub async fn handle_signalwire<B>(&self, request: Request<B>, courier: &Courier) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_at(request, &self.signalwire_url, courier).await
    }

    async fn handle_at<B>(&self, request: Request<B>, url: &str, courier: &Courier) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.check_and_record(request, url, courier).await {
            Ok(()) => Answer::Recorded,
            Err(e) => {
                if matches!(e, ApiError::InvalidSignature) {
                    tracing::warn!("status callback refused: missing or wrong signature");
                }
                Answer::Error(e)
            }
        }
    }

    async fn check_and_record<B>(
        &self,
        request: Request<B>,
        url: &str,
        courier: &Courier,
    ) -> Result<(), ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let params =
            body::read_signed_form_by_any(request, url, &self.tokens, MAX_CALLBACK_BYTES).await?;
        let report = record(&self.metrics, &self.plan, &params);
        if let Some((sid, status, error_code)) = report {
            courier.status_reported(&sid, status, error_code).await;
        }
        Ok(())
    }
}

/// Count the status and write its log line; an SMS's sid, status and error
/// code for the fallback.
fn record(
    metrics: &Metrics,
    plan: &NumberingPlan,
    params: &[(String, String)],
) -> Option<(String, &'static str, Option<u32>)> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (channel, sid, status) = if let Some(sid) = field("CallSid") {
        ("voice", sid, field("CallStatus").unwrap_or(""))
    } else {
        (
            "sms",
            field("MessageSid").or(field("SmsSid")).unwrap_or(""),
            field("MessageStatus").or(field("SmsStatus")).unwrap_or(""),
        )
    };
    let error_code = field("ErrorCode").and_then(|c| c.parse::<u32>().ok());
    let recipient = field("To")
        .and_then(|to| Recipient::parse_with(plan, to).ok())
        .map(|r| r.masked());
    metrics.delivery_status(channel, status, errors::metric_label(error_code));
    let status_label = crate::telemetry::metrics::status_label(status);
    // A sid is Twilio's id, not personal data; cap it all the same.
    let sid: String = sid.chars().take(64).collect();
    if matches!(
        status_label,
        "undelivered" | "failed" | "busy" | "no-answer"
    ) {
        tracing::warn!(
            channel,
            sid,
            status = status_label,
            error_code,
            recipient,
            "delivery status"
        );
    } else {
        tracing::info!(
            channel,
            sid,
            status = status_label,
            error_code,
            recipient,
            "delivery status"
        );
    }
    (channel == "sms").then_some((sid, status_label, error_code))
}
