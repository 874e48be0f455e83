//! The service's one notion of time, shared by the rate limiters, the
//! deduplication window and the daily budget.
//!
//! Two kinds of time, kept apart:
//!
//! - **Durations** ([`Clock::elapsed`], governor's clock, the breaker's
//!   windows) are monotonic, built on `tokio::time::Instant`: a wall-clock
//!   step never makes one jump or run backwards, and tests that pause the
//!   tokio clock control them.
//! - **Timestamps** ([`Clock::unix`], [`Clock::utc_day`]: the budget's day,
//!   the ledger's `since`, record expiries in the store, the Lookup cache)
//!   are wall-clock time. The system clock ([`Clock::system`]) reads the OS
//!   wall clock at every use, so after an NTP step or a VM resume it agrees
//!   with the other replicas and the provider again at once; it is not
//!   frozen at start. (A clock that froze the wall time at start and added
//!   monotonic time drifted away from every other clock for as long as the
//!   process lived.)
//!
//! Both carry an offset that tests move forward ([`Clock::advance`]) while a
//! real server is running: time-dependent behaviour is tested without
//! sleeping. In production the offset stays 0. The Redis ledger judges
//! leases by Redis's own clock plus this offset ([`Clock::offset`]; see
//! `crate::store::redis`), so replicas whose wall clocks disagree still agree
//! on whether a lease ran out.
//!
//! Test clocks made with [`Clock::starting_at`] keep a fixed start (a known
//! day) and move only with monotonic time and the offset. A test that needs
//! the system clock's behaviour with a wall clock of its own (one that
//! steps, or runs ahead of the others) uses [`Clock::reading`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::nanos::Nanos;

#[derive(Clone, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
    wall: Wall,
    /// Nanoseconds added by [`Clock::advance`].
    offset: Arc<AtomicU64>,
    /// Wakes [`Clock::sleep`]ers when the offset moves.
    advanced: Arc<tokio::sync::Notify>,
}

/// Where a clock's timestamps come from.
#[derive(Clone, Copy, Debug)]
enum Wall {
    /// Read at every use (the system clock: `SystemTime::now`).
    Read(fn() -> SystemTime),
    /// Wall time at `start`, moved on by monotonic time (tests: a known day).
    Fixed(Duration),
}

impl Clock {
    /// The real clock: timestamps from the OS wall clock at each use.
    pub fn system() -> Self {
        Clock::reading(SystemTime::now)
    }

