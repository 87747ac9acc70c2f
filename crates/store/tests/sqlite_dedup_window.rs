//! SQLite keeps in memory only the dedup keys of events inside the deduplication window; an id
//! whose first copy left the window is found by the unique key on disk, so nothing is counted
//! twice — within a batch, across batches and across a restart.

mod common;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{customer, t0};
use rust_decimal::Decimal;
use tally_store::clock::{Clock, SharedClock};
use tally_store::sqlite::DedupWindow;
use tally_store::{NewEvent, Store};

fn ev(id: &str, value: i64, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        customer_id: "c1".into(),
        event_id: id.into(),
        metric: "calls".into(),
        value: Decimal::from(value),
        timestamp: at,
        properties: None,
        period_start: t0(),
        unique_key: None,
    }
}

async fn open(path: &Path, clock: &SharedClock, max_keys: usize) -> Arc<dyn Store> {
    let window = DedupWindow {
        window: Duration::days(35),
        clock: clock.clone(),
        max_keys,
        ..DedupWindow::default()
    };
    tally_store::connect_with_window(&format!("sqlite://{}", path.display()), window)
        .await
        .expect("open")
}

async fn calls(store: &dyn Store) -> (i64, Decimal) {
    let rows = store.usage("c1", t0()).await.expect("usage");
    rows.iter()
        .find(|r| r.metric == "calls")
        .map_or((0, Decimal::ZERO), |r| (r.count, r.sum))
}

async fn ingest(store: &dyn Store, events: Vec<NewEvent>) -> (u64, u64) {
    let o = store.ingest(events).await.expect("ingest");
    (o.accepted, o.duplicates)
}

#[tokio::test]
async fn ids_are_counted_once_inside_the_window_beyond_it_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.db");
    let start = t0() + Duration::days(34);
    let clock = Clock::frozen(start);
    let store = open(&path, &clock, tally_store::DEFAULT_DEDUP_MEMORY_KEYS).await;
    customer(store.as_ref(), "c1").await;

    // "old" inside the window now (34 days ago, the day t0 starts), "recent" a day ago.
    assert_eq!(
        ingest(
            store.as_ref(),
            vec![
                ev("old", 1, t0()),
                ev("recent", 10, start - Duration::days(1))
            ]
        )
        .await,
        (2, 0)
    );
    // Resent with a newer timestamp: found in memory.
    assert_eq!(
        ingest(store.as_ref(), vec![ev("old", 1, start)]).await,
        (0, 1)
    );

    // Three days on, "old"'s day has left the window and its key is pruned over the next 8
    // groups.
    clock.advance(Duration::days(3));
    let now = clock.now();
    for i in 0..8 {
        assert_eq!(
            ingest(store.as_ref(), vec![ev(&format!("other{i}"), 100, now)]).await,
            (1, 0)
        );
    }
    // "old" again, now from the unique key on disk, in a batch with a new event and a duplicate
    // of it: only the new one is stored and summed.
    assert_eq!(
        ingest(
            store.as_ref(),
            vec![
                ev("old", 1, now),
                ev("new", 1000, now),
                ev("new", 1000, now)
            ]
        )
        .await,
        (1, 2)
    );
    assert_eq!(calls(store.as_ref()).await, (11, Decimal::from(1811)));
    store.close().await;
    drop(store);

    // After a restart only the window's keys are loaded; every id is still found once.
    let store = open(&path, &clock, tally_store::DEFAULT_DEDUP_MEMORY_KEYS).await;
    for id in ["old", "recent", "other0", "other7", "new"] {
        assert_eq!(
            ingest(store.as_ref(), vec![ev(id, 5, clock.now())]).await,
            (0, 1),
            "{id}"
        );
    }
    // A batch of only old ids stores nothing, a fresh id is stored.
    assert_eq!(
        ingest(
            store.as_ref(),
            vec![ev("old", 1, clock.now()), ev("fresh", 10_000, clock.now())]
        )
        .await,
        (1, 1)
    );
    assert_eq!(calls(store.as_ref()).await, (12, Decimal::from(11_811)));
    store.close().await;
}

/// With memory for only 3 keys the set holds a few of the newest and the unique index answers
/// the rest: every id is still counted once, within a batch, across batches and across a
/// restart, and the usage sums only the stored events.
#[tokio::test]
async fn ids_are_counted_once_with_memory_for_only_three_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.db");
    let clock = Clock::frozen(t0() + Duration::days(1));
    let store = open(&path, &clock, 3).await;
    customer(store.as_ref(), "c1").await;
    let now = clock.now();
    for i in 0..20 {
        let id = format!("e{i}");
        assert_eq!(
            ingest(store.as_ref(), vec![ev(&id, 1, now), ev(&id, 1, now)]).await,
            (1, 1),
            "{id}"
        );
    }
    let all = |v| {
        (0..20)
            .map(|i| ev(&format!("e{i}"), v, now))
            .collect::<Vec<_>>()
    };
    assert_eq!(ingest(store.as_ref(), all(7)).await, (0, 20));
    assert_eq!(calls(store.as_ref()).await, (20, Decimal::from(20)));
    store.close().await;
    drop(store);

    let store = open(&path, &clock, 3).await;
    assert_eq!(ingest(store.as_ref(), all(7)).await, (0, 20));
    let mut batch = all(7);
    batch.push(ev("fresh", 100, now));
    assert_eq!(ingest(store.as_ref(), batch).await, (1, 20));
    assert_eq!(calls(store.as_ref()).await, (21, Decimal::from(120)));
    store.close().await;
}
