//! `tally clock advance` through one of two `tally serve --movable-clock` processes sharing
//! PostgreSQL: the other follows without a restart (it re-reads the persisted offset every
//! 200 ms). Seen from the outside: the other process's usage period moves a month on, and it
//! accepts an event stamped with the advanced time (more than 5 minutes in its own future had it
//! not moved). Fails (never skips) under `CI` when `TALLY_TEST_POSTGRES_URL` is missing.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{put, serve_with, tally, KEY};

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let r = http.get(url).bearer_auth(KEY).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_advance_through_one_process_moves_the_other() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalogs/localboxs.toml");
    let args = ["--movable-clock", "--catalog", catalog];
    let (a, url_a) = serve_with(&db, &args);
    let (b, url_b) = serve_with(&db, &args);
    let _servers = Servers(vec![a, b]);
    let http = reqwest::Client::new();
    put(&http, format!("{url_a}/v1/customers/ada"), json!({})).await;
    let usage = |base: &str| format!("{base}/v1/customers/ada/usage");
    let before_a = get(&http, usage(&url_a)).await["period"].clone();
    let before_b = get(&http, usage(&url_b)).await["period"].clone();
    assert_eq!(before_a, before_b);

    let out = tally()
        .args(["clock", "advance", "--by", "1M", "--json", "--url", &url_a])
        .env("TALLY_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let advanced: Value = serde_json::from_slice(&out.stdout).unwrap();
    let now = advanced["now"].as_str().unwrap().to_owned();
    let moved = Instant::now();
    let after_a = get(&http, usage(&url_a)).await["period"].clone();
    assert_eq!(after_a["start"], before_a["end"], "{after_a}");

    // The other process, never restarted, answers the same period within its sync interval.
    loop {
        let p = get(&http, usage(&url_b)).await["period"].clone();
        if p == after_a {
            break;
        }
        assert!(
            moved.elapsed() < Duration::from_secs(2),
            "the other process still answers {p}, not {after_a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("the other process followed after {:?}", moved.elapsed());
    let r = http
        .post(format!("{url_b}/v1/events"))
        .bearer_auth(KEY)
        .json(
            &json!({"events": [{"id": "after_advance", "customer": "ada",
                                   "metric": "api_calls", "value": 1, "timestamp": now}]}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
}
