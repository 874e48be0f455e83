//! The delivery ledger: exactly once, whatever Kratos retries.
//!
//! Kratos retries every failed send up to 5 more times, a second apart, on
//! any replica, and sends no message id: a message is known by a keyed hash
//! of its channel, recipient, body and code. Each has at most one record in
//! the [`Store`], and this module is the only one that moves it:
//!
//! ```text
//!                       claim (no record)
//!   (none) ─────────────────────────────────► InFlight{owner, since, lease}
//!     ▲                                          │        │         │
//!     │ certainly not sent                       │        │         │ lease runs out
//!     │ (transient, configuration, refused       │        │         │ (owner died)
//!     │  by limits/budget/slots, recipient)      │        │         ▼
//!     └──────────────────────────────────────────┘        │     Uncertain{since}
//!                                                         │       ▲     │
//!                 provider accepted (or reconciliation    │       │     │ next attempt claims it,
//!                 found it)                               │       │     │ then asks the provider
//!                                 ┌───────────────────────┘       │     │ (Messages/Calls list):
//!                                 ▼                 timeout,      │     ├─ found ──► Accepted
//!                         Accepted{sid} ◄─────┐     broken        │     ├─ not found ─► InFlight (send)
//!                      (kept for the dedup    │     connection ───┘     └─ cannot ask ─► Uncertain (503)
//!                       window; repeats are   │
//!                       answered with the sid)└─── found
//! ```
//!
//! - A transient failure leaves no record: the retry sends again (its quota
//!   was refunded, so it pays once).
//! - An uncertain outcome is never resent blindly: the provider may have it.
//!   The record names what was tried ([`Tried`]: the channel and the
//!   provider, written right before each provider call), and the retry asks
//!   exactly that provider about exactly that channel's message, whatever
//!   its own plan would be (a Lookup that answers differently on a retry
//!   cannot turn an SMS that may have arrived into a call as well).
//! - Concurrent copies (and other replicas) find `InFlight` and wait for the
//!   owner's outcome, bounded so that Kratos still gets an answer in time.
//! - Recipients the provider calls permanently unreachable are remembered
//!   apart (per recipient and channel, not per message).
//!
//! (Longer than our usual 400 lines, on purpose: one state machine: every
//! move of a message's record, and the diagram above, read together; about
//! 20 lines of it are tests.)

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::clock::Clock;
use crate::delivery::channel::Channel;
use crate::delivery::compose::Outgoing;
use crate::delivery::error::DeliveryError;
use crate::phone::Recipient;
use crate::provider::set::ProviderSet;
use crate::store::{Claim, Keys, MessageKey, Owner, RecipientKey, Settle, Side, Store, UnixMs};
use crate::telemetry::traces::in_span;

/// The ledger's settings and handles.
pub(crate) struct Ledger {
    store: Arc<Store>,
    keys: Keys,
    clock: Clock,
    /// How long an owner may hold a message before another attempt may take
    /// it over (and reconcile): the provider timeout and a margin.
    lease: Duration,
    /// How long outcomes are remembered (`dedup.window_ms`).
    keep: Duration,
    /// How long a permanently unreachable recipient is remembered.
    unreachable_for: Duration,
    /// How long a copy waits for the owner's outcome before answering 503.
    wait_at_most: Duration,
}

/// What to do with a message.
pub(crate) enum Admission {
    /// Ours to send, no earlier attempt may have reached a provider: settle
    /// the [`Flight`] with the outcome.
    Send { flight: Flight },
    /// Ours, but an earlier attempt may have reached a provider: ask
    /// exactly what it [`Tried`] ([`Ledger::reconcile`]) before anything
    /// is sent.
    Reconcile {
        flight: Flight,
        since: UnixMs,
        tried: Tried,
    },
    /// Sent already (found in the ledger).
    Duplicate { sid: Option<String> },
}

