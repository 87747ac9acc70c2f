//! The per-period aggregates an ingest adds to a rollup row. Every rollup keeps what each
//! aggregation needs (sum, count, max, latest, distinct count), so the catalog's choice of
//! aggregation is applied when usage is read, and the stored rows never depend on it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use tally_core::decimal::{self, USAGE_TOTAL};

use crate::StoreError;

/// `a + b` as a period's usage total: exact and within [`USAGE_TOTAL`], or refused (Decimal's `+`
/// would round a sum beyond 28 digits).
pub(crate) fn total(a: Decimal, b: Decimal, metric: &str) -> Result<Decimal, StoreError> {
    decimal::add(a, b)
        .and_then(|s| decimal::check(s, &USAGE_TOTAL).ok())
        .ok_or_else(|| out_of_range(metric))
}

/// The error of a usage total beyond [`USAGE_TOTAL`].
pub(crate) fn out_of_range(metric: &str) -> StoreError {
    StoreError::OutOfRange(format!(
        "the usage of {metric} in one period would reach 10^19 or need more than 28 digits; \
         nothing was stored"
    ))
}

/// What a set of events adds to one rollup row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RollupDelta {
    pub sum: Decimal,
    pub count: i64,
    pub max: Option<Decimal>,
    pub latest: Option<(DateTime<Utc>, Decimal)>,
    pub unique_count: i64,
}

impl RollupDelta {
    /// Adds one event of `metric` with `value` at `at`.
    pub fn add(
        &mut self,
        metric: &str,
        value: Decimal,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.sum = total(self.sum, value, metric)?;
        self.count += 1;
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        // Ties go to the later ingested event.
        if self.latest.is_none_or(|(t, _)| at >= t) {
            self.latest = Some((at, value));
        }
        Ok(())
    }

    /// Adds `other` (the newer delta) to `self` (the stored row) of `metric`.
    pub fn merge(&mut self, other: &RollupDelta, metric: &str) -> Result<(), StoreError> {
        self.sum = total(self.sum, other.sum, metric)?;
        self.count += other.count;
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some((at, v)) = other.latest {
            if self.latest.is_none_or(|(cur, _)| at >= cur) {
                self.latest = Some((at, v));
            }
        }
        self.unique_count += other.unique_count;
        Ok(())
    }
}
