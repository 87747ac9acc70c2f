//! `tally bench`: measures ingestion beside its physical limit on this machine.
//!
//! In one run: a raw batched SQLite insert of the same rows (the limit), batched HTTP ingest
//! (100 events per request, durable and deduplicated, into a real `tally serve` child process),
//! single-event ingest latency at a fixed request rate, and the server's RSS idle and under load.
//! Build with `--release`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;

use super::bench_load::{percentile, spawn_child, spawn_server, Conn};
use super::common::runtime;

pub(super) const KEY: &str = "bench-admin-key-0123456789abcdefghij";

/// How late the load generator's timer may wake before a request counts as queued behind a slow
/// answer (tokio's timer has millisecond resolution).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Arguments of `tally bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Events stored through batched HTTP ingest.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per request in the batched run.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent clients in the batched run.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Rows of the raw SQLite insert (the limit).
    #[arg(long, default_value_t = 2_000_000)]
    raw_rows: u64,
    /// Request rate of the single-event run (requests per second).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Duration of the single-event run in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Customers the events are spread over.
    #[arg(long, default_value_t = 1000)]
    customers: u64,
    /// Directory for the databases (default: a new temporary directory, deleted afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Events stored through batched HTTP ingest on PostgreSQL (with `--postgres-url`).
    #[arg(long, default_value_t = 2_000_000)]
    postgres_events: u64,
    /// Run only the PostgreSQL ingestion benchmark (needs `--postgres-url`).
    #[arg(long)]
    postgres_only: bool,
    #[command(flatten)]
    credits: super::bench_credits::CreditBenchArgs,
    #[command(flatten)]
    webhooks: super::bench_webhooks::WebhookBenchArgs,
    #[command(flatten)]
    close: super::bench_close::CloseBenchArgs,
    #[command(flatten)]
    notify: super::bench_notify::NotifyBenchArgs,
    /// Run only the billing-page benchmark (render time with 24 months of history beside the
    /// hello-world route, and the page's weight).
    #[arg(long)]
    pages: bool,
    /// Requests of each run of the billing-page benchmark.
    #[arg(long, default_value_t = 2000)]
    page_requests: usize,
    /// Run only the restart measurement: a SQLite database of `--restart-events` events spread
    /// over `--spread-days`, then the start-up time and idle RSS of `tally serve` on it.
    #[arg(long)]
    restart_only: bool,
    /// Events of the restart measurement.
    #[arg(long, default_value_t = 10_000_000)]
    restart_events: u64,
    /// Days the restart measurement's event timestamps are spread over (the deduplication window
    /// is 35).
    #[arg(long, default_value_t = 70)]
    spread_days: u64,
    /// Internal: run the hello-world HTTP server the latency limit is measured against.
    #[arg(long, hide = true)]
    hello_world_server: bool,
}

/// A server that answers every request with a fixed ingest answer: the HTTP limit (same
/// framework, same connection handling, no work) beside which single-event latency is shown.
fn hello_world_server() -> anyhow::Result<ExitCode> {
    use axum::serve::ListenerExt;
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("tally listening on http://{}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = axum::Router::new().fallback(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                "{\"accepted\":1,\"duplicates\":0}",
            )
        });
        axum::serve(listener, app).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The limit: the same rows appended to the same table shape, prepared statement, 10,000 rows
