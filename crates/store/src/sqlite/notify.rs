//! The notification outbox and webhook deliveries on SQLite (see [`crate::notify`]). Writes run as
//! writer jobs, so a claim's read and lease are one atomic step.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use crate::notify::{delivery_id, usage_from_row};
use crate::time::{from_ms, to_ms};
use crate::{
    AuditContext, AuditEntry, ClaimedDelivery, DeliveryAttempt, NewNotification,
    NewWebhookEndpoint, Notification, NotificationFilter, Result, UsageNotification,
    WebhookDelivery, WebhookEndpoint,
};

const NOTIFICATION_COLS: &str =
    "n.seq, n.id, n.type, n.customer_id, n.payload, n.dedup_key, n.created_at";

fn notification(r: &Row<'_>, at: usize) -> rusqlite::Result<Notification> {
    let payload: String = r.get(at + 4)?;
    Ok(Notification {
        seq: r.get(at)?,
        id: r.get(at + 1)?,
        kind: r.get(at + 2)?,
        customer_id: r.get(at + 3)?,
        // Written by `enqueue` from a JSON value; an unreadable one is shown as a string.
        payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
        dedup_key: r.get(at + 5)?,
        created_at: from_ms(r.get(at + 6)?),
    })
}

/// Inserts a notification and its deliveries, in the caller's transaction.
pub(crate) fn enqueue(conn: &Connection, n: &NewNotification) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO notifications (id, type, customer_id, payload, dedup_key,
                created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            n.id(),
            n.kind,
            n.customer_id,
            n.payload.to_string(),
            n.dedup_key,
            to_ms(n.created_at)
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    let seq = conn.last_insert_rowid();
    fan_out(conn, seq, &n.kind, n.customer_id.as_deref(), n.created_at)?;
    Ok(true)
}

fn fan_out(
    conn: &Connection,
    seq: i64,
    kind: &str,
    customer: Option<&str>,
    due: DateTime<Utc>,
) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries (endpoint_id, notification_seq, customer_key,
                status, next_attempt_at)
             SELECT DISTINCT w.id, ?1, ?2, 'pending', ?3 FROM webhook_endpoints w
             JOIN webhook_endpoint_events e ON e.endpoint_id = w.id
             WHERE w.status = 'enabled' AND w.deleted_at IS NULL AND e.event_type IN (?4, '*')",
        )?
        .execute(params![seq, customer.unwrap_or(""), to_ms(due), kind])?)
}

pub(crate) fn list(conn: &Connection, f: &NotificationFilter) -> Result<Vec<Notification>> {
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications n
         WHERE n.seq > ?1 AND (?2 IS NULL OR n.customer_id = ?2) AND (?3 IS NULL OR n.type = ?3)
         ORDER BY n.seq LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![f.after_seq.unwrap_or(0), f.customer_id, f.kind, limit],
        |r| notification(r, 0),
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn usage(conn: &Connection, customer: &str) -> Result<Vec<UsageNotification>> {
    let sql = format!(
        "SELECT {NOTIFICATION_COLS},
            (SELECT MIN(d.delivered_at) FROM webhook_deliveries d WHERE d.notification_seq = n.seq)
         FROM notifications n
         WHERE n.customer_id = ?1 AND n.type = 'usage.threshold_reached' ORDER BY n.seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([customer], |r| {
        Ok((notification(r, 0)?, r.get::<_, Option<i64>>(7)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (n, delivered) = row?;
        if let Some(u) = usage_from_row(&n, delivered.map(from_ms)) {
            out.push(u);
        }
    }
    Ok(out)
}

const ENDPOINT_COLS: &str = "w.id, w.url, w.status, w.created_at, w.disabled_at, w.failing_since,
    w.secret, w.previous_secret, w.previous_expires_at,
    (SELECT group_concat(event_type, char(10)) FROM
        (SELECT event_type FROM webhook_endpoint_events WHERE endpoint_id = w.id ORDER BY event_type)),
    w.kind";

fn endpoint(r: &Row<'_>, at: usize) -> rusqlite::Result<WebhookEndpoint> {
    let events: Option<String> = r.get(at + 9)?;
    Ok(WebhookEndpoint {
        id: r.get(at)?,
        url: r.get(at + 1)?,
        status: r.get(at + 2)?,
        created_at: from_ms(r.get(at + 3)?),
        disabled_at: r.get::<_, Option<i64>>(at + 4)?.map(from_ms),
        failing_since: r.get::<_, Option<i64>>(at + 5)?.map(from_ms),
        secret: r.get(at + 6)?,
        previous_secret: r.get(at + 7)?,
        previous_secret_expires_at: r.get::<_, Option<i64>>(at + 8)?.map(from_ms),
        events: events
            .map(|e| e.split('\n').map(str::to_owned).collect())
            .unwrap_or_default(),
        kind: r.get(at + 10)?,
    })
}

pub(crate) fn get_endpoint(conn: &Connection, id: &str) -> Result<Option<WebhookEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints w WHERE w.id = ?1 AND w.deleted_at IS NULL
            AND w.kind = 'webhook'"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |r| endpoint(r, 0))
        .optional()?)
}

pub(crate) fn list_endpoints(conn: &Connection) -> Result<Vec<WebhookEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints w WHERE w.deleted_at IS NULL
            AND w.kind = 'webhook' ORDER BY w.created_at, w.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], |r| endpoint(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn audit_endpoint(
    conn: &Connection,
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
        super::audit::insert(conn, &e)?;
    }
    Ok(())
}

pub(crate) fn create_endpoint(
    conn: &Connection,
    e: &NewWebhookEndpoint,
    audit: Option<AuditContext>,
) -> Result<WebhookEndpoint> {
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (id, url, secret, status, created_at)
         VALUES (?1, ?2, ?3, 'enabled', ?4)",
    )?
    .execute(params![e.id, e.url, e.secret, to_ms(e.created_at)])?;
    for t in &e.events {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO webhook_endpoint_events (endpoint_id, event_type) VALUES (?1, ?2)",
        )?
        .execute(params![e.id, t])?;
    }
    let created = get_endpoint(conn, &e.id)?.ok_or_else(|| {
        crate::StoreError::Database("webhook endpoint vanished after insert".into())
    })?;
    audit_endpoint(
        conn,
        audit,
        "webhook_endpoint.created",
        None,
        Some(&created),
    )?;
    Ok(created)
}

