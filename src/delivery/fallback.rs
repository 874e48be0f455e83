//! SMS-to-voice fallback: a code that cannot arrive by SMS is spoken in one
//! call instead (`[fallback]`).
//!
//! Three ways in, all through the ordinary send path (ledger, limits,
//! budget, [`SendJob`]), so a fallback call is charged, deduplicated and
//! failed over like any call:
//!
//! | reason | when | what happens |
//! |---|---|---|
//! | `landline` | the numbering plan says FIXED_LINE | the call is sent instead of the SMS, in the same request |
//! | `not_mobile` | Twilio answers the SMS with 21614 | the SMS quota is given back, the call placed in the same request |
//! | `undelivered` | a status callback reports the SMS undelivered with an error of [`UNDELIVERED`] | one call with the same code, while the code lives |
//!
//! Kratos knows a message by its content and retries anything but a 2xx:
//! the ledger record stays the SMS message's, and its outcome marks the
//! call ([`ledger_sid`]), so a retry of the message is answered with the
//! call's sid, `"channel": "voice"`, `"fallback": true`, and nothing is
//! sent again.
//!
//! For `undelivered`, the SMS's send task keeps a [`SpokenCode`] (recipient,
//! code, template, language) in the store under a keyed hash of the SMS's
//! sid, sealed (XChaCha20-Poly1305, a key derived from the store secret,
//! the sid as associated data), until the code expires. The callback *takes* it (read and delete, atomically):
//! of two copies of a callback, on one replica or two, exactly one calls.

use std::future::Future;
use std::pin::Pin;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::delivery::channel::Channel;
use crate::delivery::client_ip::ClientAddr;
use crate::delivery::compose::Outgoing;
use crate::delivery::courier::{Admitted, Shared};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::TemplateType;
use crate::delivery::send::SendJob;
use crate::phone::{Recipient, RecipientCache};
use crate::provider::twilio::{Accepted, OutgoingCall, ProviderError};
use crate::store::{Keys, RecordKey, Settle, UnixMs};

/// Why a code went out as a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The numbering plan says FIXED_LINE.
    Landline,
    /// Twilio answered the SMS with 21614 (not a mobile number).
    NotMobile,
    /// A status callback reported the SMS undelivered.
    Undelivered,
}

impl Reason {
    /// The metric label and span attribute.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Landline => "landline",
            Reason::NotMobile => "not_mobile",
            Reason::Undelivered => "undelivered",
        }
    }

    pub const ALL: [Reason; 3] = [Reason::Landline, Reason::NotMobile, Reason::Undelivered];
}

/// Twilio's answer to an SMS that means "not a mobile number".
pub const NOT_MOBILE: u32 = 21614;

/// Carrier errors of an undelivered SMS that a call can get around, and
/// why. Anything else (the number does not exist, the user opted out, our
/// account or sender is at fault) is not helped by a call.
pub const UNDELIVERED: &[(u32, &str)] = &[
    (30003, "unreachable handset (off, or out of coverage for SMS): a call rings it again, or reaches its voicemail"),
    (30005, "unknown handset at the carrier for SMS: often a fixed line or a number moved to one, which a call reaches"),
    (30006, "a landline or a carrier that takes no SMS: a call reaches it"),
    (30007, "filtered by the carrier as unwanted SMS: a call is not filtered"),
    (30008, "unknown carrier error on the SMS path: the call takes another path"),
];

/// Whether a call can get around an undelivered SMS's error.
pub fn call_gets_around(code: Option<u32>) -> bool {
    code.is_some_and(|c| UNDELIVERED.iter().any(|(u, _)| *u == c))
}

/// What a ledger outcome of an SMS message carries when a call went out
/// instead: the call's sid behind this mark. Kept in the sid (any text is a
/// valid sid to both stores), so neither backend's record changes shape.
const LEDGER_MARK: &str = "voice-fallback:";

/// The ledger sid of a fallback call.
pub fn ledger_sid(sid: Option<String>) -> Option<String> {
    Some(format!("{LEDGER_MARK}{}", sid.unwrap_or_default()))
}

/// A ledger sid read back: the provider's sid, and whether it is a
/// fallback call's.
pub fn from_ledger(sid: Option<String>) -> (Option<String>, bool) {
    match sid {
        Some(s) if s.starts_with(LEDGER_MARK) => {
            let rest = &s[LEDGER_MARK.len()..];
            ((!rest.is_empty()).then(|| rest.to_owned()), true)
        }
        other => (other, false),
    }
}

