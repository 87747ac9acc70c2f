//! The load generator shared by the ingestion (`bench`) and the entitlement and credit
//! (`bench_credits`) benchmarks: starting `tally` children, a minimal HTTP client and latency
//! percentiles.

use std::fmt::Write as _;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// Starts `tally serve` on a random port of a database, with `key` as its admin key.
pub(crate) fn spawn_server(db: &str, key: &str) -> anyhow::Result<(Child, String)> {
    spawn_child(
        &["serve", "--listen", "127.0.0.1:0", "--database-url", db],
        key,
    )
}

/// Starts `tally ARGS…` with `key` as its admin key and reads the address it prints.
pub(crate) fn spawn_child(args: &[&str], key: &str) -> anyhow::Result<(Child, String)> {
    spawn_child_env(args, key, &[])
}

/// [`spawn_child`] with more environment variables.
pub(crate) fn spawn_child_env(
    args: &[&str],
    key: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("cannot find the tally binary")?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .env("TALLY_API_KEY", key)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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

/// A minimal HTTP/1.1 keep-alive client, so that the load generator spends as little of the
/// shared CPU as possible (the server under test runs on the same machine).
pub(crate) struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
    key: String,
    buf: Vec<u8>,
    line: String,
}

impl Conn {
    /// Connects to `base` (`http://host:port`); every request carries `key` as bearer token.
    pub(crate) async fn open(base: &str, key: &str) -> anyhow::Result<Conn> {
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
            buf: Vec::with_capacity(16 * 1024),
            line: String::new(),
        })
    }

    /// Sends a request and returns the status and body.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send_bytes(method, path, body.as_bytes()).await
    }

    /// [`Conn::send`] with a body of bytes.
    pub(crate) async fn send_bytes(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send_with(method, path, "", body).await
    }

    /// [`Conn::send_bytes`] with `extra` header lines (each ending in `\r\n`).
    pub(crate) async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.buf.clear();
        let _ = write!(
            Fmt(&mut self.buf),
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            self.host,
            self.key,
            body.len()
        );
        self.buf.extend_from_slice(body);
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

/// `fmt::Write` into a byte buffer.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The `p` quantile (0..=1) of sorted latencies; zero when there are none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
