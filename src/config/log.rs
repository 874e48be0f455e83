//! `[log]`: the output format and the tracing filter.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A filter `tracing_subscriber::EnvFilter` accepts (checked here).
    pub level: String,
}

impl LogSettings {
    pub(super) fn check(self) -> Result<LogConfig, ConfigError> {
        let format = match self.format.as_str() {
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is neither \"plain\" nor \"json\""),
                ))
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("`{}` is not a tracing filter such as \"info\"", self.level),
            ));
        }
        Ok(LogConfig {
            format,
            level: self.level,
        })
    }
}
