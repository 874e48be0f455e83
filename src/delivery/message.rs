//! The Kratos courier message: JSON bytes in, a typed [`CourierMessage`]
//! out. (Past 400 lines only by its tests, which list Kratos's payloads.) The JSON Schema in `schemas/courier-message.schema.json` is compiled
//! once ([`MessageParser::new`]) and enforced before deserialising, so a
//! caller learns every structural problem at once, each with its JSON
//! pointer.

use std::collections::HashMap;

use serde::Deserialize;

pub(crate) use crate::domain::TemplateType;
use serde_json::Value;

/// The schema every `/v1/sms` and `/v1/voice` body must satisfy.
pub const COURIER_MESSAGE_SCHEMA: &str = include_str!("../../schemas/courier-message.schema.json");

/// At most this many violations are reported: the answer must stay well
/// under the 1024 bytes Kratos reads of it.
pub(crate) const MAX_VIOLATIONS: usize = 3;

/// One schema violation: where and why. The reason never quotes the value
/// (it could be a code or a phone number).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub(crate) pointer: String,
    pub(crate) reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON")]
    MalformedJson,
    #[error("the body does not match the courier message schema")]
    Schema(Vec<Violation>),
}

/// The parts of the courier value the service uses. Unknown fields are
/// ignored, as newer Kratos versions add some.
#[derive(Debug, Deserialize)]
struct Wire {
    recipient: String,
    body: String,
    template_type: String,
    #[serde(default)]
    template_data: Option<WireTemplateData>,
    #[serde(default)]
    request_headers: Option<HashMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize)]
struct WireTemplateData {
    #[serde(default)]
    login_code: Option<String>,
    #[serde(default)]
    registration_code: Option<String>,
    #[serde(default)]
    verification_code: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    expires_in_minutes: Option<i64>,
    #[serde(default)]
    transient_payload: Option<Value>,
    #[serde(default)]
    identity: Option<Value>,
}

/// An integer as JSON Schema counts one: `60` and `60.0` alike (the schema
/// lets both through, so the typed parse must take both).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                // Up to the schema's bound, 2^53 - 1, the largest integer a
                // double holds exactly.
                Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 => {
                    Ok(Some(f as i64))
                }
                _ => Err(D::Error::custom("expires_in_minutes is not a whole number")),
            }
        }
    }
}

/// A courier message that has passed the schema.
#[derive(Debug, Clone)]
pub struct CourierMessage {
    /// As sent; checked as E.164 by [`crate::phone::Recipient::parse`].
    pub recipient: String,
    /// The text Kratos rendered.
    pub body: String,
    pub(crate) template_type: TemplateType,
    /// The one-time code, if the template carries one.
    pub code: Option<String>,
    pub expires_in_minutes: Option<i64>,
    /// The channel asked for by the flow's transient payload.
    pub(crate) requested_channel: Option<String>,
    /// The identity (or, for registration, its traits): only the voice trait
    /// is ever read from it.
    identity: Option<Value>,
    /// Header names lower-cased.
    pub(crate) request_headers: HashMap<String, Vec<String>>,
    /// Which repeat of the same text this is: 0 for Kratos (each of its
    /// messages is one message, and its retries are copies of it); the
    /// verify API's n-th resend of a pending code (see [`Self::ledger_code`]).
    pub(crate) repeat: u32,
    /// The end user's address as the caller states it (the verify API's
    /// `client_ip`), read before any header: `None` for Kratos, whose
    /// address comes from `limits.client_ip`'s header.
    pub(crate) client_address: Option<std::net::IpAddr>,
    /// Sent by Kratos's courier (rather than built by the verify API): its
    /// templates say which parts of the end user's request it carries.
    pub(crate) from_kratos: bool,
}

impl CourierMessage {
    /// The value of an identity trait, whether Kratos passed the whole
    /// identity (`identity.traits.x`) or the traits themselves
    /// (registration: `identity.x`).
    pub fn identity_trait(&self, name: &str) -> Option<&str> {
        let identity = self.identity.as_ref()?;
        identity
            .get("traits")
            .and_then(|t| t.get(name))
            .or_else(|| identity.get(name))
            .and_then(Value::as_str)
    }

    /// A notification: a message with no code of a template that is not one
    /// of Kratos's four code templates (`verifiable_address_changed`,
    /// `authenticator_key_added`, or any template a newer Kratos adds). It
    /// goes by SMS whatever the voice preference, is never counted by the
    /// fraud guard and has its own per-recipient limit.
    pub(crate) fn is_notification(&self) -> bool {
        self.code.is_none() && !self.template_type.is_code_template()
    }

