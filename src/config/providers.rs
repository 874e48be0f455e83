//! `[[providers]]` and `[failover]`: the ordered list of providers a send
//! may go to, and when one is skipped for the next.
//!
//! `[twilio]` stays the shorthand for a list of one Twilio provider named
//! `twilio`; a configuration that fills in both is refused, because which of
//! the two the operator meant cannot be guessed. Every provider speaks
//! Twilio's 2010-04-01 API, so each entry is checked into the same
//! [`TwilioConfig`] the client is built from: for SignalWire, the base URL is
//! `{space_url}/api/laml`, the account is the project id, the password the
//! API token and the signing key signs its webhooks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::phone_number::{SenderId, E164};
use super::secret::secret;
use super::twilio::{is_uuid, SmsSender, TwilioConfig, TwilioSettings};
use super::values::ser_millis;

/// Twilio's API, where `[twilio]` and a `kind = "twilio"` entry point by default.
pub const TWILIO_API: &str = "https://api.twilio.com";

/// One `[[providers]]` entry as written. Which keys apply depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: String,
    // kind = "twilio"
    pub base_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<SecretString>,
    pub auth_token_file: Option<PathBuf>,
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<SecretString>,
    pub api_key_secret_file: Option<PathBuf>,
    pub messaging_service_sid: Option<String>,
    // kind = "signalwire"
    pub space_url: Option<String>,
    pub project_id: Option<String>,
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    pub signing_key: Option<SecretString>,
    pub signing_key_file: Option<PathBuf>,
    // both
    pub from: Option<String>,
    pub voice_from: Option<String>,
    pub timeout_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub verify_credentials_on_start: Option<bool>,
}

/// `[failover]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSettings {
    pub open_after: u32,
    pub open_ms: u64,
}

/// When a provider's circuit opens and for how long.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FailoverConfig {
    /// Consecutive transient failures that open a provider's circuit.
    pub open_after: u32,
    /// How long an open circuit skips the provider before one probe.
    #[serde(rename = "open_ms", serialize_with = "ser_millis")]
    pub open: Duration,
}

/// Which API dialect a provider speaks (they differ in paths, ids and the
/// signature header, not in the request forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Twilio,
    SignalWire,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "twilio",
            ProviderKind::SignalWire => "signalwire",
        }
    }

    /// Where this kind's status callbacks are received, below the public URL.
    pub fn status_path(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "/v1/twilio/status",
            ProviderKind::SignalWire => "/v1/signalwire/status",
        }
    }
}

/// One checked provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    /// Its name in logs, metrics, the ledger and `/health/ready`: short,
    /// `[a-z0-9_-]`, unique.
    pub name: String,
    pub kind: ProviderKind,
    /// The client's settings (Twilio's API or its copy).
    pub api: TwilioConfig,
}

impl ProviderConfig {
    /// The `[twilio]` shorthand as a list entry.
    pub fn twilio_shorthand(api: TwilioConfig) -> Self {
        ProviderConfig {
            name: "twilio".to_owned(),
            kind: ProviderKind::Twilio,
            api,
        }
    }
}

impl FailoverSettings {
    pub(super) fn check(self) -> Result<FailoverConfig, ConfigError> {
        if self.open_after == 0 {
            return Err(ConfigError::invalid(
                "failover.open_after",
                "must be at least 1",
            ));
        }
        if self.open_ms == 0 {
            return Err(ConfigError::invalid(
                "failover.open_ms",
                "must be at least 1",
            ));
        }
        Ok(FailoverConfig {
            open_after: self.open_after,
            open: Duration::from_millis(self.open_ms),
        })
    }
}

/// Whether `[twilio]` says anything beyond its compiled-in defaults.
fn twilio_section_in_use(t: &TwilioSettings) -> bool {
    t.account_sid.is_some()
        || t.auth_token.is_some()
        || t.auth_token_file.is_some()
        || t.api_key_sid.is_some()
        || t.api_key_secret.is_some()
        || t.api_key_secret_file.is_some()
        || t.from.is_some()
        || t.messaging_service_sid.is_some()
        || t.voice_from.is_some()
        || t.base_url.trim_end_matches('/') != TWILIO_API
}

