//! The deduplication window: events older than `now − window` are refused with their own reason,
//! exactly at the boundary, on both backends; an id whose first copy has left the window is still
//! answered as a duplicate.

#[macro_use]
mod common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::{app_on, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_store::clock::{Clock, SharedClock};

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ev(id: &str, t: DateTime<Utc>) -> Value {
    json!({"id": id, "customer": "c1", "metric": "compute_hours", "value": 1, "timestamp": at(t)})
}

/// An app on `db` whose clock stands at 2026-03-01 with customer `c1` created 40 days before.
async fn app(db: Db) -> Option<(App, SharedClock)> {
    let start: DateTime<Utc> = "2026-01-20T08:30:00Z".parse().unwrap();
    let clock = Clock::frozen(start);
    let c = clock.clone();
    let a = app_on(db, move |cfg| cfg.clock = c).await?;
    assert_eq!(
        a.put("/v1/customers/c1", json!({})).await.0,
        StatusCode::CREATED
    );
    clock.advance(Duration::days(40));
    Some((a, clock))
}

async fn ingest(a: &App, events: Vec<Value>) -> (StatusCode, Value) {
    a.post("/v1/events", json!({ "events": events })).await
}

async fn the_window_is_exact_at_its_boundary(db: Db) {
    let Some((a, clock)) = app(db).await else {
        return;
    };
    let edge = clock.now() - Duration::days(35);
    let (s, b) = ingest(
        &a,
        vec![
            ev("inside", edge + Duration::milliseconds(1)),
            ev("edge", edge),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["accepted"].as_u64(), b["duplicates"].as_u64()),
        (Some(2), Some(0))
    );

    let (s, b) = ingest(
        &a,
        vec![
            ev("fine", clock.now()),
            ev("outside", edge - Duration::milliseconds(1)),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "invalid_events", "{b}");
    assert_eq!(
        b["error"]["invalid"],
        json!([{
            "index": 1,
            "code": "timestamp_outside_dedup_window",
            "param": "timestamp",
            "message": "timestamp is older than the deduplication window (35 days)",
        }]),
        "{b}"
    );
    // Nothing of the refused batch was stored.
    let (s, b) = ingest(&a, vec![ev("fine", clock.now())]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["accepted"].as_u64(), b["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
}

async fn an_id_whose_first_copy_left_the_window_is_a_duplicate(db: Db) {
    let Some((a, clock)) = app(db).await else {
        return;
    };
    let first = clock.now() - Duration::days(35) + Duration::hours(1);
    let (s, b) = ingest(&a, vec![ev("old", first)]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"].as_u64(), Some(1));
    // Two days on its copy is out of the window (and out of SQLite's memory within 8 more
    // batches): a resend with a timestamp inside the window is answered from the stored key.
    clock.advance(Duration::days(2));
    for i in 0..8 {
        let (s, b) = ingest(&a, vec![ev(&format!("next{i}"), clock.now())]).await;
        assert_eq!(
            (s, b["accepted"].as_u64()),
            (StatusCode::OK, Some(1)),
            "{b}"
        );
    }
    for expected in [(Some(1), Some(1)), (Some(0), Some(2))] {
        let (s, b) = ingest(&a, vec![ev("old", clock.now()), ev("new", clock.now())]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            (b["accepted"].as_u64(), b["duplicates"].as_u64()),
            expected,
            "{b}"
        );
    }
    let (_, u) = a.get("/v1/customers/c1/usage").await;
    assert_eq!(u["metrics"][0]["used"], "9", "{u}");
}

on_both_backends!(
    the_window_is_exact_at_its_boundary,
    an_id_whose_first_copy_left_the_window_is_a_duplicate,
);
