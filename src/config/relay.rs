//! `[relay]`: the inbound relay's numbers, routes and targets. Slack
//! incoming-webhook URLs and `webhook_secret` are secrets (inline or in a
//! file, printed as `[redacted]`, never quoted in an error).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::providers::{is_http_url, public_url};
use super::secret::{secret, ser_redacted_list, ser_redacted_opt};
use super::values::{list, ms, ser_millis, within, StringList};
use crate::phone::{Sender, E164};

/// Where under the public base URL Twilio posts incoming messages.
const INBOUND_PATH: &str = "/v1/twilio/inbound";
/// Twilio refuses SMS bodies longer than this.
const MAX_TEMPLATE: usize = 1600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub enabled: bool,
    pub public_url: String,
    #[serde(deserialize_with = "list")]
    pub numbers: Vec<E164>,
    pub(crate) sms_template: String,
    pub(crate) per_route_per_hour: u32,
    #[serde(deserialize_with = "within::<_, u32, 1, 10>")]
    pub(crate) attempts: u32,
    #[serde(deserialize_with = "ms::<_, 0, 86_400_000>")]
    pub(crate) retry_window_ms: Duration,
    #[serde(deserialize_with = "ms::<_, 1, 60_000>")]
    pub(crate) timeout_ms: Duration,
    pub(crate) webhook_secret: Option<SecretString>,
    pub(crate) webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub routes: Vec<RouteSettings>,
    pub(crate) default_route: Option<RouteSettings>,
}

/// One `[[relay.routes]]` (or `[relay.default_route]`) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    pub name: String,
    #[serde(default, deserialize_with = "list")]
    pub from: Vec<Sender>,
    #[serde(default, deserialize_with = "list")]
    pub sms: Vec<E164>,
    #[serde(default)]
    pub slack: Vec<SecretString>,
    pub slack_file: Option<PathBuf>,
    #[serde(default)]
    pub webhooks: StringList,
}

/// The checked `[relay]`; `None` in [`super::Config`] when not enabled.
#[derive(Debug, Clone, Serialize)]
pub struct RelayConfig {
    /// The exact URL Twilio posts to and signs: `{public_url}/v1/twilio/inbound`.
    pub inbound_url: String,
    pub(crate) numbers: Vec<E164>,
    pub(crate) sms_template: String,
    pub(crate) per_route_per_hour: u32,
    pub(crate) attempts: u32,
    #[serde(rename = "retry_window_ms", serialize_with = "ser_millis")]
    pub(crate) retry_window: Duration,
    #[serde(rename = "timeout_ms", serialize_with = "ser_millis")]
    pub(crate) timeout: Duration,
    #[serde(serialize_with = "ser_redacted_opt")]
    pub(crate) webhook_secret: Option<SecretString>,
    pub(crate) routes: Vec<Route>,
    pub(crate) default_route: Option<Route>,
}

/// A checked route.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) from: Vec<Sender>,
    pub(crate) sms: Vec<E164>,
    #[serde(serialize_with = "ser_redacted_list")]
    pub(crate) slack: Vec<SecretString>,
    pub(crate) webhooks: Vec<String>,
}

impl RelaySettings {
    pub(super) fn check(self) -> Result<Option<RelayConfig>, ConfigError> {
        // Plain keys are checked even when the relay is off, so a typo does
        // not wait for the day it is turned on.
        if self.sms_template.trim().is_empty()
            || self.sms_template.chars().count() > MAX_TEMPLATE
            || !self.sms_template.contains("{body}")
        {
            return Err(ConfigError::invalid(
                "relay.sms_template",
                "must contain {body} and be at most 1600 characters",
            ));
        }
        let webhook_secret = secret(
            "relay.webhook_secret",
            self.webhook_secret,
            self.webhook_secret_file,
        )?
        .filter(|s| !s.expose_secret().is_empty());
        if !self.enabled {
            return Ok(None);
        }
        let public_url = public_url("relay.public_url", &self.public_url)?.ok_or_else(|| {
            ConfigError::invalid(
                "relay.public_url",
                "is required with relay.enabled (or status_callback.public_url, which it defaults to): the http(s) base URL Twilio reaches this service at, such as https://courier.example.com",
            )
        })?;
        let numbers = self.numbers;
        refuse_if(
            numbers.is_empty(),
            "relay.numbers",
            "name at least one of your Twilio numbers that receives codes",
        )?;
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
            let route = r.check(&format!("relay.routes[{i}]"), true)?;
            refuse_if(
                routes.iter().any(|o: &Route| o.name == route.name),
                &format!("relay.routes[{i}].name"),
                "is used by another route: names must differ (they key the rate limit)",
            )?;
            routes.push(route);
        }
        let default_route = self
            .default_route
            .map(|r| r.check("relay.default_route", false))
            .transpose()?;
        refuse_if(
            routes.is_empty() && default_route.is_none(),
            "relay.routes",
            "relay.enabled needs at least one [[relay.routes]] or a [relay.default_route]",
        )?;
        let has_webhooks = routes
            .iter()
            .chain(default_route.iter())
            .any(|r| !r.webhooks.is_empty());
        refuse_if(
            has_webhooks && webhook_secret.is_none(),
            "relay.webhook_secret",
            "is required when a route has webhooks: it signs them (or relay.webhook_secret_file)",
        )?;
        Ok(Some(RelayConfig {
            inbound_url: format!("{public_url}{INBOUND_PATH}"),
            numbers,
            sms_template: self.sms_template,
            per_route_per_hour: self.per_route_per_hour,
            attempts: self.attempts,
            retry_window: self.retry_window_ms,
            timeout: self.timeout_ms,
            webhook_secret,
            routes,
            default_route,
        }))
    }
}

impl RouteSettings {
    fn check(self, key: &str, needs_from: bool) -> Result<Route, ConfigError> {
        let name = self.name.trim().to_owned();
        refuse_if(
            name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control),
            &format!("{key}.name"),
            "must be 1 to 64 printable characters",
        )?;
        let from = self.from;
        refuse_if(
            needs_from && from.is_empty(),
            &format!("{key}.from"),
            "name at least one sender (unknown senders go to relay.default_route)",
        )?;
        refuse_if(
            !needs_from && !from.is_empty(),
            &format!("{key}.from"),
            "is not used on the default route, which takes every sender no route names",
        )?;
        let sms = self.sms;
        let mut slack = self.slack;
        if let Some(file) = self.slack_file {
            let listed = secret(&format!("{key}.slack"), None, Some(file))?
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default();
            slack.extend(
                listed
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| SecretString::from(l.to_owned())),
            );
        }
        for url in &slack {
            refuse_if(
                !is_http_url(url.expose_secret()),
                &format!("{key}.slack"),
                "every Slack incoming-webhook URL must be an http(s) URL such as https://hooks.slack.com/services/…",
            )?;
        }
        let webhooks = self.webhooks.0;
        refuse_if(
            webhooks.iter().any(|u| !is_http_url(u)),
            &format!("{key}.webhooks"),
            "every webhook must be an http(s) URL",
        )?;
        refuse_if(
            sms.is_empty() && slack.is_empty() && webhooks.is_empty(),
            key,
            "has no target: give it sms, slack (or slack_file) or webhooks",
        )?;
        Ok(Route {
            name,
            from,
            sms,
            slack,
            webhooks,
        })
    }
}
