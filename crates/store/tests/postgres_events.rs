//! PostgreSQL only: the event table is hash-partitioned by customer, dedup of
//! `(customer, event id)` still holds across batches, and rows written before the partitioning
//! migration keep their seq and their dedup.

use chrono::{DateTime, Duration, Utc};
use rust_decimal_macros::dec;
use tally_store::NewEvent;
use tokio_postgres::{Client, NoTls};

mod common;

use common::{customer, t0};

/// The last migration before the event table was partitioned.
const BEFORE_PARTITIONING: i64 = 3;

fn ev(customer: &str, id: &str, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        customer_id: customer.into(),
        event_id: id.into(),
        metric: "api_calls".into(),
        value: dec!(1),
        timestamp: at,
        properties: None,
        period_start: t0(),
        unique_key: None,
    }
}

async fn sql(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// Names of the partitions of `events`, sorted.
async fn partitions(c: &Client) -> Vec<String> {
    c.query(
        "SELECT inhrelid::regclass::text FROM pg_inherits
         WHERE inhparent = 'events'::regclass ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every event row as (seq, customer, event id), in seq order.
async fn rows(c: &Client) -> Vec<(i64, String, String)> {
    c.query(
        "SELECT seq, customer_id, event_id FROM events ORDER BY seq",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_hash_partitioned_by_customer_and_still_deduplicated() {
    let Some(ctx) = common::postgres().await else {
        return;
    };
    let s = &*ctx.store;
    let c = sql(&ctx.url).await;

    let strategy: i8 = c
        .query_one(
            "SELECT partstrat FROM pg_partitioned_table
             WHERE partrelid = 'events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(strategy as u8, b'h', "hash partitioning");
    let expected: Vec<String> = (0..16).map(|i| format!("events_p{i:02}")).collect();
    assert_eq!(partitions(&c).await, expected);

    let customers: Vec<String> = (0..40).map(|i| format!("cus_{i}")).collect();
    for id in &customers {
        customer(s, id).await;
    }
    let at = t0() + Duration::hours(1);
    let mut batch: Vec<NewEvent> = customers.iter().map(|id| ev(id, "evt_1", at)).collect();
    batch.push(ev("cus_0", "evt_1", at)); // a duplicate within the batch
    let first = s.ingest(batch).await.unwrap();
    assert_eq!((first.accepted, first.duplicates), (40, 1));

    let used: i64 = c
        .query_one("SELECT COUNT(DISTINCT tableoid) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(used > 1, "40 customers all landed in {used} partition(s)");
    let per_customer: i64 = c
        .query_one(
            "SELECT MAX(n) FROM (SELECT COUNT(DISTINCT tableoid) AS n FROM events
                                 GROUP BY customer_id) AS x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_customer, 1, "a customer's events share one partition");

    // Across batches: the old event counts once, the new one is stored after it.
    let second = s
        .ingest(vec![ev("cus_0", "evt_1", at), ev("cus_0", "evt_2", at)])
        .await
        .unwrap();
    assert_eq!((second.accepted, second.duplicates), (1, 1));
    assert_eq!(s.event_ids("cus_0").await.unwrap(), ["evt_1", "evt_2"]);
    assert_eq!(s.event_count().await.unwrap(), 41);
    let usage = s.usage("cus_0", t0()).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].count, 2);
    assert_eq!(usage[0].sum, dec!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_partitioning_keep_their_seq_and_dedup() {
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    tally_store::testing::postgres_migrate_to(&url, BEFORE_PARTITIONING)
        .await
        .unwrap();
    let c = sql(&url).await;
    assert!(partitions(&c).await.is_empty(), "not partitioned yet");
    c.batch_execute(
        "INSERT INTO customers (id, metadata, billing_anchor, created_at, updated_at)
         VALUES ('cus_a', '{}', '2026-01-15Z', now(), now()),
                ('cus_b', '{}', '2026-01-15Z', now(), now());
         INSERT INTO events (customer_id, event_id, metric, value, ts, usage_period_start,
             billed_period_start, ingested_at)
         VALUES ('cus_a', 'evt_1', 'api_calls', 1, '2026-01-15T01:00Z', '2026-01-15Z', '2026-01-15Z', now()),
                ('cus_b', 'evt_1', 'api_calls', 1, '2026-01-15T01:00Z', '2026-01-15Z', '2026-01-15Z', now()),
                ('cus_a', 'evt_2', 'api_calls', 1, '2026-01-15T01:00Z', '2026-01-15Z', '2026-01-15Z', now());
         -- A row numbered past the sequence: later events must still be numbered after it.
         INSERT INTO events (seq, customer_id, event_id, metric, value, ts, usage_period_start,
             billed_period_start, ingested_at)
         VALUES (100, 'cus_b', 'evt_9', 'api_calls', 1, '2026-01-15T01:00Z', '2026-01-15Z', '2026-01-15Z', now());",
    )
    .await
    .unwrap();
    let before = rows(&c).await;
    assert_eq!(before.len(), 4);

    let store = tally_store::connect(&url).await.expect("migrate and open");
    assert_eq!(partitions(&c).await.len(), 16);
    assert_eq!(rows(&c).await, before, "every row kept with its seq");

    let at = t0() + Duration::hours(2);
    let out = store
        .ingest(vec![
            ev("cus_a", "evt_1", at),
            ev("cus_b", "evt_9", at),
            ev("cus_a", "evt_3", at),
        ])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 2));
    assert_eq!(
        store.event_ids("cus_a").await.unwrap(),
        ["evt_1", "evt_2", "evt_3"]
    );
    assert_eq!(store.event_ids("cus_b").await.unwrap(), ["evt_1", "evt_9"]);
    let after = rows(&c).await;
    assert_eq!(after.len(), 5);
    assert_eq!(after[..4], before[..]);
    assert!(
        after[4].0 > 100,
        "seq continues past the old rows: {after:?}"
    );
}

/// Concurrent batches share statements (group commit) and keep their own outcomes: of two
/// identical batches sent at once the events count once, a batch naming an unknown customer fails
/// whole without failing the batches merged with it, and the rollups count every stored event
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_merged_into_one_statement_keep_their_own_outcomes() {
    let Some(ctx) = common::postgres().await else {
        return;
    };
    let s = &ctx.store;
    for i in 0..10 {
        customer(&**s, &format!("cus_{i}")).await;
    }
    let at = t0() + Duration::hours(1);
    // Batch k of pair p: five events of pair p's own ids, the same in both batches of the pair.
    let pair = |p: usize| -> Vec<NewEvent> {
        (0..5)
            .map(|j| {
                ev(
                    &format!("cus_{}", (p + j) % 10),
                    &format!("evt_{p}_{j}"),
                    at,
                )
            })
            .collect()
    };
    let bad = |b: usize| -> Vec<NewEvent> {
        vec![
            ev("cus_0", &format!("bad_{b}_0"), at),
            ev("cus_ghost", &format!("bad_{b}_1"), at),
        ]
    };
    let mut calls = Vec::new();
    for p in 0..20 {
        for _ in 0..2 {
            let (s, batch) = (s.clone(), pair(p));
            calls.push(tokio::spawn(async move { (p, s.ingest(batch).await) }));
        }
        if p % 5 == 0 {
            let (s, batch) = (s.clone(), bad(p));
            calls.push(tokio::spawn(
                async move { (usize::MAX, s.ingest(batch).await) },
            ));
        }
    }
    let mut accepted = [0u64; 20];
    let mut failed = 0;
    for call in calls {
        let (p, result) = call.await.unwrap();
        if p == usize::MAX {
            let err = result.expect_err("a batch naming an unknown customer fails");
            assert!(err.to_string().contains("cus_ghost"), "{err}");
            failed += 1;
            continue;
        }
        let out = result.unwrap();
        assert_eq!(out.accepted + out.duplicates, 5);
        accepted[p] += out.accepted;
    }
    assert_eq!(failed, 4);
    assert_eq!(accepted, [5u64; 20], "each pair's events counted once");
    assert_eq!(s.event_count().await.unwrap(), 100);
    for i in 0..10 {
        let usage = s.usage(&format!("cus_{i}"), t0()).await.unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!((usage[0].count, usage[0].sum), (10, dec!(10)), "cus_{i}");
    }
}
