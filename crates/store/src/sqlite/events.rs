//! Event ingest (append + rollups in the writer's transaction) and usage reads.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;

use super::writer::{KeyHasher, Writer};
use crate::rollup::RollupDelta;
use crate::time::{from_ms, to_ms};
use crate::{IngestOutcome, NewEvent, Result, StoreError, UsageRollup};

/// An event ready for the writer: everything that needs no database (its dedup key, the text of
/// its value and properties, its times in ms) is computed by the caller, off the writer thread.
pub(crate) struct PreparedEvent {
    key: u128,
    customer_id: String,
    event_id: String,
    metric: String,
    value: Decimal,
    value_text: String,
    timestamp: DateTime<Utc>,
    ts_ms: i64,
    properties: Option<String>,
    usage_ps: i64,
    unique_key: Option<String>,
}

/// `(customer, metric, usage period start)`: a rollup row before its billed period is known.
type UsageKey = (String, String, i64);

/// A batch prepared by [`prepare`].
pub(crate) struct PreparedBatch {
    events: Vec<PreparedEvent>,
    /// What the whole batch adds to each rollup when none of its events is a duplicate (the
    /// usual case; otherwise the writer sums the new events again).
    deltas: Vec<(UsageKey, RollupDelta)>,
}

/// Hashes, formats and sums a batch (on the caller's thread).
pub(crate) fn prepare(hasher: &KeyHasher, events: Vec<NewEvent>) -> Result<PreparedBatch> {
    let mut sums: HashMap<(&str, &str, i64), RollupDelta> = HashMap::new();
    for e in &events {
        sums.entry((&e.customer_id, &e.metric, to_ms(e.period_start)))
            .or_default()
            .add(&e.metric, e.value, e.timestamp)?;
    }
    let deltas = sums
        .into_iter()
        .map(|((c, m, ps), d)| ((c.to_owned(), m.to_owned(), ps), d))
        .collect();
    let events = events
        .into_iter()
        .map(|e| PreparedEvent {
            key: hasher.key(&e.customer_id, &e.event_id),
            value_text: e.value.to_string(),
            ts_ms: to_ms(e.timestamp),
            properties: e.properties.as_ref().map(|p| p.to_string()),
            usage_ps: to_ms(e.period_start),
            customer_id: e.customer_id,
            event_id: e.event_id,
            metric: e.metric,
            value: e.value,
            timestamp: e.timestamp,
            unique_key: e.unique_key,
        })
        .collect();
    Ok(PreparedBatch { events, deltas })
}

/// Stores a batch inside the writer's transaction: new events are appended, duplicates counted,
/// and what the new events add to each rollup is merged into the group's pending rollups.
pub(crate) fn ingest(w: &mut Writer, batch: PreparedBatch) -> Result<IngestOutcome> {
    if !w.can_ingest {
        return Err(StoreError::Invalid(
            "this store was opened for administration and cannot ingest events".into(),
        ));
    }
    let PreparedBatch { events, deltas } = batch;
    let total = events.len();
    let mut added = Vec::with_capacity(total);
    let mut fresh = Vec::with_capacity(total);
    for e in events {
        if w.dedup.insert(e.key) {
            added.push(e.key);
            fresh.push(e);
        }
    }
    let outcome = IngestOutcome {
        accepted: fresh.len() as u64,
        duplicates: (total - fresh.len()) as u64,
    };
    // Added to the writer's rollups only if every step succeeded, so a failed job leaves no trace
    // (its rows are rolled back with its savepoint).
    let deltas = if fresh.len() == total {
        Ok(deltas)
    } else {
        sum_again(&fresh)
    };
    let merged = deltas
        .and_then(|deltas| apply(w, &fresh, deltas))
        .and_then(|deltas| {
            let mut rollups = w.rollups.lock().unwrap_or_else(|p| p.into_inner());
            rollups.add(&w.conn, deltas)
        });
    match merged {
        Ok(()) => {
            w.group_added.extend(added);
            Ok(outcome)
        }
        Err(e) => {
            for k in added {
                w.dedup.remove(k);
            }
            Err(e)
        }
    }
}

/// Like [`prepare`]'s deltas, over the new events of a batch that held duplicates.
fn sum_again(events: &[PreparedEvent]) -> Result<Vec<(UsageKey, RollupDelta)>> {
    let mut deltas: BTreeMap<UsageKey, RollupDelta> = BTreeMap::new();
    for e in events {
        deltas
            .entry((e.customer_id.clone(), e.metric.clone(), e.usage_ps))
            .or_default()
            .add(&e.metric, e.value, e.timestamp)?;
    }
    Ok(deltas.into_iter().collect())
}

