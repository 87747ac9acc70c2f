//! API keys, stored as SHA-256 of the secret.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use crate::{ApiKey, NewApiKey, Result};

fn key_row(r: &Row) -> ApiKey {
    ApiKey {
        id: r.get(0),
        name: r.get(1),
        role: r.get(2),
        created_at: r.get(3),
        revoked_at: r.get(4),
    }
}

pub(crate) async fn create(pool: &Pool, k: &NewApiKey) -> Result<ApiKey> {
    let c = pool.get().await?;
    let row = c
        .query_one(
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)
             RETURNING id, name, role, created_at, revoked_at",
            &[&k.id, &k.name, &k.role, &k.secret_hash, &k.created_at],
        )
        .await?;
    Ok(key_row(&row))
}

pub(crate) async fn find(pool: &Pool, secret_hash: &str) -> Result<Option<ApiKey>> {
    let c = pool.get().await?;
    Ok(c.query_opt(
        "SELECT id, name, role, created_at, revoked_at FROM api_keys
         WHERE secret_hash = $1 AND revoked_at IS NULL",
        &[&secret_hash],
    )
    .await?
    .as_ref()
    .map(key_row))
}

pub(crate) async fn list(pool: &Pool) -> Result<Vec<ApiKey>> {
    let c = pool.get().await?;
    Ok(c.query(
        "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        &[],
    )
    .await?
    .iter()
    .map(key_row)
    .collect())
}

pub(crate) async fn revoke(pool: &Pool, id: &str, at: DateTime<Utc>) -> Result<bool> {
    let c = pool.get().await?;
    let n = c
        .execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at],
        )
        .await?;
    Ok(n == 1)
}
