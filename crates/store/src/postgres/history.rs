//! The subscription history and the facts business metrics read (all customers' transactions
//! and invoices).

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use super::{customers, invoices, stripe};
use crate::history::{HistoryFacts, SubscriptionChangeRecord};
use crate::{Result, StoredInvoice, Transaction};

const COLS: &str = "seq, customer_id, at, plan, interval, status, source, coupon,
    cancel_at_period_end, trial_end";

fn row(r: &Row) -> SubscriptionChangeRecord {
    SubscriptionChangeRecord {
        seq: r.get(0),
        customer_id: r.get(1),
        at: r.get(2),
        plan: r.get(3),
        interval: r.get(4),
        status: r.get(5),
        source: r.get(6),
        coupon: r.get(7),
        cancel_at_period_end: r.get(8),
        trial_end: r.get(9),
    }
}

/// Appends the customer's current subscription to its history at `at`, unless it equals the last
/// recorded state. Runs inside the transaction that changed the subscription, which holds the
/// subscription row's lock, so concurrent changes of one customer append in order.
pub(crate) async fn record<C: GenericClient>(
    c: &C,
    customer_id: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let sql = format!(
        "SELECT {} FROM subscriptions WHERE customer_id = $1",
        customers::SUB_COLS
    );
    let Some(sub) = c
        .query_opt(&sql, &[&customer_id])
        .await?
        .as_ref()
        .map(customers::sub_row)
    else {
        return Ok(());
    };
    let local_coupon: Option<String> = c
        .query_opt(
            "SELECT coupon_id FROM coupon_redemptions WHERE customer_id = $1
             ORDER BY redeemed_at DESC, coupon_id LIMIT 1",
            &[&customer_id],
        )
        .await?
        .map(|r| r.get(0));
    let facts = HistoryFacts::of(&sub, local_coupon);
    let sql = format!(
        "SELECT {COLS} FROM subscription_history WHERE customer_id = $1 ORDER BY seq DESC LIMIT 1"
    );
    let last = c.query_opt(&sql, &[&customer_id]).await?.as_ref().map(row);
    if last.as_ref().map(HistoryFacts::of_record).as_ref() == Some(&facts) {
        return Ok(());
    }
    c.execute(
        "INSERT INTO subscription_history (customer_id, at, plan, interval, status, source, coupon,
            cancel_at_period_end, trial_end)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &customer_id,
            &at,
            &facts.plan,
            &facts.interval,
            &facts.status,
            &facts.source,
            &facts.coupon,
            &facts.cancel_at_period_end,
            &facts.trial_end,
        ],
    )
    .await?;
    Ok(())
}

/// The history of one customer, or of every customer, in the order the changes took effect.
pub(crate) async fn list(
    pool: &Pool,
    customer_id: Option<&str>,
) -> Result<Vec<SubscriptionChangeRecord>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {COLS} FROM subscription_history
         WHERE ($1::TEXT IS NULL OR customer_id = $1) ORDER BY at, seq"
    );
    let rows = c.query(&sql, &[&customer_id]).await?;
    Ok(rows.iter().map(row).collect())
}

/// Every customer's transactions that happened before `before`, oldest first.
pub(crate) async fn transactions_before(
    pool: &Pool,
    before: DateTime<Utc>,
) -> Result<Vec<Transaction>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {} FROM transactions WHERE occurred_at < $1 ORDER BY occurred_at, seq",
        stripe::TXN_COLS
    );
    let rows = c.query(&sql, &[&before]).await?;
    Ok(rows.iter().map(stripe::txn_row).collect())
}

/// Every customer's invoices written in `[from, to)`, oldest first.
pub(crate) async fn invoices_between(
    pool: &Pool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT id, customer_id, plan, interval, period_start, period_end, currency, subtotal,
                discount, total, body, created_at
             FROM invoices WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id",
            &[&from, &to],
        )
        .await?;
    Ok(rows.iter().map(invoices::invoice_row).collect())
}