/// The provider list: `[[providers]]` when given, else `[twilio]` alone.
pub(super) fn check_providers(
    twilio: TwilioSettings,
    list: Vec<ProviderSettings>,
    env: &HashMap<String, String>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    if list.is_empty() {
        return Ok(vec![ProviderConfig::twilio_shorthand(twilio.check(env)?)]);
    }
    if twilio_section_in_use(&twilio) {
        return Err(ConfigError::invalid(
            "providers",
            "and [twilio] are both set: use [[providers]] alone (an entry with kind = \"twilio\" takes the keys [twilio] had), or [twilio] alone",
        ));
    }
    let mut out: Vec<ProviderConfig> = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        if !valid_name(&p.name) {
            return Err(ConfigError::invalid(
                &format!("{at}.name"),
                "must be 1 to 32 of a-z, 0-9, '_' and '-' (it is a metrics label and a ledger field)",
            ));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(ConfigError::invalid(
                &format!("{at}.name"),
                "is used by an earlier provider; names must be unique",
            ));
        }
        let provider = match p.kind.as_str() {
            "twilio" => twilio_entry(p, &at)?,
            "signalwire" => signalwire_entry(p, &at)?,
            _ => {
                return Err(ConfigError::invalid(
                    &format!("{at}.kind"),
                    "must be \"twilio\" or \"signalwire\"",
                ))
            }
        };
        out.push(provider);
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The keys of the other kind must not be set: a SignalWire key on a Twilio
/// entry is a mistake the operator should hear about, not a silent no-op.
fn refuse(at: &str, kind: &str, keys: &[(&str, bool)]) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(ConfigError::invalid(
            &format!("{at}.{key}"),
            format!("does not apply to kind = \"{kind}\""),
        )),
        None => Ok(()),
    }
}

/// A Twilio entry: `[twilio]`'s keys and checks, errors renamed to the entry.
fn twilio_entry(p: ProviderSettings, at: &str) -> Result<ProviderConfig, ConfigError> {
    refuse(
        at,
        "twilio",
        &[
            ("space_url", p.space_url.is_some()),
            ("project_id", p.project_id.is_some()),
            (
                "api_token",
                p.api_token.is_some() || p.api_token_file.is_some(),
            ),
            (
                "signing_key",
                p.signing_key.is_some() || p.signing_key_file.is_some(),
            ),
        ],
    )?;
    let settings = TwilioSettings {
        base_url: p.base_url.unwrap_or_else(|| TWILIO_API.to_owned()),
        account_sid: p.account_sid,
        auth_token: p.auth_token,
        auth_token_file: p.auth_token_file,
        api_key_sid: p.api_key_sid,
        api_key_secret: p.api_key_secret,
        api_key_secret_file: p.api_key_secret_file,
        from: p.from,
        messaging_service_sid: p.messaging_service_sid,
        voice_from: p.voice_from,
        timeout_ms: p.timeout_ms.unwrap_or(8000),
        verify_credentials_on_start: p.verify_credentials_on_start.unwrap_or(true),
        max_in_flight: p.max_in_flight.unwrap_or(100),
    };
    // No TWILIO_* variables here: with several providers, which one they
    // would belong to is a guess.
    let api = settings.check(&HashMap::new()).map_err(|e| rekey(e, at))?;
    Ok(ProviderConfig {
        name: p.name,
        kind: ProviderKind::Twilio,
        api,
    })
}

/// `twilio.x` in an error from the shared checks becomes `providers[i].x`.
pub(super) fn rekey(e: ConfigError, at: &str) -> ConfigError {
    match e {
        ConfigError::Invalid { key, reason } => ConfigError::Invalid {
            key: match key.strip_prefix("twilio.") {
                Some(rest) => format!("{at}.{rest}"),
                None => key,
            },
            reason: reason
                .replace("(or TWILIO_AUTH_TOKEN, or twilio.", "(or ")
                .replace("(or TWILIO_ACCOUNT_SID)", "")
                .replace("twilio.", &format!("{at}.")),
        },
        other => other,
    }
}

