//! The Twilio Lookup v2 policy (`[lookup]`): before a code is paid for,
//! ask Twilio what the number is (its line type, a recent SIM swap, its
//! SMS-pumping risk) and send, call or refuse accordingly.
//!
//! | module | holds |
//! |---|---|
//! | `client` | the one request, `GET {base}/v2/PhoneNumbers/{E.164}?Fields=…`, and its answer |
//! | `cache` | answers kept per number in the store (keyed hashes), so Kratos's retries cost one lookup on any replica |
//! | `policy` | the answer turned into a [`Verdict`] or a refusal |
//!
//! A refusal comes before the ledger and the quota: it is a certain "not
//! sent" that takes nothing.

mod cache;
mod client;
mod policy;

pub use client::{LookupAnswer, LookupClient, LookupError};
pub use policy::{Lookup, Refusal, Verdict};
