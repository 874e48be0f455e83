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
//! The lookup is the last check before the send (`delivery::courier`'s
//! table): it is billed, so a message reaches it only after the policy,
//! the ledger, the fraud guard, the limits and the budget passed it; a
//! refusal is a certain "not sent" whose quota is given back. Billed
//! lookups have their own hourly cap (`lookup.max_per_hour`).

mod cache;
mod client;
mod policy;

pub(crate) use client::LookupClient;
pub(crate) use policy::{Lookup, Refusal, Verdict};
