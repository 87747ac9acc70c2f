//! Usage pushes to Stripe (see [`crate::usage_push`]).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::invoices::invoice_row;
use crate::usage_push::state;
use crate::{
    InvoicePush, PushOutcome, PushTarget, RefundRecord, Result, StoreError, StoredInvoice,
};

const COLS: &str = "invoice_id, customer_id, stripe_customer, stripe_subscription, period_start,
    period_end, currency, lines, amount, state, renewal_invoice, standalone_invoice, attempts,
    last_error, request_id, next_attempt_at, created_at, updated_at, hosted_invoice_url";

fn push_row(r: &Row) -> InvoicePush {
    InvoicePush {
        invoice_id: r.get(0),
        customer_id: r.get(1),
        stripe_customer: r.get(2),
        stripe_subscription: r.get(3),
        period_start: r.get(4),
        period_end: r.get(5),
        currency: r.get(6),
        lines: r.get(7),
        amount: r.get(8),
        state: r.get(9),
        renewal_invoice: r.get(10),
        standalone_invoice: r.get(11),
        attempts: r.get(12),
        last_error: r.get(13),
        request_id: r.get(14),
        next_attempt_at: r.get(15),
        created_at: r.get(16),
        updated_at: r.get(17),
        hosted_invoice_url: r.get(18),
    }
}

const INVOICE_COLS: &str = "i.id, i.customer_id, i.plan, i.interval, i.period_start,
    i.period_end, i.currency, i.subtotal, i.discount, i.total, i.body, i.created_at";

pub(crate) async fn to_push(pool: &Pool, limit: usize) -> Result<Vec<StoredInvoice>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {INVOICE_COLS} FROM invoices i
         JOIN subscriptions s ON s.customer_id = i.customer_id AND s.source = 'stripe'
         WHERE NOT EXISTS (SELECT 1 FROM invoice_pushes p WHERE p.invoice_id = i.id)
         ORDER BY i.period_end, i.id LIMIT $1"
    );
    let rows = c.query(&sql, &[&(limit as i64)]).await?;
    Ok(rows.iter().map(invoice_row).collect())
}

pub(crate) async fn starting_between(
    pool: &Pool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {INVOICE_COLS} FROM invoices i WHERE i.period_start >= $1 AND i.period_start < $2
         ORDER BY i.customer_id, i.period_start"
    );
    let rows = c.query(&sql, &[&from, &to]).await?;
    Ok(rows.iter().map(invoice_row).collect())
}

pub(crate) async fn get(pool: &Pool, invoice_id: &str) -> Result<Option<InvoicePush>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {COLS} FROM invoice_pushes WHERE invoice_id = $1");
    Ok(c.query_opt(&sql, &[&invoice_id])
        .await?
        .map(|r| push_row(&r)))
}

pub(crate) async fn insert(pool: &Pool, p: &InvoicePush) -> Result<InvoicePush> {
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO invoice_pushes (invoice_id, customer_id, stripe_customer,
            stripe_subscription, period_start, period_end, currency, lines, amount, state,
            renewal_invoice, standalone_invoice, attempts, last_error, request_id,
            next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT (invoice_id) DO NOTHING",
        &[
            &p.invoice_id,
            &p.customer_id,
            &p.stripe_customer,
            &p.stripe_subscription,
            &p.period_start,
            &p.period_end,
            &p.currency,
            &p.lines,
            &p.amount,
            &p.state,
            &p.renewal_invoice,
            &p.standalone_invoice,
            &p.attempts,
            &p.last_error,
            &p.request_id,
            &p.next_attempt_at,
            &p.created_at,
            &p.updated_at,
        ],
    )
    .await?;
    drop(c);
    get(pool, &p.invoice_id)
        .await?
        .ok_or_else(|| StoreError::Database("invoice push vanished".into()))
}

pub(crate) async fn of_customer(pool: &Pool, customer_id: &str) -> Result<Vec<InvoicePush>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {COLS} FROM invoice_pushes WHERE customer_id = $1 ORDER BY period_start DESC"
    );
    let rows = c.query(&sql, &[&customer_id]).await?;
    Ok(rows.iter().map(push_row).collect())
}

pub(crate) async fn of_stripe_invoice(
    pool: &Pool,
    stripe_invoice: &str,
) -> Result<Vec<InvoicePush>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {COLS} FROM invoice_pushes
         WHERE renewal_invoice = $1 OR standalone_invoice = $1 ORDER BY invoice_id"
    );
    let rows = c.query(&sql, &[&stripe_invoice]).await?;
    Ok(rows.iter().map(push_row).collect())
}

