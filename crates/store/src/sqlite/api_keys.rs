//! API keys, stored as SHA-256 of the secret.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::time::{from_ms, to_ms};
use crate::{ApiKey, NewApiKey, Result};

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        created_at: from_ms(r.get(3)?),
        revoked_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
    })
}

pub(crate) fn create(conn: &Connection, k: &NewApiKey) -> Result<ApiKey> {
    conn.execute(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![k.id, k.name, k.role, k.secret_hash, to_ms(k.created_at)],
    )?;
    Ok(ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        role: k.role.clone(),
        created_at: k.created_at,
        revoked_at: None,
    })
}

pub(crate) fn find(conn: &Connection, secret_hash: &str) -> Result<Option<ApiKey>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, role, created_at, revoked_at FROM api_keys
             WHERE secret_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([secret_hash], key_row)
        .optional()?)
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ApiKey>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], key_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn revoke(conn: &Connection, id: &str, at: DateTime<Utc>) -> Result<bool> {
    let n = conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, to_ms(at)],
    )?;
    Ok(n == 1)
}
