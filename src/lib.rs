//! # kratos-phone-courier
//!
//! Delivers Ory Kratos's one-time codes by SMS and by voice call through
//! Twilio (and Twilio-compatible providers). Kratos's courier calls this
//! service over its http channel; the service authenticates it, checks the
//! message, and turns it into a Twilio Messages or Calls request.
//!
//! The crate is laid out in rooms, each owning one concern. A request walks
//! through them in this order:
//!
//! ```text
//!  http ──► delivery ──► provider
//!   │          │            │
//!   │          └─► phone    └─► (Twilio's REST API)
//!   └─► telemetry (logs, metrics, traces) config feeds every room
//! ```
//!
//! | room | owns |
//! |---|---|
//! | [`http`] | the accept loop and drain, routing, authentication, bodies, and the one table every answer is rendered from ([`http::answer`]) |
//! | [`delivery`] | the pipeline from a Kratos message to a provider request: channel, policy, deduplication, the client's address, rate limits, budget, the fraud guard, the SMS-to-voice fallback, the walk over the providers with failover |
//! | [`provider`] | the Twilio REST client (SignalWire speaks the same API), its error table, the provider list with each one's circuit breaker, TwiML, webhook signatures |
//! | [`lookup`] | the Twilio Lookup v2 policy: the request, its cache in the store, line type / SIM swap / pumping risk turned into send, call or refuse |
//! | [`phone`] | E.164 numbers: parsing against the numbering plan, line types, masking |
//! | [`config`] | defaults, file and environment merged, then checked into typed values |
//! | [`telemetry`] | log output, Prometheus metrics, OpenTelemetry traces |
//! | [`startup`] | wiring the rooms into a running service from a checked configuration |
//! | [`relay`] | the inbound relay: codes texted to our numbers, forwarded by SMS, to Slack and to signed webhooks |
//! | [`verify`] | the verify API for applications without Kratos: codes made, stored as keyed hashes, sent through the courier and checked |
//! | [`store`] | the state a retry touches (ledger, limits, budget), in memory or in Redis |
//! | [`domain`] | small shared names (channel, template type, limiter, budget scope) below every room |
//! | [`clock`] | the one clock behind limits, windows and budget days (testable) |
//!
//! Dependencies point one way: `http` uses `delivery`, `delivery` uses
//! `provider`, `lookup`, `phone` and `store` (`lookup` uses `store`), and all of them read `config`,
//! `telemetry` and `domain`; nothing points back. The Twilio stand-in used by `serve --dev` and the tests
//! lives in its own crate (`twilio-sandbox`), so this library carries no test
//! double.

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
