//! Period close: the invoice of a period, written once.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};

use super::events;
use crate::time::{from_ms, to_ms};
use crate::{InvoiceBuilder, Result, StoreError, StoredInvoice};

pub(crate) fn close_period(
    conn: &Connection,
    customer_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    build: InvoiceBuilder,
) -> Result<Option<StoredInvoice>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM invoices WHERE customer_id = ?1 AND period_start = ?2)",
        params![customer_id, to_ms(start)],
        |r| r.get(0),
    )?;
    if exists {
        return Ok(None);
    }
    let usage = events::usage(conn, customer_id, start)?;
    let inv = build(&usage).map_err(StoreError::Invalid)?;
    conn.execute(
        "INSERT INTO invoices (id, customer_id, plan, interval, period_start, period_end, currency,
            subtotal, discount, total, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            inv.id,
            customer_id,
            inv.plan,
            inv.interval,
            to_ms(start),
            to_ms(end),
            inv.currency,
            inv.subtotal,
            inv.discount,
            inv.total,
            inv.body.to_string(),
            to_ms(inv.created_at)
        ],
    )?;
    conn.execute(
        "UPDATE customers SET billed_through = MAX(COALESCE(billed_through, ?2), ?2) WHERE id = ?1",
        params![customer_id, to_ms(end)],
    )?;
    super::notify::enqueue(
        conn,
        &crate::notify::invoice_closed(customer_id, start, end, &inv),
    )?;
    Ok(Some(StoredInvoice {
        customer_id: customer_id.to_owned(),
        period_start: start,
        period_end: end,
        ..inv
    }))
}

pub(crate) fn invoice_row(r: &Row<'_>) -> rusqlite::Result<StoredInvoice> {
    let body: String = r.get(10)?;
    Ok(StoredInvoice {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        plan: r.get(2)?,
        interval: r.get(3)?,
        period_start: from_ms(r.get(4)?),
        period_end: from_ms(r.get(5)?),
        currency: r.get(6)?,
        subtotal: r.get(7)?,
        discount: r.get(8)?,
        total: r.get(9)?,
        body: serde_json::from_str(&body).unwrap_or_default(),
        created_at: from_ms(r.get(11)?),
    })
}

pub(crate) fn list(conn: &Connection, customer_id: &str) -> Result<Vec<StoredInvoice>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, customer_id, plan, interval, period_start, period_end, currency, subtotal,
            discount, total, body, created_at
         FROM invoices WHERE customer_id = ?1 ORDER BY period_start DESC",
    )?;
    let rows = stmt.query_map([customer_id], invoice_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
