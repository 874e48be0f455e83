//! The body of `POST /v1/kratos/confirmed`: Kratos's after-flow web hook
//! reporting that a flow completed with a code, rendered by the kit's
//! `confirmed.jsonnet` (`schemas/confirmation.schema.json`).

use serde::Deserialize;
use serde_json::Value;

use crate::delivery::message::Violation;

pub const CONFIRMATION_SCHEMA: &str = include_str!("../../schemas/confirmation.schema.json");

/// A checked confirmation.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Confirmation {
    /// The identity's phone numbers as Kratos holds them (not yet parsed:
    /// one that is not a valid number is skipped, not an error, so one odd
    /// trait cannot hide the others).
    pub(crate) recipients: Vec<String>,
    #[serde(default)]
    pub(crate) flow: Option<String>,
}

/// Why a body was refused.
#[derive(Debug)]
pub(crate) enum ConfirmationError {
    MalformedJson,
    Schema(Vec<Violation>),
}

pub(crate) struct ConfirmationParser {
    validator: jsonschema::Validator,
}

impl Default for ConfirmationParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfirmationParser {
    pub(crate) fn new() -> Self {
        let schema: Value =
            serde_json::from_str(CONFIRMATION_SCHEMA).expect("the embedded schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the embedded schema compiles");
        ConfirmationParser { validator }
    }

    pub(crate) fn parse(&self, bytes: &[u8]) -> Result<Confirmation, ConfirmationError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|_| ConfirmationError::MalformedJson)?;
        if !self.validator.is_valid(&value) {
            let violations = self
                .validator
                .iter_errors(&value)
                // As every error body: at most three (Kratos reads 1024 bytes).
                .take(crate::delivery::message::MAX_VIOLATIONS)
                .map(|e| Violation {
                    pointer: e.instance_path().to_string(),
                    reason: e.masked().to_string().chars().take(100).collect(),
                })
                .collect();
            return Err(ConfirmationError::Schema(violations));
        }
        serde_json::from_value(value).map_err(|_| {
            ConfirmationError::Schema(vec![Violation {
                pointer: String::new(),
                reason: "unexpected structure".into(),
            }])
        })
    }
}
