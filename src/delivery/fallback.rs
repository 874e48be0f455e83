//! SMS-to-voice fallback: a code that cannot arrive by SMS is spoken in one
//! call instead (`[fallback]`); and WhatsApp-to-SMS: a code WhatsApp cannot
//! deliver goes by SMS, once (`[whatsapp]`).
//!
//! Three ways in, all through the ordinary send path (ledger, limits,
//! budget, [`SendJob`]), so a fallback call is charged, deduplicated and
//! failed over like any call:
//!
//! | reason | when | what happens |
//! |---|---|---|
//! | `landline` | the numbering plan says FIXED_LINE | the call is sent instead of the SMS, in the same request |
//! | `not_mobile` | Twilio answers the SMS with [`errors::NOT_MOBILE`] | the SMS quota is given back, the call placed in the same request |
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
//!
//! WhatsApp to SMS follows the same model, with the SMS standing in:
//!
//! | reason | when | what happens |
//! |---|---|---|
//! | `whatsapp_refused` | Twilio refuses the WhatsApp create with a code of [`WHATSAPP_UNDELIVERED`], or the number is remembered as not on WhatsApp | the WhatsApp quota is given back, the SMS sent in the same request; Kratos gets `"channel": "sms"`, `"fallback": true` |
//! | `whatsapp_undelivered` | a status callback reports the WhatsApp message failed or undelivered with a code of [`WHATSAPP_UNDELIVERED`] | one SMS with the same text Kratos wrote, while the code lives |
//! | `whatsapp_no_receipt` | no `delivered` or `read` receipt within `whatsapp.fallback_after_ms` of the accepted create (a timer in the replica that sent it; a receipt, on any replica, takes the record first) | the same SMS, once |
//!
//! The SMS a WhatsApp message would fall back to is composed with it (the
//! text is Kratos's), and kept sealed under the WhatsApp sid ([`SmsInstead`],
//! its own key space, [`sms_stash_key`]) for the callback. A notification
//! sent by WhatsApp (`whatsapp.notification_content_sid`) falls back alike;
//! having no code to expire, its record is kept [`NOTICE_SMS_KEPT`].
//!
//! (Longer than our usual 400 lines, on purpose: both stand-ins (a call for
//! an SMS, an SMS for a WhatsApp message) share their records, the sealing,
//! the ledger marks and the callback paths, which differ by a channel;
//! splitting them would copy that.)

use std::future::Future;
use std::pin::Pin;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::delivery::channel::Channel;
use crate::delivery::client_ip::ClientAddr;
use crate::delivery::compose::Outgoing;
use crate::delivery::courier::{Admitted, Shared};
use crate::delivery::error::DeliveryError;
use crate::delivery::message::TemplateType;
use crate::delivery::send::SendJob;
use crate::phone::{Recipient, RecipientCache};
use crate::provider::errors;
use crate::provider::twilio::{Accepted, OutgoingCall, OutgoingSms, ProviderError};
use crate::store::{Keys, RecordKey, Reservation, Settle, UnixMs};

/// Why a code went out on another channel (the label type lives in
/// [`crate::domain`], below the metrics that count it).
pub(crate) use crate::domain::FallbackReason as Reason;

/// Carrier errors of an undelivered SMS that a call can get around, and
/// why. Anything else (the number does not exist, the user opted out, our
/// account or sender is at fault) is not helped by a call.
pub(crate) const UNDELIVERED: &[(u32, &str)] = &[
    (errors::UNREACHABLE_HANDSET, "unreachable handset (off, or out of coverage for SMS): a call rings it again, or reaches its voicemail"),
    (errors::UNKNOWN_HANDSET, "unknown handset at the carrier for SMS: often a fixed line or a number moved to one, which a call reaches"),
    (errors::LANDLINE_OR_UNREACHABLE_CARRIER, "a landline or a carrier that takes no SMS: a call reaches it"),
    (errors::CARRIER_FILTERED, "filtered by the carrier as unwanted SMS: a call is not filtered"),
    (errors::CARRIER_UNKNOWN_ERROR, "unknown carrier error on the SMS path: the call takes another path"),
];

