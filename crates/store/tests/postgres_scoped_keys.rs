//! The PostgreSQL migration to scoped keys and the audit log with before/after states.

use tally_store::AuditFilter;
use tokio_postgres::NoTls;

/// The schema before scoped keys.
const BEFORE_SCOPES: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_become_admin_keys_and_audit_rows_keep_their_details() {
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    tally_store::testing::postgres_migrate_to(&url, BEFORE_SCOPES)
        .await
        .unwrap();
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_at)
            VALUES ('key_old', 'ci', 'admin', 'h', now());
         INSERT INTO audit_log (at, actor, action, customer_id, object_id, idempotency_key, details)
            VALUES (now(), 'env', 'credits.grant', 'c1', 'ce_1', 'g1', '{\"amount\": \"5\"}');",
    )
    .await
    .unwrap();

    let store = tally_store::connect(&url).await.expect("migrate and open");
    let keys = store.list_api_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].scope, "admin");
    assert_eq!(keys[0].customer_id, None);
    let page = store
        .audit_log(AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let r = &page.records[0];
    assert_eq!(r.id, "aud_1");
    assert_eq!(r.target.kind, "credit_entry");
    assert_eq!(r.target.id.as_deref(), Some("ce_1"));
    assert_eq!(r.before, None);
    assert_eq!(r.after, Some(serde_json::json!({"amount": "5"})));
    assert_eq!(r.idempotency_key.as_deref(), Some("g1"));
    store.close().await;
}
