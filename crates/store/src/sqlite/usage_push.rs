//! Usage pushes to Stripe (see [`crate::usage_push`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::invoices::invoice_row;
use crate::time::{from_ms, to_ms};
use crate::usage_push::state;
use crate::{InvoicePush, PushOutcome, PushTarget, RefundRecord, Result, StoredInvoice};

const COLS: &str = "invoice_id, customer_id, stripe_customer, stripe_subscription, period_start,
    period_end, currency, lines, amount, state, renewal_invoice, standalone_invoice, attempts,
    last_error, request_id, next_attempt_at, created_at, updated_at, hosted_invoice_url";

fn push_row(r: &Row<'_>) -> rusqlite::Result<InvoicePush> {
    Ok(InvoicePush {
        invoice_id: r.get(0)?,
        customer_id: r.get(1)?,
        stripe_customer: r.get(2)?,
        stripe_subscription: r.get(3)?,
        period_start: from_ms(r.get(4)?),
        period_end: from_ms(r.get(5)?),
        currency: r.get(6)?,
        lines: r.get(7)?,
        amount: r.get(8)?,
        state: r.get(9)?,
        renewal_invoice: r.get(10)?,
        standalone_invoice: r.get(11)?,
        attempts: r.get(12)?,
        last_error: r.get(13)?,
        request_id: r.get(14)?,
        next_attempt_at: from_ms(r.get(15)?),
        created_at: from_ms(r.get(16)?),
        updated_at: from_ms(r.get(17)?),
        hosted_invoice_url: r.get(18)?,
    })
}

const INVOICE_COLS: &str = "i.id, i.customer_id, i.plan, i.interval, i.period_start,
    i.period_end, i.currency, i.subtotal, i.discount, i.total, i.body, i.created_at";

