//! Composing the provider request for a message: which channel, the SMS
//! (body checks, validity period, sender) or the call (caller id, the code
//! spoken in TwiML). Nothing is sent here. (Past 400 lines on purpose: the
//! three channels' compositions read side by side, and their unit tests
//! sit beside them.)

use crate::config::{Config, SmsSender, VoiceConfig, WhatsAppConfig};
use crate::delivery::channel::{Channel, Endpoint};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::{CourierMessage, TemplateType};
use crate::phone::Recipient;
use crate::phone::E164;
use crate::provider::twilio::{OutgoingCall, OutgoingSms, OutgoingWhatsApp};
use crate::provider::twiml;

/// Twilio's limit for an SMS body, in characters. A longer body that ends
/// with a Web OTP line is shortened above that line ([`fit_sms`]).
pub(crate) const MAX_SMS_CHARS: usize = 1600;
/// Twilio's range for `ValidityPeriod`, in seconds.
pub(crate) const VALIDITY_RANGE: (u32, u32) = (1, 36_000);

/// A provider request ready to go, built from a valid message.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Sms(OutgoingSms),
    Call(OutgoingCall),
    WhatsApp(OutgoingWhatsApp),
}

/// Builds provider requests from courier messages.
pub(crate) struct Composer {
    sms_sender: SmsSender,
    /// Caller id for calls; `None` turns voice off.
    voice_from: Option<E164>,
    voice: VoiceConfig,
    /// `[whatsapp]`; `None` turns WhatsApp off.
    whatsapp: Option<WhatsAppConfig>,
    /// Where Twilio posts delivery statuses, when configured.
    status_callback: Option<String>,
}

impl Composer {
    pub(crate) fn new(config: &Config) -> Self {
        Composer {
            sms_sender: config.twilio.sms_sender.clone(),
            voice_from: config.twilio.voice_from.clone(),
            voice: config.voice.clone(),
            whatsapp: config.whatsapp.clone(),
            status_callback: config.status_callback_url.clone(),
        }
    }

    /// A notification (no code, see [`CourierMessage::is_notification`])
    /// is an SMS whatever the endpoint, trait or transient payload says (a
    /// landline's call is the fallback's), unless the operator turned
    /// WhatsApp on for notifications (`whatsapp.notification_content_sid`):
    /// then one that a code would send by WhatsApp goes by WhatsApp, if its
    /// text fits a template variable ([`whatsapp_text`]). Otherwise
    /// `/v1/voice` always calls. `/v1/sms` calls when the flow's transient
    /// payload asks for voice or the identity's voice trait says "voice" —
    /// and voice is configured; otherwise it sends an SMS, so a code is never
    /// lost to a missing caller id.
    ///
    /// WhatsApp (when `[whatsapp]` is on) is asked for the same ways, with
    /// `"whatsapp"`, and is the channel of every code to a country in
    /// `whatsapp.countries` unless voice was asked for. `region` is the
    /// recipient's country, when known.
    pub(crate) fn channel_for(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
        region: Option<&str>,
    ) -> Channel {
        let channel = self.code_channel(endpoint, message, region);
        if message.is_notification() {
            let by_whatsapp = channel == Channel::WhatsApp
                && self.whatsapp.as_ref().is_some_and(|w| {
                    w.notification_content_sid.is_some() && whatsapp_text(&message.body).is_ok()
                });
            return match by_whatsapp {
                true => Channel::WhatsApp,
                false => Channel::Sms,
            };
        }
        channel
    }

    /// The channel of a code message (see [`Self::channel_for`]).
    fn code_channel(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
        region: Option<&str>,
    ) -> Channel {
        match endpoint {
            Endpoint::Voice => Channel::Voice,
            Endpoint::Sms => {
                let asks = |channel: &str| {
                    message.requested_channel.as_deref() == Some(channel)
                        || message.identity_trait(&self.voice.trait_name) == Some(channel)
                };
                if asks("voice") && self.voice_from.is_some() {
                    Channel::Voice
                } else if self.whatsapp.is_some()
                    && (asks("whatsapp") || (!asks("sms") && self.whatsapp_country(region)))
                {
                    Channel::WhatsApp
                } else {
                    Channel::Sms
                }
            }
        }
    }

