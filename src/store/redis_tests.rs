//! The Redis store against a real `redis-server` (started per test on a free
//! port, see tests/common/redis.rs): the ledger's transitions and their
//! atomicity across replicas, the unreachable list, rate limits that answer
//! exactly as governor does, the daily budget, and failures that end within
//! the timeout and never quote the URL. What both backends must answer
//! alike is tested once, on both, in `src/store/suite.rs`. (Unit tests of
//! `redis.rs` in a file of their own, for their length.)

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::redis_server::RedisServer;
use crate::clock::Clock;
use crate::config::{OnError, RedisConfig};
use crate::domain::{BudgetScope, Channel, LimitName};
use crate::store::redis::RedisStore;
use crate::store::{
    BudgetTake, BudgetUsed, Cell, Claim, Entry, Limiter, Owner, Refusal, Reservation, Settle,
    StoreError,
};
use secrecy::SecretString;

const TIMEOUT: Duration = Duration::from_millis(500);
const LEASE: Duration = Duration::from_secs(10);
const KEEP: Duration = Duration::from_secs(600);
/// Some instant (ms) in 2024, so the day is a real one.
const T0: u64 = 1_718_000_000_000;

macro_rules! server_or_skip {
    () => {
        match RedisServer::start() {
            Some(s) => s,
            None => return,
        }
    };
}

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        url: SecretString::from(url.to_owned()),
        key_prefix: "kpc:".into(),
        timeout: TIMEOUT,
        on_error: OnError::FailClosed,
        key_secret: None,
    }
}

/// A store whose ledger is judged by the times the test passes, so the
/// transitions can be walked through at exact instants. Production judges
/// leases by Redis's `TIME`: see [`replica`].
fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&config(&server.url()))
        .unwrap()
        .judging_by_caller_time()
}

/// A replica's store as the service makes it: the ledger judged by Redis's
/// `TIME` plus `clock`'s test offset.
fn replica(server: &RedisServer, clock: &Clock) -> RedisStore {
    RedisStore::connect(&config(&server.url()))
        .unwrap()
        .with_clock(clock.clone())
}

/// `clock`'s wall time, as the ledger passes it.
fn now_ms(clock: &Clock) -> u64 {
    clock.unix().as_millis() as u64
}

/// The wall clock of a replica an hour ahead of the others (an NTP step the
/// others have not had, a VM that resumed), without touching the OS's.
fn an_hour_ahead() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

const SMS_RECIPIENT: Limiter = Limiter {
    channel: Channel::Sms,
    name: LimitName::Recipient,
};
const SMS_GLOBAL: Limiter = Limiter {
    channel: Channel::Sms,
    name: LimitName::Global,
};

fn cell(limiter: Limiter, key: u64, per_hour: u32, burst: u32) -> Cell {
    Cell {
        limiter,
        key,
        interval: Duration::from_secs(3600) / per_hour,
        burst,
        unless_trusted: None,
    }
}

// ---------------------------------------------------------------- ledger

/// Many callers on two replicas (two stores, two connections) claim one key
/// at the same instant: exactly one may send, then, once the lease runs
/// out, exactly one reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_give_exactly_one_owner() {
    let server = server_or_skip!();
    let replicas = [Arc::new(store(&server)), Arc::new(store(&server))];
    let key = [7u8; 16];
    for (now, winner) in [
        (T0, Claim::Send),
        (
            T0 + 10_000,
            Claim::Reconcile {
                since: T0,
                provider: None,
            },
        ),
        (
            T0 + 20_000,
            Claim::Reconcile {
                since: T0,
                provider: None,
            },
        ),
    ] {
        let barrier = Arc::new(tokio::sync::Barrier::new(40));
        let tasks: Vec<_> = (0..40u128)
            .map(|i| {
                let s = replicas[(i % 2) as usize].clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let answer = s.claim(&key, Owner(i + 1), now, LEASE, KEEP).await;
                    (i + 1, answer.unwrap())
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            let (owner, answer) = t.await.unwrap();
            if answer == winner {
                won.push(owner);
            } else {
                assert_eq!(answer, Claim::Busy);
            }
        }
        assert_eq!(won.len(), 1, "at {now}: {won:?}");
        assert!(matches!(
            replicas[0].entry(&key, now).await.unwrap(),
            Some(Entry::InFlight { owner, since: T0, .. }) if owner == Owner(won[0])
        ));
    }
}

