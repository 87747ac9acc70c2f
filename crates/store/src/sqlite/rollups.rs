//! The current value of every rollup row the writer has touched, written to `usage_rollups`
//! about once a second rather than at every commit.
//!
//! Writing each changed rollup row at every group commit costs a B-tree update per row, about a
//! third of the writer's time under steady ingest over many customers. Instead the writer keeps
//! the current rows in memory and writes the changed ones (with a watermark: the last event their
//! usage includes) when a second has passed, when many are waiting, before a job that reads the
//! table (a period close), when a group stored distinct values of a `unique_count` metric (those
//! cannot be counted again from the events), and at shutdown. The events table is the log: after
//! a crash the usage of every event after the watermark is added again ([`replay`]).
//!
//! Readers of the same process take the committed rows not yet written from here (shared behind a
//! mutex) before they read the table, and keep for each row whichever has more events.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, OptionalExtension};

use super::events::{dec, RollupKey};
use crate::rollup::RollupDelta;
use crate::time::{from_ms, to_ms};
use crate::{Result, UsageRollup};

type Fast = foldhash::fast::RandomState;

/// A [`RollupKey`] by reference: looks rows up without allocating (hashes like the owned key).
#[derive(Hash)]
struct KeyRef<'a>(&'a str, i64, &'a str, i64);

impl hashbrown::Equivalent<RollupKey> for KeyRef<'_> {
    fn equivalent(&self, key: &RollupKey) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2 && self.3 == key.3
    }
}

/// Rows remembered beyond the unwritten ones; past it the written ones are dropped.
const MAX_ROWS: usize = 200_000;

/// Unwritten rows that make the writer write them at the end of the group, whatever the time.
pub(crate) const MAX_DIRTY: usize = 50_000;

struct Row {
    key: RollupKey,
    /// The value including the open transaction.
    value: RollupDelta,
    /// The value as of the last commit, when `usage_rollups` does not hold it.
    committed: Option<RollupDelta>,
    /// `value` is not what `usage_rollups` holds.
    dirty: bool,
    /// Changed by the open transaction.
    changed: bool,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Rollups {
    index: hashbrown::HashMap<RollupKey, usize, Fast>,
    by_customer: HashMap<String, Vec<usize>, Fast>,
    rows: Vec<Row>,
    dirty: Vec<usize>,
    changed: Vec<usize>,
    /// Rows written to `usage_rollups` by the open transaction.
    written: Vec<usize>,
}

impl Rollups {
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// The slot of a key, read from the table when the writer does not hold it yet.
    fn slot(&mut self, conn: &Connection, c: &str, b: i64, m: &str, u: i64) -> Result<usize> {
        if let Some(&i) = self.index.get(&KeyRef(c, b, m, u)) {
            return Ok(i);
        }
        let key = (c.to_owned(), b, m.to_owned(), u);
        let value = read_rollup(conn, &key)?;
        Ok(self.push(key, value))
    }

    fn push(&mut self, key: RollupKey, value: RollupDelta) -> usize {
        let i = self.rows.len();
        match self.by_customer.get_mut(key.0.as_str()) {
            Some(slots) => slots.push(i),
            None => {
                self.by_customer.insert(key.0.clone(), vec![i]);
            }
        }
        self.index.insert(key.clone(), i);
        self.rows.push(Row {
            key,
            value,
            committed: None,
            dirty: false,
            changed: false,
        });
        i
    }

    /// Adds a job's deltas, each `(customer, billed period, metric, usage period, delta)`: all of
    /// them or (on overflow or a failed read) none.
    pub fn add<'a>(
        &mut self,
        conn: &Connection,
        deltas: impl IntoIterator<Item = (&'a str, i64, &'a str, i64, RollupDelta)>,
    ) -> Result<()> {
        let deltas = deltas.into_iter();
        let mut staged = Vec::with_capacity(deltas.size_hint().0);
        for (c, b, m, u, delta) in deltas {
            let i = self.slot(conn, c, b, m, u)?;
            let mut value = self.rows[i].value.clone();
            value.merge(&delta, m)?;
            staged.push((i, value));
        }
        for (i, value) in staged {
            let row = &mut self.rows[i];
            row.value = value;
            if !row.dirty {
                row.dirty = true;
                self.dirty.push(i);
            }
            if !row.changed {
                row.changed = true;
                self.changed.push(i);
            }
        }
        Ok(())
    }

