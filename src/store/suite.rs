//! One suite for both backends: each test here runs twice, against the
//! memory store and against a real `redis-server` (started on a free port
//! by `tests/common/redis.rs`; without one the Redis run is skipped with a
//! loud line, and fails in CI). The two backends must answer alike; what
//! only Redis has (keys, their expiry) is checked in the Redis run alone.
//! The rest of the Redis store's tests (replicas, failures, raw keys) are
//! in `redis_tests.rs`. Over 400 lines because it is the whole
//! suite, a list of independent tests; a store operation's tests sit
//! together under its heading.

use std::time::Duration;

use secrecy::SecretString;

use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::redis_server::RedisServer;
use super::*;
use crate::clock::Clock;
use crate::config::{OnError, RedisConfig};
use crate::domain::BudgetScope;

const LEASE: Duration = Duration::from_secs(10);
const KEEP: Duration = Duration::from_secs(600);
/// Some instant (ms) in 2024, so the day is a real one.
const T0: u64 = 1_718_000_000_000;

fn memory_store() -> MemoryStore {
    MemoryStore::new(Clock::starting_at(Duration::from_millis(T0)), 1000)
}

/// A Redis store whose ledger is judged by the times the test passes (as
/// the memory store's is), so both walk the same instants.
fn redis_store(server: &RedisServer) -> RedisStore {
    let config = RedisConfig {
        url: SecretString::from(server.url()),
        key_prefix: "kpc:".into(),
        timeout: Duration::from_millis(500),
        on_error: OnError::FailClosed,
        key_secret: None,
    };
    RedisStore::connect(&config)
        .unwrap()
        .judging_by_caller_time()
}

async fn raw(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A test body run on each backend: `$s` is the store, `$server` the
/// Redis server (`None` on the memory run).
macro_rules! on_both_stores {
    (async fn $name:ident($s:ident, $server:ident) $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn on_memory() {
                let $server: Option<&RedisServer> = None;
                let _ = $server;
                let $s = memory_store();
                $body
            }

            #[tokio::test]
            async fn on_redis() {
                let Some(server) = RedisServer::start() else {
                    return;
                };
                let $server = Some(&server);
                let _ = $server;
                let $s = redis_store(&server);
                $body
            }
        }
    };
}

// ---------------------------------------------------------------- ledger

