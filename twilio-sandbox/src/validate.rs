//! Checks a create request the way Twilio does before accepting it:
//! required parameters, the published request schema, size limits and
//! Twilio's magic test numbers.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::{Map, Value};

use super::error::TwilioError;
use super::model::Channel;

const MESSAGE_SCHEMA: &str = include_str!("../../schemas/twilio-create-message.schema.json");
const CALL_SCHEMA: &str = include_str!("../../schemas/twilio-create-call.schema.json");

/// Longest `Body` Twilio accepts (characters).
pub(crate) const MAX_BODY_CHARS: usize = 1600;
/// Longest inline `Twiml` Twilio accepts (characters).
pub(crate) const MAX_TWIML_CHARS: usize = 4000;

struct Schemas {
    message: Validator,
    call: Validator,
}

/// The embedded schemas, compiled once per process. A failure is kept (not
/// panicked on) and reported on each request so a bad build is visible.
fn schemas() -> Result<&'static Schemas, TwilioError> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            Ok(Schemas {
                message: compile(MESSAGE_SCHEMA)?,
                call: compile(CALL_SCHEMA)?,
            })
        })
        .as_ref()
        .map_err(|e| TwilioError::new(500, 20500, format!("sandbox schema error: {e}")))
}

fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    jsonschema::validator_for(&schema).map_err(|e| e.to_string())
}

/// Compile the schemas now, so a broken schema shows at start-up.
pub(crate) fn preload() -> Result<(), TwilioError> {
    schemas().map(|_| ())
}

/// First non-empty value of a parameter (Twilio treats `To=` as missing).
pub(crate) fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Form pairs as a JSON object of strings; a key sent more than once becomes
/// an array, so repeated scalar parameters fail the schema's `string` type.
pub(crate) fn form_to_json(form: &[(String, String)]) -> Value {
    let mut object = Map::new();
    for (key, value) in form {
        match object.get_mut(key) {
            None => {
                object.insert(key.clone(), Value::String(value.clone()));
            }
            Some(Value::Array(values)) => values.push(Value::String(value.clone())),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value.clone())]);
            }
        }
    }
    Value::Object(object)
}

fn check_schema(validator: &Validator, form: &[(String, String)]) -> Result<(), TwilioError> {
    let instance = form_to_json(form);
    let Err(error) = validator.validate(&instance) else {
        return Ok(());
    };
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!("Unknown parameter: {}", unexpected.join(", "))
        }
        _ => {
            let location = error.instance_path().to_string();
            let name = location
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            format!("Invalid parameter {name}: {error}")
        }
    };
    Err(TwilioError::invalid_parameter(message))
}

/// Accept or refuse `POST .../Messages.json`.
pub(crate) fn check_message(form: &[(String, String)]) -> Result<(), TwilioError> {
    let to = param(form, "To")
        .ok_or_else(|| TwilioError::bad_request(21604, "A 'To' phone number is required."))?;
    let from = param(form, "From");
    if from.is_none() && param(form, "MessagingServiceSid").is_none() {
        return Err(TwilioError::bad_request(
            21603,
            "A 'From' phone number is required.",
        ));
    }
    check_schema(&schemas()?.message, form)?;
    let body = param(form, "Body");
    let has_media = param(form, "MediaUrl").is_some() || param(form, "ContentSid").is_some();
    match body {
        None if !has_media => {
            return Err(TwilioError::bad_request(21602, "Message body is required."));
        }
        Some(body) if body.chars().count() > MAX_BODY_CHARS => {
            return Err(TwilioError::bad_request(
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            ));
        }
        _ => {}
    }
    if let Some(from) = from {
        message_from_test_number(from)?;
    }
    message_to_test_number(to, from.unwrap_or("your Messaging Service"))
}

/// Twilio's test credentials: magic `From` numbers for messages.
fn message_from_test_number(from: &str) -> Result<(), TwilioError> {
    let error = match from {
        "+15005550001" => TwilioError::bad_request(
            21212,
            format!("The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."),
        ),
        "+15005550007" => TwilioError::bad_request(
            21606,
            format!("The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."),
        ),
        "+15005550008" => TwilioError::bad_request(
            21611,
            "This 'From' number has exceeded the maximum number of queued messages",
        ),
        _ => return Ok(()),
    };
    Err(error)
}

/// Twilio's test credentials: magic `To` numbers for messages.
fn message_to_test_number(to: &str, from: &str) -> Result<(), TwilioError> {
    let error = match to {
        "+15005550001" => TwilioError::bad_request(
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ),
        "+15005550002" => TwilioError::bad_request(
            21612,
            format!("The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from} via SMS."),
        ),
        "+15005550003" => TwilioError::bad_request(
            21408,
            format!("Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."),
        ),
        "+15005550004" => {
            TwilioError::bad_request(21610, "Attempt to send to unsubscribed recipient")
        }
        "+15005550009" => TwilioError::bad_request(
            21614,
            format!("'To' number {to} is not a valid mobile number"),
        ),
        _ => return Ok(()),
    };
    Err(error)
}