/// Two replicas whose wall clocks disagree by far more than the lease (and
/// the keep window): Redis's `TIME` judges the lease, so each sees the
/// other's claim as live, and neither sends what the other holds or sent.
#[tokio::test]
async fn replicas_whose_clocks_disagree_judge_leases_by_redis_time() {
    let server = server_or_skip!();
    let (clock_a, clock_b) = (Clock::system(), Clock::reading(an_hour_ahead));
    let (a, b) = (replica(&server, &clock_a), replica(&server, &clock_b));
    let (oa, ob) = (Owner(0xa), Owner(0xb));

    // A claims. By B's clock A's lease ran out an hour ago: still Busy.
    let key = [11u8; 16];
    assert_eq!(
        a.claim(&key, oa, now_ms(&clock_a), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Send
    );
    assert_eq!(
        b.claim(&key, ob, now_ms(&clock_b), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Busy
    );
    // A renews before its call (the lease a length from Redis's now).
    let renew = Settle::Renew {
        lease_until: now_ms(&clock_a) + 10_000,
        provider: "twilio".into(),
    };
    assert!(a
        .settle(&key, oa, renew, now_ms(&clock_a), KEEP)
        .await
        .unwrap());
    assert_eq!(
        b.claim(&key, ob, now_ms(&clock_b), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Busy
    );
    // A's outcome: B, past the 10-minute keep window by its own clock,
    // still finds it and answers with the sid.
    let accepted = Settle::Accepted {
        sid: Some("SM1".into()),
    };
    assert!(a
        .settle(&key, oa, accepted, now_ms(&clock_a), KEEP)
        .await
        .unwrap());
    assert_eq!(
        b.claim(&key, ob, now_ms(&clock_b), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Accepted {
            sid: Some("SM1".into())
        }
    );

    // The other way round: B's claim is not an hour long for A either.
    let key = [12u8; 16];
    assert_eq!(
        b.claim(&key, ob, now_ms(&clock_b), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Send
    );
    assert_eq!(
        a.claim(&key, oa, now_ms(&clock_a), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Busy
    );
    // The record's times are Redis's (this machine's clock), not B's.
    let Some(Entry::InFlight {
        owner,
        since,
        lease_until,
        provider: None,
    }) = a.entry(&key, 0).await.unwrap()
    else {
        panic!("B's claim is in flight");
    };
    assert_eq!(owner, ob);
    assert_eq!(lease_until - since, 10_000);
    assert!(
        since.abs_diff(now_ms(&clock_a)) < 2_000,
        "since {since} is not Redis's now"
    );
    // Time that passes (the test offset) counts: once the lease has run
    // out by Redis's clock, the next claim reconciles.
    clock_a.advance(LEASE);
    assert_eq!(
        a.claim(&key, oa, now_ms(&clock_a), LEASE, KEEP)
            .await
            .unwrap(),
        Claim::Reconcile {
            since,
            provider: None
        }
    );
}

// ----------------------------------------------------------- unreachable

// ------------------------------------------------------------ rate limits

/// The GCRA as governor computes it, written out independently: t, tau,
/// TAT in nanoseconds.
struct Gcra {
    t: u128,
    tau: u128,
    tat: Option<u128>,
}

impl Gcra {
    fn new(per_hour: u32, burst: u32) -> Self {
        let t = (Duration::from_secs(3600) / per_hour).as_nanos();
        Gcra {
            t,
            tau: t * u128::from(burst - 1),
            tat: None,
        }
    }
    fn check(&mut self, now_ms: u64) -> Result<(), Duration> {
        let now = u128::from(now_ms) * 1_000_000;
        let tat = self.tat.unwrap_or(now);
        let earliest = tat.saturating_sub(self.tau);
        if now < earliest {
            return Err(Duration::from_nanos((earliest - now) as u64));
        }
        self.tat = Some(tat.max(now) + self.t);
        Ok(())
    }
}

/// A small deterministic sequence of gaps between requests (ms).
fn gaps(seed: u64, n: usize, max: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Many requests at once, some spread out.
            match (x >> 33) % 4 {
                0 => 0,
                1 => (x >> 40) % 50,
                _ => (x >> 20) % max,
            }
        })
        .collect()
}

#[tokio::test]
async fn rate_limits_answer_exactly_as_governor() {
    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};

    let server = server_or_skip!();
    let s = store(&server);
    // Intervals that are whole, fractional (3600 s / 7 and / 3_600_000 are
    // not whole milliseconds) and tiny, with bursts of one and more.
    let rates = [(5, 3), (7, 2), (10, 5), (300, 50), (3_600_000, 1), (1, 1)];
    for (i, (per_hour, burst)) in rates.into_iter().enumerate() {
        let quota = Quota::with_period(Duration::from_secs(3600) / per_hour)
            .unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap());
        let clock = FakeRelativeClock::default();
        let governor = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut written_out = Gcra::new(per_hour, burst);
        let c = cell(SMS_RECIPIENT, i as u64, per_hour, burst);
        let max_gap = (3_600_000 / u64::from(per_hour)).max(2) * 2;
        let mut now = T0;
        let (mut passed, mut refused) = (0, 0);
        for gap in gaps(i as u64 + 1, 200, max_gap) {
            now += gap;
            clock.advance(Duration::from_millis(gap));
            let expected = governor.check().map_err(|not_until| {
                use governor::clock::Clock as _;
                not_until.wait_time_from(clock.now())
            });
            assert_eq!(
                written_out.check(now),
                expected,
                "{per_hour}/h burst {burst}"
            );
            let answer = s.reserve(&[c], None, now).await.unwrap();
            match (answer, expected) {
                (Ok(r), Ok(())) => {
                    assert_eq!(r.cells, vec![c]);
                    passed += 1;
                }
                (
                    Err(Refusal::Limited {
                        limiter,
                        retry_after,
                    }),
                    Err(wait),
                ) => {
                    assert_eq!(limiter, SMS_RECIPIENT);
                    assert_eq!(retry_after, wait, "{per_hour}/h burst {burst} at {now}");
                    refused += 1;
                }
                (answer, expected) => {
                    panic!("{per_hour}/h burst {burst} at {now}: {answer:?}, governor {expected:?}")
                }
            }
        }
        if per_hour < 3_600_000 {
            assert!(
                passed > 0 && refused > 0,
                "{per_hour}/h: {passed} {refused}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_reservation_takes_nothing() {
    let server = server_or_skip!();
    let s = store(&server);
    let roomy = cell(SMS_GLOBAL, 1, 100, 10);
    let tight = cell(SMS_RECIPIENT, 2, 1, 1);
    let first = s.reserve(&[roomy, tight], None, T0).await.unwrap().unwrap();
    assert_eq!(first.cells, vec![roomy, tight]);
    let mut conn = raw(&server).await;
    let before: Vec<String> = redis::cmd("MGET")
        .arg("kpc:l:sms:global:0000000000000001")
        .arg("kpc:l:sms:recipient:0000000000000002")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The tight cell refuses for an hour: the roomy one, asked first, keeps
    // its state.
    for k in 0..20 {
        let refusal = s.reserve(&[roomy, tight], None, T0 + k).await.unwrap();
        assert_eq!(
            refusal,
            Err(Refusal::Limited {
                limiter: SMS_RECIPIENT,
                retry_after: Duration::from_millis(3_600_000 - k),
            })
        );
    }
    let after: Vec<String> = redis::cmd("MGET")
        .arg("kpc:l:sms:global:0000000000000001")
        .arg("kpc:l:sms:recipient:0000000000000002")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, after);
    // The first refusing cell in order is named.
    let empty = cell(SMS_GLOBAL, 3, 1, 1);
    s.reserve(&[empty], None, T0).await.unwrap().unwrap();
    assert!(matches!(
        s.reserve(&[empty, tight], None, T0).await.unwrap(),
        Err(Refusal::Limited { limiter, .. }) if limiter == SMS_GLOBAL
    ));
    // A budget refusal takes no cell either.
    let budget = BudgetTake {
        day: T0 / 86_400_000,
        calling_code: 1,
        total_cap: 1,
        country_cap: 0,
        units: 1,
    };
    let other = cell(SMS_RECIPIENT, 4, 1, 1);
    s.reserve(&[], Some(budget), T0).await.unwrap().unwrap();
    assert_eq!(
        s.reserve(&[other], Some(budget), T0).await.unwrap(),
        Err(Refusal::Budget {
            scope: BudgetScope::Total
        })
    );
    let budget = BudgetTake {
        total_cap: 0,
        ..budget
    };
    assert!(s.reserve(&[other], Some(budget), T0).await.unwrap().is_ok());
    // Cells expire (Redis's clock) when their TAT passes, a margin later.
    let pttl: i64 = redis::cmd("PTTL")
        .arg("kpc:l:sms:recipient:0000000000000004")
        .query_async(&mut conn)
        .await
        .unwrap();
    let margin = crate::store::redis::GC_MARGIN_MS as i64;
    assert!(
        pttl > 3_590_000 + margin && pttl <= 3_600_000 + margin,
        "{pttl}"
    );
}

#[tokio::test]
async fn refunds_give_back_cells_and_budget_never_below_zero() {
    let server = server_or_skip!();
    let s = store(&server);
    let day = T0 / 86_400_000;
    let budget = BudgetTake {
        day,
        calling_code: 49,
        total_cap: 100,
        country_cap: 100,
        units: 1,
    };
    let c = cell(SMS_RECIPIENT, 1, 5, 3);
    // Take the whole burst, then give one back: one more passes.
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(s.reserve(&[c], Some(budget), T0).await.unwrap().unwrap());
    }
    assert!(s.reserve(&[c], Some(budget), T0).await.unwrap().is_err());
    assert_eq!(
        s.budget_used(day, 49).await.unwrap(),
        BudgetUsed {
            total: 3,
            country: 3
        }
    );
    s.refund(&taken.pop().unwrap(), T0 + 1).await.unwrap();
    assert_eq!(s.budget_used(day, 49).await.unwrap().total, 2);
    assert!(s.reserve(&[c], Some(budget), T0 + 2).await.unwrap().is_ok());
    assert!(s
        .reserve(&[c], Some(budget), T0 + 3)
        .await
        .unwrap()
        .is_err());

    // Giving back everything empties the cell (the key goes) and the
    // counters stop at zero however often a refund comes.
    let r = Reservation {
        cells: vec![c],
        budget: Some(budget),
        used: None,
    };
    for _ in 0..6 {
        s.refund(&r, T0 + 4).await.unwrap();
    }
    assert_eq!(s.budget_used(day, 49).await.unwrap(), BudgetUsed::default());
    let mut conn = raw(&server).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("kpc:l:sms:recipient:0000000000000001")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    // A refund for counters that never existed creates none.
    let elsewhere = BudgetTake {
        calling_code: 33,
        ..budget
    };
    s.refund(
        &Reservation {
            cells: vec![],
            budget: Some(elsewhere),
            used: None,
        },
        T0,
    )
    .await
    .unwrap();
    assert_eq!(s.budget_used(day, 33).await.unwrap(), BudgetUsed::default());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("kpc:b:{day}:c:33"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    // A refund later on leaves the TAT where time has already put it: a
    // cell refunded after its TAT passed is simply gone.
    let d = cell(SMS_GLOBAL, 9, 3600, 1);
    let r = s.reserve(&[d], None, T0).await.unwrap().unwrap();
    s.refund(&r, T0 + 5_000).await.unwrap();
    assert!(s.reserve(&[d], None, T0 + 5_000).await.unwrap().is_ok());
}

#[tokio::test]
async fn keys_hold_no_number_and_sit_under_the_prefix() {
    let server = server_or_skip!();
    let s = RedisStore::connect(&RedisConfig {
        key_prefix: "tenant-a:".into(),
        ..config(&server.url())
    })
    .unwrap();
    let keys = crate::store::Keys::random();
    let number = "+14155550123";
    let m = keys.message(Channel::Sms, number, "Your code is 123456", Some("123456"));
    s.claim(&m, Owner(1), T0, LEASE, KEEP).await.unwrap();
    s.settle(
        &m,
        Owner(1),
        Settle::Accepted {
            sid: Some("SM1".into()),
        },
        T0,
        KEEP,
    )
    .await
    .unwrap();
    s.mark_unreachable(&keys.recipient(Channel::Sms, number), Some(21211), T0, KEEP)
        .await
        .unwrap();
    let c = cell(
        SMS_RECIPIENT,
        keys.limit("sms:recipient", number.as_bytes()),
        5,
        3,
    );
    let budget = BudgetTake {
        day: 1,
        calling_code: 1,
        total_cap: 0,
        country_cap: 0,
        units: 1,
    };
    s.reserve(&[c], Some(budget), T0).await.unwrap().unwrap();
    let mut conn = raw(&server).await;
    let all: Vec<(String, String)> = {
        let names: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for k in names {
            let v: String = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push((k, v));
        }
        out
    };
    assert_eq!(all.len(), 5, "{all:?}");
    for (k, v) in &all {
        assert!(k.starts_with("tenant-a:"), "{k}");
        for secret in ["4155550123", "123456"] {
            assert!(!k.contains(secret) && !v.contains(secret), "{k} = {v}");
        }
    }
}

// --------------------------------------------------------------- failures

fn assert_quiet(e: &StoreError, url: &str) {
    let text = e.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(url), "{text}");
    assert!(!text.contains("kpc:"), "{text}");
}

#[tokio::test]
async fn a_stopped_redis_fails_within_the_timeout_and_a_restarted_one_is_found_again() {
    let mut server = server_or_skip!();
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", server.port());
    // The server has no password: Redis answers AUTH with an error, so use
    // the plain URL to work and the password URL only where nothing answers.
    let s = store(&server);
    s.ping().await.unwrap();
    let key = [10u8; 16];
    assert_eq!(
        s.claim(&key, Owner(1), T0, LEASE, KEEP).await.unwrap(),
        Claim::Send
    );

    server.stop();
    let with_password = RedisStore::connect(&config(&url)).unwrap();
    for store in [&s, &with_password] {
        for _ in 0..3 {
            let started = Instant::now();
            let e = store
                .claim(&key, Owner(2), T0, LEASE, KEEP)
                .await
                .unwrap_err();
            assert!(started.elapsed() < TIMEOUT + Duration::from_millis(250));
            assert_quiet(&e, &url);
            let e = store.ping().await.unwrap_err();
            assert_quiet(&e, &url);
        }
    }
    assert!(!format!("{with_password:?}").contains("hunter2"));

    // Back (empty: nothing persisted): found again without a new store,
    // and the scripts are loaded again.
    server.restart();
    let started = Instant::now();
    while s.ping().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no reconnect after a restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.claim(&key, Owner(2), T0, LEASE, KEEP).await.unwrap(),
        Claim::Send
    );
    let c = cell(SMS_RECIPIENT, 1, 5, 3);
    assert!(s.reserve(&[c], None, T0).await.unwrap().is_ok());
    assert_eq!(s.budget_used(0, 1).await.unwrap(), BudgetUsed::default());
}

#[tokio::test]
async fn a_redis_that_never_answers_fails_within_the_timeout() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let s = RedisStore::connect(&RedisConfig {
        timeout: Duration::from_millis(200),
        ..config(&url)
    })
    .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let e = s
            .reserve(&[cell(SMS_GLOBAL, 1, 5, 3)], None, T0)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(500),
            "{took:?}"
        );
        assert_quiet(&e, &url);
    }
}