    /// Whether `[whatsapp]` is on and `region` is in `whatsapp.countries`.
    fn whatsapp_country(&self, region: Option<&str>) -> bool {
        match (&self.whatsapp, region) {
            (Some(w), Some(region)) => w.countries.iter().any(|c| c.as_str() == region),
            _ => false,
        }
    }

    /// The provider request for `message` to `recipient` on `channel`.
    pub(crate) fn compose(
        &self,
        channel: Channel,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<Outgoing, DeliveryError> {
        Ok(match channel {
            Channel::Sms => Outgoing::Sms(self.sms(recipient, message)?),
            Channel::Voice => Outgoing::Call(self.call(recipient, message)?),
            Channel::WhatsApp => Outgoing::WhatsApp(self.whatsapp(recipient, message)?),
        })
    }

    /// The WhatsApp template with the message's code (the authentication
    /// template), or with a notification's text (the utility template,
    /// when one is configured); `[whatsapp]` must be on.
    fn whatsapp(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingWhatsApp, DeliveryError> {
        let config = self
            .whatsapp
            .as_ref()
            .ok_or(DeliveryError::WhatsAppNotConfigured)?;
        let language = message.request_header("accept-language");
        let (content_sid, variable) = if message.is_notification() {
            let sid = config
                .notification_content_sid_for(language)
                .ok_or(DeliveryError::WhatsAppNotConfigured)?;
            (sid, whatsapp_text(&message.body)?)
        } else {
            let code = message
                .code
                .as_deref()
                .filter(|c| twiml::is_speakable_code(c))
                .ok_or(DeliveryError::InvalidCode {
                    reason: "a WhatsApp code must be 4 to 12 letters or digits",
                })?;
            (config.content_sid_for(language), code.to_owned())
        };
        Ok(OutgoingWhatsApp {
            to: recipient.e164().to_owned(),
            sender: config.sender.clone(),
            content_sid: content_sid.to_owned(),
            variable,
            status_callback: self.status_callback.clone(),
        })
    }

    fn sms(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingSms, DeliveryError> {
        let body = fit_sms(&message.body)?;
        if !body.chars().any(is_visible) {
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
            body,
            validity_period,
            status_callback: self.status_callback.clone(),
        })
    }

    /// An SMS of `body` as it was composed before (a WhatsApp message's
    /// stand-in, sent after a callback): this service's sender and status
    /// callback.
    pub(crate) fn plain_sms(
        &self,
        recipient: &Recipient,
        body: String,
        validity_period: Option<u32>,
    ) -> OutgoingSms {
        OutgoingSms {
            to: recipient.e164().to_owned(),
            sender: self.sms_sender.clone(),
            body,
            validity_period,
            status_callback: self.status_callback.clone(),
        }
    }

    fn call(
        &self,
        recipient: &Recipient,
        message: &CourierMessage,
    ) -> Result<OutgoingCall, DeliveryError> {
        if message.is_notification() {
            return self.notice_call(
                recipient,
                &message.template_type,
                message.request_header("accept-language"),
                &message.body,
            );
        }
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

    /// Whether a call could speak `code`: a caller id is configured and the
    /// code is one a call can say. Asked of every code SMS, so cheap: the
    /// call is composed only when it is placed.
    pub(crate) fn can_speak(&self, code: &str) -> bool {
        self.voice_from.is_some() && twiml::is_speakable_code(code)
    }

    /// The call that speaks `code` to `recipient` in the template's
    /// sentence and the language asked for: a message's call, and the
    /// fallback call of an SMS (`delivery::fallback`), which has no message
    /// any more, only what was kept of it.
    pub(crate) fn spoken_call(
        &self,
        recipient: &Recipient,
        template_type: &TemplateType,
        accept_language: Option<&str>,
        code: &str,
    ) -> Result<OutgoingCall, DeliveryError> {
        let from = self.caller_id()?;
        if !twiml::is_speakable_code(code) {
            return Err(DeliveryError::InvalidCode {
                reason: "the code is not 4 to 12 letters or digits",
            });
        }
        let speech = twiml::speech_for(&self.voice, template_type, accept_language);
        self.call_with(recipient, from, twiml::code_twiml(&speech, code))
    }

    /// The caller id of every call; none turns voice off.
    fn caller_id(&self) -> Result<String, DeliveryError> {
        self.voice_from
            .as_ref()
            .map(E164::to_string)
            .ok_or(DeliveryError::VoiceNotConfigured)
    }

    /// A call of `twiml` to `recipient`, if Twilio takes TwiML that long.
    fn call_with(
        &self,
        recipient: &Recipient,
        from: String,
        twiml: String,
    ) -> Result<OutgoingCall, DeliveryError> {
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

impl Composer {
    /// Whether a call could read a notification: a caller id is configured.
    pub(crate) fn can_read(&self) -> bool {
        self.voice_from.is_some()
    }

    /// The call that reads a notification's `text` (its Web OTP line, if
    /// any, left out) to a number that takes no SMS, in the voice and
    /// language of the code calls.
    pub(crate) fn notice_call(
        &self,
        recipient: &Recipient,
        template_type: &TemplateType,
        accept_language: Option<&str>,
        text: &str,
    ) -> Result<OutgoingCall, DeliveryError> {
        let from = self.caller_id()?;
        let spoken = without_web_otp(text);
        if !spoken.chars().any(is_visible) {
            return Err(DeliveryError::BodyEmpty);
        }
        let speech = twiml::speech_for(&self.voice, template_type, accept_language);
        self.call_with(recipient, from, twiml::text_twiml(&speech, spoken))
    }
}

/// Where the Web OTP line (`@<domain> #<code>`, the origin-bound last line
/// browsers and Android autofill the code from) starts in `body`, if its
/// last non-empty line is one.
pub(crate) fn web_otp_line(body: &str) -> Option<usize> {
    let trimmed = body.trim_end_matches(['\n', '\r']);
    let start = trimmed.rfind('\n').map_or(0, |i| i + 1);
    let line = &trimmed[start..];
    let (domain, code) = line.strip_prefix('@')?.split_once(" #")?;
    let word = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
    (word(domain) && word(code)).then_some(start)
}

/// The text of `body` above its Web OTP line (all of it when it has none):
/// what a call may read.
pub(crate) fn without_web_otp(body: &str) -> &str {
    match web_otp_line(body) {
        Some(start) => &body[..start],
        None => body,
    }
}

/// The longest notification text sent as a WhatsApp template variable, in
/// characters: Meta takes at most 1024 for a template's body, its own words
/// included (a longer text goes by SMS).
pub(crate) const MAX_WHATSAPP_TEXT_CHARS: usize = 900;

/// A notification's text as a WhatsApp template variable: WhatsApp refuses
/// a variable with a line break or a tab, more than 4 spaces in a row
/// (Twilio's 63013) or no text, so every run of white space becomes one
/// space, and the ends are trimmed; the Web OTP line (for SMS autofill) is
/// left out. Refused when nothing visible is left, or it is longer than
/// [`MAX_WHATSAPP_TEXT_CHARS`].
pub(crate) fn whatsapp_text(body: &str) -> Result<String, DeliveryError> {
    let text = without_web_otp(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if !text.chars().any(is_visible) {
        return Err(DeliveryError::BodyEmpty);
    }
    let chars = text.chars().count();
    if chars > MAX_WHATSAPP_TEXT_CHARS {
        return Err(DeliveryError::BodyTooLong { chars });
    }
    Ok(text)
}

/// The SMS body within [`MAX_SMS_CHARS`]: as Kratos wrote it when it fits;
/// a longer one that ends with a Web OTP line loses text above that line
/// (marked with `…`), never the line itself, which stays last exactly as
/// written; any other longer body is refused.
pub(crate) fn fit_sms(body: &str) -> Result<String, DeliveryError> {
    let chars = body.chars().count();
    if chars <= MAX_SMS_CHARS {
        return Ok(body.to_owned());
    }
    let too_long = DeliveryError::BodyTooLong { chars };
    let Some(start) = web_otp_line(body) else {
        return Err(too_long);
    };
    let tail = &body[start..];
    // The text kept above, then "…" and the line break before the line.
    let room = MAX_SMS_CHARS.checked_sub(tail.chars().count() + 2);
    let Some(room) = room.filter(|r| *r > 0) else {
        return Err(too_long);
    };
    let above: String = body[..start].trim_end().chars().take(room).collect();
    Ok(format!("{above}…\n{tail}"))
}

impl Outgoing {
    /// The channel this request goes out on (a fallback call answers an
    /// SMS message, and is charged as the call it is).
    pub(crate) fn channel(&self) -> Channel {
        match self {
            Outgoing::Sms(_) => Channel::Sms,
            Outgoing::Call(_) => Channel::Voice,
            Outgoing::WhatsApp(_) => Channel::WhatsApp,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_otp_line_is_the_last_non_empty_line_of_that_shape() {
        let body = "Your login code is: 482917\n\n@auth.example.com #482917\n";
        assert_eq!(web_otp_line(body), Some(28));
        assert_eq!(without_web_otp(body), "Your login code is: 482917\n\n");
        assert_eq!(web_otp_line("@auth.example.com #482917"), Some(0));
        assert_eq!(web_otp_line("a\r\n@d #1\r\n"), Some(3));
        for not in [
            "Your login code is: 482917",
            "@auth.example.com #482917\ntext after",
            "@ #482917",
            "@auth.example.com #",
            "@auth example.com #482917",
            "@auth.example.com #48 29",
            "auth.example.com #482917",
        ] {
            assert_eq!(web_otp_line(not), None, "{not:?}");
        }
    }

    #[test]
    fn a_notice_becomes_one_line_fit_for_a_whatsapp_variable() {
        assert_eq!(
            whatsapp_text(
                "An address was changed.\r\n\nIf this wasn't you,\tcontact     support.\n"
            )
            .unwrap(),
            "An address was changed. If this wasn't you, contact support."
        );
        // No line break, tab or run of spaces is left; the Web OTP line
        // is the SMS's.
        let text =
            whatsapp_text("  Hi\u{2003}\u{2003}there\n\n@auth.example.com #482917\n").unwrap();
        assert_eq!(text, "Hi there");
        assert!(matches!(
            whatsapp_text(" \n\t\u{200B} "),
            Err(DeliveryError::BodyEmpty)
        ));
        let long = "é".repeat(MAX_WHATSAPP_TEXT_CHARS);
        assert_eq!(whatsapp_text(&long).unwrap(), long);
        assert!(matches!(
            whatsapp_text(&format!("{long}x")),
            Err(DeliveryError::BodyTooLong { chars: 901 })
        ));
    }

    #[test]
    fn a_long_body_keeps_its_web_otp_line_and_others_are_refused() {
        let tail = "@auth.example.com #482917\n";
        let body = format!("{}\n\n{tail}", "é".repeat(2000));
        let fitted = fit_sms(&body).unwrap();
        assert_eq!(fitted.chars().count(), MAX_SMS_CHARS);
        assert!(fitted.ends_with(&format!("é…\n{tail}")), "{fitted}");
        let short = format!("Your code\n\n{tail}");
        assert_eq!(fit_sms(&short).unwrap(), short);
        assert!(matches!(
            fit_sms(&"x".repeat(MAX_SMS_CHARS + 1)),
            Err(DeliveryError::BodyTooLong { chars: 1601 })
        ));
        // A line that alone leaves no room is refused, not cut.
        let huge = format!("a\n@{} #1", "d".repeat(MAX_SMS_CHARS));
        assert!(matches!(
            fit_sms(&huge),
            Err(DeliveryError::BodyTooLong { .. })
        ));
    }
}