    /// A clock whose timestamps are read from `wall` at each use, as the
    /// system clock reads the OS's (tests: a wall clock that steps, or that
    /// runs ahead of another replica's, without changing the OS time).
    pub fn reading(wall: fn() -> SystemTime) -> Self {
        Clock {
            start: tokio::time::Instant::now(),
            wall: Wall::Read(wall),
            offset: Arc::new(AtomicU64::new(0)),
            advanced: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// A clock whose wall time starts at `unix` (tests: a known day).
    pub fn starting_at(unix: Duration) -> Self {
        Clock {
            start: tokio::time::Instant::now(),
            wall: Wall::Fixed(unix),
            offset: Arc::new(AtomicU64::new(0)),
            advanced: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Move this clock (and every clone) forward.
    pub fn advance(&self, by: Duration) {
        self.offset
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        self.advanced.notify_waiters();
    }

    /// Wait until `by` has passed on this clock: real time, or less when
    /// [`Clock::advance`] moves the clock on meanwhile (tests: a timer the
    /// test fires by moving the clock, without sleeping).
    #[cfg(test)]
    pub(crate) async fn sleep(&self, by: Duration) {
        self.sleep_until(self.elapsed() + by).await
    }

    /// Wait until [`Clock::elapsed`] reaches `until`: as [`Clock::sleep`],
    /// for a deadline taken before the waiting task starts (a task spawned
    /// now may first run after the clock moved).
    pub(crate) async fn sleep_until(&self, until: Duration) {
        loop {
            // Registered before the clock is read: an advance in between
            // still wakes this waiter.
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let now = self.elapsed();
            if now >= until {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(until - now) => {}
                () = advanced => {}
            }
        }
    }

    /// How far [`Clock::advance`] has moved this clock: 0 in production.
    /// Stores that judge time by a clock of their own (Redis's `TIME`) add
    /// it, so tests move their time too.
    pub(crate) fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset.load(Ordering::SeqCst))
    }

    /// Monotonic time since the clock was made: for durations.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed() + self.offset()
    }

    /// Wall-clock time since the Unix epoch: for timestamps. The system
    /// clock reads the wall clock now (a step shows at once); a
    /// [`Clock::starting_at`] clock counts from its start.
    pub fn unix(&self) -> Duration {
        match self.wall {
            Wall::Read(now) => now().duration_since(UNIX_EPOCH).unwrap_or_default() + self.offset(),
            Wall::Fixed(start_unix) => start_unix + self.elapsed(),
        }
    }

    /// The UTC day number (days since 1970-01-01).
    pub(crate) fn utc_day(&self) -> u64 {
        self.unix().as_secs() / 86_400
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How far the test wall clock below is stepped ahead of the OS's.
    static STEP_SECS: AtomicU64 = AtomicU64::new(0);

    fn stepped_wall() -> SystemTime {
        SystemTime::now() + Duration::from_secs(STEP_SECS.load(Ordering::SeqCst))
    }

    fn unix_of(t: SystemTime) -> Duration {
        t.duration_since(UNIX_EPOCH).unwrap()
    }

    #[tokio::test]
    async fn the_system_clock_follows_a_wall_clock_step_and_durations_do_not() {
        let clock = Clock::reading(stepped_wall);
        let before = clock.unix();
        let elapsed = clock.elapsed();
        // An NTP step (or a VM resume): the wall clock jumps an hour ahead.
        STEP_SECS.store(3600, Ordering::SeqCst);
        let after = clock.unix();
        let wall = unix_of(stepped_wall());
        assert!(
            after >= before + Duration::from_secs(3600),
            "{before:?} -> {after:?}"
        );
        // Within a second of the wall clock as it reads now.
        assert!(
            wall.abs_diff(after) < Duration::from_secs(1),
            "{wall:?} {after:?}"
        );
        assert_eq!(
            clock.utc_day(),
            (unix_of(stepped_wall()).as_secs()) / 86_400
        );
        // Durations stay monotonic: the step is not time that passed.
        assert!(clock.elapsed() - elapsed < Duration::from_secs(1));
        // The test offset moves both.
        clock.advance(Duration::from_secs(60));
        assert!(clock.unix() >= after + Duration::from_secs(60));
        assert!(clock.elapsed() >= elapsed + Duration::from_secs(60));
        assert_eq!(clock.offset(), Duration::from_secs(60));
        STEP_SECS.store(0, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn the_system_clock_reads_the_os_wall_clock() {
        let clock = Clock::system();
        let os = unix_of(SystemTime::now());
        assert!(clock.unix().abs_diff(os) < Duration::from_secs(1));
        assert_eq!(clock.offset(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_starting_at_a_known_day_keeps_its_fixed_start() {
        let clock = Clock::starting_at(Duration::from_secs(20_414 * 86_400));
        assert_eq!(clock.utc_day(), 20_414);
        tokio::time::advance(Duration::from_secs(10)).await;
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.unix(), Duration::from_secs(20_414 * 86_400 + 15));
        assert_eq!(clock.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_when_the_clock_is_moved_past_it_or_its_time_passes() {
        let clock = Clock::starting_at(Duration::from_secs(20_414 * 86_400));
        let sleeper = clock.clone();
        let mut timer = tokio::spawn(async move { sleeper.sleep(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        let short = Duration::from_millis(1);
        assert!(tokio::time::timeout(short, &mut timer).await.is_err());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(short, &mut timer)
            .await
            .expect("moved past its end")
            .unwrap();
        // Unmoved, it ends with real (here: tokio's paused) time.
        let before = tokio::time::Instant::now();
        clock.sleep(Duration::from_secs(10)).await;
        assert_eq!(before.elapsed(), Duration::from_secs(10));
    }
}
