//! The delivery pipeline, stage by stage:
//!
//! ```text
//! admission ─► ledger ─► quota ─► provider ─► settle
//! (test numbers,  (claim, wait,   (slot, then   (own task:  (ledger outcome;
//!  recipient,      reconcile)      limits and    outlives    quota kept or
//!  policy,                         budget        the         refunded)
//!  composition)                    reserved)     request)
//! ```
//!
//! Every refusal before the provider call is certain ("not sent"), so it
//! releases the ledger claim and takes no quota; the quota is kept only when
//! the provider accepted the message or may have it.

use std::sync::Arc;

use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{Config, CountryPolicy, FallbackConfig, PolicyConfig};
use crate::delivery::budget::Budget;
pub use crate::delivery::channel::{Channel, Endpoint};
use crate::delivery::client_ip::{ClientAddr, ClientIp};
use crate::delivery::compose::Composer;
pub use crate::delivery::compose::{Outgoing, MAX_SMS_CHARS, VALIDITY_RANGE};
use crate::delivery::error::DeliveryError;
use crate::delivery::fallback::{self, Reason, SpokenCode};
use crate::delivery::fraud::FraudGuard;
use crate::delivery::ledger::{Admission, Ledger};
use crate::delivery::limits::{Limits, Prefixes};
use crate::delivery::message::CourierMessage;
use crate::delivery::send::SendJob;
pub use crate::delivery::test_numbers::TestMessage;
use crate::delivery::test_numbers::TestNumbers;
use crate::lookup::{Lookup, Refusal as LookupRefusal, Verdict};
use crate::phone::{LineType, NumberingPlan, Recipient, RecipientCache, VERDICT_CACHE_CAPACITY};
use crate::provider::set::ProviderSet;
use crate::provider::twilio::TwilioClient;
use crate::store::{Keys, Refusal, Reservation, Settle, Side, Store, UnixMs};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::in_span;

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
    /// A call stood in for the SMS asked for (`delivery::fallback`).
    pub fallback: bool,
}

/// Turns courier messages into provider requests and sends them, with the
/// abuse controls in between.
pub struct Courier {
    /// Shared with the send tasks, which outlive requests.
    shared: Arc<Shared>,
    policy: PolicyConfig,
    client_ip: ClientIp,
    test_numbers: TestNumbers,
    recipients: RecipientCache,
    /// The Twilio Lookup policy (`lookup`); `None` when `lookup.enabled` is
    /// false.
    lookup: Option<Lookup>,
    /// Keep SMS fallback records: `fallback.voice_on` has "undelivered" and
    /// status callbacks are configured (nothing would report otherwise).
    keep_for_undelivered: bool,
}

/// What a send task needs after its request is gone.
pub(super) struct Shared {
    /// Every provider, in order of preference; every send goes through them.
    pub(super) providers: ProviderSet,
    /// The store's keys (fallback records are sealed with them).
    pub(super) keys: Keys,
    /// Which fallbacks are on (`[fallback]`).
    pub(super) fallback: FallbackConfig,
    /// Composes provider requests; here, not on the courier, because a
    /// fallback call is composed in the send task (after a 21614, or for a
    /// status callback).
    pub(super) composer: Composer,
    pub(super) ledger: Ledger,
    pub(super) store: Arc<Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: Clock,
    /// `None` when `limits.enabled` is false.
    pub(super) limits: Option<Limits>,
    pub(super) budget: Budget,
    /// Counts codes sent and confirmed; with `fraud.action = "deny"`,
    /// refuses codes to suspect destinations.
    pub(super) fraud: FraudGuard,
    /// Every send task, so shutdown can wait for those whose request is
    /// gone (Kratos hung up): a send cut off at exit is an uncertain outcome
    /// for the next replica to reconcile, a finished one is an answer.
    pub(super) tasks: tokio_util::task::TaskTracker,
}

