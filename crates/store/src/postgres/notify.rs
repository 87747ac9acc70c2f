//! The notification outbox and webhook deliveries on PostgreSQL (see [`crate::notify`]). A claim
//! locks its rows with `FOR UPDATE SKIP LOCKED` and re-checks the lease in its `UPDATE`, so two
//! processes never lease the same delivery.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::notify::{delivery_id, usage_from_row};
use crate::{
    AuditContext, AuditEntry, ClaimedDelivery, DeliveryAttempt, NewNotification,
    NewWebhookEndpoint, Notification, NotificationFilter, Result, StoreError, UsageNotification,
    WebhookDelivery, WebhookEndpoint,
};

const NOTIFICATION_COLS: &str =
    "n.seq, n.id, n.type, n.customer_id, n.payload, n.dedup_key, n.created_at";

fn notification(r: &Row, at: usize) -> Notification {
    Notification {
        seq: r.get(at),
        id: r.get(at + 1),
        kind: r.get(at + 2),
        customer_id: r.get(at + 3),
        payload: r.get(at + 4),
        dedup_key: r.get(at + 5),
        created_at: r.get(at + 6),
    }
}

/// Inserts a notification and its deliveries, in the caller's transaction.
pub(crate) async fn enqueue<C: GenericClient>(c: &C, n: &NewNotification) -> Result<bool> {
    let row = c
        .query_opt(
            "INSERT INTO notifications (id, type, customer_id, payload, dedup_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING seq",
            &[
                &n.id(),
                &n.kind,
                &n.customer_id,
                &n.payload,
                &n.dedup_key,
                &n.created_at,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let seq: i64 = row.get(0);
    fan_out(c, seq, &n.kind, n.customer_id.as_deref(), n.created_at).await?;
    Ok(true)
}

async fn fan_out<C: GenericClient>(
    c: &C,
    seq: i64,
    kind: &str,
    customer: Option<&str>,
    due: DateTime<Utc>,
) -> Result<u64> {
    Ok(c.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, notification_seq, customer_key, status,
            next_attempt_at)
         SELECT DISTINCT w.id, $1::BIGINT, $2::TEXT, 'pending', $3::TIMESTAMPTZ
         FROM webhook_endpoints w JOIN webhook_endpoint_events e ON e.endpoint_id = w.id
         WHERE w.status = 'enabled' AND w.deleted_at IS NULL AND e.event_type IN ($4, '*')
         ON CONFLICT DO NOTHING",
        &[&seq, &customer.unwrap_or(""), &due, &kind],
    )
    .await?)
}

pub(crate) async fn enqueue_alone(pool: &Pool, n: &NewNotification) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let queued = enqueue(&tx, n).await?;
    tx.commit().await?;
    Ok(queued)
}

pub(crate) async fn list(pool: &Pool, f: &NotificationFilter) -> Result<Vec<Notification>> {
    let c = pool.get().await?;
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications n
         WHERE n.seq > $1 AND ($2::TEXT IS NULL OR n.customer_id = $2)
           AND ($3::TEXT IS NULL OR n.type = $3)
         ORDER BY n.seq LIMIT $4"
    );
    let rows = c
        .query(
            &sql,
            &[&f.after_seq.unwrap_or(0), &f.customer_id, &f.kind, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| notification(r, 0)).collect())
}

pub(crate) async fn usage(pool: &Pool, customer: &str) -> Result<Vec<UsageNotification>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {NOTIFICATION_COLS},
            (SELECT MIN(d.delivered_at) FROM webhook_deliveries d WHERE d.notification_seq = n.seq)
         FROM notifications n
         WHERE n.customer_id = $1 AND n.type = 'usage.threshold_reached' ORDER BY n.seq"
    );
    let rows = c.query(&sql, &[&customer]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| usage_from_row(&notification(r, 0), r.get(7)))
        .collect())
}

const ENDPOINT_COLS: &str = "w.id, w.url, w.status, w.created_at, w.disabled_at, w.failing_since,
    w.secret, w.previous_secret, w.previous_expires_at,
    ARRAY(SELECT event_type FROM webhook_endpoint_events WHERE endpoint_id = w.id
          ORDER BY event_type COLLATE \"C\"),
    w.kind";

fn endpoint(r: &Row, at: usize) -> WebhookEndpoint {
    WebhookEndpoint {
        id: r.get(at),
        url: r.get(at + 1),
        status: r.get(at + 2),
        created_at: r.get(at + 3),
        disabled_at: r.get(at + 4),
        failing_since: r.get(at + 5),
        secret: r.get(at + 6),
        previous_secret: r.get(at + 7),
        previous_secret_expires_at: r.get(at + 8),
        events: r.get(at + 9),
        kind: r.get(at + 10),
    }
}

async fn get_endpoint_on<C: GenericClient>(c: &C, id: &str) -> Result<Option<WebhookEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints w WHERE w.id = $1 AND w.deleted_at IS NULL
            AND w.kind = 'webhook'"
    );
    Ok(c.query_opt(&sql, &[&id]).await?.map(|r| endpoint(&r, 0)))
}

