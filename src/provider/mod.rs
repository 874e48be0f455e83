//! The provider side: the Twilio REST client and what its answers mean, the
//! TwiML that speaks a code, and Twilio's webhook signatures.

pub mod errors;
pub mod reconcile;
pub mod signature;
pub mod twilio;
pub mod twiml;
