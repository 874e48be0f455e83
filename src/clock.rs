//! The service's one notion of time, shared by the rate limiters, the
//! deduplication window and the daily budget.
//!
//! It is built on `tokio::time::Instant`, so tests that pause the tokio clock
//! control it, and it carries an offset that tests can move forward
//! ([`Clock::advance`]) while a real server is running: time-dependent
//! behaviour is tested without sleeping. In production the offset stays 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::nanos::Nanos;

#[derive(Clone, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
    /// Wall-clock time at `start`, for the UTC day of the budget.
    start_unix: Duration,
    /// Nanoseconds added by [`Clock::advance`].
    offset: Arc<AtomicU64>,
}

impl Clock {
    /// The real clock.
    pub fn system() -> Self {
        Clock::starting_at(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// A clock whose wall time starts at `unix` (tests: a known day).
    pub fn starting_at(unix: Duration) -> Self {
        Clock {
            start: tokio::time::Instant::now(),
            start_unix: unix,
            offset: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Move this clock (and every clone) forward.
    pub fn advance(&self, by: Duration) {
        self.offset
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Monotonic time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed() + Duration::from_nanos(self.offset.load(Ordering::SeqCst))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> Duration {
        self.start_unix + self.elapsed()
    }

    /// The UTC day number (days since 1970-01-01).
    pub fn utc_day(&self) -> u64 {
        self.unix().as_secs() / 86_400
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}
