//! Automatic top-ups on SQLite. Every write runs on the single writer thread inside one
//! transaction, so the checks of [`crate::topups`] and the insert are atomic; the partial unique
//! index keeps one top-up in flight per customer even for another process on the same file.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use rust_decimal::Decimal;

use super::events::dec;
use super::notify;
use crate::time::{from_ms, to_ms};
use crate::topups::{state, BREAKER_AFTER};
use crate::{AutoTopup, NewTopup, Result, TopupFinish, TopupRecord, TopupRequest, TopupRetry};

const SETTINGS_COLS: &str = "customer_id, threshold, pack, max_per_month, consecutive_failures,
    retry_after, failed_payment_method, created_at, updated_at";

fn settings_row(r: &Row<'_>) -> rusqlite::Result<(AutoTopup, String)> {
    let threshold: String = r.get(1)?;
    Ok((
        AutoTopup {
            customer_id: r.get(0)?,
            threshold: Default::default(),
            pack: r.get(2)?,
            max_per_month: r.get(3)?,
            consecutive_failures: r.get(4)?,
            retry_after: r.get::<_, Option<i64>>(5)?.map(from_ms),
            failed_payment_method: r.get(6)?,
            created_at: from_ms(r.get(7)?),
            updated_at: from_ms(r.get(8)?),
        },
        threshold,
    ))
}

