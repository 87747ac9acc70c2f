//! `tally bench --restart-only`: a SQLite database of `--restart-events` events whose timestamps
//! are spread evenly over `--spread-days` (longer than the deduplication window), then `tally
//! serve` started on it: start-up time and idle RSS. Only the window's keys are loaded, so the RSS
//! follows the window, not the history.
//!
//! The schema and customers are written through the store; the events go straight into the file
//! (the rows and usage rollups the store would write, with its rollup watermark at the last event)
//! in transactions of a million rows, the WAL truncated after each, so 100 M events need only
//! the database's own size on disk and no hour of HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::bench_load::spawn_server;

/// Events written per transaction of the fill; the WAL is truncated after each.
const FILL_TX: u64 = 1_000_000;

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
    let fill = Instant::now();
    let created = now - chrono::Duration::milliseconds(span_ms + 86_400_000);
    // The schema and the customers through the store, then the events straight into the file.
    super::common::runtime()?.block_on(async {
        use tally_store::CustomerUpsert;
        let store = tally_store::connect(&url).await?;
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
        store.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let in_window = fill_events(&path, events, customers, now, created, span_ms)?;
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

/// Appends `events` events (oldest first, the last one `now`) and their rollups to the database at
/// `path`; returns how many fall inside the default deduplication window.
fn fill_events(
    path: &Path,
    events: u64,
    customers: u64,
    now: DateTime<Utc>,
    created: DateTime<Utc>,
    span_ms: i64,
) -> anyhow::Result<u64> {
    let window_ms = tally_store::DEFAULT_DEDUP_WINDOW.num_milliseconds();
    let mut conn = rusqlite::Connection::open(path)?;
    // A benchmark fixture: a crash mid-fill only means filling again.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")?;
    let now_ms = now.timestamp_millis();
    // (customer, usage period start) → (count, latest timestamp); one metric, value 1 each.
    let mut rollups: HashMap<(u64, i64), (i64, i64)> = HashMap::new();
    let mut periods: HashMap<u64, (i64, i64)> = HashMap::new();
    let mut in_window = 0u64;
    let mut first = 0;
    let (mut customer, mut event) = (String::new(), String::new());
    while first < events {
        let last = (first + FILL_TX).min(events);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
                    usage_period_start, billed_period_start, ingested_at)
                 VALUES (?1, ?2, 'compute_hours', '1', ?3, NULL, ?4, ?4, ?5)",
            )?;
            for i in first..last {
                let age =
                    span_ms - (i128::from(i) * i128::from(span_ms) / i128::from(events)) as i64;
                let ts = now_ms - age;
                if age <= window_ms {
                    in_window += 1;
                }
                let c = i % customers;
                // The period of the customer's last event, reused while the events stay in it.
                let ps = match periods.get(&c) {
                    Some(&(s, e)) if ts >= s && ts < e => s,
                    _ => {
                        let at = now - chrono::Duration::milliseconds(age);
                        let p = tally_core::period::allowance_period(created, at);
                        let span = (p.start.timestamp_millis(), p.end.timestamp_millis());
                        periods.insert(c, span);
                        span.0
                    }
                };
                customer.clear();
                event.clear();
                let _ = write!(customer, "cus_{c}");
                let _ = write!(event, "evt_{i:016x}");
                insert.execute(rusqlite::params![customer, event, ts, ps, now_ms])?;
                let r = rollups.entry((c, ps)).or_insert((0, ts));
                r.0 += 1;
                r.1 = r.1.max(ts);
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        if last / 10_000_000 != first / 10_000_000 {
            eprintln!("  {last} events written …");
        }
        first = last;
    }
    let tx = conn.transaction()?;
    {
        let mut up = tx.prepare(
            "INSERT INTO usage_rollups (customer_id, billed_period_start, metric,
                usage_period_start, sum, count, max, latest, latest_at, unique_count)
             VALUES (?1, ?2, 'compute_hours', ?2, ?3, ?3, '1', '1', ?4, 0)",
        )?;
        for ((c, ps), (count, latest)) in &rollups {
            up.execute(rusqlite::params![format!("cus_{c}"), ps, count, latest])?;
        }
        tx.execute(
            "UPDATE rollup_watermark SET through_seq = COALESCE((SELECT MAX(seq) FROM events), 0)",
            [],
        )?;
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(in_window)
}

/// The report lines.
pub(crate) fn lines(r: &Restart) -> String {
    format!(
        "SQLite restart on {:.1}M events spread over {} days ({:.1}M inside the 35-day window; \
         filled in {:.0} s, {:.1} GB on disk):\n  \
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
