//! Period close: the invoice of a period, written once.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::events;
use crate::{InvoiceBuilder, Result, StoreError, StoredInvoice};

pub(crate) async fn close_period(
    pool: &Pool,
    customer_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    build: InvoiceBuilder,
) -> Result<Option<StoredInvoice>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Blocks ingest of this customer's events (FOR SHARE) until the invoice is written.
    if tx
        .query_opt(
            "SELECT 1 FROM customers WHERE id = $1 FOR UPDATE",
            &[&customer_id],
        )
        .await?
        .is_none()
    {
        return Err(StoreError::Invalid(format!("no customer {customer_id:?}")));
    }
    if tx
        .query_opt(
            "SELECT 1 FROM invoices WHERE customer_id = $1 AND period_start = $2",
            &[&customer_id, &start],
        )
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let usage = events::usage(&tx, customer_id, start).await?;
    let inv = build(&usage).map_err(StoreError::Invalid)?;
    let n = tx
        .execute(
            "INSERT INTO invoices (id, customer_id, plan, interval, period_start, period_end,
                currency, subtotal, discount, total, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (customer_id, period_start) DO NOTHING",
            &[
                &inv.id,
                &customer_id,
                &inv.plan,
                &inv.interval,
                &start,
                &end,
                &inv.currency,
                &inv.subtotal,
                &inv.discount,
                &inv.total,
                &inv.body,
                &inv.created_at,
            ],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    tx.execute(
        "UPDATE customers SET billed_through = GREATEST(COALESCE(billed_through, $2), $2)
         WHERE id = $1",
        &[&customer_id, &end],
    )
    .await?;
    super::notify::enqueue(
        &tx,
        &crate::notify::invoice_closed(customer_id, start, end, &inv),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(StoredInvoice {
        customer_id: customer_id.to_owned(),
        period_start: start,
        period_end: end,
        ..inv
    }))
}

pub(crate) fn invoice_row(r: &Row) -> StoredInvoice {
    StoredInvoice {
        id: r.get(0),
        customer_id: r.get(1),
        plan: r.get(2),
        interval: r.get(3),
        period_start: r.get(4),
        period_end: r.get(5),
        currency: r.get(6),
        subtotal: r.get(7),
        discount: r.get(8),
        total: r.get(9),
        body: r.get(10),
        created_at: r.get(11),
    }
}

pub(crate) async fn list(pool: &Pool, customer_id: &str) -> Result<Vec<StoredInvoice>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT id, customer_id, plan, interval, period_start, period_end, currency, subtotal,
                discount, total, body, created_at
             FROM invoices WHERE customer_id = $1 ORDER BY period_start DESC",
            &[&customer_id],
        )
        .await?;
    Ok(rows.iter().map(invoice_row).collect())
}