/// A SignalWire space: its compatibility API at `{space_url}/api/laml`.
fn signalwire_entry(p: ProviderSettings, at: &str) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    refuse(
        at,
        "signalwire",
        &[
            ("base_url", p.base_url.is_some()),
            ("account_sid", p.account_sid.is_some()),
            (
                "auth_token",
                p.auth_token.is_some() || p.auth_token_file.is_some(),
            ),
            ("api_key_sid", p.api_key_sid.is_some()),
            (
                "api_key_secret",
                p.api_key_secret.is_some() || p.api_key_secret_file.is_some(),
            ),
            ("messaging_service_sid", p.messaging_service_sid.is_some()),
        ],
    )?;
    let space_url = p
        .space_url
        .ok_or_else(|| {
            ConfigError::invalid(
                &key("space_url"),
                "is required, e.g. https://example.signalwire.com",
            )
        })?
        .trim_end_matches('/')
        .to_owned();
    match reqwest::Url::parse(&space_url) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {}
        // Not quoted: a URL can carry a password.
        _ => {
            return Err(ConfigError::invalid(
                &key("space_url"),
                "is not an http(s) URL such as https://example.signalwire.com",
            ))
        }
    }
    let project_id = p
        .project_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::invalid(&key("project_id"), "is required"))?;
    if !is_uuid(&project_id) {
        return Err(ConfigError::invalid(
            &key("project_id"),
            "must be a UUID (the project id in the SignalWire dashboard)",
        ));
    }
    let api_token = secret(&key("api_token"), p.api_token, p.api_token_file)?.ok_or_else(|| {
        ConfigError::invalid(&key("api_token"), "is required (or api_token_file)")
    })?;
    let signing_token = secret(&key("signing_key"), p.signing_key, p.signing_key_file)?;
    let from = p.from.filter(|s| !s.is_empty()).ok_or_else(|| {
        ConfigError::invalid(&key("from"), "is required: a number of the space, in E.164")
    })?;
    let from = SenderId::parse(&from).ok_or_else(|| {
        ConfigError::invalid(&key("from"), "must be a phone number in E.164 form")
    })?;
    let voice_from = match p.voice_from.filter(|s| !s.is_empty()) {
        Some(v) => Some(E164::parse(&v).ok_or_else(|| {
            ConfigError::invalid(&key("voice_from"), "must be a phone number in E.164 form")
        })?),
        None => from.number().cloned(),
    };
    let timeout_ms = p.timeout_ms.unwrap_or(8000);
    if timeout_ms == 0 {
        return Err(ConfigError::invalid(
            &key("timeout_ms"),
            "must be at least 1",
        ));
    }
    let max_in_flight = p.max_in_flight.unwrap_or(100);
    if max_in_flight == 0 {
        return Err(ConfigError::invalid(
            &key("max_in_flight"),
            "must be at least 1",
        ));
    }
    Ok(ProviderConfig {
        name: p.name,
        kind: ProviderKind::SignalWire,
        api: TwilioConfig {
            base_url: format!("{space_url}/api/laml"),
            account_sid: project_id.clone(),
            username: project_id,
            password: api_token,
            sms_sender: SmsSender::From(from),
            voice_from,
            timeout: Duration::from_millis(timeout_ms),
            verify_credentials_on_start: p.verify_credentials_on_start.unwrap_or(true),
            max_in_flight,
            signing_token,
        },
    })
}

/// An error of a check made per provider, named for provider `i`'s keys.
pub(super) fn rekey_for(c: &super::Config, i: usize, e: ConfigError) -> ConfigError {
    if c.providers_listed {
        rekey(e, &format!("providers[{i}]"))
    } else {
        e
    }
}

/// The configuration key that names `what` of provider `i` (`[twilio]`'s
/// own key for the shorthand), for the checks across sections.
pub(super) fn key_of(c: &super::Config, i: usize, what: &str) -> String {
    if c.providers_listed {
        let name = match what {
            "auth_token" if c.providers[i].kind == ProviderKind::SignalWire => "signing_key",
            w => w,
        };
        format!("providers[{i}].{name}")
    } else {
        format!("twilio.{what}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_label_safe_words() {
        assert!(valid_name("twilio"));
        assert!(valid_name("signalwire-eu_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("Twilio"));
        assert!(!valid_name("a|b"));
        assert!(!valid_name(&"a".repeat(33)));
    }
}