/// (customer, billed period start, metric, usage period start).
pub(crate) type RollupKey = (String, i64, String, i64);

/// The customer's `billed_through` (ms), from the writer's cache or the database.
fn billed_through(w: &mut Writer, customer_id: &str) -> Result<Option<i64>> {
    if let Some(bt) = w.billed_through.get(customer_id) {
        return Ok(*bt);
    }
    let bt: Option<i64> = w
        .conn
        .prepare_cached("SELECT billed_through FROM customers WHERE id = ?1")?
        .query_row([customer_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Invalid(format!("no customer {customer_id:?}")))?;
    w.billed_through.insert(customer_id.to_owned(), bt);
    Ok(bt)
}

/// Usage of an invoiced period is billed in the first period not yet invoiced.
fn billed_period(billed_through: Option<i64>, usage_ps: i64) -> i64 {
    match billed_through {
        Some(b) if usage_ps < b => b,
        _ => usage_ps,
    }
}

/// Appends the new events and returns what they add to each rollup, by billed period.
fn apply(
    w: &mut Writer,
    events: &[PreparedEvent],
    deltas: Vec<(UsageKey, RollupDelta)>,
) -> Result<Vec<(RollupKey, RollupDelta)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = to_ms(Utc::now());
    let mut out = Vec::with_capacity(deltas.len());
    for ((customer, metric, usage_ps), delta) in deltas {
        let billed_ps = billed_period(billed_through(w, &customer)?, usage_ps);
        out.push(((customer, billed_ps, metric, usage_ps), delta));
    }
    let mut insert = w.conn.prepare_cached(
        "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
            usage_period_start, billed_period_start, ingested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for e in events {
        let billed_ps = billed_period(
            w.billed_through.get(&e.customer_id).copied().flatten(),
            e.usage_ps,
        );
        insert.execute(params![
            e.customer_id,
            e.event_id,
            e.metric,
            e.value_text,
            e.ts_ms,
            e.properties,
            e.usage_ps,
            billed_ps,
            now
        ])?;
    }
    if events.iter().any(|e| e.unique_key.is_some()) {
        // Distinct values cannot be counted again from the events: write the rollups now.
        w.write_rollups_now = true;
        let mut unique = w.conn.prepare_cached(
            "INSERT OR IGNORE INTO usage_unique_values (customer_id, metric, usage_period_start, value)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let index: HashMap<(&str, &str, i64), usize> = out
            .iter()
            .enumerate()
            .map(|(i, ((c, _, m, ps), _))| ((c.as_str(), m.as_str(), *ps), i))
            .collect();
        let mut counted = vec![0i64; out.len()];
        for e in events {
            let Some(u) = &e.unique_key else { continue };
            if unique.execute(params![e.customer_id, e.metric, e.usage_ps, u])? == 1 {
                if let Some(&i) =
                    index.get(&(e.customer_id.as_str(), e.metric.as_str(), e.usage_ps))
                {
                    counted[i] += 1;
                }
            }
        }
        drop(index);
        for (i, n) in counted.into_iter().enumerate() {
            out[i].1.unique_count += n;
        }
    }
    Ok(out)
}

pub(crate) fn dec(s: &str) -> Result<Decimal> {
    Decimal::from_str(s).map_err(|e| StoreError::Database(format!("bad decimal {s:?}: {e}")))
}

pub(crate) fn usage(
    conn: &Connection,
    customer_id: &str,
    billed: DateTime<Utc>,
) -> Result<Vec<UsageRollup>> {
    let mut stmt = conn.prepare_cached(
        "SELECT metric, usage_period_start, sum, count, max, latest, latest_at, unique_count
         FROM usage_rollups WHERE customer_id = ?1 AND billed_period_start = ?2
         ORDER BY metric, usage_period_start",
    )?;
    let mut rows = stmt.query(params![customer_id, to_ms(billed)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let max: Option<String> = r.get(4)?;
        let latest: Option<String> = r.get(5)?;
        let latest_at: Option<i64> = r.get(6)?;
        out.push(UsageRollup {
            metric: r.get(0)?,
            usage_period_start: from_ms(r.get(1)?),
            billed_period_start: billed,
            sum: dec(&r.get::<_, String>(2)?)?,
            count: r.get(3)?,
            max: max.as_deref().map(dec).transpose()?,
            latest: latest.as_deref().map(dec).transpose()?,
            latest_at: latest_at.map(from_ms),
            unique_count: r.get(7)?,
        });
    }
    Ok(out)
}

pub(crate) fn event_ids(conn: &Connection, customer_id: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT event_id FROM events WHERE customer_id = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([customer_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

pub(crate) fn count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    Ok(n as u64)
}