#[tokio::test]
async fn a_store_starts_while_redis_is_down() {
    // Nothing listens: connecting is refused at once, every call says so,
    // and making the store does not fail.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = RedisStore::connect(&config(&url)).unwrap();
    let e = s.ping().await.unwrap_err();
    assert!(e.to_string().contains("ping"), "{e}");
    assert_quiet(&e, &url);
    assert!(RedisStore::connect(&config("http://example.com")).is_err());
}

/// The relay's marks: a MessageSid is new to exactly one of many replicas
/// asking at once, is forgotten after its keep, and a route's hourly count
/// stops at its limit and starts again in the next window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_marks_are_shared_by_replicas_and_counted_atomically() {
    let server = server_or_skip!();
    let replicas: Vec<Arc<RedisStore>> = (0..4).map(|_| Arc::new(store(&server))).collect();
    let seen = [5u8; 16];
    let keep = Duration::from_secs(86_400);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = replicas[i % replicas.len()].clone();
            tokio::spawn(async move { s.relay_first_seen(&seen, T0, keep).await.unwrap() })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1, "one replica relays, the others see a duplicate");
    assert!(!replicas[1]
        .relay_first_seen(&seen, T0 + 86_399_999, keep)
        .await
        .unwrap());
    assert!(replicas[2]
        .relay_first_seen(&seen, T0 + 86_400_000, keep)
        .await
        .unwrap());

    let count = [6u8; 16];
    let until = T0 + 3_600_000;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = replicas[i % replicas.len()].clone();
            tokio::spawn(async move { s.relay_take(&count, 3, T0, until).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 3, "exactly the limit, whoever asks");
    assert!(replicas[0]
        .relay_take(&count, 3, until, until + 3_600_000)
        .await
        .unwrap());

    // Keyed hashes under the prefix, with an expiry.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("kpc:r:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} expires");
    }
}

