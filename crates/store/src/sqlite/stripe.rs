//! The Stripe webhook inbox, the subscription mirror and transactions.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::customers;
use crate::time::{from_ms, to_ms};
use crate::{
    InboxEvent, InboxFilter, InboxOutcome, NewInboxEvent, NewTransaction, Result, StoreError,
    StripeSubscriptionUpsert, Subscription, Transaction,
};

const EVENT_COLS: &str = "event_id, type, object_id, created, body, source, received_at, status,
    attempts, next_attempt_at, last_error, outcome, processed_at";

fn event_row(r: &Row<'_>) -> rusqlite::Result<InboxEvent> {
    Ok(InboxEvent {
        event_id: r.get(0)?,
        event_type: r.get(1)?,
        object_id: r.get(2)?,
        created: r.get(3)?,
        body: r.get(4)?,
        source: r.get(5)?,
        received_at: from_ms(r.get(6)?),
        status: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: from_ms(r.get(9)?),
        last_error: r.get(10)?,
        outcome: r.get(11)?,
        processed_at: r.get::<_, Option<i64>>(12)?.map(from_ms),
    })
}

pub(crate) fn insert(conn: &Connection, e: &NewInboxEvent) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO stripe_events (event_id, type, object_id, created, body, source,
                received_at, status, attempts, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?7)
             ON CONFLICT (event_id) DO NOTHING",
        )?
        .execute(params![
            e.event_id,
            e.event_type,
            e.object_id,
            e.created,
            e.body,
            e.source,
            to_ms(e.received_at)
        ])?;
    Ok(n == 1)
}

pub(crate) fn claim(
    conn: &Connection,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<InboxEvent>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "UPDATE stripe_events SET claimed_by = ?1, claimed_until = ?3
         WHERE event_id IN (
            SELECT e.event_id FROM stripe_events e
            WHERE e.status = 'pending' AND e.next_attempt_at <= ?2
              AND (e.claimed_until IS NULL OR e.claimed_until <= ?2)
              AND NOT EXISTS (
                SELECT 1 FROM stripe_events p
                WHERE p.object_id = e.object_id AND p.status = 'pending'
                  AND (p.created, p.event_id) < (e.created, e.event_id))
            ORDER BY e.created, e.event_id LIMIT ?4)
         RETURNING {EVENT_COLS}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![holder, to_ms(now), to_ms(until), limit], event_row)?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
    Ok(out)
}

pub(crate) fn finish(
    conn: &Connection,
    event_id: &str,
    holder: &str,
    outcome: &InboxOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let now = to_ms(now);
    let (status, outcome_text, error, next) = match outcome {
        InboxOutcome::Applied(o) => ("applied", Some(o.as_str()), None, now),
        InboxOutcome::Ignored(o) => ("ignored", Some(o.as_str()), None, now),
        InboxOutcome::Retry { error, retry_at } => {
            ("pending", None, Some(error.as_str()), to_ms(*retry_at))
        }
        InboxOutcome::Parked(e) => ("parked", None, Some(e.as_str()), now),
    };
    let done = status != "pending";
    conn.prepare_cached(
        "UPDATE stripe_events SET status = ?3, outcome = COALESCE(?4, outcome),
            last_error = COALESCE(?5, last_error), next_attempt_at = ?6,
            attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL,
            processed_at = CASE WHEN ?7 THEN ?8 ELSE processed_at END
         WHERE event_id = ?1 AND claimed_by = ?2",
    )?
    .execute(params![
        event_id,
        holder,
        status,
        outcome_text,
        error,
        next,
        done,
        now
    ])?;
    Ok(())
}

pub(crate) fn list(conn: &Connection, f: &InboxFilter) -> Result<Vec<InboxEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLS} FROM stripe_events
         WHERE (?1 = 0 OR status = 'parked' OR last_error IS NOT NULL)
           AND (?2 IS NULL OR received_at >= ?2)
         ORDER BY received_at DESC, event_id DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            f.failed,
            f.since.map(to_ms),
            i64::try_from(f.limit).unwrap_or(i64::MAX)
        ],
        event_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<InboxEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM stripe_events WHERE event_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], event_row)
        .optional()?)
}