    /// Writes every unwritten row; then [`Rollups::mark_written`] (the writer holds only a read
    /// lock meanwhile, so readers are not held up by the database writes).
    pub fn write_dirty(&self, conn: &Connection) -> Result<()> {
        for &i in &self.dirty {
            let row = &self.rows[i];
            write_rollup(conn, &row.key, &row.value)?;
        }
        Ok(())
    }

    /// Records that the rows [`Rollups::write_dirty`] wrote are in `usage_rollups`, and moves the
    /// watermark to the last stored event, so that the table is exact within the open transaction.
    pub fn mark_written(&mut self, conn: &Connection) -> Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        for i in std::mem::take(&mut self.dirty) {
            self.rows[i].dirty = false;
            self.written.push(i);
        }
        set_watermark(conn)
    }

    /// Ends the open transaction's changes: a commit makes them what readers see; a failure
    /// returns every row to its state at the last commit. Calls `touched` with the `(customer,
    /// billed period start)` of every row the transaction changed.
    pub fn end_group(&mut self, committed: bool, mut touched: impl FnMut(&str, i64)) {
        let changed = std::mem::take(&mut self.changed);
        let written = std::mem::take(&mut self.written);
        for &i in &changed {
            let row = &mut self.rows[i];
            row.changed = false;
            touched(&row.key.0, row.key.1);
        }
        if !committed {
            self.roll_back();
            return;
        }
        for i in written.into_iter().chain(changed) {
            let row = &mut self.rows[i];
            row.committed = row.dirty.then(|| row.value.clone());
        }
        if self.dirty.is_empty() && self.rows.len() > MAX_ROWS {
            *self = Rollups::default();
        }
    }

    /// Keeps the rows whose last committed value is not in `usage_rollups` (at that value, to be
    /// written) and forgets the others (the table holds their last committed value).
    fn roll_back(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        *self = Rollups::default();
        for row in rows {
            if let Some(c) = row.committed {
                let i = self.push(row.key, c.clone());
                self.rows[i].committed = Some(c);
                self.rows[i].dirty = true;
                self.dirty.push(i);
            }
        }
    }

    /// The customer's committed rows of one billed period that `usage_rollups` does not hold yet.
    pub fn unwritten(&self, customer: &str, billed: i64) -> Vec<UsageRollup> {
        let Some(slots) = self.by_customer.get(customer) else {
            return Vec::new();
        };
        slots
            .iter()
            .filter_map(|&i| {
                let row = &self.rows[i];
                match &row.committed {
                    Some(c) if row.key.1 == billed => Some(to_usage(&row.key, c)),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The rollup row of `key` as stored, or an empty one.
fn read_rollup(conn: &Connection, key: &RollupKey) -> Result<RollupDelta> {
    let (customer, billed_ps, metric, usage_ps) = key;
    let stored = conn
        .prepare_cached(
            "SELECT sum, count, max, latest, latest_at, unique_count FROM usage_rollups
             WHERE customer_id = ?1 AND billed_period_start = ?2 AND metric = ?3
               AND usage_period_start = ?4",
        )?
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
    Ok(match stored {
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
    })
}

/// Stores the current value of one rollup row.
fn write_rollup(conn: &Connection, key: &RollupKey, row: &RollupDelta) -> Result<()> {
    let (customer, billed_ps, metric, usage_ps) = key;
    conn.prepare_cached(
        "INSERT INTO usage_rollups (customer_id, billed_period_start, metric,
            usage_period_start, sum, count, max, latest, latest_at, unique_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (customer_id, billed_period_start, metric, usage_period_start) DO UPDATE SET
            sum = excluded.sum, count = excluded.count, max = excluded.max,
            latest = excluded.latest, latest_at = excluded.latest_at,
            unique_count = excluded.unique_count",
    )?
    .execute(params![
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
    Ok(())
}

/// Records that the stored rollups include every stored event.
fn set_watermark(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE rollup_watermark SET through_seq = COALESCE((SELECT MAX(seq) FROM events), 0)",
    )?
    .execute([])?;
    Ok(())
}

/// Adds the usage of every event after the watermark to the stored rollups and moves the
/// watermark (run at start and after a failed commit, inside a transaction). Distinct-value
/// counts need none: a group that adds one writes its rollups before it commits.
pub(crate) fn replay(conn: &Connection) -> Result<()> {
    let through: i64 = conn.query_row(
        "SELECT through_seq FROM rollup_watermark WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    let mut deltas: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    let mut events = 0u64;
    {
        let mut stmt = conn.prepare(
            "SELECT customer_id, billed_period_start, metric, usage_period_start, value, ts
             FROM events WHERE seq > ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([through])?;
        while let Some(r) = rows.next()? {
            let key: RollupKey = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let value = dec(&r.get::<_, String>(4)?)?;
            let at = from_ms(r.get(5)?);
            let metric = key.2.clone();
            deltas.entry(key).or_default().add(&metric, value, at)?;
            events += 1;
        }
    }
    if events > 0 {
        tracing::info!(
            events,
            rows = deltas.len(),
            "usage of events stored after the last rollup write added to the rollups"
        );
    }
    for (key, delta) in deltas {
        let mut row = read_rollup(conn, &key)?;
        row.merge(&delta, &key.2)?;
        write_rollup(conn, &key, &row)?;
    }
    set_watermark(conn)
}

/// A rollup row as readers see it.
fn to_usage(key: &RollupKey, row: &RollupDelta) -> UsageRollup {
    UsageRollup {
        metric: key.2.clone(),
        usage_period_start: from_ms(key.3),
        billed_period_start: from_ms(key.1),
        sum: row.sum,
        count: row.count,
        max: row.max,
        latest: row.latest.map(|(_, v)| v),
        latest_at: row.latest.map(|(at, _)| at),
        unique_count: row.unique_count,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use rust_decimal::Decimal;

    use super::*;

    fn delta(n: i64) -> RollupDelta {
        let mut d = RollupDelta::default();
        let at = Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap();
        for _ in 0..n {
            d.add("calls", Decimal::ONE, at).unwrap();
        }
        d
    }

    fn add(customer: &str, n: i64) -> (&str, i64, &'static str, i64, RollupDelta) {
        (customer, 0, "calls", 0, delta(n))
    }

    fn key(customer: &str) -> RollupKey {
        (customer.into(), 0, "calls".into(), 0)
    }

    fn write(r: &mut Rollups, conn: &Connection) {
        r.write_dirty(conn).unwrap();
        r.mark_written(conn).unwrap();
    }

    fn counts(r: &Rollups, customer: &str) -> Vec<i64> {
        r.unwritten(customer, 0).iter().map(|u| u.count).collect()
    }

    #[test]
    fn readers_see_committed_rows_and_a_failed_commit_undoes_the_rest() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate::run(&mut conn).unwrap();
        let mut r = Rollups::default();
        let mut touched = Vec::new();

        r.add(&conn, vec![add("a", 2), add("b", 1)]).unwrap();
        assert!(counts(&r, "a").is_empty(), "nothing committed yet");
        r.end_group(true, |c, b| touched.push((c.to_owned(), b)));
        assert_eq!(touched.len(), 2);
        assert_eq!((counts(&r, "a"), counts(&r, "b")), (vec![2], vec![1]));

        // Written, then more usage for a: b is in the table, a is not.
        write(&mut r, &conn);
        r.add(&conn, vec![add("a", 3)]).unwrap();
        r.end_group(true, |_, _| {});
        assert_eq!((counts(&r, "a"), counts(&r, "b")), (vec![5], vec![]));
        assert_eq!(read_rollup(&conn, &key("b")).unwrap().count, 1);

        // A group that fails: its additions vanish, the last committed values stay.
        r.add(&conn, vec![add("a", 10), add("b", 10)]).unwrap();
        r.end_group(false, |_, _| {});
        assert_eq!((counts(&r, "a"), counts(&r, "b")), (vec![5], vec![]));
        assert_eq!(r.dirty_len(), 1);
        r.add(&conn, vec![add("b", 1)]).unwrap();
        r.end_group(true, |_, _| {});
        assert_eq!(counts(&r, "b"), vec![2], "b read again from the table");
        write(&mut r, &conn);
        r.end_group(true, |_, _| {});
        assert_eq!(read_rollup(&conn, &key("a")).unwrap().count, 5);
        assert_eq!(read_rollup(&conn, &key("b")).unwrap().count, 2);
        assert!(counts(&r, "a").is_empty());
    }
}