/// per transaction, WAL with the server's default durability (synchronous=NORMAL).
fn raw_insert(path: &Path, rows: u64, customers: u64) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, customer_id TEXT NOT NULL, event_id TEXT NOT NULL,
            metric TEXT NOT NULL, value TEXT NOT NULL, ts INTEGER NOT NULL, properties TEXT,
            usage_period_start INTEGER NOT NULL, billed_period_start INTEGER NOT NULL, ingested_at INTEGER NOT NULL)",
    )?;
    let now = Utc::now().timestamp_millis();
    // Text buffers reused row after row: the limit spends nothing on allocation.
    let (mut customer, mut event) = (String::new(), String::new());
    let start = Instant::now();
    let mut i = 0;
    while i < rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (customer_id, event_id, metric, value, ts, properties,
                    usage_period_start, billed_period_start, ingested_at)
                 VALUES (?1, ?2, 'compute_hours', '1', ?3, NULL, ?4, ?4, ?3)",
            )?;
            for _ in 0..10_000.min(rows - i) {
                customer.clear();
                event.clear();
                let _ = write!(customer, "cus_{}", i % customers);
                let _ = write!(event, "evt_{i:016x}");
                stmt.execute(rusqlite::params![customer, event, now, now - 86_400_000])?;
                i += 1;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// The store alone, without HTTP: the same rows in batches of `batch` from `clients` tasks straight
/// into the store at `url` (SQLite: validation, dedup, append, rollups, group commit). What the
/// HTTP path adds on top is parsing, validation and the network.
pub(super) async fn store_ingest(
    url: &str,
    rows: u64,
    batch: u64,
    clients: u64,
    customers: u64,
) -> anyhow::Result<f64> {
    use tally_store::{CustomerUpsert, NewEvent};
    let store = tally_store::connect(url).await?;
    let now = Utc::now();
    for c in 0..customers {
        store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: format!("cus_{c}"),
                email: None,
                name: None,
                metadata: None,
                now,
            })
            .await?;
    }
    let period_start = tally_core::period::allowance_period(now, now).start;
    let next = Arc::new(AtomicU64::new(0));
    let batches = rows.div_ceil(batch);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let first = b * batch;
                let events = (first..(first + batch).min(rows))
                    .map(|i| NewEvent {
                        customer_id: format!("cus_{}", i % customers),
                        event_id: format!("evt_{i:016x}"),
                        metric: "compute_hours".into(),
                        value: rust_decimal::Decimal::ONE,
                        timestamp: now,
                        properties: None,
                        period_start,
                        unique_key: None,
                    })
                    .collect();
                store.ingest(events).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    store.close().await;
    Ok(rate)
}

