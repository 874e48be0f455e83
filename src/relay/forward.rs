//! Delivering to one target, on its own: tries, pauses that double and add
//! up to `relay.retry_window_ms`, then the target is counted as dropped.
//!
//! Each target runs in its own task, so a slow or failing Slack never holds
//! back an SMS. Which failures are worth another try:
//!
//! | target | tried again | dropped at once |
//! |---|---|---|
//! | SMS | Twilio's transient failures (5xx, 429, timeouts, connection errors) | a recipient or configuration refusal (4xx) |
//! | Slack, webhook | 5xx, 408, 429, timeouts, connection errors | any other answer outside 2xx |
//!
//! An SMS whose outcome is uncertain (the request may have reached Twilio)
//! is looked for in Twilio's list before the next try, so it is not sent
//! twice. Only the list read is retried: [`LIST_READS`] reads at most,
//! [`LIST_READ_PAUSE`] apart (doubling). If none of them answers, the SMS
//! is not sent again: the target is given up, counted `uncertain` and
//! logged (without the text or the number), since one text that may be
//! missing is better than two that certainly arrived.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use crate::config::SmsSender;
use crate::phone::{SenderId, E164};
use crate::provider::errors::FailureClass;
use crate::provider::twilio::{OutgoingSms, ProviderError, TwilioClient};
use crate::telemetry::relay_metrics::RelayMetrics;

use super::payload;

/// Reads of Twilio's message list, after an uncertain try, before the
/// target is given up as uncertain (never sent again unanswered).
pub const LIST_READS: u32 = 3;

/// The pause after the first failed list read; it doubles after each.
pub(crate) const LIST_READ_PAUSE: Duration = Duration::from_secs(1);

/// One thing to deliver.
pub(crate) enum Target {
    Sms {
        to: E164,
        from: E164,
        text: String,
    },
    Slack {
        url: SecretString,
        json: serde_json::Value,
    },
    Webhook {
        url: String,
        body: Vec<u8>,
    },
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Sms { .. } => "sms",
            Target::Slack { .. } => "slack",
            Target::Webhook { .. } => "webhook",
        }
    }
}

/// What the targets share: the clients, the retry policy, the counters.
pub(crate) struct Forwarder {
    pub(crate) twilio: TwilioClient,
    /// For Slack and webhooks: `relay.timeout_ms`, no redirects.
    pub(crate) http: reqwest::Client,
    pub(crate) attempts: u32,
    pub(crate) retry_window: Duration,
    pub(crate) webhook_secret: Option<SecretString>,
    pub(crate) status_callback: Option<String>,
    pub(crate) metrics: RelayMetrics,
}

/// What Twilio's message list said about an uncertain SMS.
enum Listed {
    /// Twilio has it: the earlier try went out.
    Found,
    /// Twilio does not have it: it may be sent.
    Missing,
    /// The list could not be read (the error's kind, for the log line).
    Unknown(&'static str),
}

/// How one try ended.
enum Try {
    Delivered,
    /// Worth another try; `uncertain`: the SMS may have been sent.
    Again {
        uncertain: bool,
    },
    /// No try will do better.
    Refused,
}

/// The pause before try `n + 1` (after try `n`, counting from 1): doubling,
/// all of them together `window`.
pub(crate) fn pause(window: Duration, attempts: u32, n: u32) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let units = (1u64 << (attempts - 1).min(62)) - 1;
    let unit = window / u32::try_from(units).unwrap_or(u32::MAX);
    unit * (1u32 << (n - 1).min(31))
}