on_both_stores!(
    async fn claim_settle_and_entry_go_through_every_transition(s, server) {
        let key = [1u8; 16];
        let (a, b) = (Owner(1), Owner(2));

        assert_eq!(s.entry(&key, T0).await.unwrap(), None);
        assert_eq!(
            s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
            Claim::Send
        );
        let in_flight = Entry::InFlight {
            owner: a,
            since: T0,
            lease_until: T0 + 10_000,
            provider: None,
        };
        assert_eq!(
            s.entry(&key, T0 + 1).await.unwrap(),
            Some(in_flight.clone())
        );
        // A live lease: anyone else (the owner too) waits.
        assert_eq!(
            s.claim(&key, b, T0 + 1, LEASE, KEEP).await.unwrap(),
            Claim::Busy
        );
        assert_eq!(
            s.claim(&key, a, T0 + 9_999, LEASE, KEEP).await.unwrap(),
            Claim::Busy
        );
        // Someone else's release, uncertainty or renewal changes nothing (but
        // an acceptance is recorded whoever reports it: the message was sent).
        let accepted = Settle::Accepted {
            sid: Some("SM123".into()),
        };
        for other in [
            Settle::Release,
            Settle::Uncertain,
            Settle::Renew {
                lease_until: T0 + 60_000,
                provider: "twilio".into(),
            },
        ] {
            assert!(!s.settle(&key, b, other, T0 + 2, KEEP).await.unwrap());
        }
        assert_eq!(s.entry(&key, T0 + 2).await.unwrap(), Some(in_flight));
        // The owner's does.
        s.settle(&key, a, accepted, T0 + 3, KEEP).await.unwrap();
        let sid = Some("SM123".to_owned());
        assert_eq!(
            s.entry(&key, T0 + 4).await.unwrap(),
            Some(Entry::Accepted { sid: sid.clone() })
        );
        assert_eq!(
            s.claim(&key, b, T0 + 5, LEASE, KEEP).await.unwrap(),
            Claim::Accepted { sid: sid.clone() }
        );
        // Settling again after it was accepted does nothing.
        s.settle(&key, a, Settle::Release, T0 + 6, KEEP)
            .await
            .unwrap();
        assert_eq!(
            s.entry(&key, T0 + 6).await.unwrap(),
            Some(Entry::Accepted { sid })
        );
        // Remembered for `keep` from the settle, by the caller's clock.
        assert!(s.entry(&key, T0 + 3 + 599_999).await.unwrap().is_some());
        assert_eq!(s.entry(&key, T0 + 3 + 600_000).await.unwrap(), None);
        assert_eq!(
            s.claim(&key, b, T0 + 3 + 600_000, LEASE, KEEP)
                .await
                .unwrap(),
            Claim::Send
        );

        // Accepted without a sid.
        let key = [2u8; 16];
        assert_eq!(
            s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
            Claim::Send
        );
        s.settle(&key, a, Settle::Accepted { sid: None }, T0 + 1, KEEP)
            .await
            .unwrap();
        assert_eq!(
            s.claim(&key, b, T0 + 2, LEASE, KEEP).await.unwrap(),
            Claim::Accepted { sid: None }
        );

        // Release: forgotten, so a retry sends.
        let key = [3u8; 16];
        assert_eq!(
            s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
            Claim::Send
        );
        s.settle(&key, a, Settle::Release, T0 + 1, KEEP)
            .await
            .unwrap();
        assert_eq!(s.entry(&key, T0 + 1).await.unwrap(), None);
        assert_eq!(
            s.claim(&key, b, T0 + 2, LEASE, KEEP).await.unwrap(),
            Claim::Send
        );
    }
);

// A lease that runs out is reconciled by the next claimer, once; the old
// owner's late settlement is ignored.
on_both_stores!(
    async fn an_expired_lease_is_reconciled_once(s, server) {
        let (a, b) = (Owner(1), Owner(2));
        let k = [7u8; 16];
        let t = 1_000_000;
        assert_eq!(s.claim(&k, a, t, LEASE, KEEP).await, Ok(Claim::Send));
        assert_eq!(s.claim(&k, b, t + 1, LEASE, KEEP).await, Ok(Claim::Busy));
        // The lease runs out: the next claimer reconciles, once.
        let later = t + 10_000;
        assert_eq!(
            s.claim(&k, b, later, LEASE, KEEP).await,
            Ok(Claim::Reconcile {
                since: t,
                provider: None
            })
        );
        assert_eq!(s.claim(&k, a, later, LEASE, KEEP).await, Ok(Claim::Busy));
        // The old owner's late settlement is ignored.
        s.settle(&k, a, Settle::Release, later, KEEP).await.unwrap();
        assert!(matches!(
            s.entry(&k, later).await.unwrap(),
            Some(Entry::InFlight { owner, .. }) if owner == b
        ));
        s.settle(&k, b, Settle::Uncertain, later, KEEP)
            .await
            .unwrap();
        assert_eq!(
            s.entry(&k, later).await.unwrap(),
            Some(Entry::Uncertain {
                since: t,
                provider: None
            })
        );
        assert_eq!(
            s.claim(&k, a, later, LEASE, KEEP).await,
            Ok(Claim::Reconcile {
                since: t,
                provider: None
            })
        );
        let sid = "SM0123456789abcdef0123456789abcdef".to_owned();
        s.settle(
            &k,
            a,
            Settle::Accepted {
                sid: Some(sid.clone()),
            },
            later,
            KEEP,
        )
        .await
        .unwrap();
        assert_eq!(
            s.claim(&k, b, later, LEASE, KEEP).await,
            Ok(Claim::Accepted { sid: Some(sid) })
        );
        // Kept for the window, then forgotten.
        let gone = later + KEEP.as_millis() as u64;
        assert_eq!(s.claim(&k, b, gone, LEASE, KEEP).await, Ok(Claim::Send));
        s.settle(&k, b, Settle::Release, gone, KEEP).await.unwrap();
        assert_eq!(s.entry(&k, gone).await.unwrap(), None);
    }
);

