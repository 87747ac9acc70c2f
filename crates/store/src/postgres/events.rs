//! Event ingest (insert with ON CONFLICT DO NOTHING + rollup upserts) and usage reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use serde_json::Value;

use tally_core::decimal::{self, USAGE_TOTAL};

use super::{is_retryable, Failure};
use crate::rollup::RollupDelta;
use crate::{IngestOutcome, NewEvent, Result, StoreError, UsageRollup};

const ATTEMPTS: usize = 3;

pub(crate) async fn ingest(pool: &Pool, events: Vec<NewEvent>) -> Result<IngestOutcome> {
    if events.is_empty() {
        return Ok(IngestOutcome::default());
    }
    let total = events.len() as u64;
    // First occurrence within the batch wins; the rest are duplicates.
    let mut seen = HashSet::with_capacity(events.len());
    let mut batch: Vec<NewEvent> = events
        .into_iter()
        .filter(|e| seen.insert((e.customer_id.clone(), e.event_id.clone())))
        .collect();
    // Key order = lock order, so concurrent batches cannot deadlock on each other's rows.
    batch.sort_by(|a, b| (&a.customer_id, &a.event_id).cmp(&(&b.customer_id, &b.event_id)));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_ingest(pool, &batch).await {
            Ok(accepted) => {
                return Ok(IngestOutcome {
                    accepted,
                    duplicates: total - accepted,
                })
            }
            Err(Failure::Pg(e)) if attempt < ATTEMPTS && is_retryable(&e) => continue,
            Err(Failure::Pg(e)) => return Err(e.into()),
            Err(Failure::Store(e)) => return Err(e),
        }
    }
}

type RollupKey = (String, DateTime<Utc>, String, DateTime<Utc>);

async fn try_ingest(pool: &Pool, batch: &[NewEvent]) -> std::result::Result<u64, Failure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut ids: Vec<&str> = batch.iter().map(|e| e.customer_id.as_str()).collect();
    ids.dedup();
    let rows = tx
        .query(
            "SELECT id, billed_through FROM customers WHERE id = ANY($1) ORDER BY id FOR SHARE",
            &[&ids],
        )
        .await?;
    let billed_through: HashMap<String, Option<DateTime<Utc>>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    let now = Utc::now();
    let mut billed = Vec::with_capacity(batch.len());
    for e in batch {
        let bt = billed_through
            .get(&e.customer_id)
            .ok_or_else(|| StoreError::Invalid(format!("no customer {:?}", e.customer_id)))?;
        billed.push(match bt {
            Some(b) if e.period_start < *b => *b,
            _ => e.period_start,
        });
    }
    let customers: Vec<&str> = batch.iter().map(|e| e.customer_id.as_str()).collect();
    let event_ids: Vec<&str> = batch.iter().map(|e| e.event_id.as_str()).collect();
    let metrics: Vec<&str> = batch.iter().map(|e| e.metric.as_str()).collect();
    let values: Vec<Decimal> = batch.iter().map(|e| e.value).collect();
    let ts: Vec<DateTime<Utc>> = batch.iter().map(|e| e.timestamp).collect();
    let props: Vec<Option<&Value>> = batch.iter().map(|e| e.properties.as_ref()).collect();
    let usage_ps: Vec<DateTime<Utc>> = batch.iter().map(|e| e.period_start).collect();
    let inserted = tx
        .query(
            "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
                usage_period_start, billed_period_start, ingested_at)
             SELECT c, e, m, v, t, p, u, b, $9
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::timestamptz[],
                         $6::jsonb[], $7::timestamptz[], $8::timestamptz[]) AS x(c, e, m, v, t, p, u, b)
             ORDER BY c, e
             ON CONFLICT (customer_id, event_id) DO NOTHING
             RETURNING customer_id, event_id",
            &[
                &customers, &event_ids, &metrics, &values, &ts, &props, &usage_ps, &billed, &now,
            ],
        )
        .await?;
    let fresh: HashSet<(String, String)> = inserted
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();

    let mut deltas: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    for (e, billed_ps) in batch.iter().zip(&billed) {
        if !fresh.contains(&(e.customer_id.clone(), e.event_id.clone())) {
            continue;
        }
        let d = deltas
            .entry((
                e.customer_id.clone(),
                *billed_ps,
                e.metric.clone(),
                e.period_start,
            ))
            .or_default();
        d.add_event(e)?;
        if let Some(u) = &e.unique_key {
            let n = tx
                .execute(
                    "INSERT INTO usage_unique_values (customer_id, metric, usage_period_start, value)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&e.customer_id, &e.metric, &e.period_start, u],
                )
                .await?;
            d.unique_count += n as i64;
        }
    }
    let upsert = tx
        .prepare(
            "INSERT INTO usage_rollups (customer_id, billed_period_start, metric, usage_period_start,
                sum, count, max, latest, latest_at, unique_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (customer_id, billed_period_start, metric, usage_period_start) DO UPDATE SET
                sum = usage_rollups.sum + EXCLUDED.sum,
                count = usage_rollups.count + EXCLUDED.count,
                max = GREATEST(usage_rollups.max, EXCLUDED.max),
                latest = CASE WHEN usage_rollups.latest_at IS NULL
                                OR EXCLUDED.latest_at >= usage_rollups.latest_at
                              THEN EXCLUDED.latest ELSE usage_rollups.latest END,
                latest_at = GREATEST(usage_rollups.latest_at, EXCLUDED.latest_at),
                unique_count = usage_rollups.unique_count + EXCLUDED.unique_count
             RETURNING sum::text",
        )
        .await?;
    for ((customer, billed_ps, metric, usage_ps), d) in &deltas {
        let latest = d.latest.map(|(_, v)| v);
        let latest_at = d.latest.map(|(at, _)| at);
        let row = tx
            .query_one(
                &upsert,
                &[
                    customer,
                    billed_ps,
                    metric,
                    usage_ps,
                    &d.sum,
                    &d.count,
                    &d.max,
                    &latest,
                    &latest_at,
                    &d.unique_count,
                ],
            )
            .await?;
        // NUMERIC sums exactly and without bound: a total beyond what Tally holds is refused
        // here, the transaction rolling back, as SQLite's writer refuses it.
        let sum: String = row.try_get(0)?;
        if decimal::parse(&sum, &USAGE_TOTAL).is_err() {
            return Err(crate::rollup::out_of_range(metric).into());
        }
    }
    tx.commit().await?;
    Ok(fresh.len() as u64)
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
