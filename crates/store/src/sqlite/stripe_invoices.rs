//! The Stripe invoice mirror (see [`crate::stripe_invoices`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};

use crate::time::{from_ms, to_ms};
use crate::{Result, StripeInvoiceRecord};

const COLS: &str = "id, customer_id, stripe_customer, stripe_subscription, status,
    collection_method, currency, total, amount_paid, amount_remaining, finalized_at, due_date,
    period_start, period_end, billing_reason, hosted_invoice_url, number, attempt_count,
    next_payment_attempt, created, event_created, updated_at";

fn row(r: &Row<'_>) -> rusqlite::Result<StripeInvoiceRecord> {
    let at = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(from_ms))
    };
    Ok(StripeInvoiceRecord {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        stripe_customer: r.get(2)?,
        stripe_subscription: r.get(3)?,
        status: r.get(4)?,
        collection_method: r.get(5)?,
        currency: r.get(6)?,
        total: r.get(7)?,
        amount_paid: r.get(8)?,
        amount_remaining: r.get(9)?,
        finalized_at: at(10)?,
        due_date: at(11)?,
        period_start: at(12)?,
        period_end: at(13)?,
        billing_reason: r.get(14)?,
        hosted_invoice_url: r.get(15)?,
        number: r.get(16)?,
        attempt_count: r.get(17)?,
        next_payment_attempt: at(18)?,
        created: from_ms(r.get(19)?),
        event_created: r.get(20)?,
        updated_at: from_ms(r.get(21)?),
    })
}

pub(crate) fn put(conn: &Connection, i: &StripeInvoiceRecord) -> Result<bool> {
    let sql = format!(
        "INSERT INTO stripe_invoices ({COLS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21, ?22)
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id,
            stripe_customer = excluded.stripe_customer,
            stripe_subscription = excluded.stripe_subscription, status = excluded.status,
            collection_method = excluded.collection_method, currency = excluded.currency,
            total = excluded.total, amount_paid = excluded.amount_paid,
            amount_remaining = excluded.amount_remaining, finalized_at = excluded.finalized_at,
            due_date = excluded.due_date, period_start = excluded.period_start,
            period_end = excluded.period_end, billing_reason = excluded.billing_reason,
            hosted_invoice_url = excluded.hosted_invoice_url, number = excluded.number,
            attempt_count = excluded.attempt_count,
            next_payment_attempt = excluded.next_payment_attempt, created = excluded.created,
            event_created = excluded.event_created, updated_at = excluded.updated_at
         WHERE excluded.event_created >= stripe_invoices.event_created"
    );
    let opt = |t: Option<DateTime<Utc>>| t.map(to_ms);
    let n = conn.prepare_cached(&sql)?.execute(params![
        i.id,
        i.customer_id,
        i.stripe_customer,
        i.stripe_subscription,
        i.status,
        i.collection_method,
        i.currency,
        i.total,
        i.amount_paid,
        i.amount_remaining,
        opt(i.finalized_at),
        opt(i.due_date),
        opt(i.period_start),
        opt(i.period_end),
        i.billing_reason,
        i.hosted_invoice_url,
        i.number,
        i.attempt_count,
        opt(i.next_payment_attempt),
        to_ms(i.created),
        i.event_created,
        to_ms(i.updated_at)
    ])?;
    Ok(n > 0)
}

pub(crate) fn of_customer(
    conn: &Connection,
    customer_id: &str,
) -> Result<Vec<StripeInvoiceRecord>> {
    let sql = format!(
        "SELECT {COLS} FROM stripe_invoices WHERE customer_id = ?1 ORDER BY created DESC, id DESC"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([customer_id], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn before(conn: &Connection, before: DateTime<Utc>) -> Result<Vec<StripeInvoiceRecord>> {
    let sql = format!("SELECT {COLS} FROM stripe_invoices WHERE created < ?1 ORDER BY created, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([to_ms(before)], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
