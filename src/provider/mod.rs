//! The provider side: the Twilio REST client and what its answers mean, the
//! TwiML that speaks a code, and Twilio's webhook signatures; the ordered
//! set of configured providers (Twilio, SignalWire) with a circuit breaker
//! each.

pub(crate) mod breaker;
pub mod errors;
pub(crate) mod reconcile;
pub mod set;
pub mod signature;
pub(crate) mod twilio;
pub mod twiml;
