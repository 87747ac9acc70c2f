//! The entitlement and credit part of `tally bench`: entitlement checks over HTTP beside the
//! hello-world server (same HTTP framework, no work) measured in the same run as the limit,
//! and credit consumption as individual calls (each an atomic check-and-debit with its own
//! idempotency key), on SQLite and, when a PostgreSQL URL is given, on PostgreSQL.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::common::runtime;

const KEY: &str = "bench-credits-admin-key-0123";

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

fn spawn_server(db: &str) -> anyhow::Result<(std::process::Child, String)> {
    spawn(&["serve", "--listen", "127.0.0.1:0", "--database-url", db])
}

/// Starts the `tally` binary with `args` and reads the address it prints.
fn spawn(args: &[&str]) -> anyhow::Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("cannot find the tally binary")?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("cannot start tally serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("tally listening on ")
        .map(str::to_owned)
        .with_context(|| format!("unexpected output from tally serve: {line:?}"))?;
    Ok((child, url))
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
        let (child, base) = spawn_server(&db)?;
        let _child = Child(child);
        let (hello_child, hello) = spawn(&["bench", "--hello-world-server"])?;
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
            let (child, base) = spawn_server(pg)?;
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

/// A minimal HTTP/1.1 keep-alive client (the load generator shares the machine's cores).
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
    key: String,
    buf: Vec<u8>,
    line: String,
}

impl Conn {
    async fn open(base: &str, key: &str) -> anyhow::Result<Conn> {
        let host = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let tcp = tokio::net::TcpStream::connect(&host).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            stream: tokio::io::BufReader::new(tcp),
            host,
            key: key.to_owned(),
            buf: Vec::with_capacity(4096),
            line: String::new(),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.buf.clear();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.key,
            body.len()
        );
        self.buf.extend_from_slice(head.as_bytes());
        self.buf.extend_from_slice(body.as_bytes());
        self.stream.get_mut().write_all(&self.buf).await?;
        let mut status = 0u16;
        let mut length = 0usize;
        let mut first = true;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            let l = self.line.trim_end();
            if first {
                status = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                first = false;
            } else if l.is_empty() {
                break;
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut out = vec![0u8; length];
        self.stream.read_exact(&mut out).await?;
        Ok((status, out))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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
