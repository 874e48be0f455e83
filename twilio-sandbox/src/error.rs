//! Twilio-shaped error answers: `{"code","message","more_info","status"}`.

use serde::Serialize;

/// An error the sandbox answers the way Twilio's REST API does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("HTTP {status}, Twilio code {code}: {message}")]
pub struct TwilioError {
    pub code: u32,
    pub message: String,
    pub more_info: String,
    pub status: u16,
}

impl TwilioError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status,
        }
    }

    /// HTTP 400 with the given Twilio code.
    pub fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn authenticate() -> Self {
        Self::new(401, 20003, "Authenticate")
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(405, 20004, format!("Method not allowed: {method}"))
    }

    /// Generic invalid-parameter error. Twilio documents 20001 ("Unknown
    /// parameter") and answers bad values with assorted 2xxxx codes; the
    /// sandbox uses 20001 for every structural problem and names the parameter.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::bad_request(20001, message)
    }

    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_body_matches_twilio() {
        let body: serde_json::Value =
            serde_json::from_str(&TwilioError::authenticate().to_json()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401})
        );
    }
}
