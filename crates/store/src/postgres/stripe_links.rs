//! Links to Stripe (see [`crate::stripe_links`]).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use crate::{
    AuditContext, CallOutcome, CheckoutRecord, CouponRedemption, PlanChangeRecord, RedeemOutcome,
    Result, StoreError, StripeCustomerLink,
};

fn link_row(r: &Row) -> StripeCustomerLink {
    StripeCustomerLink {
        customer_id: r.get(0),
        stripe_id: r.get(1),
        created_at: r.get(2),
        updated_at: r.get(3),
    }
}

const LINK_COLS: &str = "customer_id, stripe_id, created_at, updated_at";

pub(crate) async fn link(pool: &Pool, customer_id: &str) -> Result<Option<StripeCustomerLink>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {LINK_COLS} FROM stripe_customers WHERE customer_id = $1");
    Ok(c.query_opt(&sql, &[&customer_id])
        .await?
        .map(|r| link_row(&r)))
}

pub(crate) async fn all_links(pool: &Pool) -> Result<Vec<StripeCustomerLink>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {LINK_COLS} FROM stripe_customers WHERE stripe_id IS NOT NULL ORDER BY customer_id"
    );
    Ok(c.query(&sql, &[]).await?.iter().map(link_row).collect())
}

fn vanished() -> StoreError {
    StoreError::Database("stripe customer link vanished".into())
}

pub(crate) async fn claim(
    pool: &Pool,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<StripeCustomerLink> {
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO stripe_customers (customer_id, created_at, updated_at) VALUES ($1, $2, $2)
         ON CONFLICT (customer_id) DO NOTHING",
        &[&customer_id, &now],
    )
    .await?;
    drop(c);
    link(pool, customer_id).await?.ok_or_else(vanished)
}

pub(crate) async fn set(
    pool: &Pool,
    customer_id: &str,
    stripe_id: &str,
    now: DateTime<Utc>,
) -> Result<StripeCustomerLink> {
    let c = pool.get().await?;
    c.execute(
        "UPDATE stripe_customers SET stripe_id = COALESCE(stripe_id, $2), updated_at = $3
         WHERE customer_id = $1",
        &[&customer_id, &stripe_id, &now],
    )
    .await?;
    drop(c);
    link(pool, customer_id).await?.ok_or_else(vanished)
}

pub(crate) async fn insert_checkout(pool: &Pool, r: &CheckoutRecord) -> Result<()> {
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO checkout_sessions (id, customer_id, mode, plan, interval, pack, stripe_id,
            url, request_id, last_error, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &r.id,
            &r.customer_id,
            &r.mode,
            &r.plan,
            &r.interval,
            &r.pack,
            &r.stripe_id,
            &r.url,
            &r.request_id,
            &r.last_error,
            &r.created_at,
            &r.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn finish_checkout(
    pool: &Pool,
    id: &str,
    outcome: &CallOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let c = pool.get().await?;
    match outcome {
        CallOutcome::Created {
            stripe_id,
            url,
            request_id,
        } => {
            c.execute(
                "UPDATE checkout_sessions SET stripe_id = $2, url = $3, request_id = $4,
                    last_error = NULL, updated_at = $5 WHERE id = $1",
                &[&id, stripe_id, url, request_id, &now],
            )
            .await?
        }
        CallOutcome::Failed { error, request_id } => {
            c.execute(
                "UPDATE checkout_sessions SET last_error = $2, request_id = $3, updated_at = $4
                 WHERE id = $1",
                &[&id, error, request_id, &now],
            )
            .await?
        }
    };
    Ok(())
}

pub(crate) async fn checkout(pool: &Pool, id: &str) -> Result<Option<CheckoutRecord>> {
    let c = pool.get().await?;
    let row = c
        .query_opt(
            "SELECT id, customer_id, mode, plan, interval, pack, stripe_id, url, request_id,
                last_error, created_at, updated_at FROM checkout_sessions WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| CheckoutRecord {
        id: r.get(0),
        customer_id: r.get(1),
        mode: r.get(2),
        plan: r.get(3),
        interval: r.get(4),
        pack: r.get(5),
        stripe_id: r.get(6),
        url: r.get(7),
        request_id: r.get(8),
        last_error: r.get(9),
        created_at: r.get(10),
        updated_at: r.get(11),
    }))
}

pub(crate) async fn insert_plan_change(pool: &Pool, r: &PlanChangeRecord) -> Result<()> {
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO plan_changes (id, customer_id, subscription, from_plan, from_interval,
            to_plan, to_interval, request_id, last_error, applied, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &r.id,
            &r.customer_id,
            &r.subscription,
            &r.from_plan,
            &r.from_interval,
            &r.to_plan,
            &r.to_interval,
            &r.request_id,
            &r.last_error,
            &r.applied,
            &r.created_at,
            &r.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn finish_plan_change(
    pool: &Pool,
    id: &str,
    outcome: &CallOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let (applied, request_id, error) = match outcome {
        CallOutcome::Created { request_id, .. } => (true, request_id, None),
        CallOutcome::Failed { error, request_id } => (false, request_id, Some(error)),
    };
    let c = pool.get().await?;
    c.execute(
        "UPDATE plan_changes SET applied = $2, request_id = $3, last_error = $4, updated_at = $5
         WHERE id = $1",
        &[&id, &applied, request_id, &error, &now],
    )
    .await?;
    Ok(())
}

/// The conditional increment of the coupon's counter row serializes redemptions of one coupon
/// across connections and processes.
pub(crate) async fn redeem_coupon(
    pool: &Pool,
    r: &CouponRedemption,
    audit: Option<AuditContext>,
) -> Result<RedeemOutcome> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO coupon_counters (coupon_id, redeemed) VALUES ($1, 0)
         ON CONFLICT (coupon_id) DO NOTHING",
        &[&r.coupon_id],
    )
    .await?;
    // Lock the counter first, so a customer's two concurrent redemptions see each other.
    tx.execute(
        "SELECT 1 FROM coupon_counters WHERE coupon_id = $1 FOR UPDATE",
        &[&r.coupon_id],
    )
    .await?;
    let seen = tx
        .query_opt(
            "SELECT 1 FROM coupon_redemptions WHERE coupon_id = $1 AND customer_id = $2",
            &[&r.coupon_id, &r.customer_id],
        )
        .await?;
    if seen.is_some() {
        tx.commit().await?;
        return Ok(RedeemOutcome::AlreadyRedeemed);
    }
    let max = r.max_redemptions.map(i64::from);
    let row = tx
        .query_opt(
            "UPDATE coupon_counters SET redeemed = redeemed + 1
             WHERE coupon_id = $1 AND ($2::BIGINT IS NULL OR redeemed < $2) RETURNING redeemed",
            &[&r.coupon_id, &max],
        )
        .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(RedeemOutcome::Exhausted);
    };
    let count: i64 = row.get(0);
    tx.execute(
        "INSERT INTO coupon_redemptions (coupon_id, customer_id, redeemed_at) VALUES ($1, $2, $3)",
        &[&r.coupon_id, &r.customer_id, &r.now],
    )
    .await?;
    if let Some(ctx) = audit {
        let e = crate::sqlite::redemption_entry(r, count, ctx);
        super::audit::insert(&tx, &e).await?;
    }
    tx.commit().await?;
    Ok(RedeemOutcome::Redeemed(u64::try_from(count).unwrap_or(0)))
}