pub(crate) async fn get_endpoint(pool: &Pool, id: &str) -> Result<Option<WebhookEndpoint>> {
    let c = pool.get().await?;
    get_endpoint_on(&c, id).await
}

pub(crate) async fn list_endpoints(pool: &Pool) -> Result<Vec<WebhookEndpoint>> {
    let c = pool.get().await?;
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints w WHERE w.deleted_at IS NULL
            AND w.kind = 'webhook' ORDER BY w.created_at, w.id"
    );
    Ok(c.query(&sql, &[])
        .await?
        .iter()
        .map(|r| endpoint(r, 0))
        .collect())
}

async fn audit_endpoint<C: GenericClient>(
    c: &C,
    audit: Option<AuditContext>,
    action: &str,
    before: Option<&WebhookEndpoint>,
    after: Option<&WebhookEndpoint>,
) -> Result<()> {
    let Some(b_or_a) = after.or(before) else {
        return Ok(());
    };
    if let Some(mut e) = audit.and_then(|ctx| {
        AuditEntry::of_change(
            ctx,
            "webhook_endpoint",
            &b_or_a.id,
            None,
            before.map(|b| serde_json::json!(b)),
            after.map(|a| serde_json::json!(a)),
        )
    }) {
        e.action = action.to_owned();
        super::audit::insert(c, &e).await?;
    }
    Ok(())
}

pub(crate) async fn create_endpoint(
    pool: &Pool,
    e: &NewWebhookEndpoint,
    audit: Option<AuditContext>,
) -> Result<WebhookEndpoint> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO webhook_endpoints (id, url, secret, status, created_at)
         VALUES ($1, $2, $3, 'enabled', $4)",
        &[&e.id, &e.url, &e.secret, &e.created_at],
    )
    .await?;
    for t in &e.events {
        tx.execute(
            "INSERT INTO webhook_endpoint_events (endpoint_id, event_type) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&e.id, t],
        )
        .await?;
    }
    let created = get_endpoint_on(&tx, &e.id)
        .await?
        .ok_or_else(|| StoreError::Database("webhook endpoint vanished after insert".into()))?;
    audit_endpoint(&tx, audit, "webhook_endpoint.created", None, Some(&created)).await?;
    tx.commit().await?;
    Ok(created)
}

pub(crate) async fn delete_endpoint(
    pool: &Pool,
    id: &str,
    at: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let Some(before) = get_endpoint_on(&tx, id).await? else {
        return Ok(false);
    };
    tx.execute(
        "UPDATE webhook_endpoints SET deleted_at = $2 WHERE id = $1",
        &[&id, &at],
    )
    .await?;
    audit_endpoint(&tx, audit, "webhook_endpoint.deleted", Some(&before), None).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn rotate(
    pool: &Pool,
    id: &str,
    secret: &str,
    previous_until: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<Option<WebhookEndpoint>> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let Some(before) = get_endpoint_on(&tx, id).await? else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,
            previous_expires_at = $3 WHERE id = $1",
        &[&id, &secret, &previous_until],
    )
    .await?;
    let after = get_endpoint_on(&tx, id).await?;
    audit_endpoint(
        &tx,
        audit,
        "webhook_endpoint.rotated",
        Some(&before),
        after.as_ref(),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub(crate) async fn disable(
    pool: &Pool,
    id: &str,
    at: DateTime<Utc>,
    notice: &NewNotification,
) -> Result<bool> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_at = $2
             WHERE id = $1 AND status = 'enabled'",
            &[&id, &at],
        )
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    enqueue(&tx, notice).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn claim(
    pool: &Pool,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<ClaimedDelivery>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The UPDATE re-checks the lease on the row it locks, so of two processes that both saw a
    // delivery free only one leases it.
    let claimed = c
        .query(
            "WITH due AS (
                SELECT d.seq FROM webhook_deliveries d
                JOIN webhook_endpoints w ON w.id = d.endpoint_id
                WHERE d.status = 'pending' AND d.next_attempt_at <= $1
                  AND (d.leased_until IS NULL OR d.leased_until <= $1)
                  AND w.status = 'enabled' AND w.deleted_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                      WHERE p.endpoint_id = d.endpoint_id AND p.customer_key = d.customer_key
                        AND p.status = 'pending' AND p.notification_seq < d.notification_seq)
                ORDER BY d.notification_seq LIMIT $2
                FOR UPDATE OF d SKIP LOCKED)
             UPDATE webhook_deliveries d SET leased_until = $3, lease_holder = $4
             FROM due WHERE d.seq = due.seq AND d.status = 'pending'
               AND (d.leased_until IS NULL OR d.leased_until <= $1)
             RETURNING d.seq",
            &[&now, &limit, &until, &holder],
        )
        .await?;
    let seqs: Vec<i64> = claimed.iter().map(|r| r.get(0)).collect();
    let sql = format!(
        "SELECT d.seq, d.attempts, {NOTIFICATION_COLS}, {ENDPOINT_COLS}
         FROM webhook_deliveries d JOIN notifications n ON n.seq = d.notification_seq
         JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.seq = ANY($1)
         ORDER BY n.seq"
    );
    let rows = c.query(&sql, &[&seqs]).await?;
    Ok(rows
        .iter()
        .map(|r| ClaimedDelivery {
            seq: r.get(0),
            attempts: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
            notification: notification(r, 2),
            endpoint: endpoint(r, 9),
        })
        .collect())
}