/// The fraud guard's counters: one scripted history of sends,
/// confirmations (some for numbers never sent to), suspect marks and reads
/// over 16 days, played against the memory store and Redis; every answer
/// must be the same.
#[tokio::test]
async fn fraud_counts_answer_exactly_as_the_memory_store() {
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    use crate::store::{FraudKeys, FraudScope};
    let server = server_or_skip!();
    let redis = store(&server);
    let memory = MemoryStore::new(Clock::starting_at(Duration::ZERO), 1000);
    let keys = |n: u64| FraudKeys {
        calling_code: [44, 1, 234][(n % 3) as usize],
        prefix: n % 7,
        number: n % 23,
    };
    let mut now = T0;
    let mut x = 7u64;
    let mut confirmations = (0, 0);
    let mut trusted = [0; 2];
    let mut several_days = 0;
    for (i, gap) in gaps(11, 2500, 40 * 60_000).into_iter().enumerate() {
        now += gap;
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = keys(x >> 40);
        match (x >> 33) % 6 {
            0 | 1 => assert_eq!(
                redis.fraud_record_sent(&k, now).await.unwrap(),
                memory.fraud_record_sent(&k, now).await.unwrap(),
                "sent #{i}"
            ),
            2 | 3 => {
                let (r, m) = (
                    redis.fraud_record_confirmed(&k, now).await.unwrap(),
                    memory.fraud_record_confirmed(&k, now).await.unwrap(),
                );
                assert_eq!(r, m, "confirmed #{i}");
                match r {
                    crate::store::Confirmed::Counted(_) => confirmations.0 += 1,
                    crate::store::Confirmed::NeverSent => confirmations.1 += 1,
                }
            }
            4 => {
                let scope = if x & 1 == 0 {
                    FraudScope::Country
                } else {
                    FraudScope::Prefix
                };
                let until = now + (x >> 50) % (6 * 3_600_000);
                redis
                    .fraud_mark_suspect(&k, scope, until, now)
                    .await
                    .unwrap();
                memory
                    .fraud_mark_suspect(&k, scope, until, now)
                    .await
                    .unwrap();
            }
            _ => {
                let tallies = redis.fraud_tallies(&k, now).await.unwrap();
                assert_eq!(
                    tallies,
                    memory.fraud_tallies(&k, now).await.unwrap(),
                    "tallies #{i}"
                );
                assert_eq!(
                    redis.number_trusted(k.number, now).await.unwrap(),
                    tallies.number_trusted,
                    "trusted #{i}"
                );
                trusted[usize::from(tallies.number_trusted)] += 1;
                if tallies
                    .country
                    .daily_peaks
                    .iter()
                    .filter(|p| **p > 0)
                    .count()
                    > 1
                {
                    several_days += 1;
                }
            }
        }
    }
    assert!(
        trusted[0] > 10 && trusted[1] > 10 && several_days > 10,
        "{trusted:?} {several_days}"
    );
    assert!(now - T0 > 14 * 86_400_000, "the history spans the 14 days");
    assert!(
        confirmations.0 > 50 && confirmations.1 > 50,
        "{confirmations:?}"
    );
}

