//! The per-period aggregates an ingest adds to a rollup row. Every rollup keeps what each
//! aggregation needs (sum, count, max, latest, distinct count), so the catalog's choice of
//! aggregation is applied when usage is read, and the stored rows never depend on it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::{NewEvent, StoreError};

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
    pub fn add_event(&mut self, e: &NewEvent) -> Result<(), StoreError> {
        self.add(&e.metric, e.value, e.timestamp)
    }

    /// Adds one event of `metric` with `value` at `at`.
    pub fn add(
        &mut self,
        metric: &str,
        value: Decimal,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Exactly or not at all: Decimal's `+` rounds a sum beyond 28 digits.
        self.sum = tally_core::decimal::add(self.sum, value).ok_or_else(|| {
            StoreError::Invalid(format!("usage of {metric} is too large to sum exactly"))
        })?;
        self.count += 1;
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        // Ties go to the later ingested event.
        if self.latest.is_none_or(|(t, _)| at >= t) {
            self.latest = Some((at, value));
        }
        Ok(())
    }

    /// Adds `other` (the newer delta) to `self` (the stored row).
    pub fn merge(&mut self, other: &RollupDelta) -> Result<(), StoreError> {
        self.sum = tally_core::decimal::add(self.sum, other.sum)
            .ok_or_else(|| StoreError::Invalid("usage is too large to sum exactly".into()))?;
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
