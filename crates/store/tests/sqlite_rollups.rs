//! SQLite writes usage rollups about once a second and keeps the newer rows in memory: readers in
//! the same process still see every acknowledged event, and a crash loses no usage because the
//! rollups are rebuilt from the events after the watermark when the store opens again (and an
//! operator command adds those events to what it reads).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{customer, t0};
use rust_decimal::Decimal;
use tally_store::{NewEvent, Store};

fn ev(id: u64, value: i64, at: DateTime<Utc>, unique: Option<&str>) -> NewEvent {
    NewEvent {
        customer_id: "c1".into(),
        event_id: format!("e{id}"),
        metric: if unique.is_some() { "seats" } else { "calls" }.into(),
        value: Decimal::from(value),
        timestamp: at,
        properties: None,
        period_start: t0(),
        unique_key: unique.map(str::to_owned),
    }
}

/// The database files as a crash would leave them (the store stays open while they are copied).
fn copy_db(from: &Path, to: &Path) {
    for ext in ["", "-wal"] {
        let src = format!("{}{ext}", from.display());
        if Path::new(&src).exists() {
            std::fs::copy(&src, format!("{}{ext}", to.display())).expect("copy");
        }
    }
}

async fn usage_of(store: &dyn Store, metric: &str) -> (i64, Decimal) {
    let rows = store.usage("c1", t0()).await.expect("usage");
    rows.iter()
        .find(|r| r.metric == metric)
        .map_or((0, Decimal::ZERO), |r| (r.count, r.sum))
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// An ingesting store on a new file with customer `c1`, and where the file is.
async fn live_store() -> (tempfile::TempDir, PathBuf, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = tally_store::connect(&url(&live)).await.unwrap();
    customer(store.as_ref(), "c1").await;
    (dir, live, store)
}

#[tokio::test]
async fn acknowledged_usage_is_read_at_once_and_rebuilt_after_a_crash() {
    let (dir, live, store) = live_store().await;
    let at = t0() + Duration::hours(1);
    // 3 batches: 300 events of values 1..=300, one resent.
    for b in 0..3u64 {
        let batch = (b * 100 + 1..=b * 100 + 100)
            .map(|i| ev(i, i as i64, at + Duration::seconds(i as i64), None))
            .collect();
        store.ingest(batch).await.unwrap();
    }
    let again = store.ingest(vec![ev(7, 7, at, None)]).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    // Read in the same process right after the acknowledgements.
    assert_eq!(
        usage_of(store.as_ref(), "calls").await,
        (300, Decimal::from(45_150))
    );

    // An operator command next to the running store reads the same.
    {
        let admin = tally_store::connect_admin(&url(&live)).await.unwrap();
        assert_eq!(
            usage_of(admin.as_ref(), "calls").await,
            (300, Decimal::from(45_150))
        );
        admin.close().await;
    }

    // A crash image: rollups may lag behind the events in it.
    let crashed = dir.path().join("crashed.db");
    copy_db(&live, &crashed);
    let crashed_url = url(&crashed);
    {
        // An operator command adds the events after the watermark to what it reads.
        let admin = tally_store::connect_admin(&crashed_url).await.unwrap();
        assert_eq!(
            usage_of(admin.as_ref(), "calls").await,
            (300, Decimal::from(45_150))
        );
        admin.close().await;
    }
    // Opening it to ingest adds the usage of the events after the watermark.
    let reopened = tally_store::connect(&crashed_url).await.unwrap();
    assert_eq!(
        usage_of(reopened.as_ref(), "calls").await,
        (300, Decimal::from(45_150))
    );
    let rows = reopened.usage("c1", t0()).await.unwrap();
    assert_eq!(rows[0].max, Some(Decimal::from(300)));
    assert_eq!(rows[0].latest, Some(Decimal::from(300)));
    // Nothing is added twice: more events, a clean restart, the same totals plus the new ones.
    reopened
        .ingest(vec![ev(1_000, 50, at, None)])
        .await
        .unwrap();
    reopened.close().await;
    let again = tally_store::connect(&crashed_url).await.unwrap();
    assert_eq!(
        usage_of(again.as_ref(), "calls").await,
        (301, Decimal::from(45_200))
    );
    again.close().await;

    // The live store, closed cleanly, wrote its rollups: an admin store reads them exactly.
    store.close().await;
    let admin = tally_store::connect_admin(&url(&live)).await.unwrap();
    assert_eq!(
        usage_of(admin.as_ref(), "calls").await,
        (300, Decimal::from(45_150))
    );
}

#[tokio::test]
async fn distinct_counts_are_written_before_the_commit() {
    let (dir, live, store) = live_store().await;
    let at = t0() + Duration::hours(1);
    let batch = (1..=10)
        .map(|i| ev(i, 1, at, Some(if i % 2 == 0 { "alice" } else { "bob" })))
        .collect();
    store.ingest(batch).await.unwrap();
    // No replay could count distinct values again, so they are in usage_rollups already.
    let crashed = dir.path().join("crashed.db");
    copy_db(&live, &crashed);
    let admin = tally_store::connect_admin(&url(&crashed)).await.unwrap();
    let rows = admin.usage("c1", t0()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].count, rows[0].unique_count), (10, 2));
    admin.close().await;
    store.close().await;
}
