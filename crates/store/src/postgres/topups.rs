//! Automatic top-ups on PostgreSQL. Asking for a top-up locks the customer's settings row
//! (`FOR UPDATE`) before it counts the month's top-ups and inserts, so concurrent requests of any
//! number of processes are serialized per customer and the monthly cap holds; the partial unique
//! index keeps one top-up in flight per customer in any case.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use tokio_postgres::Row;

use super::notify;
use crate::topups::{state, BREAKER_AFTER};
use crate::{AutoTopup, NewTopup, Result, TopupFinish, TopupRecord, TopupRequest, TopupRetry};

const SETTINGS_COLS: &str = "customer_id, threshold, pack, max_per_month::BIGINT,
    consecutive_failures::BIGINT, retry_after, failed_payment_method, created_at, updated_at";

fn settings_row(r: &Row) -> AutoTopup {
    AutoTopup {
        customer_id: r.get(0),
        threshold: r.get::<_, Decimal>(1).normalize(),
        pack: r.get(2),
        max_per_month: r.get(3),
        consecutive_failures: r.get(4),
        retry_after: r.get(5),
        failed_payment_method: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    }
}

async fn settings<C: GenericClient>(
    c: &C,
    customer: &str,
    lock: bool,
) -> Result<Option<AutoTopup>> {
    let sql = format!(
        "SELECT {SETTINGS_COLS} FROM auto_topups WHERE customer_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(c.query_opt(&sql, &[&customer])
        .await?
        .as_ref()
        .map(settings_row))
}

pub(crate) async fn get_settings(pool: &Pool, customer: &str) -> Result<Option<AutoTopup>> {
    let c = pool.get().await?;
    settings(&c, customer, false).await
}

pub(crate) async fn put_settings(pool: &Pool, s: &AutoTopup) -> Result<AutoTopup> {
    let c = pool.get().await?;
    let max = i32::try_from(s.max_per_month)
        .map_err(|_| crate::StoreError::Invalid("max_per_month is too large".into()))?;
    let row = c
        .query_one(
            &format!(
                "INSERT INTO auto_topups (customer_id, threshold, pack, max_per_month,
                    consecutive_failures, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 0, $5, $5)
                 ON CONFLICT (customer_id) DO UPDATE SET threshold = excluded.threshold,
                    pack = excluded.pack, max_per_month = excluded.max_per_month,
                    updated_at = excluded.updated_at
                 RETURNING {SETTINGS_COLS}"
            ),
            &[&s.customer_id, &s.threshold, &s.pack, &max, &s.updated_at],
        )
        .await?;
    Ok(settings_row(&row))
}

pub(crate) async fn delete_settings(pool: &Pool, customer: &str) -> Result<bool> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "DELETE FROM auto_topups WHERE customer_id = $1",
            &[&customer],
        )
        .await?;
    Ok(n > 0)
}

const TOPUP_COLS: &str = "id, customer_id, pack, credits, amount, currency, month, state,
    attempts::BIGINT, next_attempt_at, payment_method, payment_intent, decline_code, request_id,
    last_error, created_at, updated_at";

fn topup_row(r: &Row) -> TopupRecord {
    TopupRecord {
        id: r.get(0),
        customer_id: r.get(1),
        pack: r.get(2),
        credits: r.get::<_, Decimal>(3).normalize(),
        amount: r.get(4),
        currency: r.get(5),
        month: r.get(6),
        state: r.get(7),
        attempts: r.get(8),
        next_attempt_at: r.get(9),
        payment_method: r.get(10),
        payment_intent: r.get(11),
        decline_code: r.get(12),
        request_id: r.get(13),
        last_error: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
    }
}

pub(crate) async fn get(pool: &Pool, id: &str) -> Result<Option<TopupRecord>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {TOPUP_COLS} FROM topups WHERE id = $1");
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(topup_row))
}

pub(crate) async fn of_customer(
    pool: &Pool,
    customer: &str,
    limit: usize,
) -> Result<Vec<TopupRecord>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {TOPUP_COLS} FROM topups WHERE customer_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows = c.query(&sql, &[&customer, &limit]).await?;
    Ok(rows.iter().map(topup_row).collect())
}