impl Courier {
    pub fn new(
        config: &Config,
        providers: ProviderSet,
        lookup: Option<Lookup>,
        store: Arc<Store>,
        keys: Keys,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ledger = Ledger::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            providers.longest_timeout(),
            config.dedup.window,
            config.dedup.unreachable,
        );
        let prefixes = Prefixes::new(config.limits.prefix_hidden_digits);
        let fraud = FraudGuard::new(
            config.fraud.clone(),
            prefixes,
            keys.clone(),
            metrics.clone(),
        );
        Courier {
            shared: Arc::new(Shared {
                fraud,
                providers,
                keys: keys.clone(),
                fallback: config.fallback,
                composer: Composer::new(config),
                ledger,
                store,
                metrics,
                clock: clock.clone(),
                limits: config.limits.enabled.then(|| {
                    Limits::new(
                        config.limits.sms,
                        config.limits.voice,
                        Prefixes::new(config.limits.prefix_hidden_digits),
                        keys,
                    )
                }),
                budget: Budget::new(
                    config.budget.daily_total,
                    config.budget.daily_per_country,
                    config.budget.warn_percent,
                    clock,
                ),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
            recipients: RecipientCache::new(Arc::new(NumberingPlan::new()), VERDICT_CACHE_CAPACITY),
            policy: config.policy.clone(),
            lookup,
            client_ip: ClientIp::new(config.limits.client_ip.clone()),
            test_numbers: TestNumbers::new(config.test_numbers.clone()),
            keep_for_undelivered: config.fallback.undelivered
                && config.status_callback_url.is_some(),
        }
    }

    /// Drop abuse-control state that no longer matters (called periodically).
    pub fn prune(&self) {
        self.shared.store.prune();
    }

    /// The recipient parser (and, through it, the numbering plan) of this
    /// courier: start-up warms the plan, status callbacks read `To` with it.
    pub fn recipients(&self) -> &RecipientCache {
        &self.recipients
    }

    /// The store behind the ledger, limits and budget.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Kratos reports a code to `recipient` used (`POST
    /// /v1/kratos/confirmed`): counted when a code sent to that number is
    /// outstanding. `Ok(false)`: not counted (not a valid number, or never
    /// sent to).
    pub async fn confirmed(&self, recipient: &str) -> Result<bool, DeliveryError> {
        let Ok(recipient) = self.recipients.parse(recipient) else {
            self.shared.metrics.fraud().ignored("invalid");
            return Ok(false);
        };
        self.confirmed_recipient(&recipient).await
    }

    /// A code to `recipient` was used (Kratos's hook, or the verify API's
    /// approval): the fraud guard's conversion count, as [`Self::confirmed`].
    pub async fn confirmed_recipient(&self, recipient: &Recipient) -> Result<bool, DeliveryError> {
        let now = self.shared.now();
        Ok(self
            .shared
            .fraud
            .confirmed(&self.shared.store, recipient, now)
            .await?)
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
        let started = tokio::time::Instant::now();
        // The error code is on the request's span (http::answer owns codes).
        let admission = tracing::info_span!("admission", courier.country = tracing::field::Empty);
        if let Some(to) = self.test_numbers.matching(&message.recipient) {
            let channel = self.channel_for(endpoint, message);
            return Ok(Delivered {
                channel,
                sid: Some(self.test_numbers.record(to, channel, message)),
                duplicate: false,
                test: true,
                masked_recipient: "test-number".to_owned(),
                fallback: false,
            });
        }
        // Admission.
        let prepared = admission.in_scope(|| {
            let prepared = self.prepare(endpoint, message);
            if let Ok(p) = &prepared {
                admission.record("courier.country", p.recipient.region());
            }
            prepared.and_then(|p| check_policy(&self.policy, &p).map(|()| p))
        })?;
        drop(admission);
        let Prepared {
            recipient,
            channel,
            outgoing,
        } = prepared;
        // Twilio Lookup (`lookup`): a refusal is certain "not sent", before
        // the ledger and the quota; the cache answers Kratos's retries.
        let verdict = match &self.lookup {
            Some(lookup) => lookup
                .decide(recipient.e164(), &message.template_type)
                .instrument(tracing::info_span!("lookup"))
                .await
                .map_err(refused)?,
            None => Verdict::NoOpinion,
        };
        // The line type's action is "voice": the SMS becomes a call, as a
        // landline's does.
        let lookup_calls = channel == Channel::Sms && verdict == Verdict::Voice;
        let ledger = &self.shared.ledger;
        // A code that cannot arrive by SMS is spoken instead
        // (`delivery::fallback`): the call it would be, if voice may take it.
        let voice = (channel == Channel::Sms && (self.shared.fallback.any() || lookup_calls))
            .then(|| self.fallback_code(&recipient, message))
            .flatten();
        let mut fallback_reason = None;
        if let Some(provider_code) = ledger.known_unreachable(channel, &recipient).await? {
            // Twilio said "not a mobile number" before: the retry (or the
            // next message) goes to voice at once.
            match (&voice, provider_code) {
                (Some(_), Some(fallback::NOT_MOBILE)) if self.shared.fallback.landline => {
                    fallback_reason = Some(Reason::NotMobile)
                }
                _ => return Err(DeliveryError::RecipientUnreachable { provider_code }),
            }
        }
        // Lookup's line type, when it has one, overrides the numbering
        // plan's guess (Twilio knows ported numbers).
        let plan_says_landline = verdict == Verdict::NoOpinion
            && self.shared.fallback.landline
            && recipient.line_type() == LineType::FixedLine;
        if fallback_reason.is_none() && (lookup_calls || plan_says_landline) && voice.is_some() {
            fallback_reason = Some(Reason::Landline);
        }
        if fallback_reason.is_some() {
            // The call is the message now: a number voice cannot reach is
            // refused as such.
            if let Some(provider_code) =
                ledger.known_unreachable(Channel::Voice, &recipient).await?
            {
                return Err(DeliveryError::RecipientUnreachable { provider_code });
            }
        }
        // The call itself is composed only when it is placed: most SMS
        // never need one, and its TwiML is most of a fallback's cost.
        let (outgoing, spoken, stash_until) = match (fallback_reason, voice) {
            (Some(_), Some(_)) => (
                self.shared
                    .composer
                    .compose(Channel::Voice, &recipient, message)?,
                None,
                None,
            ),
            (_, Some(spoken)) => {
                let until = self
                    .keep_for_undelivered
                    .then(|| fallback::stash_until(message.expires_in_minutes, self.shared.now()))
                    .flatten();
                // Kept for a 21614 (the call in the same request) and for
                // an undelivered callback.
                let keep = self.shared.fallback.landline || until.is_some();
                (outgoing, keep.then_some(spoken), until)
            }
            (_, None) => (outgoing, None, None),
        };
        let delivered = |sid, duplicate, fallback: bool| Delivered {
            channel: if fallback { Channel::Voice } else { channel },
            sid,
            duplicate,
            test: false,
            masked_recipient: recipient.masked(),
            fallback,
        };
        // Everything from the ledger claim on runs in a task of its own: if
        // Kratos hangs up, the claim is still settled, the quota kept or
        // given back and the send completed, and the retry finds its outcome.
        let shared = self.shared.clone();
        let admitted = Admitted {
            channel,
            recipient: recipient.clone(),
            outgoing,
            body: message.body.clone(),
            code: message.ledger_code(),
            client: self.client_ip.of(message),
            fallback: fallback_reason,
            spoken,
            stash_until,
            started,
        };
        // Boxed: the task's future is a few KB, and a pointer is cheaper to
        // move into the task than the future itself (bench/notes.md).
        // The task's spans are children of the request's, also after Kratos
        // hung up. Boxed first, so that the span wraps a pointer, not the
        // future.
        let span = tracing::Span::current();
        let tasks = &self.shared.tasks;
        let (sid, duplicate, fallback) = tasks
            .spawn(Box::pin(async move { shared.deliver(admitted).await }).instrument(span))
            .await
            // A task that panicked leaves nothing known: its ledger record
            // expires into Uncertain and is reconciled on the retry.
            .unwrap_or(Err(DeliveryError::ProviderUnavailable {
                provider_code: None,
                retry_after: 1,
            }))?;
        Ok(delivered(sid, duplicate, fallback))
    }

    /// What a call speaking this SMS's code needs, to place it if the SMS
    /// cannot arrive; `None` when the message carries no speakable code, no
    /// caller id is configured, or voice may not take the number
    /// (`policy.voice`).
    fn fallback_code(&self, recipient: &Recipient, message: &CourierMessage) -> Option<SpokenCode> {
        let code = message.code.as_deref()?;
        if !self.shared.composer.can_speak(code) {
            return None;
        }
        check_policy_for(&self.policy, recipient, Channel::Voice).ok()?;
        let spoken = SpokenCode {
            to: recipient.e164().to_owned(),
            code: code.to_owned(),
            template: message.template_type.label().to_owned(),
            language: message
                .request_header("accept-language")
                .map(|l| l.chars().take(64).collect()),
            client: self.client_ip.of(message),
        };
        Some(spoken)
    }

    /// A status callback reported a message's status: an undelivered SMS
    /// may be called instead (`delivery::fallback`).
    pub async fn status_reported(&self, sid: &str, status: &str, error_code: Option<u32>) {
        if matches!(status, "undelivered" | "failed") && !sid.is_empty() {
            fallback::undelivered(&self.shared, &self.recipients, sid, error_code).await;
        }
    }

    /// Resolves when every send task has finished; new sends may still
    /// start (and are waited for too). For shutdown, after the listener is
    /// closed.
    pub async fn sends_finished(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// The first provider's client, for what only it is asked (the relay's
    /// forwarding uses its own).
    pub fn twilio(&self) -> &TwilioClient {
        &self
            .shared
            .providers
            .named(None)
            .expect("at least one provider")
            .client
    }

    /// Every provider, in order of preference.
    pub fn providers(&self) -> &ProviderSet {
        &self.shared.providers
    }

    /// The channel a message goes out on (see [`Composer::channel_for`]).
    pub fn channel_for(&self, endpoint: Endpoint, message: &CourierMessage) -> Channel {
        self.shared.composer.channel_for(endpoint, message)
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
        let outgoing = self.shared.composer.compose(channel, &recipient, message)?;
        Ok(Prepared {
            recipient,
            channel,
            outgoing,
        })
    }
}

/// A message that passed admission, owned, for the delivery task.
pub(super) struct Admitted {
    /// The channel the ledger knows the message by (a fallback call keeps
    /// its SMS's); the channel sent on is `outgoing`'s.
    pub(super) channel: Channel,
    pub(super) recipient: Recipient,
    pub(super) outgoing: Outgoing,
    pub(super) body: String,
    pub(super) code: Option<String>,
    pub(super) client: ClientAddr,
    /// Why `outgoing` is a call standing in for an SMS.
    pub(super) fallback: Option<Reason>,
    /// For an SMS: what speaks its code, for a call if Twilio answers
    /// 21614 and for an undelivered callback.
    pub(super) spoken: Option<SpokenCode>,
    /// For an SMS: keep `spoken` for an undelivered callback until then
    /// (the code's end).
    pub(super) stash_until: Option<UnixMs>,
    /// When the request arrived: the failover deadline counts from it.
    pub(super) started: tokio::time::Instant,
}

impl Shared {
    /// Ledger, quota, provider, settle: the sid, whether it was sent
    /// already, and whether a call stood in for the SMS.
    pub(super) async fn deliver(
        &self,
        m: Admitted,
    ) -> Result<(Option<String>, bool, bool), DeliveryError> {
        let ledger = &self.ledger;
        let (flight, reconciled) = match in_span!(
            tracing::info_span!("ledger"),
            ledger.admit(
                m.channel,
                &m.recipient,
                &m.body,
                m.code.as_deref(),
                &m.outgoing,
                &self.providers,
            )
        )? {
            Admission::Duplicate { sid } => {
                let (sid, fallback) = fallback::from_ledger(sid);
                return Ok((sid, true, fallback));
            }
            Admission::Send { flight, reconciled } => (flight, reconciled),
        };
        let watch = self.fraud.watch(&m.recipient);
        if let Err(e) = self.fraud.check(&self.store, &watch, self.now()).await {
            ledger.settle(flight, Settle::Release).await;
            return Err(e);
        }
        // Quota: the cheap refusal (no provider slot) first, then every
        // limit and the budget at once. An attempt that reconciled found
        // that an earlier, uncertain one was not sent: that one kept its
        // quota, which now pays for this send.
        // (Each provider's own slot is taken in the send; this is the early
        // refusal when none has one.)
        if self
            .providers
            .iter()
            .all(|p| p.slots.available_permits() == 0)
        {
            ledger.settle(flight, Settle::Release).await;
            return Err(DeliveryError::NoProviderSlot);
        }
        let reserved = if reconciled {
            Ok(Reservation {
                cells: Vec::new(),
                budget: None,
            })
        } else {
            in_span!(
                tracing::info_span!("limits"),
                self.reserve(flight.side, m.outgoing.channel(), &m.recipient, m.client)
            )
        };
        let reservation = match reserved {
            Ok(r) => r,
            Err(e) => {
                ledger.settle(flight, Settle::Release).await;
                return Err(e);
            }
        };
        let landline_call = m.fallback.is_some() && m.fallback != Some(Reason::Undelivered);
        let span = landline_call.then(|| {
            tracing::info_span!(
                "fallback",
                courier.fallback.reason = m.fallback.map(Reason::label)
            )
        });
        let job = SendJob {
            flight,
            channel: m.outgoing.channel(),
            recipient: m.recipient,
            outgoing: m.outgoing,
            reservation,
            client: m.client,
            fallback: m.fallback,
            spoken: m.spoken,
            stash_until: m.stash_until,
            started: m.started,
        };
        let sent = match span {
            Some(span) => in_span!(span, job.run(self)),
            None => job.run(self).await,
        };
        // A 21614 answered by a call comes back as the call.
        let (sent, fallback) = sent?;
        // The code was counted when its SMS was sent.
        if m.fallback != Some(Reason::Undelivered) {
            self.fraud.sent(&self.store, &watch, self.now()).await;
        }
        Ok((sent.sid, false, fallback.is_some()))
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.unix().as_millis() as u64
    }

    /// Reserve every limit's cell and a unit of budget, or nothing.
    pub(super) async fn reserve(
        &self,
        side: Side,
        channel: Channel,
        recipient: &Recipient,
        client: ClientAddr,
    ) -> Result<Reservation, DeliveryError> {
        let cells = self
            .limits
            .as_ref()
            .map(|l| l.cells(channel, recipient, client))
            .unwrap_or_default();
        let take = self.budget.take(recipient.calling_code());
        let now = self.clock.unix().as_millis() as u64;
        let store = &self.store;
        match store.reserve(side, &cells, take, now).await? {
            Ok(reservation) => {
                if let Some(take) = take {
                    if let Ok(used) = store.budget_used(take.day, take.calling_code).await {
                        if let Some(ratio) = self.budget.used_ratio(used) {
                            self.metrics.budget_used(ratio);
                        }
                        self.budget.warn_if_crossed(used, take.calling_code);
                    }
                }
                Ok(reservation)
            }
            Err(Refusal::Limited {
                limiter,
                retry_after,
            }) => {
                self.metrics
                    .rate_limited(channel.as_str(), limiter.name.as_str());
                Err(DeliveryError::RateLimited {
                    limit: limiter.name.as_str(),
                    channel,
                    retry_after: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
            Err(Refusal::Budget { scope }) => Err(DeliveryError::BudgetExhausted {
                scope: scope.as_str(),
                retry_after: self.budget.until_midnight().as_secs().max(1),
            }),
        }
    }
}

/// A Lookup refusal as the pipeline's error (`http::answer` owns codes).
fn refused(r: LookupRefusal) -> DeliveryError {
    match r {
        LookupRefusal::LineType(line_type) => DeliveryError::LineTypeRefused { line_type },
        LookupRefusal::SimSwap => DeliveryError::SimSwapSuspected,
        LookupRefusal::PumpingRisk => DeliveryError::SmsPumpingRisk,
        LookupRefusal::Unavailable => DeliveryError::LookupUnavailable { retry_after: 1 },
    }
}

fn check_policy(policy: &PolicyConfig, prepared: &Prepared) -> Result<(), DeliveryError> {
    check_policy_for(policy, &prepared.recipient, prepared.channel)
}

/// The policy for a recipient on a channel (also asked of an SMS's
/// fallback call before it is composed).
fn check_policy_for(
    policy: &PolicyConfig,
    r: &Recipient,
    channel: Channel,
) -> Result<(), DeliveryError> {
    if policy.refuse_premium
        && matches!(r.line_type(), LineType::PremiumRate | LineType::SharedCost)
    {
        return Err(DeliveryError::RecipientNotAllowed {
            reason: "premium-rate and shared-cost numbers are refused (policy.refuse_premium)",
        });
    }
    let countries: &CountryPolicy = match channel {
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
