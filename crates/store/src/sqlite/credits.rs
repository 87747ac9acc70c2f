//! Credits, notifications and flag overrides on SQLite. Credit changes run as jobs
//! of the single writer thread, so the check and the debit can never interleave with another
//! change.

use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row};
use rust_decimal::Decimal;

use super::writer::Writer;
use crate::credits::{audit_entry, expire_entry_id, plan};
use crate::time::{from_ms, to_ms};
use crate::{
    AuditContext, AuditEntry, CreditAccount, CreditBucketRecord, CreditEntryRecord, CreditOutcome,
    CreditRequest, FlagOverride, Result, StoreError,
};

fn dec(s: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const ENTRY_COLS: &str = "seq, id, customer_id, kind, amount, balance_after, expires_at, reason,
    idempotency_key, actor, metric, quantity, event_id, created_at";

fn entry_row(r: &Row<'_>) -> rusqlite::Result<CreditEntryRecord> {
    Ok(CreditEntryRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        customer_id: r.get(2)?,
        kind: r.get(3)?,
        amount: dec(&r.get::<_, String>(4)?)?,
        balance_after: dec(&r.get::<_, String>(5)?)?,
        expires_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        reason: r.get(7)?,
        idempotency_key: r.get(8)?,
        actor: r.get(9)?,
        metric: r.get(10)?,
        quantity: r
            .get::<_, Option<String>>(11)?
            .as_deref()
            .map(dec)
            .transpose()?,
        event_id: r.get(12)?,
        created_at: from_ms(r.get(13)?),
    })
}

fn entry_by_id(conn: &Connection, id: &str) -> Result<CreditEntryRecord> {
    let sql = format!("SELECT {ENTRY_COLS} FROM credit_entries WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id], entry_row)
        .optional()?
        .ok_or_else(|| StoreError::Database(format!("credit entry {id} is missing")))
}

pub(crate) fn open_buckets(conn: &Connection, customer: &str) -> Result<Vec<CreditBucketRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT entry_id, kind, amount, remaining, created_at, expires_at FROM credit_buckets
         WHERE customer_id = ?1 AND open = 1",
    )?;
    let rows = stmt.query_map([customer], |r| {
        Ok(CreditBucketRecord {
            entry_id: r.get(0)?,
            kind: r.get(1)?,
            amount: dec(&r.get::<_, String>(2)?)?,
            remaining: dec(&r.get::<_, String>(3)?)?,
            created_at: from_ms(r.get(4)?),
            expires_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
        })
    })?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by(|a, b| (a.created_at, &a.entry_id).cmp(&(b.created_at, &b.entry_id)));
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn insert_entry(
    conn: &Connection,
    id: &str,
    req: &CreditRequest,
    kind: &str,
    amount: Decimal,
    balance_after: Decimal,
    main: bool,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO credit_entries (id, customer_id, kind, amount, balance_after, expires_at,
            reason, idempotency_key, actor, metric, quantity, event_id, created_at, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        id,
        req.customer_id,
        kind,
        amount.normalize().to_string(),
        balance_after.normalize().to_string(),
        if main {
            req.expires_at.map(to_ms)
        } else {
            None
        },
        if main { req.reason.clone() } else { None },
        if main {
            req.idempotency_key.clone()
        } else {
            None
        },
        if main {
            req.actor.clone()
        } else {
            Some("system".to_owned())
        },
        if main {
            req.event.as_ref().map(|e| e.metric.clone())
        } else {
            None
        },
        if main {
            req.quantity.map(|q| q.normalize().to_string())
        } else {
            None
        },
        if main {
            req.event.as_ref().map(|e| e.event_id.clone())
        } else {
            None
        },
        to_ms(req.now),
        if main && req.idempotency_key.is_some() {
            Some(req.fingerprint.as_str())
        } else {
            None
        }
    ])?;
    Ok(())
}

