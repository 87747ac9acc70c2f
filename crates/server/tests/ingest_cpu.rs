//! CPU cost of the HTTP side of `POST /v1/events` without the store's writer: parsing a batch
//! like the benchmark's, validation, anchors, allowance periods and the entitlement bookkeeping.
//! Ignored by default. Instruction counts do not depend on the load of the machine, so count them
//! with callgrind:
//!
//! ```text
//! cargo test --release -p tally-server --test ingest_cpu --no-run
//! TALLY_CPU_BATCHES=500 valgrind --tool=callgrind target/release/deps/ingest_cpu-<hash> \
//!     --ignored --exact validate_batches
//! ```
//!
//! and subtract a run with `TALLY_CPU_BATCHES=0` (the setup), then divide by 100 events per batch.
//! The benchmark's events of a batch share one timestamp; `TALLY_CPU_DISTINCT_TIMESTAMPS=1` gives
//! each event its own.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use tally_server::service::{entitlements, events};
use tally_server::{AppState, Config};
use tally_store::CustomerUpsert;

/// The benchmark's batch (see `batch_body` in `crates/cli/src/commands/bench.rs`), optionally with
/// a distinct timestamp per event.
fn batch_body(first: u64, n: u64, customers: u64, now: DateTime<Utc>, distinct: bool) -> String {
    let mut s = String::with_capacity(n as usize * 110 + 16);
    s.push_str("{\"events\":[");
    for i in first..first + n {
        if i > first {
            s.push(',');
        }
        let at = if distinct {
            now - Duration::microseconds(i as i64 * 1237)
        } else {
            now
        };
        let ts = at.to_rfc3339();
        let _ = write!(
            s,
            "{{\"id\":\"evt_{i:016x}\",\"customer\":\"cus_{}\",\"metric\":\"compute_hours\",\"value\":1,\"timestamp\":\"{ts}\"}}",
            i % customers
        );
    }
    s.push_str("]}");
    s
}

#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn validate_batches() {
    let batches: u64 = std::env::var("TALLY_CPU_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let customers = 1000;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let store = tally_store::connect(&url).await.unwrap();
    let now = Utc::now();
    for c in 0..customers {
        store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: format!("cus_{c}"),
                email: None,
                name: None,
                metadata: None,
                // Anchored a day ago, so that every event falls in the current period.
                now: now - Duration::days(1),
            })
            .await
            .unwrap();
    }
    let state = AppState::new(Config::new(url).unwrap(), store);
    let distinct = std::env::var("TALLY_CPU_DISTINCT_TIMESTAMPS").is_ok_and(|v| v == "1");
    let bodies: Vec<String> = (0..10)
        .map(|b| batch_body(b * 100, 100, customers, now, distinct))
        .collect();
    // Warm the anchor cache.
    for body in &bodies {
        events::validate_body(&state, body.as_bytes(), now)
            .await
            .unwrap();
    }
    let mut stored = 0;
    for b in 0..batches {
        let body = &bodies[(b % 10) as usize];
        // What `events::ingest_body` does, without the store.
        let valid = events::validate_body(&state, body.as_bytes(), now)
            .await
            .unwrap();
        let touched = entitlements::touched(&state, &valid.usage);
        stored += valid.events.len();
        drop(valid.events);
        entitlements::usage_changed(&state, &touched);
    }
    assert_eq!(stored as u64, batches * 100);
    state.store.close().await;
}