/// Whether a call can get around an undelivered SMS's error.
pub(crate) fn call_gets_around(code: Option<u32>) -> bool {
    code.is_some_and(|c| UNDELIVERED.iter().any(|(u, _)| *u == c))
}

/// WhatsApp's errors (Twilio's 630xx) an SMS gets around, at the create or
/// in a status callback, and why. [`errors::NOT_ON_WHATSAPP`] and
/// [`errors::NOT_A_WHATSAPP_RECIPIENT`] also mark the number as not on WhatsApp for `dedup.unreachable_ms` (`provider::errors`), so its
/// next code goes by SMS at once. Configuration errors (63007 a `From`
/// that is no WhatsApp sender, 63016 no template) are the operator's: no
/// SMS, an alert.
pub(crate) const WHATSAPP_UNDELIVERED: &[(u32, &str)] = &[
    (errors::NOT_ON_WHATSAPP, "the number is not on WhatsApp"),
    (
        errors::WHATSAPP_CHANNEL_FAILED,
        "WhatsApp's channel failed for this message (transient): SMS is another path",
    ),
    (
        errors::WHATSAPP_SENDER_OVER_LIMIT,
        "the WhatsApp sender is over Meta's messaging limit (transient): SMS has its own",
    ),
    (
        errors::NOT_A_WHATSAPP_RECIPIENT,
        "not a WhatsApp recipient (not on WhatsApp, terms not accepted, an old app)",
    ),
    (
        errors::WHATSAPP_USER_LIMITATION,
        "WhatsApp will not deliver to this user (Meta 472, an experiment group)",
    ),
];

/// Whether an SMS can get around a WhatsApp message's error.
pub(crate) fn sms_gets_around(code: Option<u32>) -> bool {
    code.is_some_and(|c| WHATSAPP_UNDELIVERED.iter().any(|(u, _)| *u == c))
}

/// What a ledger outcome of a message carries when another channel went
/// out instead: the stand-in's sid behind this mark. Kept in the sid (any
/// text is a valid sid to both stores), so neither backend's record
/// changes shape.
const LEDGER_MARK: &str = "voice-fallback:";
/// The mark of an SMS standing in for a WhatsApp message.
const SMS_LEDGER_MARK: &str = "sms-fallback:";

/// The ledger sid of a stand-in on `channel`.
pub(crate) fn ledger_sid(channel: Channel, sid: Option<String>) -> Option<String> {
    let mark = match channel {
        Channel::Sms => SMS_LEDGER_MARK,
        _ => LEDGER_MARK,
    };
    Some(format!("{mark}{}", sid.unwrap_or_default()))
}

/// A ledger sid read back: the provider's sid, and the channel of the
/// stand-in if one went out.
pub(crate) fn from_ledger(sid: Option<String>) -> (Option<String>, Option<Channel>) {
    let marked = |s: &str| {
        [
            (LEDGER_MARK, Channel::Voice),
            (SMS_LEDGER_MARK, Channel::Sms),
        ]
        .into_iter()
        .find_map(|(mark, channel)| s.strip_prefix(mark).map(|rest| (rest.to_owned(), channel)))
    };
    match sid.as_deref().and_then(marked) {
        Some((rest, channel)) => ((!rest.is_empty()).then_some(rest), Some(channel)),
        None => (sid, None),
    }
}

/// What is needed to speak a code later: kept sealed, only until the code
/// expires, never logged (no `Debug`).
#[derive(Serialize, Deserialize)]
pub(crate) struct SpokenCode {
    pub(crate) to: String,
    pub(crate) code: String,
    /// Kratos's template name (`login_code_valid`...).
    pub(crate) template: String,
    /// The `Accept-Language` the message came with, cut to 64 characters.
    pub(crate) language: Option<String>,
    /// The end user the SMS was counted against: the call is counted
    /// against them too, not in the shared `unknown_ip` bucket. Absent in
    /// records written before it was kept.
    #[serde(default = "unknown_client")]
    pub(crate) client: ClientAddr,
    /// A notification's text (no code; `code` is empty): the call reads
    /// it instead of speaking a code.
    #[serde(default)]
    pub(crate) text: Option<String>,
}

fn unknown_client() -> ClientAddr {
    ClientAddr::UNKNOWN
}

