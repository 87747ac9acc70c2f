//! Two `tally serve` processes sharing one PostgreSQL database: 200 concurrent consumers, split
//! between them, race for a balance of 1,000 credits. Fails (never skips) under `CI` when
//! `TALLY_TEST_POSTGRES_URL` is missing.

use std::process::Child;

use rust_decimal::Decimal;
use serde_json::{json, Value};

mod common;

use common::{put, serve, KEY};

/// Consume request `i` of the race (7 credits, idempotency key `race-{i}`) sent to `base`.
async fn consume(http: &reqwest::Client, base: &str, i: usize) -> reqwest::Response {
    http.post(format!("{base}/v1/customers/racer/credits/consume"))
        .bearer_auth(KEY)
        .json(&json!({"amount": 7, "idempotency_key": format!("race-{i}")}))
        .send()
        .await
        .unwrap()
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_postgres_never_overdraw() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let (a, url_a) = serve(&db);
    let (b, url_b) = serve(&db);
    let _servers = Servers(vec![a, b]);
    let http = reqwest::Client::new();
    put(&http, format!("{url_a}/v1/customers/racer"), json!({})).await;
    put(
        &http,
        format!("{url_a}/v1/customers/racer/subscription"),
        json!({"plan": "pro"}),
    )
    .await;
    let r = http
        .post(format!("{url_b}/v1/customers/racer/credits/grants"))
        .bearer_auth(KEY)
        .json(&json!({"amount": 1000, "reason": "race", "idempotency_key": "seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = http.clone();
        let base = if i % 2 == 0 {
            url_a.clone()
        } else {
            url_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let r = consume(&http, &base, i).await;
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }));
    }
    let (mut ok, mut short, mut debited) = (0u32, 0u32, Decimal::ZERO);
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            200 => {
                ok += 1;
                debited += b["consumed"].as_str().unwrap().parse::<Decimal>().unwrap();
            }
            402 => {
                short += 1;
                assert_eq!(b["error"]["type"], "insufficient_credits", "{b}");
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!((ok, short), (142, 58));
    assert_eq!(debited, Decimal::from(ok * 7));
    assert_eq!(debited, Decimal::from(994));
    for base in [&url_a, &url_b] {
        let b: Value = http
            .get(format!("{base}/v1/customers/racer/credits"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(b["balance"], "6", "{b}");
    }

    // Replaying every consume (to the other process) changes nothing.
    let mut replays = Vec::new();
    for i in 0..200 {
        let http = http.clone();
        let base = if i % 2 == 0 {
            url_b.clone()
        } else {
            url_a.clone()
        };
        replays.push(tokio::spawn(async move {
            consume(&http, &base, i).await.status().as_u16()
        }));
    }
    let mut replayed_ok = 0;
    for t in replays {
        if t.await.unwrap() == 200 {
            replayed_ok += 1;
        }
    }
    assert_eq!(replayed_ok, 142);
    let b: Value = http
        .get(format!("{url_a}/v1/customers/racer/credits?limit=100"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["balance"], "6");
}
