//! Integration tests of the HTTP API: the real server on a real port, a
//! mock Twilio on another, and assertions on both what the caller got back
//! and what Twilio received.

mod helpers;

mod abuse;
mod client_address;
mod exactly_once;
mod failover;
mod fair_limits;
mod fallback;
mod fraud;
mod health;
mod lookup;
mod notifications;
mod observability;
mod operations;
mod provider_errors;
mod relay;
mod requests;
mod shutdown;
mod signalwire;
mod slow_clients;
mod sms;
mod transport;
mod verify;
mod voice;
mod whatsapp;
mod whatsapp_notices;
