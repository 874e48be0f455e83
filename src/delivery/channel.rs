//! Where a message came in and how it goes out.

/// Which endpoint the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Sms,
    Voice,
}

impl Endpoint {
    /// The path, for logs and metrics.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Sms => "/v1/sms",
            Endpoint::Voice => "/v1/voice",
        }
    }
}

/// How a code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }
}
