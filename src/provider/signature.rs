//! Twilio's webhook signature (`X-Twilio-Signature`).
//!
//! The sandbox signs its status callbacks with it and the service verifies
//! callbacks with it, so both sides share one implementation of the rule:
//! base64(HMAC-SHA1(auth token, URL + every POST parameter as name followed by
//! value, sorted by name)), no separators.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + concat of name+value sorted by name)).
///
/// Parameters are sorted by name and, for equal names (repeated keys), by
/// value, so the result does not depend on the order they were sent in.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));

    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps
    // the function total without a panic path.
    let Ok(mut mac) = HmacSha1::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Constant-time check; also accepts the URL with/without an explicit :443 / :80 port as Twilio's libraries do.
pub(crate) fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let mut valid = false;
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        // Evaluate every candidate so the time taken does not reveal which matched.
        valid |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
    }
    valid
}

/// The URL as given plus the form with the default port added or removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let (scheme, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (("https://", rest), 443)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (("http://", rest), 80)
    } else {
        return variants;
    };
    let (prefix, rest) = scheme;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Keep any userinfo apart so its ':' is not mistaken for a port separator.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let port_suffix = format!(":{default_port}");
    let other = if let Some(host) = hostport.strip_suffix(&port_suffix) {
        format!("{prefix}{userinfo}{host}{tail}")
    } else if has_port(hostport) {
        return variants;
    } else {
        format!("{prefix}{userinfo}{hostport}{port_suffix}{tail}")
    };
    variants.push(other);
    variants
}

/// Whether `host[:port]` carries a port (IPv6 literals are bracketed).
fn has_port(hostport: &str) -> bool {
    match hostport.rfind(':') {
        Some(colon) => !hostport[colon..].contains(']'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn computes_the_documented_test_vector() {
        assert_eq!(compute("12345", URL, &vector_params()), EXPECTED);
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut params = vector_params();
        params.reverse();
        assert_eq!(compute("12345", URL, &params), EXPECTED);
    }

    #[test]
    fn verifies_the_test_vector_and_rejects_tampering() {
        let params = vector_params();
        assert!(verify("12345", URL, &params, EXPECTED));
        assert!(!verify("54321", URL, &params, EXPECTED));
        assert!(!verify(
            "12345",
            "https://mycompany.com/other",
            &params,
            EXPECTED
        ));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".to_owned();
        assert!(!verify("12345", URL, &tampered, EXPECTED));
        assert!(!verify("12345", URL, &params, ""));
    }

    #[test]
    fn accepts_url_with_or_without_default_port() {
        let params = vector_params();
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(verify("12345", with_port, &params, EXPECTED));
        let signed_with_port = compute("12345", with_port, &params);
        assert!(verify("12345", URL, &params, &signed_with_port));
        let http = "http://example.com/cb";
        let sig = compute("t", "http://example.com:80/cb", &[]);
        assert!(verify("t", http, &[], &sig));
        // A non-default port is never stripped or swapped.
        let sig = compute("t", "http://example.com:8080/cb", &[]);
        assert!(!verify("t", http, &[], &sig));
    }

    #[test]
    fn repeated_names_sort_by_value() {
        let a = vec![
            ("E".to_owned(), "b".to_owned()),
            ("E".to_owned(), "a".to_owned()),
        ];
        let b = vec![
            ("E".to_owned(), "a".to_owned()),
            ("E".to_owned(), "b".to_owned()),
        ];
        assert_eq!(compute("t", "u", &a), compute("t", "u", &b));
    }

    /// The sandbox signs with its own implementation: the two must agree on
    /// anything, or dev mode and the tests would prove nothing.
    #[test]
    fn accepts_what_the_sandbox_signs() {
        let params = vec![
            ("MessageStatus".to_owned(), "delivered".to_owned()),
            ("MessageSid".to_owned(), "SM0123".to_owned()),
            ("To".to_owned(), "+14155550123".to_owned()),
            ("Body".to_owned(), "é ü ✓ & = +".to_owned()),
        ];
        let url = "http://127.0.0.1:4470/v1/twilio/status";
        let signed = twilio_sandbox::signature::sign("token", url, &params);
        assert!(verify("token", url, &params, &signed));
        assert!(!verify("other", url, &params, &signed));
    }
}
