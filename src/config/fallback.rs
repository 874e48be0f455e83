//! `[fallback]`: when a code that cannot arrive by SMS is spoken in a voice
//! call instead. A fallback needs a caller id: without one on any provider
//! it is off (`FallbackConfig::without_caller_id`).

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
    /// `voice_on` asked for a fallback but no provider has a caller id
    /// (`voice_from`): fallback is off, and the service says so at start.
    /// Not an error, so a set-up that sends SMS from an alphanumeric sender
    /// or a Messaging Service keeps starting with the default `voice_on`.
    pub no_caller_id: bool,
}

impl FallbackConfig {
    pub fn any(&self) -> bool {
        self.landline || self.undelivered
    }

    /// Off, because nobody could place the call.
    pub fn without_caller_id(self) -> FallbackConfig {
        FallbackConfig {
            no_caller_id: self.any(),
            ..FallbackConfig::default()
        }
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
