//! From a parsed Kratos message to a provider request: which channel, whether
//! policy allows it, whether it was sent already, whether limits and budget
//! allow it, and what Kratos is told.

pub mod budget;
pub mod client_ip;
pub mod compose;
pub mod confirmation;
pub mod courier;
pub mod error;
pub mod fallback;
pub mod fraud;
pub mod ledger;
pub mod limits;
pub mod message;
pub mod send;
pub mod test_numbers;

/// The shared names, where the delivery code has always found them.
pub mod channel {
    pub use crate::domain::{Channel, Endpoint};
}
