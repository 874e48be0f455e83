//! What the service tells its operators: log lines, Prometheus metrics and
//! OpenTelemetry traces. None ever carries a code, a message body, a secret
//! or a whole phone number.

pub(crate) mod export;
pub(crate) mod fallback_metrics;
pub(crate) mod fraud_metrics;
pub(crate) mod logs;
pub(crate) mod lookup_metrics;
pub mod metrics;
pub(crate) mod provider_metrics;
pub(crate) mod relay_metrics;
pub(crate) mod traces;

pub(crate) use logs::init;
