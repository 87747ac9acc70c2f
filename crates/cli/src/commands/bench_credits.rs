//! The entitlement and credit part of `tally bench`: entitlement checks over HTTP beside the
//! hello-world server (same HTTP framework, no work) measured in the same run as the limit,
//! and credit consumption as individual calls (each an atomic check-and-debit with its own
//! idempotency key), on SQLite and, when a PostgreSQL URL is given, on PostgreSQL.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::bench_load::{percentile, spawn_child, spawn_server, Conn};
use super::common::runtime;

const KEY: &str = "bench-credits-admin-key-0123456789ab";

/// Options of the entitlement and credit part of `tally bench`.
#[derive(clap::Args)]
pub struct CreditBenchArgs {
    /// Run only the entitlement and credit benchmarks.
    #[arg(long)]
    pub credits_only: bool,
    /// Seconds of each entitlement and credit run.
    #[arg(long, default_value_t = 10)]
    pub check_seconds: u64,
    /// Concurrent connections of each entitlement and credit run.
    #[arg(long, default_value_t = 32)]
    pub check_connections: usize,
    /// Concurrent connections of the low-concurrency latency runs.
    #[arg(long, default_value_t = 4)]
    pub latency_connections: usize,
    /// A PostgreSQL database (URL) to also measure credit consumption on; its tables are created
    /// if missing and the benchmark's customers are added to it.
    #[arg(long, env = "TALLY_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

/// Kills the server child when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the entitlement and credit benchmarks against fresh `tally serve` processes (SQLite in a
/// temporary directory, and PostgreSQL when given) and returns the report's lines.
pub fn report(args: &CreditBenchArgs) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("tally-bench-credits-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("credits.db").display());
    let out = (|| -> anyhow::Result<String> {
        let (child, base) = spawn_server(&db, KEY)?;
        let _child = Child(child);
        let (hello_child, hello) = spawn_child(&["bench", "--hello-world-server"], KEY)?;
        let _hello_child = Child(hello_child);
        let rt = runtime()?;
        let (conns, secs) = (args.check_connections, args.check_seconds);
        let (hello_run, checks) = rt.block_on(entitlements(&base, &hello, KEY, conns, secs))?;
        let sqlite = rt.block_on(consumption(&base, KEY, conns, secs, "sqlite"))?;
        let few = args.latency_connections;
        let (hello_few, checks_few) = rt.block_on(entitlements(&base, &hello, KEY, few, secs))?;
        let sqlite_few = rt.block_on(consumption(&base, KEY, few, secs, "sqlite"))?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            hello_run.line(
                &format!("HTTP hello-world (limit), {conns} connections"),
                ""
            )
        );
        let _ = writeln!(
            out,
            "{}",
            checks.line(
                &format!("entitlement checks (metric), {conns} connections"),
                &format!(
                    "{:.2} of limit (target ≥ 50k/s, p99 ≤ 1 ms)",
                    checks.per_sec / hello_run.per_sec
                )
            )
        );
        let _ = writeln!(
            out,
            "{}",
            sqlite.line(
                &format!("credit consumption, SQLite, {conns} connections"),
                "(target ≥ 10k/s, p99 ≤ 1 ms)",
            )
        );
        let _ = writeln!(
            out,
            "{}",
            hello_few.line(&format!("HTTP hello-world (limit), {few} connections"), "")
        );
        let _ = writeln!(
            out,
            "{}",
            checks_few.line(&format!("entitlement checks, {few} connections"), "")
        );
        let _ = writeln!(
            out,
            "{}",
            sqlite_few.line(
                &format!("credit consumption, SQLite, {few} connections"),
                ""
            )
        );
        if let Some(pg) = &args.postgres_url {
            let (child, base) = spawn_server(pg, KEY)?;
            let _child = Child(child);
            let tag = format!("pg{}", std::process::id());
            let run = rt.block_on(consumption(&base, KEY, conns, secs, &tag))?;
            let _ = writeln!(
                out,
                "{}",
                run.line(
                    &format!("credit consumption, PostgreSQL, {conns} connections"),
                    ""
                )
            );
            let tag = format!("pgfew{}", std::process::id());
            let run = rt.block_on(consumption(&base, KEY, few, secs, &tag))?;
            let _ = writeln!(
                out,
                "{}",
                run.line(
                    &format!("credit consumption, PostgreSQL, {few} connections"),
                    ""
                )
            );
        }
        Ok(out)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// One closed-loop run: requests per second and latency percentiles.
pub struct Run {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: u64,
}

impl Run {
    /// One line of the report.
    pub fn line(&self, name: &str, target: &str) -> String {
        format!(
            "{:<52} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} calls) {target}",
            name,
            self.per_sec,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.requests
        )
    }
}

/// Sends requests from `conns` connections back to back for `secs` seconds; `request(i)` gives
/// the i-th request of a connection (method, path, body). Every answer must be one of `ok`.
async fn closed_loop<F>(
    base: &str,
    key: &str,
    conns: usize,
    secs: u64,
    ok: &'static [u16],
    request: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> (&'static str, String, String) + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (request, stop) = (request.clone(), stop.clone());
        let (base, key) = (base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base, &key).await?;
            let mut lat = Vec::with_capacity(100_000);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (method, path, body) = request(c, i);
                let t = Instant::now();
                let (status, out) = conn.send(method, &path, &body).await?;
                lat.push(t.elapsed());
                if !ok.contains(&status) {
                    bail!(
                        "{method} {path}: {status} {}",
                        String::from_utf8_lossy(&out)
                    );
                }
                i += 1;
            }
            Ok::<Vec<Duration>, anyhow::Error>(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    Ok(Run {
        per_sec: lat.len() as f64 / elapsed,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        requests: lat.len() as u64,
    })
}

async fn setup(base: &str, key: &str, customer: &str, plan: &str) -> anyhow::Result<()> {
    let mut conn = Conn::open(base, key).await?;
    for (m, p, b) in [
        ("PUT", format!("/v1/customers/{customer}"), "{}".to_owned()),
        (
            "PUT",
            format!("/v1/customers/{customer}/subscription"),
            format!("{{\"plan\":\"{plan}\"}}"),
        ),
    ] {
        let (s, out) = conn.send(m, &p, &b).await?;
        if !(200..300).contains(&s) {
            bail!("{m} {p}: {s} {}", String::from_utf8_lossy(&out));
        }
    }
    Ok(())
}

/// Entitlement checks (a gauge metric with a hard limit) and the hello-world limit.
pub async fn entitlements(
    base: &str,
    hello_base: &str,
    key: &str,
    conns: usize,
    secs: u64,
) -> anyhow::Result<(Run, Run)> {
    let customers = 100;
    for c in 0..customers {
        setup(base, key, &format!("ent_{c}"), "pro").await?;
    }
    let mut conn = Conn::open(base, key).await?;
    let mut events = String::from("{\"events\":[");
    for c in 0..customers {
        if c > 0 {
            events.push(',');
        }
        let _ = write!(
            events,
            "{{\"id\":\"vms_{c}\",\"customer\":\"ent_{c}\",\"metric\":\"vms\",\"value\":2}}"
        );
    }
    events.push_str("]}");
    let (s, out) = conn.send("POST", "/v1/events", &events).await?;
    if s != 200 {
        bail!("ingest failed: {s} {}", String::from_utf8_lossy(&out));
    }
    eprintln!("hello-world limit for {secs} s over {conns} connections …");
    let hello = closed_loop(hello_base, key, conns, secs, &[200], move |c, i| {
        let customer = (c as u64 * 7 + i) % customers;
        (
            "POST",
            "/v1/entitlements/check".to_owned(),
            format!("{{\"customer\":\"ent_{customer}\",\"metric\":\"vms\",\"quantity\":1}}"),
        )
    })
    .await?;
    eprintln!("entitlement checks for {secs} s over {conns} connections …");
    let checks = closed_loop(base, key, conns, secs, &[200], move |c, i| {
        let customer = (c as u64 * 7 + i) % customers;
        (
            "POST",
            "/v1/entitlements/check".to_owned(),
            format!("{{\"customer\":\"ent_{customer}\",\"metric\":\"vms\",\"quantity\":1}}"),
        )
    })
    .await?;
    Ok((hello, checks))
}

/// Credit consumption: individual consume calls of 1 credit, each with its own idempotency key,
/// spread over `customers` customers.
pub async fn consumption(
    base: &str,
    key: &str,
    conns: usize,
    secs: u64,
    tag: &str,
) -> anyhow::Result<Run> {
    let customers = 100;
    let mut conn = Conn::open(base, key).await?;
    for c in 0..customers {
        let id = format!("cr_{tag}_{c}");
        setup(base, key, &id, "pro").await?;
        let (s, out) = conn
            .send(
                "POST",
                &format!("/v1/customers/{id}/credits/grants"),
                "{\"amount\":1000000000,\"reason\":\"benchmark\",\"idempotency_key\":\"bench\"}",
            )
            .await?;
        if s != 200 {
            bail!("grant failed: {s} {}", String::from_utf8_lossy(&out));
        }
    }
    eprintln!("credit consumption ({tag}) for {secs} s over {conns} connections …");
    let tag = tag.to_owned();
    closed_loop(base, key, conns, secs, &[200], move |c, i| {
        let customer = (c as u64 * 13 + i) % customers;
        (
            "POST",
            format!("/v1/customers/cr_{tag}_{customer}/credits/consume"),
            format!("{{\"amount\":1,\"idempotency_key\":\"{tag}-{c}-{i}\"}}"),
        )
    })
    .await
}
