//! The domain step between a parsed [`CourierMessage`] and the provider:
//! decide the channel, build the SMS or the call, send it, and turn the
//! provider's answer into what Kratos is told.

use std::sync::Arc;
use std::time::Instant;

use crate::clock::Clock;
use crate::config::{Config, CountryPolicy, PolicyConfig};
use crate::delivery::budget::Budget;
pub use crate::delivery::channel::{Channel, Endpoint};
use crate::delivery::compose::Composer;
pub use crate::delivery::compose::{Outgoing, MAX_SMS_CHARS, VALIDITY_RANGE};
use crate::delivery::dedup::{self, Admission, Dedup, Outcome};
use crate::delivery::error::DeliveryError;
use crate::delivery::limits::{client_ip, RateLimits};
use crate::delivery::message::CourierMessage;
pub use crate::delivery::test_numbers::TestMessage;
use crate::delivery::test_numbers::TestNumbers;
use crate::phone::{LineType, Recipient, RecipientCache};
use crate::provider::errors::{self, FailureClass};
use crate::provider::twilio::{Accepted, ProviderError, TwilioClient};
use crate::telemetry::metrics::Metrics;

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

/// Turns courier messages into provider requests and sends them, with the
/// abuse controls in between.
pub struct Courier {
    twilio: TwilioClient,
    composer: Composer,
    policy: PolicyConfig,
    limits: Option<RateLimits>,
    ip_headers: Vec<String>,
    dedup: Dedup,
    budget: Budget,
    test_numbers: TestNumbers,
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
            composer: Composer::new(config),
            metrics,
            daily_total: config.budget.daily_total,
            provider_slots: tokio::sync::Semaphore::new(config.twilio.max_in_flight),
            recipients: RecipientCache::new(100_000),
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
            test_numbers: TestNumbers::new(config.test_numbers.clone()),
        }
    }

    /// Drop abuse-control state that no longer matters (called periodically).
    pub fn prune(&self) {
        if let Some(l) = &self.limits {
            l.prune();
        }
        self.dedup.prune();
    }

    /// Messages to test numbers, newest first.
    pub fn test_messages(&self) -> Vec<TestMessage> {
        self.test_numbers.messages()
    }

    /// The whole pipeline for one message: test numbers, checks, policy,
    /// deduplication, rate limits, budget, provider.
    pub async fn deliver(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Delivered, DeliveryError> {
        if let Some(to) = self.test_numbers.matching(&message.recipient) {
            let channel = self.channel_for(endpoint, message);
            return Ok(Delivered {
                channel,
                sid: Some(self.test_numbers.record(to, channel, message)),
                duplicate: false,
                test: true,
                masked_recipient: "test-number".to_owned(),
            });
        }
        let prepared = self.prepare(endpoint, message)?;
        let masked = prepared.recipient.masked();
        check_policy(&self.policy, &prepared)?;
        let flight = match self.dedup.admit(
            prepared.channel,
            &prepared.recipient,
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
                return Err(DeliveryError::RecipientUnreachable { provider_code })
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
                    // The first copy's request was cancelled before it knew:
                    // Kratos retries this one.
                    Outcome::Abandoned => Err(DeliveryError::ProviderUnavailable {
                        provider_code: None,
                        retry_after: 1,
                    }),
                };
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
                let e = DeliveryError::RateLimited {
                    limit: limited.limit.as_str(),
                    channel: prepared.channel,
                    retry_after: limited.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                };
                flight.finish(Outcome::Failed(e.clone()), None);
                return Err(e);
            }
        }
        let Ok(_slot) = self.provider_slots.try_acquire() else {
            flight.finish(Outcome::Failed(DeliveryError::NoProviderSlot), None);
            return Err(DeliveryError::NoProviderSlot);
        };
        let reservation = match self.budget.reserve(prepared.recipient.calling_code()) {
            Ok(r) => r,
            Err(exhausted) => {
                let e = DeliveryError::BudgetExhausted {
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
                    errors::metric_label(provider.provider_code()),
                    provider.class().as_str(),
                );
                let e = delivery_error(&provider);
                let permanent = errors::remembers_unreachable(provider.provider_code())
                    .then_some(provider.provider_code());
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

    pub fn twilio(&self) -> &TwilioClient {
        &self.twilio
    }

    /// The channel a message goes out on (see [`Composer::channel_for`]).
    pub fn channel_for(&self, endpoint: Endpoint, message: &CourierMessage) -> Channel {
        self.composer.channel_for(endpoint, message)
    }

    /// Check the message and build the provider request; nothing is sent.
    pub fn prepare(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Prepared, DeliveryError> {
        let recipient = self
            .recipients
            .parse(&message.recipient)
            .map_err(DeliveryError::InvalidRecipient)?;
        let channel = self.channel_for(endpoint, message);
        let outgoing = self.composer.compose(channel, &recipient, message)?;
        Ok(Prepared {
            recipient,
            channel,
            outgoing,
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

fn check_policy(policy: &PolicyConfig, prepared: &Prepared) -> Result<(), DeliveryError> {
    let r = &prepared.recipient;
    if policy.refuse_premium
        && matches!(r.line_type(), LineType::PremiumRate | LineType::SharedCost)
    {
        return Err(DeliveryError::RecipientNotAllowed {
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
        return Err(DeliveryError::RecipientNotAllowed {
            reason: "the destination country is not in policy.*.allowed_countries",
        });
    }
    if region.is_some_and(|reg| countries.denied_countries.iter().any(|c| c == reg)) {
        return Err(DeliveryError::RecipientNotAllowed {
            reason: "the destination country is in policy.*.denied_countries",
        });
    }
    Ok(())
}

/// What a provider failure means for the delivery.
pub fn delivery_error(e: &ProviderError) -> DeliveryError {
    match e.class() {
        FailureClass::Recipient => DeliveryError::RecipientUnreachable {
            provider_code: e.provider_code(),
        },
        FailureClass::Configuration => DeliveryError::ProviderConfiguration {
            provider_code: e.provider_code(),
            http_status: match e {
                ProviderError::Rejected { status, .. } => Some(*status),
                _ => None,
            },
        },
        FailureClass::Transient => DeliveryError::ProviderUnavailable {
            provider_code: e.provider_code(),
            // Kratos retries about a second later whatever we say; a
            // provider's own Retry-After is passed on for other callers.
            retry_after: e.retry_after().unwrap_or(1).clamp(1, 3600),
        },
    }
}
