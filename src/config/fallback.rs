//! `[fallback]`: when a code that cannot arrive by SMS is spoken in a voice
//! call instead. That a fallback needs a caller id is checked in `checks`.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::StringList;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSettings {
    pub voice_on: StringList,
}

/// Which fallbacks are on.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FallbackConfig {
    /// A landline (numbering plan FIXED_LINE,
    /// or Twilio's 21614): call at once, in the same request.
    pub landline: bool,
    /// A status callback reports the SMS undelivered with a carrier error a
    /// call can get around: call once, while the code lives.
    pub undelivered: bool,
}

impl FallbackConfig {
    pub fn any(&self) -> bool {
        self.landline || self.undelivered
    }
}

impl FallbackSettings {
    pub(super) fn check(self) -> Result<FallbackConfig, ConfigError> {
        let mut config = FallbackConfig::default();
        for what in self.voice_on.0 {
            match what.as_str() {
                "landline" => config.landline = true,
                "undelivered" => config.undelivered = true,
                // Not quoted: only the two names are meaningful.
                _ => {
                    return Err(ConfigError::invalid(
                        "fallback.voice_on",
                        "takes \"landline\" and \"undelivered\" (or nothing, to turn fallback off)",
                    ))
                }
            }
        }
        Ok(config)
    }
}
