//! The subscription history and the facts business metrics read (all customers' transactions
//! and invoices).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{customers, invoices, stripe};
use crate::history::{HistoryFacts, SubscriptionChangeRecord};
use crate::time::{from_ms, to_ms};
use crate::{Result, StoredInvoice, Transaction};

const COLS: &str = "seq, customer_id, at, plan, interval, status, source, coupon,
    cancel_at_period_end, trial_end";

fn row(r: &Row<'_>) -> rusqlite::Result<SubscriptionChangeRecord> {
    Ok(SubscriptionChangeRecord {
        seq: r.get(0)?,
        customer_id: r.get(1)?,
        at: from_ms(r.get(2)?),
        plan: r.get(3)?,
        interval: r.get(4)?,
        status: r.get(5)?,
        source: r.get(6)?,
        coupon: r.get(7)?,
        cancel_at_period_end: r.get(8)?,
        trial_end: r.get::<_, Option<i64>>(9)?.map(from_ms),
    })
}

/// Appends the customer's current subscription to its history at `at`, unless it equals the last
/// recorded state. Runs inside the transaction that changed the subscription.
pub(crate) fn record(conn: &Connection, customer_id: &str, at: DateTime<Utc>) -> Result<()> {
    let Some(sub) = customers::get_subscription(conn, customer_id)? else {
        return Ok(());
    };
    let local_coupon: Option<String> = conn
        .prepare_cached(
            "SELECT coupon_id FROM coupon_redemptions WHERE customer_id = ?1
             ORDER BY redeemed_at DESC, coupon_id LIMIT 1",
        )?
        .query_row([customer_id], |r| r.get(0))
        .optional()?;
    let facts = HistoryFacts::of(&sub, local_coupon);
    let sql = format!(
        "SELECT {COLS} FROM subscription_history WHERE customer_id = ?1 ORDER BY seq DESC LIMIT 1"
    );
    let last = conn
        .prepare_cached(&sql)?
        .query_row([customer_id], row)
        .optional()?;
    if last.as_ref().map(HistoryFacts::of_record).as_ref() == Some(&facts) {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO subscription_history (customer_id, at, plan, interval, status, source, coupon,
            cancel_at_period_end, trial_end)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        customer_id,
        to_ms(at),
        facts.plan,
        facts.interval,
        facts.status,
        facts.source,
        facts.coupon,
        facts.cancel_at_period_end,
        facts.trial_end.map(to_ms)
    ])?;
    Ok(())
}

/// The history of one customer, or of every customer, in the order the changes took effect.
pub(crate) fn list(
    conn: &Connection,
    customer_id: Option<&str>,
) -> Result<Vec<SubscriptionChangeRecord>> {
    let sql = format!(
        "SELECT {COLS} FROM subscription_history WHERE (?1 IS NULL OR customer_id = ?1)
         ORDER BY at, seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([customer_id], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Every customer's transactions that happened before `before`, oldest first.
pub(crate) fn transactions_before(
    conn: &Connection,
    before: DateTime<Utc>,
) -> Result<Vec<Transaction>> {
    let sql = format!(
        "SELECT {} FROM transactions WHERE occurred_at < ?1 ORDER BY occurred_at, seq",
        stripe::TXN_COLS
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([to_ms(before)], stripe::txn_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Every customer's invoices written in `[from, to)`, oldest first.
pub(crate) fn invoices_between(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, customer_id, plan, interval, period_start, period_end, currency, subtotal,
            discount, total, body, created_at
         FROM invoices WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map(params![to_ms(from), to_ms(to)], invoices::invoice_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
