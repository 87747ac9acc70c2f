//! Shared by the store suites: opening a fresh store on each backend, the macro that runs every
//! test once per backend, and the fixtures both suites use.
#![allow(dead_code, unused_macros)] // each suite uses a different subset

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use tally_store::{CustomerUpsert, Store};

/// A fresh store and what keeps it alive.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub _dir: Option<tempfile::TempDir>,
}

/// A fresh SQLite store in a temp dir.
pub async fn sqlite() -> Option<Ctx> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let store = tally_store::connect(&url).await.expect("open sqlite");
    Some(Ctx {
        store,
        url,
        _dir: Some(dir),
    })
}

/// A fresh PostgreSQL store; `None` when PostgreSQL is not configured outside CI (see
/// `tally_store::testing`).
pub async fn postgres() -> Option<Ctx> {
    let url = tally_store::testing::fresh_postgres_url().await?;
    let store = tally_store::connect(&url).await.expect("open postgres");
    Some(Ctx {
        store,
        url,
        _dir: None,
    })
}

/// Runs each listed `async fn(Ctx)` once on SQLite and once on PostgreSQL.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(ctx) = $crate::common::sqlite().await { super::$name(ctx).await }
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(ctx) = $crate::common::postgres().await { super::$name(ctx).await }
            })*
        }
    };
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap()
}

pub async fn customer(store: &dyn Store, id: &str) {
    store
        .upsert_customer(CustomerUpsert {
            email_opt_out: None,
            id: id.into(),
            email: None,
            name: None,
            metadata: None,
            now: t0(),
        })
        .await
        .expect("customer");
}
