//! Credits, notifications and flag overrides on PostgreSQL.
//!
//! Every credit change first locks the customer's row of `credit_accounts` (`FOR UPDATE`), then
//! checks the idempotency key, reads the open buckets, debits and writes the entry, all in one
//! transaction: two Tally processes sharing the database serialize on that row, so the balance
//! can never be overdrawn. CHECK constraints (`remaining >= 0`, `balance_after >= 0`) back this up.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool, Transaction};
use rust_decimal::Decimal;
use tokio_postgres::Row;

use super::{is_retryable, Failure};
use crate::credits::{audit_entry, expire_entry_id, plan};
use crate::{
    AuditContext, AuditEntry, CreditAccount, CreditBucketRecord, CreditEntryRecord, CreditOutcome,
    CreditRequest, FlagOverride, NewEvent, Result, StoreError,
};

const ATTEMPTS: usize = 5;

const ENTRY_COLS: &str = "seq, id, customer_id, kind, amount, balance_after, expires_at, reason,
    idempotency_key, actor, metric, quantity, event_id, created_at";

fn entry_row(r: &Row) -> CreditEntryRecord {
    CreditEntryRecord {
        seq: r.get(0),
        id: r.get(1),
        customer_id: r.get(2),
        kind: r.get(3),
        amount: r.get::<_, Decimal>(4).normalize(),
        balance_after: r.get::<_, Decimal>(5).normalize(),
        expires_at: r.get(6),
        reason: r.get(7),
        idempotency_key: r.get(8),
        actor: r.get(9),
        metric: r.get(10),
        quantity: r.get::<_, Option<Decimal>>(11).map(|q| q.normalize()),
        event_id: r.get(12),
        created_at: r.get(13),
    }
}

async fn entry_by_id<C: GenericClient>(c: &C, id: &str) -> Result<CreditEntryRecord> {
    let sql = format!("SELECT {ENTRY_COLS} FROM credit_entries WHERE id = $1");
    c.query_opt(&sql, &[&id])
        .await?
        .map(|r| entry_row(&r))
        .ok_or_else(|| StoreError::Database(format!("credit entry {id} is missing")))
}

const OPEN_BUCKETS: &str =
    "SELECT entry_id, kind, amount, remaining, created_at, expires_at FROM credit_buckets
     WHERE customer_id = $1 AND open ORDER BY created_at, entry_id";

fn bucket_row(r: &Row) -> CreditBucketRecord {
    CreditBucketRecord {
        entry_id: r.get(0),
        kind: r.get(1),
        amount: r.get::<_, Decimal>(2).normalize(),
        remaining: r.get::<_, Decimal>(3).normalize(),
        created_at: r.get(4),
        expires_at: r.get(5),
    }
}

pub(crate) async fn open_buckets<C: GenericClient>(
    c: &C,
    customer: &str,
) -> Result<Vec<CreditBucketRecord>> {
    let stmt = c.prepare_cached(OPEN_BUCKETS).await?;
    let rows = c.query(&stmt, &[&customer]).await?;
    Ok(rows.iter().map(bucket_row).collect())
}

pub(crate) async fn apply(pool: &Pool, req: CreditRequest) -> Result<CreditOutcome> {
    if req.amount < Decimal::ZERO && req.event.is_none() && !req.audit {
        if let Some(outcome) = debit_in_one_trip(pool, &req).await? {
            return Ok(outcome);
        }
    }
    apply_in_transaction(pool, req).await
}