/// What [`Ledger::reconcile`] found.
pub(crate) enum Reconciled {
    /// The provider has the message: answer with its sid, send nothing.
    /// The caller settles the flight as accepted (marking a call that
    /// stood in for an SMS).
    Found { flight: Flight, sid: Option<String> },
    /// The provider does not have it: ours to send, on the channel the
    /// earlier attempt tried. Its quota was kept, so this send takes none
    /// again.
    NotFound { flight: Flight },
}

/// What an earlier attempt of a message tried: the channel it went out on
/// and the provider it was handed to. Recorded at every lease renewal,
/// right before each provider call, so an uncertain outcome is reconciled
/// against exactly that, and a retry never switches channel or provider
/// while the outcome is uncertain (a Lookup asked again, or a verdict
/// changed, must not turn an SMS that may have arrived into a call).
///
/// Kept in the record's provider field as `SMS-provider` or
/// `VOICE-provider`: provider names are `[a-z0-9_-]`, so the upper-case
/// prefix is unambiguous, and the field keeps the characters every build's
/// store scripts accept (an older replica reading such a record finds no
/// provider of that name and does not resend). A record written by an
/// older build holds the provider alone: its channel is unknown, and the
/// retry's own plan is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Tried {
    pub(crate) channel: Option<Channel>,
    /// `None`: no provider was named (a record from before providers were
    /// named: the first provider's).
    pub(crate) provider: Option<String>,
}

impl Tried {
    /// The record's text for a provider call about to be made.
    pub(crate) fn record(channel: Channel, provider: &str) -> String {
        let prefix = match channel {
            Channel::Sms => "SMS",
            Channel::Voice => "VOICE",
            Channel::WhatsApp => "WHATSAPP",
        };
        format!("{prefix}-{provider}")
    }

    /// The record's text read back.
    pub(crate) fn parse(recorded: Option<String>) -> Tried {
        let Some(text) = recorded else {
            return Tried::default();
        };
        let channel = match text.split_once('-') {
            Some(("SMS", p)) => Some((Channel::Sms, p)),
            Some(("VOICE", p)) => Some((Channel::Voice, p)),
            Some(("WHATSAPP", p)) => Some((Channel::WhatsApp, p)),
            _ => None,
        };
        match channel {
            Some((channel, provider)) => Tried {
                channel: Some(channel),
                provider: Some(provider.to_owned()),
            },
            None => Tried {
                channel: None,
                provider: Some(text),
            },
        }
    }
}

/// The right to send one message, until settled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flight {
    key: MessageKey,
    owner: Owner,
    /// The store that holds the claim; every later call goes there too.
    pub(crate) side: Side,
}

impl Ledger {
    pub(crate) fn new(
        store: Arc<Store>,
        keys: Keys,
        clock: Clock,
        provider_timeout: Duration,
        keep: Duration,
        unreachable_for: Duration,
    ) -> Self {
        Ledger {
            store,
            keys,
            clock,
            lease: provider_timeout + Duration::from_secs(2),
            keep,
            unreachable_for,
            // Kratos gives up on an answer after 10 s.
            wait_at_most: (provider_timeout + Duration::from_millis(500))
                .min(Duration::from_secs(9)),
        }
    }

    fn now(&self) -> UnixMs {
        self.clock.unix().as_millis() as u64
    }

    fn recipient_key(&self, channel: Channel, recipient: &Recipient) -> RecipientKey {
        self.keys.recipient(channel, recipient.e164())
    }

    /// The provider code a recipient was found unreachable with, if it was.
    pub(crate) async fn known_unreachable(
        &self,
        channel: Channel,
        recipient: &Recipient,
    ) -> Result<Option<Option<u32>>, DeliveryError> {
        let key = self.recipient_key(channel, recipient);
        Ok(self.store.unreachable(&key, self.now()).await?)
    }