pub(crate) fn to_push(conn: &Connection, limit: usize) -> Result<Vec<StoredInvoice>> {
    let sql = format!(
        "SELECT {INVOICE_COLS} FROM invoices i
         JOIN subscriptions s ON s.customer_id = i.customer_id AND s.source = 'stripe'
         WHERE NOT EXISTS (SELECT 1 FROM invoice_pushes p WHERE p.invoice_id = i.id)
         ORDER BY i.period_end, i.id LIMIT ?1"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit as i64], invoice_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn starting_between(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>> {
    let sql = format!(
        "SELECT {INVOICE_COLS} FROM invoices i WHERE i.period_start >= ?1 AND i.period_start < ?2
         ORDER BY i.customer_id, i.period_start"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![to_ms(from), to_ms(to)], invoice_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn get(conn: &Connection, invoice_id: &str) -> Result<Option<InvoicePush>> {
    let sql = format!("SELECT {COLS} FROM invoice_pushes WHERE invoice_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([invoice_id], push_row)
        .optional()?)
}

pub(crate) fn insert(conn: &Connection, p: &InvoicePush) -> Result<Option<InvoicePush>> {
    conn.prepare_cached(
        "INSERT INTO invoice_pushes (invoice_id, customer_id, stripe_customer,
            stripe_subscription, period_start, period_end, currency, lines, amount, state,
            renewal_invoice, standalone_invoice, attempts, last_error, request_id,
            next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (invoice_id) DO NOTHING",
    )?
    .execute(params![
        p.invoice_id,
        p.customer_id,
        p.stripe_customer,
        p.stripe_subscription,
        to_ms(p.period_start),
        to_ms(p.period_end),
        p.currency,
        p.lines,
        p.amount,
        p.state,
        p.renewal_invoice,
        p.standalone_invoice,
        p.attempts,
        p.last_error,
        p.request_id,
        to_ms(p.next_attempt_at),
        to_ms(p.created_at),
        to_ms(p.updated_at)
    ])?;
    get(conn, &p.invoice_id)
}

pub(crate) fn of_customer(conn: &Connection, customer_id: &str) -> Result<Vec<InvoicePush>> {
    let sql = format!(
        "SELECT {COLS} FROM invoice_pushes WHERE customer_id = ?1 ORDER BY period_start DESC"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([customer_id], push_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn of_stripe_invoice(
    conn: &Connection,
    stripe_invoice: &str,
) -> Result<Vec<InvoicePush>> {
    let sql = format!(
        "SELECT {COLS} FROM invoice_pushes
         WHERE renewal_invoice = ?1 OR standalone_invoice = ?1 ORDER BY invoice_id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([stripe_invoice], push_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn due(conn: &Connection, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT invoice_id FROM invoice_pushes WHERE state = ?1 AND next_attempt_at <= ?2
         ORDER BY period_end, invoice_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![state::PENDING, to_ms(now), limit as i64], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn claim(
    conn: &Connection,
    invoice_id: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<InvoicePush>> {
    let n = conn
        .prepare_cached(
            "UPDATE invoice_pushes SET holder = ?2, until = ?4
             WHERE invoice_id = ?1 AND (holder IS NULL OR until <= ?3 OR holder = ?2)",
        )?
        .execute(params![invoice_id, holder, to_ms(now), to_ms(until)])?;
    if n == 0 {
        return Ok(None);
    }
    get(conn, invoice_id)
}

pub(crate) fn set_invoice(
    conn: &Connection,
    invoice_id: &str,
    target: PushTarget,
    stripe_invoice: &str,
    now: DateTime<Utc>,
) -> Result<Option<InvoicePush>> {
    let sql = match target {
        PushTarget::Renewal => {
            "UPDATE invoice_pushes SET renewal_invoice = COALESCE(renewal_invoice, ?2),
                updated_at = ?3 WHERE invoice_id = ?1"
        }
        PushTarget::Standalone => {
            "UPDATE invoice_pushes SET standalone_invoice = COALESCE(standalone_invoice, ?2),
                updated_at = ?3 WHERE invoice_id = ?1"
        }
    };
    conn.prepare_cached(sql)?
        .execute(params![invoice_id, stripe_invoice, to_ms(now)])?;
    get(conn, invoice_id)
}

pub(crate) fn finish(
    conn: &Connection,
    invoice_id: &str,
    holder: &str,
    o: &PushOutcome,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE invoice_pushes SET state = CASE WHEN state = 'paid' THEN state ELSE ?3 END,
                last_error = ?4, request_id = COALESCE(?5, request_id),
                attempts = attempts + ?6, next_attempt_at = ?7, holder = NULL, until = NULL,
                updated_at = ?8
             WHERE invoice_id = ?1 AND holder = ?2",
        )?
        .execute(params![
            invoice_id,
            holder,
            o.state,
            o.last_error,
            o.request_id,
            i32::from(o.failed),
            to_ms(o.next_attempt_at),
            to_ms(o.now)
        ])?;
    Ok(n > 0)
}

pub(crate) fn set_state_of_stripe_invoice(
    conn: &Connection,
    stripe_invoice: &str,
    new_state: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "UPDATE invoice_pushes SET state = ?2, updated_at = ?3
             WHERE (standalone_invoice = ?1
                    OR (renewal_invoice = ?1 AND standalone_invoice IS NULL))
               AND state NOT IN ('pending', 'paid', 'skipped') AND state <> ?2",
        )?
        .execute(params![stripe_invoice, new_state, to_ms(now)])?;
    Ok(n as u64)
}

pub(crate) fn set_hosted_url(conn: &Connection, stripe_invoice: &str, url: &str) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "UPDATE invoice_pushes SET hosted_invoice_url = ?2
             WHERE (standalone_invoice = ?1
                    OR (renewal_invoice = ?1 AND standalone_invoice IS NULL))
               AND hosted_invoice_url IS NOT ?2",
        )?
        .execute(params![stripe_invoice, url])?;
    Ok(n as u64)
}

const REFUND_COLS: &str = "id, dedup_key, customer_id, payment, payment_intent, amount, currency,
    reason, source, state, stripe_refund, request_id, last_error, credits_taken,
    credits_shortfall, created_at, updated_at";

fn refund_row(r: &Row<'_>) -> rusqlite::Result<RefundRecord> {
    Ok(RefundRecord {
        id: r.get(0)?,
        dedup_key: r.get(1)?,
        customer_id: r.get(2)?,
        payment: r.get(3)?,
        payment_intent: r.get(4)?,
        amount: r.get(5)?,
        currency: r.get(6)?,
        reason: r.get(7)?,
        source: r.get(8)?,
        state: r.get(9)?,
        stripe_refund: r.get(10)?,
        request_id: r.get(11)?,
        last_error: r.get(12)?,
        credits_taken: r.get(13)?,
        credits_shortfall: r.get(14)?,
        created_at: from_ms(r.get(15)?),
        updated_at: from_ms(r.get(16)?),
    })
}

pub(crate) fn insert_refund(conn: &Connection, r: &RefundRecord) -> Result<(RefundRecord, bool)> {
    let n = conn
        .prepare_cached(
            "INSERT INTO refunds (id, dedup_key, customer_id, payment, payment_intent, amount,
                currency, reason, source, state, stripe_refund, request_id, last_error,
                credits_taken, credits_shortfall, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (dedup_key) DO NOTHING",
        )?
        .execute(params![
            r.id,
            r.dedup_key,
            r.customer_id,
            r.payment,
            r.payment_intent,
            r.amount,
            r.currency,
            r.reason,
            r.source,
            r.state,
            r.stripe_refund,
            r.request_id,
            r.last_error,
            r.credits_taken,
            r.credits_shortfall,
            to_ms(r.created_at),
            to_ms(r.updated_at)
        ])?;
    let sql = format!("SELECT {REFUND_COLS} FROM refunds WHERE dedup_key = ?1");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([&r.dedup_key], refund_row)?;
    Ok((row, n > 0))
}

pub(crate) fn update_refund(conn: &Connection, r: &RefundRecord) -> Result<()> {
    conn.prepare_cached(
        "UPDATE refunds SET state = ?2, stripe_refund = ?3, request_id = ?4, last_error = ?5,
            credits_taken = ?6, credits_shortfall = ?7, updated_at = ?8 WHERE id = ?1",
    )?
    .execute(params![
        r.id,
        r.state,
        r.stripe_refund,
        r.request_id,
        r.last_error,
        r.credits_taken,
        r.credits_shortfall,
        to_ms(r.updated_at)
    ])?;
    Ok(())
}

pub(crate) fn refunds_of(conn: &Connection, payment_intent: &str) -> Result<Vec<RefundRecord>> {
    let sql = format!(
        "SELECT {REFUND_COLS} FROM refunds WHERE payment_intent = ?1 ORDER BY created_at, id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([payment_intent], refund_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
