//! Which end user asked for a code: the client address, read from Kratos's
//! `request_headers` as `[limits.client_ip]` says, trusting only what a
//! proxy the operator runs wrote.
//!
//! Kratos copies the end user's request headers into the courier message
//! (those in its `clients.web_hook.header_allowlist`), so every header here
//! went through the same proxies as the request itself. The end user can
//! write any header and any `X-Forwarded-For` entries; a proxy only appends.
//! So for `X-Forwarded-For` the client is the entry `trusted_hops` places
//! from the right, and everything left of it is ignored; a single-value
//! header is read only when it is the configured one (a CDN overwrites it,
//! nobody else does). An address that is absent or unparseable is
//! [`Address::Unknown`]: it is limited in a shared bucket, never waved
//! through. A verification code is the exception: Kratos never sends its
//! headers ([`Address::NotCarried`]), so it is limited per identity
//! (`template_data.identity.id`) instead, beside the recipient, prefix,
//! country and global limiters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::ClientIpSource;
use crate::delivery::message::CourierMessage;
use crate::domain::TemplateType;
use crate::telemetry::metrics::Metrics;

/// The end user as the limiter sees them: their address, and the Kratos
/// identity the code is for. Serialisable: an SMS's fallback record keeps
/// it (sealed) so an undelivered SMS's call is counted against the same end
/// user (`delivery::fallback`); a record written before the identity was
/// kept (the address alone) still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "ClientAddrWire")]
pub(crate) struct ClientAddr {
    pub(crate) address: Address,
    /// `template_data.identity.id` (a UUID), when the message carries it:
    /// limited per identity under its keyed hash (`delivery::limits`).
    pub(crate) identity: Option<u128>,
}

impl ClientAddr {
    /// Nothing known: the shared `unknown_ip` bucket.
    pub(crate) const UNKNOWN: ClientAddr = ClientAddr {
        address: Address::Unknown,
        identity: None,
    };

    #[cfg(test)]
    pub(crate) fn known(net: ClientNet) -> ClientAddr {
        ClientAddr {
            address: Address::Known(net),
            identity: None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ClientAddrWire {
    Now {
        address: Address,
        #[serde(default)]
        identity: Option<u128>,
    },
    Before(Address),
}

impl From<ClientAddrWire> for ClientAddr {
    fn from(wire: ClientAddrWire) -> Self {
        match wire {
            ClientAddrWire::Now { address, identity } => ClientAddr { address, identity },
            ClientAddrWire::Before(address) => ClientAddr {
                address,
                identity: None,
            },
        }
    }
}

/// Where the end user's address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Address {
    /// An IPv4 address, or the /64 network of an IPv6 address (one
    /// subscriber usually holds a whole /64 and can rotate within it).
    Known(ClientNet),
    /// No trustworthy address where one was due: counted in the shared
    /// `unknown_ip` bucket.
    Unknown,
    /// Kratos never sends the request's headers with this template
    /// (`verification_code_valid`): there is no address to count, and the
    /// message is limited per identity, recipient, prefix, country and in
    /// total, never in the shared bucket (an attacker who starts
    /// verification flows must not block everyone's).
    NotCarried,
}

/// What one client is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ClientNet {
    V4([u8; 4]),
    /// The first 64 bits.
    V6([u8; 8]),
}

impl ClientNet {
    fn of(ip: IpAddr) -> ClientNet {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is that IPv4 address.
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientNet::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&v6.octets()[..8]);
                ClientNet::V6(net)
            }
        }
    }
}

/// Reads the client address as configured.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp {
    source: ClientIpSource,
}

impl ClientIp {
    pub(crate) fn new(source: ClientIpSource) -> Self {
        ClientIp { source }
    }

    /// The client of `message`: the address its caller stated (the verify
    /// API), else the configured header's, and the identity it is for.
    /// Allocates nothing.
    pub(crate) fn of(&self, message: &CourierMessage) -> ClientAddr {
        let address = match self.address(message) {
            Some(ip) => Address::Known(ClientNet::of(ip)),
            None if !carries_headers(message) => Address::NotCarried,
            None => Address::Unknown,
        };
        ClientAddr {
            address,
            identity: message.identity_id(),
        }
    }

    /// What `[limits.client_ip]` reads from `message`, if anything.
    fn address(&self, message: &CourierMessage) -> Option<IpAddr> {
        if let Some(ip) = message.client_address {
            return Some(ip);
        }
        match &self.source {
            ClientIpSource::None => None,
            ClientIpSource::ForwardedFor { trusted_hops } => forwarded_for(
                message.request_header_values("x-forwarded-for"),
                *trusted_hops,
            ),
            ClientIpSource::Single { header } => single(message.request_header_values(header)),
        }
    }

    /// Whether `message` should have carried an address and did not: a
    /// Kratos template that carries the request's headers (login,
    /// registration, recovery) arrived without the configured header's
    /// address. Kratos's `clients.web_hook.header_allowlist` or the
    /// courier template (the kit's `courier-sms.jsonnet`) drops it; the
    /// message is limited in the shared `unknown_ip` bucket.
    pub(crate) fn address_missing(&self, message: &CourierMessage) -> bool {
        message.from_kratos
            && carries_headers(message)
            && self.source != ClientIpSource::None
            && self.address(message).is_none()
    }
}

/// Whether the message's template carries the end user's request headers.
/// Kratos v26.2.0 (`courier/sms.go`) sends them only for templates whose
/// model has them: `verification_code_valid`'s has none, so every
/// verification SMS arrives with `{}`. The verify API states the address
/// itself (or is counted in the shared bucket).
pub(crate) fn carries_headers(message: &CourierMessage) -> bool {
    !(message.from_kratos && message.template_type == TemplateType::Verification)
}