// ---------------------------------------------------------------- budget

// `budget.units`: a message takes its channel's units, atomically, and a
// refund gives back as many.
on_both_stores!(
    async fn a_channel_takes_its_units_and_a_refund_gives_them_back(s, server) {
        let day = T0 / 86_400_000;
        let take = |units| BudgetTake {
            day,
            calling_code: 44,
            total_cap: 7,
            country_cap: 0,
            units,
        };
        let first = s.reserve(&[], Some(take(3)), T0).await.unwrap().unwrap();
        s.reserve(&[], Some(take(3)), T0).await.unwrap().unwrap();
        assert_eq!(
            s.reserve(&[], Some(take(3)), T0).await.unwrap(),
            Err(Refusal::Budget {
                scope: BudgetScope::Total
            })
        );
        // Each reservation carries the day's counters after its take: the
        // gauge and the warnings read them without a second store call.
        assert_eq!(
            first.used,
            Some(BudgetUsed {
                total: 3,
                country: 3
            })
        );
        let last = s.reserve(&[], Some(take(1)), T0).await.unwrap().unwrap();
        assert_eq!(
            last.used,
            Some(BudgetUsed {
                total: 7,
                country: 7
            })
        );
        assert_eq!(s.reserve(&[], None, T0).await.unwrap().unwrap().used, None);
        assert_eq!(
            s.budget_used(day, 44).await.unwrap(),
            BudgetUsed {
                total: 7,
                country: 7
            }
        );
        s.refund(&first, T0).await.unwrap();
        assert_eq!(s.budget_used(day, 44).await.unwrap().total, 4);
        let again = s.reserve(&[], Some(take(3)), T0).await.unwrap().unwrap();
        assert_eq!(again.used.map(|u| u.total), Some(7));
    }
);

