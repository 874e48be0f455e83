//! Where the configuration comes from: the compiled-in defaults, then the
//! file given on the command line, then `PHONE_COURIER__...` environment
//! variables, merged by the `config` crate into the file format
//! ([`Settings`]). Checking is the sections' business, not this module's.

use std::collections::HashMap;
use std::path::PathBuf;

use super::error::ConfigError;
use super::Settings;

/// The documented defaults, compiled in so that the binary needs no file.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override the configuration.
pub(crate) const ENV_PREFIX: &str = "PHONE_COURIER";

/// Where the configuration comes from. The environment is passed in (not
/// read from the process) so tests can give each case its own.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The file given on the command line and this process's environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    /// Merge defaults, file and environment. An error names the file, the
    /// position or the key, never a value or a line of the file.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        use config::{Environment, File, FileFormat};
        let file = sources.file.as_deref();
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "the file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).required(true));
        }
        let env: config::Map<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .source(Some(env)),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::loading(&e, file))?;
        merged
            .try_deserialize()
            .map_err(|e| ConfigError::loading(&e, file))
    }
}

/// The table at `key` of the compiled-in defaults alone, as `default.toml`
/// gives it (not as a file or the environment changed it): the one place a
/// default is written, for what takes it when left out (a provider list
/// entry, a voice table).
pub(super) fn built_in<T: serde::de::DeserializeOwned>(key: &str) -> Result<T, ConfigError> {
    use config::{File, FileFormat};
    config::Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .build()
        .and_then(|c| c.get::<T>(key))
        .map_err(|e| ConfigError::Load(format!("the built-in defaults: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::limits::{LimitsSettings, NOTIFICATION_DEFAULT};
    use super::super::providers::{DEFAULT_CONNECT_TIMEOUT_MS, TWILIO_API};
    use super::*;

    /// The few defaults the code holds are the ones `config/default.toml`
    /// gives; every other default is read from that file alone.
    #[test]
    fn the_compiled_defaults_are_those_of_default_toml() {
        let limits: LimitsSettings = built_in("limits").unwrap();
        for rates in [limits.sms, limits.voice, limits.whatsapp] {
            assert_eq!(rates.notification, NOTIFICATION_DEFAULT);
        }
        assert_eq!(built_in::<String>("twilio.base_url").unwrap(), TWILIO_API);
        let shown = format!("# connect_timeout_ms = {DEFAULT_CONNECT_TIMEOUT_MS}\n");
        assert!(DEFAULT_TOML.contains(&shown), "{shown}");
    }
}