fn settings(conn: &Connection, customer: &str) -> Result<Option<AutoTopup>> {
    let sql = format!("SELECT {SETTINGS_COLS} FROM auto_topups WHERE customer_id = ?1");
    let found = conn
        .prepare_cached(&sql)?
        .query_row([customer], settings_row)
        .optional()?;
    match found {
        Some((mut s, threshold)) => {
            s.threshold = dec(&threshold)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

pub(crate) fn get_settings(conn: &Connection, customer: &str) -> Result<Option<AutoTopup>> {
    settings(conn, customer)
}

pub(crate) fn put_settings(conn: &Connection, s: &AutoTopup) -> Result<AutoTopup> {
    conn.prepare_cached(
        "INSERT INTO auto_topups (customer_id, threshold, pack, max_per_month,
            consecutive_failures, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)
         ON CONFLICT (customer_id) DO UPDATE SET threshold = excluded.threshold,
            pack = excluded.pack, max_per_month = excluded.max_per_month,
            updated_at = excluded.updated_at",
    )?
    .execute(params![
        s.customer_id,
        s.threshold.normalize().to_string(),
        s.pack,
        s.max_per_month,
        to_ms(s.updated_at)
    ])?;
    settings(conn, &s.customer_id)?
        .ok_or_else(|| crate::StoreError::Invalid("the settings vanished".into()))
}

pub(crate) fn delete_settings(conn: &Connection, customer: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM auto_topups WHERE customer_id = ?1")?
        .execute([customer])?;
    Ok(n > 0)
}

const TOPUP_COLS: &str = "id, customer_id, pack, credits, amount, currency, month, state,
    attempts, next_attempt_at, payment_method, payment_intent, decline_code, request_id,
    last_error, created_at, updated_at";

fn topup_row(r: &Row<'_>) -> rusqlite::Result<(TopupRecord, String)> {
    let credits: String = r.get(3)?;
    Ok((
        TopupRecord {
            id: r.get(0)?,
            customer_id: r.get(1)?,
            pack: r.get(2)?,
            credits: Default::default(),
            amount: r.get(4)?,
            currency: r.get(5)?,
            month: r.get(6)?,
            state: r.get(7)?,
            attempts: r.get(8)?,
            next_attempt_at: from_ms(r.get(9)?),
            payment_method: r.get(10)?,
            payment_intent: r.get(11)?,
            decline_code: r.get(12)?,
            request_id: r.get(13)?,
            last_error: r.get(14)?,
            created_at: from_ms(r.get(15)?),
            updated_at: from_ms(r.get(16)?),
        },
        credits,
    ))
}

fn topups(
    conn: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<TopupRecord>> {
    let sql = format!("SELECT {TOPUP_COLS} FROM topups WHERE {where_}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(args, topup_row)?;
    let mut out = Vec::new();
    for r in rows {
        let (mut t, credits) = r?;
        t.credits = dec(&credits)?;
        out.push(t);
    }
    Ok(out)
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<TopupRecord>> {
    Ok(topups(conn, "id = ?1", &[&id])?.pop())
}

pub(crate) fn of_customer(
    conn: &Connection,
    customer: &str,
    limit: usize,
) -> Result<Vec<TopupRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    topups(
        conn,
        "customer_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
        &[&customer, &limit],
    )
}

pub(crate) fn request(conn: &Connection, t: &NewTopup) -> Result<TopupRequest> {
    let Some(s) = settings(conn, &t.customer_id)? else {
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
    let in_flight: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM topups WHERE customer_id = ?1 AND state = ?2)",
        )?
        .query_row(params![t.customer_id, state::PENDING], |r| r.get(0))?;
    if in_flight {
        return Ok(TopupRequest::InFlight);
    }
    let month = t.month();
    let used: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM topups WHERE customer_id = ?1 AND month = ?2
               AND state IN (?3, ?4)",
        )?
        .query_row(
            params![t.customer_id, month, state::PENDING, state::SUCCEEDED],
            |r| r.get(0),
        )?;
    if used >= s.max_per_month {
        return Ok(TopupRequest::CapReached);
    }
    let balance: Decimal = super::credits::open_buckets(conn, &t.customer_id)?
        .iter()
        .filter(|b| b.is_open(t.now))
        .map(|b| b.remaining)
        .sum();
    if balance >= s.threshold {
        return Ok(TopupRequest::AboveThreshold);
    }
    let now = to_ms(t.now);
    let n = conn
        .prepare_cached(
            "INSERT INTO topups (id, customer_id, pack, credits, amount, currency, month, state,
                attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?9, ?9)
             ON CONFLICT (customer_id) WHERE state = 'pending' DO NOTHING",
        )?
        .execute(params![
            t.id,
            t.customer_id,
            t.pack,
            t.credits.normalize().to_string(),
            t.amount,
            t.currency,
            month,
            state::PENDING,
            now
        ])?;
    if n == 0 {
        return Ok(TopupRequest::InFlight);
    }
    conn.prepare_cached("UPDATE auto_topups SET retry_after = NULL WHERE customer_id = ?1")?
        .execute([&t.customer_id])?;
    match get(conn, &t.id)? {
        Some(row) => Ok(TopupRequest::Created(Box::new(row))),
        None => Ok(TopupRequest::InFlight),
    }
}

pub(crate) fn claim(
    conn: &Connection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<TopupRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due = topups(
        conn,
        "state = 'pending' AND next_attempt_at <= ?1
           AND (claimed_until IS NULL OR claimed_until <= ?1)
         ORDER BY next_attempt_at, id LIMIT ?2",
        &[&to_ms(now), &limit],
    )?;
    let mut stmt = conn.prepare_cached("UPDATE topups SET claimed_until = ?2 WHERE id = ?1")?;
    for t in &due {
        stmt.execute(params![t.id, to_ms(until)])?;
    }
    Ok(due)
}

pub(crate) fn retry(conn: &Connection, r: &TopupRetry) -> Result<()> {
    conn.prepare_cached(
        "UPDATE topups SET attempts = ?2, next_attempt_at = ?3, payment_method = ?4,
            request_id = ?5, last_error = ?6, updated_at = ?7, claimed_until = NULL
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![
        r.id,
        r.attempts,
        to_ms(r.next_attempt_at),
        r.payment_method,
        r.request_id,
        r.error,
        to_ms(r.now)
    ])?;
    Ok(())
}

pub(crate) fn finish(conn: &Connection, f: &TopupFinish) -> Result<bool> {
    let to = if f.succeeded {
        state::SUCCEEDED
    } else {
        state::FAILED
    };
    let n = conn
        .prepare_cached(
            "UPDATE topups SET state = ?2, payment_intent = COALESCE(?3, payment_intent),
                payment_method = COALESCE(?4, payment_method), decline_code = ?5,
                request_id = COALESCE(?6, request_id), last_error = ?7, updated_at = ?8,
                claimed_until = NULL
             WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![
            f.id,
            to,
            f.payment_intent,
            f.payment_method,
            f.decline_code,
            f.request_id,
            f.error,
            to_ms(f.now)
        ])?;
    if n == 0 {
        return Ok(false);
    }
    let customer: String = conn
        .prepare_cached("SELECT customer_id FROM topups WHERE id = ?1")?
        .query_row([&f.id], |r| r.get(0))?;
    if f.succeeded {
        conn.prepare_cached(
            "UPDATE auto_topups SET consecutive_failures = 0, retry_after = NULL,
                failed_payment_method = NULL WHERE customer_id = ?1",
        )?
        .execute([&customer])?;
    } else {
        conn.prepare_cached(
            "UPDATE auto_topups SET consecutive_failures = consecutive_failures + 1,
                retry_after = CASE WHEN consecutive_failures + 1 >= ?2 THEN NULL ELSE ?3 END,
                failed_payment_method = ?4
             WHERE customer_id = ?1",
        )?
        .execute(params![
            customer,
            BREAKER_AFTER,
            f.retry_after.map(to_ms),
            f.payment_method
        ])?;
    }
    notify::enqueue(conn, &f.notification)?;
    Ok(true)
}

pub(crate) fn reset(conn: &Connection, customer: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE auto_topups SET consecutive_failures = 0, retry_after = NULL,
                failed_payment_method = NULL, updated_at = ?2
             WHERE customer_id = ?1 AND (consecutive_failures > 0 OR retry_after IS NOT NULL)",
        )?
        .execute(params![customer, to_ms(now)])?;
    Ok(n > 0)
}

pub(crate) fn retries_due(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT customer_id FROM auto_topups a
         WHERE consecutive_failures > 0 AND consecutive_failures < ?1
           AND retry_after IS NOT NULL AND retry_after <= ?2
           AND NOT EXISTS (SELECT 1 FROM topups t
                           WHERE t.customer_id = a.customer_id AND t.state = 'pending')
         ORDER BY retry_after LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![BREAKER_AFTER, to_ms(now), limit], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

pub(crate) fn clear_retry(conn: &Connection, customer: &str) -> Result<()> {
    conn.prepare_cached("UPDATE auto_topups SET retry_after = NULL WHERE customer_id = ?1")?
        .execute([customer])?;
    Ok(())
}