on_both_stores!(
    async fn the_budget_caps_the_day_and_the_country_and_rolls_over(s, server) {
        let day = T0 / 86_400_000;
        let take = |day, calling_code| BudgetTake {
            day,
            calling_code,
            total_cap: 5,
            country_cap: 3,
            units: 1,
        };
        for _ in 0..3 {
            s.reserve(&[], Some(take(day, 1)), T0)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            s.reserve(&[], Some(take(day, 1)), T0).await.unwrap(),
            Err(Refusal::Budget {
                scope: BudgetScope::Country
            })
        );
        for _ in 0..2 {
            s.reserve(&[], Some(take(day, 44)), T0)
                .await
                .unwrap()
                .unwrap();
        }
        // The total is used up: that comes first, for every country.
        for cc in [1, 44, 49] {
            assert_eq!(
                s.reserve(&[], Some(take(day, cc)), T0).await.unwrap(),
                Err(Refusal::Budget {
                    scope: BudgetScope::Total
                })
            );
        }
        assert_eq!(
            s.budget_used(day, 1).await.unwrap(),
            BudgetUsed {
                total: 5,
                country: 3
            }
        );
        assert_eq!(s.budget_used(day, 44).await.unwrap().country, 2);
        assert_eq!(s.budget_used(day, 49).await.unwrap().country, 0);
        // The next UTC day starts from zero.
        let tomorrow = (day + 1) * 86_400_000;
        s.reserve(&[], Some(take(day + 1, 1)), tomorrow)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            s.budget_used(day + 1, 1).await.unwrap(),
            BudgetUsed {
                total: 1,
                country: 1
            }
        );
        // Redis's counters expire after the end of their day, with a margin
        // (the memory store keeps one day and starts the next from zero).
        if let Some(server) = server {
            let mut conn = raw(server).await;
            let pttl: i64 = ::redis::cmd("PTTL")
                .arg(format!("kpc:b:{day}:t"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let to_midnight = (day + 1) * 86_400_000 - T0;
            assert!(
                pttl > to_midnight as i64 && pttl <= (to_midnight + 3_600_000) as i64,
                "{pttl}"
            );
        }
        // No cap at all: counted, never refused.
        let free = BudgetTake {
            day: day + 2,
            calling_code: 1,
            total_cap: 0,
            country_cap: 0,
            units: 1,
        };
        for _ in 0..10 {
            s.reserve(&[], Some(free), T0).await.unwrap().unwrap();
        }
        assert_eq!(s.budget_used(day + 2, 1).await.unwrap().total, 10);
    }
);

// ------------------------------ leases, verify codes, idempotency, relay marks

on_both_stores!(
    async fn a_renewed_lease_keeps_others_out_and_only_the_owner_renews(s, server) {
            let (a, b) = (Owner(1), Owner(2));
            let k = [9u8; 16];
            let t = 1_000_000;
            assert_eq!(s.claim(&k, a, t, LEASE, KEEP).await, Ok(Claim::Send));
            // Just before the provider call, at t + 9 s: the lease now runs to
            // t + 19 s.
            let renew = |until| Settle::Renew {
                lease_until: until,
                provider: "p1".into(),
            };
            assert_eq!(s.settle(&k, b, renew(t + 60_000), t, KEEP).await, Ok(false));
            assert_eq!(
                s.settle(&k, a, renew(t + 19_000), t + 9_000, KEEP).await,
                Ok(true)
            );
            assert_eq!(
                s.claim(&k, b, t + 12_000, LEASE, KEEP).await,
                Ok(Claim::Busy)
            );
            assert_eq!(
                s.claim(&k, b, t + 19_000, LEASE, KEEP).await,
                Ok(Claim::Reconcile {
                    since: t,
                    provider: Some("p1".into())
                })
            );
            // The first owner's late acceptance is recorded all the same.
            let sid = Some("SM1".to_owned());
            s.settle(
                &k,
                a,
                Settle::Accepted { sid: sid.clone() },
                t + 20_000,
                KEEP,
            )
            .await
            .unwrap();
            assert_eq!(
                s.claim(&k, b, t + 20_001, LEASE, KEEP).await,
                Ok(Claim::Accepted { sid })
            );
    }
);

on_both_stores!(
    async fn pending_codes_resend_expire_count_and_approve_once(s, server) {
            let t = T0;
            let key = [3u8; 16];
            let code = PendingCode {
                hash: [1; 32],
                seed: [2; 16],
                expires_at: t + 600_000,
            };
            let other = PendingCode {
                hash: [9; 32],
                ..code
            };
            assert_eq!(
                s.verify_pending(&key, &code, t).await,
                Ok(Pending { code, sends: 1 })
            );
            assert_eq!(
                s.verify_pending(&key, &other, t + 1).await,
                Ok(Pending { code, sends: 2 })
            );
            // Not checkable before a send of it was accepted.
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t + 1).await,
                Ok(CodeCheck::NoPendingCode)
            );
            assert_eq!(s.verify_sent(&key, &[9; 32], t + 1).await, Ok(false));
            assert_eq!(s.verify_sent(&key, &[1; 32], t + 1).await, Ok(true));
            assert_eq!(
                s.verify_check(&key, &[9; 32], 2, t + 2).await,
                Ok(CodeCheck::Mismatch { attempts_left: 1 })
            );
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t + 3).await,
                Ok(CodeCheck::Approved)
            );
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t + 4).await,
                Ok(CodeCheck::NoPendingCode)
            );
            // An approved code is never made checkable again.
            assert_eq!(s.verify_sent(&key, &[1; 32], t + 4).await, Ok(false));
            // The last wrong attempt drops it; expiry ends it.
            s.verify_pending(&key, &code, t).await.unwrap();
            s.verify_sent(&key, &[1; 32], t).await.unwrap();
            s.verify_check(&key, &[9; 32], 2, t).await.unwrap();
            assert_eq!(
                s.verify_check(&key, &[9; 32], 2, t).await,
                Ok(CodeCheck::TooManyAttempts)
            );
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t).await,
                Ok(CodeCheck::NoPendingCode)
            );
            s.verify_pending(&key, &code, t).await.unwrap();
            s.verify_sent(&key, &[1; 32], t).await.unwrap();
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t + 600_000).await,
                Ok(CodeCheck::NoPendingCode)
            );
    }
);