/// The SMS that stands in for a WhatsApp message after an undelivered
/// callback: Kratos's text, kept sealed, only until the code expires,
/// never logged (no `Debug`).
#[derive(Serialize, Deserialize)]
pub(crate) struct SmsInstead {
    pub(crate) to: String,
    pub(crate) body: String,
    pub(crate) code: String,
    pub(crate) validity_period: Option<u32>,
    pub(crate) client: ClientAddr,
    /// A notification's SMS (no code): counted under the notification
    /// limits, as the WhatsApp message was. Absent in records written
    /// before notifications went by WhatsApp.
    #[serde(default)]
    pub(crate) notification: bool,
}

/// The store key of a WhatsApp message's SMS record, from its sid (apart
/// from the SMS records' keys: an older replica never opens it as a call).
pub(crate) fn sms_stash_key(keys: &Keys, sid: &str) -> RecordKey {
    keys.record_key("stash-whatsapp", &[sid.as_bytes()])
}

/// The store key of an SMS's fallback record, from its sid.
pub(crate) fn stash_key(keys: &Keys, sid: &str) -> RecordKey {
    keys.record_key("stash", &[sid.as_bytes()])
}

/// The record sealed with XChaCha20-Poly1305 (RustCrypto's
/// `chacha20poly1305`): the key is derived from the store secret, the nonce
/// is random (24 bytes, stored in front), and the sid is the associated
/// data, so a record moved under another sid's key does not open. Whoever
/// reads the store sees neither number nor code.
pub(crate) fn seal<T: Serialize>(keys: &Keys, sid: &str, spoken: &T) -> Vec<u8> {
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
pub(crate) fn open<T: serde::de::DeserializeOwned>(
    keys: &Keys,
    sid: &str,
    sealed: &[u8],
) -> Option<T> {
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
        let language = spoken.language.as_deref();
        match &spoken.text {
            Some(text) => self
                .composer
                .notice_call(recipient, &template, language, text),
            None => self
                .composer
                .spoken_call(recipient, &template, language, &spoken.code),
        }
        .ok()
    }

    /// A fallback in the same flight: give back the quota of `job`'s
    /// channel (its message was certainly not sent) and take `to`'s. When
    /// `to`'s limits or the budget refuse, the flight is released and the
    /// refusal is Kratos's answer.
    async fn trade_quota(&self, job: &SendJob, to: Channel) -> Result<Reservation, DeliveryError> {
        if let Err(e) = self
            .store
            .refund(job.flight.side, &job.reservation, self.now())
            .await
        {
            tracing::warn!(error = %e, channel = job.channel.as_str(), "could not give back the quota of a message that was not sent");
        }
        let reserved = self
            .reserve(
                job.flight.side,
                to,
                &job.recipient,
                job.client,
                job.notification,
            )
            .await;
        if reserved.is_err() {
            self.ledger.settle(job.flight, Settle::Release).await;
        }
        reserved
    }

    /// Twilio answered the SMS with [`errors::NOT_MOBILE`] and the flight is still ours: give
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
            if let Err(e) = self
                .ledger
                .remember_unreachable(Channel::Sms, &job.recipient, provider_code)
                .await
            {
                tracing::warn!(error = %e, "could not remember an unreachable recipient");
            }
            let reservation = self.trade_quota(&job, Channel::Voice).await?;
            // The call's own send renews the lease (naming the provider that
            // places it) before each provider is asked.
            let next = SendJob {
                flight: job.flight,
                channel: Channel::Voice,
                recipient: job.recipient,
                outgoing: Outgoing::Call(call),
                reservation,
                client: job.client,
                notification: job.notification,
                fallback: Some(Reason::NotMobile),
                spoken: None,
                sms: None,
                stash_until: None,
                // The SMS's request: its time is spent already.
                started: job.started,
                prefer: None,
            };
            next.run(self).await
        })
    }
}