pub(crate) fn delete_endpoint(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<bool> {
    let Some(before) = get_endpoint(conn, id)? else {
        return Ok(false);
    };
    conn.prepare_cached("UPDATE webhook_endpoints SET deleted_at = ?2 WHERE id = ?1")?
        .execute(params![id, to_ms(at)])?;
    audit_endpoint(conn, audit, "webhook_endpoint.deleted", Some(&before), None)?;
    Ok(true)
}

pub(crate) fn rotate(
    conn: &Connection,
    id: &str,
    secret: &str,
    previous_until: DateTime<Utc>,
    audit: Option<AuditContext>,
) -> Result<Option<WebhookEndpoint>> {
    let Some(before) = get_endpoint(conn, id)? else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = ?2,
            previous_expires_at = ?3 WHERE id = ?1",
    )?
    .execute(params![id, secret, to_ms(previous_until)])?;
    let after = get_endpoint(conn, id)?;
    audit_endpoint(
        conn,
        audit,
        "webhook_endpoint.rotated",
        Some(&before),
        after.as_ref(),
    )?;
    Ok(after)
}

pub(crate) fn disable(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    notice: &NewNotification,
) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_at = ?2
             WHERE id = ?1 AND status = 'enabled'",
        )?
        .execute(params![id, to_ms(at)])?;
    if changed == 0 {
        return Ok(false);
    }
    enqueue(conn, notice)?;
    Ok(true)
}

/// The claimable deliveries: see [`crate::Store::claim_deliveries`]. `?3`: whether leases of
/// other holders are dead (see [`claim`]).
const DUE: &str = "SELECT d.seq FROM webhook_deliveries d
    JOIN webhook_endpoints w ON w.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
      AND (d.leased_until IS NULL OR d.leased_until <= ?1 OR (?3 AND d.lease_holder != ?4))
      AND w.status = 'enabled' AND w.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
          WHERE p.endpoint_id = d.endpoint_id AND p.customer_key = d.customer_key
            AND p.status = 'pending' AND p.notification_seq < d.notification_seq)
    ORDER BY d.notification_seq LIMIT ?2";

/// Leases due deliveries to `holder`. With `exclusive` (this process holds the ingest lock, so no
/// other live process delivers: only `tally serve` does, and it ingests), a lease of another
/// holder belongs to a process that died, and its deliveries are taken over at once.
pub(crate) fn claim(
    conn: &Connection,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
    exclusive: bool,
) -> Result<Vec<ClaimedDelivery>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let seqs = conn
        .prepare_cached(DUE)?
        .query_map(params![to_ms(now), limit, exclusive, holder], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(seqs.len());
    let sql = format!(
        "SELECT d.seq, d.attempts, {NOTIFICATION_COLS}, {ENDPOINT_COLS}
         FROM webhook_deliveries d JOIN notifications n ON n.seq = d.notification_seq
         JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.seq = ?1"
    );
    for seq in seqs {
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET leased_until = ?2, lease_holder = ?3 WHERE seq = ?1",
        )?
        .execute(params![seq, to_ms(until), holder])?;
        let c = conn.prepare_cached(&sql)?.query_row([seq], |r| {
            Ok(ClaimedDelivery {
                seq: r.get(0)?,
                attempts: r.get(1)?,
                notification: notification(r, 2)?,
                endpoint: endpoint(r, 9)?,
            })
        })?;
        out.push(c);
    }
    Ok(out)
}

