//! Why a check did not approve, or a request did not send, as the verifier
//! sees it. The HTTP layer picks the status codes (`http::answer`).

use crate::delivery::error::DeliveryError;

/// What the verify API refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The code is not the pending one; `attempts_left` more may be tried.
    #[error("code mismatch")]
    CodeMismatch { attempts_left: u32 },
    /// The last allowed attempt was wrong: the pending code is dropped.
    #[error("too many attempts")]
    TooManyAttempts,
    /// Nothing is pending for the number: never requested, expired,
    /// approved already, or dropped after too many attempts.
    #[error("no pending code")]
    NoPendingCode,
    /// `verify.max_checks_per_hour` checks of the number were made this
    /// hour (whatever its codes): not compared; retry after `retry_after`
    /// seconds (the end of the hour).
    #[error("too many checks")]
    TooManyChecks { retry_after: u64 },
    /// The `Idempotency-Key` header is empty, too long or not visible ASCII.
    #[error("invalid idempotency key")]
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` was used with another number or body.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// A request with the `Idempotency-Key` is still being answered.
    #[error("idempotency key in progress")]
    IdempotencyKeyInProgress,
    /// The number, or the delivery pipeline, refused (invalid recipient,
    /// policy, limits, budget, provider, store).
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl From<crate::store::StoreError> for VerifyError {
    fn from(e: crate::store::StoreError) -> Self {
        VerifyError::Delivery(e.into())
    }
}