/// What `/health/ready` and the log say when Kratos's login, registration
/// or recovery codes arrive without the end user's address.
pub(crate) const ADDRESS_MISSING: &str = "login, registration or recovery codes arrive without the end user's address (limits.client_ip.header), so they share the unknown_ip bucket: add that header to Kratos's clients.web_hook.header_allowlist and keep it in the courier template's request_headers (the kit: kratos/kratos.yml, kratos/courier-sms.jsonnet)";

/// The same when codes arrive without `template_data.identity.id`.
pub(crate) const IDENTITY_MISSING: &str = "login, verification or recovery codes arrive without template_data.identity.id, so they are not limited per identity (and verification codes by no requester at all): keep identity.id in the courier template's template_data (the kit: kratos/courier-sms.jsonnet)";

/// Watches Kratos's messages for what their templates should carry and a
/// setup dropped: counts each (`phone_courier_limits_missing_total`), warns
/// once per kind (not per message) naming the setting to fix, and lists
/// them for `/health/ready`. The message is still limited (the shared
/// bucket, or without the identity limiter).
pub(crate) struct SetupCheck {
    client_ip: ClientIp,
    metrics: Arc<Metrics>,
    address_missing: AtomicBool,
    identity_missing: AtomicBool,
}

impl SetupCheck {
    pub(crate) fn new(source: ClientIpSource, metrics: Arc<Metrics>) -> Self {
        SetupCheck {
            client_ip: ClientIp::new(source),
            metrics,
            address_missing: AtomicBool::new(false),
            identity_missing: AtomicBool::new(false),
        }
    }

    /// Look at one parsed Kratos message.
    pub(crate) fn observe(&self, message: &CourierMessage) {
        let template = message.template_type.label();
        if self.client_ip.address_missing(message) {
            self.metrics.limits_missing("client_address", template);
            if !self.address_missing.swap(true, Ordering::Relaxed) {
                tracing::warn!(template_type = template, "{ADDRESS_MISSING}");
            }
        }
        let has_identity = matches!(
            message.template_type,
            TemplateType::Login | TemplateType::Verification | TemplateType::Recovery
        );
        if message.from_kratos && has_identity && message.identity_id().is_none() {
            self.metrics.limits_missing("identity_id", template);
            if !self.identity_missing.swap(true, Ordering::Relaxed) {
                tracing::warn!(template_type = template, "{IDENTITY_MISSING}");
            }
        }
    }

    /// What this replica has seen, for `/health/ready`.
    pub(crate) fn warnings(&self) -> Vec<&'static str> {
        [
            (&self.address_missing, ADDRESS_MISSING),
            (&self.identity_missing, IDENTITY_MISSING),
        ]
        .into_iter()
        .filter(|(seen, _)| seen.load(Ordering::Relaxed))
        .map(|(_, text)| text)
        .collect()
    }
}

/// The entry `trusted_hops` places from the right of all the header's
/// lines taken together (a proxy may append a line rather than extend the
/// last one). Fewer entries than that: the request did not come through
/// every trusted proxy, so nothing in it is trusted.
fn forwarded_for(lines: &[String], trusted_hops: u32) -> Option<IpAddr> {
    let hops = usize::try_from(trusted_hops).ok()?;
    let entry = lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(','))
        .nth(hops.checked_sub(1)?)?;
    parse(entry)
}

/// A header a CDN sets to the address alone: exactly one line with one
/// address. Several (the end user's and the CDN's?) cannot be told apart.
fn single(lines: &[String]) -> Option<IpAddr> {
    match lines {
        [one] => parse(one),
        _ => None,
    }
}

/// An address, also with a port (`203.0.113.7:4711`, `[2001:db8::1]:443`),
/// as some proxies write it.
fn parse(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn v4(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn forwarded_for_is_read_from_the_right() {
        let xff = lines(&["junk, 198.51.100.1", "203.0.113.7"]);
        assert_eq!(forwarded_for(&xff, 1), v4("203.0.113.7"));
        assert_eq!(forwarded_for(&xff, 2), v4("198.51.100.1"));
        // The end user's own entry is never reached as a trusted one.
        assert_eq!(forwarded_for(&xff, 3), None);
        assert_eq!(forwarded_for(&xff, 4), None);
        assert_eq!(forwarded_for(&lines(&[]), 1), None);
        assert_eq!(forwarded_for(&lines(&["1.2.3.4"]), 0), None);
        assert_eq!(
            forwarded_for(&lines(&["1.2.3.4,[2001:db8::1]:443"]), 1),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(forwarded_for(&lines(&["1.2.3.4, unknown"]), 1), None);
        assert_eq!(forwarded_for(&lines(&["1.2.3.4:80 "]), 1), v4("1.2.3.4"));
    }

    #[test]
    fn a_single_value_header_must_hold_exactly_one_address() {
        assert_eq!(single(&lines(&["203.0.113.7"])), v4("203.0.113.7"));
        assert_eq!(single(&lines(&["203.0.113.7", "198.51.100.1"])), None);
        assert_eq!(single(&lines(&["203.0.113.7, 198.51.100.1"])), None);
        assert_eq!(single(&lines(&[""])), None);
        assert_eq!(single(&lines(&[])), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let net = |s: &str| ClientNet::of(s.parse().unwrap());
        assert_eq!(
            net("2001:db8:1:2::1"),
            net("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:203.0.113.7"), net("203.0.113.7"));
    }
}