    /// `template_data.identity.id`: the identity a login, verification or
    /// recovery code is for, as a UUID (Kratos's ids are). `None` for
    /// registration, whose `identity` is the traits alone (a trait named
    /// `id` is the end user's writing, never an identity), and for an id
    /// that is not a UUID.
    pub(crate) fn identity_id(&self) -> Option<u128> {
        if !self.from_kratos || matches!(self.template_type, TemplateType::Registration) {
            return None;
        }
        parse_uuid(self.identity.as_ref()?.get("id")?.as_str()?)
    }

    /// Every line of a request header, in the order Kratos received them
    /// (`name` lower-cased); empty when absent.
    pub(crate) fn request_header_values(&self, name: &str) -> &[String] {
        self.request_headers.get(name).map_or(&[], Vec::as_slice)
    }

    /// First value of a request header of the end user (name any case).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// Messages that do not come from Kratos: the verify API's codes
/// (`src/verify/`), sent through the same pipeline.
impl CourierMessage {
    /// A verification code for `recipient`: `body` is the SMS text, `code`
    /// what a call speaks, `locale` the language a call speaks in, `voice`
    /// whether a call is asked for (made when a caller id is configured, an
    /// SMS otherwise) and `repeat` which resend of the code this is.
    pub(crate) fn verification(
        recipient: &str,
        body: String,
        code: &str,
        expires_in_minutes: i64,
        locale: &str,
        voice: bool,
        repeat: u32,
    ) -> CourierMessage {
        CourierMessage {
            recipient: recipient.to_owned(),
            body,
            template_type: TemplateType::Verification,
            code: Some(code.to_owned()),
            expires_in_minutes: Some(expires_in_minutes),
            requested_channel: voice.then(|| "voice".to_owned()),
            identity: None,
            request_headers: HashMap::from([(
                "accept-language".to_owned(),
                vec![locale.to_owned()],
            )]),
            repeat,
            client_address: None,
            from_kratos: false,
        }
    }

    /// The code as the delivery ledger knows the message by (with channel,
    /// recipient and body): a resend of a pending code is a message of its
    /// own, sent (and charged to the limits) rather than answered as a
    /// duplicate of the first send, while each send keeps its exactly-once.
    pub(crate) fn ledger_code(&self) -> Option<String> {
        match self.repeat {
            0 => self.code.clone(),
            n => Some(format!(
                "{}\u{1f}resend {n}",
                self.code.as_deref().unwrap_or("")
            )),
        }
    }
}

/// Parses and checks request bodies; holds the compiled schema.
pub struct MessageParser {
    validator: jsonschema::Validator,
}

impl MessageParser {
    pub fn new() -> Self {
        let schema: Value =
            serde_json::from_str(COURIER_MESSAGE_SCHEMA).expect("the embedded schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the embedded schema compiles");
        MessageParser { validator }
    }

    pub fn parse(&self, bytes: &[u8]) -> Result<CourierMessage, ParseError> {
        // serde_json keeps the last of duplicate keys; another parser may keep
        // the first. Refuse the ambiguity instead of guessing.
        let value = parse_unique_keys(bytes).ok_or(ParseError::MalformedJson)?;
        self.parse_value(value)
    }

    pub fn parse_value(&self, value: Value) -> Result<CourierMessage, ParseError> {
        // The yes/no check is cheaper than collecting errors; the errors are
        // gathered only for a message that fails it.
        if !self.validator.is_valid(&value) {
            return Err(ParseError::Schema(self.violations(&value)));
        }
        self.typed(value)
    }

