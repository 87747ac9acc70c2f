//! Event ingest (append + rollups in the writer's transaction) and usage reads.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;

use super::writer::{day_of, KeyHasher, Writer};
use crate::rollup::RollupDelta;
use crate::time::{from_ms, to_ms};
use crate::{IngestOutcome, NewEvent, Result, StoreError, UsageRollup};

/// A byte range of [`PreparedBatch::text`].
#[derive(Clone, Copy)]
struct Span(u32, u32);

/// An event ready for the writer: everything that needs no database (its dedup key, the text of
/// its value and properties, its times in ms) is computed by the caller, off the writer thread.
struct PreparedEvent {
    key: u128,
    customer_id: Span,
    event_id: Span,
    metric: Span,
    value_text: Span,
    value: Decimal,
    timestamp: DateTime<Utc>,
    ts_ms: i64,
    usage_ps: i64,
    properties: Option<String>,
    unique_key: Option<String>,
}

/// What a batch adds to one `(customer, metric, usage period)`.
struct PreparedDelta {
    customer_id: Span,
    metric: Span,
    usage_ps: i64,
    delta: RollupDelta,
}

/// A batch prepared by [`prepare`]: the strings of all its events in one buffer, so that the
/// writer allocates nothing per event. The writer hands it back for the caller to free.
pub(crate) struct PreparedBatch {
    text: String,
    events: Vec<PreparedEvent>,
    /// What the whole batch adds to each rollup when none of its events is a duplicate (the
    /// usual case; otherwise the writer sums the new events again).
    deltas: Vec<PreparedDelta>,
    /// For each event, its entry in `deltas`.
    delta_of: Vec<u32>,
}

impl PreparedBatch {
    fn str(&self, s: Span) -> &str {
        self.text
            .get(s.0 as usize..s.1 as usize)
            .unwrap_or_default()
    }
}

fn push_text(text: &mut String, s: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(s);
    Span(start, text.len() as u32)
}

/// Hashes, formats and sums a batch (on the caller's thread).
pub(crate) fn prepare(hasher: &KeyHasher, events: Vec<NewEvent>) -> Result<PreparedBatch> {
    let mut text = String::with_capacity(
        events
            .iter()
            .map(|e| e.customer_id.len() + e.event_id.len() + e.metric.len() + 8)
            .sum(),
    );
    let mut out = Vec::with_capacity(events.len());
    for e in &events {
        let value_text = e.value.to_string();
        out.push(PreparedEvent {
            key: hasher.key(&e.customer_id, &e.event_id),
            customer_id: push_text(&mut text, &e.customer_id),
            event_id: push_text(&mut text, &e.event_id),
            metric: push_text(&mut text, &e.metric),
            value_text: push_text(&mut text, &value_text),
            value: e.value,
            timestamp: e.timestamp,
            ts_ms: to_ms(e.timestamp),
            usage_ps: to_ms(e.period_start),
            properties: e.properties.as_ref().map(|p| p.to_string()),
            unique_key: e.unique_key.clone(),
        });
    }
    let mut batch = PreparedBatch {
        text,
        events: out,
        deltas: Vec::new(),
        delta_of: Vec::new(),
    };
    (batch.deltas, batch.delta_of) = sum(&batch, |_| true)?;
    Ok(batch)
}

/// What the events of `batch` that `keep` adds to each `(customer, metric, usage period)`, and
/// each event's entry among them (`u32::MAX` for the others).
fn sum(
    batch: &PreparedBatch,
    mut keep: impl FnMut(usize) -> bool,
) -> Result<(Vec<PreparedDelta>, Vec<u32>)> {
    let mut at: HashMap<(&str, &str, i64), usize, foldhash::fast::RandomState> = HashMap::default();
    let mut deltas: Vec<PreparedDelta> = Vec::new();
    let mut delta_of = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        if !keep(i) {
            delta_of.push(u32::MAX);
            continue;
        }
        let metric = batch.str(e.metric);
        let k = (batch.str(e.customer_id), metric, e.usage_ps);
        let d = match at.get(&k) {
            Some(&j) => j,
            None => {
                at.insert(k, deltas.len());
                deltas.push(PreparedDelta {
                    customer_id: e.customer_id,
                    metric: e.metric,
                    usage_ps: e.usage_ps,
                    delta: RollupDelta::default(),
                });
                deltas.len() - 1
            }
        };
        deltas[d].delta.add(metric, e.value, e.timestamp)?;
        delta_of.push(d as u32);
    }
    Ok((deltas, delta_of))
}

