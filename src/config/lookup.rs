//! `[lookup]`: Twilio Lookup v2 before a send, and what each answer gets.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::error::{refuse_if, ConfigError};
use super::values::{choice, ms, ser_millis, within, StringList};
use crate::domain::TemplateType;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSettings {
    pub enabled: bool,
    pub base_url: String,
    pub fields: StringList,
    #[serde(deserialize_with = "choice")]
    pub(crate) on_error: LookupOnError,
    #[serde(deserialize_with = "ms::<_, 100, 5000>")]
    pub(crate) timeout_ms: Duration,
    pub(crate) max_per_hour: u32,
    pub(crate) sim_swap: SimSwapSettings,
    pub(crate) sms_pumping_risk: PumpingSettings,
    /// One action per Twilio line type (`line_type_intelligence.type`), by
    /// its key in [`LINE_TYPES`] (`fixed_voip` is Twilio's `fixedVoip`).
    pub(crate) line_types: BTreeMap<String, Action>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimSwapSettings {
    pub(crate) refuse_for: StringList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PumpingSettings {
    #[serde(deserialize_with = "within::<_, u64, 0, 100>")]
    pub(crate) max_score: u64,
}

/// A line type's action, read by [`choice`] so that a refused one names
/// its key (`lookup.line_types.pager`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Action(LineAction);

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(d).map(Action)
    }
}

/// What a line type gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineAction {
    Sms,
    Voice,
    Refuse,
}

/// What a failed lookup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupOnError {
    Allow,
    Refuse,
}

/// Twilio's line types, in its spelling, with the key of each in
/// `lookup.line_types`. Any other answer is `unknown`.
pub(crate) const LINE_TYPES: [(&str, &str); 12] = [
    ("mobile", "mobile"),
    ("landline", "landline"),
    ("fixedVoip", "fixed_voip"),
    ("nonFixedVoip", "non_fixed_voip"),
    ("personal", "personal"),
    ("tollFree", "toll_free"),
    ("premium", "premium"),
    ("sharedCost", "shared_cost"),
    ("uan", "uan"),
    ("voicemail", "voicemail"),
    ("pager", "pager"),
    ("unknown", "unknown"),
];

/// The checked `[lookup]`.
#[derive(Debug, Clone, Serialize)]
pub struct LookupConfig {
    pub base_url: String,
    pub line_type: bool,
    pub sim_swap: bool,
    pub sms_pumping_risk: bool,
    pub on_error: LookupOnError,
    #[serde(rename = "timeout_ms", serialize_with = "ser_millis")]
    pub timeout: Duration,
    pub(crate) max_per_hour: u32,
    /// Kratos template names (`recovery_code_valid`, ...) whose codes a
    /// swapped SIM does not get.
    pub sim_swap_refuse_for: Vec<&'static str>,
    pub(crate) max_pumping_score: u64,
    /// In the order of [`LINE_TYPES`].
    pub(crate) actions: [LineAction; 12],
}

impl LookupConfig {
    /// Some line type may become a call (needs a caller id).
    pub(crate) fn may_call(&self) -> bool {
        self.line_type && self.actions.contains(&LineAction::Voice)
    }
}

impl LookupSettings {
    pub(super) fn check(self) -> Result<Option<LookupConfig>, ConfigError> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        refuse_if(
            reqwest::Url::parse(&base_url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true),
            "lookup.base_url",
            "must be an http(s) URL (the default is Twilio's Lookup API)",
        )?;
        let (mut line_type, mut sim_swap, mut sms_pumping_risk) = (false, false, false);
        for field in &self.fields.0 {
            match field.as_str() {
                "line_type_intelligence" => line_type = true,
                "sim_swap" => sim_swap = true,
                "sms_pumping_risk" => sms_pumping_risk = true,
                _ => {
                    return Err(ConfigError::invalid(
                        "lookup.fields",
                        "takes \"line_type_intelligence\", \"sim_swap\" and \"sms_pumping_risk\"",
                    ))
                }
            }
        }
        refuse_if(
            self.enabled && !(line_type || sim_swap || sms_pumping_risk),
            "lookup.fields",
            "names nothing to look up; set lookup.enabled = false instead",
        )?;
        let mut refuse_for = Vec::new();
        for name in &self.sim_swap.refuse_for.0 {
            let template = match name.as_str() {
                "recovery" => TemplateType::Recovery,
                "login" => TemplateType::Login,
                "registration" => TemplateType::Registration,
                "verification" => TemplateType::Verification,
                _ => {
                    return Err(ConfigError::invalid(
                        "lookup.sim_swap.refuse_for",
                        "takes \"recovery\", \"login\", \"registration\" and \"verification\"",
                    ))
                }
            };
            refuse_for.push(template.label());
        }
        let mut actions = [LineAction::Sms; 12];
        for (i, (_, key)) in LINE_TYPES.iter().enumerate() {
            let action = self.line_types.get(*key).ok_or_else(|| {
                ConfigError::invalid(&format!("lookup.line_types.{key}"), "is missing")
            })?;
            actions[i] = action.0;
        }
        let known = |k: &String| LINE_TYPES.iter().any(|(_, key)| key == k);
        if let Some(k) = self.line_types.keys().find(|k| !known(k)) {
            let keys = LINE_TYPES.map(|(_, key)| format!("`{key}`")).join(", ");
            let why = format!("is not a key here; expected one of {keys}");
            return Err(ConfigError::invalid(&format!("lookup.line_types.{k}"), why));
        }
        Ok(self.enabled.then_some(LookupConfig {
            base_url,
            line_type,
            sim_swap,
            sms_pumping_risk,
            on_error: self.on_error,
            timeout: self.timeout_ms,
            max_per_hour: self.max_per_hour,
            sim_swap_refuse_for: refuse_for,
            max_pumping_score: self.sms_pumping_risk.max_score,
            actions,
        }))
    }
}
