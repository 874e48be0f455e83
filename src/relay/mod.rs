//! The inbound relay: one-time codes that other services text to one of
//! our Twilio numbers, fanned out to phones (SMS), Slack and signed JSON
//! webhooks (`POST /v1/twilio/inbound`, when `relay.enabled`).
//!
//! ```text
//! Twilio ──POST /v1/twilio/inbound──▶ http::relay: signature, body; inbound: fields (403 / 400 / 415)
//!                                       │ routing: loop guard, our number, route by sender
//!                                       │ store: MessageSid seen? route's hour full?
//!   ◀── 200 <Response/> ────────────────┤ (every decision is answered the same)
//!                                       └─▶ forward: one task per target, retried, counted
//! ```
//!
//! | file | owns |
//! |---|---|
//! | `inbound` | the webhook's fields, parsed into [`inbound::Inbound`] (its signature and body are checked by `http::relay` first) |
//! | `routing` | the route a sender takes, the loop guard |
//! | `payload` | the SMS text, the Slack message, the webhook JSON and its signature |
//! | `forward` | one target's tries and pauses, and its outcome |
//!
//! Twilio retries a webhook it did not get an answer to, so the MessageSid
//! is marked seen in the store (shared by replicas with Redis) before
//! anything is forwarded: a second copy, on any replica, is answered and
//! dropped. The per-route hourly count is kept in the store too.
//!
//! What it cannot promise: forwards still being tried live in this process;
//! a restart drops their remaining tries.

pub mod forward;
pub(crate) mod inbound;
pub mod payload;
pub(crate) mod routing;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::{Config, ProviderKind, RelayConfig, SmsSender};
use crate::phone::E164;
use crate::provider::twilio::TwilioClient;
use crate::store::{Keys, Store};
use crate::telemetry::metrics::Metrics;

use forward::{Forwarder, Target};
pub(crate) use inbound::Inbound;
use routing::Decision;

/// How long a MessageSid is remembered: Twilio's retries come within
/// minutes; a day leaves room for a webhook replayed by hand.
const SEEN_FOR: Duration = Duration::from_secs(86_400);
const HOUR_MS: u64 = 3_600_000;

/// Why the relay could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the relay's HTTP client: {0}")]
pub struct RelayError(#[from] reqwest::Error);

/// What a webhook is checked against: the URL Twilio signed, whose
/// signature header is read, the key, and the time its body has.
pub(crate) struct Webhook<'a> {
    pub(crate) url: &'a str,
    pub(crate) signer: ProviderKind,
    pub(crate) token: &'a SecretString,
    pub(crate) body_timeout: Duration,
}

/// The receiving side of the relay, present only when it is enabled.
pub(crate) struct Relay {
    config: RelayConfig,
    /// The account's auth token, which signs Twilio's webhooks (the first
    /// provider's: its signing key when that is a SignalWire space).
    token: SecretString,
    /// The kind of that first provider: which signature header is read.
    signer: ProviderKind,
    /// `server.body_read_timeout`: the time the webhook's body has.
    body_timeout: Duration,
    /// `relay.numbers` and the courier's own sender: a message from one of
    /// them is never relayed, nor a forward sent to one.
    own: Vec<E164>,
    store: Arc<Store>,
    keys: Keys,
    clock: Clock,
    metrics: Arc<Metrics>,
    forwarder: Arc<Forwarder>,
}

impl Relay {
    /// `Ok(None)` unless `relay.enabled` (the configuration check makes
    /// sure the auth token is there then).
    pub(crate) fn new(
        config: &Config,
        twilio: TwilioClient,
        store: Arc<Store>,
        keys: Keys,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Relay>, RelayError> {
        let (Some(relay), Some(token)) = (&config.relay, &config.twilio.signing_token) else {
            return Ok(None);
        };
        let mut own = relay.numbers.clone();
        if let SmsSender::From(sender) = &config.twilio.sms_sender {
            own.extend(sender.number().cloned());
        }
        let http = reqwest::Client::builder()
            .timeout(relay.timeout)
            .connect_timeout(relay.timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "kratos-phone-courier-relay/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        let forwarder = Arc::new(Forwarder {
            twilio,
            http,
            attempts: relay.attempts,
            retry_window: relay.retry_window,
            webhook_secret: relay.webhook_secret.clone(),
            status_callback: config.status_callback_url.clone(),
            metrics: metrics.relay().clone(),
        });
        Ok(Some(Relay {
            config: relay.clone(),
            token: token.clone(),
            signer: config
                .providers
                .first()
                .map_or(ProviderKind::Twilio, |p| p.kind),
            body_timeout: config.server.body_read_timeout,
            own,
            store,
            keys,
            clock,
            metrics,
            forwarder,
        }))
    }

