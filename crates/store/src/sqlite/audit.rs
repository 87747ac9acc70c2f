//! The audit log on SQLite: rows are inserted by the writer job of the change they record.

use rusqlite::{params, Connection, Row};
use serde_json::Value;

use crate::audit::{audit_id, AuditTarget};
use crate::time::{from_ms, to_ms};
use crate::{AuditEntry, AuditFilter, AuditPage, AuditRecord, Result};

fn json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

pub(crate) fn insert(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id,
            before_state, after_state, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        to_ms(e.context.at),
        e.context.actor,
        e.action,
        e.target_type,
        e.target_id,
        e.customer_id,
        json(&e.before),
        json(&e.after),
        e.context.idempotency_key,
    ])?;
    Ok(())
}

fn parse(s: Option<String>) -> Option<Value> {
    // A row's JSON was written by `insert`; an unreadable one is shown as a string, not lost.
    s.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
}

fn row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: audit_id(r.get(0)?),
        at: from_ms(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: AuditTarget {
            kind: r.get(4)?,
            id: r.get(5)?,
        },
        customer_id: r.get(6)?,
        before: parse(r.get(7)?),
        after: parse(r.get(8)?),
        idempotency_key: r.get(9)?,
    })
}

pub(crate) fn list(conn: &Connection, f: &AuditFilter) -> Result<AuditPage> {
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX - 1);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, actor, action, target_type, target_id, customer_id, before_state,
            after_state, idempotency_key
         FROM audit_log
         WHERE seq < ?1 AND (?2 IS NULL OR customer_id = ?2) AND (?3 IS NULL OR actor = ?3)
            AND (?4 IS NULL OR at >= ?4)
         ORDER BY seq DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            f.before_seq.unwrap_or(i64::MAX),
            f.customer_id,
            f.actor,
            f.since.map(to_ms),
            limit.saturating_add(1)
        ],
        row,
    )?;
    let mut records = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = records.len() > f.limit;
    records.truncate(f.limit);
    Ok(AuditPage { records, has_more })
}
