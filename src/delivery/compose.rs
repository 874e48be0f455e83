//! Composing the provider request for a message: which channel, the SMS
//! (body checks, validity period, sender) or the call (caller id, the code
//! spoken in TwiML). Nothing is sent here.

use crate::config::{Config, SmsSender, VoiceConfig, E164};
use crate::delivery::channel::{Channel, Endpoint};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::{CourierMessage, TemplateType};
use crate::phone::Recipient;
use crate::provider::twilio::{OutgoingCall, OutgoingSms};
use crate::provider::twiml;

/// Twilio's limit for an SMS body, in characters.
pub const MAX_SMS_CHARS: usize = 1600;
/// Twilio's range for `ValidityPeriod`, in seconds.
pub const VALIDITY_RANGE: (u32, u32) = (1, 36_000);

/// A provider request ready to go, built from a valid message.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Sms(OutgoingSms),
    Call(OutgoingCall),
}

/// Builds provider requests from courier messages.
pub struct Composer {
    sms_sender: SmsSender,
    /// Caller id for calls; `None` turns voice off.
    voice_from: Option<E164>,
    voice: VoiceConfig,
    /// Where Twilio posts delivery statuses, when configured.
    status_callback: Option<String>,
}

impl Composer {
    pub fn new(config: &Config) -> Self {
        Composer {
            sms_sender: config.twilio.sms_sender.clone(),
            voice_from: config.twilio.voice_from.clone(),
            voice: config.voice.clone(),
            status_callback: config.status_callback_url.clone(),
        }
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

    /// The provider request for `message` to `recipient` on `channel`.
    pub fn compose(
        &self,
        channel: Channel,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<Outgoing, DeliveryError> {
        Ok(match channel {
            Channel::Sms => Outgoing::Sms(self.sms(recipient, message)?),
            Channel::Voice => Outgoing::Call(self.call(recipient, message)?),
        })
    }

    fn sms(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingSms, DeliveryError> {
        let chars = message.body.chars().count();
        if chars > MAX_SMS_CHARS {
            return Err(DeliveryError::BodyTooLong { chars });
        }
        if !message.body.chars().any(is_visible) {
            return Err(DeliveryError::BodyEmpty);
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

    fn call(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingCall, DeliveryError> {
        let code = message.code.as_deref().ok_or(DeliveryError::InvalidCode {
            reason: "the message carries no code",
        })?;
        self.spoken_call(
            recipient,
            &message.template_type,
            message.request_header("accept-language"),
            code,
        )
    }

    /// The call that speaks `code` to `recipient` in the template's
    /// sentence and the language asked for: a message's call, and the
    /// fallback call of an SMS (`delivery::fallback`), which has no message
    /// any more, only what was kept of it.
    /// Whether a call could speak `code`: a caller id is configured and the
    /// code is one a call can say. Asked of every code SMS, so cheap: the
    /// call is composed only when it is placed.
    pub fn can_speak(&self, code: &str) -> bool {
        self.voice_from.is_some() && twiml::is_speakable_code(code)
    }

    pub fn spoken_call(
        &self,
        recipient: &Recipient,
        template_type: &TemplateType,
        accept_language: Option<&str>,
        code: &str,
    ) -> Result<OutgoingCall, DeliveryError> {
        let from = self
            .voice_from
            .as_ref()
            .map(E164::to_string)
            .ok_or(DeliveryError::VoiceNotConfigured)?;
        if !twiml::is_speakable_code(code) {
            return Err(DeliveryError::InvalidCode {
                reason: "the code is not 4 to 12 letters or digits",
            });
        }
        let speech = twiml::speech_for(&self.voice, template_type, accept_language);
        let twiml = twiml::code_twiml(&speech, code);
        if twiml.chars().count() > twiml::MAX_TWIML_CHARS {
            return Err(DeliveryError::TwimlTooLong);
        }
        Ok(OutgoingCall {
            to: recipient.e164().to_owned(),
            from,
            twiml,
            status_callback: self.status_callback.clone(),
        })
    }
}

impl Outgoing {
    /// The channel this request goes out on (a fallback call answers an
    /// SMS message, and is charged as the call it is).
    pub fn channel(&self) -> Channel {
        match self {
            Outgoing::Sms(_) => Channel::Sms,
            Outgoing::Call(_) => Channel::Voice,
        }
    }
}

/// Whether a character shows: not white space and not an invisible format
/// character (zero-width spaces and joiners, BOM, bidi marks, soft hyphen).
fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
        || c.is_control())
}
