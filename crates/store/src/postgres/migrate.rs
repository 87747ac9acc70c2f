//! Embedded PostgreSQL migrations. An advisory lock serializes concurrent starts.

use deadpool_postgres::Client;

use crate::{Result, StoreError};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        3,
        "credits",
        include_str!("../../migrations/postgres/0003_credits.sql"),
    ),
    (
        4,
        "events_partitioned",
        include_str!("../../migrations/postgres/0004_events_partitioned.sql"),
    ),
    (
        5,
        "scoped_keys_audit",
        include_str!("../../migrations/postgres/0005_scoped_keys_audit.sql"),
    ),
    (
        6,
        "stripe_inbox",
        include_str!("../../migrations/postgres/0006_stripe_inbox.sql"),
    ),
    (
        7,
        "stripe_links",
        include_str!("../../migrations/postgres/0007_stripe_links.sql"),
    ),
    (
        8,
        "notifications",
        include_str!("../../migrations/postgres/0008_notifications.sql"),
    ),
    (
        9,
        "page_sessions",
        include_str!("../../migrations/postgres/0009_page_sessions.sql"),
    ),
    (
        10,
        "customer_emails",
        include_str!("../../migrations/postgres/0010_customer_emails.sql"),
    ),
    (
        11,
        "subscription_history",
        include_str!("../../migrations/postgres/0011_subscription_history.sql"),
    ),
    (
        12,
        "clock_offset",
        include_str!("../../migrations/postgres/0012_clock_offset.sql"),
    ),
    (
        13,
        "scale",
        include_str!("../../migrations/postgres/0013_scale.sql"),
    ),
    (
        14,
        "invoice_pushes",
        include_str!("../../migrations/postgres/0014_invoice_pushes.sql"),
    ),
    (
        16,
        "topups",
        include_str!("../../migrations/postgres/0016_topups.sql"),
    ),
    (
        18,
        "anchors_and_hosted_invoices",
        include_str!("../../migrations/postgres/0018_anchors_and_hosted_invoices.sql"),
    ),
    (
        20,
        "credit_debit_fewer_statements",
        include_str!("../../migrations/postgres/0020_credit_debit_fewer_statements.sql"),
    ),
    (
        21,
        "stripe_invoices",
        include_str!("../../migrations/postgres/0021_stripe_invoices.sql"),
    ),
];

/// The schema version the code expects.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock id for migrations ("tally" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_616c_6c79;

pub(crate) async fn run(client: &mut Client) -> Result<()> {
    run_to(client, SCHEMA_VERSION).await
}

/// Applies the pending migrations up to and including `last` (tests start from older schemas).
pub(crate) async fn run_to(client: &mut Client, last: i64) -> Result<()> {
    for (version, name, sql) in MIGRATIONS.iter().take_while(|(v, _, _)| *v <= last) {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        let fail = |e: tokio_postgres::Error| StoreError::Migration {
            version: *version,
            name: (*name).into(),
            message: StoreError::from(e).to_string(),
        };
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
    }
    Ok(())
}
