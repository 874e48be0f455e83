//! One busy hour of a large service through the delivery pipeline (limits,
//! fraud guard, ledger, memory store, a mock Twilio), on the service's
//! injected clock, beside `fraud_simulation.rs`'s day: the figures of
//! bench/fraud.md's "busy hour" table. Kratos's messages are built as
//! Kratos v26.2.0 sends them (through the kit's template) and handed to the
//! courier as the HTTP layer does; confirmations as its hooks report them.
//!
//! - 1,000,000 users in one country (+44 74…): 1,000 blocks of 1,000
//!   numbers hold 150 users each, the rest are spread over the range.
//! - The 14 days before: each day's busiest hour had 42,500 codes
//!   confirmed (the fraud guard's history, and the numbers it trusts).
//! - The hour: 50,000 code requests — login 50%, verification (no request
//!   headers, as Kratos sends it) 25%, registration (new numbers) 15%,
//!   recovery 10%; a fifth of the flows resend once a minute or three
//!   later, a quarter of those twice — 20% of users behind carrier-grade
//!   NAT addresses shared by 500 users each, 85% confirming their last
//!   code 15 to 90 seconds after it.
//! - The pumping campaigns of `fraud_simulation.rs`, for the hour: one
//!   request every 10 s over 10,000 numbers, one every 5 s over 100,000.
//! - An attacker spending 100 requests an hour on each of: one dense block,
//!   one identity (a real user's), the shared unknown-address bucket
//!   (verification flows of their own accounts), one country.
//!
//! Each configuration runs with and without the attacker: the attacker's
//! denial is the legitimate refusals the attacker added. Run the full size
//! (release, about a minute) with
//! `cargo test --release --test fraud_busy_hour -- --ignored --nocapture`;
//! the normal suite runs a 1/100 version.

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use helpers::{base_env, twilio_accepting, FIXED_RATES};
use kratos_phone_courier::clock::Clock;
use kratos_phone_courier::config::{Config, Sources};
use kratos_phone_courier::delivery::channel::Endpoint;
use kratos_phone_courier::delivery::courier::Courier;
use kratos_phone_courier::delivery::error::DeliveryError;
use kratos_phone_courier::delivery::fraud::FraudGuard;
use kratos_phone_courier::delivery::limits::Prefixes;
use kratos_phone_courier::delivery::message::MessageParser;
use kratos_phone_courier::phone::{LineType, NumberingPlan, Recipient};
use kratos_phone_courier::provider::set::ProviderSet;
use kratos_phone_courier::store::memory::MemoryStore;
use kratos_phone_courier::store::{Keys, Store};
use kratos_phone_courier::telemetry::metrics::Metrics;
use serde_json::{json, Value};

/// The hour starts 20 days into 2025-11 (a whole number of days, noon).
const START_MS: u64 = (20_414 + 20) * 86_400_000 + 12 * 3_600_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy)]
struct Scale {
    users: u64,
    requests: u64,
    dense_blocks: u64,
    per_dense_block: u64,
    history_per_day: u64,
    attack_per_hour: u64,
}

const FULL: Scale = Scale {
    users: 1_000_000,
    requests: 50_000,
    dense_blocks: 1_000,
    per_dense_block: 150,
    history_per_day: 42_500,
    attack_per_hour: 100,
};

/// 1/100 of the users, requests and history; the blocks as dense (so the
/// attacked block is 100 times the share of the traffic it is at full
/// size: only the denial outside it is held to the target).
const SMALL: Scale = Scale {
    users: 10_000,
    requests: 500,
    dense_blocks: 10,
    per_dense_block: 150,
    history_per_day: 425,
    attack_per_hour: 100,
};

/// splitmix64: the same stream on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One plan for the whole run: `Recipient::parse` makes a new one (and
/// compiles the country's patterns) on every call.
static PLAN: std::sync::LazyLock<NumberingPlan> = std::sync::LazyLock::new(NumberingPlan::new);

