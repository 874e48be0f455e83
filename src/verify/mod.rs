//! The verify API, for applications without Kratos: "send me a code"
//! (`POST /v1/verify/request`) and "is this the code" (`POST
//! /v1/verify/check`), done properly:
//!
//! - codes come from the operating system's CSPRNG, and only a keyed hash
//!   of each is stored, with its expiry and an attempt counter, in the
//!   [`Store`] (memory, or Redis shared by replicas; [`code`] says how a
//!   resend finds the same code again without the code being stored);
//! - a request for a number with a pending code re-sends that code, so a
//!   resend never invalidates what the user is typing, and does not extend
//!   its life;
//! - every send goes through the courier's pipeline like a Kratos message
//!   (recipient check, test numbers, policy, ledger, limits, budget,
//!   provider, voice), each resend charged to the limits;
//! - a new code can be checked only once a provider accepted a send of it
//!   (or may have: an uncertain outcome): a request that the limits,
//!   policy, budget, fraud guard, Lookup or the provider refuse leaves
//!   nothing to check, so refused requests cannot be used to mint codes
//!   to guess at;
//! - a check compares hashes in constant time, atomically in the store: of
//!   concurrent checks of one code exactly one is approved, the code is then
//!   spent, and `verify.max_attempts` wrong codes drop it;
//! - checks of one number are capped per clock hour across all its codes
//!   (`verify.max_checks_per_hour`, counted in the store on every replica
//!   under a keyed hash of the number): past it a check is refused without
//!   being compared, so a fresh code after `max_attempts` buys no guesses;
//! - a request with an `Idempotency-Key` header is done once: a retry with
//!   the same key (and the same number and body) gets the first answer
//!   without another send, a retry while the first is still at work gets
//!   409, and the key with another number or body gets 422. The key and
//!   body are kept as keyed hashes, until the code expires; a refused
//!   request forgets its key, so its retry is tried again.
//!
//! ```text
//!             request (none pending)              check: match
//!   (none) ───────────────────────────► Pending ─────────────────► (none): approved
//!                   (checkable once a send is accepted; dropped if refused)
//!     ▲                                  │  ▲  │
//!     │ expires (verify.ttl_ms)          │  │  │ check: wrong, attempts left
//!     └──────────────────────────────────┘  └──┘ request: same code re-sent
//!     ▲                                     │
//!     └─────────────────────────────────────┘ check: wrong, the last attempt
//! ```

pub mod body;
pub(crate) mod code;
pub(crate) mod demo;
pub(crate) mod error;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::VerifyConfig;
use crate::delivery::courier::{Courier, Endpoint};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::CourierMessage;
use crate::domain::{Channel, LanguageTag};
use crate::phone::Recipient;
use crate::store::{CodeCheck, Idempotency, Keys, PendingCode, Store, UnixMs};

/// The windows of `verify.max_checks_per_hour`: clock hours.
const HOUR_MS: u64 = 3_600_000;
/// How long an `Idempotency-Key` is held "in progress" by a request at
/// work: longer than any request takes (a send is bounded well within
/// it), so a replica that died holding one frees it within a minute.
const IDEMPOTENCY_LEASE_MS: u64 = 60_000;

pub(crate) use body::{Bodies, CodeAttempt, CodeRequest};
pub(crate) use code::Codes;
pub(crate) use error::VerifyError;

/// A code was sent (or re-sent).
#[derive(Debug, Clone)]
pub(crate) struct Requested {
    /// The channel it went out on (voice falls back to SMS without a
    /// caller id).
    pub(crate) channel: Channel,
    /// Seconds the code can still be checked.
    pub(crate) expires_in: u64,
    /// When the code stops counting (Unix ms).
    pub(crate) expires_at: UnixMs,
    /// Which send of this code it was (1: new).
    pub(crate) sends: u32,
    /// For the log line.
    pub(crate) masked_recipient: String,
}

/// Requests and checks codes; one per service.
pub(crate) struct Verifier {
    config: VerifyConfig,
    codes: Codes,
    store: Arc<Store>,
    clock: Clock,
}

impl Verifier {
    pub(crate) fn new(config: VerifyConfig, keys: Keys, store: Arc<Store>, clock: Clock) -> Self {
        Verifier {
            codes: Codes::new(keys, config.code_length),
            config,
            store,
            clock,
        }
    }

    pub(crate) fn config(&self) -> &VerifyConfig {
        &self.config
    }

    fn now(&self) -> UnixMs {
        self.clock.unix().as_millis() as u64
    }

