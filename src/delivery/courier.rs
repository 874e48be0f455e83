//! The delivery pipeline. A message meets every check, and every call
//! that costs money, in this order:
//!
//! | # | step | I/O | refusal |
//! |---|---|---|---|
//! | 0 | test numbers (`test_numbers`) | none | (answered, nothing sent) |
//! | 1 | recipient: E.164, a dialable number | none | 422 |
//! | 2 | channel asked for, policy (countries, premium), composition | none | 422 |
//! | 3 | recipients a provider called unreachable | store read | 422 |
//! | 4 | **ledger**: claim, or answer a duplicate, or wait for another attempt, or reconcile an uncertain one with exactly the channel and provider it used | store; a provider *list* read (free) when reconciling | 503 |
//! | 5 | fraud guard (not for a notification: a message without a code) | store read | 429 |
//! | 6 | a free provider slot somewhere | none | 503 |
//! | 7 | **quota**: every rate limit and the budget, taken together or not at all (a notification: `limits.*.notification` instead of `recipient`) | one atomic store call | 429 |
//! | 8 | Twilio **Lookup** (billed; cached per number; its own hourly cap, `lookup.max_per_hour`); may turn an SMS into a call, whose quota then replaces the SMS's | Lookup API | 422, 503 |
//! | 9 | a call standing in for an SMS: a number voice cannot reach | store read | 422 |
//! | 10 | **provider walk** (billed): each provider in order, failover on certain transient failures | Messages/Calls API | 422, 502, 503 |
//! | 11 | **settlement**: ledger outcome, quota kept or given back | store | |
//!
//! Why this order:
//!
//! - Everything that costs nothing comes before everything billed: a
//!   request the policy, the ledger, the fraud guard, the limits or the
//!   budget refuse never causes a Lookup (each is billed) or a send. A
//!   Lookup is asked only for a message that would otherwise be sent.
//! - The ledger comes before the quota and Lookup: Kratos's retries of a
//!   message that was sent are answered from it, taking no quota and
//!   asking no Lookup again.
//! - Once an attempt may have reached a provider, the message is fixed to
//!   what it tried ([`crate::delivery::ledger::Tried`]: the channel and
//!   the provider, recorded right before each provider call): the retry
//!   reconciles against exactly that and, if the provider does not have
//!   it, sends the same thing, asking that provider first. No Lookup is
//!   asked again and no channel re-chosen, so one code never goes out both
//!   as an SMS and as a call.
//! - Every refusal from step 4 on is certain "not sent": it releases the
//!   ledger claim and gives back any quota. The quota is kept only when the
//!   provider accepted the message or may have it.
//! - Steps 4 to 11 run in a task of their own: if Kratos hangs up, the claim
//!   is still settled and the send completed, and the retry finds the
//!   outcome.
//!
//! (Longer than our usual 400 lines, on purpose: the steps of the table
//! above run here in that order, so the file reads top to bottom as a
//! message meets them; splitting it by step would scatter the order.)

use std::sync::Arc;

use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{Config, CountryPolicy, FallbackConfig, PolicyConfig};
use crate::delivery::budget::Budget;
pub(crate) use crate::delivery::channel::{Channel, Endpoint};
use crate::delivery::client_ip::{ClientAddr, ClientIp};
use crate::delivery::compose::Composer;
pub(crate) use crate::delivery::compose::Outgoing;
use crate::delivery::error::DeliveryError;
use crate::delivery::fallback::{self, Reason, SmsInstead, SpokenCode};
use crate::delivery::fraud::FraudGuard;
use crate::delivery::ledger::{Admission, Flight, Ledger, Reconciled, Tried};
use crate::delivery::limits::{Limits, Prefixes};
use crate::delivery::message::CourierMessage;
use crate::delivery::send::SendJob;
pub(crate) use crate::delivery::test_numbers::TestMessage;
use crate::delivery::test_numbers::TestNumbers;
use crate::lookup::{Lookup, Refusal as LookupRefusal, Verdict};
use crate::phone::{LineType, NumberingPlan, Recipient, RecipientCache, VERDICT_CACHE_CAPACITY};
use crate::provider::set::ProviderSet;
use crate::store::{Keys, Refusal, Reservation, Settle, Side, Store, UnixMs};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::in_span;