/// Accept or refuse `POST .../Calls.json`.
pub(crate) fn check_call(form: &[(String, String)]) -> Result<(), TwilioError> {
    // Calls report missing numbers with their own codes (21201/21213), not
    // the Messages codes (21604/21603).
    let to = param(form, "To")
        .ok_or_else(|| TwilioError::bad_request(21201, "No 'To' number is specified"))?;
    let from = param(form, "From")
        .ok_or_else(|| TwilioError::bad_request(21213, "No 'From' number is specified"))?;
    check_schema(&schemas()?.call, form)?;
    let twiml = param(form, "Twiml");
    if twiml.is_none() && param(form, "Url").is_none() && param(form, "ApplicationSid").is_none() {
        // 21205 is Twilio's code for a bad call Url; the exact code Twilio
        // answers for a missing Url/Twiml/ApplicationSid was not confirmed.
        return Err(TwilioError::bad_request(
            21205,
            "Url parameter is required.",
        ));
    }
    if let Some(twiml) = twiml {
        if twiml.chars().count() > MAX_TWIML_CHARS {
            // No documented Twilio code found for this limit; the sandbox
            // answers its generic invalid-parameter code.
            return Err(TwilioError::invalid_parameter(
                "Twiml parameter exceeds the 4000 character limit.",
            ));
        }
    }
    call_test_numbers(to, from)
}

/// Twilio's test credentials: magic numbers for calls (their codes differ
/// from the Messages ones; SMS-only cases such as 21610 do not apply).
fn call_test_numbers(to: &str, from: &str) -> Result<(), TwilioError> {
    if from == "+15005550001" {
        return Err(TwilioError::bad_request(
            21212,
            format!("The 'From' number {from} is not a valid phone number or client identifier."),
        ));
    }
    let error = match to {
        "+15005550001" => TwilioError::bad_request(
            21217,
            format!("The 'To' number {to} is not a valid phone number."),
        ),
        "+15005550002" => TwilioError::bad_request(
            21214,
            format!("'To' number {to} cannot be reached."),
        ),
        "+15005550003" => TwilioError::bad_request(
            21215,
            format!("Account not authorized to call {to}. Perhaps you need to enable some international permissions."),
        ),
        _ => return Ok(()),
    };
    Err(error)
}

/// Run the checks for `channel`.
pub(crate) fn check(channel: Channel, form: &[(String, String)]) -> Result<(), TwilioError> {
    match channel {
        Channel::Sms => check_message(form),
        Channel::Voice => check_call(form),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn schemas_compile() {
        preload().expect("embedded schemas compile");
    }

    #[test]
    fn repeated_keys_become_arrays() {
        let json = form_to_json(&form(&[("A", "1"), ("B", "x"), ("A", "2"), ("A", "3")]));
        assert_eq!(json, serde_json::json!({"A": ["1", "2", "3"], "B": "x"}));
    }

    #[test]
    fn message_rules() {
        let ok = form(&[
            ("To", "+14155550100"),
            ("From", "+15005550006"),
            ("Body", "hi"),
        ]);
        assert_eq!(check_message(&ok), Ok(()));
        let code = |pairs: &[(&str, &str)]| check_message(&form(pairs)).err().map(|e| e.code);
        assert_eq!(
            code(&[("From", "+15005550006"), ("Body", "hi")]),
            Some(21604)
        );
        assert_eq!(code(&[("To", "+14155550100"), ("Body", "hi")]), Some(21603));
        assert_eq!(
            code(&[("To", "+14155550100"), ("From", "+15005550006")]),
            Some(21602)
        );
        let long = "a".repeat(1601);
        assert_eq!(
            code(&[
                ("To", "+14155550100"),
                ("From", "+15005550006"),
                ("Body", &long)
            ]),
            Some(21617)
        );
        let exact = "é".repeat(1600);
        assert_eq!(
            code(&[
                ("To", "+14155550100"),
                ("From", "+15005550006"),
                ("Body", &exact)
            ]),
            None
        );
        assert_eq!(
            code(&[
                ("To", "+14155550100"),
                ("MessagingServiceSid", "MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                ("MediaUrl", "https://example.com/a.png"),
            ]),
            None
        );
        assert_eq!(
            code(&[
                ("To", "+1"),
                ("From", "+1"),
                ("Body", "x"),
                ("ValidityPeriod", "soon")
            ]),
            Some(20001)
        );
        assert_eq!(
            code(&[("To", "+1"), ("From", "+1"), ("Body", "x"), ("Body", "y")]),
            Some(20001)
        );
        assert_eq!(
            code(&[
                ("To", "+1"),
                ("From", "+1"),
                ("Body", "x"),
                ("StatusCallbackEvent", "sent")
            ]),
            Some(20001)
        );
    }

    #[test]
    fn call_rules() {
        let code = |pairs: &[(&str, &str)]| check_call(&form(pairs)).err().map(|e| e.code);
        assert_eq!(
            code(&[("To", "+1"), ("From", "+2"), ("Twiml", "<Response/>")]),
            None
        );
        assert_eq!(
            code(&[("From", "+2"), ("Twiml", "<Response/>")]),
            Some(21201)
        );
        assert_eq!(code(&[("To", "+1"), ("Twiml", "<Response/>")]), Some(21213));
        assert_eq!(code(&[("To", "+1"), ("From", "+2")]), Some(21205));
        let long = format!("<Response><Say>{}</Say></Response>", "a".repeat(4000));
        assert_eq!(
            code(&[("To", "+1"), ("From", "+2"), ("Twiml", &long)]),
            Some(20001)
        );
        assert_eq!(
            code(&[
                ("To", "+1"),
                ("From", "+2"),
                ("Url", "https://example.com/t"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "completed"),
            ]),
            None
        );
        assert_eq!(
            code(&[
                ("To", "+15005550002"),
                ("From", "+2"),
                ("Url", "https://e.x/")
            ]),
            Some(21214)
        );
    }
}
