//! Event ingest (one statement per group of concurrent batches: insert with ON CONFLICT DO NOTHING
//! and rollup upserts) and usage reads.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use serde_json::Value;

use super::{is_retryable, Failure};
use crate::{IngestOutcome, NewEvent, Result, StoreError, UsageRollup};

const ATTEMPTS: usize = 3;

/// One request's batch, deduplicated within itself (first occurrence wins), with its size before.
pub(crate) struct Batch {
    pub(crate) total: u64,
    pub(crate) events: Vec<NewEvent>,
}

impl Batch {
    pub(crate) fn new(events: Vec<NewEvent>) -> Batch {
        let total = events.len() as u64;
        let mut seen = HashSet::with_capacity(events.len());
        let events = events
            .into_iter()
            .filter(|e| seen.insert((e.customer_id.clone(), e.event_id.clone())))
            .collect();
        Batch { total, events }
    }
}

/// Ingests several requests' batches in one statement (one transaction): the rows of all of them,
/// each tagged with its request's index, in key order (lock order, so concurrent statements cannot
/// deadlock). A key that two of the batches share is sent once, for the first of them, so the
/// later one counts it as a duplicate, as it would if the two had run one after the other.
/// Returns the events accepted per batch; any failure fails all of them (the caller then runs
/// each batch alone, so one bad batch fails only itself).
pub(crate) async fn ingest_together(pool: &Pool, batches: &[&Batch]) -> Result<Vec<u64>> {
    let mut seen = HashSet::new();
    let mut rows: Vec<(i32, &NewEvent)> = Vec::new();
    for (r, b) in batches.iter().enumerate() {
        let r = i32::try_from(r).map_err(|_| StoreError::Invalid("too many batches".into()))?;
        for e in &b.events {
            if batches.len() == 1 || seen.insert((e.customer_id.as_str(), e.event_id.as_str())) {
                rows.push((r, e));
            }
        }
    }
    rows.sort_by(|a, b| (&a.1.customer_id, &a.1.event_id).cmp(&(&b.1.customer_id, &b.1.event_id)));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_ingest(pool, &rows).await {
            Ok(inserted) => {
                let mut accepted = vec![0u64; batches.len()];
                for r in inserted {
                    if let Some(n) = usize::try_from(r).ok().and_then(|r| accepted.get_mut(r)) {
                        *n += 1;
                    }
                }
                return Ok(accepted);
            }
            Err(Failure::Pg(e)) if attempt < ATTEMPTS && is_retryable(&e) => continue,
            Err(Failure::Pg(e)) => return Err(e.into()),
            Err(Failure::Store(e)) => return Err(e),
        }
    }
}

/// The outcome of one batch from the events it had and those accepted.
pub(crate) fn outcome(batch: &Batch, accepted: u64) -> IngestOutcome {
    IngestOutcome {
        accepted,
        duplicates: batch.total.saturating_sub(accepted),
    }
}

/// A batch in one statement, so one round trip: the batch's customers locked `FOR SHARE` (period
/// close takes them `FOR UPDATE`, so no event slips into a period being invoiced), its events
/// inserted unless their `(customer, id)` exists (a concurrent insert of the same key waits for the
/// other transaction, then counts as a duplicate), the distinct values of `unique_count` metrics,
/// and one rollup upsert per (customer, billed period, metric, usage period) from the inserted
/// events only. Rows are written in key order so concurrent batches cannot deadlock. An unknown
/// customer or a usage total out of range fails the statement (`tally_check_ingest`, migration
/// 0013), so a batch is stored whole or not at all; autocommit returns once it is durable. Each
/// row carries the index of the request it came from (`r`), and the statement answers the `r` of
/// every row it inserted, so requests merged into one statement learn their own counts.
const INGEST: &str = "
WITH x AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::timestamptz[],
        $6::jsonb[], $7::timestamptz[], $8::text[], $10::int4[]) AS x(c, e, m, v, t, p, u, k, r)
),
cust AS (
    SELECT id, billed_through FROM customers WHERE id = ANY($1) ORDER BY id FOR SHARE
),
ins AS (
    INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
        usage_period_start, billed_period_start, ingested_at)
    SELECT x.c, x.e, x.m, x.v, x.t, x.p, x.u,
        CASE WHEN cust.billed_through > x.u THEN cust.billed_through ELSE x.u END, $9
    FROM x JOIN cust ON cust.id = x.c
    ORDER BY x.c, x.e
    ON CONFLICT (customer_id, event_id) DO NOTHING
    RETURNING customer_id, event_id, metric, value, ts, usage_period_start, billed_period_start
),
uniq AS (
    INSERT INTO usage_unique_values (customer_id, metric, usage_period_start, value)
    SELECT DISTINCT ins.customer_id, ins.metric, ins.usage_period_start, x.k
    FROM ins JOIN x ON x.c = ins.customer_id AND x.e = ins.event_id
    WHERE x.k IS NOT NULL
    ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING customer_id, metric, usage_period_start
),
uniq_n AS (
    SELECT customer_id, metric, usage_period_start, count(*) AS n FROM uniq GROUP BY 1, 2, 3
),
delta AS (
    -- Of events at the same instant, the one with the greater id is the latest (as the batch's
    -- key order would apply them one by one).
    SELECT customer_id, billed_period_start, metric, usage_period_start, sum(value) AS sum,
        count(*) AS count, max(value) AS max,
        (array_agg(value ORDER BY ts DESC, event_id DESC))[1] AS latest, max(ts) AS latest_at
    FROM ins GROUP BY 1, 2, 3, 4
),
up AS (
    INSERT INTO usage_rollups (customer_id, billed_period_start, metric, usage_period_start,
        sum, count, max, latest, latest_at, unique_count)
    SELECT d.customer_id, d.billed_period_start, d.metric, d.usage_period_start, d.sum, d.count,
        d.max, d.latest, d.latest_at, COALESCE(u.n, 0)
    FROM delta d LEFT JOIN uniq_n u USING (customer_id, metric, usage_period_start)
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (customer_id, billed_period_start, metric, usage_period_start) DO UPDATE SET
        sum = usage_rollups.sum + EXCLUDED.sum,
        count = usage_rollups.count + EXCLUDED.count,
        max = GREATEST(usage_rollups.max, EXCLUDED.max),
        latest = CASE WHEN usage_rollups.latest_at IS NULL
                        OR EXCLUDED.latest_at >= usage_rollups.latest_at
                      THEN EXCLUDED.latest ELSE usage_rollups.latest END,
        latest_at = GREATEST(usage_rollups.latest_at, EXCLUDED.latest_at),
        unique_count = usage_rollups.unique_count + EXCLUDED.unique_count
    RETURNING metric, sum
)
SELECT ARRAY(SELECT x.r FROM ins JOIN x ON x.c = ins.customer_id AND x.e = ins.event_id),
    tally_check_ingest(
        (SELECT min(x.c) FROM x LEFT JOIN cust ON cust.id = x.c WHERE cust.id IS NULL),
        (SELECT min(metric) FROM up WHERE NOT tally_usage_total_ok(sum)))";

