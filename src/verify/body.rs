//! The verify API's JSON bodies: bytes in, a typed request out. Each body
//! is checked against its JSON Schema (`schemas/verify-*.schema.json`,
//! compiled once) before it is read, so a caller learns every structural
//! problem at once, each with its JSON pointer, in the same
//! `schema_violation` answer `/v1/sms` gives.

use serde::Deserialize;
use serde_json::Value;

use crate::delivery::message::{parse_unique_keys, ParseError, Violation};
use crate::domain::Channel;
use crate::domain::LanguageTag;

/// The schema of `POST /v1/verify/request` bodies.
pub const REQUEST_SCHEMA: &str = include_str!("../../schemas/verify-request.schema.json");
/// The schema of `POST /v1/verify/check` bodies.
pub const CHECK_SCHEMA: &str = include_str!("../../schemas/verify-check.schema.json");

/// At most this many violations are reported (the answer stays small).
const MAX_VIOLATIONS: usize = 3;

/// "Send me a code."
#[derive(Debug, Clone)]
pub(crate) struct CodeRequest {
    /// As sent; checked as E.164 by the verifier.
    pub(crate) to: String,
    pub(crate) channel: Channel,
    pub(crate) locale: Option<LanguageTag>,
    /// The end user's address, for the per-address limit (without it the
    /// send counts in the shared `unknown_ip` bucket).
    pub(crate) client_ip: Option<std::net::IpAddr>,
    /// The `Idempotency-Key` header, as sent (the HTTP layer sets it): a
    /// retry with the same key is answered as the first request was.
    pub(crate) idempotency_key: Option<String>,
}

/// "Is this the code?"
#[derive(Debug, Clone)]
pub(crate) struct CodeAttempt {
    pub(crate) to: String,
    pub(crate) code: String,
}

#[derive(Deserialize)]
struct RequestWire {
    to: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    client_ip: Option<String>,
}

#[derive(Deserialize)]
struct CheckWire {
    to: String,
    code: String,
}

/// The compiled schemas of both bodies.
pub(crate) struct Bodies {
    request: jsonschema::Validator,
    check: jsonschema::Validator,
}

impl Bodies {
    pub(crate) fn new() -> Self {
        let compile = |text: &str| {
            let schema: Value = serde_json::from_str(text).expect("the embedded schema is JSON");
            jsonschema::validator_for(&schema).expect("the embedded schema compiles")
        };
        Bodies {
            request: compile(REQUEST_SCHEMA),
            check: compile(CHECK_SCHEMA),
        }
    }

    pub(crate) fn request(&self, bytes: &[u8]) -> Result<CodeRequest, ParseError> {
        let wire: RequestWire = checked(&self.request, bytes)?;
        Ok(CodeRequest {
            to: wire.to,
            channel: match wire.channel.as_deref() {
                Some("voice") => Channel::Voice,
                _ => Channel::Sms,
            },
            // The schema's pattern is the tag's shape: normalising cannot
            // fail on what passed it.
            locale: wire.locale.as_deref().and_then(LanguageTag::normalize),
            // An address that does not parse counts as unknown, as a
            // malformed header does for Kratos's messages: refusing it would
            // let a caller pick which bucket a send is charged to.
            client_ip: wire.client_ip.and_then(|ip| ip.trim().parse().ok()),
            idempotency_key: None,
        })
    }

    pub(crate) fn check(&self, bytes: &[u8]) -> Result<CodeAttempt, ParseError> {
        let wire: CheckWire = checked(&self.check, bytes)?;
        Ok(CodeAttempt {
            to: wire.to,
            code: wire.code,
        })
    }
}

impl Default for Bodies {
    fn default() -> Self {
        Self::new()
    }
}

/// Parse (refusing duplicate keys), check against `schema`, then read.
fn checked<T: for<'de> Deserialize<'de>>(
    schema: &jsonschema::Validator,
    bytes: &[u8],
) -> Result<T, ParseError> {
    let value = parse_unique_keys(bytes).ok_or(ParseError::MalformedJson)?;
    if !schema.is_valid(&value) {
        let mut violations: Vec<Violation> = schema
            .iter_errors(&value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                // `masked`: the reason never quotes the value (a number, a
                // code).
                reason: e.masked().to_string().chars().take(100).collect(),
            })
            .collect();
        if violations.is_empty() {
            violations.push(Violation {
                pointer: String::new(),
                reason: "does not match the schema".into(),
            });
        }
        return Err(ParseError::Schema(violations));
    }
    serde_json::from_value(value).map_err(|_| {
        ParseError::Schema(vec![Violation {
            pointer: String::new(),
            reason: "unexpected structure".into(),
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_or_refused_with_pointers() {
        let b = Bodies::new();
        let r = b
            .request(br#"{"to":"+14155550123","channel":"voice","locale":"de-de"}"#)
            .unwrap();
        assert_eq!(r.channel, Channel::Voice);
        assert_eq!(r.locale.as_deref(), Some("de-DE"));
        let r = b.request(br#"{"to":"+14155550123"}"#).unwrap();
        assert_eq!((r.channel, r.locale), (Channel::Sms, None));
        assert!(matches!(
            b.request(br#"{"to":"+1","to":"+2"}"#),
            Err(ParseError::MalformedJson)
        ));
        let Err(ParseError::Schema(v)) = b.request(br#"{"to":"+14155550123","channel":"fax"}"#)
        else {
            panic!("a channel outside the enum passed")
        };
        assert_eq!(v[0].pointer, "/channel");
        assert!(!v[0].reason.contains("fax"), "{}", v[0].reason);
        let Err(ParseError::Schema(v)) = b.check(br#"{"to":"+14155550123","code":123456}"#) else {
            panic!("a numeric code passed")
        };
        assert_eq!(v[0].pointer, "/code");
        assert!(!v[0].reason.contains("123456"), "{}", v[0].reason);
        assert!(b.check(br#"{"to":"+14155550123"}"#).is_err());
        assert!(b.request(br#"{"to":"+14155550123","extra":1}"#).is_err());
    }
}
