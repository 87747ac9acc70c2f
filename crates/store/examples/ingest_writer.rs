//! Writer capacity: batches of 100 events from 32 tasks straight into the SQLite store (no HTTP).
//! `cargo run --release -p tally-store --example ingest_writer -- [EVENTS]`

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use tally_store::{CustomerUpsert, NewEvent, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        tally_store::connect(&format!("sqlite://{}", dir.path().join("w.db").display())).await?;
    let now = Utc::now();
    let customers = 1000u64;
    for c in 0..customers {
        store
            .upsert_customer(CustomerUpsert {
                id: format!("cus_{c}"),
                email: None,
                name: None,
                metadata: None,
                now: now - Duration::days(3),
            })
            .await?;
    }
    let period_start = now - Duration::days(3);
    let start = Instant::now();
    let clients = 32u64;
    let per = events / clients / 100;
    let mut tasks = Vec::new();
    for t in 0..clients {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..per {
                let first = (t * per + b) * 100;
                let batch = (first..first + 100)
                    .map(|i| NewEvent {
                        customer_id: format!("cus_{}", i % customers),
                        event_id: format!("evt_{i:016x}"),
                        metric: "compute_hours".into(),
                        value: Decimal::ONE,
                        timestamp: now,
                        properties: None,
                        period_start,
                        unique_key: None,
                    })
                    .collect();
                store.ingest(batch).await.expect("ingest");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let n = per * clients * 100;
    let secs = start.elapsed().as_secs_f64();
    println!("{n} events in {secs:.2} s: {:.0} ev/s", n as f64 / secs);
    let task_dir = std::fs::read_dir("/proc/self/task")?;
    for t in task_dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        if ticks > 0 {
            println!(
                "  {:<20} {:>6.2} s CPU, {:.2} µs/event",
                comm.trim(),
                ticks as f64 / 100.0,
                ticks as f64 * 1e4 / n as f64
            );
        }
    }
    Ok(())
}
