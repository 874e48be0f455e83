//! HTTP Basic credentials, checked the way Twilio does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// Decoded `Authorization: Basic` credentials.
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
}

/// The Basic credentials of a request, if well-formed.
pub(crate) fn basic(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// `SK` followed by 32 hex digits.
fn is_api_key_sid(user: &str) -> bool {
    user.len() == 34 && user.starts_with("SK") && user[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the credentials are the account's (or an API key's) with the
/// right token. Comparisons are constant-time.
pub(crate) fn authorized(
    credentials: Option<&Credentials>,
    account_sid: &str,
    auth_token: &str,
) -> bool {
    let Some(credentials) = credentials else {
        return false;
    };
    let user_ok = credentials.user.as_bytes().ct_eq(account_sid.as_bytes())
        | subtle::Choice::from(u8::from(is_api_key_sid(&credentials.user)));
    let password_ok = credentials.password.as_bytes().ct_eq(auth_token.as_bytes());
    bool::from(user_ok & password_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(http::header::AUTHORIZATION, value.parse().expect("header"));
        map
    }

    #[test]
    fn checks_user_and_password() {
        let sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let encode = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let ok = basic(&headers(&encode(&format!("{sid}:tok"))));
        assert!(authorized(ok.as_ref(), sid, "tok"));
        let key = basic(&headers(&encode("SK0123456789abcdef0123456789abcdef:tok")));
        assert!(authorized(key.as_ref(), sid, "tok"));
        let wrong = basic(&headers(&encode(&format!("{sid}:nope"))));
        assert!(!authorized(wrong.as_ref(), sid, "tok"));
        let other = basic(&headers(&encode("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb:tok")));
        assert!(!authorized(other.as_ref(), sid, "tok"));
        assert!(!authorized(None, sid, "tok"));
        assert!(basic(&headers("Bearer x")).is_none());
        assert!(basic(&headers("Basic !!!")).is_none());
    }
}
