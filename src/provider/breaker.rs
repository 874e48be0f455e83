//! A circuit breaker per provider: after `failover.open_after` consecutive
//! transient failures the provider is skipped for `failover.open_ms`, then
//! one request probes it.
//!
//! The state is this replica's, in memory: replicas learn of an outage each
//! on their own, after `open_after` failures each. Sharing it through Redis
//! would put a store round trip on every send to save a few failed requests.
//! Time comes from the service's [`Clock`], so tests move it instead of
//! sleeping.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::FailoverConfig;

/// A provider's circuit.
#[derive(Debug)]
pub(crate) struct Breaker {
    open_after: u32,
    open_for: Duration,
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// Requests skip the provider until `until` (the clock's elapsed time).
    Open { until: Duration },
    /// One request is probing since `since`; the others still skip. A probe
    /// that never reports (its task ended without an answer) is given up
    /// after `open_for`, and another may go.
    Probing { since: Duration },
}

/// May a request go to the provider now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// The circuit is closed.
    Closed,
    /// The circuit was open long enough: this request is the one probe.
    Probe,
    /// The circuit is open (or another request is probing): skip it.
    Open,
}

/// What the circuit shows, for `/health/ready` and the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl Breaker {
    pub(crate) fn new(config: &FailoverConfig, clock: Clock) -> Self {
        Breaker {
            open_after: config.open_after,
            open_for: config.open,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask before sending; a [`Permit::Probe`] must be followed by
    /// [`Self::succeeded`] or [`Self::failed`].
    pub(crate) fn permit(&self) -> Permit {
        let now = self.clock.elapsed();
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Permit::Closed,
            State::Open { until } if now < until => Permit::Open,
            State::Probing { since } if now < since + self.open_for => Permit::Open,
            State::Open { .. } | State::Probing { .. } => {
                *state = State::Probing { since: now };
                Permit::Probe
            }
        }
    }

    /// The provider answered (accepted, or refused for a reason of the
    /// message's or the account's): it is up.
    pub(crate) fn succeeded(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    /// A transient failure (5xx, 429, no connection, timeout). Returns true
    /// when this failure opened the circuit.
    pub(crate) fn failed(&self) -> bool {
        let now = self.clock.elapsed();
        let mut state = self.state();
        let open = State::Open {
            until: now + self.open_for,
        };
        match *state {
            State::Closed { failures } if failures + 1 < self.open_after => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::Probing { .. } => {
                *state = open;
                true
            }
            // A request let through before the circuit opened: it stays
            // open as long as it was going to.
            State::Open { .. } => false,
        }
    }

    pub(crate) fn circuit(&self) -> CircuitState {
        let now = self.clock.elapsed();
        match *self.state() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::Probing { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(clock: &Clock) -> Breaker {
        let config = FailoverConfig {
            open_after: 3,
            open: Duration::from_secs(30),
        };
        Breaker::new(&config, clock.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_lets_one_probe() {
        let clock = Clock::starting_at(Duration::ZERO);
        let b = breaker(&clock);
        assert!(!b.failed());
        b.succeeded();
        // The count is of failures in a row: a success starts it again.
        assert!(!b.failed());
        assert!(!b.failed());
        assert_eq!(b.permit(), Permit::Closed);
        assert!(b.failed());
        assert_eq!(b.permit(), Permit::Open);
        assert_eq!(b.circuit(), CircuitState::Open);
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.permit(), Permit::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.permit(), Permit::Probe);
        // Only one probe at a time.
        assert_eq!(b.permit(), Permit::Open);
        // A failed probe opens it again for the whole time.
        assert!(b.failed());
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.permit(), Permit::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.permit(), Permit::Probe);
        b.succeeded();
        assert_eq!(b.permit(), Permit::Closed);
        assert_eq!(b.circuit(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_given_up() {
        let clock = Clock::starting_at(Duration::ZERO);
        let b = breaker(&clock);
        for _ in 0..3 {
            b.failed();
        }
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.permit(), Permit::Probe);
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.permit(), Permit::Probe);
    }
}