/// The `accepted` count of an ingest answer (`{"accepted":N,…}`), read without a JSON parser:
/// the load generator shares the cores with the server it measures.
fn accepted_of(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"accepted\":";
    body.windows(KEY.len())
        .position(|w| w == KEY)
        .map(|at| {
            body[at + KEY.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

fn push_hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

fn push_dec(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[..n].iter().rev());
}

/// Writes the body of batch `first..first + n` into `out` (byte by byte: formatting machinery
/// would cost the load generator more of the cores it shares with the server).
fn batch_body(out: &mut Vec<u8>, first: u64, n: u64, customers: u64, ts: &str) {
    out.clear();
    out.extend_from_slice(b"{\"events\":[");
    for i in first..first + n {
        if i > first {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":\"evt_");
        push_hex16(out, i);
        out.extend_from_slice(b"\",\"customer\":\"cus_");
        push_dec(out, i % customers);
        out.extend_from_slice(b"\",\"metric\":\"compute_hours\",\"value\":1,\"timestamp\":\"");
        out.extend_from_slice(ts.as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.hello_world_server {
        return hello_world_server();
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo build --release`");
    }
    if args.webhooks.webhooks {
        let dir = tempfile_dir()?;
        println!("machine: {}", machine());
        let out = super::bench_webhooks::report(&args.webhooks, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        print!("{}", out?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.close.close {
        let dir = tempfile_dir()?;
        println!("machine: {}", machine());
        let out = super::bench_close::report(&args.close, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        print!("{}", out?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.postgres_only {
        let Some(url) = &args.credits.postgres_url else {
            bail!("--postgres-only needs --postgres-url or TALLY_BENCH_POSTGRES_URL");
        };
        println!("machine: {}", machine());
        let m = postgres_ingest(&args, url)?;
        print!("{}", super::bench_postgres::lines(&m, args.batch));
        return Ok(ExitCode::SUCCESS);
    }
    if args.pages {
        println!("machine: {}", machine());
        print!("{}", super::bench_pages::report(args.page_requests)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.restart_only {
        println!("machine: {}", machine());
        let (tmp, dir) = match &args.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let d = tempfile_dir()?;
                (Some(d.clone()), d)
            }
        };
        let r = super::bench_restart::run(
            &dir,
            args.restart_events,
            args.spread_days,
            args.customers,
            KEY,
        );
        if let Some(d) = tmp {
            let _ = std::fs::remove_dir_all(d);
        }
        print!("{}", super::bench_restart::lines(&r?));
        return Ok(ExitCode::SUCCESS);
    }
    if args.credits.credits_only {
        println!("machine: {}", machine());
        print!("{}", super::bench_credits::report(&args.credits)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.notify.notify_only {
        println!("machine: {}", machine());
        print!("{}", super::bench_notify::report(&args.notify)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };

    settle();
    eprintln!("HTTP hello-world limit at {} req/s …", args.rate);
    let (mut hello, hello_base) = spawn_child(&["bench", "--hello-world-server"], KEY)?;
    let hello_result = runtime()?.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ts = Utc::now().to_rfc3339();
        single_events(
            &hello_base,
            args.rate,
            args.seconds,
            args.customers,
            &ts,
            "hello",
        )
        .await
    });
    let _ = hello.kill();
    let _ = hello.wait();
    let (mut hello_lat, _) = hello_result?;
    hello_lat.sort();
    let (hello_p50, hello_p99) = (percentile(&hello_lat, 0.50), percentile(&hello_lat, 0.99));

    let db_path = dir.join("bench.db");
    for ext in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(db_path.with_extension(ext));
    }
    let db = format!("sqlite://{}", db_path.display());
    let (mut child, base) = spawn_server(&db, KEY)?;
    let pid = child.id();
    let raw_path = dir.join("raw.db");
    let result = runtime()?.block_on(measure(&args, &base, pid, &raw_path));
    // A clean stop (SIGTERM), then a restart on the stored events: start-up time and the RSS of
    // the restarted, idle server.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let restart = result.as_ref().ok().map(|_| {
        settle();
        eprintln!("restarting the server on the stored events …");
        let start = Instant::now();
        let (mut child, _) = spawn_server(&db, KEY)?;
        let took = start.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_kb(child.id());
        let _ = child.kill();
        let _ = child.wait();
        Ok::<_, anyhow::Error>((took, rss))
    });
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let m = result?;
    let restart = restart.transpose()?;
    let raw = m.raw;
    let batched_ratio = m.batched / raw;
    let mut out = String::new();
    let _ = writeln!(out, "machine: {}", machine());
    let _ = writeln!(out, "{:<48} {:>16} {:>14}", "figure", "value", "vs limit");
    let _ = writeln!(
        out,
        "{:<48} {:>12.0} ev/s {:>14}",
        "raw batched SQLite insert (limit)", raw, "1.00"
    );
    let _ = writeln!(
        out,
        "{:<48} {:>12.0} ev/s {:>14.2}",
        format!("store ingest, no HTTP ({} per batch)", args.batch),
        m.store,
        m.store / raw
    );
    let _ = writeln!(
        out,
        "{:<48} {:>12.0} ev/s {:>13.2} (target ≥ 150k ev/s and ≥ 0.60)",
        format!("batched HTTP ingest ({} events stored)", m.stored),
        m.batched,
        batched_ratio
    );
    if let Some(url) = &args.credits.postgres_url {
        settle();
        let m = postgres_ingest(&args, url)?;
        out.push_str(&super::bench_postgres::lines(&m, args.batch));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let times = |a: Duration, b: Duration| format!("{:.1}×", ms(a) / ms(b).max(1e-6));
    for (name, d) in [("p50", hello_p50), ("p99", hello_p99)] {
        let _ = writeln!(
            out,
            "{:<48} {:>13.2} ms {:>14}",
            format!("HTTP hello-world {name} at {} req/s (limit)", args.rate),
            ms(d),
            "1.0×"
        );
    }
    let after = format!("{:.0}M db, after batch", m.stored as f64 / 1e6);
    for (when, p50, p99) in [
        ("fresh db", m.fresh_p50, m.fresh_p99),
        (after.as_str(), m.p50, m.p99),
    ] {
        let _ = writeln!(
            out,
            "{:<48} {:>13.2} ms {:>14}",
            format!("single-event p50 at {} req/s, {when}", args.rate),
            ms(p50),
            times(p50, hello_p50)
        );
        let _ = writeln!(
            out,
            "{:<48} {:>13.2} ms {:>14} (target ≤ 5 ms)",
            format!("single-event p99 at {} req/s, {when}", args.rate),
            ms(p99),
            times(p99, hello_p99)
        );
    }
    let _ = writeln!(
        out,
        "{:<48} {:>13} req/s",
        "single-event achieved rate",
        format!("{:.0}", m.achieved_rate)
    );
    let _ = writeln!(
        out,
        "{:<48} {:>13.1} MB {:>14}",
        "RSS idle (target ≤ 25 MB)",
        m.rss_idle_kb as f64 / 1024.0,
        "-"
    );
    let _ = writeln!(
        out,
        "{:<48} {:>13.1} MB {:>14}",
        "RSS under load (peak)",
        m.rss_load_kb as f64 / 1024.0,
        "-"
    );
    if let Some((took, rss)) = restart {
        let _ = writeln!(
            out,
            "{:<48} {:>13.2} s {:>15}",
            format!("start-up on {:.0}M stored events", m.stored as f64 / 1e6),
            took.as_secs_f64(),
            "-"
        );
        let _ = writeln!(
            out,
            "{:<48} {:>13.1} MB {:>14}",
            format!(
                "RSS idle after restart, {:.0}M events",
                m.stored as f64 / 1e6
            ),
            rss as f64 / 1024.0,
            "-"
        );
    }
    out.push_str(&super::bench_credits::report(&args.credits)?);
    out.push_str(&super::bench_notify::report(&args.notify)?);
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn postgres_ingest(args: &BenchArgs, url: &str) -> anyhow::Result<super::bench_postgres::PgIngest> {
    super::bench_postgres::measure(
        url,
        args.postgres_events,
        args.raw_rows,
        args.batch,
        args.clients,
        args.customers,
    )
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tally-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

struct Measured {
    raw: f64,
    store: f64,
    batched: f64,
    stored: u64,
    fresh_p50: Duration,
    fresh_p99: Duration,
    p50: Duration,
    p99: Duration,
    achieved_rate: f64,
    rss_idle_kb: u64,
    rss_load_kb: u64,
}

/// Flushes written data to disk, so that one phase's writeback does not slow the next one.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

async fn measure(
    args: &BenchArgs,
    base: &str,
    pid: u32,
    raw_path: &Path,
) -> anyhow::Result<Measured> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kb = rss_kb(pid);

    eprintln!("creating {} customers …", args.customers);
    let mut conn = Conn::open(base, KEY).await?;
    for c in 0..args.customers {
        let (status, _) = conn
            .send("PUT", &format!("/v1/customers/cus_{c}"), "{}")
            .await?;
        if !(200..300).contains(&status) {
            bail!("creating a customer failed: {status}");
        }
    }

    // Single events on the fresh database first, once earlier disk writes (a previous run's
    // files, the customers just created) are on disk.
    tokio::task::spawn_blocking(settle).await?;
    let ts = Utc::now().to_rfc3339();
    let (mut fresh_lat, _) =
        single_events(base, args.rate, args.seconds, args.customers, &ts, "fresh").await?;
    fresh_lat.sort();

    // The limit, measured between the latency and the throughput runs.
    eprintln!("raw SQLite insert of {} rows …", args.raw_rows);
    let (path, rows, customers) = (raw_path.to_path_buf(), args.raw_rows, args.customers);
    let raw = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(&path);
        let rate = raw_insert(&path, rows, customers);
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        settle();
        rate
    })
    .await??;

    eprintln!("store ingest (no HTTP) of {} rows …", args.raw_rows);
    let store_path = raw_path.with_file_name("store.db");
    let store = store_ingest(
        &format!("sqlite://{}", store_path.display()),
        args.raw_rows,
        args.batch,
        args.clients,
        args.customers,
    )
    .await?;
    for ext in ["db", "db-wal", "db-shm", "db-ingest.lock"] {
        let _ = std::fs::remove_file(store_path.with_extension(ext));
    }
    settle();

    // Batched ingest: clients take the next batch number until every event is sent.
    eprintln!(
        "batched HTTP ingest of {} events, {} per request, {} clients …",
        args.events, args.batch, args.clients
    );
    let (stored, batched, rss_load_kb) = batched_ingest(
        base,
        Some(pid),
        Batched {
            events: args.events,
            batch: args.batch,
            clients: args.clients,
            customers: args.customers,
            first_id: 0,
        },
        &ts,
    )
    .await?;

    // The same again on the 10 M-event database, right after the batched run (its WAL is still
    // being checkpointed).
    let (mut lat, achieved_rate) =
        single_events(base, args.rate, args.seconds, args.customers, &ts, "after").await?;
    lat.sort();
    Ok(Measured {
        raw,
        store,
        batched,
        stored,
        fresh_p50: percentile(&fresh_lat, 0.50),
        fresh_p99: percentile(&fresh_lat, 0.99),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        achieved_rate,
        rss_idle_kb,
        rss_load_kb,
    })
}

/// What a batched ingest run sends.
pub(super) struct Batched {
    pub events: u64,
    pub batch: u64,
    pub clients: u64,
    pub customers: u64,
    /// The number in the first event's id (runs into one database use distinct ranges).
    pub first_id: u64,
}

/// Batched HTTP ingest: clients take the next batch number until every event is sent. Returns
/// the events stored, events per second, and the peak RSS of the server `pid` (when given) in kB.
pub(super) async fn batched_ingest(
    base: &str,
    pid: Option<u32>,
    run: Batched,
    ts: &str,
) -> anyhow::Result<(u64, f64, u64)> {
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let batches = run.events.div_ceil(run.batch);
    let sampler = pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..run.clients {
        let (next, accepted, ts) = (next.clone(), accepted.clone(), ts.to_owned());
        let base = base.to_owned();
        let (batch, events, customers, first_id) =
            (run.batch, run.events, run.customers, run.first_id);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base, KEY).await?;
            let mut body = Vec::with_capacity(batch as usize * 120 + 16);
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let first = b * batch;
                let n = batch.min(events - first);
                batch_body(&mut body, first_id + first, n, customers, &ts);
                let (status, out) = conn.send_bytes("POST", "/v1/events", &body).await?;
                if status != 200 {
                    bail!("ingest failed: {status} {}", String::from_utf8_lossy(&out));
                }
                accepted.fetch_add(accepted_of(&out), Ordering::Relaxed);
            }
        }));
    }
    let mut last_report = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            let done = accepted.load(Ordering::Relaxed);
            eprintln!(
                "  {done} events, {:.0} ev/s{}",
                done as f64 / start.elapsed().as_secs_f64(),
                pid.map(|p| format!(", RSS {:.0} MB", rss_kb(p) as f64 / 1024.0))
                    .unwrap_or_default()
            );
        }
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        s.abort();
    }
    let stored = accepted.load(Ordering::Relaxed);
    Ok((stored, stored as f64 / secs, peak.load(Ordering::Relaxed)))
}

/// Single events at a fixed rate (open loop): request i is due at t0 + i/rate and its latency is
/// measured from that due time, so a slow answer also delays (and penalises) the requests queued
/// behind it. Connection w sends requests w, w + C, w + 2C, … Returns the latencies and the rate
/// achieved.
async fn single_events(
    base: &str,
    rate: u64,
    seconds: u64,
    customers: u64,
    ts: &str,
    tag: &str,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let conns = 64u64;
    eprintln!(
        "single-event ingest at {} req/s for {} s over {conns} connections …",
        rate, seconds
    );
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
    let single_start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..conns {
        let base = base.to_owned();
        let ts = ts.to_owned();
        let tag = tag.to_owned();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base, KEY).await?;
            let mut lat = Vec::with_capacity((total / conns + 1) as usize);
            let mut i = w;
            while i < total {
                let due = t0 + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                // Tokio's timer wakes up to ~1 ms late; that is the load generator's lateness,
                // not the server's. A connection further behind its schedule (its previous
                // answer came late) is measured from the due time.
                let begin = tokio::time::Instant::now();
                let from = if begin > due + TIMER_SLACK { due } else { begin };
                let body = format!(
                    "{{\"events\":[{{\"id\":\"{tag}_{i:016x}\",\"customer\":\"cus_{}\",\"metric\":\"compute_hours\",\"value\":1,\"timestamp\":\"{ts}\"}}]}}",
                    i % customers
                );
                let (status, out) = conn.send("POST", "/v1/events", &body).await?;
                if status != 200 {
                    bail!("single-event ingest failed: {status} {}", String::from_utf8_lossy(&out));
                }
                lat.push(from.elapsed());
                i += conns;
            }
            Ok::<Vec<Duration>, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total as usize);
    for w in workers {
        lat.extend(w.await??);
    }
    let achieved = lat.len() as f64 / single_start.elapsed().as_secs_f64();
    Ok((lat, achieved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_are_the_documented_json() {
        let mut out = Vec::new();
        batch_body(&mut out, 0xfe, 2, 1000, "2026-11-21T10:00:00Z");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"events": [
                {"id": "evt_00000000000000fe", "customer": "cus_254", "metric": "compute_hours",
                 "value": 1, "timestamp": "2026-11-21T10:00:00Z"},
                {"id": "evt_00000000000000ff", "customer": "cus_255", "metric": "compute_hours",
                 "value": 1, "timestamp": "2026-11-21T10:00:00Z"}
            ]})
        );
        batch_body(&mut out, 1000, 1, 1000, "t");
        assert!(String::from_utf8(out).unwrap().contains("\"cus_0\""));
        assert_eq!(accepted_of(br#"{"accepted":100,"duplicates":0}"#), 100);
        assert_eq!(accepted_of(br#"{"duplicates":3,"accepted":0}"#), 0);
        assert_eq!(accepted_of(b"oops"), 0);
    }
}