impl Forwarder {
    /// Deliver `target` (the `index`th of its kind on `route`, for logs):
    /// try, pause, try again, until delivered, refused or out of tries.
    pub(crate) async fn deliver(
        self: Arc<Self>,
        route: String,
        sid: String,
        index: usize,
        target: Target,
    ) {
        let kind = target.kind();
        let mut uncertain_since: Option<SystemTime> = None;
        for n in 1..=self.attempts {
            if let (Target::Sms { to, text, .. }, Some(since)) = (&target, uncertain_since) {
                // An earlier try may have reached Twilio: look before
                // sending, and send only if Twilio says it does not have it.
                match self.listed(to, text, since).await {
                    Listed::Found => {
                        self.metrics.forward(kind, "delivered");
                        tracing::info!(route, sid, target = %format!("{kind}#{index}"), attempt = n, "relayed (found at the provider)");
                        return;
                    }
                    Listed::Missing => {}
                    Listed::Unknown(error) => {
                        self.metrics.forward(kind, "uncertain");
                        tracing::warn!(
                            route,
                            sid,
                            target = %format!("{kind}#{index}"),
                            attempt = n,
                            provider_error = error,
                            "relay SMS given up: an earlier try may have reached Twilio and its message list could not be read; not sending again"
                        );
                        return;
                    }
                }
            }
            let started = SystemTime::now();
            match self.try_once(&target).await {
                Try::Delivered => {
                    self.metrics.forward(kind, "delivered");
                    tracing::info!(route, sid, target = %format!("{kind}#{index}"), attempt = n, "relayed");
                    return;
                }
                Try::Refused => break,
                Try::Again { uncertain } => {
                    if uncertain && uncertain_since.is_none() {
                        uncertain_since = Some(started);
                    }
                    if n < self.attempts {
                        self.metrics.forward(kind, "retried");
                        tracing::info!(route, sid, target = %format!("{kind}#{index}"), attempt = n, "relay try failed; trying again");
                        tokio::time::sleep(pause(self.retry_window, self.attempts, n)).await;
                    }
                }
            }
        }
        self.metrics.forward(kind, "dropped");
        tracing::warn!(route, sid, target = %format!("{kind}#{index}"), "relay target dropped");
    }

    /// Ask Twilio's list whether it has the SMS, reading it again (at most
    /// [`LIST_READS`] times) while it cannot be read. Never sends.
    async fn listed(&self, to: &E164, text: &str, since: SystemTime) -> Listed {
        let mut pause = LIST_READ_PAUSE;
        let mut read = 1;
        loop {
            match self.twilio.find_message(to, text, None, since).await {
                Ok(Some(_)) => return Listed::Found,
                Ok(None) => return Listed::Missing,
                Err(e) if read >= LIST_READS => return Listed::Unknown(e.kind()),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    read += 1;
                }
            }
        }
    }

    async fn try_once(&self, target: &Target) -> Try {
        match target {
            Target::Sms { to, from, text } => {
                let sms = OutgoingSms {
                    to: to.to_string(),
                    sender: SmsSender::From(SenderId::Number(from.clone())),
                    body: text.clone(),
                    validity_period: None,
                    status_callback: self.status_callback.clone(),
                };
                match self.twilio.send_sms(&sms).await {
                    Ok(_) => Try::Delivered,
                    Err(e) => sms_failure(&e),
                }
            }
            Target::Slack { url, json } => {
                let request = self.http.post(url.expose_secret()).json(json);
                http_outcome(request.send().await)
            }
            Target::Webhook { url, body } => {
                let signature = match &self.webhook_secret {
                    Some(s) => payload::sign(s.expose_secret().as_bytes(), body),
                    // The configuration check requires a secret with webhooks.
                    None => return Try::Refused,
                };
                let request = self
                    .http
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(payload::SIGNATURE_HEADER, signature)
                    .body(body.clone());
                http_outcome(request.send().await)
            }
        }
    }
}

fn sms_failure(e: &ProviderError) -> Try {
    match e.class() {
        FailureClass::Transient => Try::Again {
            uncertain: e.may_have_been_sent(),
        },
        FailureClass::Recipient | FailureClass::Configuration => Try::Refused,
    }
}

fn http_outcome(answer: Result<reqwest::Response, reqwest::Error>) -> Try {
    match answer {
        Ok(r) if r.status().is_success() => Try::Delivered,
        Ok(r) if r.status().is_server_error() || matches!(r.status().as_u16(), 408 | 429) => {
            Try::Again { uncertain: false }
        }
        Ok(_) => Try::Refused,
        Err(_) => Try::Again { uncertain: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_and_fill_the_window() {
        let w = Duration::from_secs(120);
        let p: Vec<u64> = (1..5).map(|n| pause(w, 5, n).as_secs()).collect();
        assert_eq!(p, [8, 16, 32, 64]);
        assert_eq!(pause(w, 1, 1), Duration::ZERO);
        assert_eq!(pause(w, 2, 1), w);
    }
}
