//! The domain step between a parsed [`CourierMessage`] and the provider:
//! decide the channel, build the SMS or the call, send it, and turn the
//! provider's answer into what Kratos is told.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clock::Clock;
use crate::config::{Config, CountryPolicy, PolicyConfig, SmsSender, VoiceConfig};
use crate::delivery::budget::Budget;
use crate::delivery::dedup::{self, Admission, Dedup, Outcome};
use crate::delivery::limits::{client_ip, RateLimits};
use crate::delivery::message::CourierMessage;
use crate::http::answer::ApiError;
use crate::phone::{LineType, NumberingPlan, Recipient, RecipientCache, VERDICT_CACHE_CAPACITY};
use crate::provider::twilio::{
    Accepted, FailureClass, OutgoingCall, OutgoingSms, ProviderError, TwilioClient,
};
use crate::provider::twiml;
use crate::telemetry::metrics::Metrics;

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

/// How a delivery ended well.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub channel: Channel,
    pub sid: Option<String>,
    /// Answered from memory: an identical message was already sent.
    pub duplicate: bool,
    /// A configured test number: nothing was sent.
    pub test: bool,
    /// For the log line.
    pub masked_recipient: String,
}

/// A message to a test number, kept for the operator's own CI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestMessage {
    pub sid: String,
    pub to: String,
    pub channel: &'static str,
    pub template_type: &'static str,
    pub body: String,
    pub code: Option<String>,
}

/// How many test messages are kept.
const TEST_MESSAGES_KEPT: usize = 100;

/// Turns courier messages into provider requests and sends them, with the
/// abuse controls in between.
pub struct Courier {
    twilio: TwilioClient,
    sms_sender: SmsSender,
    voice_from: Option<String>,
    voice: VoiceConfig,
    status_callback: Option<String>,
    policy: PolicyConfig,
    limits: Option<RateLimits>,
    ip_headers: Vec<String>,
    dedup: Dedup,
    budget: Budget,
    test_numbers: Vec<String>,
    test_messages: Mutex<VecDeque<TestMessage>>,
    metrics: Arc<Metrics>,
    daily_total: u32,
    /// Bounds the provider requests in flight (`twilio.max_in_flight`).
    provider_slots: tokio::sync::Semaphore,
    recipients: RecipientCache,
}

impl Courier {
    pub fn new(config: &Config, twilio: TwilioClient, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Courier {
            twilio,
            sms_sender: config.twilio.sms_sender.clone(),
            voice_from: config.twilio.voice_from.clone(),
            voice: config.voice.clone(),
            status_callback: config.status_callback_url.clone(),
            metrics,
            daily_total: config.budget.daily_total,
            provider_slots: tokio::sync::Semaphore::new(config.twilio.max_in_flight),
            recipients: RecipientCache::new(Arc::new(NumberingPlan::new()), VERDICT_CACHE_CAPACITY),
            policy: config.policy.clone(),
            limits: config
                .limits
                .enabled
                .then(|| RateLimits::new(&config.limits.sms, &config.limits.voice, clock.clone())),
            ip_headers: config.limits.ip_headers.clone(),
            dedup: Dedup::new(
                config.dedup.window,
                config.dedup.unreachable,
                config.dedup.max_entries,
                clock.clone(),
            ),
            budget: Budget::new(
                config.budget.daily_total,
                config.budget.daily_per_country,
                config.budget.warn_percent,
                clock,
            ),
            test_numbers: config.test_numbers.clone(),
            test_messages: Mutex::new(VecDeque::new()),
        }
    }

    /// Drop abuse-control state that no longer matters (called periodically).
    pub fn prune(&self) {
        if let Some(l) = &self.limits {
            l.prune();
        }
        self.dedup.prune();
    }

    /// The recipient parser (and, through it, the numbering plan) of this
    /// courier: start-up warms the plan, status callbacks read `To` with it.
    pub fn recipients(&self) -> &RecipientCache {
        &self.recipients
    }

    /// Messages to test numbers, newest first.
    pub fn test_messages(&self) -> Vec<TestMessage> {
        let m = self.test_messages.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().rev().cloned().collect()
    }

