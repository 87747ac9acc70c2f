//! Event ingest (append + rollups in the writer's transaction) and usage reads.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;

use super::writer::Writer;
use crate::rollup::RollupDelta;
use crate::time::{from_ms, to_ms};
use crate::{IngestOutcome, NewEvent, Result, StoreError, UsageRollup};

pub(crate) fn ingest(w: &mut Writer, events: Vec<NewEvent>) -> Result<IngestOutcome> {
    if !w.can_ingest {
        return Err(StoreError::Invalid(
            "this store was opened for administration and cannot ingest events".into(),
        ));
    }
    let total = events.len();
    let mut added = Vec::with_capacity(events.len());
    let mut fresh = Vec::with_capacity(events.len());
    for e in events {
        let k = w.dedup.key(&e.customer_id, &e.event_id);
        if w.dedup.insert(k) {
            added.push(k);
            fresh.push(e);
        }
    }
    let outcome = IngestOutcome {
        accepted: fresh.len() as u64,
        duplicates: (total - fresh.len()) as u64,
    };
    // Merged into the group's pending rollups only if every step succeeded, so a failed job
    // leaves no trace (its rows are rolled back with its savepoint).
    let merged = apply(&w.conn, &fresh).and_then(|deltas| {
        deltas
            .into_iter()
            .map(|(key, delta)| {
                let mut row = w.pending_rollups.get(&key).cloned().unwrap_or_default();
                row.merge(&delta)?;
                Ok((key, row))
            })
            .collect::<Result<Vec<_>>>()
    });
    match merged {
        Ok(rows) => {
            w.group_added.extend(added);
            w.pending_rollups.extend(rows);
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

/// (customer, billed period start, metric, usage period start).
pub(crate) type RollupKey = (String, i64, String, i64);

/// Appends the events and returns what they add to each rollup.
fn apply(conn: &Connection, events: &[NewEvent]) -> Result<BTreeMap<RollupKey, RollupDelta>> {
    let mut deltas: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    if events.is_empty() {
        return Ok(deltas);
    }
    let now = to_ms(Utc::now());
    let mut billed_through: HashMap<&str, Option<i64>> = HashMap::new();
    let mut bt_stmt = conn.prepare_cached("SELECT billed_through FROM customers WHERE id = ?1")?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
            usage_period_start, billed_period_start, ingested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut unique = conn.prepare_cached(
        "INSERT OR IGNORE INTO usage_unique_values (customer_id, metric, usage_period_start, value)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for e in events {
        let bt = match billed_through.get(e.customer_id.as_str()) {
            Some(bt) => *bt,
            None => {
                let bt: Option<i64> = bt_stmt
                    .query_row([&e.customer_id], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| {
                        StoreError::Invalid(format!("no customer {:?}", e.customer_id))
                    })?;
                billed_through.insert(&e.customer_id, bt);
                bt
            }
        };
        let usage_ps = to_ms(e.period_start);
        // Usage of an invoiced period is billed in the first period not yet invoiced.
        let billed_ps = match bt {
            Some(b) if usage_ps < b => b,
            _ => usage_ps,
        };
        let props = e.properties.as_ref().map(|p| p.to_string());
        insert.execute(params![
            e.customer_id,
            e.event_id,
            e.metric,
            e.value.to_string(),
            to_ms(e.timestamp),
            props,
            usage_ps,
            billed_ps,
            now
        ])?;
        let d = deltas
            .entry((e.customer_id.clone(), billed_ps, e.metric.clone(), usage_ps))
            .or_default();
        d.add_event(e)?;
        if let Some(u) = &e.unique_key {
            if unique.execute(params![e.customer_id, e.metric, usage_ps, u])? == 1 {
                d.unique_count += 1;
            }
        }
    }
    Ok(deltas)
}

/// Adds the pending rollup deltas of the group to the stored rollups (one read and one write per
/// rollup row touched by the whole group).
pub(crate) fn flush_rollups(
    conn: &Connection,
    pending: &mut BTreeMap<RollupKey, RollupDelta>,
) -> Result<()> {
    let deltas = std::mem::take(pending);
    let mut read = conn.prepare_cached(
        "SELECT sum, count, max, latest, latest_at, unique_count FROM usage_rollups
         WHERE customer_id = ?1 AND billed_period_start = ?2 AND metric = ?3 AND usage_period_start = ?4",
    )?;
    let mut write = conn.prepare_cached(
        "INSERT OR REPLACE INTO usage_rollups (customer_id, billed_period_start, metric,
            usage_period_start, sum, count, max, latest, latest_at, unique_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for ((customer, billed_ps, metric, usage_ps), delta) in deltas {
        let stored = read
            .query_row(params![customer, billed_ps, metric, usage_ps], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        let mut row = match stored {
            Some((sum, count, max, latest, latest_at, uniq)) => RollupDelta {
                sum: dec(&sum)?,
                count,
                max: max.as_deref().map(dec).transpose()?,
                latest: match (latest_at, latest) {
                    (Some(at), Some(v)) => Some((from_ms(at), dec(&v)?)),
                    _ => None,
                },
                unique_count: uniq,
            },
            None => RollupDelta::default(),
        };
        row.merge(&delta)?;
        write.execute(params![
            customer,
            billed_ps,
            metric,
            usage_ps,
            row.sum.to_string(),
            row.count,
            row.max.map(|m| m.to_string()),
            row.latest.map(|(_, v)| v.to_string()),
            row.latest.map(|(at, _)| to_ms(at)),
            row.unique_count
        ])?;
    }
    Ok(())
}

fn dec(s: &str) -> Result<Decimal> {
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
