//! Page sessions (see [`crate::pages`]).

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::{AuditContext, AuditEntry, NewPageSession, PageSession, PageSessionCheck, Result};

const COLS: &str =
    "id, customer_id, locale, return_url, created_at, code_expires_at, redeemed_at, \
                    last_seen_at, revoked_at";

fn row(r: &Row) -> PageSession {
    PageSession {
        id: r.get(0),
        customer_id: r.get(1),
        locale: r.get(2),
        return_url: r.get(3),
        created_at: r.get(4),
        code_expires_at: r.get(5),
        redeemed_at: r.get(6),
        last_seen_at: r.get(7),
        revoked_at: r.get(8),
    }
}

async fn audit<C: GenericClient>(
    c: &C,
    ctx: Option<AuditContext>,
    action: &str,
    before: Option<&PageSession>,
    after: &PageSession,
) -> Result<()> {
    if let Some(mut e) = ctx.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "page_session",
            &after.id,
            Some(&after.customer_id),
            before.map(|b| serde_json::json!(b)),
            Some(serde_json::json!(after)),
        )
    }) {
        e.action = action.to_owned();
        super::audit::insert(c, &e).await?;
    }
    Ok(())
}

pub(crate) async fn get(pool: &Pool, id: &str) -> Result<Option<PageSession>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {COLS} FROM page_sessions WHERE id = $1");
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(row))
}

pub(crate) async fn create(
    pool: &Pool,
    s: &NewPageSession,
    ctx: Option<AuditContext>,
) -> Result<PageSession> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let sql = format!(
        "INSERT INTO page_sessions (id, customer_id, code_hash, locale, return_url, created_at,
            code_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLS}"
    );
    let created = row(&tx
        .query_one(
            &sql,
            &[
                &s.id,
                &s.customer_id,
                &s.code_hash,
                &s.locale,
                &s.return_url,
                &s.created_at,
                &s.code_expires_at,
            ],
        )
        .await?);
    audit(&tx, ctx, "page_session.created", None, &created).await?;
    tx.commit().await?;
    Ok(created)
}

pub(crate) async fn redeem(
    pool: &Pool,
    code_hash: &str,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<PageSession>> {
    let c = pool.get().await?;
    let sql = format!(
        "UPDATE page_sessions SET token_hash = $2, redeemed_at = $3, last_seen_at = $3
         WHERE code_hash = $1 AND redeemed_at IS NULL AND revoked_at IS NULL
           AND code_expires_at > $3
         RETURNING {COLS}"
    );
    Ok(c.query_opt(&sql, &[&code_hash, &token_hash, &now])
        .await?
        .as_ref()
        .map(row))
}

pub(crate) async fn touch(
    pool: &Pool,
    token_hash: &str,
    check: PageSessionCheck,
) -> Result<Option<PageSession>> {
    let c = pool.get().await?;
    let sql = format!(
        "UPDATE page_sessions SET last_seen_at = $2
         WHERE token_hash = $1 AND revoked_at IS NULL
           AND last_seen_at > $3 AND redeemed_at > $4
         RETURNING {COLS}"
    );
    Ok(c.query_opt(
        &sql,
        &[
            &token_hash,
            &check.now,
            &check.idle_after,
            &check.started_after,
        ],
    )
    .await?
    .as_ref()
    .map(row))
}

pub(crate) async fn revoke(
    pool: &Pool,
    id: &str,
    at: DateTime<Utc>,
    ctx: Option<AuditContext>,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let sql = format!("SELECT {COLS} FROM page_sessions WHERE id = $1 FOR UPDATE");
    let before = tx.query_opt(&sql, &[&id]).await?.as_ref().map(row);
    let sql = format!(
        "UPDATE page_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
         RETURNING {COLS}"
    );
    let after = tx.query_opt(&sql, &[&id, &at]).await?.as_ref().map(row);
    if let Some(after) = &after {
        audit(&tx, ctx, "page_session.revoked", before.as_ref(), after).await?;
    }
    tx.commit().await?;
    Ok(after.is_some())
}
