//! The real `tally serve` under a 1,024 file-descriptor limit keeps answering while 1,100
//! connections that never finish their headers are held open (slowloris).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::KEY;

/// Raises this process's soft descriptor limit so the test itself can hold the connections.
fn raise_own_limit(to: u64) {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={to}:")])
        .status();
}

fn get(base: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn eleven_hundred_half_open_connections_do_not_stop_the_api() {
    raise_own_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let mut child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        // The defence under test is the cap, not the timeouts.
        .args(["--header-timeout", "5m", "--idle-timeout", "5m"])
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit and tally serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("tally listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let host = base.trim_start_matches("http://").to_owned();

    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(&host).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));

    let (status, body) = get(&base, "/health", None);
    assert_eq!(status, 200, "{body}");
    // Each request's connection is closed after it; the pause lets the server count it closed.
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = get(&base, "/v1/plans", Some(KEY));
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(200));
    // The cap is 1,024 minus a reserve of 128: 896 connections. The 1,100 held ones evicted
    // 204 of themselves, the first request one more; the later ones found the place it freed.
    let (status, body) = get(&base, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("tally_http_connections_dropped_total{reason=\"evicted\"} 205\n"),
        "{body}"
    );
    assert!(body.contains("tally_http_connections_dropped_total{reason=\"refused\"} 0\n"));

    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}