/// A plain debit (no usage event, no audit row) through `tally_credit_debit` (migration 0013):
/// one statement, one round trip. `None` when the function hands the request back (expired
/// credits to write off, or a notification to enqueue) for [`apply_in_transaction`]; it then
/// wrote nothing.
async fn debit_in_one_trip(pool: &Pool, req: &CreditRequest) -> Result<Option<CreditOutcome>> {
    let sql = format!(
        "SELECT r.outcome, r.balance, {} FROM tally_credit_debit($1, $2, $3, $4, $5, $6, $7, $8,
            $9, $10, $11, $12) r",
        ENTRY_COLS
            .split(',')
            .map(|c| format!("(r.entry).{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (notify, low) = match &req.notify {
        Some(n) => (true, n.low_balance),
        None => (false, None),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let c = pool.get().await?;
        let stmt = c.prepare_cached(&sql).await?;
        let row = c
            .query_one(
                &stmt,
                &[
                    &req.customer_id,
                    &req.entry_id,
                    &req.kind.as_str(),
                    &req.amount,
                    &req.reason,
                    &req.idempotency_key,
                    &req.fingerprint,
                    &req.actor,
                    &req.quantity,
                    &req.now,
                    &notify,
                    &low,
                ],
            )
            .await;
        let row = match row {
            Ok(row) => row,
            Err(e) if attempt < ATTEMPTS && is_retryable(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let outcome: &str = row.get(0);
        // The entry's columns follow the outcome and the balance.
        let entry = || -> Result<CreditEntryRecord> {
            Ok(CreditEntryRecord {
                seq: row.try_get(2)?,
                id: row.try_get(3)?,
                customer_id: row.try_get(4)?,
                kind: row.try_get(5)?,
                amount: row.try_get::<_, Decimal>(6)?.normalize(),
                balance_after: row.try_get::<_, Decimal>(7)?.normalize(),
                expires_at: row.try_get(8)?,
                reason: row.try_get(9)?,
                idempotency_key: row.try_get(10)?,
                actor: row.try_get(11)?,
                metric: row.try_get(12)?,
                quantity: row
                    .try_get::<_, Option<Decimal>>(13)?
                    .map(|q| q.normalize()),
                event_id: row.try_get(14)?,
                created_at: row.try_get(15)?,
            })
        };
        return Ok(Some(match outcome {
            "applied" => CreditOutcome::Applied(entry()?),
            "replayed" => CreditOutcome::Replayed(entry()?),
            "conflict" => CreditOutcome::IdempotencyConflict,
            "insufficient" => CreditOutcome::Insufficient {
                balance: row.get::<_, Decimal>(1).normalize(),
                required: -req.amount,
            },
            "no_customer" => {
                return Err(StoreError::Invalid(format!(
                    "no customer {:?}",
                    req.customer_id
                )))
            }
            _ => return Ok(None),
        }));
    }
}

async fn apply_in_transaction(pool: &Pool, req: CreditRequest) -> Result<CreditOutcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        match try_apply(&tx, &req).await {
            Ok(outcome) => {
                let commit = if matches!(outcome, CreditOutcome::Applied(_)) {
                    tx.commit().await
                } else {
                    tx.rollback().await
                };
                match commit {
                    Ok(()) => return Ok(outcome),
                    Err(e) if attempt < ATTEMPTS && is_retryable(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Failure::Pg(e)) if attempt < ATTEMPTS && is_retryable(&e) => continue,
            Err(Failure::Pg(e)) => return Err(e.into()),
            Err(Failure::Store(e)) => return Err(e),
        }
    }
}

async fn try_apply(
    tx: &Transaction<'_>,
    req: &CreditRequest,
) -> std::result::Result<CreditOutcome, Failure> {
    let customer = req.customer_id.as_str();
    // Lock the customer's credit account (made on first use; no row means no such customer), look
    // the idempotency key up and read the open buckets: three statements sent at once (pipelined,
    // one round trip). PostgreSQL runs them in order, so both reads run after the lock is held and
    // (read committed) see every change committed before it.
    let lock = tx
        .prepare_cached(
            "INSERT INTO credit_accounts (customer_id) SELECT id FROM customers WHERE id = $1
             ON CONFLICT (customer_id) DO UPDATE SET customer_id = EXCLUDED.customer_id
             RETURNING customer_id",
        )
        .await?;
    let seen_stmt = tx
        .prepare_cached(
            "SELECT fingerprint, entry_id FROM credit_idempotency
             WHERE customer_id = $1 AND key = $2",
        )
        .await?;
    let buckets_stmt = tx.prepare_cached(OPEN_BUCKETS).await?;
    let key = req.idempotency_key.as_deref().unwrap_or("");
    // join3 polls its futures in order, so the statements are sent in this order.
    let (locked, seen, bucket_rows) = futures_util::future::join3(
        tx.query_opt(&lock, &[&customer]),
        tx.query_opt(&seen_stmt, &[&customer, &key]),
        tx.query(&buckets_stmt, &[&customer]),
    )
    .await;
    if locked?.is_none() {
        return Err(StoreError::Invalid(format!("no customer {customer:?}")).into());
    }
    let (seen, bucket_rows) = (seen?, bucket_rows?);
    if req.idempotency_key.is_some() {
        if let Some(row) = seen {
            let fingerprint: String = row.get(0);
            if fingerprint != req.fingerprint {
                return Ok(CreditOutcome::IdempotencyConflict);
            }
            let entry_id: String = row.get(1);
            return Ok(CreditOutcome::Replayed(entry_by_id(tx, &entry_id).await?));
        }
    }
    let buckets: Vec<CreditBucketRecord> = bucket_rows.iter().map(bucket_row).collect();
    let p = match plan(&buckets, req)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let insert_entry = tx
        .prepare_cached(&format!(
            "INSERT INTO credit_entries (id, customer_id, kind, amount, balance_after, expires_at,
                reason, idempotency_key, actor, metric, quantity, event_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             RETURNING {ENTRY_COLS}"
        ))
        .await?;
    let set_bucket = tx
        .prepare_cached("UPDATE credit_buckets SET remaining = $2, open = $3 WHERE entry_id = $1")
        .await?;
    let system = Some("system".to_owned());
    let none_s: Option<String> = None;
    let none_t: Option<DateTime<Utc>> = None;
    let none_d: Option<Decimal> = None;
    for (bucket, amount) in &p.expirations {
        let id = expire_entry_id(bucket);
        let neg = -*amount;
        tx.query_one(
            &insert_entry,
            &[
                &id,
                &customer,
                &"expire",
                &neg,
                &p.balance_before,
                &none_t,
                &none_s,
                &none_s,
                &system,
                &none_s,
                &none_d,
                &none_s,
                &req.now,
            ],
        )
        .await?;
        tx.execute(&set_bucket, &[bucket, &Decimal::ZERO, &false])
            .await?;
    }
    let metric = req.event.as_ref().map(|e| e.metric.clone());
    let event_id = req.event.as_ref().map(|e| e.event_id.clone());
    let idempotency = tx
        .prepare_cached(
            "INSERT INTO credit_idempotency (customer_id, key, fingerprint, entry_id, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    // The bucket draws, the entry and the idempotency key: independent writes under the lock,
    // sent at once (one round trip).
    let draws = futures_util::future::join_all(p.draws.iter().map(|(bucket, remaining)| {
        let set_bucket = &set_bucket;
        async move {
            let open = *remaining > Decimal::ZERO;
            tx.execute(set_bucket, &[bucket, remaining, &open]).await
        }
    }));
    let insert = async {
        tx.query_one(
            &insert_entry,
            &[
                &req.entry_id,
                &customer,
                &req.kind.as_str(),
                &req.amount,
                &p.balance_after,
                &req.expires_at,
                &req.reason,
                &req.idempotency_key,
                &req.actor,
                &metric,
                &req.quantity,
                &event_id,
                &req.now,
            ],
        )
        .await
    };
    let remember = async {
        match &req.idempotency_key {
            Some(key) => tx
                .execute(
                    &idempotency,
                    &[&customer, key, &req.fingerprint, &req.entry_id, &req.now],
                )
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (draws, entry, remembered) = futures_util::future::join3(draws, insert, remember).await;
    // After a failed statement the later ones fail with "transaction aborted": report the cause
    // (a retryable one first).
    let mut errors: Vec<tokio_postgres::Error> =
        draws.into_iter().filter_map(|r| r.err()).collect();
    let entry = match (entry, remembered) {
        (Ok(e), Ok(_)) if errors.is_empty() => e,
        (e, r) => {
            errors.extend(e.err());
            errors.extend(r.err());
            let i = errors.iter().position(is_retryable).unwrap_or(0);
            return Err(errors.swap_remove(i).into());
        }
    };
    let entry = entry_row(&entry);
    if p.opens_bucket {
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO credit_buckets (entry_id, customer_id, kind, amount, remaining, open,
                    created_at, expires_at) VALUES ($1, $2, $3, $4, $4, TRUE, $5, $6)",
            )
            .await?,
            &[
                &req.entry_id,
                &customer,
                &req.kind.as_str(),
                &req.amount,
                &req.now,
                &req.expires_at,
            ],
        )
        .await?;
    }
    if let Some(e) = audit_entry(req, &p) {
        super::audit::insert(tx, &e).await?;
    }
    for n in crate::credits::notifications(req, &p) {
        super::notify::enqueue(tx, &n).await?;
    }
    if let Some(ev) = &req.event {
        // Period close locks the customer FOR UPDATE: no event slips into a period being invoiced.
        let billed_through: Option<DateTime<Utc>> = tx
            .query_one(
                "SELECT billed_through FROM customers WHERE id = $1 FOR SHARE",
                &[&customer],
            )
            .await?
            .get(0);
        insert_event(tx, ev, billed_through).await?;
    }
    Ok(CreditOutcome::Applied(entry))
}

/// Records one usage event (consumption by metric) inside the credit transaction: the event row
/// (a duplicate `(customer, event id)` changes nothing) and its period rollup.
async fn insert_event(
    tx: &Transaction<'_>,
    e: &NewEvent,
    billed_through: Option<DateTime<Utc>>,
) -> std::result::Result<(), Failure> {
    let billed_ps = match billed_through {
        Some(b) if e.period_start < b => b,
        _ => e.period_start,
    };
    let inserted = tx
        .execute(
            "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
                usage_period_start, billed_period_start, ingested_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (customer_id, event_id) DO NOTHING",
            &[
                &e.customer_id,
                &e.event_id,
                &e.metric,
                &e.value,
                &e.timestamp,
                &e.properties,
                &e.period_start,
                &billed_ps,
                &Utc::now(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(());
    }
    let mut unique_count = 0i64;
    if let Some(u) = &e.unique_key {
        unique_count = tx
            .execute(
                "INSERT INTO usage_unique_values (customer_id, metric, usage_period_start, value)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&e.customer_id, &e.metric, &e.period_start, u],
            )
            .await? as i64;
    }
    let count = 1i64;
    let row = tx.query_one(
        "INSERT INTO usage_rollups (customer_id, billed_period_start, metric, usage_period_start,
            sum, count, max, latest, latest_at, unique_count)
         VALUES ($1, $2, $3, $4, $5, $6, $5, $5, $7, $8)
         ON CONFLICT (customer_id, billed_period_start, metric, usage_period_start) DO UPDATE SET
            sum = usage_rollups.sum + EXCLUDED.sum,
            count = usage_rollups.count + EXCLUDED.count,
            max = GREATEST(usage_rollups.max, EXCLUDED.max),
            latest = CASE WHEN usage_rollups.latest_at IS NULL
                            OR EXCLUDED.latest_at >= usage_rollups.latest_at
                          THEN EXCLUDED.latest ELSE usage_rollups.latest END,
            latest_at = GREATEST(usage_rollups.latest_at, EXCLUDED.latest_at),
            unique_count = usage_rollups.unique_count + EXCLUDED.unique_count
         RETURNING sum::text",
        &[
            &e.customer_id,
            &billed_ps,
            &e.metric,
            &e.period_start,
            &e.value,
            &count,
            &e.timestamp,
            &unique_count,
        ],
    )
    .await?;
    // As an ingest does: a total beyond what Tally holds exactly is refused (rolled back).
    let sum: String = row.try_get(0)?;
    if tally_core::decimal::parse(&sum, &tally_core::decimal::USAGE_TOTAL).is_err() {
        return Err(crate::rollup::out_of_range(&e.metric).into());
    }
    Ok(())
}

pub(crate) async fn account(
    pool: &Pool,
    customer: &str,
    limit: usize,
    before_seq: Option<i64>,
) -> Result<CreditAccount> {
    let c = pool.get().await?;
    let buckets = open_buckets(&c, customer).await?;
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM credit_entries WHERE customer_id = $1 AND seq < $2
         ORDER BY seq DESC LIMIT $3"
    );
    let rows = c
        .query(
            &sql,
            &[
                &customer,
                &before_seq.unwrap_or(i64::MAX),
                &(limit as i64 + 1),
            ],
        )
        .await?;
    let mut entries: Vec<CreditEntryRecord> = rows.iter().map(entry_row).collect();
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    Ok(CreditAccount {
        buckets,
        entries,
        has_more,
    })
}

async fn flag_override<C: GenericClient>(
    c: &C,
    customer: &str,
    flag: &str,
) -> Result<Option<FlagOverride>> {
    Ok(c.query_opt(
        "SELECT customer_id, flag, enabled, updated_at FROM flag_overrides
             WHERE customer_id = $1 AND flag = $2 FOR UPDATE",
        &[&customer, &flag],
    )
    .await?
    .as_ref()
    .map(override_row))
}

fn override_row(r: &Row) -> FlagOverride {
    FlagOverride {
        customer_id: r.get(0),
        flag: r.get(1),
        enabled: r.get(2),
        updated_at: r.get(3),
    }
}

async fn audit_override<C: GenericClient>(
    c: &C,
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
        super::audit::insert(c, &e).await?;
    }
    Ok(())
}

pub(crate) async fn put_flag_override(
    pool: &Pool,
    o: &FlagOverride,
    audit: Option<AuditContext>,
) -> Result<()> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let before = flag_override(&tx, &o.customer_id, &o.flag).await?;
    tx.execute(
        "INSERT INTO flag_overrides (customer_id, flag, enabled, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id, flag) DO UPDATE SET enabled = EXCLUDED.enabled,
            updated_at = EXCLUDED.updated_at",
        &[&o.customer_id, &o.flag, &o.enabled, &o.updated_at],
    )
    .await?;
    let after = flag_override(&tx, &o.customer_id, &o.flag).await?;
    audit_override(&tx, audit, &o.customer_id, &o.flag, before, after).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn delete_flag_override(
    pool: &Pool,
    customer: &str,
    flag: &str,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let before = flag_override(&tx, customer, flag).await?;
    let n = tx
        .execute(
            "DELETE FROM flag_overrides WHERE customer_id = $1 AND flag = $2",
            &[&customer, &flag],
        )
        .await?;
    audit_override(&tx, audit, customer, flag, before, None).await?;
    tx.commit().await?;
    Ok(n > 0)
}

pub(crate) async fn flag_overrides(pool: &Pool, customer: &str) -> Result<Vec<FlagOverride>> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT customer_id, flag, enabled, updated_at FROM flag_overrides
             WHERE customer_id = $1 ORDER BY flag",
            &[&customer],
        )
        .await?;
    Ok(rows.iter().map(override_row).collect())
}