pub(crate) fn replay(
    conn: &Connection,
    id: Option<&str>,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<u64> {
    if id.is_none() && since.is_none() {
        return Err(StoreError::Invalid(
            "replay needs an event id or an instant".into(),
        ));
    }
    let n = conn
        .prepare_cached(
            "UPDATE stripe_events SET status = 'pending', next_attempt_at = ?3,
                claimed_by = NULL, claimed_until = NULL
             WHERE (?1 IS NULL OR event_id = ?1) AND (?2 IS NULL OR received_at >= ?2)",
        )?
        .execute(params![id, since.map(to_ms), to_ms(now)])?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn put_subscription(
    conn: &Connection,
    s: &StripeSubscriptionUpsert,
) -> Result<Subscription> {
    if customers::get(conn, &s.customer_id)?.is_none() {
        return Err(StoreError::Invalid(format!(
            "no customer {:?}",
            s.customer_id
        )));
    }
    let now = to_ms(s.now);
    // An instant already recorded is kept: the grace period counts from the first failure.
    conn.prepare_cached(
        "INSERT INTO subscriptions (id, customer_id, plan, interval, status, source, created_at,
            updated_at, past_due_since, stripe)
         VALUES (?1, ?2, ?3, ?4, ?5, 'stripe', ?6, ?6, ?7, ?8)
         ON CONFLICT (customer_id) DO UPDATE SET
            plan = excluded.plan, interval = excluded.interval, status = excluded.status,
            source = 'stripe', updated_at = excluded.updated_at, stripe = excluded.stripe,
            past_due_since = CASE WHEN excluded.past_due_since IS NULL THEN NULL
                ELSE COALESCE(subscriptions.past_due_since, excluded.past_due_since) END",
    )?
    .execute(params![
        format!("sub_{}", s.customer_id),
        s.customer_id,
        s.plan,
        s.interval,
        s.status,
        now,
        s.past_due_at.map(to_ms),
        s.stripe.to_string()
    ])?;
    if let Some(anchor) = s.allowance_anchor {
        customers::set_allowance_anchor(conn, &s.customer_id, anchor)?;
    }
    super::history::record(conn, &s.customer_id, s.changed_at)?;
    customers::get_subscription(conn, &s.customer_id)?
        .ok_or_else(|| StoreError::Database("subscription vanished after upsert".into()))
}

pub(crate) const TXN_COLS: &str =
    "id, key, customer_id, kind, status, amount, currency, description,
    stripe_invoice, stripe_payment_intent, stripe_charge, stripe_checkout_session,
    stripe_subscription, occurred_at, created_at";

pub(crate) fn txn_row(r: &Row<'_>) -> rusqlite::Result<Transaction> {
    Ok(Transaction {
        id: r.get(0)?,
        key: r.get(1)?,
        customer_id: r.get(2)?,
        kind: r.get(3)?,
        status: r.get(4)?,
        amount: r.get(5)?,
        currency: r.get(6)?,
        description: r.get(7)?,
        stripe_invoice: r.get(8)?,
        stripe_payment_intent: r.get(9)?,
        stripe_charge: r.get(10)?,
        stripe_checkout_session: r.get(11)?,
        stripe_subscription: r.get(12)?,
        occurred_at: from_ms(r.get(13)?),
        created_at: from_ms(r.get(14)?),
    })
}

pub(crate) fn record_transaction(conn: &Connection, t: &NewTransaction) -> Result<bool> {
    let sql = format!(
        "INSERT INTO transactions ({TXN_COLS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (key) DO NOTHING"
    );
    let n = conn.prepare_cached(&sql)?.execute(params![
        t.id,
        t.key,
        t.customer_id,
        t.kind,
        t.status,
        t.amount,
        t.currency,
        t.description,
        t.stripe_invoice,
        t.stripe_payment_intent,
        t.stripe_charge,
        t.stripe_checkout_session,
        t.stripe_subscription,
        to_ms(t.occurred_at),
        to_ms(t.created_at)
    ])?;
    Ok(n == 1)
}

pub(crate) fn transactions(
    conn: &Connection,
    customer_id: &str,
    limit: usize,
    starting_after: Option<&str>,
) -> Result<Vec<Transaction>> {
    let sql = format!(
        "SELECT {TXN_COLS} FROM transactions
         WHERE customer_id = ?1
           AND (?2 IS NULL OR seq < (SELECT seq FROM transactions
                                     WHERE id = ?2 AND customer_id = ?1))
         ORDER BY seq DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            customer_id,
            starting_after,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        txn_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
