//! Rules that span keys, run once every section has been checked on its
//! own: each relates a key to another key or to something outside this
//! service (Kratos's courier, the budget's arithmetic). Every error names the
//! key to change and says what to change it to.

use std::time::Duration;

use super::dedup::{BudgetConfig, DedupConfig};
use super::error::{refuse_if, ConfigError};
use super::providers::{ProviderConfig, ProviderKind};
use super::Config;

/// How long Kratos's courier waits for this service's answer.
pub(crate) const KRATOS_TIMEOUT: Duration = Duration::from_secs(10);

/// Time kept, out of Kratos's, for everything but the provider request:
/// reading the body, the checks, and writing our own answer — a 503 that
/// Kratos retries cleanly, instead of a connection it cut.
pub(crate) const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// How many times Kratos sends a failed message again after the first try
/// (its `courier.message_retries`, 5 by default).
pub(crate) const KRATOS_RETRIES: u32 = 5;

/// Kratos's courier looks for messages to (re)send about once a second.
pub(crate) const KRATOS_RETRY_GAP: Duration = Duration::from_secs(1);

/// The largest daily cap: `delivery::budget` compares `used × 100` with
/// `cap × warn_percent` in 32 bits, and `warn_percent` is at most 100.
pub(crate) const MAX_DAILY_CAP: u32 = u32::MAX / 100;

pub(super) fn across_sections(c: &Config) -> Result<(), ConfigError> {
    for p in &c.providers {
        provider_timeout_within_kratos(p)?;
        dedup_window_covers_retries(&c.dedup, p)?;
    }
    budget_fits_its_arithmetic(&c.budget)?;
    status_callbacks_can_be_verified(c)?;
    relay_can_be_verified(c)?;
    verify_demo_only_without_auth(c)?;
    lookup_has_a_twilio_account(c)?;
    lookup_voice_has_a_caller_id(c)?;
    lookup_and_send_within_kratos(c)?;
    Ok(())
}

/// The provider request must end early enough that this service can still
/// answer Kratos before Kratos gives up on it.
fn provider_timeout_within_kratos(p: &ProviderConfig) -> Result<(), ConfigError> {
    let max = KRATOS_TIMEOUT - ANSWER_MARGIN;
    refuse_if(
        p.api.timeout > max,
        &format!("{}.timeout_ms", p.key),
        format!(
                "must be at most {} so that the service can answer before Kratos's courier gives up after {} s; lower it",
                max.as_millis(),
                KRATOS_TIMEOUT.as_secs()
            ),
    )
}

/// The smallest deduplication window: Kratos's first try and its
/// retries each take at most the provider timeout (plus the gap before the
/// next), so the last retry arrives within (1 + retries) × (gap + timeout)
/// of the first. A shorter window lets a retry of a message that was sent
/// (but whose answer was lost) send it again.
pub(crate) fn min_dedup_window(provider_timeout: Duration) -> Duration {
    (KRATOS_RETRY_GAP + provider_timeout) * (KRATOS_RETRIES + 1)
}

fn dedup_window_covers_retries(d: &DedupConfig, p: &ProviderConfig) -> Result<(), ConfigError> {
    let min = min_dedup_window(p.api.timeout);
    if d.window < min {
        let timeout = format!("{}.timeout_ms", p.key);
        return Err(ConfigError::invalid(
            "dedup.window_ms",
            format!(
                "must be at least {} with {timeout} = {}, to cover Kratos's {} retries about a second apart ({} × (1 s + {timeout})); raise dedup.window_ms or lower {timeout}",
                min.as_millis(),
                p.api.timeout.as_millis(),
                KRATOS_RETRIES,
                KRATOS_RETRIES + 1
            ),
        ));
    }
    Ok(())
}

fn budget_fits_its_arithmetic(b: &BudgetConfig) -> Result<(), ConfigError> {
    for (key, cap) in [
        ("budget.daily_total", b.daily_total),
        ("budget.daily_per_country", b.daily_per_country),
    ] {
        // Both `used × 100` (used ≤ cap) and `cap × warn_percent` must fit.
        let factor = u64::from(b.warn_percent.max(100));
        refuse_if(
            u64::from(cap) * factor > u64::from(u32::MAX),
            key,
            format!(
                    "must be at most {MAX_DAILY_CAP} (0 turns the cap off); a cap that large protects no bill"
                ),
        )?;
    }
    Ok(())
}

