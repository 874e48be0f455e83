//! `[status_callback]`: the public base URL Twilio posts delivery statuses
//! to. That it needs the auth token (which signs them) is in `checks`.

use serde::Deserialize;

use super::error::ConfigError;

/// Where under the public base URL the callbacks arrive.
const STATUS_PATH: &str = "/v1/twilio/status";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCallbackSettings {
    pub public_url: String,
}

impl StatusCallbackSettings {
    /// The full callback URL, `{public_url}/v1/twilio/status`; `None` when
    /// no public URL is set.
    pub(super) fn check(self) -> Result<Option<String>, ConfigError> {
        let public_url = self.public_url.trim().trim_end_matches('/');
        if public_url.is_empty() {
            return Ok(None);
        }
        match reqwest::Url::parse(public_url) {
            Ok(u)
                if (u.scheme() == "https" || u.scheme() == "http")
                    && u.host().is_some()
                    && u.query().is_none() => {}
            // Not quoted: a URL can carry a password (https://user:pass@host).
            _ => {
                return Err(ConfigError::invalid(
                    "status_callback.public_url",
                    "is not the http(s) base URL Twilio can reach this service at, such as https://courier.example.com",
                ))
            }
        }
        Ok(Some(format!("{public_url}{STATUS_PATH}")))
    }
}
