//! Authenticating Kratos: HTTP basic auth or an API key header, the two
//! ways a Kratos http courier channel can authenticate.
//!
//! Comparisons are constant time over keyed hashes (keyed BLAKE3 with a
//! random key per process, so lengths do not leak either and the hashes say
//! nothing outside this process), and a wrong user and a wrong password take
//! the same path: both parts are always compared.

use base64::Engine;
use http::HeaderMap;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

/// Checks the credentials of each request.
pub(crate) struct Authenticator {
    disabled: bool,
    /// The random key of this process's hashes.
    key: [u8; 32],
    /// Digests of the expected user and password.
    basic: Option<([u8; 32], [u8; 32])>,
    /// Header name and the digest of the expected value.
    api_key: Option<(http::HeaderName, [u8; 32])>,
}

fn digest(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, bytes).as_bytes()
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let digest = |bytes: &[u8]| digest(&key, bytes);
        Authenticator {
            disabled: config.disabled,
            key,
            basic: config.basic.as_ref().map(|b| {
                (
                    digest(b.username.as_bytes()),
                    digest(b.password.expose_secret().as_bytes()),
                )
            }),
            api_key: config
                .api_key
                .as_ref()
                .map(|k| (k.header.clone(), digest(k.value.expose_secret().as_bytes()))),
        }
    }

    /// Whether a 401 should carry a basic-auth challenge.
    pub(crate) fn uses_basic(&self) -> bool {
        self.basic.is_some()
    }

    /// `true` when the request carries valid credentials (or auth is off).
    pub(crate) fn check(&self, headers: &HeaderMap) -> bool {
        if self.disabled {
            return true;
        }
        let mut ok = false;
        if let Some((user, pass)) = &self.basic {
            ok |= check_basic(&self.key, headers, user, pass);
        }
        if let Some((name, value)) = &self.api_key {
            ok |= check_api_key(&self.key, headers, name, value);
        }
        ok
    }
}

fn check_basic(key: &[u8; 32], headers: &HeaderMap, user: &[u8; 32], pass: &[u8; 32]) -> bool {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // Absent, or sent twice: refuse rather than guess which one counts.
        return false;
    };
    let Some((scheme, token)) = value.as_bytes().split_first_chunk::<6>() else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim_ascii()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = digest(key, u).ct_eq(user);
    let pass_ok = digest(key, p).ct_eq(pass);
    (user_ok & pass_ok).into()
}

fn check_api_key(
    key: &[u8; 32],
    headers: &HeaderMap,
    name: &http::HeaderName,
    value: &[u8; 32],
) -> bool {
    let mut values = headers.get_all(name).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    digest(key, v.as_bytes()).ct_eq(value).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyAuth, BasicAuth};
    use http::HeaderValue;
    use secrecy::SecretString;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            disabled: false,
            basic: Some(BasicAuth {
                username: "kratos".into(),
                password: SecretString::from("s3cret"),
            }),
            api_key: Some(ApiKeyAuth {
                header: http::HeaderName::from_static("x-api-key"),
                value: SecretString::from("key-123"),
            }),
        })
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn basic_and_api_key() {
        let a = auth();
        assert!(a.check(&with("authorization", &basic("kratos:s3cret"))));
        assert!(a.check(&with(
            "authorization",
            &basic("kratos:s3cret").replace("Basic", "basic")
        )));
        assert!(a.check(&with("x-api-key", "key-123")));
        assert!(!a.check(&HeaderMap::new()));
        for bad in [
            basic("kratos:wrong"),
            basic("other:s3cret"),
            basic("kratos"),
            basic("kratos:s3cret:"),
            "Basic !!!notbase64".into(),
            "Bearer abc".into(),
            "Basic".into(),
            "".into(),
        ] {
            assert!(!a.check(&with("authorization", &bad)), "{bad}");
        }
        assert!(!a.check(&with("x-api-key", "key-1234")));
        let mut twice = with("x-api-key", "key-123");
        twice.append("x-api-key", HeaderValue::from_static("key-123"));
        assert!(!a.check(&twice));
    }
}
