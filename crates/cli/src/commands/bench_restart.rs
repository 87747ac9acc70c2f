//! `tally bench --restart-only`: a SQLite database of `--restart-events` events whose timestamps
//! are spread evenly over `--spread-days` (longer than the deduplication window), written through
//! the store, then `tally serve` started on it: start-up time and idle RSS. Only the window's keys
//! are loaded, so the RSS follows the window, not the history.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::bench_load::spawn_server;

/// Events written per store batch.
const BATCH: u64 = 10_000;

/// What the restart measured.
pub(crate) struct Restart {
    pub events: u64,
    pub spread_days: u64,
    /// Events inside the default 35-day window (their keys are loaded).
    pub in_window: u64,
    pub fill_secs: f64,
    pub db_bytes: u64,
    pub startup: Duration,
    pub rss_kb: u64,
}

/// Fills `dir/restart.db` and measures a restart on it.
pub(crate) fn run(
    dir: &Path,
    events: u64,
    spread_days: u64,
    customers: u64,
    key: &str,
) -> anyhow::Result<Restart> {
    let path = dir.join("restart.db");
    for ext in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(path.with_extension(ext));
    }
    let url = format!("sqlite://{}", path.display());
    let now = Utc::now();
    let span_ms = i64::try_from(spread_days)?.saturating_mul(86_400_000);
    let window_ms = tally_store::DEFAULT_DEDUP_WINDOW.num_milliseconds();
    let fill = Instant::now();
    let mut in_window = 0u64;
    super::common::runtime()?.block_on(async {
        use tally_store::{CustomerUpsert, NewEvent};
        let store = tally_store::connect(&url).await?;
        let created = now - chrono::Duration::milliseconds(span_ms + 86_400_000);
        for c in 0..customers {
            store
                .upsert_customer(CustomerUpsert {
                    id: format!("cus_{c}"),
                    email: None,
                    name: None,
                    metadata: None,
                    email_opt_out: None,
                    now: created,
                })
                .await?;
        }
        let mut first = 0;
        while first < events {
            let last = (first + BATCH).min(events);
            let batch: Vec<NewEvent> = (first..last)
                .map(|i| {
                    // Oldest first, the last event now.
                    let age =
                        span_ms - (i128::from(i) * i128::from(span_ms) / i128::from(events)) as i64;
                    let ts = now - chrono::Duration::milliseconds(age);
                    if age <= window_ms {
                        in_window += 1;
                    }
                    NewEvent {
                        customer_id: format!("cus_{}", i % customers),
                        event_id: format!("evt_{i:016x}"),
                        metric: "compute_hours".into(),
                        value: rust_decimal::Decimal::ONE,
                        timestamp: ts,
                        properties: None,
                        period_start: tally_core::period::allowance_period(created, ts).start,
                        unique_key: None,
                    }
                })
                .collect();
            store.ingest(batch).await?;
            if last / 10_000_000 != first / 10_000_000 {
                eprintln!("  {last} events written …");
            }
            first = last;
        }
        store.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let fill_secs = fill.elapsed().as_secs_f64();
    let db_bytes = ["db", "db-wal"]
        .iter()
        .filter_map(|e| std::fs::metadata(path.with_extension(e)).ok())
        .map(|m| m.len())
        .sum();
    let _ = std::process::Command::new("sync").status();
    eprintln!("restarting the server on {events} events spread over {spread_days} days …");
    let start = Instant::now();
    let (mut child, _) = spawn_server(&url, key)?;
    let startup = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss_kb = super::bench::rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok(Restart {
        events,
        spread_days,
        in_window,
        fill_secs,
        db_bytes,
        startup,
        rss_kb,
    })
}

/// The report lines.
pub(crate) fn lines(r: &Restart) -> String {
    format!(
        "SQLite restart on {:.1}M events spread over {} days ({:.1}M inside the 35-day window; \
         written through the store in {:.0} s, {:.1} GB on disk):\n  \
         start-up {:.2} s, RSS idle after restart {:.1} MB\n",
        r.events as f64 / 1e6,
        r.spread_days,
        r.in_window as f64 / 1e6,
        r.fill_secs,
        r.db_bytes as f64 / 1e9,
        r.startup.as_secs_f64(),
        r.rss_kb as f64 / 1024.0,
    )
}
