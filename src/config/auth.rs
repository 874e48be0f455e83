//! `[auth]`: how Kratos authenticates to this service — HTTP basic auth, an
//! API key header, or (development only) nothing.

use std::path::PathBuf;

use http::HeaderName;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use super::error::{refuse_if, ConfigError};
use super::secret::{secret, ser_redacted};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub disabled: bool,
    pub(crate) basic: Option<BasicSettings>,
    pub(crate) api_key: Option<ApiKeySettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicSettings {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<SecretString>,
    pub(crate) password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeySettings {
    pub(crate) header: Option<String>,
    pub(crate) value: Option<SecretString>,
    pub(crate) value_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// No authentication at all (development only).
    pub disabled: bool,
    pub basic: Option<BasicAuth>,
    pub api_key: Option<ApiKeyAuth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BasicAuth {
    pub(crate) username: String,
    #[serde(serialize_with = "ser_redacted")]
    pub password: SecretString,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyAuth {
    /// The header Kratos sends the key in. Header names compare without
    /// regard to case, and `HeaderName` holds (and prints) them in lower case.
    #[serde(serialize_with = "ser_header")]
    pub header: HeaderName,
    #[serde(serialize_with = "ser_redacted")]
    pub(crate) value: SecretString,
}

fn ser_header<S: Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

impl AuthSettings {
    pub(super) fn check(self) -> Result<AuthConfig, ConfigError> {
        let b = self.basic.unwrap_or_default();
        let password = secret("auth.basic.password", b.password, b.password_file)?;
        let basic = match (b.username, password) {
            (None, None) => None,
            (Some(u), Some(p)) if !u.is_empty() && !p.expose_secret().is_empty() => {
                refuse_if(
                    u.contains(':'),
                    "auth.basic.username",
                    "must not contain ':' (HTTP basic auth cannot carry it)",
                )?;
                Some(BasicAuth {
                    username: u,
                    password: p,
                })
            }
            _ => {
                return Err(ConfigError::invalid(
                    "auth.basic",
                    "needs both a non-empty username and a non-empty password",
                ))
            }
        };
        let k = self.api_key.unwrap_or_default();
        let value = secret("auth.api_key.value", k.value, k.value_file)?;
        let api_key = match (k.header, value) {
            (None, None) => None,
            (Some(h), Some(v)) if !v.expose_secret().is_empty() => {
                let header = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ConfigError::invalid(
                        "auth.api_key.header",
                        format!("`{h}` is not a valid HTTP header name"),
                    )
                })?;
                refuse_if(
                    header == http::header::AUTHORIZATION,
                    "auth.api_key.header",
                    "use auth.basic for the Authorization header",
                )?;
                Some(ApiKeyAuth { header, value: v })
            }
            _ => {
                return Err(ConfigError::invalid(
                    "auth.api_key",
                    "needs both a header name and a non-empty value",
                ))
            }
        };
        refuse_if(
            !self.disabled && basic.is_none() && api_key.is_none(),
            "auth",
            "configure auth.basic (username, password) or auth.api_key (header, value) \
             to match the Kratos courier channel, or set auth.disabled = true for local \
             development only",
        )?;
        Ok(AuthConfig {
            disabled: self.disabled,
            basic,
            api_key,
        })
    }
}
