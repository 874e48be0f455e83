//! The domain step between a parsed [`CourierMessage`] and the provider:
//! decide the channel, build the SMS or the call, send it, and turn the
//! provider's answer into what Kratos is told.

use crate::config::{Config, SmsSender, VoiceConfig};
use crate::error::ApiError;
use crate::message::CourierMessage;
use crate::recipient::Recipient;
use crate::twilio::{
    Accepted, FailureClass, OutgoingCall, OutgoingSms, ProviderError, TwilioClient,
};
use crate::twiml;

/// Twilio's limit for an SMS body, in characters.
pub const MAX_SMS_CHARS: usize = 1600;
/// Twilio's range for `ValidityPeriod`, in seconds.
pub const VALIDITY_RANGE: (u32, u32) = (1, 36_000);

/// Which endpoint the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Sms,
    Voice,
}

/// How a code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }
}

/// A provider request ready to go, built from a valid message.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Sms(OutgoingSms),
    Call(OutgoingCall),
}

/// A message that passed every check and is ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub recipient: Recipient,
    pub channel: Channel,
    pub outgoing: Outgoing,
}

/// Turns courier messages into provider requests and sends them.
pub struct Courier {
    twilio: TwilioClient,
    sms_sender: SmsSender,
    voice_from: Option<String>,
    voice: VoiceConfig,
    status_callback: Option<String>,
}

impl Courier {
    pub fn new(config: &Config, twilio: TwilioClient) -> Self {
        Courier {
            twilio,
            sms_sender: config.twilio.sms_sender.clone(),
            voice_from: config.twilio.voice_from.clone(),
            voice: config.voice.clone(),
            status_callback: None,
        }
    }

    pub fn twilio(&self) -> &TwilioClient {
        &self.twilio
    }

    /// `/v1/voice` always calls. `/v1/sms` calls when the flow's transient
    /// payload asks for voice or the identity's voice trait says "voice" —
    /// and voice is configured; otherwise it sends an SMS, so a code is never
    /// lost to a missing caller id.
    pub fn channel_for(&self, endpoint: Endpoint, message: &CourierMessage) -> Channel {
        match endpoint {
            Endpoint::Voice => Channel::Voice,
            Endpoint::Sms => {
                let wants_voice = message.requested_channel.as_deref() == Some("voice")
                    || message.identity_trait(&self.voice.trait_name) == Some("voice");
                if wants_voice && self.voice_from.is_some() {
                    Channel::Voice
                } else {
                    Channel::Sms
                }
            }
        }
    }

    /// Check the message and build the provider request; nothing is sent.
    pub fn prepare(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Prepared, ApiError> {
        let recipient = Recipient::parse(&message.recipient).map_err(ApiError::InvalidRecipient)?;
        let channel = self.channel_for(endpoint, message);
        let outgoing = match channel {
            Channel::Sms => Outgoing::Sms(self.build_sms(&recipient, message)?),
            Channel::Voice => Outgoing::Call(self.build_call(&recipient, message)?),
        };
        Ok(Prepared {
            recipient,
            channel,
            outgoing,
        })
    }

    fn build_sms(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingSms, ApiError> {
        let chars = message.body.chars().count();
        if chars > MAX_SMS_CHARS {
            return Err(ApiError::BodyTooLong { chars });
        }
        if message.body.trim().is_empty() {
            return Err(ApiError::BodyEmpty);
        }
        // A code delivered after it expired is worthless: do not let Twilio
        // keep trying longer than the code lives.
        let validity_period = message.expires_in_minutes.map(|m| {
            let secs = m.saturating_mul(60);
            secs.clamp(VALIDITY_RANGE.0 as i64, VALIDITY_RANGE.1 as i64) as u32
        });
        Ok(OutgoingSms {
            to: recipient.e164().to_owned(),
            sender: self.sms_sender.clone(),
            body: message.body.clone(),
            validity_period,
            status_callback: self.status_callback.clone(),
        })
    }

    fn build_call(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingCall, ApiError> {
        let from = self
            .voice_from
            .clone()
            .ok_or(ApiError::VoiceNotConfigured)?;
        let code = message.code.as_deref().ok_or(ApiError::InvalidCode {
            reason: "the message carries no code",
        })?;
        if !twiml::is_speakable_code(code) {
            return Err(ApiError::InvalidCode {
                reason: "the code is not 4 to 12 letters or digits",
            });
        }
        let speech = twiml::speech_for(
            &self.voice,
            &message.template_type,
            message.request_header("accept-language"),
        );
        let twiml = twiml::code_twiml(&speech, code);
        if twiml.chars().count() > twiml::MAX_TWIML_CHARS {
            return Err(ApiError::TwimlTooLong);
        }
        Ok(OutgoingCall {
            to: recipient.e164().to_owned(),
            from,
            twiml,
            status_callback: self.status_callback.clone(),
        })
    }

    /// Send a prepared message to the provider.
    pub async fn send(&self, prepared: &Prepared) -> Result<Accepted, ProviderError> {
        match &prepared.outgoing {
            Outgoing::Sms(sms) => self.twilio.send_sms(sms).await,
            Outgoing::Call(call) => self.twilio.create_call(call).await,
        }
    }
}

/// What Kratos is told about a provider failure.
pub fn provider_error_to_api(e: &ProviderError) -> ApiError {
    match e.class() {
        FailureClass::Recipient => ApiError::RecipientUnreachable {
            provider_code: e.provider_code(),
        },
        FailureClass::Configuration => ApiError::ProviderConfiguration {
            provider_code: e.provider_code(),
            http_status: match e {
                ProviderError::Rejected { status, .. } => Some(*status),
                _ => None,
            },
        },
        FailureClass::Transient => ApiError::ProviderUnavailable {
            provider_code: e.provider_code(),
            // Kratos retries about a second later whatever we say; a
            // provider's own Retry-After is passed on for other callers.
            retry_after: e.retry_after().unwrap_or(1).clamp(1, 3600),
        },
    }
}