on_both_stores!(
    async fn a_refused_first_send_leaves_nothing_and_a_resend_is_kept(s, server) {
            let t = T0;
            let key = [4u8; 16];
            let code = PendingCode {
                hash: [1; 32],
                seed: [2; 16],
                expires_at: t + 600_000,
            };
            let other = PendingCode {
                hash: [9; 32],
                ..code
            };
            // Two requests at once send the one unsent code; one is refused,
            // the other accepted: the code is checkable.
            s.verify_pending(&key, &code, t).await.unwrap();
            s.verify_pending(&key, &other, t).await.unwrap();
            s.verify_unsent(&key, &[1; 32], t).await.unwrap();
            assert_eq!(s.verify_sent(&key, &[1; 32], t).await, Ok(true));
            // A refused resend of a sent code keeps it.
            s.verify_pending(&key, &other, t).await.unwrap();
            s.verify_unsent(&key, &[1; 32], t).await.unwrap();
            assert_eq!(
                s.verify_check(&key, &[1; 32], 2, t).await,
                Ok(CodeCheck::Approved)
            );
            // A refused first send leaves nothing: the next request is fresh.
            s.verify_pending(&key, &code, t).await.unwrap();
            s.verify_unsent(&key, &[1; 32], t).await.unwrap();
            assert_eq!(
                s.verify_pending(&key, &other, t).await,
                Ok(Pending {
                    code: other,
                    sends: 1
                })
            );
    }
);

on_both_stores!(
    async fn idempotency_keys_hold_in_progress_then_the_answer(s, server) {
            let t = T0;
            let (key, fp) = ([5u8; 16], [6u8; 32]);
            let begin = |now| s.verify_idempotency_begin(&key, &fp, now, now + 1000);
            assert_eq!(begin(t).await, Ok(Idempotency::New));
            assert_eq!(
                begin(t + 1).await,
                Ok(Idempotency::InProgress { fingerprint: fp })
            );
            // Forgotten after a refusal: the next one runs again.
            s.verify_idempotency_finish(&key, &fp, None, t + 2, t + 2)
                .await
                .unwrap();
            assert_eq!(begin(t + 3).await, Ok(Idempotency::New));
            s.verify_idempotency_finish(&key, &fp, Some("a"), t + 4, t + 10_000)
                .await
                .unwrap();
            let done = Idempotency::Done {
                fingerprint: fp,
                answer: "a".into(),
            };
            assert_eq!(begin(t + 9_999).await, Ok(done));
            assert_eq!(begin(t + 10_000).await, Ok(Idempotency::New));
    }
);

on_both_stores!(
    async fn relay_marks_once_and_counts_to_the_limit(s, server) {
            let t = 1_000_000;
            let k = [3u8; 16];
            assert_eq!(s.relay_first_seen(&k, t, KEEP).await, Ok(true));
            assert_eq!(s.relay_first_seen(&k, t + 1, KEEP).await, Ok(false));
            // Forgotten after `keep`.
            assert_eq!(s.relay_first_seen(&k, t + 600_000, KEEP).await, Ok(true));
            let c = [4u8; 16];
            assert_eq!(s.relay_take(&c, 2, t, t + 10).await, Ok(true));
            assert_eq!(s.relay_take(&c, 2, t, t + 10).await, Ok(true));
            assert_eq!(s.relay_take(&c, 2, t + 1, t + 10).await, Ok(false));
            // The window ended: a new count.
            assert_eq!(s.relay_take(&c, 2, t + 10, t + 20).await, Ok(true));
    }
);

