//! Two `tally serve` processes on one PostgreSQL database: workers that must run once across
//! processes — when the process holding the work is killed with SIGKILL (no shutdown code runs),
//! the other takes over within the lease time and nothing is done twice — and the same batches
//! ingested through both at once, counted once. Fails (never skips) under `CI` when
//! `TALLY_TEST_POSTGRES_URL` is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_core::period::allowance_period;
use tally_store::{CustomerUpsert, Store};

mod common;

use common::{put, tally, KEY};

/// The lease of these tests' workers: short, so a takeover is seen quickly.
const LEASE: Duration = Duration::from_secs(3);
const CLOSE_EVERY: Duration = Duration::from_secs(1);

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tally serve` on `db` with the LocalBoxs catalog (it has a free plan, so every customer's
/// periods are closed), the short lease and closer interval, and a grace of one second.
fn serve(db: &str) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalogs/localboxs.toml");
    let mut child = tally()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .args(["--catalog", catalog, "--grace", "1s"])
        .args(["--close-every", "1s", "--worker-lease", "3s"])
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tally serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("tally listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// Whether the server at `base` holds the period closer's lease (its `/metrics`).
async fn is_leader(http: &reqwest::Client, base: &str) -> bool {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().any(|l| l == "tally_closer_leader 1")
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// How many periods of a customer created at `created` have ended by `now − grace`.
fn due_periods(created: DateTime<Utc>, now: DateTime<Utc>) -> usize {
    let mut p = allowance_period(created, created);
    let mut n = 0;
    while p.end + chrono::Duration::seconds(1) <= now {
        n += 1;
        p = allowance_period(created, p.end);
    }
    n
}

/// Customers `prefix0..prefix{n}` created 95 days ago, directly in the database (the API
/// creates customers now, with nothing to close yet). Returns their creation instant.
async fn old_customers(store: &dyn Store, prefix: &str, n: usize) -> DateTime<Utc> {
    let created = Utc::now() - chrono::Duration::days(95);
    for i in 0..n {
        store
            .upsert_customer(CustomerUpsert {
                id: format!("{prefix}{i}"),
                email: None,
                name: None,
                metadata: None,
                email_opt_out: None,
                now: created,
            })
            .await
            .unwrap();
    }
    created
}

/// Every customer's invoices are exactly its due periods, each once.
async fn invoiced_exactly_once(store: &dyn Store, ids: &[String], periods: usize) -> bool {
    for id in ids {
        let inv = store.list_invoices(id).await.unwrap();
        let starts: HashSet<_> = inv.iter().map(|i| i.period_start).collect();
        assert_eq!(starts.len(), inv.len(), "a period of {id} invoiced twice");
        if inv.len() != periods {
            assert!(inv.len() < periods, "{id}: {} invoices", inv.len());
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_period_closer_moves_to_the_other_process_after_kill_9() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let store = tally_store::connect(&db).await.unwrap();
    let http = reqwest::Client::new();
    let (a, url_a) = serve(&db);
    let mut servers = Servers(vec![a]);
    wait_until("A to lead", Duration::from_secs(10), || {
        is_leader(&http, &url_a)
    })
    .await;
    let (b, url_b) = serve(&db);
    servers.0.push(b);

    // While A lives, A closes every period and B never leads.
    let created = old_customers(&*store, "early", 20).await;
    let periods = due_periods(created, Utc::now());
    assert_eq!(periods, 3);
    let early: Vec<String> = (0..20).map(|i| format!("early{i}")).collect();
    wait_until(
        "A to close the early periods",
        Duration::from_secs(30),
        || invoiced_exactly_once(&*store, &early, periods),
    )
    .await;
    for _ in 0..8 {
        assert!(!is_leader(&http, &url_b).await, "B leads while A lives");
        tokio::time::sleep(CLOSE_EVERY / 2).await;
    }
    assert!(is_leader(&http, &url_a).await);

    // SIGKILL: A's lease is left in the database and lapses; B takes over within the lease
    // time plus one closer tick (and one more of slack for a loaded machine).
    servers.0[0].kill().unwrap();
    servers.0[0].wait().unwrap();
    let killed = Instant::now();
    let late = old_customers(&*store, "late", 20).await;
    assert_eq!(due_periods(late, Utc::now()), periods);
    wait_until("B to lead", LEASE * 3, || is_leader(&http, &url_b)).await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= LEASE + CLOSE_EVERY * 3,
        "B took over {takeover:?} after the kill"
    );
    let all: Vec<String> = early
        .iter()
        .cloned()
        .chain((0..20).map(|i| format!("late{i}")))
        .collect();
    wait_until(
        "B to close the late periods",
        Duration::from_secs(30),
        || invoiced_exactly_once(&*store, &all, periods),
    )
    .await;
    // A few more ticks change nothing.
    tokio::time::sleep(CLOSE_EVERY * 3).await;
    assert!(invoiced_exactly_once(&*store, &all, periods).await);
    eprintln!("B took over the period closer {takeover:?} after kill -9 of A");
}

type Received = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receive(State(got): State<Received>, body: Bytes) -> StatusCode {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let e: Value = serde_json::from_str(&text).unwrap();
    got.lock().unwrap().push((
        e["id"].as_str().unwrap().to_owned(),
        e["customer"].as_str().unwrap_or_default().to_owned(),
        text,
    ));
    // Answered late, so the kill lands while deliveries are in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_deliveries_move_to_the_other_process_after_kill_9() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (a, url_a) = serve(&db);
    let (b, url_b) = serve(&db);
    let mut servers = Servers(vec![a, b]);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url_a}/v1/webhook-endpoints"))
        .bearer_auth(KEY)
        .json(&json!({"url": format!("http://{receiver}/hooks"), "events": ["credits.granted"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for c in 0..5 {
        put(&http, format!("{url_b}/v1/customers/c{c}"), json!({})).await;
    }
    // 150 grants through B (which lives), each a credits.granted notification, interleaved
    // across 5 customers; both processes deliver.
    for i in 0..150 {
        let r = http
            .post(format!("{url_b}/v1/customers/c{}/credits/grants", i % 5))
            .bearer_auth(KEY)
            .json(
                &json!({"amount": "1", "reason": "kill test", "idempotency_key": format!("g{i}")}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let got_ref = got.clone();
    wait_until("the first 30 deliveries", Duration::from_secs(30), || {
        let n = got_ref.lock().unwrap().len();
        async move { n >= 30 }
    })
    .await;
    servers.0[0].kill().unwrap();
    servers.0[0].wait().unwrap();
    let killed = Instant::now();
    let at_kill = got.lock().unwrap().len();
    assert!(at_kill < 155, "all delivered before the kill");

    // Every grant's notification, and each customer's monthly plan grant's.
    let out = tally()
        .args(["notifications", "list", "--json", "--limit", "1000"])
        .args(["--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbox: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|n: &Value| n["type"] == "credits.granted")
        .collect();
    assert_eq!(outbox.len(), 155);
    let got_ref = got.clone();
    wait_until("every notification", Duration::from_secs(60), || {
        let ids: HashSet<String> = got_ref
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect();
        async move { ids.len() >= 155 }
    })
    .await;
    let all_delivered = killed.elapsed();
    // Long enough for any delivery claimed twice to arrive.
    tokio::time::sleep(LEASE + Duration::from_millis(500)).await;
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for n in &outbox {
        expected
            .entry(n["customer_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(n["id"].as_str().unwrap().to_owned());
    }
    let got = got.lock().unwrap().clone();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut first_seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut duplicates = 0;
    for (id, customer, body) in &got {
        match bodies.get(id) {
            Some(b) => {
                assert_eq!(b, body, "a redelivery is the same event, byte for byte");
                duplicates += 1;
            }
            None => {
                bodies.insert(id.clone(), body.clone());
                first_seen
                    .entry(customer.clone())
                    .or_default()
                    .push(id.clone());
            }
        }
    }
    assert_eq!(bodies.len(), 155, "none lost, none invented");
    assert_eq!(first_seen, expected, "each customer's in order");
    // Only deliveries A had in flight at the kill (at most one per customer) arrive twice.
    assert!(duplicates <= 5, "{duplicates} duplicates");
    eprintln!(
        "{at_kill} delivered before kill -9 of A, the rest by B within {all_delivered:?}; \
         {duplicates} redelivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_ingesting_the_same_batches_count_each_event_once() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let (a, url_a) = serve(&db);
    let (b, url_b) = serve(&db);
    let _servers = Servers(vec![a, b]);
    let http = reqwest::Client::new();
    for c in 0..10 {
        put(&http, format!("{url_a}/v1/customers/c{c}"), json!({})).await;
    }
    // 20 batches of 100 events (event i of customer i % 10), each sent to both processes at
    // once, three times over.
    let batch = |b: usize| {
        let events: Vec<Value> = (100 * b..100 * b + 100)
            .map(|i| {
                json!({"id": format!("e{i}"), "customer": format!("c{}", i % 10),
                            "metric": "api_calls", "value": 1})
            })
            .collect();
        json!({ "events": events })
    };
    let mut tasks = Vec::new();
    for _round in 0..3 {
        for b in 0..20 {
            for base in [&url_a, &url_b] {
                let (http, url, body) = (http.clone(), format!("{base}/v1/events"), batch(b));
                tasks.push(tokio::spawn(async move {
                    let r = http
                        .post(url)
                        .bearer_auth(KEY)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    let v: Value = r.json().await.unwrap();
                    (
                        v["accepted"].as_u64().unwrap(),
                        v["duplicates"].as_u64().unwrap(),
                    )
                }));
            }
        }
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for t in tasks {
        let (a, d) = t.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!((accepted, duplicates), (2_000, 6 * 2_000 - 2_000));
    let store = tally_store::connect(&db).await.unwrap();
    assert_eq!(store.event_count().await.unwrap(), 2_000);
    for c in 0..10 {
        let r = http
            .get(format!("{url_b}/v1/customers/c{c}/usage"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let usage: Value = r.json().await.unwrap();
        let calls = usage["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["metric"] == "api_calls"))
            .unwrap_or_else(|| panic!("{usage}"));
        assert_eq!(calls["used"], "200", "c{c}: {usage}");
    }
}
