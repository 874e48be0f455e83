//! The provider stage: the provider calls, in a task of their own, and what
//! follows from the answer (the ledger settled, the quota kept or refunded,
//! an unreachable recipient remembered, metrics).
//!
//! Every send goes through [`SendJob`], whatever asked for it, so failover
//! applies to all of them: the providers are tried in order of preference;
//! a failure that is certainly transient (a 5xx or 429 answered before the
//! provider took the message, a refused connection) passes the message to
//! the next provider in the same request, and so does an open circuit. A
//! recipient or configuration refusal ends the send (the number is wrong
//! everywhere; an operator must look), and so does an uncertain outcome:
//! the ledger records which provider may have the message, and the retry
//! asks that one before any provider is tried again.

use std::time::{Duration, Instant};

use crate::delivery::channel::Channel;
use crate::delivery::client_ip::ClientAddr;
use crate::delivery::compose::Outgoing;
use crate::delivery::courier::Shared;
use crate::delivery::error::DeliveryError;
use crate::delivery::fallback::{self, Reason, SpokenCode};
use crate::delivery::ledger::Flight;
use crate::phone::Recipient;
use crate::provider::breaker::Permit;
use crate::provider::errors::{self, FailureClass};
use crate::provider::set::Provider;
use crate::provider::twilio::{Accepted, ProviderError};
use crate::store::{Reservation, Settle};
use crate::telemetry::traces::in_span;

/// A failover must end within this much time since the request arrived (a
/// Lookup, a wait for another attempt's claim, a not-mobile SMS and a
/// provider's connect timeout count): Kratos gives a request 10 s, and an
/// answer of ours (503, Kratos retries) beats a cut connection. The next
/// provider gets its whole timeout when it fits, else what is left, if that
/// is at least its connect timeout and a second
/// ([`TwilioClient::shortest_request`](crate::provider::twilio::TwilioClient::shortest_request)):
/// after a primary that drops connections (2 s connect timeout) a
/// secondary with the default 8 s timeout still gets 7 s.
const FAILOVER_WITHIN: Duration = Duration::from_secs(9);

/// One message's provider calls and what follows from their answer.
pub(super) struct SendJob {
    pub(super) flight: Flight,
    pub(super) channel: Channel,
    pub(super) recipient: Recipient,
    pub(super) outgoing: Outgoing,
    pub(super) reservation: Reservation,
    /// Whom the limits counted (a fallback call is counted alike).
    pub(super) client: ClientAddr,
    /// A message without a code (its own limit, not the fraud guard's).
    pub(super) notification: bool,
    /// Why this call stands in for an SMS (`delivery::fallback`); its
    /// ledger outcome says so.
    pub(super) fallback: Option<Reason>,
    /// For an SMS: what speaks its code, for a call if Twilio answers
    /// `NOT_MOBILE` and for an undelivered callback.
    pub(super) spoken: Option<SpokenCode>,
    /// For a WhatsApp message: the SMS that stands in for it, sent at once
    /// if Twilio refuses the message with a code an SMS gets around, and
    /// kept for an undelivered callback (until `stash_until`).
    pub(super) sms: Option<fallback::SmsInstead>,
    /// For an SMS (or a WhatsApp message): keep `spoken` (or `sms`) for an
    /// undelivered callback until then.
    pub(super) stash_until: Option<crate::store::UnixMs>,
    /// When the request that asked for the send arrived (for a callback's
    /// fallback call, when the callback did): the failover deadline.
    pub(super) started: tokio::time::Instant,
    /// The provider an earlier attempt handed the message to, which did
    /// not have it when asked (`ledger::Reconciled::NotFound`): asked first
    /// again, so a retry stays with the provider the first attempt used
    /// unless that one fails for certain.
    pub(super) prefer: Option<String>,
}

/// Why a provider was passed over without a request.
enum Skip {
    CircuitOpen,
    NoSlot,
    NoCallerId,
    NoWhatsApp,
}

impl Skip {
    fn as_str(&self) -> &'static str {
        match self {
            Skip::CircuitOpen => "circuit_open",
            Skip::NoSlot => "no_slot",
            Skip::NoCallerId => "no_caller_id",
            Skip::NoWhatsApp => "no_whatsapp",
        }
    }
}

