//! The audit log on PostgreSQL: rows are inserted in the transaction of the change they record.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::audit::{audit_id, AuditTarget};
use crate::{AuditEntry, AuditFilter, AuditPage, AuditRecord, Result};

pub(crate) async fn insert<C: GenericClient>(c: &C, e: &AuditEntry) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id,
            before_state, after_state, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &e.context.at,
            &e.context.actor,
            &e.action,
            &e.target_type,
            &e.target_id,
            &e.customer_id,
            &e.before,
            &e.after,
            &e.context.idempotency_key,
        ],
    )
    .await?;
    Ok(())
}

fn row(r: &Row) -> AuditRecord {
    AuditRecord {
        id: audit_id(r.get(0)),
        at: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: AuditTarget {
            kind: r.get(4),
            id: r.get(5),
        },
        customer_id: r.get(6),
        before: r.get(7),
        after: r.get(8),
        idempotency_key: r.get(9),
    }
}

pub(crate) async fn list(pool: &Pool, f: &AuditFilter) -> Result<AuditPage> {
    let c = pool.get().await?;
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX - 1);
    let rows = c
        .query(
            "SELECT seq, at, actor, action, target_type, target_id, customer_id, before_state,
                after_state, idempotency_key
             FROM audit_log
             WHERE seq < $1 AND ($2::TEXT IS NULL OR customer_id = $2)
                AND ($3::TEXT IS NULL OR actor = $3) AND ($4::TIMESTAMPTZ IS NULL OR at >= $4)
             ORDER BY seq DESC LIMIT $5",
            &[
                &f.before_seq.unwrap_or(i64::MAX),
                &f.customer_id,
                &f.actor,
                &f.since,
                &limit.saturating_add(1),
            ],
        )
        .await?;
    let mut records: Vec<AuditRecord> = rows.iter().map(row).collect();
    let has_more = records.len() > f.limit;
    records.truncate(f.limit);
    Ok(AuditPage { records, has_more })
}
