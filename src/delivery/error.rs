//! Why a message was not delivered, as the delivery pipeline sees it. The
//! HTTP layer decides what each becomes on the wire (`http::answer`); this
//! module picks no status codes.

use crate::delivery::channel::Channel;
use crate::phone::RecipientError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("invalid recipient: {0}")]
    InvalidRecipient(RecipientError),
    #[error("SMS body too long ({chars} characters)")]
    BodyTooLong { chars: usize },
    #[error("SMS body empty")]
    BodyEmpty,
    #[error("invalid code: {reason}")]
    InvalidCode { reason: &'static str },
    #[error("TwiML too long")]
    TwimlTooLong,
    #[error("voice not configured")]
    VoiceNotConfigured,
    /// A WhatsApp message was to be composed on a replica whose
    /// `[whatsapp]` is off (another replica's record).
    #[error("WhatsApp not configured")]
    WhatsAppNotConfigured,
    #[error("recipient not allowed: {reason}")]
    RecipientNotAllowed { reason: &'static str },
    /// Twilio Lookup's line type is refused by `lookup.line_types`.
    #[error("line type {line_type} refused")]
    LineTypeRefused { line_type: &'static str },
    /// Twilio Lookup says the SIM was swapped recently, and the template is
    /// in `lookup.sim_swap.refuse_for`.
    #[error("SIM swap suspected")]
    SimSwapSuspected,
    /// Twilio Lookup's SMS-pumping score is above
    /// `lookup.sms_pumping_risk.max_score`.
    #[error("SMS pumping risk")]
    SmsPumpingRisk,
    /// The lookup failed and `lookup.on_error = "refuse"`: nothing sent.
    #[error("Twilio Lookup is unavailable")]
    LookupUnavailable { retry_after: u64 },
    #[error("rate limited per {limit}")]
    RateLimited {
        limit: &'static str,
        channel: Channel,
        retry_after: u64,
    },
    /// `fraud.action = "deny"` and the destination country or prefix is
    /// suspect: held until `retry_after` seconds from now.
    #[error("SMS pumping suspected")]
    FraudSuspected { retry_after: u64 },
    #[error("budget exhausted ({scope})")]
    BudgetExhausted {
        scope: &'static str,
        retry_after: u64,
    },
    /// Every provider slot (`twilio.max_in_flight`) is taken.
    #[error("no provider slot free")]
    NoProviderSlot,
    #[error("the provider says the recipient is unreachable")]
    RecipientUnreachable { provider_code: Option<u32> },
    #[error("the provider refused our configuration")]
    ProviderConfiguration {
        provider_code: Option<u32>,
        http_status: Option<u16>,
    },
    #[error("the provider is unavailable")]
    ProviderUnavailable {
        provider_code: Option<u32>,
        retry_after: u64,
        /// The provider may have the message (a timeout, a lost answer,
        /// another attempt still at it, a reconciliation that could not
        /// ask): the ledger holds it as uncertain. `false`: certainly not
        /// sent (every provider refused it before taking it).
        uncertain: bool,
    },
    /// The shared store (Redis) did not answer and `store.redis.on_error`
    /// is `fail_closed`: nothing was sent.
    #[error("the store is unavailable")]
    StoreUnavailable,
}

impl From<crate::store::StoreError> for DeliveryError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "the store did not answer; refusing rather than risking a second send");
        DeliveryError::StoreUnavailable
    }
}

impl DeliveryError {
    /// The provider's error code, when the failure carries one.
    pub(crate) fn provider_code(&self) -> Option<u32> {
        match self {
            DeliveryError::RecipientUnreachable { provider_code }
            | DeliveryError::ProviderConfiguration { provider_code, .. }
            | DeliveryError::ProviderUnavailable { provider_code, .. } => *provider_code,
            _ => None,
        }
    }

    /// The provider answered, and refused: for metrics, `provider_error`
    /// rather than `rejected`.
    pub(crate) fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            DeliveryError::RecipientUnreachable { .. }
                | DeliveryError::ProviderConfiguration { .. }
                | DeliveryError::ProviderUnavailable { .. }
        )
    }

    /// An operator must act (credentials, sender, caller id).
    pub(crate) fn needs_operator(&self) -> bool {
        matches!(
            self,
            DeliveryError::ProviderConfiguration { .. }
                | DeliveryError::VoiceNotConfigured
                | DeliveryError::WhatsAppNotConfigured
        )
    }
}