pub(crate) async fn finish(
    pool: &Pool,
    a: &DeliveryAttempt,
) -> Result<Option<Option<DateTime<Utc>>>> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let code = a.status_code.map(i32::from);
    let changed = match &a.failure {
        None => {
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1,
                    last_status_code = $3, last_error = NULL, last_attempt_at = $4,
                    delivered_at = $4, leased_until = NULL, lease_holder = NULL
                 WHERE seq = $1 AND lease_holder = $2 AND status = 'pending'",
                &[&a.delivery_seq, &a.holder, &code, &a.at],
            )
            .await?
        }
        Some((error, next)) => {
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $3,
                    last_error = $5, last_attempt_at = $4, next_attempt_at = $6,
                    leased_until = NULL, lease_holder = NULL
                 WHERE seq = $1 AND lease_holder = $2 AND status = 'pending'",
                &[&a.delivery_seq, &a.holder, &code, &a.at, error, next],
            )
            .await?
        }
    };
    if changed == 0 {
        return Ok(None);
    }
    let failing_since = if a.failure.is_none() {
        tx.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1",
            &[&a.endpoint_id],
        )
        .await?;
        None
    } else {
        tx.query_opt(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
             WHERE id = $1 RETURNING failing_since",
            &[&a.endpoint_id, &a.at],
        )
        .await?
        .and_then(|r| r.get::<_, Option<DateTime<Utc>>>(0))
    };
    tx.commit().await?;
    Ok(Some(failing_since))
}

pub(crate) async fn deliveries(
    pool: &Pool,
    endpoint_id: &str,
    limit: usize,
) -> Result<Vec<WebhookDelivery>> {
    let c = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT d.seq, d.endpoint_id, n.id, n.type, n.customer_id, d.status, d.attempts,
                d.next_attempt_at, d.last_status_code, d.last_error, d.last_attempt_at,
                d.delivered_at
             FROM webhook_deliveries d JOIN notifications n ON n.seq = d.notification_seq
             WHERE d.endpoint_id = $1 ORDER BY d.notification_seq DESC LIMIT $2",
            &[&endpoint_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: String = r.get(5);
            WebhookDelivery {
                id: delivery_id(r.get(0)),
                endpoint_id: r.get(1),
                notification_id: r.get(2),
                kind: r.get(3),
                customer_id: r.get(4),
                attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
                next_attempt_at: (status == "pending").then(|| r.get(7)),
                status,
                last_status_code: r
                    .get::<_, Option<i32>>(8)
                    .and_then(|c| u16::try_from(c).ok()),
                last_error: r.get(9),
                last_attempt_at: r.get(10),
                delivered_at: r.get(11),
            }
        })
        .collect())
}

pub(crate) async fn replay(pool: &Pool, id: &str, now: DateTime<Utc>) -> Result<Option<u64>> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT seq, type, customer_id FROM notifications WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (seq, kind, customer): (i64, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2,
            delivered_at = NULL WHERE notification_seq = $1",
        &[&seq, &now],
    )
    .await?;
    fan_out(&tx, seq, &kind, customer.as_deref(), now).await?;
    let pending: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE notification_seq = $1
               AND status = 'pending'",
            &[&seq],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Some(u64::try_from(pending).unwrap_or(0)))
}

pub(crate) async fn oldest_pending(pool: &Pool) -> Result<Option<DateTime<Utc>>> {
    let c = pool.get().await?;
    Ok(c.query_one(
        "SELECT MIN(n.created_at) FROM webhook_deliveries d
         JOIN notifications n ON n.seq = d.notification_seq
         JOIN webhook_endpoints w ON w.id = d.endpoint_id
         WHERE d.status = 'pending' AND w.status = 'enabled' AND w.deleted_at IS NULL",
        &[],
    )
    .await?
    .get(0))
}

/// See the SQLite twin.
pub(crate) async fn set_email_channel(
    pool: &Pool,
    events: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let id = crate::notify::EMAIL_CHANNEL;
    let mut c = pool.get().await?;
    let Some(events) = events else {
        let n = c
            .execute(
                "UPDATE webhook_endpoints SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                &[&id, &now],
            )
            .await?;
        return Ok(n > 0);
    };
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO webhook_endpoints (id, url, secret, status, created_at, kind)
         VALUES ($1, 'smtp:', '', 'enabled', $2, 'email')
         ON CONFLICT (id) DO UPDATE SET deleted_at = NULL, status = 'enabled',
            disabled_at = NULL, failing_since = NULL",
        &[&id, &now],
    )
    .await?;
    tx.execute(
        "DELETE FROM webhook_endpoint_events WHERE endpoint_id = $1",
        &[&id],
    )
    .await?;
    for t in events {
        tx.execute(
            "INSERT INTO webhook_endpoint_events (endpoint_id, event_type) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&id, t],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
