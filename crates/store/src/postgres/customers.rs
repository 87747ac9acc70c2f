//! Customers and their subscription.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use crate::{
    AuditContext, AuditEntry, Customer, CustomerUpsert, Result, StoreError, Subscription,
    SubscriptionUpsert,
};

const CUSTOMER_COLS: &str =
    "id, email, name, metadata, billing_anchor, created_at, updated_at, billed_through,
     email_opt_out, previous_anchor";

fn customer_row(r: &Row) -> Customer {
    Customer {
        id: r.get(0),
        email: r.get(1),
        name: r.get(2),
        metadata: r.get(3),
        billing_anchor: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
        billed_through: r.get(7),
        email_opt_out: r.get(8),
        previous_anchor: r.get(9),
    }
}

pub(crate) async fn get(pool: &Pool, id: &str) -> Result<Option<Customer>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = $1");
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(customer_row))
}

pub(crate) async fn list_after(
    pool: &Pool,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Customer>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match after {
        Some(after) => {
            let sql =
                format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id > $1 ORDER BY id LIMIT $2");
            c.query(&sql, &[&after, &limit]).await?
        }
        None => {
            let sql = format!("SELECT {CUSTOMER_COLS} FROM customers ORDER BY id LIMIT $1");
            c.query(&sql, &[&limit]).await?
        }
    };
    Ok(rows.iter().map(customer_row).collect())
}

pub(crate) async fn upsert(
    pool: &Pool,
    u: &CustomerUpsert,
    audit: Option<AuditContext>,
) -> Result<(Customer, bool)> {
    let mut c = pool.get().await?;
    let c = c.transaction().await?;
    let before = match &audit {
        Some(_) => {
            let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = $1 FOR UPDATE");
            c.query_opt(&sql, &[&u.id])
                .await?
                .as_ref()
                .map(customer_row)
        }
        None => None,
    };
    let sql = format!(
        "INSERT INTO customers (id, email, name, metadata, billing_anchor, created_at, updated_at,
            email_opt_out)
         VALUES ($1, $2, $3, COALESCE($4, '{{}}'::jsonb), $5, $5, $5, COALESCE($6, FALSE))
         ON CONFLICT (id) DO UPDATE SET
            email = COALESCE(EXCLUDED.email, customers.email),
            name = COALESCE(EXCLUDED.name, customers.name),
            metadata = COALESCE($4, customers.metadata),
            email_opt_out = COALESCE($6, customers.email_opt_out),
            updated_at = EXCLUDED.updated_at
         RETURNING {CUSTOMER_COLS}, (xmax = 0) AS inserted"
    );
    let row = c
        .query_one(
            &sql,
            &[
                &u.id,
                &u.email,
                &u.name,
                &u.metadata,
                &u.now,
                &u.email_opt_out,
            ],
        )
        .await?;
    let customer = customer_row(&row);
    if let Some(e) = audit.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "customer",
            &customer.id,
            Some(&customer.id),
            before.map(|b| serde_json::json!(b)),
            Some(serde_json::json!(customer)),
        )
    }) {
        super::audit::insert(&c, &e).await?;
    }
    c.commit().await?;
    Ok((customer, row.get(10)))
}

pub(crate) async fn anchors(pool: &Pool, ids: &[String]) -> Result<Vec<crate::CustomerAnchors>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT id, created_at, billing_anchor, previous_anchor FROM customers
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                tally_core::period::AllowanceAnchor {
                    anchor: r.get(2),
                    previous: r.get(3),
                },
            )
        })
        .collect())
}

pub(crate) async fn set_allowance_anchor(
    pool: &Pool,
    customer_id: &str,
    anchor: DateTime<Utc>,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let changed = set_anchor_in(&tx, customer_id, anchor).await?;
    tx.commit().await?;
    Ok(changed)
}

/// [`set_allowance_anchor`] inside the caller's transaction.
pub(crate) async fn set_anchor_in(
    tx: &deadpool_postgres::Transaction<'_>,
    customer_id: &str,
    anchor: DateTime<Utc>,
) -> Result<bool> {
    let changed = tx
        .execute(
            "UPDATE customers SET previous_anchor = billing_anchor, billing_anchor = $2
             WHERE id = $1 AND billing_anchor <> $2",
            &[&customer_id, &anchor],
        )
        .await?;
    if changed > 0 {
        tx.execute(
            "UPDATE anchor_version SET version = version + 1 WHERE id = 1",
            &[],
        )
        .await?;
    }
    Ok(changed > 0)
}

pub(crate) async fn anchor_version(pool: &Pool) -> Result<i64> {
    let c = pool.get().await?;
    let row = c
        .query_opt("SELECT version FROM anchor_version WHERE id = 1", &[])
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

pub(crate) const SUB_COLS: &str =
    "id, customer_id, plan, interval, status, source, created_at, updated_at, past_due_since, stripe";

pub(crate) fn sub_row(r: &Row) -> Subscription {
    Subscription {
        id: r.get(0),
        customer_id: r.get(1),
        plan: r.get(2),
        interval: r.get(3),
        status: r.get(4),
        source: r.get(5),
        created_at: r.get(6),
        updated_at: r.get(7),
        past_due_since: r.get(8),
        stripe: r.get(9),
    }
}

pub(crate) async fn put_subscription(
    pool: &Pool,
    s: &SubscriptionUpsert,
    audit: Option<AuditContext>,
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
    let sql = format!("SELECT {SUB_COLS} FROM subscriptions WHERE customer_id = $1 FOR UPDATE");
    let before = c
        .query_opt(&sql, &[&s.customer_id])
        .await?
        .as_ref()
        .map(sub_row);
    let sql = format!(
        "INSERT INTO subscriptions (id, customer_id, plan, interval, status, source, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (customer_id) DO UPDATE SET
            plan = EXCLUDED.plan, interval = EXCLUDED.interval, status = EXCLUDED.status,
            source = EXCLUDED.source, updated_at = EXCLUDED.updated_at,
            past_due_since = NULL, stripe = NULL
         RETURNING {SUB_COLS}"
    );
    let id = format!("sub_{}", s.customer_id);
    let row = c
        .query_one(
            &sql,
            &[
                &id,
                &s.customer_id,
                &s.plan,
                &s.interval,
                &s.status,
                &s.source,
                &s.now,
            ],
        )
        .await?;
    let sub = sub_row(&row);
    super::history::record(&c, &s.customer_id, s.now).await?;
    if let Some(e) = audit.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "subscription",
            &sub.id,
            Some(&sub.customer_id),
            before.map(|b| serde_json::json!(b)),
            Some(serde_json::json!(sub)),
        )
    }) {
        super::audit::insert(&c, &e).await?;
    }
    c.commit().await?;
    Ok(sub)
}

pub(crate) async fn get_subscription(
    pool: &Pool,
    customer_id: &str,
) -> Result<Option<Subscription>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {SUB_COLS} FROM subscriptions WHERE customer_id = $1");
    Ok(c.query_opt(&sql, &[&customer_id])
        .await?
        .as_ref()
        .map(sub_row))
}

pub(crate) async fn list_subscriptions(pool: &Pool) -> Result<Vec<Subscription>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {SUB_COLS} FROM subscriptions ORDER BY customer_id");
    Ok(c.query(&sql, &[]).await?.iter().map(sub_row).collect())
}
