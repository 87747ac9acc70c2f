//! Links to Stripe (see [`crate::stripe_links`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::time::{from_ms, to_ms};
use crate::{
    AuditContext, AuditEntry, CallOutcome, CheckoutRecord, CouponRedemption, PlanChangeRecord,
    RedeemOutcome, Result, StoreError, StripeCustomerLink,
};

fn link_row(r: &Row<'_>) -> rusqlite::Result<StripeCustomerLink> {
    Ok(StripeCustomerLink {
        customer_id: r.get(0)?,
        stripe_id: r.get(1)?,
        created_at: from_ms(r.get(2)?),
        updated_at: from_ms(r.get(3)?),
    })
}

pub(crate) fn link(conn: &Connection, customer_id: &str) -> Result<Option<StripeCustomerLink>> {
    Ok(conn
        .prepare_cached(
            "SELECT customer_id, stripe_id, created_at, updated_at
             FROM stripe_customers WHERE customer_id = ?1",
        )?
        .query_row([customer_id], link_row)
        .optional()?)
}

pub(crate) fn all_links(conn: &Connection) -> Result<Vec<StripeCustomerLink>> {
    let mut stmt = conn.prepare_cached(
        "SELECT customer_id, stripe_id, created_at, updated_at
         FROM stripe_customers WHERE stripe_id IS NOT NULL ORDER BY customer_id",
    )?;
    let rows = stmt.query_map([], link_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn vanished() -> StoreError {
    StoreError::Database("stripe customer link vanished".into())
}

pub(crate) fn claim(
    conn: &Connection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<StripeCustomerLink> {
    conn.prepare_cached(
        "INSERT INTO stripe_customers (customer_id, created_at, updated_at) VALUES (?1, ?2, ?2)
         ON CONFLICT (customer_id) DO NOTHING",
    )?
    .execute(params![customer_id, to_ms(now)])?;
    link(conn, customer_id)?.ok_or_else(vanished)
}

pub(crate) fn set(
    conn: &Connection,
    customer_id: &str,
    stripe_id: &str,
    now: DateTime<Utc>,
) -> Result<StripeCustomerLink> {
    conn.prepare_cached(
        "UPDATE stripe_customers SET stripe_id = COALESCE(stripe_id, ?2), updated_at = ?3
         WHERE customer_id = ?1",
    )?
    .execute(params![customer_id, stripe_id, to_ms(now)])?;
    link(conn, customer_id)?.ok_or_else(vanished)
}

pub(crate) fn insert_checkout(conn: &Connection, c: &CheckoutRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO checkout_sessions (id, customer_id, mode, plan, interval, pack, stripe_id,
            url, request_id, last_error, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        c.id,
        c.customer_id,
        c.mode,
        c.plan,
        c.interval,
        c.pack,
        c.stripe_id,
        c.url,
        c.request_id,
        c.last_error,
        to_ms(c.created_at),
        to_ms(c.updated_at)
    ])?;
    Ok(())
}

pub(crate) fn finish_checkout(
    conn: &Connection,
    id: &str,
    outcome: &CallOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let now = to_ms(now);
    match outcome {
        CallOutcome::Created {
            stripe_id,
            url,
            request_id,
        } => conn
            .prepare_cached(
                "UPDATE checkout_sessions SET stripe_id = ?2, url = ?3, request_id = ?4,
                    last_error = NULL, updated_at = ?5 WHERE id = ?1",
            )?
            .execute(params![id, stripe_id, url, request_id, now])?,
        CallOutcome::Failed { error, request_id } => conn
            .prepare_cached(
                "UPDATE checkout_sessions SET last_error = ?2, request_id = ?3, updated_at = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, error, request_id, now])?,
    };
    Ok(())
}

pub(crate) fn checkout(conn: &Connection, id: &str) -> Result<Option<CheckoutRecord>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, customer_id, mode, plan, interval, pack, stripe_id, url, request_id,
                last_error, created_at, updated_at FROM checkout_sessions WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(CheckoutRecord {
                id: r.get(0)?,
                customer_id: r.get(1)?,
                mode: r.get(2)?,
                plan: r.get(3)?,
                interval: r.get(4)?,
                pack: r.get(5)?,
                stripe_id: r.get(6)?,
                url: r.get(7)?,
                request_id: r.get(8)?,
                last_error: r.get(9)?,
                created_at: from_ms(r.get(10)?),
                updated_at: from_ms(r.get(11)?),
            })
        })
        .optional()?)
}

