//! `[policy]`, `[test_numbers]` and `[fallback]`.

use serde::{Deserialize, Serialize};

use super::values::list;
use crate::phone::CountryId;
use crate::phone::E164;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub(crate) refuse_premium: bool,
    pub sms: CountryPolicy,
    pub voice: CountryPolicy,
}

/// Regions per channel. An empty allow list allows all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryPolicy {
    #[serde(deserialize_with = "list")]
    pub allowed_countries: Vec<CountryId>,
    #[serde(deserialize_with = "list")]
    pub denied_countries: Vec<CountryId>,
}

/// `[test_numbers]`: numbers that are answered without sending. A number
/// is never quoted in an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestNumbersSettings {
    #[serde(deserialize_with = "list")]
    pub(crate) numbers: Vec<E164>,
}

/// A fallback `[fallback] voice_on` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoiceOn {
    Landline,
    Undelivered,
}

impl std::str::FromStr for VoiceOn {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "landline" => Ok(VoiceOn::Landline),
            "undelivered" => Ok(VoiceOn::Undelivered),
            // Not quoted: only the two names are meaningful.
            _ => Err("neither \"landline\" nor \"undelivered\" (an empty list turns fallback off)"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FallbackSettings {
    #[serde(deserialize_with = "list")]
    pub(crate) voice_on: Vec<VoiceOn>,
}

/// Which fallbacks are on. A fallback needs a caller id: without one on any
/// provider it is off ([`FallbackConfig::without_caller_id`]).
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
    pub(crate) fn without_caller_id(self) -> FallbackConfig {
        FallbackConfig {
            no_caller_id: self.any(),
            ..FallbackConfig::default()
        }
    }
}

impl FallbackSettings {
    pub(super) fn check(self) -> FallbackConfig {
        FallbackConfig {
            landline: self.voice_on.contains(&VoiceOn::Landline),
            undelivered: self.voice_on.contains(&VoiceOn::Undelivered),
            no_caller_id: false,
        }
    }
}
