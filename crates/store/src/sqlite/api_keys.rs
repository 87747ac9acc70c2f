//! API keys, stored as SHA-256 of the secret.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::time::{from_ms, to_ms};
use crate::{ApiKey, AuditContext, AuditEntry, NewApiKey, Result};

const KEY_COLS: &str = "id, name, scope, customer_id, created_at, revoked_at";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        customer_id: r.get(3)?,
        created_at: from_ms(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
    })
}

fn get(conn: &Connection, id: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], key_row)
        .optional()?)
}

fn audit_key(
    conn: &Connection,
    audit: Option<AuditContext>,
    action: &str,
    before: Option<&ApiKey>,
    after: &ApiKey,
) -> Result<()> {
    if let Some(mut e) = audit.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "api_key",
            &after.id,
            after.customer_id.as_deref(),
            before.map(|b| serde_json::json!(b)),
            Some(serde_json::json!(after)),
        )
    }) {
        e.action = action.to_owned();
        super::audit::insert(conn, &e)?;
    }
    Ok(())
}

pub(crate) fn create(
    conn: &Connection,
    k: &NewApiKey,
    audit: Option<AuditContext>,
) -> Result<ApiKey> {
    conn.execute(
        "INSERT INTO api_keys (id, name, scope, customer_id, secret_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            k.id,
            k.name,
            k.scope,
            k.customer_id,
            k.secret_hash,
            to_ms(k.created_at)
        ],
    )?;
    let key = ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        scope: k.scope.clone(),
        customer_id: k.customer_id.clone(),
        created_at: k.created_at,
        revoked_at: None,
    };
    audit_key(conn, audit, "api_key.created", None, &key)?;
    Ok(key)
}

pub(crate) fn find(conn: &Connection, secret_hash: &str) -> Result<Option<ApiKey>> {
    let sql =
        format!("SELECT {KEY_COLS} FROM api_keys WHERE secret_hash = ?1 AND revoked_at IS NULL");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([secret_hash], key_row)
        .optional()?)
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], key_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn revoke(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let before = get(conn, id)?;
    let n = conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, to_ms(at)],
    )?;
    if n == 1 {
        if let Some(after) = get(conn, id)? {
            audit_key(conn, audit, "api_key.revoked", before.as_ref(), &after)?;
        }
    }
    Ok(n == 1)
}