/// Stores a batch inside the writer's transaction: new events are appended, duplicates counted,
/// and what the new events add to each rollup is added to the writer's rollups. Returns the
/// batch too, for the caller to free.
pub(crate) fn ingest(
    w: &mut Writer,
    mut batch: PreparedBatch,
) -> Result<(IngestOutcome, PreparedBatch)> {
    if !w.can_ingest {
        return Err(StoreError::Invalid(
            "this store was opened for administration and cannot ingest events".into(),
        ));
    }
    let total = batch.events.len();
    let mut added = Vec::with_capacity(total);
    let mut is_new = Vec::with_capacity(total);
    for e in &batch.events {
        w.dedup.prefetch(e.key);
    }
    for e in &batch.events {
        let new = w.dedup.insert(e.key, day_of(e.ts_ms));
        if new {
            added.push(e.key);
        }
        is_new.push(new);
    }
    // Added to the writer's rollups only if every step succeeded, so a failed job leaves no trace
    // (its rows are rolled back with its savepoint).
    let fresh = added.len();
    let result = apply(w, &mut batch, &mut is_new, fresh < total);
    match result {
        Ok(()) => {
            let accepted = is_new.iter().filter(|n| **n).count();
            w.group_added.extend(added);
            let outcome = IngestOutcome {
                accepted: accepted as u64,
                duplicates: (total - accepted) as u64,
            };
            Ok((outcome, batch))
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

/// The customer's `billed_through` (ms), from the writer's cache or the database.
fn billed_through(w: &mut Writer, customer_id: &str) -> Result<Option<i64>> {
    billed_through_of(&w.conn, &mut w.billed_through, customer_id)
}

fn billed_through_of(
    conn: &Connection,
    cache: &mut HashMap<String, Option<i64>, foldhash::fast::RandomState>,
    customer_id: &str,
) -> Result<Option<i64>> {
    if let Some(bt) = cache.get(customer_id) {
        return Ok(*bt);
    }
    let bt: Option<i64> = conn
        .prepare_cached("SELECT billed_through FROM customers WHERE id = ?1")?
        .query_row([customer_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Invalid(format!("no customer {customer_id:?}")))?;
    cache.insert(customer_id.to_owned(), bt);
    Ok(bt)
}

/// Usage of an invoiced period is billed in the first period not yet invoiced.
fn billed_period(billed_through: Option<i64>, usage_ps: i64) -> i64 {
    match billed_through {
        Some(b) if usage_ps < b => b,
        _ => usage_ps,
    }
}

/// Appends the new events and adds what they add to each rollup (by billed period) to the
/// writer's rollups. An event the in-memory set did not know but the database's unique key
/// `(customer, event id)` already holds (an id first stored before the deduplication window) is
/// not stored again: it becomes a duplicate in `is_new`. `resum`: some events of the batch are
/// already known as duplicates, so its sums must be made again from the new ones.
fn apply(
    w: &mut Writer,
    batch: &mut PreparedBatch,
    is_new: &mut [bool],
    mut resum: bool,
) -> Result<()> {
    if !is_new.iter().any(|n| *n) {
        return Ok(());
    }
    let now = to_ms(Utc::now());
    {
        let mut insert = w.conn.prepare_cached(
            "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
                usage_period_start, billed_period_start, ingested_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (customer_id, event_id) DO NOTHING",
        )?;
        let mut billed: Option<(Span, Option<i64>)> = None;
        for (e, new) in batch.events.iter().zip(is_new.iter_mut()) {
            if !*new {
                continue;
            }
            let customer = batch.str(e.customer_id);
            // Batches usually repeat a customer: its billed_through is looked up once per run.
            let bt = match billed {
                Some((s, bt)) if batch.str(s) == customer => bt,
                _ => {
                    let bt = billed_through_of(&w.conn, &mut w.billed_through, customer)?;
                    billed = Some((e.customer_id, bt));
                    bt
                }
            };
            let n = insert.execute(params![
                customer,
                batch.str(e.event_id),
                batch.str(e.metric),
                batch.str(e.value_text),
                e.ts_ms,
                e.properties,
                e.usage_ps,
                billed_period(bt, e.usage_ps),
                now
            ])?;
            if n == 0 {
                *new = false;
                resum = true;
            }
        }
    }
    if resum {
        let (d, of) = sum(batch, |i| is_new[i])?;
        (batch.deltas, batch.delta_of) = (d, of);
    }
    let batch = &*batch;
    let is_new = &*is_new;
    let mut deltas = Vec::with_capacity(batch.deltas.len());
    for d in &batch.deltas {
        let customer = batch.str(d.customer_id);
        let billed_ps = billed_period(billed_through(w, customer)?, d.usage_ps);
        deltas.push((
            customer,
            billed_ps,
            batch.str(d.metric),
            d.usage_ps,
            &d.delta,
        ));
    }
    // Each new event with the index of its rollup delta.
    let new_events = || {
        batch
            .events
            .iter()
            .zip(&batch.delta_of)
            .zip(is_new)
            .filter(|(_, n)| **n)
            .map(|((e, d), _)| (e, *d as usize))
    };
    let mut counted = vec![0i64; deltas.len()];
    if new_events().any(|(e, _)| e.unique_key.is_some()) {
        // Distinct values cannot be counted again from the events: write the rollups now.
        w.write_rollups_now = true;
        let mut unique = w.conn.prepare_cached(
            "INSERT OR IGNORE INTO usage_unique_values (customer_id, metric, usage_period_start, value)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (e, d) in new_events() {
            let Some(u) = &e.unique_key else { continue };
            let (customer, metric) = (batch.str(e.customer_id), batch.str(e.metric));
            if unique.execute(params![customer, metric, e.usage_ps, u])? == 1 {
                counted[d] += 1;
            }
        }
    }
    let mut rollups = w.rollups_mut();
    rollups.add(
        &w.conn,
        deltas.into_iter().zip(counted).map(|((c, b, m, u, d), n)| {
            let mut d = d.clone();
            d.unique_count += n;
            (c, b, m, u, d)
        }),
    )
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

/// Like [`usage`], for a process that does not ingest (an operator command next to a server): the
/// stored rollups plus the usage of the events after their watermark, which the ingesting
/// process may not have written to the rollups yet (or, after a crash, will add when it starts).
/// One read transaction, so both come from the same snapshot.
pub(crate) fn usage_with_tail(
    conn: &Connection,
    customer_id: &str,
    billed: DateTime<Utc>,
) -> Result<Vec<UsageRollup>> {
    let tx = conn.unchecked_transaction()?;
    let mut rows = usage(&tx, customer_id, billed)?;
    let through: i64 = tx.query_row(
        "SELECT through_seq FROM rollup_watermark WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = tx.prepare_cached(
        "SELECT metric, usage_period_start, value, ts FROM events
         WHERE seq > ?1 AND customer_id = ?2 AND billed_period_start = ?3 ORDER BY seq",
    )?;
    let mut tail = stmt.query(params![through, customer_id, to_ms(billed)])?;
    let mut deltas: HashMap<(String, i64), RollupDelta> = HashMap::new();
    while let Some(r) = tail.next()? {
        let metric: String = r.get(0)?;
        let value = dec(&r.get::<_, String>(2)?)?;
        let at = from_ms(r.get(3)?);
        deltas
            .entry((metric.clone(), r.get(1)?))
            .or_default()
            .add(&metric, value, at)?;
    }
    for ((metric, usage_ps), d) in deltas {
        let usage_period_start = from_ms(usage_ps);
        let i = match rows
            .iter()
            .position(|r| r.metric == metric && r.usage_period_start == usage_period_start)
        {
            Some(i) => i,
            None => {
                rows.push(UsageRollup {
                    metric,
                    usage_period_start,
                    billed_period_start: billed,
                    sum: Decimal::ZERO,
                    count: 0,
                    max: None,
                    latest: None,
                    latest_at: None,
                    unique_count: 0,
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[i];
        let mut stored = RollupDelta {
            sum: row.sum,
            count: row.count,
            max: row.max,
            latest: row.latest_at.zip(row.latest),
            unique_count: row.unique_count,
        };
        stored.merge(&d, &row.metric)?;
        row.sum = stored.sum;
        row.count = stored.count;
        row.max = stored.max;
        row.latest_at = stored.latest.map(|(at, _)| at);
        row.latest = stored.latest.map(|(_, v)| v);
    }
    rows.sort_by(|a, b| (&a.metric, a.usage_period_start).cmp(&(&b.metric, b.usage_period_start)));
    Ok(rows)
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