/// What is needed to speak a code later: kept sealed, only until the code
/// expires, never logged (no `Debug`).
#[derive(Serialize, Deserialize)]
pub struct SpokenCode {
    pub to: String,
    pub code: String,
    /// Kratos's template name (`login_code_valid`...).
    pub template: String,
    /// The `Accept-Language` the message came with, cut to 64 characters.
    pub language: Option<String>,
    /// The end user the SMS was counted against: the call is counted
    /// against them too, not in the shared `unknown_ip` bucket. Absent in
    /// records written before it was kept.
    #[serde(default = "unknown_client")]
    pub client: ClientAddr,
}

fn unknown_client() -> ClientAddr {
    ClientAddr::Unknown
}

/// The store key of an SMS's fallback record, from its sid.
pub fn stash_key(keys: &Keys, sid: &str) -> RecordKey {
    keys.record_key("stash", &[sid.as_bytes()])
}

/// The record sealed with XChaCha20-Poly1305 (RustCrypto's
/// `chacha20poly1305`): the key is derived from the store secret, the nonce
/// is random (24 bytes, stored in front), and the sid is the associated
/// data, so a record moved under another sid's key does not open. Whoever
/// reads the store sees neither number nor code.
pub fn seal(keys: &Keys, sid: &str, spoken: &SpokenCode) -> Vec<u8> {
    let bytes = serde_json::to_vec(spoken).unwrap_or_default();
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let sealed = cipher(keys).encrypt(
        &XNonce::from(nonce),
        Payload {
            msg: &bytes,
            aad: sid.as_bytes(),
        },
    );
    match sealed {
        Ok(sealed) => [nonce.as_slice(), &sealed].concat(),
        // Only for a message longer than the cipher takes (~256 GiB).
        Err(_) => Vec::new(),
    }
}

/// The record opened; `None` if it was not sealed for this sid with these
/// keys, or was altered.
pub fn open(keys: &Keys, sid: &str, sealed: &[u8]) -> Option<SpokenCode> {
    let (nonce, sealed) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let bytes = cipher(keys)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: sealed,
                aad: sid.as_bytes(),
            },
        )
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

const NONCE_LEN: usize = 24;

fn cipher(keys: &Keys) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&keys.record("seal", &[]).into())
}

/// The future of a send, boxed: a fallback call is a send started from
/// within a send.
type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(Accepted, Option<Reason>), DeliveryError>> + Send + 'a>>;

impl Shared {
    /// After an SMS the provider accepted: keep what speaks its code, until
    /// the code expires, for an undelivered callback. A store failure only
    /// loses the fallback.
    pub(super) async fn keep_stash(&self, sid: Option<&str>, spoken: &SpokenCode, until: UnixMs) {
        let Some(sid) = sid else { return };
        let sealed = seal(&self.keys, sid, spoken);
        let now = self.now();
        if let Err(e) = self
            .store
            .stash_put(&stash_key(&self.keys, sid), &sealed, now, until)
            .await
        {
            tracing::warn!(error = %e, "could not keep the fallback record of an SMS; an undelivered callback will not call");
        }
    }

    /// The call that speaks a kept code to `recipient`, composed now (an
    /// SMS carries what it needs, not the call: most never place one).
    pub(super) fn call_for(
        &self,
        recipient: &Recipient,
        spoken: &SpokenCode,
    ) -> Option<OutgoingCall> {
        let template = TemplateType::from_name(&spoken.template);
        self.composer
            .spoken_call(
                recipient,
                &template,
                spoken.language.as_deref(),
                &spoken.code,
            )
            .ok()
    }

    /// Twilio answered the SMS with 21614 and the flight is still ours: give
    /// the SMS's quota back, take the voice quota, and place the call in
    /// the same flight (so the ledger answers Kratos's retry with it).
    pub(super) fn call_instead<'a>(
        &'a self,
        job: SendJob,
        call: OutgoingCall,
        provider: &ProviderError,
    ) -> SendFuture<'a> {
        let provider_code = provider.provider_code();
        Box::pin(async move {
            let now = self.now();
            if let Err(e) = self
                .store
                .refund(job.flight.side, &job.reservation, now)
                .await
            {
                tracing::warn!(error = %e, "could not give back the quota of an SMS that was not sent");
            }
            if let Err(e) = self
                .ledger
                .remember_unreachable(Channel::Sms, &job.recipient, provider_code)
                .await
            {
                tracing::warn!(error = %e, "could not remember an unreachable recipient");
            }
            let reservation = match self
                .reserve(job.flight.side, Channel::Voice, &job.recipient, job.client)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.ledger.settle(job.flight, Settle::Release).await;
                    return Err(e);
                }
            };
            // The call's own send renews the lease (naming the provider that
            // places it) before each provider is asked.
            let next = SendJob {
                flight: job.flight,
                channel: Channel::Voice,
                recipient: job.recipient,
                outgoing: Outgoing::Call(call),
                reservation,
                client: job.client,
                fallback: Some(Reason::NotMobile),
                spoken: None,
                stash_until: None,
                // The SMS's request: its time is spent already.
                started: job.started,
            };
            next.run(self).await
        })
    }
}