/// Runs on the writer thread, inside the group transaction (its own savepoint).
///
/// Idempotency keys are found through the writer's in-memory index (`credit_keys`), which points
/// at the ledger entry that first used the key; the key is added only once the whole job
/// succeeded (and forgotten again if the group's commit fails), so a failed or insufficient
/// request does not use it up.
pub(crate) fn apply(w: &mut Writer, mut req: CreditRequest) -> Result<CreditOutcome> {
    if !w.can_ingest {
        return Err(StoreError::Invalid(
            "this store was opened for administration and cannot change credits".into(),
        ));
    }
    let hash = req
        .idempotency_key
        .as_deref()
        .map(|k| w.dedup.key(&req.customer_id, k));
    let seen = hash.and_then(|h| w.credit_keys.get(&h).copied());
    let outcome = apply_ledger(&w.conn, &req, seen)?;
    if let CreditOutcome::Applied(entry) = &outcome {
        if let Some(ev) = req.event.take() {
            let batch = super::events::prepare(&w.dedup.hasher, vec![ev])?;
            super::events::ingest(w, batch)?;
        }
        if let Some(h) = hash {
            w.credit_keys.insert(h, entry.seq);
            w.group_credit_keys.push(h);
        }
    }
    Ok(outcome)
}

/// `seen`: the `seq` of the entry that first used the request's idempotency key, if any.
fn apply_ledger(
    conn: &Connection,
    req: &CreditRequest,
    seen: Option<i64>,
) -> Result<CreditOutcome> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM customers WHERE id = ?1)")?
        .query_row([&req.customer_id], |r| r.get(0))?;
    if !exists {
        return Err(StoreError::Invalid(format!(
            "no customer {:?}",
            req.customer_id
        )));
    }
    if let Some(seq) = seen {
        let sql = format!("SELECT {ENTRY_COLS}, fingerprint FROM credit_entries WHERE seq = ?1");
        let (entry, fingerprint) = conn
            .prepare_cached(&sql)?
            .query_row([seq], |r| {
                Ok((entry_row(r)?, r.get::<_, Option<String>>(14)?))
            })
            .optional()?
            .ok_or_else(|| StoreError::Database(format!("credit entry #{seq} is missing")))?;
        // The index holds hashes: check that the entry really is this customer's and key's.
        if entry.customer_id != req.customer_id || entry.idempotency_key != req.idempotency_key {
            return Err(StoreError::Database(format!(
                "credit idempotency index points at entry #{seq} of another key"
            )));
        }
        if fingerprint.as_deref() != Some(req.fingerprint.as_str()) {
            return Ok(CreditOutcome::IdempotencyConflict);
        }
        return Ok(CreditOutcome::Replayed(entry));
    }
    let buckets = open_buckets(conn, &req.customer_id)?;
    let p = match plan(&buckets, req)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let mut set_bucket = conn.prepare_cached(
        "UPDATE credit_buckets SET remaining = ?2, open = ?3 WHERE entry_id = ?1",
    )?;
    // Expired credits are written off before the request, each as its own entry (they were
    // already outside the usable balance).
    for (bucket, amount) in &p.expirations {
        insert_entry(
            conn,
            &expire_entry_id(bucket),
            req,
            "expire",
            -*amount,
            p.balance_before,
            false,
        )?;
        set_bucket.execute(params![bucket, "0", 0])?;
    }
    // A draw that leaves credits in the bucket does not name `open` (the bucket was open): so
    // SQLite leaves the `credit_buckets_open` index alone instead of rewriting its entry.
    let mut draw =
        conn.prepare_cached("UPDATE credit_buckets SET remaining = ?2 WHERE entry_id = ?1")?;
    for (bucket, remaining) in &p.draws {
        let remaining_text = remaining.normalize().to_string();
        if *remaining > Decimal::ZERO {
            draw.execute(params![bucket, remaining_text])?;
        } else {
            set_bucket.execute(params![bucket, remaining_text, 0])?;
        }
    }
    insert_entry(
        conn,
        &req.entry_id,
        req,
        req.kind.as_str(),
        req.amount,
        p.balance_after,
        true,
    )?;
    if p.opens_bucket {
        conn.prepare_cached(
            "INSERT INTO credit_buckets (entry_id, customer_id, kind, amount, remaining, open,
                created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?4, 1, ?5, ?6)",
        )?
        .execute(params![
            req.entry_id,
            req.customer_id,
            req.kind.as_str(),
            req.amount.normalize().to_string(),
            to_ms(req.now),
            req.expires_at.map(to_ms)
        ])?;
    }
    if let Some(e) = audit_entry(req, &p) {
        super::audit::insert(conn, &e)?;
    }
    for n in crate::credits::notifications(req, &p) {
        super::notify::enqueue(conn, &n)?;
    }
    Ok(CreditOutcome::Applied(entry_by_id(conn, &req.entry_id)?))
}

