//! Customers and their subscription.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::time::{from_ms, to_ms};
use crate::{
    AuditContext, AuditEntry, Customer, CustomerUpsert, Result, Subscription, SubscriptionUpsert,
};

const CUSTOMER_COLS: &str =
    "id, email, name, metadata, billing_anchor, created_at, updated_at, billed_through,
     email_opt_out, previous_anchor";

fn customer_row(r: &Row<'_>) -> rusqlite::Result<Customer> {
    let metadata: String = r.get(3)?;
    Ok(Customer {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        billing_anchor: from_ms(r.get(4)?),
        created_at: from_ms(r.get(5)?),
        updated_at: from_ms(r.get(6)?),
        billed_through: r.get::<_, Option<i64>>(7)?.map(from_ms),
        email_opt_out: r.get(8)?,
        previous_anchor: r.get::<_, Option<i64>>(9)?.map(from_ms),
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<Customer>> {
    let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], customer_row)
        .optional()?)
}

pub(crate) fn list_after(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Customer>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Two statements rather than `?1 IS NULL OR id > ?1`, so both are a range scan of the key.
    let rows = match after {
        Some(after) => {
            let sql =
                format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id > ?1 ORDER BY id LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![after, limit], customer_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }
        None => {
            let sql = format!("SELECT {CUSTOMER_COLS} FROM customers ORDER BY id LIMIT ?1");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![limit], customer_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    Ok(rows)
}

pub(crate) fn upsert(
    conn: &Connection,
    c: &CustomerUpsert,
    audit: Option<AuditContext>,
) -> Result<(Customer, bool)> {
    let before = get(conn, &c.id)?;
    let existed = before.is_some();
    let now = to_ms(c.now);
    let metadata = c.metadata.as_ref().map(|m| m.to_string());
    conn.prepare_cached(
        "INSERT INTO customers (id, email, name, metadata, billing_anchor, created_at, updated_at,
            email_opt_out)
         VALUES (?1, ?2, ?3, COALESCE(?4, '{}'), ?5, ?5, ?5, COALESCE(?6, 0))
         ON CONFLICT (id) DO UPDATE SET
            email = COALESCE(excluded.email, email),
            name = COALESCE(excluded.name, name),
            metadata = COALESCE(?4, metadata),
            email_opt_out = COALESCE(?6, email_opt_out),
            updated_at = excluded.updated_at",
    )?
    .execute(params![
        c.id,
        c.email,
        c.name,
        metadata,
        now,
        c.email_opt_out
    ])?;
    let customer = get(conn, &c.id)?
        .ok_or_else(|| crate::StoreError::Database("customer vanished after upsert".into()))?;
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
        super::audit::insert(conn, &e)?;
    }
    Ok((customer, !existed))
}

pub(crate) fn anchors(conn: &Connection, ids: &[String]) -> Result<Vec<crate::CustomerAnchors>> {
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, billing_anchor, previous_anchor FROM customers WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = stmt
            .query_row([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()?;
        if let Some((created, anchor, previous)) = row {
            out.push((
                id.clone(),
                from_ms(created),
                tally_core::period::AllowanceAnchor {
                    anchor: from_ms(anchor),
                    previous: previous.map(from_ms),
                },
            ));
        }
    }
    Ok(out)
}

pub(crate) fn set_allowance_anchor(
    conn: &Connection,
    customer_id: &str,
    anchor: DateTime<Utc>,
) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE customers SET previous_anchor = billing_anchor, billing_anchor = ?2
             WHERE id = ?1 AND billing_anchor <> ?2",
        )?
        .execute(params![customer_id, to_ms(anchor)])?;
    if changed > 0 {
        conn.prepare_cached("UPDATE anchor_version SET version = version + 1 WHERE id = 1")?
            .execute([])?;
    }
    Ok(changed > 0)
}

pub(crate) fn anchor_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT version FROM anchor_version WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub(crate) const SUB_COLS: &str =
    "id, customer_id, plan, interval, status, source, created_at, updated_at, past_due_since, stripe";

pub(crate) fn sub_row(r: &Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        plan: r.get(2)?,
        interval: r.get(3)?,
        status: r.get(4)?,
        source: r.get(5)?,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        past_due_since: r.get::<_, Option<i64>>(8)?.map(from_ms),
        stripe: r
            .get::<_, Option<String>>(9)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

pub(crate) fn put_subscription(
    conn: &Connection,
    s: &SubscriptionUpsert,
    audit: Option<AuditContext>,
) -> Result<Subscription> {
    if get(conn, &s.customer_id)?.is_none() {
        return Err(crate::StoreError::Invalid(format!(
            "no customer {:?}",
            s.customer_id
        )));
    }
    let before = get_subscription(conn, &s.customer_id)?;
    let now = to_ms(s.now);
    conn.prepare_cached(
        "INSERT INTO subscriptions (id, customer_id, plan, interval, status, source, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (customer_id) DO UPDATE SET
            plan = excluded.plan, interval = excluded.interval, status = excluded.status,
            source = excluded.source, updated_at = excluded.updated_at,
            past_due_since = NULL, stripe = NULL",
    )?
    .execute(params![
        format!("sub_{}", s.customer_id),
        s.customer_id,
        s.plan,
        s.interval,
        s.status,
        s.source,
        now
    ])?;
    let sub = get_subscription(conn, &s.customer_id)?
        .ok_or_else(|| crate::StoreError::Database("subscription vanished after upsert".into()))?;
    super::history::record(conn, &s.customer_id, s.now)?;
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
        super::audit::insert(conn, &e)?;
    }
    Ok(sub)
}

pub(crate) fn get_subscription(
    conn: &Connection,
    customer_id: &str,
) -> Result<Option<Subscription>> {
    let sql = format!("SELECT {SUB_COLS} FROM subscriptions WHERE customer_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([customer_id], sub_row)
        .optional()?)
}

pub(crate) fn list_subscriptions(conn: &Connection) -> Result<Vec<Subscription>> {
    let sql = format!("SELECT {SUB_COLS} FROM subscriptions ORDER BY customer_id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], sub_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
