//! `POST /v1/twilio/status` and `POST /v1/signalwire/status`: delivery
//! statuses the providers post for the messages and calls this service
//! created (when `status_callback.public_url` is set). One handler for
//! both: the URL that was signed, the header and the keys differ.
//!
//! Only signed calls count, and each path only with the keys of its own
//! kind of provider: `/v1/twilio/status` with a Twilio provider's auth
//! token in `X-Twilio-Signature`; `/v1/signalwire/status` with a SignalWire
//! provider's signing key in `X-SignalWire-Signature` (or
//! `X-Twilio-Signature`, its alias). The signature is Twilio's HMAC-SHA1
//! over the exact callback URL and the sorted form parameters, compared in
//! constant time. So a SignalWire key, leaked or not, cannot report on a
//! Twilio message (and start a fallback call), nor the other way round.
//! The body has `server.body_read_timeout` to arrive (408 past it). The
//! status is recorded in metrics and in one log line with the sid and the
//! masked recipient.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Body;
use secrecy::SecretString;

use crate::config::{Config, ProviderKind};
use crate::delivery::courier::Courier;
use crate::http::answer::{Answer, ApiError};
use crate::http::body;
use crate::phone::{NumberingPlan, Recipient};
use crate::provider::errors;
use crate::provider::twilio::WHATSAPP_PREFIX;
use crate::telemetry::metrics::Metrics;

/// Status callbacks are small; a few KiB is plenty.
const MAX_CALLBACK_BYTES: usize = 16 * 1024;

/// The receiver of status callbacks, present only when they are configured.
pub(crate) struct StatusCallbacks {
    /// The exact URL Twilio calls (and signs): `{public_url}/v1/twilio/status`.
    url: String,
    /// The exact URL SignalWire is given: `{public_url}/v1/signalwire/status`.
    signalwire_url: String,
    /// The Twilio providers' auth tokens: the keys of `/v1/twilio/status`.
    twilio_keys: Vec<SecretString>,
    /// The SignalWire providers' signing keys: the keys of
    /// `/v1/signalwire/status`.
    signalwire_keys: Vec<SecretString>,
    /// `server.body_read_timeout`.
    body_timeout: Duration,
    metrics: Arc<Metrics>,
    /// To mask the `To` of the log line (shared with the courier's parser).
    plan: Arc<NumberingPlan>,
}

impl StatusCallbacks {
    /// `None` unless `status_callback.public_url` is set (the configuration
    /// check makes sure the auth token is there too).
    pub(crate) fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        plan: Arc<NumberingPlan>,
    ) -> Option<Self> {
        let url = config.status_callback_url.clone()?;
        let twilio_path = crate::config::ProviderKind::Twilio.status_path();
        let signalwire_path = crate::config::ProviderKind::SignalWire.status_path();
        let keys = |kind: ProviderKind| -> Vec<SecretString> {
            config
                .providers
                .iter()
                .filter(|p| p.kind == kind)
                .filter_map(|p| p.api.signing_token.clone())
                .collect()
        };
        let (twilio_keys, signalwire_keys) =
            (keys(ProviderKind::Twilio), keys(ProviderKind::SignalWire));
        if twilio_keys.is_empty() && signalwire_keys.is_empty() {
            return None;
        }
        Some(StatusCallbacks {
            signalwire_url: format!("{}{signalwire_path}", url.strip_suffix(twilio_path)?),
            url,
            twilio_keys,
            signalwire_keys,
            body_timeout: config.server.body_read_timeout,
            metrics,
            plan,
        })
    }

    /// `POST /v1/twilio/status`, signed by a Twilio provider. Records the
    /// status; an undelivered SMS may be called instead
    /// (`delivery::fallback`), before the provider is answered.
    pub(crate) async fn handle<B>(&self, request: Request<B>, courier: &Courier) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_at(request, ProviderKind::Twilio, courier).await
    }

    /// `POST /v1/signalwire/status`: the same, signed by a SignalWire
    /// provider for its own URL.
    pub(crate) async fn handle_signalwire<B>(
        &self,
        request: Request<B>,
        courier: &Courier,
    ) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_at(request, ProviderKind::SignalWire, courier)
            .await
    }

    async fn handle_at<B>(
        &self,
        request: Request<B>,
        kind: ProviderKind,
        courier: &Courier,
    ) -> Answer
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.check_and_record(request, kind, courier).await {
            Ok(()) => Answer::Recorded,
            Err(e) => {
                if matches!(e, ApiError::InvalidSignature) {
                    tracing::warn!(
                        path = kind.status_path(),
                        "status callback refused: missing or wrong signature"
                    );
                }
                Answer::Error(e)
            }
        }
    }

    async fn check_and_record<B>(
        &self,
        request: Request<B>,
        kind: ProviderKind,
        courier: &Courier,
    ) -> Result<(), ApiError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (url, keys) = match kind {
            ProviderKind::Twilio => (&self.url, &self.twilio_keys),
            ProviderKind::SignalWire => (&self.signalwire_url, &self.signalwire_keys),
        };
        let form = body::SignedForm {
            url,
            signer: kind,
            keys,
            max: MAX_CALLBACK_BYTES,
            timeout: self.body_timeout,
        };
        let params = body::read_signed_form(request, &form).await?;
        let report = record(&self.metrics, &self.plan, &params);
        if let Some((channel, sid, status, error_code)) = report {
            courier
                .status_reported(channel, &sid, status, error_code)
                .await;
        }
        Ok(())
    }
}

/// Count the status and write its log line; an SMS's or WhatsApp
/// message's channel, sid, status and error code for the fallback.
fn record(
    metrics: &Metrics,
    plan: &NumberingPlan,
    params: &[(String, String)],
) -> Option<(&'static str, String, &'static str, Option<u32>)> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (channel, sid, status) = if let Some(sid) = field("CallSid") {
        ("voice", sid, field("CallStatus").unwrap_or(""))
    } else {
        // A WhatsApp message is a message resource whose `To` is
        // `whatsapp:+…`.
        let whatsapp = field("To").is_some_and(|to| to.starts_with(WHATSAPP_PREFIX));
        (
            if whatsapp { "whatsapp" } else { "sms" },
            field("MessageSid").or(field("SmsSid")).unwrap_or(""),
            field("MessageStatus").or(field("SmsStatus")).unwrap_or(""),
        )
    };
    let error_code = field("ErrorCode").and_then(|c| c.parse::<u32>().ok());
    let recipient = field("To")
        .map(|to| to.strip_prefix(WHATSAPP_PREFIX).unwrap_or(to))
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
    (channel != "voice").then_some((channel, sid, status_label, error_code))
}
