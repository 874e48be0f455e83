//! `[lookup]`: Twilio Lookup v2 before a send, and what each answer gets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    pub(crate) line_types: LineTypeSettings,
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

/// One action per Twilio line type (`line_type_intelligence.type`), in
/// snake case (`fixed_voip` is Twilio's `fixedVoip`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineTypeSettings {
    #[serde(deserialize_with = "choice")]
    pub(crate) mobile: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) landline: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) fixed_voip: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) non_fixed_voip: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) personal: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) toll_free: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) premium: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) shared_cost: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) uan: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) voicemail: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) pager: LineAction,
    #[serde(deserialize_with = "choice")]
    pub(crate) unknown: LineAction,
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
        let t = self.line_types;
        let actions = [
            t.mobile,
            t.landline,
            t.fixed_voip,
            t.non_fixed_voip,
            t.personal,
            t.toll_free,
            t.premium,
            t.shared_cost,
            t.uan,
            t.voicemail,
            t.pager,
            t.unknown,
        ];
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
