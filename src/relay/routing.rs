//! Which route an incoming message takes, and which of its targets may be
//! sent to: the decisions that need no store and no network, so they are
//! tested here on their own.

use crate::config::{RelayConfig, Route};
use crate::phone::{Sender, E164};

use super::inbound::Inbound;

/// What to do with a message, before the store is asked anything.
#[derive(Debug)]
pub(crate) enum Decision<'a> {
    /// Relay along this route.
    Route(&'a Route),
    /// Sent from one of our own numbers: relaying it would loop.
    Loop,
    /// Not received on one of `relay.numbers`.
    NotOurNumber,
    /// No route names the sender and there is no default route.
    NoRoute,
}

/// The first route naming the sender, else the default route.
pub(crate) fn decide<'a>(config: &'a RelayConfig, own: &[E164], message: &Inbound) -> Decision<'a> {
    if let Some(Sender::Number(n)) = &message.sender {
        if own.contains(n) {
            return Decision::Loop;
        }
    }
    match &message.to {
        Some(to) if config.numbers.contains(to) => {}
        _ => return Decision::NotOurNumber,
    }
    let named = message.sender.as_ref().and_then(|sender| {
        config
            .routes
            .iter()
            .find(|r| r.from.iter().any(|f| f.matches(sender)))
    });
    match named.or(config.default_route.as_ref()) {
        Some(route) => Decision::Route(route),
        None => Decision::NoRoute,
    }
}

/// Whether an SMS target may be sent to: never one of our own numbers
/// (the number that received the message included), so a forward can
/// never come back in as a message to relay.
pub(crate) fn sms_allowed(target: &E164, own: &[E164]) -> bool {
    !own.contains(target)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    fn route(name: &str, from: &[&str]) -> Route {
        Route {
            name: name.into(),
            from: from.iter().map(|f| Sender::parse(f).unwrap()).collect(),
            sms: vec![n("+14443332222")],
            slack: vec![],
            webhooks: vec![],
        }
    }

    fn config(default: bool) -> RelayConfig {
        RelayConfig {
            inbound_url: "https://c.example.com/v1/twilio/inbound".into(),
            numbers: vec![n("+15005550006")],
            sms_template: "{body}".into(),
            per_route_per_hour: 0,
            attempts: 1,
            retry_window: Duration::ZERO,
            timeout: Duration::from_secs(1),
            webhook_secret: None,
            routes: vec![
                route("GitHub", &["+15556667777", "GitHub"]),
                route("Bank", &["32665"]),
            ],
            default_route: default.then(|| route("Unknown", &[])),
        }
    }

    fn message(from: &str, to: &str) -> Inbound {
        Inbound {
            sid: "SM1".into(),
            from: from.into(),
            sender: Sender::parse(from),
            to: E164::parse(to),
            body: String::new(),
            num_media: 0,
        }
    }

    #[test]
    fn routes_by_sender_then_default() {
        let c = config(true);
        let own = c.numbers.clone();
        let name = |d: Decision| match d {
            Decision::Route(r) => r.name.clone(),
            other => format!("{other:?}"),
        };
        let to = "+15005550006";
        assert_eq!(
            name(decide(&c, &own, &message("+15556667777", to))),
            "GitHub"
        );
        assert_eq!(name(decide(&c, &own, &message("github", to))), "GitHub");
        assert_eq!(name(decide(&c, &own, &message("32665", to))), "Bank");
        assert_eq!(
            name(decide(&c, &own, &message("+19998887777", to))),
            "Unknown"
        );
        assert_eq!(name(decide(&c, &own, &message("<weird>", to))), "Unknown");
        let c = config(false);
        assert_eq!(
            name(decide(&c, &own, &message("+19998887777", to))),
            "NoRoute"
        );
        assert_eq!(name(decide(&c, &own, &message("+15005550006", to))), "Loop");
        assert_eq!(
            name(decide(&c, &own, &message("+15556667777", "+15005550007"))),
            "NotOurNumber"
        );
        assert!(!sms_allowed(&n("+15005550006"), &own));
        assert!(sms_allowed(&n("+14443332222"), &own));
    }
}