/// The custom SQLSTATEs of `tally_check_ingest`.
const TOO_LARGE: &str = "TY001";
const NO_CUSTOMER: &str = "TY002";

async fn try_ingest(
    pool: &Pool,
    rows: &[(i32, &NewEvent)],
) -> std::result::Result<Vec<i32>, Failure> {
    let client = pool.get().await?;
    let customers: Vec<&str> = rows.iter().map(|(_, e)| e.customer_id.as_str()).collect();
    let event_ids: Vec<&str> = rows.iter().map(|(_, e)| e.event_id.as_str()).collect();
    let metrics: Vec<&str> = rows.iter().map(|(_, e)| e.metric.as_str()).collect();
    let values: Vec<Decimal> = rows.iter().map(|(_, e)| e.value).collect();
    let ts: Vec<DateTime<Utc>> = rows.iter().map(|(_, e)| e.timestamp).collect();
    let props: Vec<Option<&Value>> = rows.iter().map(|(_, e)| e.properties.as_ref()).collect();
    let usage_ps: Vec<DateTime<Utc>> = rows.iter().map(|(_, e)| e.period_start).collect();
    let unique: Vec<Option<&str>> = rows.iter().map(|(_, e)| e.unique_key.as_deref()).collect();
    let request: Vec<i32> = rows.iter().map(|(r, _)| *r).collect();
    let now = Utc::now();
    let stmt = client.prepare_cached(INGEST).await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &customers, &event_ids, &metrics, &values, &ts, &props, &usage_ps, &unique, &now,
                &request,
            ],
        )
        .await;
    let row = match row {
        Ok(row) => row,
        Err(e) => {
            let ours = e.as_db_error().and_then(|db| match db.code().code() {
                TOO_LARGE => Some(crate::rollup::out_of_range(db.message())),
                NO_CUSTOMER => Some(StoreError::Invalid(format!(
                    "no customer {:?}",
                    db.message()
                ))),
                _ => None,
            });
            return Err(ours.map_or(Failure::Pg(e), Failure::Store));
        }
    };
    Ok(row.try_get(0)?)
}

pub(crate) async fn usage<C: GenericClient>(
    c: &C,
    customer_id: &str,
    billed: DateTime<Utc>,
) -> Result<Vec<UsageRollup>> {
    // A statement prepared once per connection: one round trip per read (entitlement checks).
    let stmt = c
        .prepare_cached(
            "SELECT metric, usage_period_start, sum, count, max, latest, latest_at, unique_count
             FROM usage_rollups WHERE customer_id = $1 AND billed_period_start = $2
             ORDER BY metric, usage_period_start",
        )
        .await?;
    let rows = c.query(&stmt, &[&customer_id, &billed]).await?;
    // NUMERIC sums are exact and unbounded; one beyond what a Decimal holds is an error, not a
    // panic.
    let beyond = |e: tokio_postgres::Error| {
        crate::StoreError::OutOfRange(format!("usage is too large to read exactly: {e}"))
    };
    rows.iter()
        .map(|r| {
            Ok(UsageRollup {
                metric: r.get(0),
                usage_period_start: r.get(1),
                billed_period_start: billed,
                sum: r.try_get(2).map_err(beyond)?,
                count: r.get(3),
                max: r.try_get(4).map_err(beyond)?,
                latest: r.try_get(5).map_err(beyond)?,
                latest_at: r.get(6),
                unique_count: r.get(7),
            })
        })
        .collect()
}

pub(crate) async fn event_ids(pool: &Pool, customer_id: &str) -> Result<Vec<String>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT event_id FROM events WHERE customer_id = $1 ORDER BY seq",
            &[&customer_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn count(pool: &Pool) -> Result<u64> {
    let c = pool.get().await?;
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await?
        .get(0);
    Ok(n as u64)
}