/// A message that passed every check and is ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) recipient: Recipient,
    pub(crate) channel: Channel,
    pub(crate) outgoing: Outgoing,
}

/// How a delivery ended well.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub(crate) channel: Channel,
    pub(crate) sid: Option<String>,
    /// Answered from memory: an identical message was already sent.
    pub duplicate: bool,
    /// A configured test number: nothing was sent.
    pub(crate) test: bool,
    /// For the log line.
    pub(crate) masked_recipient: String,
    /// A call stood in for the SMS asked for (`delivery::fallback`).
    pub(crate) fallback: bool,
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
    /// fallback call is composed in the send task (after a `NOT_MOBILE`, or for a
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
    /// The Twilio Lookup policy (`lookup`); `None` when `lookup.enabled` is
    /// false. Asked in the send task, after every cheap check.
    pub(super) lookup: Option<Lookup>,
    /// Keep SMS fallback records: `fallback.voice_on` has "undelivered" and
    /// status callbacks are configured (nothing would report otherwise).
    pub(super) keep_for_undelivered: bool,
    /// Keep WhatsApp messages' SMS records: status callbacks are configured.
    pub(super) keep_for_whatsapp_undelivered: bool,
    /// `whatsapp.fallback_after_ms`, with status callbacks configured: how
    /// long an accepted WhatsApp message waits for its `delivered` receipt
    /// before its SMS goes (`delivery::fallback`).
    pub(super) whatsapp_fallback_after: Option<std::time::Duration>,
    /// Reads the recipient of a kept record (a timer's, a callback's).
    pub(super) plan: Arc<NumberingPlan>,
    /// This value's own `Arc`, for the receipt timers a send task starts
    /// (they outlive the task).
    pub(super) me: std::sync::Weak<Shared>,
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
        let plan = Arc::new(NumberingPlan::new());
        let callbacks = config.status_callback_url.is_some();
        Courier {
            shared: Arc::new_cyclic(|me| Shared {
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
                        config.limits.whatsapp,
                        Prefixes::new(config.limits.prefix_hidden_digits),
                        keys,
                    )
                }),
                budget: Budget::new(
                    config.budget.daily_total,
                    config.budget.daily_per_country,
                    config.budget.warn_percent,
                    config.budget.units,
                    clock,
                ),
                tasks: tokio_util::task::TaskTracker::new(),
                lookup,
                keep_for_undelivered: config.fallback.undelivered
                    && config.status_callback_url.is_some(),
                keep_for_whatsapp_undelivered: callbacks,
                whatsapp_fallback_after: config
                    .whatsapp
                    .as_ref()
                    .and_then(|w| w.fallback_after)
                    .filter(|_| callbacks),
                plan: plan.clone(),
                me: me.clone(),
            }),
            recipients: RecipientCache::new(plan, VERDICT_CACHE_CAPACITY),
            policy: config.policy.clone(),
            client_ip: ClientIp::new(config.limits.client_ip.clone()),
            test_numbers: TestNumbers::new(config.test_numbers.clone()),
        }
    }

    /// Drop abuse-control state that no longer matters (called periodically).
    pub(crate) fn prune(&self) {
        self.shared.store.prune();
    }

    /// The recipient parser (and, through it, the numbering plan) of this
    /// courier: start-up warms the plan, status callbacks read `To` with it.
    pub(crate) fn recipients(&self) -> &RecipientCache {
        &self.recipients
    }

    /// The store behind the ledger, limits and budget.
    pub(crate) fn store(&self) -> &Arc<Store> {
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
    pub(crate) async fn confirmed_recipient(
        &self,
        recipient: &Recipient,
    ) -> Result<bool, DeliveryError> {
        let now = self.shared.now();
        Ok(self
            .shared
            .fraud
            .confirmed(&self.shared.store, recipient, now)
            .await?)
    }

    /// Messages to test numbers, newest first.
    pub(crate) fn test_messages(&self) -> Vec<TestMessage> {
        self.test_numbers.messages()
    }

    /// The whole pipeline for one message, in the order of the module's
    /// table: test numbers, the recipient, policy and composition (no I/O),
    /// then, in a task of its own, the ledger, the fraud guard, the quota,
    /// Lookup, the provider walk and the settlement.
    pub async fn deliver(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Delivered, DeliveryError> {
        let started = tokio::time::Instant::now();
        // The error code is on the request's span (http::answer owns codes).
        let admission = tracing::info_span!("admission", courier.country = tracing::field::Empty);
        if let Some(to) = self.test_numbers.matching(&message.recipient) {
            let region = self.recipients.parse(&message.recipient).ok();
            let channel = self.channel_for(
                endpoint,
                message,
                region.as_ref().and_then(Recipient::region),
            );
            return Ok(Delivered {
                channel,
                sid: Some(self.test_numbers.record(to, channel, message)),
                duplicate: false,
                test: true,
                masked_recipient: "test-number".to_owned(),
                fallback: false,
            });
        }
        // 1-2. The recipient, the channel asked for, policy, composition.
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
        let shared = &self.shared;
        // A code that cannot arrive by SMS is spoken instead
        // (`delivery::fallback`): what the call would speak, if voice may
        // take it. Composed into a call only when one is placed.
        let may_call =
            shared.fallback.any() || shared.lookup.as_ref().is_some_and(Lookup::may_call);
        let voice = (channel == Channel::Sms && may_call)
            .then(|| self.fallback_code(&recipient, message))
            .flatten();
        // A WhatsApp code's SMS, should WhatsApp not deliver it: Kratos's
        // own text, composed now (no I/O), sent only if needed.
        let sms = (channel == Channel::WhatsApp)
            .then(|| self.sms_instead(&recipient, message))
            .flatten();
        // 3. Recipients a provider called unreachable (a store read).
        let mut fallback = None;
        if let Some(provider_code) = shared.ledger.known_unreachable(channel, &recipient).await? {
            // Twilio said "not a mobile number" before: the retry (or the
            // next message) goes to voice at once.
            match (&voice, provider_code) {
                (Some(_), Some(crate::provider::errors::NOT_MOBILE))
                    if shared.fallback.landline =>
                {
                    fallback = Some(Reason::NotMobile)
                }
                // Not on WhatsApp: its SMS at once.
                _ if channel == Channel::WhatsApp && sms.is_some() => {
                    fallback = Some(Reason::WhatsAppRefused)
                }
                _ => return Err(DeliveryError::RecipientUnreachable { provider_code }),
            }
        }
        // The numbering plan's guess; Lookup, asked later (after the cheap
        // checks), overrides it when it knows the line type.
        if fallback.is_none()
            && voice.is_some()
            && shared.fallback.landline
            && recipient.line_type() == LineType::FixedLine
        {
            fallback = Some(Reason::Landline);
        }
        let masked = recipient.masked();
        // Everything from the ledger claim on runs in a task of its own: if
        // Kratos hangs up, the claim is still settled, the quota kept or
        // given back and the send completed, and the retry finds its outcome.
        let admitted = Admitted {
            channel,
            recipient,
            outgoing,
            body: message.body.clone(),
            code: message.ledger_code(),
            client: self.client_ip.of(message),
            notification: message.is_notification(),
            fallback,
            voice,
            sms,
            message: Some(Box::new(message.clone())),
            started,
        };
        let task = self.shared.clone();
        // Boxed: the task's future is a few KB, and a pointer is cheaper to
        // move into the task than the future itself (bench/notes.md).
        // The task's spans are children of the request's, also after Kratos
        // hung up. Boxed first, so that the span wraps a pointer, not the
        // future.
        let span = tracing::Span::current();
        let sent = shared
            .tasks
            .spawn(Box::pin(async move { task.deliver(admitted).await }).instrument(span))
            .await
            // A task that panicked leaves nothing known: its ledger record
            // expires into Uncertain and is reconciled on the retry.
            .unwrap_or(Err(DeliveryError::ProviderUnavailable {
                provider_code: None,
                retry_after: 1,
                uncertain: true,
            }))?;
        Ok(Delivered {
            channel: sent.fallback.unwrap_or(channel),
            sid: sent.sid,
            duplicate: sent.duplicate,
            test: false,
            masked_recipient: masked,
            fallback: sent.fallback.is_some(),
        })
    }

    /// The SMS that would stand in for a WhatsApp code: Kratos's text to
    /// the same number; `None` when that SMS could not be composed or
    /// policy refuses SMS to the number.
    fn sms_instead(&self, recipient: &Recipient, message: &CourierMessage) -> Option<SmsInstead> {
        check_policy_for(&self.policy, recipient, Channel::Sms).ok()?;
        let Ok(Outgoing::Sms(sms)) = self
            .shared
            .composer
            .compose(Channel::Sms, recipient, message)
        else {
            return None;
        };
        Some(SmsInstead {
            to: sms.to,
            body: sms.body,
            code: message.code.clone().unwrap_or_default(),
            validity_period: sms.validity_period,
            client: self.client_ip.of(message),
            notification: message.is_notification(),
        })
    }

    /// What a call speaking this SMS's code needs, to place it if the SMS
    /// cannot arrive; `None` when the message carries no speakable code, no
    /// caller id is configured, or voice may not take the number
    /// (`policy.voice`).
    /// A notification's call reads its text instead.
    fn fallback_code(&self, recipient: &Recipient, message: &CourierMessage) -> Option<SpokenCode> {
        let composer = &self.shared.composer;
        let (code, text) = match message.is_notification() {
            true if composer.can_read() => (String::new(), Some(message.body.clone())),
            true => return None,
            false => {
                let code = message.code.as_deref()?;
                if !composer.can_speak(code) {
                    return None;
                }
                (code.to_owned(), None)
            }
        };
        check_policy_for(&self.policy, recipient, Channel::Voice).ok()?;
        let spoken = SpokenCode {
            to: recipient.e164().to_owned(),
            code,
            text,
            template: message.template_type.label().to_owned(),
            language: message
                .request_header("accept-language")
                .map(|l| l.chars().take(64).collect()),
            client: self.client_ip.of(message),
        };
        Some(spoken)
    }

    /// A status callback reported a message's status (`channel` is
    /// `sms` or `whatsapp`): an undelivered SMS may be called instead, and
    /// an undelivered WhatsApp message's code may go by SMS instead
    /// (`delivery::fallback`); a WhatsApp receipt stops its SMS.
    pub(crate) async fn status_reported(
        &self,
        channel: &str,
        sid: &str,
        status: &str,
        error_code: Option<u32>,
    ) {
        if sid.is_empty() {
            return;
        }
        if channel == "whatsapp" && matches!(status, "delivered" | "read") {
            fallback::whatsapp_receipt(&self.shared, sid).await;
            return;
        }
        if !matches!(status, "undelivered" | "failed") {
            return;
        }
        if fallback::sms_gets_around(error_code) {
            fallback::whatsapp_undelivered(&self.shared, sid, error_code).await;
        } else {
            fallback::undelivered(&self.shared, &self.recipients, sid, error_code).await;
        }
    }

    /// Resolves when every send task has finished; new sends may still
    /// start (and are waited for too). For shutdown, after the listener is
    /// closed.
    pub(crate) async fn sends_finished(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Every provider, in order of preference.
    pub(crate) fn providers(&self) -> &ProviderSet {
        &self.shared.providers
    }

    /// The channel a message goes out on (see [`Composer::channel_for`]);
    /// `region`: the recipient's country, when known.
    pub(crate) fn channel_for(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
        region: Option<&str>,
    ) -> Channel {
        self.shared.composer.channel_for(endpoint, message, region)
    }

    /// Check the message and build the provider request; nothing is sent.
    pub(crate) fn prepare(
        &self,
        endpoint: Endpoint,
        message: &CourierMessage,
    ) -> Result<Prepared, DeliveryError> {
        let recipient = self
            .recipients
            .parse(&message.recipient)
            .map_err(DeliveryError::InvalidRecipient)?;
        let channel = self.channel_for(endpoint, message, recipient.region());
        let outgoing = self.shared.composer.compose(channel, &recipient, message)?;
        Ok(Prepared {
            recipient,
            channel,
            outgoing,
        })
    }
}

/// A message that passed the checks made without I/O, owned, for the
/// delivery task.
pub(super) struct Admitted {
    /// The channel the ledger knows the message by: the one asked for (a
    /// fallback call keeps its SMS's).
    pub(super) channel: Channel,
    pub(super) recipient: Recipient,
    /// The message as asked for, composed.
    pub(super) outgoing: Outgoing,
    pub(super) body: String,
    pub(super) code: Option<String>,
    pub(super) client: ClientAddr,
    /// A message without a code: not the fraud guard's, its own limit.
    pub(super) notification: bool,
    /// Why a call stands in for the SMS, as known before Lookup: Twilio
    /// said "not mobile" before, or the numbering plan says FIXED_LINE
    /// (which Lookup may overrule); for a callback's call, `Undelivered`.
    pub(super) fallback: Option<Reason>,
    /// For an SMS: what would speak its code in a call (`None`: no call
    /// may stand in for it).
    pub(super) voice: Option<SpokenCode>,
    /// For a WhatsApp message: the SMS that would stand in for it (`None`:
    /// none may).
    pub(super) sms: Option<SmsInstead>,
    /// Kratos's message, to compose it on another channel: the one an
    /// earlier attempt used, or a call Lookup asks for. `None` for a
    /// callback's fallback call, which is composed already.
    pub(super) message: Option<Box<CourierMessage>>,
    /// When the request arrived: the failover deadline counts from it.
    pub(super) started: tokio::time::Instant,
}

/// How a delivery task ended well.
pub(super) struct Sent {
    pub(super) sid: Option<String>,
    /// Answered from the ledger, or found at the provider: nothing sent.
    pub(super) duplicate: bool,
    /// The channel that stood in for the one asked for (a call for an SMS,
    /// an SMS for WhatsApp).
    pub(super) fallback: Option<Channel>,
}

/// What an earlier, uncertain attempt of the message did, once the provider
/// it used said it does not have the message.
struct Earlier {
    /// The message as that attempt sent it, when the record says on which
    /// channel: this attempt sends the same (no Lookup, no new plan).
    outgoing: Option<Outgoing>,
    /// The provider it was handed to: asked first again.
    provider: Option<String>,
}

impl Shared {
    /// The delivery task, in order: the ledger (a duplicate is answered, an
    /// uncertain outcome reconciled against exactly what was tried), the
    /// fraud guard, the provider slots, the quota (limits and budget, taken
    /// atomically), Lookup (the one billed call before the send), the
    /// provider walk, the settlement.
    pub(super) async fn deliver(&self, mut m: Admitted) -> Result<Sent, DeliveryError> {
        let ledger = &self.ledger;
        // 4. The ledger.
        let admission = in_span!(
            tracing::info_span!("ledger"),
            ledger.admit(m.channel, &m.recipient, &m.body, m.code.as_deref())
        )?;
        let (flight, earlier) = match admission {
            Admission::Duplicate { sid } => {
                let (sid, fallback) = fallback::from_ledger(sid);
                return Ok(Sent {
                    sid,
                    duplicate: true,
                    fallback,
                });
            }
            Admission::Send { flight } => (flight, None),
            Admission::Reconcile {
                flight,
                since,
                tried,
            } => match self.reconcile(&m, flight, since, tried).await? {
                Ok(found) => return Ok(found),
                Err((flight, earlier)) => (flight, Some(earlier)),
            },
        };
        // 5. The fraud guard (store reads); not for a notification, which
        // is never confirmed and so must not count as a code.
        let watch = self.fraud.watch(&m.recipient);
        let checked = match m.notification {
            true => Ok(()),
            false => self.fraud.check(&self.store, &watch, self.now()).await,
        };
        if let Err(e) = checked {
            ledger.settle(flight, Settle::Release).await;
            return Err(e);
        }
        // 6. No provider has a slot: the cheap refusal. (Each provider's
        // own slot is taken in the send.)
        if self
            .providers
            .iter()
            .all(|p| p.slots.available_permits() == 0)
        {
            ledger.settle(flight, Settle::Release).await;
            return Err(DeliveryError::NoProviderSlot);
        }
        // The plan: what an earlier attempt sent, or what this one would.
        let pinned = earlier.as_ref().and_then(|e| e.outgoing.clone());
        let planned = match pinned {
            Some(outgoing) => {
                let reason = match (m.channel, outgoing.channel()) {
                    (Channel::Sms, Channel::Voice) => Some(m.fallback.unwrap_or(Reason::Landline)),
                    (Channel::WhatsApp, Channel::Sms) => {
                        Some(m.fallback.unwrap_or(Reason::WhatsAppRefused))
                    }
                    _ => None,
                };
                Ok((outgoing, reason))
            }
            None => self.planned(&m).map(|o| (o, m.fallback)),
        };
        let (mut outgoing, mut reason) = match planned {
            Ok(p) => p,
            Err(e) => {
                ledger.settle(flight, Settle::Release).await;
                return Err(e);
            }
        };
        // 7. The quota for the plan: every limit and the budget at once. An
        // attempt that reconciled found that an earlier, uncertain one was
        // not sent: that one kept its quota, which now pays for this send.
        let reconciled = earlier.is_some();
        let mut reservation = Reservation {
            cells: Vec::new(),
            budget: None,
            used: None,
        };
        if !reconciled {
            let reserved = in_span!(
                tracing::info_span!("limits"),
                self.reserve(
                    flight.side,
                    outgoing.channel(),
                    &m.recipient,
                    m.client,
                    m.notification
                )
            );
            reservation = match reserved {
                Ok(r) => r,
                Err(e) => {
                    ledger.settle(flight, Settle::Release).await;
                    return Err(e);
                }
            };
        }
        // 8. Lookup: billed, so only now; never for a message whose channel
        // an earlier attempt fixed. A refusal is certain "not sent".
        let fixed = earlier.as_ref().is_some_and(|e| e.outgoing.is_some());
        if let (Some(lookup), false) = (&self.lookup, fixed) {
            let template = m.message.as_ref().map(|msg| msg.template_type.clone());
            let verdict = match template {
                Some(template) => lookup
                    .decide(m.recipient.e164(), &template)
                    .instrument(tracing::info_span!("lookup"))
                    .await
                    .map_err(refused),
                None => Ok(Verdict::NoOpinion),
            };
            let replanned = verdict.and_then(|v| self.replan(&m, &outgoing, reason, v));
            match replanned {
                Ok(None) => {}
                Ok(Some((next, next_reason))) => {
                    if next.channel() != outgoing.channel() && !reconciled {
                        // The quota of the channel it goes out on.
                        self.give_back(flight.side, &reservation).await;
                        reservation = match self
                            .reserve(
                                flight.side,
                                next.channel(),
                                &m.recipient,
                                m.client,
                                m.notification,
                            )
                            .await
                        {
                            Ok(r) => r,
                            Err(e) => {
                                ledger.settle(flight, Settle::Release).await;
                                return Err(e);
                            }
                        };
                    }
                    (outgoing, reason) = (next, next_reason);
                }
                Err(e) => {
                    ledger.settle(flight, Settle::Release).await;
                    self.give_back(flight.side, &reservation).await;
                    return Err(e);
                }
            }
        }
        // 9. A call standing in for the SMS: a number voice cannot reach is
        // refused as such.
        if reason.is_some() && outgoing.channel() == Channel::Voice {
            let known = ledger.known_unreachable(Channel::Voice, &m.recipient).await;
            let refusal = match known {
                Ok(None) => None,
                Ok(Some(provider_code)) => {
                    Some(DeliveryError::RecipientUnreachable { provider_code })
                }
                Err(e) => Some(e),
            };
            if let Some(e) = refusal {
                ledger.settle(flight, Settle::Release).await;
                self.give_back(flight.side, &reservation).await;
                return Err(e);
            }
        }
        // What an SMS keeps, to speak its code after a `NOT_MOBILE` (in this
        // flight) or an undelivered callback (until the code's end).
        let expires = m.message.as_ref().and_then(|msg| msg.expires_in_minutes);
        let (spoken, stash_until) = match (&outgoing, m.voice.take()) {
            (Outgoing::Sms(_), Some(spoken)) => {
                let until = self
                    .keep_for_undelivered
                    .then(|| fallback::stash_until(expires, self.now()))
                    .flatten();
                let keep = self.fallback.landline || until.is_some();
                (keep.then_some(spoken), until)
            }
            _ => (None, None),
        };
        // What a WhatsApp message keeps, to send its SMS after a refusal (in
        // this flight) or an undelivered callback (until the code's end).
        let (sms, stash_until) = match (&outgoing, m.sms.take()) {
            (Outgoing::WhatsApp(_), Some(sms)) => {
                let until = self
                    .keep_for_whatsapp_undelivered
                    .then(|| fallback::sms_stash_until(m.notification, expires, self.now()))
                    .flatten();
                (Some(sms), until)
            }
            _ => (None, stash_until),
        };
        // 10. The provider walk, then the settlement (in the job).
        let landline_call = reason.is_some_and(|r| !r.after_delivery());
        let span = landline_call.then(|| {
            tracing::info_span!(
                "fallback",
                courier.fallback.reason = reason.map(Reason::label)
            )
        });
        let job = SendJob {
            flight,
            channel: outgoing.channel(),
            recipient: m.recipient,
            outgoing,
            reservation,
            client: m.client,
            notification: m.notification,
            fallback: reason,
            spoken,
            sms,
            stash_until,
            started: m.started,
            prefer: earlier.and_then(|e| e.provider),
        };
        let sent = match span {
            Some(span) => in_span!(span, job.run(self)),
            None => job.run(self).await,
        };
        // A `NOT_MOBILE` answered by a call comes back as the call.
        let (sent, fallback) = sent?;
        // The code was counted when its SMS was sent; a notification is no
        // code.
        if !reason.is_some_and(Reason::after_delivery) && !m.notification {
            self.fraud.sent(&self.store, &watch, self.now()).await;
        }
        Ok(Sent {
            sid: sent.sid,
            duplicate: false,
            fallback: fallback.map(Reason::channel),
        })
    }

    /// An uncertain outcome: compose what the earlier attempt sent, on the
    /// channel its record names (not this attempt's plan), and ask the
    /// provider it used. `Ok(Ok)`: the provider has it (settled accepted);
    /// `Ok(Err)`: it does not, and the flight is ours to send.
    async fn reconcile(
        &self,
        m: &Admitted,
        flight: Flight,
        since: UnixMs,
        tried: Tried,
    ) -> Result<Result<Sent, (Flight, Earlier)>, DeliveryError> {
        let composed = match tried.channel {
            Some(channel) => self.compose_as(m, channel),
            // An older record, or an owner that died before its first
            // provider call: this attempt's plan.
            None => self.planned(m),
        };
        let outgoing = match composed {
            Ok(o) => o,
            Err(_) => {
                // What was tried cannot be composed here (another replica's
                // configuration): it cannot be asked for, so nothing is sent.
                tracing::warn!("an uncertain message was sent on a channel this replica cannot compose; not resending");
                self.ledger.settle(flight, Settle::Uncertain).await;
                return Err(DeliveryError::ProviderUnavailable {
                    provider_code: None,
                    retry_after: 1,
                    uncertain: true,
                });
            }
        };
        let found = in_span!(
            tracing::info_span!("ledger"),
            self.ledger.reconcile(
                flight,
                since,
                tried.provider.as_deref(),
                &outgoing,
                m.code.as_deref(),
                &self.providers,
            )
        )?;
        match found {
            Reconciled::Found { flight, sid } => {
                // A call that stood in for the SMS (an SMS for WhatsApp)
                // keeps its mark.
                let stood_in = matches!(
                    (m.channel, outgoing.channel()),
                    (Channel::Sms, Channel::Voice) | (Channel::WhatsApp, Channel::Sms)
                );
                let recorded = match stood_in {
                    true => fallback::ledger_sid(outgoing.channel(), sid.clone()),
                    false => sid.clone(),
                };
                self.ledger
                    .settle(flight, Settle::Accepted { sid: recorded })
                    .await;
                Ok(Ok(Sent {
                    sid,
                    duplicate: true,
                    fallback: stood_in.then(|| outgoing.channel()),
                }))
            }
            Reconciled::NotFound { flight } => Ok(Err((
                flight,
                Earlier {
                    outgoing: tried.channel.map(|_| outgoing),
                    provider: tried.provider,
                },
            ))),
        }
    }

    /// This attempt's plan before Lookup: the call when a fallback reason
    /// is known, the message as asked otherwise.
    fn planned(&self, m: &Admitted) -> Result<Outgoing, DeliveryError> {
        match (m.fallback.map(Reason::channel), m.outgoing.channel()) {
            (Some(Channel::Voice), Channel::Sms) => self.compose_as(m, Channel::Voice),
            (Some(Channel::Sms), Channel::WhatsApp) => match &m.sms {
                Some(sms) => Ok(Outgoing::Sms(self.composer.plain_sms(
                    &m.recipient,
                    sms.body.clone(),
                    sms.validity_period,
                ))),
                None => self.compose_as(m, Channel::Sms),
            },
            _ => Ok(m.outgoing.clone()),
        }
    }

    /// The message composed for `channel`.
    fn compose_as(&self, m: &Admitted, channel: Channel) -> Result<Outgoing, DeliveryError> {
        if m.outgoing.channel() == channel {
            return Ok(m.outgoing.clone());
        }
        match &m.message {
            Some(message) => self.composer.compose(channel, &m.recipient, message),
            None => Err(DeliveryError::VoiceNotConfigured),
        }
    }

    /// What Lookup's verdict changes in the plan, if anything: a line type
    /// whose action is `voice` turns an SMS into a call (as a landline
    /// does); one whose action is `sms` overrules the numbering plan's
    /// landline guess (Twilio knows ported numbers).
    fn replan(
        &self,
        m: &Admitted,
        outgoing: &Outgoing,
        reason: Option<Reason>,
        verdict: Verdict,
    ) -> Result<Option<(Outgoing, Option<Reason>)>, DeliveryError> {
        let asked_sms = m.channel == Channel::Sms;
        match (verdict, outgoing.channel()) {
            (Verdict::Voice, Channel::Sms) if asked_sms && m.voice.is_some() => Ok(Some((
                self.compose_as(m, Channel::Voice)?,
                Some(Reason::Landline),
            ))),
            (Verdict::Sms, Channel::Voice) if asked_sms && reason == Some(Reason::Landline) => {
                Ok(Some((m.outgoing.clone(), None)))
            }
            _ => Ok(None),
        }
    }

    /// Give back a reservation of a message that is certainly not sent.
    async fn give_back(&self, side: Side, reservation: &Reservation) {
        if reservation.cells.is_empty() && reservation.budget.is_none() {
            return;
        }
        if let Err(e) = self.store.refund(side, reservation, self.now()).await {
            tracing::warn!(error = %e, "could not give back the quota of a message that was not sent");
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.unix().as_millis() as u64
    }

    /// Reserve every limit's cell and a unit of budget, or nothing (a
    /// notification's recipient cell is its own limiter's).
    pub(super) async fn reserve(
        &self,
        side: Side,
        channel: Channel,
        recipient: &Recipient,
        client: ClientAddr,
        notification: bool,
    ) -> Result<Reservation, DeliveryError> {
        let cells = self
            .limits
            .as_ref()
            .map(|l| match notification {
                true => l.notification_cells(channel, recipient, client),
                false => l.cells(channel, recipient, client),
            })
            .unwrap_or_default();
        let take = self.budget.take(channel, recipient.calling_code());
        let now = self.clock.unix().as_millis() as u64;
        match self.store.reserve(side, &cells, take, now).await? {
            Ok(reservation) => {
                // The day's counters come back with the reservation: no
                // second round trip to read them.
                if let (Some(take), Some(used)) = (take, reservation.used) {
                    if let Some(ratio) = self.budget.used_ratio(used) {
                        self.metrics.budget_used(ratio);
                    }
                    self.budget.warn_if_crossed(used, take);
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
    // A WhatsApp code is a message: `policy.sms` (its fallback is an SMS).
    let countries: &CountryPolicy = match channel {
        Channel::Sms | Channel::WhatsApp => &policy.sms,
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
