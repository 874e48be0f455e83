//! The provider stage: one provider call, in a task of its own, and what
//! follows from its answer (the ledger settled, the quota kept or refunded,
//! an unreachable recipient remembered, metrics).

use std::time::Instant;

use crate::delivery::channel::Channel;
use crate::delivery::client_ip::ClientAddr;
use crate::delivery::compose::Outgoing;
use crate::delivery::courier::Shared;
use crate::delivery::error::DeliveryError;
use crate::delivery::fallback::{self, Reason, Stash};
use crate::delivery::ledger::Flight;
use crate::phone::Recipient;
use crate::provider::errors::{self, FailureClass};
use crate::provider::twilio::{Accepted, OutgoingCall, ProviderError};
use crate::store::{Reservation, Settle};
use crate::telemetry::traces::in_span;

/// One provider call and what follows from its answer.
pub(super) struct SendJob {
    pub(super) flight: Flight,
    pub(super) channel: Channel,
    pub(super) recipient: Recipient,
    pub(super) outgoing: Outgoing,
    pub(super) reservation: Reservation,
    /// Whom the limits counted (a fallback call is counted alike).
    pub(super) client: ClientAddr,
    /// Why this call stands in for an SMS (`delivery::fallback`); its
    /// ledger outcome says so.
    pub(super) fallback: Option<Reason>,
    /// For an SMS: the call to place instead if Twilio answers 21614.
    pub(super) fallback_call: Option<OutgoingCall>,
    /// For an SMS: what to keep for an undelivered callback.
    pub(super) stash: Option<Stash>,
}

impl SendJob {
    /// The provider's answer, and why a call stood in for the SMS if one
    /// did (21614 answered by a call).
    pub(super) async fn run(
        mut self,
        shared: &Shared,
    ) -> Result<(Accepted, Option<Reason>), DeliveryError> {
        let channel = self.channel.as_str();
        let span = tracing::info_span!(
            "provider",
            otel.kind = "client",
            provider.name = "twilio",
            courier.channel = channel,
            courier.country = self.recipient.region(),
            http.response.status_code = tracing::field::Empty,
            provider.error_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let sent = match &self.outgoing {
            Outgoing::Sms(sms) => in_span!(span.clone(), shared.twilio.send_sms(sms)),
            Outgoing::Call(call) => in_span!(span.clone(), shared.twilio.create_call(call)),
        };
        if let Err(e) = &sent {
            // Twilio's error code (bounded by the error table) and our kind
            // of failure; never the answer's text.
            span.record(
                "provider.error_code",
                errors::metric_label(e.provider_code()),
            );
            span.record("error.type", e.kind());
        }
        shared
            .metrics
            .provider_latency(channel, started.elapsed().as_secs_f64());
        let ledger = &shared.ledger;
        let provider = match sent {
            Ok(accepted) => {
                shared.metrics.sent(channel, self.recipient.calling_code());
                // The quota is spent: the provider has the message. A
                // fallback call's outcome says it stood in for the SMS.
                let sid = match self.fallback {
                    Some(reason) => {
                        shared.metrics.fallback(reason.label());
                        fallback::ledger_sid(accepted.sid.clone())
                    }
                    None => accepted.sid.clone(),
                };
                ledger.settle(self.flight, Settle::Accepted { sid }).await;
                if let Some(stash) = self.stash.take() {
                    shared.keep_stash(accepted.sid.as_deref(), stash).await;
                }
                return Ok((accepted, self.fallback));
            }
            Err(provider) => provider,
        };
        shared.metrics.provider_error(
            errors::metric_label(provider.provider_code()),
            provider.class().as_str(),
        );
        tracing::debug!(
            provider_error = provider.kind(),
            provider_code = provider.provider_code(),
            "provider refused"
        );
        if provider.may_have_been_sent() {
            // The provider may have it: keep the quota, and make the retry
            // ask the provider before sending again.
            ledger.settle(self.flight, Settle::Uncertain).await;
            return Err(DeliveryError::ProviderUnavailable {
                provider_code: provider.provider_code(),
                retry_after: 1,
            });
        }
        // Certainly not sent. Not a mobile number: the call instead, in
        // this flight (`delivery::fallback`).
        if provider.provider_code() == Some(fallback::NOT_MOBILE) {
            if let Some(call) = self.fallback_call.take() {
                let span = tracing::info_span!(
                    "fallback",
                    courier.fallback.reason = Reason::NotMobile.label()
                );
                return in_span!(span, shared.call_instead(self, call, &provider));
            }
        }
        // The retry may send, and pays then.
        ledger.settle(self.flight, Settle::Release).await;
        let now = shared.clock.unix().as_millis() as u64;
        if let Err(e) = shared
            .store
            .refund(self.flight.side, &self.reservation, now)
            .await
        {
            tracing::warn!(error = %e, "could not give back the quota of a message that was not sent");
        }
        if errors::remembers_unreachable(provider.provider_code()) {
            if let Err(e) = ledger
                .remember_unreachable(self.channel, &self.recipient, provider.provider_code())
                .await
            {
                tracing::warn!(error = %e, "could not remember an unreachable recipient");
            }
        }
        Err(delivery_error(&provider))
    }
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