    fn violations(&self, value: &Value) -> Vec<Violation> {
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                reason: truncate(&e.masked().to_string(), 100),
            })
            .collect();
        if violations.is_empty() {
            // is_valid and iter_errors disagreeing would be a jsonschema bug;
            // still refuse rather than send.
            return vec![Violation {
                pointer: String::new(),
                reason: "does not match the schema".into(),
            }];
        }
        violations
    }

    fn typed(&self, value: Value) -> Result<CourierMessage, ParseError> {
        let wire: Wire = serde_json::from_value(value).map_err(|_| {
            // The schema admits only what `Wire` can hold; this is a guard,
            // not an expected path.
            ParseError::Schema(vec![Violation {
                pointer: String::new(),
                reason: "unexpected structure".into(),
            }])
        })?;
        let template_type = TemplateType::from_name(&wire.template_type);
        let data = wire.template_data;
        let code = data.as_ref().and_then(|d| {
            let preferred = match template_type {
                TemplateType::Login => d.login_code.as_ref(),
                TemplateType::Registration => d.registration_code.as_ref(),
                // Recovery codes travel as verification_code.
                TemplateType::Verification | TemplateType::Recovery => d.verification_code.as_ref(),
                TemplateType::Other(_) => None,
            };
            preferred
                .or(d.login_code.as_ref())
                .or(d.registration_code.as_ref())
                .or(d.verification_code.as_ref())
                .cloned()
        });
        let requested_channel = data
            .as_ref()
            .and_then(|d| d.transient_payload.as_ref())
            .and_then(|p| p.get("phone_courier"))
            .and_then(|p| p.get("channel"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let request_headers = wire
            .request_headers
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(CourierMessage {
            recipient: wire.recipient,
            body: wire.body,
            template_type,
            code,
            expires_in_minutes: data.as_ref().and_then(|d| d.expires_in_minutes),
            requested_channel,
            identity: data.and_then(|d| d.identity),
            request_headers,
            repeat: 0,
            client_address: None,
            from_kratos: true,
        })
    }
}

impl Default for MessageParser {
    fn default() -> Self {
        Self::new()
    }
}

/// A UUID in its usual text form (hyphens optional, any case) as a number.
fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() > 36 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// The JSON value of `bytes`, in one pass, refusing an object that names a
/// key twice (serde_json's own `Value` keeps the last of them silently).
pub(crate) fn parse_unique_keys(bytes: &[u8]) -> Option<Value> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    struct Unique;
    impl<'de> DeserializeSeed<'de> for Unique {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Unique)
        }
    }
    impl<'de> Visitor<'de> for Unique {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("not a JSON number"))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Unique)? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                // One search of the object per key: the entry a new key
                // goes into, or the duplicate.
                match object.entry(key) {
                    serde_json::map::Entry::Occupied(_) => {
                        return Err(A::Error::custom("duplicate key"))
                    }
                    serde_json::map::Entry::Vacant(slot) => {
                        slot.insert(map.next_value_seed(Unique)?);
                    }
                }
            }
            Ok(Value::Object(object))
        }
    }
    // The body checked as UTF-8 once, so that serde_json does not check
    // each string again (a body that is not UTF-8 was refused either way:
    // every string of it is read).
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Unique.deserialize(&mut de).ok()?;
    // Only white space may follow, as serde_json::from_slice requires.
    de.end().ok()?;
    Some(value)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> MessageParser {
        MessageParser::new()
    }

    #[test]
    fn minimal_message() {
        let m = parser()
            .parse(br#"{"recipient":"+14155550123","body":"Your code is 1234","template_type":"stub"}"#)
            .unwrap();
        assert_eq!(m.template_type, TemplateType::Other("stub".into()));
        assert_eq!(m.code, None);
        assert_eq!(m.template_type.label(), "other");
    }

    #[test]
    fn recovery_code_travels_as_verification_code() {
        let m = parser()
            .parse(br#"{"recipient":"+14155550123","body":"b","template_type":"recovery_code_valid","template_data":{"verification_code":"613570","expires_in_minutes":60}}"#)
            .unwrap();
        assert_eq!(m.code.as_deref(), Some("613570"));
        assert_eq!(m.expires_in_minutes, Some(60));
        // JSON Schema's integers include 60.0.
        let m = MessageParser::new()
            .parse(br#"{"recipient":"+14155550123","body":"b","template_type":"recovery_code_valid","template_data":{"verification_code":"613570","expires_in_minutes":60.0}}"#)
            .unwrap();
        assert_eq!(m.expires_in_minutes, Some(60));
        // Up to the schema's bound, written as a double (Schemathesis's find).
        let m = MessageParser::new()
            .parse(br#"{"recipient":"+14155550123","body":"b","template_type":"recovery_code_valid","template_data":{"verification_code":"613570","expires_in_minutes":9007199254740991.0}}"#)
            .unwrap();
        assert_eq!(m.expires_in_minutes, Some(9_007_199_254_740_991));
    }

    #[test]
    fn identity_trait_from_identity_or_traits() {
        let p = parser();
        let whole = p
            .parse(br#"{"recipient":"+1","body":"b","template_type":"login_code_valid","template_data":{"identity":{"traits":{"phone_channel":"voice"}}}}"#)
            .unwrap();
        assert_eq!(whole.identity_trait("phone_channel"), Some("voice"));
        let traits = p
            .parse(br#"{"recipient":"+1","body":"b","template_type":"registration_code_valid","template_data":{"identity":{"phone_channel":"voice"}}}"#)
            .unwrap();
        assert_eq!(traits.identity_trait("phone_channel"), Some("voice"));
    }

    #[test]
    fn identity_id_from_kratos_fixtures_but_never_from_registration_traits() {
        let p = parser();
        let fixture = |name: &str| {
            let path = format!(
                "{}/tests/fixtures/kratos/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            p.parse(&std::fs::read(path).unwrap()).unwrap()
        };
        let id = 0x9f42_5a8d_7efc_4768_8f23_7647_a74f_df13_u128;
        assert_eq!(fixture("verification").identity_id(), Some(id));
        assert!(fixture("login").identity_id().is_some());
        assert!(fixture("recovery").identity_id().is_some());
        assert_eq!(fixture("registration").identity_id(), None);
        // Registration's identity is the traits: an "id" trait is not one.
        let traits = p
            .parse(br#"{"recipient":"+1","body":"b","template_type":"registration_code_valid","template_data":{"identity":{"id":"9f425a8d-7efc-4768-8f23-7647a74fdf13"}}}"#)
            .unwrap();
        assert_eq!(traits.identity_id(), None);
        for bad in [
            r#""not-a-uuid""#,
            r#""42""#,
            r#""9f425a8d7efc47688f237647a74fdf1""#,
            r#""9f425a8d-7efc-4768-8f23-7647a74fdf13-""#,
        ] {
            let m = p
                .parse(format!(r#"{{"recipient":"+1","body":"b","template_type":"login_code_valid","template_data":{{"identity":{{"id":{bad}}}}}}}"#).as_bytes())
                .unwrap();
            assert_eq!(m.identity_id(), None, "{bad}");
        }
        // The verify API's messages are not Kratos's.
        let v =
            CourierMessage::verification("+14155550123", "b".into(), "1234", 10, "en", false, 0);
        assert_eq!(v.identity_id(), None);
        assert!(!v.from_kratos);
    }

    #[test]
    fn violations_carry_pointers_and_no_values() {
        let err = parser()
            .parse(
                br#"{"recipient":12345678,"body":"secret body 999111","template_type":"Bad Type"}"#,
            )
            .unwrap_err();
        let ParseError::Schema(v) = err else {
            panic!("expected schema errors")
        };
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/recipient"), "{v:?}");
        assert!(pointers.contains(&"/template_type"), "{v:?}");
        for x in &v {
            assert!(!x.reason.contains("12345678"));
            assert!(!x.reason.contains("Bad Type"));
        }
    }

    #[test]
    fn one_pass_parse_gives_serde_jsons_value() {
        for text in [
            r#"{"a": 1, "b": -2, "c": 1.5e3, "d": 18446744073709551615, "e": null}"#,
            r#"{"s": "caf\u00e9 \"q\" \n", "t": true, "f": false, "z": 0.0}"#,
            r#"[1, [2, [3, {"x": [], "y": {}}]], "end"]"#,
            "  {\"k\": \"v\"}  \n",
            "42",
            r#""text""#,
        ] {
            let ours = parse_unique_keys(text.as_bytes());
            let theirs: Option<Value> = serde_json::from_slice(text.as_bytes()).ok();
            assert!(ours.is_some(), "{text}");
            assert_eq!(ours, theirs, "{text}");
        }
        for bad in [
            r#"{"a": 1} x"#,
            r#"{"a": 1,}"#,
            "",
            "[1, 2",
            r#"{"a" 1}"#,
            "NaN",
        ] {
            assert_eq!(parse_unique_keys(bad.as_bytes()), None, "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_unique_keys(deep.as_bytes()), None, "recursion limit");
    }

    #[test]
    fn duplicate_keys_are_malformed_at_any_depth() {
        let p = parser();
        for body in [
            r#"{"recipient":"+14155550123","recipient":"+14155550124","body":"b","template_type":"t"}"#,
            r#"{"recipient":"+1","body":"b","template_type":"t","template_data":{"login_code":"1","login_code":"2"}}"#,
        ] {
            assert!(
                matches!(p.parse(body.as_bytes()), Err(ParseError::MalformedJson)),
                "{body}"
            );
        }
        assert!(p
            .parse(br#"{"recipient":"+1","body":"b","template_type":"t","template_data":{"a":{"x":1},"b":{"x":1}}}"#)
            .is_ok());
    }

    #[test]
    fn malformed_json() {
        assert!(matches!(
            parser().parse(b"{\"recipient\":"),
            Err(ParseError::MalformedJson)
        ));
    }
}