    /// What the HTTP edge (`http::relay`) checks a webhook against before
    /// the relay reads it.
    pub(crate) fn webhook(&self) -> Webhook<'_> {
        Webhook {
            url: &self.config.inbound_url,
            signer: self.signer,
            token: &self.token,
            body_timeout: self.body_timeout,
        }
    }

    /// A webhook refused for its signature: counted, logged, nothing else.
    pub(crate) fn signature_refused(&self) {
        self.metrics.relay().inbound("invalid_signature");
        tracing::warn!("incoming message refused: missing or wrong signature");
    }

    /// A checked message: decide and start the forwards (answered at once;
    /// every decision is answered the same). `Err` when the store did not
    /// answer, logged here.
    pub(crate) async fn receive(&self, message: &Inbound) -> Result<(), crate::store::StoreError> {
        match self.relay(message).await {
            Ok(outcome) => {
                self.metrics.relay().inbound(outcome);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(sid = message.sid, error = %e, "incoming message not relayed: the store did not answer");
                Err(e)
            }
        }
    }

    /// Decide and start the forwards; the outcome names the metric.
    async fn relay(&self, message: &Inbound) -> Result<&'static str, crate::store::StoreError> {
        let sid = message.sid.as_str();
        let sender = inbound::masked(&message.from);
        let route = match routing::decide(&self.config, &self.own, message) {
            Decision::Route(r) => r,
            Decision::Loop => {
                tracing::warn!(
                    sid,
                    "incoming message from one of our own numbers not relayed (loop guard)"
                );
                return Ok("loop");
            }
            Decision::NotOurNumber => {
                tracing::warn!(
                    sid,
                    "incoming message to a number not in relay.numbers not relayed"
                );
                return Ok("not_our_number");
            }
            Decision::NoRoute => {
                // Dropped only once it is known not to be a retry.
                if !self.first_seen(message).await? {
                    return Ok("duplicate");
                }
                tracing::info!(
                    sid,
                    sender,
                    "incoming message from a sender no route names, and no default route: dropped"
                );
                return Ok("no_route");
            }
        };
        if !self.first_seen(message).await? {
            tracing::info!(
                sid,
                route = route.name,
                "incoming message seen before: not relayed again"
            );
            return Ok("duplicate");
        }
        if !self.take_from_route(&route.name).await? {
            tracing::warn!(
                sid,
                route = route.name,
                "relay.per_route_per_hour reached: incoming message dropped"
            );
            return Ok("rate_limited");
        }
        let targets = self.targets(route, message);
        tracing::info!(
            sid,
            route = route.name,
            sender,
            targets = targets.len(),
            "relaying incoming message"
        );
        for (index, target) in targets {
            tokio::spawn(self.forwarder.clone().deliver(
                route.name.clone(),
                message.sid.clone(),
                index,
                target,
            ));
        }
        Ok("relayed")
    }

    async fn first_seen(&self, message: &Inbound) -> Result<bool, crate::store::StoreError> {
        let key = self.keys.relay("seen", &[message.sid.as_bytes()]);
        self.store
            .relay_first_seen(&key, self.now_ms(), SEEN_FOR)
            .await
    }

    async fn take_from_route(&self, route: &str) -> Result<bool, crate::store::StoreError> {
        let limit = self.config.per_route_per_hour;
        if limit == 0 {
            return Ok(true);
        }
        let now = self.now_ms();
        let hour = now / HOUR_MS;
        let key = self
            .keys
            .relay("route", &[route.as_bytes(), &hour.to_be_bytes()]);
        self.store
            .relay_take(&key, limit, now, (hour + 1) * HOUR_MS)
            .await
    }

    /// Every target of `route` for `message`, numbered within its kind.
    fn targets(&self, route: &crate::config::Route, message: &Inbound) -> Vec<(usize, Target)> {
        let mut out = Vec::new();
        // `decide` made sure the message came to one of our numbers.
        let Some(from) = message.to.clone() else {
            return out;
        };
        let text = payload::sms_text(&self.config.sms_template, &route.name, message);
        for (i, to) in route.sms.iter().enumerate() {
            if routing::sms_allowed(to, &self.own) {
                out.push((
                    i,
                    Target::Sms {
                        to: to.clone(),
                        from: from.clone(),
                        text: text.clone(),
                    },
                ));
            } else {
                self.metrics.relay().forward("sms", "loop");
                tracing::warn!(sid = message.sid, route = route.name, target = %format!("sms#{i}"), "a forward to one of our own numbers was not sent (loop guard)");
            }
        }
        let slack = payload::slack_json(&route.name, message);
        for (i, url) in route.slack.iter().enumerate() {
            out.push((
                i,
                Target::Slack {
                    url: url.clone(),
                    json: slack.clone(),
                },
            ));
        }
        let body = payload::webhook_json(&route.name, message, &self.received_at());
        for (i, url) in route.webhooks.iter().enumerate() {
            out.push((
                i,
                Target::Webhook {
                    url: url.clone(),
                    body: body.clone(),
                },
            ));
        }
        out
    }

    fn now_ms(&self) -> u64 {
        self.clock.unix().as_millis() as u64
    }

    /// The time of receipt, RFC 3339 in UTC, from the service clock.
    fn received_at(&self) -> String {
        let unix = self.clock.unix();
        time::OffsetDateTime::from_unix_timestamp(unix.as_secs() as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}