pub(crate) fn insert_plan_change(conn: &Connection, c: &PlanChangeRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO plan_changes (id, customer_id, subscription, from_plan, from_interval,
            to_plan, to_interval, request_id, last_error, applied, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        c.id,
        c.customer_id,
        c.subscription,
        c.from_plan,
        c.from_interval,
        c.to_plan,
        c.to_interval,
        c.request_id,
        c.last_error,
        c.applied,
        to_ms(c.created_at),
        to_ms(c.updated_at)
    ])?;
    Ok(())
}

pub(crate) fn finish_plan_change(
    conn: &Connection,
    id: &str,
    outcome: &CallOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let (applied, request_id, error) = match outcome {
        CallOutcome::Created { request_id, .. } => (true, request_id, None),
        CallOutcome::Failed { error, request_id } => (false, request_id, Some(error)),
    };
    conn.prepare_cached(
        "UPDATE plan_changes SET applied = ?2, request_id = ?3, last_error = ?4, updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![id, applied, request_id, error, to_ms(now)])?;
    Ok(())
}

/// Runs in the writer's transaction (one writer: redemptions are serialized).
pub(crate) fn redeem_coupon(
    conn: &Connection,
    r: &CouponRedemption,
    audit: Option<AuditContext>,
) -> Result<RedeemOutcome> {
    let seen = conn
        .prepare_cached(
            "SELECT 1 FROM coupon_redemptions WHERE coupon_id = ?1 AND customer_id = ?2",
        )?
        .query_row(params![r.coupon_id, r.customer_id], |_| Ok(()))
        .optional()?;
    if seen.is_some() {
        return Ok(RedeemOutcome::AlreadyRedeemed);
    }
    conn.prepare_cached(
        "INSERT INTO coupon_counters (coupon_id, redeemed) VALUES (?1, 0)
         ON CONFLICT (coupon_id) DO NOTHING",
    )?
    .execute([&r.coupon_id])?;
    let max = r.max_redemptions.map(i64::from);
    let count: Option<i64> = conn
        .prepare_cached(
            "UPDATE coupon_counters SET redeemed = redeemed + 1
             WHERE coupon_id = ?1 AND (?2 IS NULL OR redeemed < ?2) RETURNING redeemed",
        )?
        .query_row(params![r.coupon_id, max], |row| row.get(0))
        .optional()?;
    let Some(count) = count else {
        return Ok(RedeemOutcome::Exhausted);
    };
    conn.prepare_cached(
        "INSERT INTO coupon_redemptions (coupon_id, customer_id, redeemed_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![r.coupon_id, r.customer_id, to_ms(r.now)])?;
    if let Some(ctx) = audit {
        super::audit::insert(conn, &redemption_entry(r, count, ctx))?;
    }
    Ok(RedeemOutcome::Redeemed(u64::try_from(count).unwrap_or(0)))
}

pub(crate) fn redemption_entry(r: &CouponRedemption, count: i64, ctx: AuditContext) -> AuditEntry {
    AuditEntry {
        action: "coupon.redeemed".into(),
        target_type: "coupon".into(),
        target_id: r.coupon_id.clone(),
        customer_id: Some(r.customer_id.clone()),
        before: None,
        after: Some(serde_json::json!({
            "customer_id": r.customer_id, "redemptions": count,
            "max_redemptions": r.max_redemptions,
        })),
        context: ctx,
    }
}
