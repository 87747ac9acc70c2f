//! Embedded SQLite migrations, applied in order, each in its own transaction.

use chrono::Utc;
use rusqlite::{params, Connection};

use crate::{Result, StoreError};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/sqlite/0002_leases.sql"),
    ),
    (
        3,
        "credits",
        include_str!("../../migrations/sqlite/0003_credits.sql"),
    ),
    (
        4,
        "credit_keys",
        include_str!("../../migrations/sqlite/0004_credit_keys.sql"),
    ),
    (
        5,
        "rollup_watermark",
        include_str!("../../migrations/sqlite/0005_rollup_watermark.sql"),
    ),
    (
        6,
        "scoped_keys_audit",
        include_str!("../../migrations/sqlite/0006_scoped_keys_audit.sql"),
    ),
    (
        7,
        "stripe_inbox",
        include_str!("../../migrations/sqlite/0007_stripe_inbox.sql"),
    ),
    (
        8,
        "stripe_links",
        include_str!("../../migrations/sqlite/0008_stripe_links.sql"),
    ),
    (
        9,
        "notifications",
        include_str!("../../migrations/sqlite/0009_notifications.sql"),
    ),
    (
        10,
        "page_sessions",
        include_str!("../../migrations/sqlite/0010_page_sessions.sql"),
    ),
    (
        11,
        "customer_emails",
        include_str!("../../migrations/sqlite/0011_customer_emails.sql"),
    ),
    (
        12,
        "subscription_history",
        include_str!("../../migrations/sqlite/0012_subscription_history.sql"),
    ),
    (
        13,
        "clock_offset",
        include_str!("../../migrations/sqlite/0013_clock_offset.sql"),
    ),
    (
        15,
        "invoice_pushes",
        include_str!("../../migrations/sqlite/0015_invoice_pushes.sql"),
    ),
    (
        16,
        "dedup_window",
        include_str!("../../migrations/sqlite/0016_dedup_window.sql"),
    ),
    (
        18,
        "topups",
        include_str!("../../migrations/sqlite/0018_topups.sql"),
    ),
    (
        20,
        "anchors_and_hosted_invoices",
        include_str!("../../migrations/sqlite/0020_anchors_and_hosted_invoices.sql"),
    ),
    (
        23,
        "stripe_invoices",
        include_str!("../../migrations/sqlite/0023_stripe_invoices.sql"),
    ),
];

/// The schema version the code expects.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    for (version, name, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        let fail = |e: rusqlite::Error| StoreError::Migration {
            version: *version,
            name: (*name).into(),
            message: e.to_string(),
        };
        tx.execute_batch(sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, Utc::now().timestamp_millis()],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{run, MIGRATIONS};
    use crate::sqlite::writer::Writer;

    /// Keys stored by schema 3 (`credit_idempotency`) are carried into the ledger and found again
    /// by the writer's index.
    #[test]
    fn credit_keys_move_into_the_ledger() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (version, name, sql) in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO customers (id, billing_anchor, created_at, updated_at) VALUES ('c1', 0, 0, 0);
             INSERT INTO credit_entries (id, customer_id, kind, amount, balance_after,
                idempotency_key, created_at) VALUES ('ce_1', 'c1', 'grant', '10', '10', 'k1', 0);
             INSERT INTO credit_entries (id, customer_id, kind, amount, balance_after, created_at)
                VALUES ('ce_2', 'c1', 'expire', '-10', '0', 0);
             INSERT INTO credit_idempotency VALUES ('c1', 'k1', 'fp1', 'ce_1', 0);",
        )
        .unwrap();
        run(&mut conn).unwrap();
        let fps: Vec<(String, Option<String>)> = conn
            .prepare("SELECT id, fingerprint FROM credit_entries ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            fps,
            vec![("ce_1".into(), Some("fp1".into())), ("ce_2".into(), None)]
        );
        let w = Writer::new(conn, true, crate::sqlite::DedupWindow::default()).unwrap();
        let k = w.dedup.key("c1", "k1");
        assert_eq!(w.credit_keys.get(&k), Some(&1));
        assert_eq!(w.credit_keys.len(), 1);
    }

    /// Keys made before scopes were all admin keys and stay so; audit rows of credit grants keep
    /// their details as their `after` state.
    #[test]
    fn keys_become_admin_keys_and_audit_rows_keep_their_details() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (version, name, sql) in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at)
                VALUES ('key_old', 'ci', 'admin', 'h', 0);
             INSERT INTO audit_log (at, actor, action, customer_id, object_id, idempotency_key,
                details) VALUES (0, 'env', 'credits.grant', 'c1', 'ce_1', 'g1', '{\"amount\":\"5\"}');",
        )
        .unwrap();
        run(&mut conn).unwrap();
        let keys = crate::sqlite::api_keys::list(&conn).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].scope, "admin");
        assert_eq!(keys[0].customer_id, None);
        let page = crate::sqlite::audit::list(
            &conn,
            &crate::AuditFilter {
                limit: 10,
                ..crate::AuditFilter::default()
            },
        )
        .unwrap();
        assert_eq!(page.records.len(), 1);
        let r = &page.records[0];
        assert_eq!(r.id, "aud_1");
        assert_eq!(r.action, "credits.grant");
        assert_eq!(r.target.kind, "credit_entry");
        assert_eq!(r.target.id.as_deref(), Some("ce_1"));
        assert_eq!(r.before, None);
        assert_eq!(r.after, Some(serde_json::json!({"amount": "5"})));
        assert_eq!(r.idempotency_key.as_deref(), Some("g1"));
    }
}
