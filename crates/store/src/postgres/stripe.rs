//! The Stripe webhook inbox, the subscription mirror and transactions.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::customers::{sub_row, SUB_COLS};
use crate::{
    InboxEvent, InboxFilter, InboxOutcome, NewInboxEvent, NewTransaction, Result, StoreError,
    StripeSubscriptionUpsert, Subscription, Transaction,
};

const EVENT_COLS: &str = "event_id, type, object_id, created, body, source, received_at, status,
    attempts, next_attempt_at, last_error, outcome, processed_at";

fn event_row(r: &Row) -> InboxEvent {
    InboxEvent {
        event_id: r.get(0),
        event_type: r.get(1),
        object_id: r.get(2),
        created: r.get(3),
        body: r.get(4),
        source: r.get(5),
        received_at: r.get(6),
        status: r.get(7),
        attempts: r.get(8),
        next_attempt_at: r.get(9),
        last_error: r.get(10),
        outcome: r.get(11),
        processed_at: r.get(12),
    }
}

pub(crate) async fn insert(pool: &Pool, e: &NewInboxEvent) -> Result<bool> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "INSERT INTO stripe_events (event_id, type, object_id, created, body, source,
                received_at, status, attempts, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $7)
             ON CONFLICT (event_id) DO NOTHING",
            &[
                &e.event_id,
                &e.event_type,
                &e.object_id,
                &e.created,
                &e.body,
                &e.source,
                &e.received_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(crate) async fn claim(
    pool: &Pool,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<InboxEvent>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let c = pool.get().await?;
    // SKIP LOCKED: processes claiming at the same time take different rows; the claim's lease
    // keeps a claimed row from every other process until it expires (after a crash).
    let sql = format!(
        "UPDATE stripe_events SET claimed_by = $1, claimed_until = $3
         WHERE event_id IN (
            SELECT e.event_id FROM stripe_events e
            WHERE e.status = 'pending' AND e.next_attempt_at <= $2
              AND (e.claimed_until IS NULL OR e.claimed_until <= $2)
              AND NOT EXISTS (
                SELECT 1 FROM stripe_events p
                WHERE p.object_id = e.object_id AND p.status = 'pending'
                  AND (p.created, p.event_id) < (e.created, e.event_id))
            ORDER BY e.created, e.event_id LIMIT $4
            FOR UPDATE SKIP LOCKED)
           AND (claimed_until IS NULL OR claimed_until <= $2)
         RETURNING {EVENT_COLS}"
    );
    let rows = c.query(&sql, &[&holder, &now, &until, &limit]).await?;
    let mut out: Vec<InboxEvent> = rows.iter().map(event_row).collect();
    out.sort_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
    Ok(out)
}

pub(crate) async fn finish(
    pool: &Pool,
    event_id: &str,
    holder: &str,
    outcome: &InboxOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let (status, outcome_text, error, next) = match outcome {
        InboxOutcome::Applied(o) => ("applied", Some(o.as_str()), None, now),
        InboxOutcome::Ignored(o) => ("ignored", Some(o.as_str()), None, now),
        InboxOutcome::Retry { error, retry_at } => {
            ("pending", None, Some(error.as_str()), *retry_at)
        }
        InboxOutcome::Parked(e) => ("parked", None, Some(e.as_str()), now),
    };
    let done = status != "pending";
    let c = pool.get().await?;
    c.execute(
        "UPDATE stripe_events SET status = $3, outcome = COALESCE($4, outcome),
            last_error = COALESCE($5, last_error), next_attempt_at = $6,
            attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL,
            processed_at = CASE WHEN $7 THEN $8 ELSE processed_at END
         WHERE event_id = $1 AND claimed_by = $2",
        &[
            &event_id,
            &holder,
            &status,
            &outcome_text,
            &error,
            &next,
            &done,
            &now,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn list(pool: &Pool, f: &InboxFilter) -> Result<Vec<InboxEvent>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {EVENT_COLS} FROM stripe_events
         WHERE (NOT $1 OR status = 'parked' OR last_error IS NOT NULL)
           AND ($2::timestamptz IS NULL OR received_at >= $2)
         ORDER BY received_at DESC, event_id DESC LIMIT $3"
    );
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
    let rows = c.query(&sql, &[&f.failed, &f.since, &limit]).await?;
    Ok(rows.iter().map(event_row).collect())
}

pub(crate) async fn get(pool: &Pool, id: &str) -> Result<Option<InboxEvent>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {EVENT_COLS} FROM stripe_events WHERE event_id = $1");
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(event_row))
}

