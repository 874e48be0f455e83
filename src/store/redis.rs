//! The Redis backend: state shared by every replica.
//!
//! (Being built: every operation answers "unavailable" until then.)

use std::time::Duration;

use super::{
    BudgetTake, BudgetUsed, Cell, Claim, Entry, MessageKey, Owner, RecipientKey, Refusal,
    Reservation, Settle, StoreError, UnixMs,
};

pub struct RedisStore {}

fn unavailable<T>() -> Result<T, StoreError> {
    Err(StoreError("the redis backend is not built yet".into()))
}

impl RedisStore {
    pub async fn claim(
        &self,
        _key: &MessageKey,
        _owner: Owner,
        _now: UnixMs,
        _lease: Duration,
        _keep: Duration,
    ) -> Result<Claim, StoreError> {
        unavailable()
    }

    pub async fn settle(
        &self,
        _key: &MessageKey,
        _owner: Owner,
        _settle: Settle,
        _now: UnixMs,
        _keep: Duration,
    ) -> Result<(), StoreError> {
        unavailable()
    }

    pub async fn entry(
        &self,
        _key: &MessageKey,
        _now: UnixMs,
    ) -> Result<Option<Entry>, StoreError> {
        unavailable()
    }

    pub async fn unreachable(
        &self,
        _key: &RecipientKey,
        _now: UnixMs,
    ) -> Result<Option<Option<u32>>, StoreError> {
        unavailable()
    }

    pub async fn mark_unreachable(
        &self,
        _key: &RecipientKey,
        _code: Option<u32>,
        _now: UnixMs,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        unavailable()
    }

    pub async fn reserve(
        &self,
        _cells: &[Cell],
        _budget: Option<BudgetTake>,
        _now: UnixMs,
    ) -> Result<Result<Reservation, Refusal>, StoreError> {
        unavailable()
    }

    pub async fn refund(&self, _reservation: &Reservation, _now: UnixMs) -> Result<(), StoreError> {
        unavailable()
    }

    pub async fn budget_used(
        &self,
        _day: u64,
        _calling_code: u16,
    ) -> Result<BudgetUsed, StoreError> {
        unavailable()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        unavailable()
    }
}