on_both_stores!(
    async fn uncertain_and_expired_leases_are_reconciled_keeping_since(s, server) {
            let (a, b, c) = (Owner(0xa), Owner(u128::MAX), Owner(0xc));

            // Uncertain: the next claimer reconciles, with the first attempt's since.
            let key = [4u8; 16];
            assert_eq!(
                s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
                Claim::Send
            );
            s.settle(&key, a, Settle::Uncertain, T0 + 500, KEEP)
                .await
                .unwrap();
            assert_eq!(
                s.entry(&key, T0 + 600).await.unwrap(),
                Some(Entry::Uncertain {
                    since: T0,
                    provider: None
                })
            );
            assert_eq!(
                s.claim(&key, b, T0 + 1_000, LEASE, KEEP).await.unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: None
                }
            );
            assert_eq!(
                s.entry(&key, T0 + 1_001).await.unwrap(),
                Some(Entry::InFlight {
                    owner: b,
                    since: T0,
                    lease_until: T0 + 11_000,
                    provider: None
                })
            );
            assert_eq!(
                s.claim(&key, c, T0 + 1_002, LEASE, KEEP).await.unwrap(),
                Claim::Busy
            );
            // The first owner lost it: its settle is ignored.
            s.settle(&key, a, Settle::Release, T0 + 1_003, KEEP)
                .await
                .unwrap();
            assert!(matches!(
                s.entry(&key, T0 + 1_003).await.unwrap(),
                Some(Entry::InFlight { owner, .. }) if owner == b
            ));

            // An owner that died: its lease runs out. `entry` reports Uncertain
            // without changing anything; a claim takes over.
            let key = [5u8; 16];
            assert_eq!(
                s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
                Claim::Send
            );
            assert_eq!(
                s.entry(&key, T0 + 10_000).await.unwrap(),
                Some(Entry::Uncertain {
                    since: T0,
                    provider: None
                })
            );
            assert!(matches!(
                s.entry(&key, T0 + 9_999).await.unwrap(),
                Some(Entry::InFlight { owner, .. }) if owner == a
            ));
            assert_eq!(
                s.claim(&key, c, T0 + 10_000, LEASE, KEEP).await.unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: None
                }
            );
            s.settle(
                &key,
                c,
                Settle::Accepted {
                    sid: Some("CA9".into()),
                },
                T0 + 10_500,
                KEEP,
            )
            .await
            .unwrap();
            assert_eq!(
                s.claim(&key, a, T0 + 10_600, LEASE, KEEP).await.unwrap(),
                Claim::Accepted {
                    sid: Some("CA9".into())
                }
            );
            // Uncertain keeps `since` through a second takeover too.
            let key = [6u8; 16];
            s.claim(&key, a, T0, LEASE, KEEP).await.unwrap();
            assert_eq!(
                s.claim(&key, b, T0 + 20_000, LEASE, KEEP).await.unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: None
                }
            );
            s.settle(&key, b, Settle::Uncertain, T0 + 21_000, KEEP)
                .await
                .unwrap();
            assert_eq!(
                s.claim(&key, c, T0 + 22_000, LEASE, KEEP).await.unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: None
                }
            );
    }
);

// The provider a renewal names is what a later attempt reconciles with:
// through an uncertain outcome, and through a takeover whose owner died
// before it renewed.
on_both_stores!(
    async fn the_provider_that_may_have_it_survives_uncertainty_and_takeovers(s, server) {
            let (a, b, c) = (Owner(0xa), Owner(0xb), Owner(0xc));
            let key = [9u8; 16];
            assert_eq!(
                s.claim(&key, a, T0, LEASE, KEEP).await.unwrap(),
                Claim::Send
            );
            let renew = |provider: &str| Settle::Renew {
                lease_until: T0 + 10_000,
                provider: provider.into(),
            };
            assert!(s
                .settle(&key, a, renew("twilio"), T0 + 1, KEEP)
                .await
                .unwrap());
            // Failed over: the second renewal names the second provider, and the
            // channel it was asked on, as the ledger writes them (the store
            // keeps the text as it is: `delivery::ledger::Tried::record`).
            let tried = "VOICE-signalwire".to_owned();
            assert!(s
                .settle(&key, a, renew(&tried), T0 + 2, KEEP)
                .await
                .unwrap());
            s.settle(&key, a, Settle::Uncertain, T0 + 3, KEEP)
                .await
                .unwrap();
            let named = Some(tried.clone());
            assert_eq!(
                s.entry(&key, T0 + 4).await.unwrap(),
                Some(Entry::Uncertain {
                    since: T0,
                    provider: named.clone()
                })
            );
            assert_eq!(
                s.claim(&key, b, T0 + 5, LEASE, KEEP).await.unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: named.clone()
                }
            );
            // b dies before renewing: c still learns whom to ask.
            assert_eq!(
                s.claim(&key, c, T0 + 5 + 10_000, LEASE, KEEP)
                    .await
                    .unwrap(),
                Claim::Reconcile {
                    since: T0,
                    provider: named
                }
            );
    }
);