impl SendJob {
    /// The provider's answer, and why a call stood in for the SMS if one
    /// did (`NOT_MOBILE` answered by a call, `delivery::fallback`).
    pub(super) async fn run(
        mut self,
        shared: &Shared,
    ) -> Result<(Accepted, Option<Reason>), DeliveryError> {
        let started = self.started;
        let count = shared.providers.len();
        let metrics = shared.metrics.providers();
        // What Kratos is told if no provider takes the message.
        let mut refusal = DeliveryError::ProviderUnavailable {
            provider_code: None,
            retry_after: 1,
            uncertain: false,
        };
        // The provider that failed transiently last, for the failover count.
        let mut failed: Option<&str> = None;
        let order = shared.providers.order(self.prefer.as_deref());
        for (i, provider) in order.into_iter().enumerate() {
            // The last provider is always asked: skipping it would answer
            // Kratos no better than its own answer would.
            let last = i + 1 == count;
            let outgoing = match &self.outgoing {
                Outgoing::Sms(sms) => Some(Outgoing::Sms(provider.sms(sms))),
                Outgoing::Call(call) => provider.call(call).map(Outgoing::Call),
                Outgoing::WhatsApp(m) => provider.whatsapp(m).map(Outgoing::WhatsApp),
            };
            // In this order, so that a probe is only taken by a request
            // that will make it.
            let slot = provider.slots.clone().try_acquire_owned().ok();
            let skip = match (&outgoing, &slot) {
                (None, _) if self.channel == Channel::WhatsApp => Some(Skip::NoWhatsApp),
                (None, _) => Some(Skip::NoCallerId),
                (_, None) => Some(Skip::NoSlot),
                _ if provider.breaker.permit() == Permit::Open && !last => Some(Skip::CircuitOpen),
                _ => None,
            };
            let (Some(outgoing), Some(slot), None) = (outgoing, slot, &skip) else {
                let reason = skip.as_ref().map_or("no_slot", Skip::as_str);
                metrics.skipped(&provider.name, reason);
                tracing::debug!(provider = provider.name, reason, "provider skipped");
                if matches!(skip, Some(Skip::NoSlot)) {
                    refusal = DeliveryError::NoProviderSlot;
                }
                continue;
            };
            let mut limit = provider.timeout;
            if i > 0 {
                let left = FAILOVER_WITHIN.saturating_sub(started.elapsed());
                if left < provider.client.shortest_request().min(provider.timeout) {
                    tracing::warn!(
                        provider = provider.name,
                        "no time left to fail over within Kratos's request; Kratos retries"
                    );
                    break;
                }
                limit = limit.min(left);
            }
            if let Some(from) = failed {
                metrics.failover(from, self.channel.as_str());
                tracing::info!(
                    from,
                    to = provider.name,
                    "failing over to the next provider"
                );
            }
            // The lease must cover the whole call, and the record must name
            // this provider: an uncertain outcome is reconciled with it.
            let renewed = shared
                .ledger
                .renew(&self.flight, self.channel, &provider.name)
                .await;
            match renewed {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    self.refund(shared).await;
                    return Err(DeliveryError::ProviderUnavailable {
                        provider_code: None,
                        retry_after: 1,
                        uncertain: false,
                    });
                }
            }
            let sent = self.call(provider, &outgoing, limit).await;
            drop(slot);
            let e = match sent {
                Ok(accepted) => {
                    provider.note_circuit(|| provider.breaker.succeeded());
                    provider.series.request(self.channel.as_str(), "accepted");
                    shared
                        .metrics
                        .sent(self.channel.as_str(), self.recipient.calling_code());
                    // The quota is spent: the provider has the message. A
                    // fallback call's outcome says it stood in for the SMS.
                    let sid = match self.fallback {
                        Some(reason) => {
                            shared.metrics.fallback(reason);
                            fallback::ledger_sid(reason.channel(), accepted.sid.clone())
                        }
                        None => accepted.sid.clone(),
                    };
                    shared
                        .ledger
                        .settle(self.flight, Settle::Accepted { sid })
                        .await;
                    if let (Some(until), Some(spoken)) = (self.stash_until, self.spoken.take()) {
                        shared
                            .keep_stash(accepted.sid.as_deref(), &spoken, until)
                            .await;
                    }
                    if let (Some(until), Some(sms)) = (self.stash_until, self.sms.take()) {
                        shared
                            .keep_sms_stash(accepted.sid.as_deref(), &sms, until)
                            .await;
                    }
                    return Ok((accepted, self.fallback));
                }
                Err(e) => e,
            };
            let transient = e.class() == FailureClass::Transient;
            let outcome = match (e.may_have_been_sent(), e.class()) {
                (true, _) => "uncertain",
                (false, class) => class.as_str(),
            };
            provider.series.request(self.channel.as_str(), outcome);
            shared
                .metrics
                .provider_error(errors::metric_label(e.provider_code()), e.class().as_str());
            tracing::debug!(
                provider = provider.name,
                provider_error = e.kind(),
                provider_code = e.provider_code(),
                "provider refused"
            );
            if transient {
                provider.note_circuit(|| {
                    if provider.breaker.failed() {
                        tracing::warn!(
                            provider = provider.name,
                            "circuit opened: the provider is skipped while others are left"
                        );
                    }
                });
            } else {
                // It answered: it is up, whatever it thought of the message.
                provider.note_circuit(|| provider.breaker.succeeded());
            }
            if e.may_have_been_sent() {
                // The provider may have it: keep the quota, and make the
                // retry ask this provider before anyone sends again.
                shared.ledger.settle(self.flight, Settle::Uncertain).await;
                return Err(DeliveryError::ProviderUnavailable {
                    provider_code: e.provider_code(),
                    retry_after: 1,
                    uncertain: true,
                });
            }
            refusal = delivery_error(&e);
            // WhatsApp cannot deliver it, and an SMS can: the SMS instead,
            // in this flight (`delivery::fallback`).
            if self.channel == Channel::WhatsApp && fallback::sms_gets_around(e.provider_code()) {
                if let Some(kept) = self.sms.take() {
                    let sms =
                        shared
                            .composer
                            .plain_sms(&self.recipient, kept.body, kept.validity_period);
                    let span = tracing::info_span!(
                        "fallback",
                        courier.fallback.reason = Reason::WhatsAppRefused.label()
                    );
                    return in_span!(span, shared.sms_instead(self, sms, &e));
                }
            }
            if transient {
                failed = Some(&provider.name);
                continue;
            }
            // Not a mobile number: the call instead, in this flight
            // (`delivery::fallback`).
            if e.provider_code() == Some(errors::NOT_MOBILE) && shared.fallback.landline {
                let call = self
                    .spoken
                    .take()
                    .and_then(|s| shared.call_for(&self.recipient, &s));
                if let Some(call) = call {
                    let span = tracing::info_span!(
                        "fallback",
                        courier.fallback.reason = Reason::NotMobile.label()
                    );
                    return in_span!(span, shared.call_instead(self, call, &e));
                }
            }
            return Err(self.not_sent(shared, &e, refusal).await);
        }
        self.release(shared).await;
        Err(refusal)
    }

    /// One call to one provider, in its span.
    async fn call(
        &self,
        provider: &Provider,
        outgoing: &Outgoing,
        limit: Duration,
    ) -> Result<Accepted, ProviderError> {
        let channel = self.channel.as_str();
        let span = tracing::info_span!(
            "provider",
            otel.kind = "client",
            provider.name = provider.name.as_str(),
            courier.channel = channel,
            courier.country = self.recipient.region(),
            http.response.status_code = tracing::field::Empty,
            provider.error_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let client = &provider.client;
        let sent = match outgoing {
            Outgoing::Sms(sms) => in_span!(span.clone(), client.send_sms_within(sms, limit)),
            Outgoing::Call(call) => in_span!(span.clone(), client.create_call_within(call, limit)),
            Outgoing::WhatsApp(m) => {
                in_span!(span.clone(), client.send_whatsapp_within(m, limit))
            }
        };
        if let Err(e) = &sent {
            // The provider's error code (bounded by the error table) and our
            // kind of failure; never the answer's text.
            span.record(
                "provider.error_code",
                errors::metric_label(e.provider_code()),
            );
            span.record("error.type", e.kind());
        }
        provider
            .series
            .latency(channel, started.elapsed().as_secs_f64());
        sent
    }

    /// Certainly not sent, for a reason no other provider changes.
    async fn not_sent(
        &self,
        shared: &Shared,
        e: &ProviderError,
        refusal: DeliveryError,
    ) -> DeliveryError {
        self.release(shared).await;
        if errors::remembers_unreachable(e.provider_code()) {
            let remembered = shared
                .ledger
                .remember_unreachable(self.channel, &self.recipient, e.provider_code())
                .await;
            if let Err(e) = remembered {
                tracing::warn!(error = %e, "could not remember an unreachable recipient");
            }
        }
        refusal
    }

    /// Certainly not sent: the retry may send, and pays then.
    async fn release(&self, shared: &Shared) {
        shared.ledger.settle(self.flight, Settle::Release).await;
        self.refund(shared).await;
    }

    async fn refund(&self, shared: &Shared) {
        let now = shared.clock.unix().as_millis() as u64;
        if let Err(e) = shared
            .store
            .refund(self.flight.side, &self.reservation, now)
            .await
        {
            tracing::warn!(error = %e, "could not give back the quota of a message that was not sent");
        }
    }
}

/// What a provider failure means for the delivery.
pub(crate) fn delivery_error(e: &ProviderError) -> DeliveryError {
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
            uncertain: false,
        },
    }
}
