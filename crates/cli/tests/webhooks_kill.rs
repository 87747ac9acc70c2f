//! Outgoing webhooks survive `kill -9` of `tally serve` during delivery: after a restart on the
//! same database every notification is delivered, each customer's in order, and a notification
//! delivered twice carries the same id and the same body.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};

mod common;

use common::{put, serve, tally, KEY};

type Received = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receive(State(got): State<Received>, body: Bytes) -> StatusCode {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let e: Value = serde_json::from_str(&text).unwrap();
    got.lock().unwrap().push((
        e["id"].as_str().unwrap().to_owned(),
        e["customer"].as_str().unwrap_or_default().to_owned(),
        text,
    ));
    // Recorded on arrival, answered late: the kill lands while deliveries are in flight, and
    // those arrive again after the restart.
    tokio::time::sleep(Duration::from_millis(25)).await;
    StatusCode::OK
}

async fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_survive_kill_9_without_loss_or_reordering() {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let (mut child, base) = serve(&db);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(KEY)
        .json(&json!({"url": format!("http://{receiver}/hooks"), "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for c in 0..5 {
        put(&http, format!("{base}/v1/customers/c{c}"), json!({})).await;
    }
    // Grants, each a credits.granted notification, interleaved across 5 customers, until the
    // server dies.
    let grants = {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            for i in 0..200 {
                let r = http
                    .post(format!("{base}/v1/customers/c{}/credits/grants", i % 5))
                    .bearer_auth(KEY)
                    .json(&json!({"amount": "1", "reason": "kill test", "idempotency_key": format!("g{i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked += 1,
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    wait_until("the first 40 deliveries", 30, || {
        got.lock().unwrap().len() >= 40
    })
    .await;
    child.kill().expect("SIGKILL"); // no shutdown code runs
    child.wait().unwrap();
    let acked = grants.await.unwrap();
    let before_restart = got.lock().unwrap().len();

    let (mut child, _) = serve(&db);
    let out = tally()
        .args([
            "notifications",
            "list",
            "--json",
            "--limit",
            "1000",
            "--database-url",
            &db,
        ])
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
        .collect();
    assert!(outbox.len() >= acked, "{} < {acked}", outbox.len());
    assert!(
        before_restart < outbox.len(),
        "all delivered before the kill"
    );
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for n in &outbox {
        expected
            .entry(n["customer_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(n["id"].as_str().unwrap().to_owned());
    }
    wait_until("every notification", 60, || {
        let g = got.lock().unwrap();
        let ids: std::collections::HashSet<&String> = g.iter().map(|(id, _, _)| id).collect();
        ids.len() >= outbox.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let got = got.lock().unwrap().clone();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut first_seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut duplicates = 0;
    for (id, customer, body) in &got {
        match bodies.get(id) {
            Some(b) => {
                // A redelivery: the same event, byte for byte.
                assert_eq!(b, body);
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
    assert_eq!(bodies.len(), outbox.len(), "none lost, none invented");
    assert_eq!(first_seen, expected, "each customer's in order");
    // At most the deliveries in flight at the kill (one per customer) arrive twice.
    assert!(duplicates <= 5, "{duplicates} duplicates");
    eprintln!(
        "{} notifications ({acked} grants acknowledged), {before_restart} delivered before kill -9, \
         {duplicates} redelivered",
        outbox.len()
    );
}

/// `--log-format json` writes one JSON object per line, and a request's lines carry its id (the
/// client's `Request-Id`, answered back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let mut child = tally()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--log-format",
            "json",
        ])
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("tally listening on ")
        .unwrap()
        .to_owned();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(KEY)
        .header("Request-Id", "test-req-1")
        .json(&json!({"url": "http://127.0.0.1:9/h", "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["request-id"], "test-req-1");
    let r = reqwest::Client::new()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut lines = Vec::new();
    for l in BufReader::new(child.stderr.take().unwrap()).lines() {
        let l = l.unwrap();
        lines.push(serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("{e}: {l}")));
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "tally listening"),
        "{lines:?}"
    );
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "webhook endpoint created")
        .expect("the endpoint's log line");
    assert_eq!(created["span"]["request_id"], "test-req-1");
    assert_eq!(created["level"], "INFO");
}