impl Shared {
    /// After a WhatsApp message the provider accepted: keep the SMS that
    /// stands in for it, until the code expires, for an undelivered
    /// callback, and wait for its receipt (`whatsapp.fallback_after_ms`).
    /// A store failure only loses the fallback.
    pub(super) async fn keep_sms_stash(&self, sid: Option<&str>, sms: &SmsInstead, until: UnixMs) {
        let Some(sid) = sid else { return };
        let sealed = seal(&self.keys, sid, sms);
        let now = self.now();
        if let Err(e) = self
            .store
            .stash_put(&sms_stash_key(&self.keys, sid), &sealed, now, until)
            .await
        {
            tracing::warn!(error = %e, "could not keep the SMS record of a WhatsApp message; an undelivered callback will not send the SMS");
            return;
        }
        if let (Some(after), Some(me)) = (self.whatsapp_fallback_after, self.me.upgrade()) {
            // Not a send task: shutdown does not wait for it. A replica
            // that stops before it fires loses this one fallback (the
            // record expires with the code).
            let until = self.clock.elapsed() + after;
            tokio::spawn(
                no_receipt_timer(me, sid.to_owned(), until).instrument(tracing::Span::current()),
            );
        }
    }

    /// Twilio refused the WhatsApp message with a code an SMS gets around
    /// and the flight is still ours: give the WhatsApp quota back, take the
    /// SMS quota, and send the SMS in the same flight (so the ledger
    /// answers Kratos's retry with it).
    pub(super) fn sms_instead<'a>(
        &'a self,
        job: SendJob,
        sms: OutgoingSms,
        provider: &ProviderError,
    ) -> SendFuture<'a> {
        let provider_code = provider.provider_code();
        Box::pin(async move {
            if errors::remembers_unreachable(provider_code) {
                if let Err(e) = self
                    .ledger
                    .remember_unreachable(Channel::WhatsApp, &job.recipient, provider_code)
                    .await
                {
                    tracing::warn!(error = %e, "could not remember a number that is not on WhatsApp");
                }
            }
            let reservation = self.trade_quota(&job, Channel::Sms).await?;
            let next = SendJob {
                flight: job.flight,
                channel: Channel::Sms,
                recipient: job.recipient,
                outgoing: Outgoing::Sms(sms),
                reservation,
                client: job.client,
                notification: job.notification,
                fallback: Some(Reason::WhatsAppRefused),
                spoken: None,
                sms: None,
                stash_until: None,
                started: job.started,
                prefer: None,
            };
            next.run(self).await
        })
    }
}

/// How long a status callback waits for its message's record, and how
/// often it looks: see [`take_record`].
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const RECORD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Take the record a send task keeps for a message's callback. The task
/// keeps it once the provider's answer (with the sid, the record's key) is
/// back, and a provider may post the callback before that: Twilio's
/// answer can be slow to arrive while its callback is fast (the sandbox's
/// is immediate). So a callback that finds nothing looks again for a
/// moment (at most [`RECORD_WAIT`]) before it concludes there is none; a
/// callback whose record expired or was taken by another copy waits that
/// long for nothing, which Twilio's callback timeout (15 s) allows.
async fn take_record(
    shared: &Shared,
    key: &RecordKey,
) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
    let started = std::time::Instant::now();
    loop {
        match shared.store.stash_take(key, shared.now()).await {
            Ok(None) if started.elapsed() < RECORD_WAIT => {
                tokio::time::sleep(RECORD_POLL).await;
            }
            other => return other,
        }
    }
}

/// The timer of an accepted WhatsApp message: at `until` (on the courier's
/// clock), its SMS goes unless a receipt took the record. A named future
/// type: the send path that starts it is also what it runs.
fn no_receipt_timer(
    shared: std::sync::Arc<Shared>,
    sid: String,
    until: std::time::Duration,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        shared.clock.sleep_until(until).await;
        whatsapp_sms(&shared, &sid, Reason::WhatsAppNoReceipt, None, Take::Once).await;
    })
}

/// A WhatsApp message's receipt (`delivered`, `read`) came: its SMS record
/// is taken and dropped, so no timer sends the SMS. Only when
/// `whatsapp.fallback_after_ms` is on (otherwise the record waits for a
/// failure report until the code expires, as before).
pub(super) async fn whatsapp_receipt(shared: &Shared, sid: &str) {
    if shared.whatsapp_fallback_after.is_none() {
        return;
    }
    let key = sms_stash_key(&shared.keys, sid);
    if let Err(e) = shared.store.stash_take(&key, shared.now()).await {
        tracing::warn!(error = %e, "WhatsApp receipt: the store did not answer; its SMS may still go when the receipt timer fires");
    }
}