pub(crate) fn account(
    conn: &Connection,
    customer: &str,
    limit: usize,
    before_seq: Option<i64>,
) -> Result<CreditAccount> {
    let buckets = open_buckets(conn, customer)?;
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM credit_entries WHERE customer_id = ?1 AND seq < ?2
         ORDER BY seq DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![customer, before_seq.unwrap_or(i64::MAX), limit as i64 + 1],
        entry_row,
    )?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    Ok(CreditAccount {
        buckets,
        entries,
        has_more,
    })
}

fn flag_override(conn: &Connection, customer: &str, flag: &str) -> Result<Option<FlagOverride>> {
    Ok(conn
        .prepare_cached(
            "SELECT customer_id, flag, enabled, updated_at FROM flag_overrides
             WHERE customer_id = ?1 AND flag = ?2",
        )?
        .query_row([customer, flag], override_row)
        .optional()?)
}

fn override_row(r: &Row<'_>) -> rusqlite::Result<FlagOverride> {
    Ok(FlagOverride {
        customer_id: r.get(0)?,
        flag: r.get(1)?,
        enabled: r.get(2)?,
        updated_at: from_ms(r.get(3)?),
    })
}

fn audit_override(
    conn: &Connection,
    audit: Option<AuditContext>,
    customer: &str,
    flag: &str,
    before: Option<FlagOverride>,
    after: Option<FlagOverride>,
) -> Result<()> {
    if let Some(e) = audit.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "flag_override",
            &format!("{customer}/{flag}"),
            Some(customer),
            before.map(|o| serde_json::json!(o)),
            after.map(|o| serde_json::json!(o)),
        )
    }) {
        super::audit::insert(conn, &e)?;
    }
    Ok(())
}

pub(crate) fn put_flag_override(
    conn: &Connection,
    o: &FlagOverride,
    audit: Option<AuditContext>,
) -> Result<()> {
    let before = flag_override(conn, &o.customer_id, &o.flag)?;
    conn.prepare_cached(
        "INSERT INTO flag_overrides (customer_id, flag, enabled, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (customer_id, flag) DO UPDATE SET enabled = excluded.enabled,
            updated_at = excluded.updated_at",
    )?
    .execute(params![o.customer_id, o.flag, o.enabled, to_ms(o.updated_at)])?;
    let after = flag_override(conn, &o.customer_id, &o.flag)?;
    audit_override(conn, audit, &o.customer_id, &o.flag, before, after)
}

pub(crate) fn delete_flag_override(
    conn: &Connection,
    customer: &str,
    flag: &str,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let before = flag_override(conn, customer, flag)?;
    let n = conn
        .prepare_cached("DELETE FROM flag_overrides WHERE customer_id = ?1 AND flag = ?2")?
        .execute(params![customer, flag])?;
    audit_override(conn, audit, customer, flag, before, None)?;
    Ok(n > 0)
}

pub(crate) fn flag_overrides(conn: &Connection, customer: &str) -> Result<Vec<FlagOverride>> {
    let mut stmt = conn.prepare_cached(
        "SELECT customer_id, flag, enabled, updated_at FROM flag_overrides
         WHERE customer_id = ?1 ORDER BY flag",
    )?;
    let rows = stmt.query_map([customer], override_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