    /// Remember that the provider called this recipient unreachable.
    pub(crate) async fn remember_unreachable(
        &self,
        channel: Channel,
        recipient: &Recipient,
        code: Option<u32>,
    ) -> Result<(), DeliveryError> {
        let key = self.recipient_key(channel, recipient);
        let (now, ttl) = (self.now(), self.unreachable_for);
        Ok(self.store.mark_unreachable(&key, code, now, ttl).await?)
    }

    /// Claim the message, or wait for another owner. An uncertain outcome
    /// comes back as [`Admission::Reconcile`]: the caller composes what was
    /// tried and asks [`Ledger::reconcile`].
    pub(crate) async fn admit(
        &self,
        channel: Channel,
        recipient: &Recipient,
        body: &str,
        code: Option<&str>,
    ) -> Result<Admission, DeliveryError> {
        let key = self.keys.message(channel, recipient.e164(), body, code);
        let owner = Owner::random();
        let started = tokio::time::Instant::now();
        let mut round = 0;
        loop {
            let claimed = self
                .store
                .claim(&key, owner, self.now(), self.lease, self.keep)
                .await;
            let (claim, side) = match claimed {
                Ok(c) => c,
                Err(e) => {
                    // The script may have run and only its answer been
                    // lost: give back a claim that would be ours.
                    let _ = self
                        .store
                        .settle(
                            Side::Shared,
                            &key,
                            owner,
                            Settle::Release,
                            self.now(),
                            self.keep,
                        )
                        .await;
                    return Err(e.into());
                }
            };
            let flight = Flight { key, owner, side };
            match claim {
                Claim::Send => return Ok(Admission::Send { flight }),
                Claim::Accepted { sid } => return Ok(Admission::Duplicate { sid }),
                Claim::Reconcile { since, provider } => {
                    return Ok(Admission::Reconcile {
                        flight,
                        since,
                        tried: Tried::parse(provider),
                    });
                }
                Claim::Busy => {
                    let left = self.wait_at_most.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        // The owner is still at it: Kratos asks again in a
                        // second and will find its outcome.
                        return Err(DeliveryError::ProviderUnavailable {
                            provider_code: None,
                            retry_after: 1,
                            uncertain: true,
                        });
                    }
                    // A settlement can slip between the look and the wait:
                    // never wait long for one round.
                    let round_wait = left.min(Duration::from_millis(250));
                    let _ = tokio::time::timeout(round_wait, self.store.changed(round)).await;
                    round += 1;
                }
            }
        }
    }

    /// The record was uncertain (or its owner's lease ran out) and is ours
    /// now: ask the provider that may have it (the one the record names:
    /// after a failover that is not the first) whether it has `outgoing`,
    /// which the caller composed on the channel the record names.
    pub(crate) async fn reconcile(
        &self,
        flight: Flight,
        since: UnixMs,
        named: Option<&str>,
        outgoing: &Outgoing,
        code: Option<&str>,
        providers: &ProviderSet,
    ) -> Result<Reconciled, DeliveryError> {
        let since_time = UNIX_EPOCH + Duration::from_millis(since);
        let Some(provider) = providers.named(named) else {
            // Another replica's configuration names a provider this one
            // does not have: it cannot be asked, so nothing may be sent.
            tracing::warn!(
                "an uncertain message names a provider this replica does not have; not resending"
            );
            self.settle(flight, Settle::Uncertain).await;
            return Err(DeliveryError::ProviderUnavailable {
                provider_code: None,
                retry_after: 1,
                uncertain: true,
            });
        };
        let span = tracing::info_span!(
            "reconcile",
            otel.kind = "client",
            provider.name = provider.name.as_str(),
            courier.outcome = tracing::field::Empty
        );
        let client = &provider.client;
        let found = match outgoing {
            Outgoing::Sms(sms) => in_span!(
                span.clone(),
                client.find_message(&sms.to, &sms.body, code, since_time)
            ),
            // Listed under its `whatsapp:` address, with the text Meta's
            // template gave it: matched by the variable it carries (the
            // code, or a notification's text).
            Outgoing::WhatsApp(message) => in_span!(
                span.clone(),
                client.find_message(&message.address(), "", Some(&message.variable), since_time)
            ),
            // Its own caller id: the call was placed from that.
            Outgoing::Call(call) => {
                let from = provider.call(call).map(|c| c.from);
                in_span!(
                    span.clone(),
                    client.find_call(&call.to, from.as_deref(), since_time)
                )
            }
        };
        span.record(
            "courier.outcome",
            match &found {
                Ok(Some(_)) => "found",
                Ok(None) => "not_found",
                Err(_) => "unknown",
            },
        );
        match found {
            Ok(Some(sid)) => {
                tracing::info!("reconciled: the provider had the message; not sending again");
                Ok(Reconciled::Found {
                    flight,
                    sid: Some(sid),
                })
            }
            Ok(None) => {
                tracing::info!("reconciled: the provider does not have the message; sending");
                Ok(Reconciled::NotFound { flight })
            }
            Err(e) => {
                tracing::warn!(
                    provider_error = e.kind(),
                    provider_code = e.provider_code(),
                    "could not ask the provider whether it has an uncertain message; not resending"
                );
                // A provider that cannot be asked is failing as surely as one
                // that cannot be sent to: its circuit counts it.
                if e.counts_toward_circuit() {
                    provider.note_circuit(|| {
                        if provider.breaker.failed() {
                            tracing::warn!(provider = provider.name, "circuit opened");
                        }
                    });
                }
                self.settle(flight, Settle::Uncertain).await;
                Err(DeliveryError::ProviderUnavailable {
                    provider_code: e.provider_code(),
                    retry_after: 1,
                    uncertain: true,
                })
            }
        }
    }

    /// Record how the send ended. A store failure here is logged, not
    /// returned: the provider's answer is what the caller is told, and the
    /// record expires into `Uncertain` (then reconciled) if it was lost.
    pub(crate) async fn settle(&self, flight: Flight, settle: Settle) {
        let (now, keep) = (self.now(), self.keep);
        let result = self
            .store
            .settle(flight.side, &flight.key, flight.owner, settle, now, keep)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not record a delivery outcome in the store");
        }
    }

    /// Right before the provider call: extend the lease over the whole call,
    /// so no other attempt takes the message over (and sends it again) while
    /// this call may still land. `Ok(false)`: the claim is someone else's
    /// now; the caller must not send.
    /// The channel and `provider` are recorded ([`Tried`]): an outcome left
    /// uncertain is reconciled with exactly them.
    pub(crate) async fn renew(
        &self,
        flight: &Flight,
        channel: Channel,
        provider: &str,
    ) -> Result<bool, DeliveryError> {
        let now = self.now();
        let renew = Settle::Renew {
            lease_until: now + self.lease.as_millis() as u64,
            provider: Tried::record(channel, provider),
        };
        let (key, owner, keep) = (&flight.key, flight.owner, self.keep);
        Ok(self
            .store
            .settle(flight.side, key, owner, renew, now, keep)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_tried_reads_back_and_older_records_keep_their_provider() {
        for channel in [Channel::Sms, Channel::Voice, Channel::WhatsApp] {
            for name in ["twilio", "signalwire-eu_2", "sms", "voice-1"] {
                let tried = Tried::parse(Some(Tried::record(channel, name)));
                assert_eq!(tried.channel, Some(channel), "{name}");
                assert_eq!(tried.provider.as_deref(), Some(name));
            }
        }
        // Written by a build that named the provider alone.
        let old = Tried::parse(Some("sms-gateway".into()));
        assert_eq!(
            (old.channel, old.provider.as_deref()),
            (None, Some("sms-gateway"))
        );
        assert_eq!(Tried::parse(None), Tried::default());
    }
}
