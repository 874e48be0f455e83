//! What the service tells its operators: log lines, Prometheus metrics and
//! OpenTelemetry traces. None ever carries a code, a message body, a secret
//! or a whole phone number.

pub mod export;
pub mod fallback_metrics;
pub mod fraud_metrics;
pub mod logs;
pub mod lookup_metrics;
pub mod metrics;
pub mod provider_metrics;
pub mod relay_metrics;
pub mod traces;

pub use logs::init;