/// A status callback said a WhatsApp message did not arrive: if an SMS
/// gets around the error, and the message's SMS record is still there (the
/// code lives, and no other copy of the callback took it), send it once.
pub(super) async fn whatsapp_undelivered(
    shared: &std::sync::Arc<Shared>,
    sid: &str,
    error_code: Option<u32>,
) {
    if !sms_gets_around(error_code) {
        return;
    }
    whatsapp_sms(
        shared,
        sid,
        Reason::WhatsAppUndelivered,
        error_code,
        Take::Wait,
    )
    .await;
}

/// How to take a kept record.
#[derive(Clone, Copy)]
enum Take {
    /// Look once (a timer: the record was kept before it started).
    Once,
    /// Look again for a moment when it is not there yet ([`take_record`]:
    /// a callback may overtake the create's answer).
    Wait,
}

/// Send, once, the SMS kept for a WhatsApp message that did not arrive
/// (`reason`: a failure report, or no receipt in time): whoever takes the
/// record (a callback, the timer, on any replica) sends it; the others
/// find nothing.
async fn whatsapp_sms(
    shared: &std::sync::Arc<Shared>,
    sid: &str,
    reason: Reason,
    error_code: Option<u32>,
    take: Take,
) {
    let span = tracing::info_span!(
        "fallback",
        courier.fallback.reason = reason.label(),
        courier.outcome = tracing::field::Empty,
    );
    let key = sms_stash_key(&shared.keys, sid);
    let taken = match take {
        Take::Once => shared.store.stash_take(&key, shared.now()).await,
        Take::Wait => take_record(shared, &key).await,
    };
    let sealed = match taken {
        Ok(Some(sealed)) => sealed,
        Ok(None) => {
            span.record("courier.outcome", "no_record");
            tracing::info!(parent: &span, "WhatsApp message not delivered: no SMS record (a receipt came, the code expired, another copy took it, or none was kept)");
            return;
        }
        Err(e) => {
            span.record("courier.outcome", "store_error");
            tracing::warn!(parent: &span, error = %e, "WhatsApp message not delivered: the store did not answer; no SMS");
            return;
        }
    };
    let Some(kept) = open::<SmsInstead>(&shared.keys, sid, &sealed) else {
        tracing::warn!(parent: &span, "WhatsApp message not delivered: its SMS record could not be opened; no SMS");
        return;
    };
    let recipient = match Recipient::parse_with(&shared.plan, &kept.to) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(parent: &span, error = %e, "WhatsApp message not delivered: no SMS could be composed");
            return;
        }
    };
    if errors::remembers_unreachable(error_code) {
        if let Err(e) = shared
            .ledger
            .remember_unreachable(Channel::WhatsApp, &recipient, error_code)
            .await
        {
            tracing::warn!(parent: &span, error = %e, "could not remember a number that is not on WhatsApp");
        }
    }
    let sms = shared
        .composer
        .plain_sms(&recipient, kept.body, kept.validity_period);
    let admitted = Admitted {
        channel: Channel::Sms,
        recipient,
        outgoing: Outgoing::Sms(sms),
        // The ledger knows the SMS by the WhatsApp message it stands in for
        // (one key for both reasons: the SMS goes once).
        body: format!("whatsapp fallback for {sid}"),
        code: Some(kept.code),
        client: kept.client,
        notification: kept.notification,
        fallback: Some(reason),
        voice: None,
        sms: None,
        message: None,
        started: tokio::time::Instant::now(),
    };
    match deliver_instead(shared, admitted, &span).await {
        Some(Ok(())) => {
            span.record("courier.outcome", "sent");
            tracing::info!(parent: &span, "WhatsApp message not delivered: the code is going by SMS");
        }
        Some(Err(e)) => {
            span.record("courier.outcome", "refused");
            tracing::warn!(parent: &span, error = %e, "WhatsApp message not delivered: the SMS was not sent");
        }
        None => {
            span.record("courier.outcome", "unknown");
        }
    }
}