/// A cell marked `unless_trusted` (the prefix limiter's) is not taken for
/// a number that confirmed a code, and is for any other: the same answers
/// from the memory store and from Redis, through `Store::reserve`.
#[tokio::test]
async fn a_trusted_number_skips_the_prefix_cell_on_memory_and_redis() {
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    use crate::store::{FraudKeys, Side, Store};
    let server = server_or_skip!();
    let redis = Store::Redis {
        redis: store(&server),
        fallback: None,
        failures: Default::default(),
    };
    let memory = Store::Memory(MemoryStore::new(Clock::starting_at(Duration::ZERO), 1000));
    const PREFIX: Limiter = Limiter {
        channel: Channel::Sms,
        name: LimitName::Prefix,
    };
    // One block (prefix key 5) with a burst of 2; numbers 100.. in it.
    let prefix_cell = |number: u64| Cell {
        unless_trusted: Some(number),
        ..cell(PREFIX, 5, 1, 2)
    };
    let fraud = |number: u64| FraudKeys {
        calling_code: 44,
        prefix: 5,
        number,
    };
    let mut answers = Vec::new();
    for s in [&memory, &redis] {
        let mut seen = Vec::new();
        // Number 100 is sent a code and confirms it: trusted.
        s.fraud_record_sent(&fraud(100), T0).await.unwrap();
        s.fraud_record_confirmed(&fraud(100), T0 + 1).await.unwrap();
        for (i, number) in [101, 102, 103, 100, 100, 104].into_iter().enumerate() {
            let now = T0 + 10 + i as u64;
            let cells = [cell(SMS_RECIPIENT, number, 3600, 10), prefix_cell(number)];
            let answer = s.reserve(Side::Shared, &cells, None, now).await.unwrap();
            seen.push(match answer {
                Ok(r) => format!("ok {}", r.cells.len()),
                Err(Refusal::Limited { limiter, .. }) => format!("{:?}", limiter.name),
                Err(other) => format!("{other:?}"),
            });
        }
        // With a budget too (its counters follow the trust mark among the
        // script's keys): the trusted number's exempt cell is skipped and
        // one unit of budget is taken, then the cap refuses.
        let budget = BudgetTake {
            day: T0 / 86_400_000,
            calling_code: 44,
            total_cap: 1,
            country_cap: 0,
            units: 1,
        };
        for k in 0..2 {
            let cells = [cell(SMS_RECIPIENT, 100, 3600, 10), prefix_cell(100)];
            let answer = s
                .reserve(Side::Shared, &cells, Some(budget), T0 + 20 + k)
                .await
                .unwrap();
            seen.push(match answer {
                Ok(r) => format!("ok {} budget {}", r.cells.len(), r.budget.is_some()),
                Err(other) => format!("{other:?}"),
            });
        }
        answers.push(seen);
    }
    // 101 and 102 take the block's burst, 103 is refused; the trusted 100
    // passes twice taking only its recipient cell; 104 is still refused.
    assert_eq!(
        answers[0],
        [
            "ok 2",
            "ok 2",
            "Prefix",
            "ok 1",
            "ok 1",
            "Prefix",
            "ok 1 budget true",
            "Budget { scope: Total }"
        ],
        "memory"
    );
    assert_eq!(answers[1], answers[0], "redis");
}