fn parse(n: &str) -> Recipient {
    Recipient::parse_with(&PLAN, n).unwrap()
}

fn valid(n: &str) -> bool {
    Recipient::parse_with(&PLAN, n)
        .is_ok_and(|r| r.e164() == n && r.line_type() == LineType::Mobile)
}

/// User `u`'s number: in a dense block (+44 741 bbbb sss) for the first
/// `dense_blocks × per_dense_block`, else anywhere in +44 742…749 (new
/// people registering are users from `users` on).
fn number(s: &Scale, u: u64) -> String {
    if u < s.dense_blocks * s.per_dense_block {
        let (block, seat) = (u / s.per_dense_block, u % s.per_dense_block);
        return format!("+44741{:04}{:03}", block, seat * 6);
    }
    let mut h = mix(u ^ 0x5EED);
    loop {
        let n = format!("+4474{}", 20_000_000 + h % 80_000_000);
        if valid(&n) {
            return n;
        }
        h = mix(h);
    }
}

fn identity(u: u64) -> String {
    let h = mix(u ^ 0x1D);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 52) & 0xfff,
        mix(h) & 0xffff_ffff_ffff
    )
}

/// User `u`'s address: a fifth share carrier-grade NAT addresses, 500
/// users each; the rest have their own.
fn address(u: u64) -> String {
    if u % 5 == 0 {
        let pool = (u / 5) % 400;
        format!("100.64.{}.{}", pool / 250, pool % 250)
    } else {
        format!("10.{}.{}.{}", (u >> 16) & 255, (u >> 8) & 255, u & 255)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Login,
    Registration,
    Verification,
    Recovery,
}

struct Flow {
    kind: Kind,
    user: u64,
    number: String,
    confirms: bool,
    sent: u32,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Send {
        flow: usize,
    },
    Confirm {
        flow: usize,
    },
    /// Campaign 0 (every 10 s, 10,000 numbers) or 1 (every 5 s, 100,000).
    Pump {
        campaign: usize,
        i: u64,
    },
    /// 0: one block, 1: one identity, 2: the unknown bucket, 3: one country.
    Attack {
        target: usize,
        i: u64,
    },
}

fn hour(s: &Scale, with_attacker: bool) -> (Vec<(u64, Event)>, Vec<Flow>) {
    let mut rng = Rng(2026);
    let mut events = Vec::new();
    let mut flows = Vec::new();
    let mut requests = 0;
    let mut new_people = s.users;
    while requests < s.requests {
        let kind = match rng.below(100) {
            0..=49 => Kind::Login,
            50..=74 => Kind::Verification,
            75..=89 => Kind::Registration,
            _ => Kind::Recovery,
        };
        let user = if kind == Kind::Registration {
            new_people += 1;
            new_people
        } else {
            rng.below(s.users)
        };
        let codes = if rng.chance(20) {
            if rng.chance(25) {
                3
            } else {
                2
            }
        } else {
            1
        };
        let mut t = rng.below(HOUR_MS);
        let flow = flows.len();
        for n in 0..codes {
            if n > 0 {
                t += 60_000 + rng.below(120_000);
            }
            events.push((t, Event::Send { flow }));
            requests += 1;
        }
        let confirms = rng.chance(85);
        if confirms {
            events.push((t + 15_000 + rng.below(75_000), Event::Confirm { flow }));
        }
        flows.push(Flow {
            kind,
            user,
            number: number(s, user),
            confirms,
            sent: 0,
        });
    }
    for (campaign, every_s) in [(0, 10), (1, 5)] {
        let mut t = rng.below(every_s * 1000);
        let mut i = 0;
        while t < HOUR_MS {
            events.push((t, Event::Pump { campaign, i }));
            i += 1;
            t += every_s * 1000;
        }
    }
    if with_attacker {
        for target in 0..4 {
            for i in 0..s.attack_per_hour {
                let t = i * HOUR_MS / s.attack_per_hour + rng.below(1000);
                events.push((t, Event::Attack { target, i }));
            }
        }
    }
    events.sort_by_key(|(t, _)| *t);
    (events, flows)
}

/// A message as Kratos v26.2.0 sends it through the kit's template.
fn message(kind: Kind, to: &str, code: u64, user: Option<u64>, addr: Option<&str>) -> Value {
    let code = format!("{:06}", code % 1_000_000);
    let (template, field) = match kind {
        Kind::Login => ("login_code_valid", "login_code"),
        Kind::Registration => ("registration_code_valid", "registration_code"),
        Kind::Verification => ("verification_code_valid", "verification_code"),
        Kind::Recovery => ("recovery_code_valid", "verification_code"),
    };
    let mut data = json!({ field: code, "expires_in_minutes": 15 });
    if let (Some(u), true) = (user, kind != Kind::Registration) {
        data["identity"] = json!({"id": identity(u)});
    }
    // Verification codes never carry the request's headers.
    let headers = match (kind, addr) {
        (Kind::Verification, _) | (_, None) => json!({}),
        (_, Some(a)) => json!({"X-Forwarded-For": [a]}),
    };
    json!({
        "recipient": to,
        "body": format!("Your code is: {code}"),
        "template_type": template,
        "template_data": data,
        "request_headers": headers,
    })
}

#[derive(Debug, Default)]
struct Figures {
    legit_requests: u32,
    legit_refused: u32,
    legit_refused_by: BTreeMap<String, u32>,
    /// Refusals of users outside the block the attacker fills, other than
    /// the one whose identity and number the attacker asks codes for.
    legit_refused_elsewhere: u32,
    campaign_requests: u32,
    campaign_sent: u32,
    attack_requests: u32,
    attack_sent: u32,
    provider_requests: usize,
}

fn reason(e: &DeliveryError) -> String {
    match e {
        DeliveryError::RateLimited { limit, .. } => format!("rate_limited:{limit}"),
        DeliveryError::FraudSuspected { .. } => "fraud_suspected".into(),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

async fn play(s: &Scale, with_attacker: bool) -> Figures {
    let twilio = twilio_accepting().await;
    let mut env = base_env(&twilio.uri());
    // The shipped defaults, not the tests' fixed rates.
    for (k, _) in FIXED_RATES {
        env.remove(k);
    }
    for (k, v) in [
        ("PHONE_COURIER__LOG__LEVEL", "warn"),
        ("PHONE_COURIER__FRAUD__ACTION", "deny"),
        // Sized for the service (README: "size it to your real rate").
        ("PHONE_COURIER__LIMITS__SMS__COUNTRY__PER_HOUR", "200000"),
        ("PHONE_COURIER__LIMITS__SMS__COUNTRY__BURST", "20000"),
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__PER_HOUR", "200000"),
        ("PHONE_COURIER__LIMITS__SMS__GLOBAL__BURST", "20000"),
        ("PHONE_COURIER__BUDGET__DAILY_TOTAL", "0"),
        ("PHONE_COURIER__BUDGET__DAILY_PER_COUNTRY", "0"),
        ("PHONE_COURIER__DEDUP__MAX_ENTRIES", "1000000"),
    ] {
        env.insert(k.into(), v.into());
    }
    // Sizing runs: BUSY_HOUR_ENV="PHONE_COURIER__LIMITS__SMS__IP__BURST=20,…"
    // changes the configuration (bench/fraud.md lists the runs).
    if let Ok(extra) = std::env::var("BUSY_HOUR_ENV") {
        for pair in extra.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("BUSY_HOUR_ENV: K=V,K=V");
            env.insert(k.trim().into(), v.trim().into());
        }
    }
    let config = Config::load(&Sources { file: None, env }).unwrap();
    let clock = Clock::starting_at(Duration::from_millis(START_MS));
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::Memory(MemoryStore::new(
        clock.clone(),
        config.dedup.max_entries,
    )));
    let keys = Keys::from_secret(b"busy hour");
    let providers = ProviderSet::new(&config, &clock, &metrics).unwrap();
    let courier = Courier::new(
        &config,
        providers,
        None,
        store.clone(),
        keys.clone(),
        clock.clone(),
        metrics.clone(),
    );
    // The 14 days before: each day's busiest hour, at this time of day.
    let history = FraudGuard::new(
        config.fraud.clone(),
        Prefixes::new(config.limits.prefix_hidden_digits),
        keys,
        Arc::new(Metrics::new()),
    );
    let started = std::time::Instant::now();
    let mut rng = Rng(14);
    for day in (1..=14).rev() {
        let from = START_MS - day * DAY_MS;
        for j in 0..s.history_per_day {
            let r = parse(&number(s, rng.below(s.users)));
            let t = from + j * HOUR_MS / s.history_per_day;
            history.sent(&store, &history.watch(&r), t).await;
            history.confirmed(&store, &r, t + 500).await.unwrap();
        }
    }

    eprintln!(
        "history of 14 days: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let parser = MessageParser::new();
    let (events, mut flows) = hour(s, with_attacker);
    eprintln!(
        "the hour's {} events drawn: {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let total = events.len();
    let victim = flows.iter().position(|f| f.kind == Kind::Login).unwrap();
    let victim_user = flows[victim].user;
    let mut f = Figures::default();
    let mut code = 0u64;
    for (done, (t, event)) in events.into_iter().enumerate() {
        if done % 10_000 == 0 {
            eprintln!(
                "{done} of {total}: {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let target = Duration::from_millis(START_MS + t);
        if let Some(ahead) = target.checked_sub(clock.unix()) {
            clock.advance(ahead);
        }
        code += 1;
        let (m, who) = match event {
            Event::Send { flow } => {
                let fl = &flows[flow];
                let addr = address(fl.user);
                (
                    message(fl.kind, &fl.number, code, Some(fl.user), Some(&addr)),
                    Some(flow),
                )
            }
            Event::Confirm { flow } => {
                let fl = &flows[flow];
                if fl.confirms && fl.sent > 0 {
                    assert!(courier.confirmed(&fl.number).await.unwrap());
                }
                continue;
            }
            Event::Pump { campaign, i } => {
                let to = match campaign {
                    0 => format!("+447911{:06}", 120_000 + i % 10_000),
                    _ => format!("+447912{:06}", 100_000 + (i * 7) % 100_000),
                };
                let addr = format!(
                    "{}.{}.{}.{}",
                    11 + i % 200,
                    (i / 200) % 250,
                    i % 250,
                    1 + campaign
                );
                f.campaign_requests += 1;
                let m = message(Kind::Registration, &to, code, None, Some(&addr));
                let m = parser.parse_value(m).unwrap();
                if courier.deliver(Endpoint::Sms, &m).await.is_ok() {
                    f.campaign_sent += 1;
                }
                continue;
            }
            Event::Attack { target, i } => {
                let addr = format!("198.18.{}.{}", target, i % 250);
                let m = match target {
                    // Registration codes to numbers of the densest block.
                    0 => message(
                        Kind::Registration,
                        &format!("+44741{:04}{:03}", 0, (i * 37 + 1) % 1000),
                        code,
                        None,
                        Some(&addr),
                    ),
                    // Login codes to a real user's number, for their identity.
                    1 => message(
                        Kind::Login,
                        &flows[victim].number,
                        code,
                        Some(flows[victim].user),
                        Some(&addr),
                    ),
                    // Verification flows of the attacker's ten accounts.
                    2 => message(
                        Kind::Verification,
                        &number(s, 3 * s.users + i),
                        code,
                        Some(3 * s.users + i % 10),
                        None,
                    ),
                    // Registration codes all over the country.
                    _ => message(
                        Kind::Registration,
                        &number(s, 4 * s.users + i),
                        code,
                        None,
                        Some(&addr),
                    ),
                };
                f.attack_requests += 1;
                let m = parser.parse_value(m).unwrap();
                if courier.deliver(Endpoint::Sms, &m).await.is_ok() {
                    f.attack_sent += 1;
                }
                continue;
            }
        };
        let m = parser.parse_value(m).unwrap();
        f.legit_requests += 1;
        match courier.deliver(Endpoint::Sms, &m).await {
            Ok(d) => {
                assert!(!d.duplicate);
                if let Some(flow) = who {
                    flows[flow].sent += 1;
                }
            }
            Err(e) => {
                f.legit_refused += 1;
                let (kind, user) =
                    who.map_or((None, 0), |fl| (Some(flows[fl].kind), flows[fl].user));
                let place = if user < s.dense_blocks * s.per_dense_block {
                    "dense"
                } else {
                    "sparse"
                };
                if user >= s.per_dense_block && user != victim_user {
                    f.legit_refused_elsewhere += 1;
                }
                *f.legit_refused_by
                    .entry(format!("{} {kind:?} {place}", reason(&e)))
                    .or_default() += 1;
            }
        }
    }
    f.provider_requests = twilio.received_requests().await.unwrap_or_default().len();
    assert_eq!(
        f.provider_requests as u32,
        f.legit_requests - f.legit_refused + f.campaign_sent + f.attack_sent,
        "every code sent is one provider request, and nothing else reached it"
    );
    f
}

/// Both runs of one scale: what the attacker added, and the row.
async fn measure(s: &Scale) -> (Figures, Figures) {
    let quiet = play(s, false).await;
    let attacked = play(s, true).await;
    let denial = attacked.legit_refused.saturating_sub(quiet.legit_refused);
    println!(
        "| {} users, {} requests | {:.4}% ({} of {}) {:?} | {} of {} | {:.4}% ({} of {}) | {} of {} |",
        s.users,
        s.requests,
        f64::from(quiet.legit_refused) * 100.0 / f64::from(quiet.legit_requests),
        quiet.legit_refused,
        quiet.legit_requests,
        quiet.legit_refused_by,
        attacked.campaign_sent,
        attacked.campaign_requests,
        f64::from(denial) * 100.0 / f64::from(attacked.legit_requests),
        denial,
        attacked.legit_requests,
        attacked.attack_sent,
        attacked.attack_requests,
    );
    println!("attacked run refused by: {:?}", attacked.legit_refused_by);
    (quiet, attacked)
}

fn assert_targets(quiet: &Figures, attacked: &Figures) {
    // Legitimate refusals at most 0.01% (1 in 10,000), campaign codes at
    // most 50, the attacker's denial at most 0.01%.
    assert!(
        quiet.legit_refused * 10_000 <= quiet.legit_requests,
        "{quiet:?}"
    );
    assert!(attacked.campaign_sent <= 50, "{attacked:?}");
    let denial = attacked.legit_refused.saturating_sub(quiet.legit_refused);
    assert!(
        denial * 10_000 <= attacked.legit_requests.max(10_000),
        "{attacked:?}"
    );
}

#[tokio::test]
async fn a_busy_hour_scaled_down() {
    let (quiet, attacked) = measure(&SMALL).await;
    // At this size the attacked block is 1.5% of the traffic: only what
    // the attacker denies outside it is held to the target (none).
    assert!(quiet.legit_refused <= 1, "{quiet:?}");
    assert!(attacked.campaign_sent <= 50, "{attacked:?}");
    assert!(
        attacked.legit_refused_elsewhere <= quiet.legit_refused_elsewhere,
        "{attacked:?}"
    );
}

#[tokio::test]
#[ignore]
async fn a_busy_hour_of_a_million_users() {
    println!("| population | legitimate refused (no attacker) | campaign codes sent | attacker's denial | attacker's codes sent |");
    let (quiet, attacked) = measure(&FULL).await;
    assert_targets(&quiet, &attacked);
}
