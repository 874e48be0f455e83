//! `[tracing]`: OpenTelemetry traces, keyed as Ory's services key them.

use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TracingSettings {
    pub(crate) provider: String,
    pub(crate) service_name: String,
    pub(crate) providers: TracingProviders,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TracingProviders {
    pub(crate) otlp: OtlpSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpSettings {
    pub(crate) server_url: String,
    pub(crate) insecure: bool,
    pub(crate) sampling: SamplingSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SamplingSettings {
    pub(crate) sampling_ratio: f64,
}

/// Traces are exported when this is `Some`.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpTracing {
    /// `service.name` of every span.
    pub service_name: String,
    /// `http(s)://server_url/v1/traces`.
    pub endpoint: String,
    /// Share of new traces kept; a trace whose caller sampled it (the
    /// incoming `traceparent`) follows the caller's choice.
    pub sampling_ratio: f64,
}

impl TracingSettings {
    pub(super) fn check(self) -> Result<Option<OtlpTracing>, ConfigError> {
        match self.provider.as_str() {
            "" => return Ok(None),
            "otel" => {}
            other => {
                return Err(ConfigError::invalid(
                    "tracing.provider",
                    format!("`{other}` is neither \"\" (off) nor \"otel\""),
                ))
            }
        }
        let service_name = self.service_name.trim();
        refuse_if(
            service_name.is_empty() || service_name.len() > 128,
            "tracing.service_name",
            "must be 1 to 128 characters",
        )?;
        let otlp = self.providers.otlp;
        let scheme = if otlp.insecure { "http" } else { "https" };
        let server = otlp.server_url.trim().trim_end_matches('/');
        let endpoint = format!("{scheme}://{server}/v1/traces");
        // host:port only, as Ory's configuration has it; the scheme comes
        // from `insecure`. Not quoted: a URL can carry credentials.
        let valid = !server.is_empty()
            && !server.contains("://")
            && !server.contains('@')
            && reqwest::Url::parse(&endpoint).is_ok_and(|u| u.host().is_some());
        refuse_if(
            !valid,
            "tracing.providers.otlp.server_url",
            "is not the host:port of an OTLP/HTTP receiver, such as 127.0.0.1:4318 \
             (no scheme: `insecure` picks http or https)",
        )?;
        let ratio = otlp.sampling.sampling_ratio;
        refuse_if(
            !(0.0..=1.0).contains(&ratio),
            "tracing.providers.otlp.sampling.sampling_ratio",
            "must be between 0.0 and 1.0",
        )?;
        Ok(Some(OtlpTracing {
            service_name: service_name.to_owned(),
            endpoint,
            sampling_ratio: ratio,
        }))
    }
}