pub(crate) async fn due(pool: &Pool, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT invoice_id FROM invoice_pushes WHERE state = $1 AND next_attempt_at <= $2
             ORDER BY period_end, invoice_id LIMIT $3",
            &[&state::PENDING, &now, &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn claim(
    pool: &Pool,
    invoice_id: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<InvoicePush>> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "UPDATE invoice_pushes SET holder = $2, until = $4
             WHERE invoice_id = $1 AND (holder IS NULL OR until <= $3 OR holder = $2)",
            &[&invoice_id, &holder, &now, &until],
        )
        .await?;
    drop(c);
    if n == 0 {
        return Ok(None);
    }
    get(pool, invoice_id).await
}

pub(crate) async fn set_invoice(
    pool: &Pool,
    invoice_id: &str,
    target: PushTarget,
    stripe_invoice: &str,
    now: DateTime<Utc>,
) -> Result<Option<InvoicePush>> {
    let c = pool.get().await?;
    let sql = match target {
        PushTarget::Renewal => {
            "UPDATE invoice_pushes SET renewal_invoice = COALESCE(renewal_invoice, $2),
                updated_at = $3 WHERE invoice_id = $1"
        }
        PushTarget::Standalone => {
            "UPDATE invoice_pushes SET standalone_invoice = COALESCE(standalone_invoice, $2),
                updated_at = $3 WHERE invoice_id = $1"
        }
    };
    c.execute(sql, &[&invoice_id, &stripe_invoice, &now])
        .await?;
    drop(c);
    get(pool, invoice_id).await
}

pub(crate) async fn finish(
    pool: &Pool,
    invoice_id: &str,
    holder: &str,
    o: &PushOutcome,
) -> Result<bool> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "UPDATE invoice_pushes SET state = CASE WHEN state = 'paid' THEN state ELSE $3 END,
                last_error = $4, request_id = COALESCE($5, request_id),
                attempts = attempts + $6, next_attempt_at = $7, holder = NULL, until = NULL,
                updated_at = $8
             WHERE invoice_id = $1 AND holder = $2",
            &[
                &invoice_id,
                &holder,
                &o.state,
                &o.last_error,
                &o.request_id,
                &i32::from(o.failed),
                &o.next_attempt_at,
                &o.now,
            ],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn set_state_of_stripe_invoice(
    pool: &Pool,
    stripe_invoice: &str,
    new_state: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let c = pool.get().await?;
    Ok(c.execute(
        "UPDATE invoice_pushes SET state = $2, updated_at = $3
         WHERE (standalone_invoice = $1
                OR (renewal_invoice = $1 AND standalone_invoice IS NULL))
           AND state NOT IN ('pending', 'paid', 'skipped') AND state <> $2",
        &[&stripe_invoice, &new_state, &now],
    )
    .await?)
}

pub(crate) async fn set_hosted_url(pool: &Pool, stripe_invoice: &str, url: &str) -> Result<u64> {
    let c = pool.get().await?;
    Ok(c.execute(
        "UPDATE invoice_pushes SET hosted_invoice_url = $2
         WHERE (standalone_invoice = $1
                OR (renewal_invoice = $1 AND standalone_invoice IS NULL))
           AND hosted_invoice_url IS DISTINCT FROM $2",
        &[&stripe_invoice, &url],
    )
    .await?)
}

const REFUND_COLS: &str = "id, dedup_key, customer_id, payment, payment_intent, amount, currency,
    reason, source, state, stripe_refund, request_id, last_error, credits_taken,
    credits_shortfall, created_at, updated_at";

fn refund_row(r: &Row) -> RefundRecord {
    RefundRecord {
        id: r.get(0),
        dedup_key: r.get(1),
        customer_id: r.get(2),
        payment: r.get(3),
        payment_intent: r.get(4),
        amount: r.get(5),
        currency: r.get(6),
        reason: r.get(7),
        source: r.get(8),
        state: r.get(9),
        stripe_refund: r.get(10),
        request_id: r.get(11),
        last_error: r.get(12),
        credits_taken: r.get(13),
        credits_shortfall: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
    }
}

pub(crate) async fn insert_refund(pool: &Pool, r: &RefundRecord) -> Result<(RefundRecord, bool)> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "INSERT INTO refunds (id, dedup_key, customer_id, payment, payment_intent, amount,
                currency, reason, source, state, stripe_refund, request_id, last_error,
                credits_taken, credits_shortfall, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (dedup_key) DO NOTHING",
            &[
                &r.id,
                &r.dedup_key,
                &r.customer_id,
                &r.payment,
                &r.payment_intent,
                &r.amount,
                &r.currency,
                &r.reason,
                &r.source,
                &r.state,
                &r.stripe_refund,
                &r.request_id,
                &r.last_error,
                &r.credits_taken,
                &r.credits_shortfall,
                &r.created_at,
                &r.updated_at,
            ],
        )
        .await?;
    let sql = format!("SELECT {REFUND_COLS} FROM refunds WHERE dedup_key = $1");
    let row = c.query_one(&sql, &[&r.dedup_key]).await?;
    Ok((refund_row(&row), n > 0))
}

pub(crate) async fn update_refund(pool: &Pool, r: &RefundRecord) -> Result<()> {
    let c = pool.get().await?;
    c.execute(
        "UPDATE refunds SET state = $2, stripe_refund = $3, request_id = $4, last_error = $5,
            credits_taken = $6, credits_shortfall = $7, updated_at = $8 WHERE id = $1",
        &[
            &r.id,
            &r.state,
            &r.stripe_refund,
            &r.request_id,
            &r.last_error,
            &r.credits_taken,
            &r.credits_shortfall,
            &r.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn refunds_of(pool: &Pool, payment_intent: &str) -> Result<Vec<RefundRecord>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {REFUND_COLS} FROM refunds WHERE payment_intent = $1 ORDER BY created_at, id"
    );
    let rows = c.query(&sql, &[&payment_intent]).await?;
    Ok(rows.iter().map(refund_row).collect())
}