pub(crate) async fn replay(
    pool: &Pool,
    id: Option<&str>,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<u64> {
    if id.is_none() && since.is_none() {
        return Err(StoreError::Invalid(
            "replay needs an event id or an instant".into(),
        ));
    }
    let c = pool.get().await?;
    Ok(c.execute(
        "UPDATE stripe_events SET status = 'pending', next_attempt_at = $3,
            claimed_by = NULL, claimed_until = NULL
         WHERE ($1::text IS NULL OR event_id = $1)
           AND ($2::timestamptz IS NULL OR received_at >= $2)",
        &[&id, &since, &now],
    )
    .await?)
}

pub(crate) async fn put_subscription(
    pool: &Pool,
    s: &StripeSubscriptionUpsert,
) -> Result<Subscription> {
    let mut c = pool.get().await?;
    let c = c.transaction().await?;
    if c.query_opt("SELECT 1 FROM customers WHERE id = $1", &[&s.customer_id])
        .await?
        .is_none()
    {
        return Err(StoreError::Invalid(format!(
            "no customer {:?}",
            s.customer_id
        )));
    }
    // An instant already recorded is kept: the grace period counts from the first failure.
    let sql = format!(
        "INSERT INTO subscriptions (id, customer_id, plan, interval, status, source, created_at,
            updated_at, past_due_since, stripe)
         VALUES ($1, $2, $3, $4, $5, 'stripe', $6, $6, $7, $8)
         ON CONFLICT (customer_id) DO UPDATE SET
            plan = EXCLUDED.plan, interval = EXCLUDED.interval, status = EXCLUDED.status,
            source = 'stripe', updated_at = EXCLUDED.updated_at, stripe = EXCLUDED.stripe,
            past_due_since = CASE WHEN EXCLUDED.past_due_since IS NULL THEN NULL
                ELSE COALESCE(subscriptions.past_due_since, EXCLUDED.past_due_since) END
         RETURNING {SUB_COLS}"
    );
    let row = c
        .query_one(
            &sql,
            &[
                &format!("sub_{}", s.customer_id),
                &s.customer_id,
                &s.plan,
                &s.interval,
                &s.status,
                &s.now,
                &s.past_due_at,
                &s.stripe,
            ],
        )
        .await?;
    if let Some(anchor) = s.allowance_anchor {
        super::customers::set_anchor_in(&c, &s.customer_id, anchor).await?;
    }
    super::history::record(&c, &s.customer_id, s.changed_at).await?;
    c.commit().await?;
    Ok(sub_row(&row))
}

pub(crate) const TXN_COLS: &str =
    "id, key, customer_id, kind, status, amount, currency, description,
    stripe_invoice, stripe_payment_intent, stripe_charge, stripe_checkout_session,
    stripe_subscription, occurred_at, created_at";

pub(crate) fn txn_row(r: &Row) -> Transaction {
    Transaction {
        id: r.get(0),
        key: r.get(1),
        customer_id: r.get(2),
        kind: r.get(3),
        status: r.get(4),
        amount: r.get(5),
        currency: r.get(6),
        description: r.get(7),
        stripe_invoice: r.get(8),
        stripe_payment_intent: r.get(9),
        stripe_charge: r.get(10),
        stripe_checkout_session: r.get(11),
        stripe_subscription: r.get(12),
        occurred_at: r.get(13),
        created_at: r.get(14),
    }
}

pub(crate) async fn record_transaction(pool: &Pool, t: &NewTransaction) -> Result<bool> {
    let c = pool.get().await?;
    let sql = format!(
        "INSERT INTO transactions ({TXN_COLS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (key) DO NOTHING"
    );
    let n = c
        .execute(
            &sql,
            &[
                &t.id,
                &t.key,
                &t.customer_id,
                &t.kind,
                &t.status,
                &t.amount,
                &t.currency,
                &t.description,
                &t.stripe_invoice,
                &t.stripe_payment_intent,
                &t.stripe_charge,
                &t.stripe_checkout_session,
                &t.stripe_subscription,
                &t.occurred_at,
                &t.created_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(crate) async fn transactions(
    pool: &Pool,
    customer_id: &str,
    limit: usize,
    starting_after: Option<&str>,
) -> Result<Vec<Transaction>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {TXN_COLS} FROM transactions
         WHERE customer_id = $1
           AND ($2::text IS NULL OR seq < (SELECT seq FROM transactions
                                           WHERE id = $2 AND customer_id = $1))
         ORDER BY seq DESC LIMIT $3"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(&sql, &[&customer_id, &starting_after, &limit])
        .await?;
    Ok(rows.iter().map(txn_row).collect())
}
