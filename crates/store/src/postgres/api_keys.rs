//! API keys, stored as SHA-256 of the secret.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::{ApiKey, AuditContext, AuditEntry, NewApiKey, Result};

const KEY_COLS: &str = "id, name, scope, customer_id, created_at, revoked_at";

fn key_row(r: &Row) -> ApiKey {
    ApiKey {
        id: r.get(0),
        name: r.get(1),
        scope: r.get(2),
        customer_id: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    }
}

async fn audit_key<C: GenericClient>(
    c: &C,
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
        super::audit::insert(c, &e).await?;
    }
    Ok(())
}

pub(crate) async fn create(
    pool: &Pool,
    k: &NewApiKey,
    audit: Option<AuditContext>,
) -> Result<ApiKey> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let sql = format!(
        "INSERT INTO api_keys (id, name, scope, customer_id, secret_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &k.id,
                &k.name,
                &k.scope,
                &k.customer_id,
                &k.secret_hash,
                &k.created_at,
            ],
        )
        .await?;
    let key = key_row(&row);
    audit_key(&tx, audit, "api_key.created", None, &key).await?;
    tx.commit().await?;
    Ok(key)
}

pub(crate) async fn find(pool: &Pool, secret_hash: &str) -> Result<Option<ApiKey>> {
    let c = pool.get().await?;
    let sql =
        format!("SELECT {KEY_COLS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL");
    Ok(c.query_opt(&sql, &[&secret_hash])
        .await?
        .as_ref()
        .map(key_row))
}

pub(crate) async fn list(pool: &Pool) -> Result<Vec<ApiKey>> {
    let c = pool.get().await?;
    let sql = format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id");
    Ok(c.query(&sql, &[]).await?.iter().map(key_row).collect())
}

pub(crate) async fn revoke(
    pool: &Pool,
    id: &str,
    at: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1 FOR UPDATE");
    let before = tx.query_opt(&sql, &[&id]).await?.as_ref().map(key_row);
    let sql = format!(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
         RETURNING {KEY_COLS}"
    );
    let after = tx.query_opt(&sql, &[&id, &at]).await?.as_ref().map(key_row);
    if let Some(after) = &after {
        audit_key(&tx, audit, "api_key.revoked", before.as_ref(), after).await?;
    }
    tx.commit().await?;
    Ok(after.is_some())
}