on_both_stores!(
    async fn unreachable_recipients_are_remembered_for_their_ttl(s, server) {
        let (r1, r2) = ([8u8; 16], [9u8; 16]);
        let ttl = Duration::from_secs(60);
        assert_eq!(s.unreachable(&r1, T0).await.unwrap(), None);
        s.mark_unreachable(&r1, Some(21211), T0, ttl).await.unwrap();
        s.mark_unreachable(&r2, None, T0, ttl).await.unwrap();
        assert_eq!(
            s.unreachable(&r1, T0 + 59_999).await.unwrap(),
            Some(Some(21211))
        );
        assert_eq!(s.unreachable(&r2, T0 + 1).await.unwrap(), Some(None));
        assert_eq!(s.unreachable(&r1, T0 + 60_000).await.unwrap(), None);
        // Marking again replaces the code and the time.
        s.mark_unreachable(&r1, Some(21614), T0 + 60_000, ttl)
            .await
            .unwrap();
        assert_eq!(
            s.unreachable(&r1, T0 + 60_001).await.unwrap(),
            Some(Some(21614))
        );
        if let Some(server) = server {
            // Redis forgets it too (by its own clock, a margin later).
            let mut conn = raw(server).await;
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg("kpc:u:*")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(keys.len(), 2);
            for k in keys {
                let pttl: i64 = ::redis::cmd("PTTL")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let margin = crate::store::redis::GC_MARGIN_MS as i64;
                assert!(pttl > 60_000 && pttl <= 60_000 + margin, "{pttl}");
            }
        }
    }
);

on_both_stores!(
    async fn pending_codes_expire_and_the_last_wrong_attempt_drops_them(s, server) {
        use crate::store::{CodeCheck, PendingCode};
        let key = [10u8; 16];
        let code = PendingCode {
            hash: [0x11; 32],
            seed: [0x22; 16],
            expires_at: T0 + 600_000,
        };
        s.verify_pending(&key, &code, T0).await.unwrap();
        assert!(s.verify_sent(&key, &[0x11; 32], T0).await.unwrap());
        // At its expiry it is gone, whatever Redis still holds.
        assert_eq!(
            s.verify_check(&key, &[0x11; 32], 3, T0 + 600_000)
                .await
                .unwrap(),
            CodeCheck::NoPendingCode
        );
        // And a request then stores a new one.
        let fresh = PendingCode {
            expires_at: T0 + 1_200_000,
            ..code
        };
        let p = s.verify_pending(&key, &fresh, T0 + 600_000).await.unwrap();
        assert_eq!((p.code, p.sends), (fresh, 1));
        assert!(s
            .verify_sent(&key, &[0x11; 32], T0 + 600_000)
            .await
            .unwrap());
        let wrong = [0x12; 32];
        for left in [2, 1] {
            assert_eq!(
                s.verify_check(&key, &wrong, 3, T0 + 600_001).await.unwrap(),
                CodeCheck::Mismatch {
                    attempts_left: left
                }
            );
        }
        assert_eq!(
            s.verify_check(&key, &wrong, 3, T0 + 600_002).await.unwrap(),
            CodeCheck::TooManyAttempts
        );
        assert_eq!(
            s.verify_check(&key, &[0x11; 32], 3, T0 + 600_003)
                .await
                .unwrap(),
            CodeCheck::NoPendingCode
        );
    }
);
