//! # kratos-phone-courier
//!
//! Delivers Ory Kratos's one-time codes by SMS and by voice call through
//! Twilio (and Twilio-compatible providers). Kratos's courier calls this
//! service over its http channel; the service authenticates it, checks the
//! message, and turns it into a Twilio Messages or Calls request.
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | defaults, file and environment merged, then checked into [`config::Config`] |
//! | [`startup`] | binding and wiring the service from a checked configuration |
//! | [`server`] | the accept loop and graceful shutdown |
//! | [`app`] | routing, authentication, body limits, one log line per request |
//! | [`auth`] | constant-time basic-auth and API-key checks |
//! | [`message`] | the courier message: JSON Schema, then a typed value |
//! | [`recipient`] | E.164 phone numbers, masked for logs |
//! | [`courier`] | the delivery pipeline: channel, checks, abuse controls, provider, answers |
//! | [`limits`] | rate limits per recipient, IP, country and in total (governor) |
//! | [`dedup`] | exactly once despite retries: remembered sends, single flight |
//! | [`budget`] | the daily send budget |
//! | [`clock`] | the one clock behind limits, windows and budget days (testable) |
//! | [`twiml`] | the TwiML that speaks a code, and the language choice |
//! | [`twilio`] | the outbound REST client and its error classes |
//! | [`error`] | every error answer: status, stable code, message |
//! | [`metrics`] | Prometheus metrics with bounded labels |
//! | [`status`] | signed delivery-status callbacks from Twilio |
//! | [`signature`] | Twilio webhook signatures (X-Twilio-Signature) |
//! | [`sandbox`] | a local Twilio stand-in (`twilio-sandbox`, `serve --dev`) |
//! | [`dev`] | `serve --dev`: the service and the sandbox in one process |
//! | [`telemetry`] | log output |

pub mod app;
pub mod auth;
pub mod budget;
pub mod clock;
pub mod config;
pub mod courier;
pub mod dedup;
pub mod dev;
pub mod error;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod recipient;
pub mod sandbox;
pub mod server;
pub mod signature;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod twilio;
pub mod twiml;
