//! From a parsed Kratos message to a provider request: which channel, whether
//! policy allows it, whether it was sent already, whether limits and budget
//! allow it, and what Kratos is told.

pub mod budget;
pub(crate) mod client_ip;
pub(crate) mod compose;
pub mod confirmation;
pub mod courier;
pub mod error;
pub(crate) mod fallback;
pub mod fraud;
pub(crate) mod ledger;
pub mod limits;
pub mod message;
pub(crate) mod send;
pub(crate) mod test_numbers;

/// The shared names, where the delivery code has always found them.
pub mod channel {
    pub use crate::domain::{Channel, Endpoint};
}
