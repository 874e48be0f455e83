//! Lookup answers kept per number and package in the store
//! (`store::records`), under a keyed hash of the number (never the number
//! itself), so that every replica sees them and Kratos's retries of a
//! message cost one lookup. The line type changes rarely (a port): 30
//! days; a SIM swap and the pumping score are news: 1 hour. The store
//! bounds them (memory: its entry cap; Redis: their expiry).

use super::client::{Field, LookupAnswer};
use crate::store::{Keys, RecordKey, Store, UnixMs};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const LINE_TYPE_KEEP_MS: u64 = 30 * DAY_MS;
const NEWS_KEEP_MS: u64 = 60 * 60 * 1000;

fn key(keys: &Keys, e164: &str, field: Field) -> RecordKey {
    keys.record_key("lookup", &[e164.as_bytes(), field.name().as_bytes()])
}

fn keep_ms(field: Field) -> u64 {
    match field {
        Field::LineType => LINE_TYPE_KEEP_MS,
        Field::SimSwap | Field::PumpingRisk => NEWS_KEEP_MS,
    }
}

/// Fill `answer` from the cache for each of `fields`; the fields still to
/// ask Twilio for. A store that does not answer is a miss: a lookup costs
/// money, not correctness.
pub(super) async fn read(
    store: &Store,
    keys: &Keys,
    e164: &str,
    fields: &[Field],
    now: UnixMs,
    answer: &mut LookupAnswer,
) -> Vec<Field> {
    let cached: Vec<RecordKey> = fields.iter().map(|&f| key(keys, e164, f)).collect();
    // One store call for every field; a store that does not answer: all miss.
    let found = store
        .lookup_get(&cached, now)
        .await
        .unwrap_or_else(|_| vec![None; fields.len()]);
    let mut missing = Vec::new();
    for (&field, found) in fields.iter().zip(found) {
        let Some(found) = found else {
            missing.push(field);
            continue;
        };
        match field {
            Field::LineType => answer.line_type = (!found.is_empty()).then_some(found),
            Field::SimSwap => answer.sim_swapped = parse_bool(&found),
            Field::PumpingRisk => answer.pumping_score = found.parse().ok(),
        }
    }
    missing
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// Keep what Twilio said for each of `fields` (also "no data", written as
/// an empty answer, so that it is not asked again and billed again).
pub(super) async fn write(
    store: &Store,
    keys: &Keys,
    e164: &str,
    fields: &[Field],
    now: UnixMs,
    answer: &LookupAnswer,
) {
    let mut entries = Vec::with_capacity(fields.len());
    for &field in fields {
        let value = match field {
            Field::LineType => answer.line_type.clone().unwrap_or_default(),
            Field::SimSwap => match answer.sim_swapped {
                Some(true) => "1".to_owned(),
                Some(false) => "0".to_owned(),
                None => String::new(),
            },
            Field::PumpingRisk => answer
                .pumping_score
                .map(|s| s.to_string())
                .unwrap_or_default(),
        };
        entries.push((key(keys, e164, field), value, now + keep_ms(field)));
    }
    let _ = store.lookup_put(&entries, now).await;
}