    /// Send a code to `request.to`: the pending one if there is one, a new
    /// one otherwise. With an `Idempotency-Key`, a retry of a request that
    /// was answered gets that answer, and nothing is sent again.
    pub(crate) async fn request(
        &self,
        courier: &Courier,
        request: &CodeRequest,
    ) -> Result<Requested, VerifyError> {
        let recipient = parse(courier, &request.to)?;
        let Some(header) = &request.idempotency_key else {
            return self.send(courier, request, &recipient).await;
        };
        let e164 = recipient.e164();
        let key = self.codes.idempotency_key(header);
        let locale = request.locale.as_ref().map(|l| l.as_str()).unwrap_or("");
        let fingerprint = self
            .codes
            .fingerprint(e164, request.channel.as_str(), locale);
        let now = self.now();
        let found = self
            .store
            .verify_idempotency_begin(&key, &fingerprint, now, now + IDEMPOTENCY_LEASE_MS)
            .await?;
        match found {
            Idempotency::New => {}
            Idempotency::InProgress { fingerprint: f }
            | Idempotency::Done { fingerprint: f, .. }
                if f != fingerprint =>
            {
                return Err(VerifyError::IdempotencyKeyReused)
            }
            Idempotency::InProgress { .. } => return Err(VerifyError::IdempotencyKeyInProgress),
            Idempotency::Done { answer, .. } => {
                return replay(&answer, now, &recipient).ok_or_else(|| {
                    crate::store::StoreError("unreadable idempotency record".into()).into()
                })
            }
        }
        let result = self.send(courier, request, &recipient).await;
        // Answered: kept until the code expires (a replay after that would
        // name a dead code). Refused: forgotten, so a retry is tried again.
        let (answer, until) = match &result {
            Ok(r) => (Some(r.record()), r.expires_at),
            Err(_) => (None, now),
        };
        let finished = self
            .store
            .verify_idempotency_finish(&key, &fingerprint, answer.as_deref(), self.now(), until)
            .await;
        if let Err(e) = finished {
            tracing::warn!(error = %e, "a verify request's Idempotency-Key could not be recorded");
        }
        result
    }

    /// The work of [`Verifier::request`]: find or make the code, send it,
    /// and make a new code checkable only once a send of it was accepted.
    async fn send(
        &self,
        courier: &Courier,
        request: &CodeRequest,
        recipient: &Recipient,
    ) -> Result<Requested, VerifyError> {
        let e164 = recipient.e164();
        let now = self.now();
        let seed = Codes::fresh_seed();
        let fresh = PendingCode {
            hash: self.codes.hash(e164, &self.codes.code(&seed)),
            seed,
            expires_at: now.saturating_add(self.config.ttl.as_millis() as u64),
        };
        let key = self.codes.record_key(e164);
        let pending = self.store.verify_pending(&key, &fresh, now).await?;
        let code = self.codes.code(&pending.code.seed);
        let left = Duration::from_millis(pending.code.expires_at.saturating_sub(now));
        let minutes = left.as_secs().div_ceil(60).max(1);
        let (text_locale, template) = self.config.template(request.locale.as_ref());
        // A call speaks the language asked for when voice.sentences has it,
        // even if verify.templates has no text for it.
        let locale = request.locale.as_ref().unwrap_or(text_locale);
        let body = template
            .replace("{code}", &code)
            .replace("{minutes}", &minutes.to_string());
        let body = self.config.with_web_otp(body, &code);
        let mut message = CourierMessage::verification(
            e164,
            body,
            &code,
            minutes as i64,
            locale,
            request.channel == Channel::Voice,
            pending.sends - 1,
        );
        message.client_address = request.client_ip;
        let hash = pending.code.hash;
        match courier.deliver(Endpoint::Sms, &message).await {
            Ok(delivered) => {
                self.store.verify_sent(&key, &hash, self.now()).await?;
                Ok(Requested {
                    channel: delivered.channel,
                    expires_in: left.as_millis().div_ceil(1000) as u64,
                    expires_at: pending.code.expires_at,
                    sends: pending.sends,
                    masked_recipient: delivered.masked_recipient,
                })
            }
            // The provider may have it (a timeout, a lost answer: the
            // ledger holds it as uncertain): the user may be reading it.
            Err(
                e @ DeliveryError::ProviderUnavailable {
                    uncertain: true, ..
                },
            ) => {
                if let Err(s) = self.store.verify_sent(&key, &hash, self.now()).await {
                    tracing::warn!(error = %s, "a code whose send is uncertain could not be made checkable");
                }
                Err(e.into())
            }
            // Certainly not sent (refused before the provider, or by it):
            // nothing to check.
            Err(e) => {
                if let Err(s) = self.store.verify_unsent(&key, &hash, self.now()).await {
                    tracing::warn!(error = %s, "a code whose send was refused could not be dropped (it stays uncheckable)");
                }
                Err(e.into())
            }
        }
    }