/// Twilio signs status callbacks with the account's auth token, so without
/// one they could not be told from forgeries.
fn status_callbacks_can_be_verified(c: &Config) -> Result<(), ConfigError> {
    if c.status_callback_url.is_none() {
        return Ok(());
    }
    if let Some(p) = c.providers.iter().find(|p| p.api.signing_token.is_none()) {
        let token = match p.kind {
            ProviderKind::Twilio => "auth_token",
            ProviderKind::SignalWire => "signing_key",
        };
        return Err(ConfigError::invalid(
            "status_callback.public_url",
            format!(
                "needs {}.{token}: the provider signs status callbacks with the account's auth token (SignalWire: the signing key), even when requests use an API key",
                p.key
            ),
        ));
    }
    Ok(())
}

/// Twilio signs incoming-message webhooks with the account's auth token:
/// without it every one would be refused (the relay fails closed).
fn relay_can_be_verified(c: &Config) -> Result<(), ConfigError> {
    refuse_if(
        c.relay.is_some() && c.twilio.signing_token.is_none(),
        "relay.enabled",
        "needs twilio.auth_token: Twilio signs incoming-message webhooks with the account's auth token, even when requests use an API key",
    )
}

/// The verify demo page (`GET /verify/demo`) takes browser forms without
/// credentials and sends codes: it is for `serve --dev`, where
/// authentication is off, and must never open an unauthenticated way to
/// send next to an authenticated API.
fn verify_demo_only_without_auth(c: &Config) -> Result<(), ConfigError> {
    refuse_if(
        c.verify.as_ref().is_some_and(|v| v.demo) && !c.auth.disabled,
        "verify.demo",
        "is for serve --dev only and needs auth.disabled = true; turn it off",
    )
}

/// Lookup is a Twilio product: it is asked with a Twilio provider's
/// account, so a list of SignalWire spaces alone cannot use it.
fn lookup_has_a_twilio_account(c: &Config) -> Result<(), ConfigError> {
    refuse_if(
        c.lookup.is_some() && c.twilio_account().is_none(),
        "lookup.enabled",
        "needs a provider of kind \"twilio\" (Lookup is asked with its account)",
    )
}

/// The lookup comes before the send, in the same request: both must end
/// before Kratos gives up, as the send alone must.
fn lookup_and_send_within_kratos(c: &Config) -> Result<(), ConfigError> {
    let Some(l) = &c.lookup else { return Ok(()) };
    let max = KRATOS_TIMEOUT - ANSWER_MARGIN;
    // The first provider's call, or a later one's after a failover.
    let send = c
        .providers
        .iter()
        .map(|p| p.api.timeout)
        .max()
        .unwrap_or_default();
    refuse_if(
        l.timeout + send > max,
        "lookup.timeout_ms",
        format!(
                "plus the longest provider timeout_ms (twilio.timeout_ms) must be at most {} so that the service can answer before Kratos's courier gives up after {} s; lower one of them",
                max.as_millis(),
                KRATOS_TIMEOUT.as_secs()
            ),
    )
}

/// A line type whose action is `voice` is called: without a caller id on
/// any provider the code would be lost.
fn lookup_voice_has_a_caller_id(c: &Config) -> Result<(), ConfigError> {
    let caller_id = c.providers.iter().any(|p| p.api.voice_from.is_some());
    refuse_if(
        !caller_id && c.lookup.as_ref().is_some_and(|l| l.may_call()),
        "lookup.line_types",
        "a line type whose action is \"voice\" needs a caller id: set twilio.voice_from (or a twilio.from that is a phone number, or a provider's voice_from), or make it \"sms\" or \"refuse\"",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bound_follows_the_timeout() {
        assert_eq!(
            min_dedup_window(Duration::from_millis(8000)),
            Duration::from_secs(54)
        );
        assert_eq!(
            min_dedup_window(Duration::from_millis(150)),
            Duration::from_millis(6900)
        );
    }

    #[test]
    fn caps_at_the_bound_cannot_overflow() {
        assert!(MAX_DAILY_CAP.checked_mul(100).is_some());
        assert!((MAX_DAILY_CAP + 1).checked_mul(100).is_none());
    }
}
