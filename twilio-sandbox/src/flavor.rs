//! Which provider the sandbox plays: Twilio itself, or a SignalWire space
//! (`--flavor signalwire`), whose compatibility API is Twilio's under
//! `/api/laml`, with UUIDs for the project id and every sid, and webhooks
//! signed in `X-SignalWire-Signature` (Twilio's algorithm, keyed with the
//! space's signing key, here the auth token).

use std::str::FromStr;

use rand::Rng as _;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    #[default]
    Twilio,
    SignalWire,
}

/// A flavor name that is neither `twilio` nor `signalwire`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flavor {0:?}; expected twilio or signalwire")]
pub struct UnknownFlavor(pub String);

impl FromStr for Flavor {
    type Err = UnknownFlavor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "twilio" => Ok(Flavor::Twilio),
            "signalwire" => Ok(Flavor::SignalWire),
            other => Err(UnknownFlavor(other.to_owned())),
        }
    }
}

/// The development project id of a SignalWire-flavoured sandbox.
pub const SIGNALWIRE_PROJECT_ID: &str = "5a1e0000-5a1e-4000-8000-000000000001";

impl Flavor {
    /// The REST API's path without the flavor's prefix (`/2010-04-01/...`),
    /// or `None` for an API path without it (SignalWire serves only its
    /// own). Paths outside the API (inbox, admin) pass as they are.
    pub(crate) fn api_path(self, path: &str) -> Option<&str> {
        match self {
            Flavor::Twilio => Some(path),
            Flavor::SignalWire => match path.strip_prefix("/api/laml") {
                Some(rest) if rest.starts_with("/2010-04-01/") => Some(rest),
                _ if path.starts_with("/2010-04-01/") => None,
                _ => Some(path),
            },
        }
    }

    /// A new sid: Twilio's two letters and 32 hex digits, or a UUID.
    pub(crate) fn new_sid(self, prefix: &str) -> String {
        match self {
            Flavor::Twilio => super::resources::new_sid(prefix),
            Flavor::SignalWire => {
                let n: u128 = rand::rng().random();
                let h = format!("{n:032x}");
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
        }
    }

    /// The header webhooks carry their signature in.
    pub(crate) fn signature_header(self) -> &'static str {
        match self {
            Flavor::Twilio => "X-Twilio-Signature",
            Flavor::SignalWire => "X-SignalWire-Signature",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalwire_serves_the_api_under_its_prefix_only() {
        let sw = Flavor::SignalWire;
        assert_eq!(
            sw.api_path("/api/laml/2010-04-01/Accounts/x/Messages.json"),
            Some("/2010-04-01/Accounts/x/Messages.json")
        );
        assert_eq!(sw.api_path("/2010-04-01/Accounts/x/Messages.json"), None);
        assert_eq!(sw.api_path("/inbox"), Some("/inbox"));
        assert_eq!(
            Flavor::Twilio.api_path("/2010-04-01/a"),
            Some("/2010-04-01/a")
        );
        let sid = sw.new_sid("SM");
        assert_eq!(sid.len(), 36);
        assert_eq!(sid.matches('-').count(), 4);
        assert!(Flavor::Twilio.new_sid("SM").starts_with("SM"));
    }
}
