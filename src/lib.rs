//! # kratos-phone-courier
//!
//! Delivers Ory Kratos's one-time codes by SMS and by voice call through
//! Twilio (and Twilio-compatible providers), and its notices without a
//! code (an address changed, a key added) by SMS. Kratos's courier calls this
//! service over its http channel; the service authenticates it, checks the
//! message, and turns it into a Twilio Messages or Calls request.
//!
//! The crate is laid out in rooms, each owning one concern. A request walks
//! through them in this order:
//!
//! ```text
//!  startup ──► http ──► delivery ──► lookup ──► provider ──► (Twilio's REST API)
//!               │  │       │            │          │
//!               │  │       └─► phone    └─► store  └─► telemetry (logs, metrics, traces)
//!               │  └─► verify ──► delivery
//!               └─► relay ──► provider, store
//!   config, domain and clock sit below every room
//! ```
//!
//! | room | owns |
//! |---|---|
//! | [`http`] | the accept loop and drain, routing, authentication, bodies, and the one table every answer is rendered from ([`http::answer`]) |
//! | [`delivery`] | the pipeline from a Kratos message to a provider request: channel, policy, deduplication, the client's address, rate limits, budget, the fraud guard, the SMS-to-voice fallback, the walk over the providers with failover |
//! | [`provider`] | the Twilio REST client (SignalWire speaks the same API), its error table, the provider list with each one's circuit breaker, TwiML, webhook signatures |
//! | [`lookup`] | the Twilio Lookup v2 policy: the request, its cache in the store, line type / SIM swap / pumping risk turned into send, call or refuse |
//! | [`phone`] | E.164 numbers: parsing against the numbering plan, line types, masking; the forms of our own numbers, senders and region codes as configured |
//! | [`config`] | defaults, file and environment merged, then checked into typed values |
//! | [`telemetry`] | log output, Prometheus metrics, OpenTelemetry traces |
//! | [`startup`] | wiring the rooms into a running service from a checked configuration |
//! | [`relay`] | the inbound relay: codes texted to our numbers, forwarded by SMS, to Slack and to signed webhooks |
//! | [`verify`] | the verify API for applications without Kratos: codes made, stored as keyed hashes, sent through the courier and checked |
//! | [`store`] | the state a retry touches (ledger, limits, budget), in memory or in Redis |
//! | [`domain`] | small shared names (channel, template type, limiter, budget scope, fallback reason) and the language tag, below every room |
//! | [`clock`] | the one clock behind limits, windows and budget days (testable) |
//!
//! Dependencies point one way, down this list: a room uses only rooms on
//! the lines below its own, and rooms on one line do not use each other
//! (`tests/layers.rs` reads every `crate::` path under `src/` and checks
//! it). Nothing points back.
//!
//! 1. `startup`
//! 2. `http`
//! 3. `relay`, `verify`
//! 4. `delivery`
//! 5. `lookup`
//! 6. `provider`
//! 7. `store`, `telemetry`
//! 8. `config`
//! 9. `phone`, `domain`, `clock`
//!
//! A value that two rooms both need lives in the lower one, or in
//! [`domain`] (names such as the channel or a fallback's reason); a room
//! that needs an answer from one above it is handed plain data instead (the
//! relay gets a parsed message from `http::relay`, not a request).
//!
//! ## The library's surface
//!
//! Every item is `pub(crate)` unless a crate outside this one needs it; the
//! compiler keeps that true (a `pub(crate)` item nobody uses is dead code,
//! and clippy runs with `-D warnings`). What stays `pub`, and who needs it:
//!
//! | caller | what it uses |
//! |---|---|
//! | the binary (`src/bin/kratos-phone-courier`) | [`config::Config`] and [`config::Sources`] (with the sections `serve --dev` rewrites), [`startup`] (`bind`, `serve`, [`startup::StartupError`]), [`http::server`] (`run`, `run_metrics`, `shutdown_signal`), [`phone::E164`], [`phone::Sender`], [`phone::CountryId`], [`provider::errors::NOT_MOBILE`] |
//! | the API tests (`tests/api/`), Schemathesis's and the fuzzer's service | [`http::app::App`] (`new`, `with_clock`, `handle`, `begin_shutdown`), [`startup::spawn_background`], [`clock::Clock`], [`telemetry::metrics::Metrics`] |
//! | the schema, property and fuzz tests | [`delivery::message`] (the parser, the message, its schema), [`delivery::confirmation::CONFIRMATION_SCHEMA`], [`verify::body`]'s schemas, [`phone::Recipient`], [`phone::NumberingPlan`], [`provider::twiml`], [`provider::signature::compute`], [`relay::payload::sign`] |
//! | the fraud simulation (`tests/fraud_busy_hour.rs`) | [`delivery::courier::Courier`] over a [`store::Store`] of a [`store::memory::MemoryStore`] with its [`store::Keys`], [`delivery::fraud::FraudGuard`], [`delivery::limits::Prefixes`], [`provider::set::ProviderSet`] |
//!
//! Everything else (the pipeline's steps, the answer table, the Lookup
//! policy, the relay's routing, the verify API's handlers, the Twilio
//! client, the Redis store) is internal: tests reach it through
//! [`http::app::App`], or sit beside the code (the store's suite for both
//! backends and its Redis tests in `src/store/`, reconciliation's in
//! `src/provider/`).
//!
//! The
//! Twilio stand-in used by `serve --dev` and the tests
//! lives in its own crate (`twilio-sandbox`), so this library carries no test
//! double.

/// The read-only string views of a checked value type (a number, a region,
/// a language tag), built on its `as_str`: callers compare and print it like
/// the string it was read from (`n == "+15005550006"`, `tag.split('-')`), and
/// `check-config` prints that string. There is deliberately no way back from
/// a `&str` without the check.
macro_rules! str_views {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod lookup;
pub mod phone;
pub mod provider;
pub mod relay;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod verify;