// ------------------------------------------------------------ verify API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_codes_are_shared_by_replicas_and_approved_exactly_once() {
    use crate::store::{CodeCheck, Pending, PendingCode};
    let server = server_or_skip!();
    let replicas: Vec<Arc<RedisStore>> = (0..4).map(|_| Arc::new(store(&server))).collect();
    let key = [9u8; 16];
    let code = PendingCode {
        hash: [0xab; 32],
        seed: [0x01; 16],
        expires_at: T0 + 600_000,
    };
    let other = PendingCode {
        hash: [0xcd; 32],
        seed: [0x02; 16],
        expires_at: T0 + 900_000,
    };
    // The first request stores its code; a second, on another replica,
    // finds it (the same code, one more send), not its own fresh one.
    let first = replicas[0].verify_pending(&key, &code, T0).await.unwrap();
    assert_eq!(first, Pending { code, sends: 1 });
    let again = replicas[1]
        .verify_pending(&key, &other, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(again, Pending { code, sends: 2 });

    // The seed and hash are stored, never a number or a code; it expires.
    // Until a send of it is accepted it is kept apart, not checkable (two
    // requests are sending it).
    let mut conn = raw(&server).await;
    let shared = conn.clone();
    let get = move |pattern: &'static str| {
        let mut conn = shared.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            let mut values = Vec::new();
            for k in keys {
                let v: String = redis::cmd("GET")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                values.push(v);
            }
            values
        }
    };
    let stored = |state: u32, sends: u32| {
        format!(
            "{}|{state}|{sends}|{}|{}",
            T0 + 600_000,
            "ab".repeat(32),
            "01".repeat(16)
        )
    };
    assert_eq!(get("kpc:w:*").await, [stored(2, 2)]);
    assert!(get("kpc:v:*").await.is_empty());
    assert_eq!(
        replicas[3]
            .verify_check(&key, &[0xab; 32], 5, T0 + 1000)
            .await
            .unwrap(),
        CodeCheck::NoPendingCode
    );
    // One of the two is refused: still unsent, one request left sending.
    replicas[0]
        .verify_unsent(&key, &[0xab; 32], T0 + 1000)
        .await
        .unwrap();
    assert_eq!(get("kpc:w:*").await, [stored(1, 2)]);
    // Another code's answer changes nothing; this code's makes it pending.
    assert!(!replicas[2]
        .verify_sent(&key, &[0xcd; 32], T0 + 1000)
        .await
        .unwrap());
    assert!(replicas[1]
        .verify_sent(&key, &[0xab; 32], T0 + 1000)
        .await
        .unwrap());
    assert!(get("kpc:w:*").await.is_empty());
    assert_eq!(get("kpc:v:*").await, [stored(0, 2)]);
    // A refused resend leaves a sent code as it is.
    assert_eq!(
        replicas[0]
            .verify_pending(&key, &other, T0 + 1500)
            .await
            .unwrap(),
        Pending { code, sends: 3 }
    );
    replicas[0]
        .verify_unsent(&key, &[0xab; 32], T0 + 1500)
        .await
        .unwrap();
    assert_eq!(get("kpc:v:*").await, [stored(0, 3)]);

    // A wrong hash counts an attempt (on any replica).
    assert_eq!(
        replicas[2]
            .verify_check(&key, &[0xac; 32], 5, T0 + 2000)
            .await
            .unwrap(),
        CodeCheck::Mismatch { attempts_left: 4 }
    );
    // Forty concurrent checks of the right hash on four replicas: one
    // approval, the rest find nothing pending.
    let barrier = Arc::new(tokio::sync::Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = replicas[i % replicas.len()].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                s.verify_check(&key, &[0xab; 32], 5, T0 + 3000)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut approved = 0;
    for t in tasks {
        match t.await.unwrap() {
            CodeCheck::Approved => approved += 1,
            other => assert_eq!(other, CodeCheck::NoPendingCode),
        }
    }
    assert_eq!(approved, 1);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("kpc:v:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "an approved code is removed: {left:?}");
    // An approved code is never made checkable again.
    assert!(!replicas[0]
        .verify_sent(&key, &[0xab; 32], T0 + 4000)
        .await
        .unwrap());
    // A refused first send leaves nothing: the next request is fresh.
    replicas[0]
        .verify_pending(&key, &code, T0 + 5000)
        .await
        .unwrap();
    replicas[1]
        .verify_unsent(&key, &[0xab; 32], T0 + 5000)
        .await
        .unwrap();
    assert!(get("kpc:w:*").await.is_empty());
    assert_eq!(
        replicas[2]
            .verify_pending(&key, &other, T0 + 6000)
            .await
            .unwrap(),
        Pending {
            code: other,
            sends: 1
        }
    );
}

/// `verify.max_checks_per_hour` is counted with the store's counter (the
/// relay's), under a keyed hash: replicas share one count per hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_check_count_is_shared_by_replicas() {
    let server = server_or_skip!();
    let replicas: Vec<Arc<RedisStore>> = (0..2).map(|_| Arc::new(store(&server))).collect();
    let key = [11u8; 16];
    let until = T0 + 3_600_000;
    for i in 0..10 {
        assert!(replicas[i % 2]
            .relay_take(&key, 10, T0 + i as u64, until)
            .await
            .unwrap());
    }
    for r in &replicas {
        assert!(!r.relay_take(&key, 10, T0 + 20, until).await.unwrap());
    }
}

