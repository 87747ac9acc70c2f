//! Page sessions (see [`crate::pages`]).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::time::{from_ms, to_ms};
use crate::{AuditContext, AuditEntry, NewPageSession, PageSession, PageSessionCheck, Result};

const COLS: &str =
    "id, customer_id, locale, return_url, created_at, code_expires_at, redeemed_at, \
                    last_seen_at, revoked_at";

fn row(r: &Row<'_>) -> rusqlite::Result<PageSession> {
    Ok(PageSession {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        locale: r.get(2)?,
        return_url: r.get(3)?,
        created_at: from_ms(r.get(4)?),
        code_expires_at: from_ms(r.get(5)?),
        redeemed_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        last_seen_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
        revoked_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
    })
}

fn audit(
    conn: &Connection,
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
        super::audit::insert(conn, &e)?;
    }
    Ok(())
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<PageSession>> {
    let sql = format!("SELECT {COLS} FROM page_sessions WHERE id = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row([id], row).optional()?)
}

pub(crate) fn create(
    conn: &Connection,
    s: &NewPageSession,
    ctx: Option<AuditContext>,
) -> Result<PageSession> {
    let sql = format!(
        "INSERT INTO page_sessions (id, customer_id, code_hash, locale, return_url, created_at,
            code_expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {COLS}"
    );
    let created = conn.prepare_cached(&sql)?.query_row(
        params![
            s.id,
            s.customer_id,
            s.code_hash,
            s.locale,
            s.return_url,
            to_ms(s.created_at),
            to_ms(s.code_expires_at)
        ],
        row,
    )?;
    audit(conn, ctx, "page_session.created", None, &created)?;
    Ok(created)
}

pub(crate) fn redeem(
    conn: &Connection,
    code_hash: &str,
    token_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<PageSession>> {
    let sql = format!(
        "UPDATE page_sessions SET token_hash = ?2, redeemed_at = ?3, last_seen_at = ?3
         WHERE code_hash = ?1 AND redeemed_at IS NULL AND revoked_at IS NULL
           AND code_expires_at > ?3
         RETURNING {COLS}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![code_hash, token_hash, to_ms(now)], row)
        .optional()?)
}

pub(crate) fn touch(
    conn: &Connection,
    token_hash: &str,
    check: PageSessionCheck,
) -> Result<Option<PageSession>> {
    let sql = format!(
        "UPDATE page_sessions SET last_seen_at = ?2
         WHERE token_hash = ?1 AND revoked_at IS NULL
           AND last_seen_at > ?3 AND redeemed_at > ?4
         RETURNING {COLS}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(
            params![
                token_hash,
                to_ms(check.now),
                to_ms(check.idle_after),
                to_ms(check.started_after)
            ],
            row,
        )
        .optional()?)
}

pub(crate) fn revoke(
    conn: &Connection,
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
    ctx: Option<AuditContext>,
) -> Result<bool> {
    let before = get(conn, id)?;
    let sql = format!(
        "UPDATE page_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
         RETURNING {COLS}"
    );
    let after = conn
        .prepare_cached(&sql)?
        .query_row(params![id, to_ms(at)], row)
        .optional()?;
    if let Some(after) = &after {
        audit(conn, ctx, "page_session.revoked", before.as_ref(), after)?;
    }
    Ok(after.is_some())
}
