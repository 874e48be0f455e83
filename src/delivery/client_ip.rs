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
//! [`ClientAddr::Unknown`]: it is limited in a shared bucket, never waved
//! through.

use std::net::{IpAddr, SocketAddr};

use crate::config::ClientIpSource;
use crate::delivery::message::CourierMessage;

/// The end user as the limiter sees them. Serialisable: an SMS's fallback
/// record keeps it (sealed) so an undelivered SMS's call is counted against
/// the same end user (`delivery::fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientAddr {
    /// An IPv4 address, or the /64 network of an IPv6 address (one
    /// subscriber usually holds a whole /64 and can rotate within it).
    Known(ClientNet),
    /// No trustworthy address: counted in the shared `unknown_ip` bucket.
    Unknown,
}

/// What one client is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientNet {
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
pub struct ClientIp {
    source: ClientIpSource,
}

impl ClientIp {
    pub fn new(source: ClientIpSource) -> Self {
        ClientIp { source }
    }

    /// The client of `message`: the address its caller stated (the verify
    /// API), else the configured header's. Allocates nothing.
    pub fn of(&self, message: &CourierMessage) -> ClientAddr {
        if let Some(ip) = message.client_address {
            return ClientAddr::Known(ClientNet::of(ip));
        }
        let found = match &self.source {
            ClientIpSource::None => None,
            ClientIpSource::ForwardedFor { trusted_hops } => forwarded_for(
                message.request_header_values("x-forwarded-for"),
                *trusted_hops,
            ),
            ClientIpSource::Single { header } => single(message.request_header_values(header)),
        };
        found.map_or(ClientAddr::Unknown, |ip| {
            ClientAddr::Known(ClientNet::of(ip))
        })
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
