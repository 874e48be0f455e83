//! Twilio sandbox (stub)