/// A status callback said an SMS did not arrive: if the error is one a call
/// gets around, and the SMS's fallback record is still there (the code
/// lives, and no other copy of the callback took it), call once.
pub(super) async fn undelivered(
    shared: &std::sync::Arc<Shared>,
    recipients: &RecipientCache,
    sid: &str,
    error_code: Option<u32>,
) {
    if !shared.fallback.undelivered || !call_gets_around(error_code) {
        return;
    }
    let span = tracing::info_span!(
        "fallback",
        courier.fallback.reason = Reason::Undelivered.label(),
        courier.outcome = tracing::field::Empty,
    );
    let taken = shared
        .store
        .stash_take(&stash_key(&shared.keys, sid), shared.now())
        .await;
    let sealed = match taken {
        Ok(Some(sealed)) => sealed,
        Ok(None) => {
            span.record("courier.outcome", "no_record");
            tracing::info!(parent: &span, "undelivered SMS: no fallback record (the code expired, another copy of the callback took it, or none was kept)");
            return;
        }
        Err(e) => {
            span.record("courier.outcome", "store_error");
            tracing::warn!(parent: &span, error = %e, "undelivered SMS: the store did not answer; no fallback call");
            return;
        }
    };
    let Some(spoken) = open(&shared.keys, sid, &sealed) else {
        tracing::warn!(parent: &span, "undelivered SMS: its fallback record could not be opened; no fallback call");
        return;
    };
    let prepared = recipients
        .parse(&spoken.to)
        .map_err(DeliveryError::InvalidRecipient)
        .and_then(|r| {
            let template = TemplateType::from_name(&spoken.template);
            shared
                .composer
                .spoken_call(&r, &template, spoken.language.as_deref(), &spoken.code)
                .map(|call| (r, call))
        });
    let (recipient, call): (Recipient, OutgoingCall) = match prepared {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(parent: &span, error = %e, "undelivered SMS: no fallback call could be composed");
            return;
        }
    };
    let admitted = Admitted {
        channel: Channel::Voice,
        recipient,
        outgoing: Outgoing::Call(call),
        // The ledger knows the call by the SMS it stands in for.
        body: format!("fallback for {sid}"),
        code: Some(spoken.code),
        client: spoken.client,
        fallback: Some(Reason::Undelivered),
        spoken: None,
        stash_until: None,
        started: tokio::time::Instant::now(),
    };
    let task = shared.clone();
    let done = shared
        .tasks
        .spawn(tracing::Instrument::instrument(
            async move { task.deliver(admitted).await },
            span.clone(),
        ))
        .await;
    match done {
        Ok(Ok(_)) => {
            span.record("courier.outcome", "called");
            tracing::info!(parent: &span, "undelivered SMS: the code is being spoken in a call");
        }
        Ok(Err(e)) => {
            span.record("courier.outcome", "refused");
            tracing::warn!(parent: &span, error = %e, "undelivered SMS: the fallback call was not placed");
        }
        Err(_) => {
            span.record("courier.outcome", "unknown");
        }
    }
}

/// Until when a message's fallback record is kept: its code's end. Only a
/// code message whose lifetime is known gets one.
pub fn stash_until(expires_in_minutes: Option<i64>, now: UnixMs) -> Option<UnixMs> {
    let minutes = expires_in_minutes.filter(|m| *m > 0)?;
    Some(now.saturating_add((minutes as u64).saturating_mul(60_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_for_its_sid_and_keys_and_hides_the_code() {
        let keys = Keys::from_secret(b"s");
        let spoken = SpokenCode {
            to: "+14155550123".into(),
            code: "482917".into(),
            template: "login_code_valid".into(),
            language: Some("de".into()),
            client: ClientAddr::Unknown,
        };
        let sealed = seal(&keys, "SM1", &spoken);
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("482917") && !text.contains("4155550123"));
        let back = open(&keys, "SM1", &sealed).unwrap();
        assert_eq!(
            (back.to.as_str(), back.code.as_str()),
            ("+14155550123", "482917")
        );
        assert!(open(&keys, "SM2", &sealed).is_none());
        assert!(open(&Keys::from_secret(b"t"), "SM1", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open(&keys, "SM1", &tampered).is_none());
    }

    #[test]
    fn ledger_sids_say_whether_a_call_stood_in() {
        assert_eq!(
            from_ledger(ledger_sid(Some("CA1".into()))),
            (Some("CA1".into()), true)
        );
        assert_eq!(from_ledger(ledger_sid(None)), (None, true));
        assert_eq!(from_ledger(Some("SM1".into())), (Some("SM1".into()), false));
        assert!(call_gets_around(Some(30003)) && !call_gets_around(Some(30004)));
    }
}