    /// The whole pipeline for one message: test numbers, checks, policy,
    /// deduplication, rate limits, budget, provider.
    pub async fn deliver(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Delivered, ApiError> {
        let trimmed = message.recipient.trim();
        if self.test_numbers.iter().any(|n| n == trimmed) {
            return Ok(self.record_test(endpoint, message, trimmed));
        }
        let prepared = self.prepare(endpoint, message)?;
        let masked = prepared.recipient.masked();
        check_policy(&self.policy, &prepared)?;
        let flight = match self.dedup.admit(
            prepared.channel.as_str(),
            prepared.recipient.e164(),
            &message.body,
            message.code.as_deref(),
        ) {
            Admission::Duplicate { sid } => {
                return Ok(Delivered {
                    channel: prepared.channel,
                    sid,
                    duplicate: true,
                    test: false,
                    masked_recipient: masked,
                })
            }
            Admission::KnownUnreachable { provider_code } => {
                return Err(ApiError::RecipientUnreachable { provider_code })
            }
            Admission::Wait(rx) => {
                return match dedup::wait(rx).await {
                    Outcome::Accepted { sid } => Ok(Delivered {
                        channel: prepared.channel,
                        sid,
                        duplicate: true,
                        test: false,
                        masked_recipient: masked,
                    }),
                    Outcome::Failed(e) => Err(e),
                }
            }
            Admission::Send(flight) => flight,
        };
        if let Some(limits) = &self.limits {
            let ip = client_ip(&self.ip_headers, |name| message.request_header(name));
            let keys = limits.keys(
                prepared.recipient.e164(),
                ip,
                prepared.recipient.calling_code(),
            );
            if let Err(limited) = limits.check(prepared.channel, &keys) {
                self.metrics
                    .rate_limited(prepared.channel.as_str(), limited.limit.as_str());
                let e = ApiError::RateLimited {
                    limit: limited.limit.as_str(),
                    channel: prepared.channel.as_str(),
                    retry_after: limited.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                };
                flight.finish(Outcome::Failed(e.clone()), None);
                return Err(e);
            }
        }
        let Ok(_slot) = self.provider_slots.try_acquire() else {
            flight.finish(Outcome::Failed(ApiError::Overloaded), None);
            return Err(ApiError::Overloaded);
        };
        let reservation = match self.budget.reserve(prepared.recipient.calling_code()) {
            Ok(r) => r,
            Err(exhausted) => {
                let e = ApiError::BudgetExhausted {
                    scope: exhausted.scope.as_str(),
                    retry_after: exhausted.retry_after.as_secs().max(1),
                };
                flight.finish(Outcome::Failed(e.clone()), None);
                return Err(e);
            }
        };
        if self.daily_total > 0 {
            let (total, _) = self.budget.used(prepared.recipient.calling_code());
            self.metrics
                .budget_used(f64::from(total) / f64::from(self.daily_total));
        }
        let started = Instant::now();
        let sent = self.send(&prepared).await;
        self.metrics
            .provider_latency(prepared.channel.as_str(), started.elapsed().as_secs_f64());
        match sent {
            Ok(accepted) => {
                self.metrics
                    .sent(prepared.channel.as_str(), prepared.recipient.calling_code());
                // The reservation is spent: the provider has the message.
                drop(reservation);
                flight.finish(
                    Outcome::Accepted {
                        sid: accepted.sid.clone(),
                    },
                    None,
                );
                Ok(Delivered {
                    channel: prepared.channel,
                    sid: accepted.sid,
                    duplicate: false,
                    test: false,
                    masked_recipient: masked,
                })
            }
            Err(provider) => {
                self.budget.release(reservation);
                self.metrics.provider_error(
                    provider.provider_code(),
                    match provider.class() {
                        FailureClass::Recipient => "recipient",
                        FailureClass::Configuration => "configuration",
                        FailureClass::Transient => "transient",
                    },
                );
                let e = provider_error_to_api(&provider);
                let permanent = provider
                    .provider_code()
                    .filter(|c| PERMANENT_RECIPIENT_CODES.contains(c))
                    .map(Some);
                flight.finish(Outcome::Failed(e.clone()), permanent);
                tracing::debug!(
                    provider_error = provider.kind(),
                    provider_code = provider.provider_code(),
                    "provider refused"
                );
                Err(e)
            }
        }
    }

    fn record_test(&self, endpoint: Endpoint, message: &CourierMessage, to: &str) -> Delivered {
        let channel = self.channel_for(endpoint, message);
        let mut hex = [0u8; 16];
        rand::fill(&mut hex);
        let prefix = match channel {
            Channel::Sms => "SM",
            Channel::Voice => "CA",
        };
        let sid = format!(
            "{prefix}{}",
            hex.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut m = self.test_messages.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= TEST_MESSAGES_KEPT {
            m.pop_front();
        }
        m.push_back(TestMessage {
            sid: sid.clone(),
            to: to.to_owned(),
            channel: channel.as_str(),
            template_type: message.template_type.label(),
            body: message.body.clone(),
            code: message.code.clone(),
        });
        Delivered {
            channel,
            sid: Some(sid),
            duplicate: false,
            test: true,
            masked_recipient: "test-number".to_owned(),
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
        let recipient = self
            .recipients
            .parse(&message.recipient)
            .map_err(ApiError::InvalidRecipient)?;
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
        if !message.body.chars().any(is_visible) {
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

/// Whether a character shows: not white space and not an invisible format
/// character (zero-width spaces and joiners, BOM, bidi marks, soft hyphen).
fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
        || c.is_control())
}

/// Twilio codes after which the recipient is not tried again for a while.
pub const PERMANENT_RECIPIENT_CODES: &[u32] = &[21211, 21612, 21614, 21610];

fn check_policy(policy: &PolicyConfig, prepared: &Prepared) -> Result<(), ApiError> {
    let r = &prepared.recipient;
    if policy.refuse_premium
        && matches!(r.line_type(), LineType::PremiumRate | LineType::SharedCost)
    {
        return Err(ApiError::RecipientNotAllowed {
            reason: "premium-rate and shared-cost numbers are refused (policy.refuse_premium)",
        });
    }
    let countries: &CountryPolicy = match prepared.channel {
        Channel::Sms => &policy.sms,
        Channel::Voice => &policy.voice,
    };
    let region = r.region();
    if !countries.allowed_countries.is_empty()
        && !region.is_some_and(|reg| countries.allowed_countries.iter().any(|c| c == reg))
    {
        return Err(ApiError::RecipientNotAllowed {
            reason: "the destination country is not in policy.*.allowed_countries",
        });
    }
    if region.is_some_and(|reg| countries.denied_countries.iter().any(|c| c == reg)) {
        return Err(ApiError::RecipientNotAllowed {
            reason: "the destination country is in policy.*.denied_countries",
        });
    }
    Ok(())
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
