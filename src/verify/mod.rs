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
//! - a check compares hashes in constant time, atomically in the store: of
//!   concurrent checks of one code exactly one is approved, the code is then
//!   spent, and `verify.max_attempts` wrong codes drop it.
//!
//! ```text
//!             request (none pending)              check: match
//!   (none) ───────────────────────────► Pending ─────────────────► (none): approved
//!     ▲                                  │  ▲  │
//!     │ expires (verify.ttl_ms)          │  │  │ check: wrong, attempts left
//!     └──────────────────────────────────┘  └──┘ request: same code re-sent
//!     ▲                                     │
//!     └─────────────────────────────────────┘ check: wrong, the last attempt
//! ```

pub mod body;
pub mod code;
pub mod demo;
pub mod error;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::VerifyConfig;
use crate::delivery::courier::{Courier, Endpoint};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::CourierMessage;
use crate::domain::Channel;
use crate::phone::Recipient;
use crate::store::{CodeCheck, Keys, PendingCode, Store, UnixMs};

pub use body::{Bodies, CodeAttempt, CodeRequest};
pub use code::Codes;
pub use error::VerifyError;

/// A code was sent (or re-sent).
#[derive(Debug, Clone)]
pub struct Requested {
    /// The channel it went out on (voice falls back to SMS without a
    /// caller id).
    pub channel: Channel,
    /// Seconds the code can still be checked.
    pub expires_in: u64,
    /// Which send of this code it was (1: new).
    pub sends: u32,
    /// For the log line.
    pub masked_recipient: String,
}

/// Requests and checks codes; one per service.
pub struct Verifier {
    config: VerifyConfig,
    codes: Codes,
    store: Arc<Store>,
    clock: Clock,
}

impl Verifier {
    pub fn new(config: VerifyConfig, keys: Keys, store: Arc<Store>, clock: Clock) -> Self {
        Verifier {
            codes: Codes::new(keys, config.code_length),
            config,
            store,
            clock,
        }
    }

    pub fn config(&self) -> &VerifyConfig {
        &self.config
    }

    fn now(&self) -> UnixMs {
        self.clock.unix().as_millis() as u64
    }

    /// Send a code to `request.to`: the pending one if there is one, a new
    /// one otherwise.
    pub async fn request(
        &self,
        courier: &Courier,
        request: &CodeRequest,
    ) -> Result<Requested, VerifyError> {
        let recipient = parse(courier, &request.to)?;
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
        let delivered = courier.deliver(Endpoint::Sms, &message).await?;
        Ok(Requested {
            channel: delivered.channel,
            expires_in: left.as_millis().div_ceil(1000) as u64,
            sends: pending.sends,
            masked_recipient: delivered.masked_recipient,
        })
    }

    /// Check `attempt.code` against the number's pending code.
    pub async fn check(&self, courier: &Courier, attempt: &CodeAttempt) -> Result<(), VerifyError> {
        let recipient = parse(courier, &attempt.to)?;
        let e164 = recipient.e164();
        let key = self.codes.record_key(e164);
        let hash = self.codes.hash(e164, &attempt.code);
        let max = self.config.max_attempts;
        match self
            .store
            .verify_check(&key, &hash, max, self.now())
            .await?
        {
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

/// The number, checked and in canonical E.164 form (so `+44 07…` and `+447…`
/// are one number for the record key and the hash).
fn parse(courier: &Courier, to: &str) -> Result<Recipient, VerifyError> {
    courier
        .recipients()
        .parse(to)
        .map_err(|e| VerifyError::Delivery(DeliveryError::InvalidRecipient(e)))
}
