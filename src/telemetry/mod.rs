//! What the service tells its operators: log lines and Prometheus metrics.
//! Neither ever carries a code, a message body, a secret or a whole phone
//! number.

pub mod fraud_metrics;
pub mod logs;
pub mod metrics;
pub mod relay_metrics;

pub use logs::init;