/// A verify `Idempotency-Key`: in progress, then the answer, shared by
/// replicas; forgotten after a refusal; gone after its time.
#[tokio::test]
async fn idempotency_keys_are_shared_by_replicas() {
    use crate::store::Idempotency;
    let server = server_or_skip!();
    let (a, b) = (store(&server), store(&server));
    let (key, fp, other) = ([12u8; 16], [0x5a; 32], [0x5b; 32]);
    assert_eq!(
        a.verify_idempotency_begin(&key, &fp, T0, T0 + 60_000)
            .await
            .unwrap(),
        Idempotency::New
    );
    assert_eq!(
        b.verify_idempotency_begin(&key, &other, T0 + 1, T0 + 60_001)
            .await
            .unwrap(),
        Idempotency::InProgress { fingerprint: fp }
    );
    // Another body cannot finish it.
    b.verify_idempotency_finish(&key, &other, Some("x"), T0 + 2, T0 + 600_000)
        .await
        .unwrap();
    a.verify_idempotency_finish(&key, &fp, Some("sms|123|1"), T0 + 2, T0 + 600_000)
        .await
        .unwrap();
    let done = Idempotency::Done {
        fingerprint: fp,
        answer: "sms|123|1".into(),
    };
    assert_eq!(
        b.verify_idempotency_begin(&key, &fp, T0 + 3, T0 + 60_003)
            .await
            .unwrap(),
        done
    );
    // Kept as hashes only.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("kpc:i:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        b.verify_idempotency_begin(&key, &fp, T0 + 600_000, T0 + 660_000)
            .await
            .unwrap(),
        Idempotency::New
    );
    a.verify_idempotency_finish(&key, &fp, None, T0 + 600_001, T0 + 600_001)
        .await
        .unwrap();
    assert_eq!(
        a.verify_idempotency_begin(&key, &other, T0 + 600_002, T0 + 660_002)
            .await
            .unwrap(),
        Idempotency::New
    );
}

/// The SMS fallback records (`store::records`): of replicas taking one
/// record at once, exactly one gets it; a record past its time is gone; both
/// backends answer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_records_are_taken_exactly_once_and_expire() {
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    let server = server_or_skip!();
    let replicas: Vec<Arc<RedisStore>> = (0..4).map(|_| Arc::new(store(&server))).collect();
    let memory = Arc::new(MemoryStore::new(Clock::starting_at(Duration::ZERO), 1000));
    let key = [7u8; 16];
    let sealed = b"\x00\xffsealed|bytes".to_vec();
    replicas[0]
        .stash_put(&key, &sealed, T0, T0 + 600_000)
        .await
        .unwrap();
    memory
        .stash_put(&key, &sealed, T0, T0 + 600_000)
        .await
        .unwrap();
    // Redis holds the record under the prefix, with its end, in hex.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("kpc:s:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        value,
        format!("{}|00ff7365616c65647c6279746573", T0 + 600_000)
    );
    // Eight takes at once on four replicas: one gets the bytes.
    let mut takes = Vec::new();
    for i in 0..8 {
        let r = replicas[i % 4].clone();
        takes.push(tokio::spawn(
            async move { r.stash_take(&key, T0 + 1000).await },
        ));
    }
    let mut got = Vec::new();
    for t in takes {
        if let Some(bytes) = t.await.unwrap().unwrap() {
            got.push(bytes);
        }
    }
    assert_eq!(got, vec![sealed.clone()]);
    // The memory store: one take, then none.
    assert_eq!(
        memory.stash_take(&key, T0 + 1000).await.unwrap(),
        Some(sealed.clone())
    );
    assert_eq!(memory.stash_take(&key, T0 + 1000).await.unwrap(), None);
    // A record whose code expired is not taken, on either backend.
    for backend in 0..2 {
        let at = T0 + 600_000;
        if backend == 0 {
            replicas[1].stash_put(&key, &sealed, T0, at).await.unwrap();
            assert_eq!(replicas[2].stash_take(&key, at).await.unwrap(), None);
            assert_eq!(
                replicas[2].stash_take(&key, at - 1).await.unwrap(),
                None,
                "gone"
            );
        } else {
            memory.stash_put(&key, &sealed, T0, at).await.unwrap();
            assert_eq!(memory.stash_take(&key, at).await.unwrap(), None);
        }
    }
}