pub(crate) fn finish(
    conn: &Connection,
    a: &DeliveryAttempt,
) -> Result<Option<Option<DateTime<Utc>>>> {
    let code = a.status_code.map(i64::from);
    let changed = match &a.failure {
        None => conn
            .prepare_cached(
                "UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1,
                    last_status_code = ?3, last_error = NULL, last_attempt_at = ?4,
                    delivered_at = ?4, leased_until = NULL, lease_holder = NULL
                 WHERE seq = ?1 AND lease_holder = ?2 AND status = 'pending'",
            )?
            .execute(params![a.delivery_seq, a.holder, code, to_ms(a.at)])?,
        Some((error, next)) => conn
            .prepare_cached(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = ?3,
                    last_error = ?5, last_attempt_at = ?4, next_attempt_at = ?6,
                    leased_until = NULL, lease_holder = NULL
                 WHERE seq = ?1 AND lease_holder = ?2 AND status = 'pending'",
            )?
            .execute(params![
                a.delivery_seq,
                a.holder,
                code,
                to_ms(a.at),
                error,
                to_ms(*next)
            ])?,
    };
    if changed == 0 {
        return Ok(None);
    }
    let failing_since: Option<i64> = if a.failure.is_none() {
        conn.prepare_cached("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?1")?
            .execute([&a.endpoint_id])?;
        None
    } else {
        conn.prepare_cached(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?2)
             WHERE id = ?1 RETURNING failing_since",
        )?
        .query_row(params![a.endpoint_id, to_ms(a.at)], |r| r.get(0))
        .optional()?
        .flatten()
    };
    Ok(Some(failing_since.map(from_ms)))
}

pub(crate) fn deliveries(
    conn: &Connection,
    endpoint_id: &str,
    limit: usize,
) -> Result<Vec<WebhookDelivery>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT d.seq, d.endpoint_id, n.id, n.type, n.customer_id, d.status, d.attempts,
            d.next_attempt_at, d.last_status_code, d.last_error, d.last_attempt_at, d.delivered_at
         FROM webhook_deliveries d JOIN notifications n ON n.seq = d.notification_seq
         WHERE d.endpoint_id = ?1 ORDER BY d.notification_seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![endpoint_id, limit], |r| {
        let status: String = r.get(5)?;
        Ok(WebhookDelivery {
            id: delivery_id(r.get(0)?),
            endpoint_id: r.get(1)?,
            notification_id: r.get(2)?,
            kind: r.get(3)?,
            customer_id: r.get(4)?,
            attempts: r.get(6)?,
            next_attempt_at: if status == "pending" {
                Some(from_ms(r.get(7)?))
            } else {
                None
            },
            status,
            last_status_code: r.get(8)?,
            last_error: r.get(9)?,
            last_attempt_at: r.get::<_, Option<i64>>(10)?.map(from_ms),
            delivered_at: r.get::<_, Option<i64>>(11)?.map(from_ms),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn replay(conn: &Connection, id: &str, now: DateTime<Utc>) -> Result<Option<u64>> {
    let found: Option<(i64, String, Option<String>)> = conn
        .prepare_cached("SELECT seq, type, customer_id FROM notifications WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((seq, kind, customer)) = found else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?2,
            delivered_at = NULL WHERE notification_seq = ?1",
    )?
    .execute(params![seq, to_ms(now)])?;
    fan_out(conn, seq, &kind, customer.as_deref(), now)?;
    let pending: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE notification_seq = ?1 AND status = 'pending'",
        )?
        .query_row([seq], |r| r.get(0))?;
    Ok(Some(u64::try_from(pending).unwrap_or(0)))
}

pub(crate) fn oldest_pending(conn: &Connection) -> Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(n.created_at) FROM webhook_deliveries d
             JOIN notifications n ON n.seq = d.notification_seq
             JOIN webhook_endpoints w ON w.id = d.endpoint_id
             WHERE d.status = 'pending' AND w.status = 'enabled' AND w.deleted_at IS NULL",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(at.map(from_ms))
}

/// Opens (with the event types it receives) or closes the email channel; see
/// [`crate::notify::EMAIL_CHANNEL`]. Returns whether it changed.
pub(crate) fn set_email_channel(
    conn: &Connection,
    events: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let id = crate::notify::EMAIL_CHANNEL;
    let Some(events) = events else {
        let n = conn
            .prepare_cached(
                "UPDATE webhook_endpoints SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            )?
            .execute(params![id, to_ms(now)])?;
        return Ok(n > 0);
    };
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (id, url, secret, status, created_at, kind)
         VALUES (?1, 'smtp:', '', 'enabled', ?2, 'email')
         ON CONFLICT (id) DO UPDATE SET deleted_at = NULL, status = 'enabled',
            disabled_at = NULL, failing_since = NULL",
    )?
    .execute(params![id, to_ms(now)])?;
    conn.prepare_cached("DELETE FROM webhook_endpoint_events WHERE endpoint_id = ?1")?
        .execute([id])?;
    for t in events {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO webhook_endpoint_events (endpoint_id, event_type) VALUES (?1, ?2)",
        )?
        .execute(params![id, t])?;
    }
    Ok(true)
}