pub(crate) async fn request(pool: &Pool, t: &NewTopup) -> Result<TopupRequest> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let Some(s) = settings(&tx, &t.customer_id, true).await? else {
        return Ok(TopupRequest::NotConfigured);
    };
    if s.pack != t.pack {
        return Ok(TopupRequest::NotConfigured);
    }
    if s.breaker_open() {
        return Ok(TopupRequest::BreakerOpen);
    }
    if let Some(after) = s.retry_after.filter(|a| *a > t.now) {
        return Ok(TopupRequest::BackingOff(after));
    }
    let month = t.month();
    let row = tx
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending'),
                    COUNT(*) FILTER (WHERE month = $2 AND state IN ('pending', 'succeeded'))
             FROM topups WHERE customer_id = $1 AND (state = 'pending' OR month = $2)",
            &[&t.customer_id, &month],
        )
        .await?;
    let (in_flight, used): (i64, i64) = (row.get(0), row.get(1));
    if in_flight > 0 {
        return Ok(TopupRequest::InFlight);
    }
    if used >= s.max_per_month {
        return Ok(TopupRequest::CapReached);
    }
    let balance: Decimal = super::credits::open_buckets(&tx, &t.customer_id)
        .await?
        .iter()
        .filter(|b| b.is_open(t.now))
        .map(|b| b.remaining)
        .sum();
    if balance >= s.threshold {
        return Ok(TopupRequest::AboveThreshold);
    }
    let sql = format!(
        "INSERT INTO topups (id, customer_id, pack, credits, amount, currency, month, state,
            attempts, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $9)
         ON CONFLICT (customer_id) WHERE state = 'pending' DO NOTHING
         RETURNING {TOPUP_COLS}"
    );
    let inserted = tx
        .query_opt(
            &sql,
            &[
                &t.id,
                &t.customer_id,
                &t.pack,
                &t.credits,
                &t.amount,
                &t.currency,
                &month,
                &state::PENDING,
                &t.now,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        return Ok(TopupRequest::InFlight);
    };
    tx.execute(
        "UPDATE auto_topups SET retry_after = NULL WHERE customer_id = $1",
        &[&t.customer_id],
    )
    .await?;
    tx.commit().await?;
    Ok(TopupRequest::Created(Box::new(topup_row(&row))))
}

pub(crate) async fn claim(
    pool: &Pool,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<TopupRecord>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "UPDATE topups SET claimed_until = $2 WHERE id IN (
            SELECT id FROM topups
            WHERE state = 'pending' AND next_attempt_at <= $1
              AND (claimed_until IS NULL OR claimed_until <= $1)
            ORDER BY next_attempt_at, id LIMIT $3
            FOR UPDATE SKIP LOCKED)
         RETURNING {TOPUP_COLS}"
    );
    let rows = c.query(&sql, &[&now, &until, &limit]).await?;
    Ok(rows.iter().map(topup_row).collect())
}

pub(crate) async fn retry(pool: &Pool, r: &TopupRetry) -> Result<()> {
    let c = pool.get().await?;
    let attempts = i32::try_from(r.attempts).unwrap_or(i32::MAX);
    c.execute(
        "UPDATE topups SET attempts = $2, next_attempt_at = $3, payment_method = $4,
            request_id = $5, last_error = $6, updated_at = $7, claimed_until = NULL
         WHERE id = $1 AND state = 'pending'",
        &[
            &r.id,
            &attempts,
            &r.next_attempt_at,
            &r.payment_method,
            &r.request_id,
            &r.error,
            &r.now,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn finish(pool: &Pool, f: &TopupFinish) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let to = if f.succeeded {
        state::SUCCEEDED
    } else {
        state::FAILED
    };
    let ended = tx
        .query_opt(
            "UPDATE topups SET state = $2, payment_intent = COALESCE($3, payment_intent),
                payment_method = COALESCE($4, payment_method), decline_code = $5,
                request_id = COALESCE($6, request_id), last_error = $7, updated_at = $8,
                claimed_until = NULL
             WHERE id = $1 AND state = 'pending'
             RETURNING customer_id",
            &[
                &f.id,
                &to,
                &f.payment_intent,
                &f.payment_method,
                &f.decline_code,
                &f.request_id,
                &f.error,
                &f.now,
            ],
        )
        .await?;
    let Some(row) = ended else {
        return Ok(false);
    };
    let customer: String = row.get(0);
    if f.succeeded {
        tx.execute(
            "UPDATE auto_topups SET consecutive_failures = 0, retry_after = NULL,
                failed_payment_method = NULL WHERE customer_id = $1",
            &[&customer],
        )
        .await?;
    } else {
        let breaker = i32::try_from(BREAKER_AFTER).unwrap_or(i32::MAX);
        tx.execute(
            "UPDATE auto_topups SET consecutive_failures = consecutive_failures + 1,
                retry_after = CASE WHEN consecutive_failures + 1 >= $2 THEN NULL ELSE $3::TIMESTAMPTZ END,
                failed_payment_method = $4
             WHERE customer_id = $1",
            &[&customer, &breaker, &f.retry_after, &f.payment_method],
        )
        .await?;
    }
    notify::enqueue(&tx, &f.notification).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn reset(pool: &Pool, customer: &str, now: DateTime<Utc>) -> Result<bool> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "UPDATE auto_topups SET consecutive_failures = 0, retry_after = NULL,
                failed_payment_method = NULL, updated_at = $2
             WHERE customer_id = $1 AND (consecutive_failures > 0 OR retry_after IS NOT NULL)",
            &[&customer, &now],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn retries_due(
    pool: &Pool,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let breaker = i32::try_from(BREAKER_AFTER).unwrap_or(i32::MAX);
    let rows = c
        .query(
            "SELECT customer_id FROM auto_topups a
             WHERE consecutive_failures > 0 AND consecutive_failures < $1
               AND retry_after IS NOT NULL AND retry_after <= $2
               AND NOT EXISTS (SELECT 1 FROM topups t
                               WHERE t.customer_id = a.customer_id AND t.state = 'pending')
             ORDER BY retry_after LIMIT $3",
            &[&breaker, &now, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn clear_retry(pool: &Pool, customer: &str) -> Result<()> {
    let c = pool.get().await?;
    c.execute(
        "UPDATE auto_topups SET retry_after = NULL WHERE customer_id = $1",
        &[&customer],
    )
    .await?;
    Ok(())
}