/// Cached Twilio Lookup answers (`store::records`): what one replica keeps,
/// another reads, until its end and not after; both backends alike; the
/// Redis key is a keyed hash under the prefix, never the number.
#[tokio::test]
async fn lookup_answers_are_shared_by_replicas_until_their_end() {
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    use crate::store::Keys;
    let server = server_or_skip!();
    let replicas = [store(&server), store(&server)];
    let memory = MemoryStore::new(Clock::starting_at(Duration::ZERO), 1000);
    let keys = Keys::from_secret(b"lookup-test-secret");
    let number = "+14155550102";
    let key = keys.record_key("lookup", &[number.as_bytes(), b"line_type_intelligence"]);
    let other = keys.record_key("lookup", &[number.as_bytes(), b"sim_swap"]);
    assert_ne!(key, other, "one record per package");
    let end = T0 + 30 * 24 * 3_600_000;
    replicas[0]
        .lookup_put(&[(key, "landline".to_owned(), end)], T0)
        .await
        .unwrap();
    memory
        .lookup_put(&[(key, "landline".to_owned(), end)], T0)
        .await
        .unwrap();
    for at in [T0, end - 1] {
        assert_eq!(
            replicas[1].lookup_get(&[key], at).await.unwrap()[0].as_deref(),
            Some("landline")
        );
        assert_eq!(
            memory.lookup_get(&[key], at).await.unwrap()[0].as_deref(),
            Some("landline")
        );
    }
    assert_eq!(replicas[1].lookup_get(&[key], end).await.unwrap(), [None]);
    assert_eq!(memory.lookup_get(&[key], end).await.unwrap(), [None]);
    assert_eq!(replicas[1].lookup_get(&[other], T0).await.unwrap(), [None]);
    // "No data" is kept too (an empty answer), so it is not bought again.
    replicas[1]
        .lookup_put(&[(other, "".to_owned(), T0 + 3_600_000)], T0)
        .await
        .unwrap();
    assert_eq!(
        replicas[0].lookup_get(&[other], T0).await.unwrap()[0].as_deref(),
        Some("")
    );
    // One call reads every package of a number, in the order asked.
    assert_eq!(
        replicas[0].lookup_get(&[other, key], T0).await.unwrap(),
        [Some(String::new()), Some("landline".to_owned())]
    );
    let mut conn = raw(&server).await;
    let mut stored: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    stored.sort();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for k in &stored {
        assert!(k.starts_with("kpc:k:"), "{k}");
        assert!(!k.contains("4155550102"), "{k}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} expires in Redis too");
    }
}

/// Every limiter of every channel (the identity and notification ones
/// too) answers the same on Redis as on the memory store: the same cells
/// pass, the same are refused with the same limiter and `Retry-After`, and
/// two limiters with the same key never share a cell.
#[tokio::test]
async fn every_limiter_answers_the_same_on_memory_and_redis() {
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;
    use crate::store::{Side, Store};
    let server = server_or_skip!();
    let redis = Store::Redis {
        redis: store(&server),
        fallback: None,
        failures: Default::default(),
    };
    // The memory store's limiters run on its clock, Redis's on `now`: both
    // are moved together, and a `Retry-After` may differ by the real time
    // the test takes (under a second).
    let clock = Clock::starting_at(Duration::ZERO);
    let memory = Store::Memory(MemoryStore::new(clock.clone(), 1000));
    let same = |m: &Result<Reservation, Refusal>, r: &Result<Reservation, Refusal>| match (m, r) {
        (Ok(a), Ok(b)) => a == b,
        (
            Err(Refusal::Limited {
                limiter: a,
                retry_after: x,
            }),
            Err(Refusal::Limited {
                limiter: b,
                retry_after: y,
            }),
        ) => a == b && x.abs_diff(*y) < Duration::from_secs(1),
        _ => false,
    };
    let names = [
        LimitName::Recipient,
        LimitName::Ip,
        LimitName::UnknownIp,
        LimitName::Identity,
        LimitName::Prefix,
        LimitName::Country,
        LimitName::Global,
        LimitName::Notification,
    ];
    let mut answers = Vec::new();
    for channel in [Channel::Sms, Channel::Voice, Channel::WhatsApp] {
        for name in names {
            let limiter = Limiter { channel, name };
            // The same key (7) for every limiter: each has its own cells.
            let c = cell(limiter, 7, 6, 2);
            let mut now = T0;
            for _ in 0..4 {
                let m = memory.reserve(Side::Shared, &[c], None, now).await.unwrap();
                let r = redis.reserve(Side::Shared, &[c], None, now).await.unwrap();
                assert!(same(&m, &r), "{channel:?} {name:?} at {now}: {m:?} {r:?}");
                answers.push(r.map(|_| ()));
                now += 1_000;
                clock.advance(Duration::from_secs(1));
            }
            // Ten minutes (3600 s / 6) bring one cell back on both.
            now += 600_000;
            clock.advance(Duration::from_secs(600));
            let m = memory.reserve(Side::Shared, &[c], None, now).await.unwrap();
            let r = redis.reserve(Side::Shared, &[c], None, now).await.unwrap();
            assert!(
                same(&m, &r),
                "{channel:?} {name:?} after the interval: {m:?} {r:?}"
            );
            assert!(r.is_ok(), "{channel:?} {name:?}: {r:?}");
        }
    }
    // Burst 2: per limiter two passed and two were refused, by that limiter.
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 3 * 8 * 2);
    for (i, a) in answers.iter().enumerate() {
        if let Err(Refusal::Limited {
            limiter,
            retry_after,
        }) = a
        {
            let (channel, name) = (
                [Channel::Sms, Channel::Voice, Channel::WhatsApp][i / 32],
                names[(i / 4) % 8],
            );
            assert_eq!(*limiter, Limiter { channel, name });
            assert!(*retry_after > Duration::from_secs(590), "{retry_after:?}");
        }
    }
}
