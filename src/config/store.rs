//! `[store]`: memory or Redis. The Redis URL can carry a password, so it is
//! a secret: inline or in `url_file`, redacted, never quoted in an error.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::secret::{secret, ser_redacted, ser_redacted_opt};
use super::values::{choice, ms, ser_millis};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSettings {
    #[serde(deserialize_with = "choice")]
    pub(crate) backend: BackendName,
    pub(crate) redis: RedisSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSettings {
    pub(crate) url: Option<SecretString>,
    pub(crate) url_file: Option<PathBuf>,
    pub(crate) key_prefix: String,
    #[serde(deserialize_with = "ms::<_, 1, 5000>")]
    pub(crate) timeout_ms: Duration,
    #[serde(deserialize_with = "choice")]
    pub(crate) on_error: OnError,
    pub(crate) key_secret: Option<SecretString>,
    pub(crate) key_secret_file: Option<PathBuf>,
}

/// The checked `[store]`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreConfig {
    /// Printed as `backend = "memory"`, or `backend = "redis"` with the
    /// `redis` table, as it is written.
    #[serde(flatten)]
    pub backend: Backend,
}

/// `store.backend` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendName {
    Memory,
    Redis,
}

/// Which store holds the state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", content = "redis", rename_all = "lowercase")]
pub enum Backend {
    Memory,
    Redis(RedisConfig),
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisConfig {
    #[serde(serialize_with = "ser_redacted")]
    pub url: SecretString,
    pub key_prefix: String,
    #[serde(rename = "timeout_ms", serialize_with = "ser_millis")]
    pub timeout: Duration,
    pub on_error: OnError,
    /// Keys every stored record under a keyed hash: every replica must use
    /// the same. `None`: derived from the provider credential, which every
    /// replica shares.
    #[serde(serialize_with = "ser_redacted_opt")]
    pub key_secret: Option<SecretString>,
}

/// What a request does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    FailClosed,
    Local,
}

/// A prefix is part of every key: short and printable.
const MAX_PREFIX: usize = 64;

impl StoreSettings {
    pub(super) fn check(self) -> Result<StoreConfig, ConfigError> {
        // The plain keys are checked whichever backend is chosen, so a typo
        // does not wait for the day someone switches to Redis.
        let r = self.redis;
        refuse_if(
            r.key_prefix.len() > MAX_PREFIX || !r.key_prefix.bytes().all(|b| b.is_ascii_graphic()),
            "store.redis.key_prefix",
            format!("must be at most {MAX_PREFIX} printable ASCII characters without spaces"),
        )?;
        let backend = match self.backend {
            BackendName::Memory => Backend::Memory,
            BackendName::Redis => {
                let url = secret("store.redis.url", r.url, r.url_file)?
                    .filter(|u| !u.expose_secret().is_empty())
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "store.redis.url",
                            "is required with store.backend = \"redis\" \
                             (e.g. redis://127.0.0.1:6379/0; or store.redis.url_file)",
                        )
                    })?;
                check_url(&url)?;
                let key_secret = secret("store.redis.key_secret", r.key_secret, r.key_secret_file)?;
                refuse_if(
                    key_secret
                        .as_ref()
                        .is_some_and(|k| k.expose_secret().len() < 16),
                    "store.redis.key_secret",
                    "must be at least 16 characters (it keeps numbers out of Redis)",
                )?;
                Backend::Redis(RedisConfig {
                    url,
                    key_prefix: r.key_prefix,
                    timeout: r.timeout_ms,
                    on_error: r.on_error,
                    key_secret,
                })
            }
        };
        Ok(StoreConfig { backend })
    }
}

/// The URL must be one the Redis client accepts. Not quoted: it can hold a
/// password, and so can the client's error.
fn check_url(url: &SecretString) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    match url.expose_secret().into_connection_info() {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::invalid(
            "store.redis.url",
            "is not a Redis URL such as redis://127.0.0.1:6379/0, \
             rediss://host:6380/0 (TLS) or redis+unix:///path/to/socket",
        )),
    }
}