    /// Check `attempt.code` against the number's pending code.
    pub(crate) async fn check(
        &self,
        courier: &Courier,
        attempt: &CodeAttempt,
    ) -> Result<(), VerifyError> {
        let recipient = parse(courier, &attempt.to)?;
        let e164 = recipient.e164();
        let key = self.codes.record_key(e164);
        let now = self.now();
        // The hour's cap, across codes, taken before anything is compared:
        // past it not even the right code is approved.
        let hour = now / HOUR_MS;
        let until = (hour + 1) * HOUR_MS;
        let counted = self
            .store
            .relay_take(
                &self.codes.checks_key(e164, hour),
                self.config.max_checks_per_hour,
                now,
                until,
            )
            .await?;
        if !counted {
            return Err(VerifyError::TooManyChecks {
                retry_after: (until - now).div_ceil(1000),
            });
        }
        let hash = self.codes.hash(e164, &attempt.code);
        let max = self.config.max_attempts;
        match self.store.verify_check(&key, &hash, max, now).await? {
            CodeCheck::Approved => {
                self.approved(courier, &recipient).await;
                Ok(())
            }
            CodeCheck::Mismatch { attempts_left } => {
                Err(VerifyError::CodeMismatch { attempts_left })
            }
            CodeCheck::TooManyAttempts => Err(VerifyError::TooManyAttempts),
            CodeCheck::NoPendingCode => Err(VerifyError::NoPendingCode),
        }
    }

    /// The one place a code is confirmed: every approval passes here once.
    ///
    /// Approvals feed the fraud guard's conversion counts like Kratos's
    /// confirmations do (`Courier::confirmed_recipient`): a number range
    /// that receives codes and never confirms one is what SMS pumping looks
    /// like. The code is spent either way; a store that cannot count this
    /// one confirmation does not turn the approval into an error.
    async fn approved(&self, courier: &Courier, recipient: &Recipient) {
        tracing::debug!(recipient = %recipient.masked(), "verification code approved");
        if let Err(e) = courier.confirmed_recipient(recipient).await {
            tracing::warn!(error = %e, "a verification approval could not be counted as a confirmation");
        }
    }
}

impl Requested {
    /// What an `Idempotency-Key` keeps of the answer: the channel, the
    /// expiry and the send (no code, no number).
    fn record(&self) -> String {
        format!(
            "{}|{}|{}",
            self.channel.as_str(),
            self.expires_at,
            self.sends
        )
    }
}

/// The first answer again, from [`Requested::record`]: `expires_in` is what
/// is left of the code's life now.
fn replay(record: &str, now: UnixMs, recipient: &Recipient) -> Option<Requested> {
    let mut parts = record.split('|');
    let channel = match parts.next()? {
        "sms" => Channel::Sms,
        "voice" => Channel::Voice,
        _ => return None,
    };
    let expires_at: UnixMs = parts.next()?.parse().ok()?;
    let sends = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Requested {
        channel,
        expires_in: expires_at.saturating_sub(now).div_ceil(1000),
        expires_at,
        sends,
        masked_recipient: recipient.masked(),
    })
}

/// The number, checked and in canonical E.164 form (so `+44 07…` and `+447…`
/// are one number for the record key and the hash).
fn parse(courier: &Courier, to: &str) -> Result<Recipient, VerifyError> {
    courier
        .recipients()
        .parse(to)
        .map_err(|e| VerifyError::Delivery(DeliveryError::InvalidRecipient(e)))
}

/// What the verify API does with its checked section.
impl VerifyConfig {
    /// The SMS text with the Web OTP line last, when a domain is set.
    pub(crate) fn with_web_otp(&self, body: String, code: &str) -> String {
        match &self.web_otp_domain {
            Some(domain) => format!("{body}\n\n@{domain} #{code}"),
            None => body,
        }
    }

    /// The text for `locale`: its own, else one of its language (`de-AT`
    /// finds `de` or `de-DE`), else the default language's.
    pub(crate) fn template(&self, locale: Option<&LanguageTag>) -> (&LanguageTag, &str) {
        let found = locale.and_then(|tag| {
            self.templates.get_key_value(tag).or_else(|| {
                let primary = tag.split('-').next().unwrap_or(tag);
                self.templates
                    .iter()
                    .find(|(k, _)| k.split('-').next() == Some(primary))
            })
        });
        let (tag, text) = found
            .or_else(|| self.templates.get_key_value(&self.default_locale))
            .expect("the default locale always has a text (checked)");
        (tag, text.as_str())
    }
}
