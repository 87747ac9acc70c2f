//! Shared by the tests that run the real `tally` binary as a server: starting `tally serve` and
//! waiting until it listens, and the admin key it is started with.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The admin key `tally serve` is started with.
pub const KEY: &str = "serve-test-admin-key-0123456789abcdef";

/// The `tally` binary under test.
pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Starts `tally serve` on a random port and waits until it listens; returns the child and its
/// base URL.
pub fn serve(db: &str) -> (Child, String) {
    serve_with(db, &[])
}

/// [`serve`] with more arguments.
pub fn serve_with(db: &str, args: &[&str]) -> (Child, String) {
    let mut child = tally()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .args(args)
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tally serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("tally listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// PUTs `body` to `url` with the admin key and asserts a 2xx.
pub async fn put(http: &reqwest::Client, url: String, body: Value) {
    let r = http
        .put(url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}