/// Deliver a message that stands in for one that did not arrive, as a
/// send task of its own (shutdown waits for it) in the fallback's span.
/// `None`: the task ended without an answer (it panicked or was stopped).
async fn deliver_instead(
    shared: &std::sync::Arc<Shared>,
    admitted: Admitted,
    span: &tracing::Span,
) -> Option<Result<(), DeliveryError>> {
    let task = shared.clone();
    let done = shared
        .tasks
        .spawn(async move { task.deliver(admitted).await }.instrument(span.clone()))
        .await;
    done.ok().map(|r| r.map(drop))
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
    let taken = take_record(shared, &stash_key(&shared.keys, sid)).await;
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
    let Some(spoken) = open::<SpokenCode>(&shared.keys, sid, &sealed) else {
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
        notification: spoken.text.is_some(),
        fallback: Some(Reason::Undelivered),
        voice: None,
        sms: None,
        message: None,
        started: tokio::time::Instant::now(),
    };
    match deliver_instead(shared, admitted, &span).await {
        Some(Ok(())) => {
            span.record("courier.outcome", "called");
            tracing::info!(parent: &span, "undelivered SMS: the code is being spoken in a call");
        }
        Some(Err(e)) => {
            span.record("courier.outcome", "refused");
            tracing::warn!(parent: &span, error = %e, "undelivered SMS: the fallback call was not placed");
        }
        None => {
            span.record("courier.outcome", "unknown");
        }
    }
}

/// Until when a message's fallback record is kept: its code's end. Only a
/// code message whose lifetime is known gets one.
pub(crate) fn stash_until(expires_in_minutes: Option<i64>, now: UnixMs) -> Option<UnixMs> {
    let minutes = expires_in_minutes.filter(|m| *m > 0)?;
    Some(now.saturating_add((minutes as u64).saturating_mul(60_000)))
}

/// How long a WhatsApp notification keeps its SMS record: it has no code
/// to expire, and its news stays worth an SMS for a while; longer than the
/// longest `whatsapp.fallback_after_ms` (10 minutes), so its timer finds it.
pub(crate) const NOTICE_SMS_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Until when a WhatsApp message's SMS record is kept: its code's end, or
/// for a notification [`NOTICE_SMS_KEPT`].
pub(crate) fn sms_stash_until(
    notification: bool,
    expires_in_minutes: Option<i64>,
    now: UnixMs,
) -> Option<UnixMs> {
    match notification {
        true => Some(now.saturating_add(NOTICE_SMS_KEPT.as_millis() as u64)),
        false => stash_until(expires_in_minutes, now),
    }
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
            client: ClientAddr::UNKNOWN,
            text: None,
        };
        let sealed = seal(&keys, "SM1", &spoken);
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("482917") && !text.contains("4155550123"));
        let back: SpokenCode = open(&keys, "SM1", &sealed).unwrap();
        assert_eq!(
            (back.to.as_str(), back.code.as_str()),
            ("+14155550123", "482917")
        );
        assert!(open::<SpokenCode>(&keys, "SM2", &sealed).is_none());
        assert!(open::<SpokenCode>(&Keys::from_secret(b"t"), "SM1", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open::<SpokenCode>(&keys, "SM1", &tampered).is_none());
    }

    #[test]
    fn ledger_sids_say_whether_a_call_stood_in() {
        assert_eq!(
            from_ledger(ledger_sid(Channel::Voice, Some("CA1".into()))),
            (Some("CA1".into()), Some(Channel::Voice))
        );
        assert_eq!(
            from_ledger(ledger_sid(Channel::Sms, Some("SM1".into()))),
            (Some("SM1".into()), Some(Channel::Sms))
        );
        assert_eq!(
            from_ledger(ledger_sid(Channel::Voice, None)),
            (None, Some(Channel::Voice))
        );
        assert_eq!(from_ledger(Some("SM1".into())), (Some("SM1".into()), None));
        assert!(call_gets_around(Some(30003)) && !call_gets_around(Some(30004)));
        assert!(sms_gets_around(Some(63003)) && !sms_gets_around(Some(63016)));
        // Every WhatsApp code here is in the provider's table.
        for (c, _) in WHATSAPP_UNDELIVERED {
            assert!(errors::lookup(*c).is_some(), "{c}");
        }
    }
}
