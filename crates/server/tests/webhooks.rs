//! Outgoing webhooks through the real server: a local receiver gets every notification type,
//! signed so that Tally's own verifier, Stripe's Python SDK and the docs' Node snippet accept
//! it; deliveries survive a receiver that is down for an hour, keep each customer's order, follow
//! secret rotation, disable an endpoint failing for 3 days, and two processes sharing PostgreSQL
//! deliver each notification once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use chrono::Utc;
use reqwest::StatusCode as RStatus;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_server::service::notify;
use tally_store::clock::Clock;

#[macro_use]
mod common;

use common::{app_on, App, Db};

const CATALOG: &str = include_str!("fixtures/notify.toml");
const DOCS: &str = include_str!("../../../docs/notifications.md");

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    body: String,
    signature: String,
}

impl Got {
    fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// While set, answers 503 to everything.
    down: Arc<AtomicBool>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if r.down.load(Ordering::SeqCst) || uri.path().starts_with("/down") {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().unwrap().push(Got {
        path: uri.path().to_owned(),
        body: String::from_utf8(body.to_vec()).unwrap(),
        signature: headers
            .get("tally-signature")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
    });
    StatusCode::OK
}

impl Receiver {
    async fn spawn() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let app = axum::Router::new()
            .fallback(post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received (20 s at most).
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        for _ in 0..400 {
            let got = self.got();
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; got {:#?}", self.got());
    }
}

async fn app(db: Db) -> Option<App> {
    app_on(db, |c| {
        c.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/notify.toml").unwrap());
        c.clock = Clock::starting_at(Utc::now());
    })
    .await
}

impl App {
    async fn endpoint(&self, url: String, events: Value) -> (String, String) {
        let (s, b) = self
            .post(
                "/v1/webhook-endpoints",
                json!({"url": url, "events": events}),
            )
            .await;
        assert_eq!(s, RStatus::OK, "{b}");
        assert!(b["secret"].as_str().unwrap().starts_with("whsec_"));
        (
            b["id"].as_str().unwrap().to_owned(),
            b["secret"].as_str().unwrap().to_owned(),
        )
    }
}

fn verify(g: &Got, secret: &str) -> Result<(), tally_stripe::webhook::SignatureError> {
    let t: i64 = g.signature[2..g.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    tally_stripe::webhook::verify(
        g.body.as_bytes(),
        &g.signature,
        &[secret],
        t,
        tally_stripe::webhook::DEFAULT_TOLERANCE,
    )
}

/// The first fenced block of `lang` in the docs.
fn doc_snippet(lang: &str) -> &'static str {
    let start = DOCS.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    let len = DOCS[start..].find("```").unwrap();
    &DOCS[start..start + len]
}

fn venv_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stripe-python-venv");
    let py = dir.join("bin").join("python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import stripe"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status();
        assert!(st.is_ok_and(|s| s.success()), "python3 -m venv failed");
        let st = Command::new(dir.join("bin").join("pip"))
            .args(["install", "--quiet", "stripe"])
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "pip install stripe failed (PyPI must be reachable once; the venv is cached in {})",
            dir.display()
        );
    }
    py
}

/// Runs the docs' Python and Node snippets over `got` with `secret`: how many each accepted,
/// and how many tampered bodies each rejected.
fn verify_with_doc_snippets(got: &[Got], secret: &str) -> ((usize, usize), (usize, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deliveries.json");
    let list: Vec<Value> = got
        .iter()
        .map(|g| json!({"payload": g.body, "header": g.signature}))
        .collect();
    std::fs::write(
        &data,
        json!({"secret": secret, "deliveries": list}).to_string(),
    )
    .unwrap();
    let py = format!(
        "{}\nimport sys\ndata = json.load(open(sys.argv[1]))\nok = bad = 0\n\
         for d in data['deliveries']:\n\
         \x20   verify_tally_webhook(d['payload'], d['header'], data['secret'], None)\n\
         \x20   ok += 1\n\
         \x20   try:\n\
         \x20       verify_tally_webhook(d['payload'] + ' ', d['header'], data['secret'], None)\n\
         \x20   except stripe.SignatureVerificationError:\n\
         \x20       bad += 1\n\
         print(ok, bad)\n",
        doc_snippet("python")
    );
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(py)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = parse_pair(&out.stdout);
    let js = format!(
        "{}\nconst data = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));\n\
         let ok = 0, bad = 0;\n\
         for (const d of data.deliveries) {{\n\
         \x20 verifyTallyWebhook(d.payload, d.header, data.secret, Infinity); ok++;\n\
         \x20 try {{ verifyTallyWebhook(d.payload + ' ', d.header, data.secret, Infinity); }} catch (e) {{ bad++; }}\n\
         }}\n\
         console.log(ok, bad);\n",
        doc_snippet("js")
    );
    let out = Command::new("node")
        .arg("-e")
        .arg(js)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (python, parse_pair(&out.stdout))
}

fn parse_pair(out: &[u8]) -> (usize, usize) {
    let s = String::from_utf8_lossy(out);
    let mut it = s.split_whitespace().map(|n| n.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

on_both_backends!(
    every_notification_type_is_delivered_signed,
    a_receiver_down_for_an_hour_gets_everything_in_order,
);

async fn every_notification_type_is_delivered_signed(db: Db) {
    let Some(app) = app(db).await else { return };
    let (r, addr) = Receiver::spawn().await;
    let (endpoint, secret) = app
        .endpoint(format!("http://{addr}/hooks"), json!(["*"]))
        .await;
    let state = app.server.state().clone();
    let (s, b) = app.put("/v1/customers/c1", json!({})).await;
    assert!(s.is_success(), "{b}");
    // The plan's 100 monthly credits, then 5 more: two grants (balance 105).
    let (s, b) = app
        .post(
            "/v1/customers/c1/credits/grants",
            json!({"amount": "5", "reason": "goodwill", "idempotency_key": "g1"}),
        )
        .await;
    assert_eq!(s, RStatus::OK, "{b}");
    // 105 → 15: below the plan's low_credit_balance of 20.
    let consume = |n: &str, key: &str| {
        app.post(
            "/v1/customers/c1/credits/consume",
            json!({"amount": n, "idempotency_key": key}),
        )
    };
    let (s, b) = consume("90", "k1").await;
    assert_eq!(s, RStatus::OK, "{b}");
    // A retried request notifies nothing more.
    let (s, _) = consume("90", "k1").await;
    assert_eq!(s, RStatus::OK);
    let (s, _) = consume("15", "k2").await;
    assert_eq!(s, RStatus::OK);
    // 10 builds of an allowance of 10: 80 %, 95 % and 100 %.
    let (s, b) = app
        .post(
            "/v1/events",
            json!({"events": [{"id": "b1", "customer": "c1", "metric": "builds", "value": 10,
                "timestamp": state.clock.now().to_rfc3339()}]}),
        )
        .await;
    assert_eq!(s, RStatus::OK, "{b}");
    let (s, b) = app
        .post(
            "/v1/entitlements/check",
            json!({"customer": "c1", "metric": "builds"}),
        )
        .await;
    assert_eq!(s, RStatus::OK, "{b}");
    // The first period closes (with the default grace of an hour).
    state.clock.advance(chrono::Duration::days(33));
    let invoices = tally_server::service::closer::close_due(&state, state.clock.now())
        .await
        .unwrap();
    assert_eq!(invoices.len(), 1);

    let expected: BTreeMap<&str, usize> = [
        ("credits.granted", 2),
        ("credits.low", 1),
        ("credits.depleted", 1),
        ("usage.threshold_reached", 3),
        ("invoice.closed", 1),
    ]
    .into_iter()
    .collect();
    let total: usize = expected.values().sum();
    let got = r.wait_for("every type", |g| g.len() >= total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = r.got();
    assert_eq!(got_now.len(), total, "nothing more than expected");
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for g in &got {
        assert_eq!(g.path, "/hooks");
        *types
            .entry(g.event()["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert_eq!(verify(g, &secret), Ok(()));
        assert_eq!(
            verify(g, "whsec_other"),
            Err(tally_stripe::webhook::SignatureError::NoMatch)
        );
    }
    let types: BTreeMap<&str, usize> = types.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(types, expected);
    // In the order the notifications were made, each with its own id.
    let kinds: Vec<String> = got
        .iter()
        .map(|g| g.event()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds[0], "credits.granted");
    assert_eq!(kinds[2], "credits.low");
    assert_eq!(kinds[3], "credits.depleted");
    assert_eq!(kinds[7], "invoice.closed");
    let low = got[2].event();
    assert_eq!(low["customer"], "c1");
    assert_eq!(low["object"], "event");
    assert_eq!(low["data"]["object"]["balance"], "15");
    assert_eq!(low["data"]["object"]["low_balance"], "20");
    let thresholds: Vec<Value> = got[4..7]
        .iter()
        .map(|g| g.event()["data"]["object"]["threshold"].clone())
        .collect();
    assert_eq!(thresholds, vec![json!(80), json!(95), json!(100)]);
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|g| g.event()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), total);

    // Stripe's Python SDK and the docs' Node snippet accept every delivery and reject a
    // changed body.
    let (python, node) = verify_with_doc_snippets(&got, &secret);
    assert_eq!(python, (total, total));
    assert_eq!(node, (total, total));

    // The delivery log.
    let (s, b) = app
        .get(&format!(
            "/v1/webhook-endpoints/{endpoint}/deliveries?limit=100"
        ))
        .await;
    assert_eq!(s, RStatus::OK, "{b}");
    let log = b["data"].as_array().unwrap();
    assert_eq!(log.len(), total);
    assert!(log
        .iter()
        .all(|d| d["status"] == "succeeded" && d["attempts"] == 1 && d["last_status_code"] == 200));
    app.server.shutdown().await.unwrap();
}

async fn a_receiver_down_for_an_hour_gets_everything_in_order(db: Db) {
    let Some(app) = app(db).await else { return };
    let (r, addr) = Receiver::spawn().await;
    let (endpoint, _) = app
        .endpoint(format!("http://{addr}/hooks"), json!(["*"]))
        .await;
    let state = app.server.state().clone();
    r.down.store(true, Ordering::SeqCst);
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..30 {
        let customer = format!("c{}", i % 3);
        let key = format!("test:{i}");
        assert!(notify::enqueue(
            &state,
            "credits.purchased",
            Some(&customer),
            json!({"n": i}),
            key.clone()
        )
        .await
        .unwrap());
        sent.entry(customer)
            .or_default()
            .push(tally_store::notify::notification_id(&key));
    }
    // The same moment again: nothing more.
    assert!(!notify::enqueue(
        &state,
        "credits.purchased",
        Some("c0"),
        json!({}),
        "test:0".into()
    )
    .await
    .unwrap());
    // Each customer's first delivery fails; its later ones wait.
    for _ in 0..100 {
        let (_, b) = app
            .get(&format!(
                "/v1/webhook-endpoints/{endpoint}/deliveries?limit=100"
            ))
            .await;
        let failed = b["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["attempts"] == 1 && d["last_status_code"] == 503)
            .count();
        if failed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, b) = app
        .get(&format!(
            "/v1/webhook-endpoints/{endpoint}/deliveries?limit=100"
        ))
        .await;
    let attempted: Vec<&Value> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["attempts"] != 0)
        .collect();
    assert_eq!(attempted.len(), 3, "{b}");
    assert!(attempted
        .iter()
        .all(|d| d["status"] == "pending" && d["last_error"] == "HTTP 503"));
    let (_, health) = app.get("/health").await;
    assert!(
        health["outbox_lag_seconds"].as_i64().unwrap() >= 0,
        "{health}"
    );
    // An hour later the receiver is back.
    state.clock.advance(chrono::Duration::hours(1));
    r.down.store(false, Ordering::SeqCst);
    let got = r.wait_for("all 30", |g| g.len() >= 30).await;
    let mut by_customer: HashMap<String, Vec<String>> = HashMap::new();
    for g in &got {
        let e = g.event();
        by_customer
            .entry(e["customer"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_customer, sent);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_signs_with_both_secrets_during_the_grace_period() {
    let app = app(Db::Sqlite).await.unwrap();
    let (r, addr) = Receiver::spawn().await;
    let (endpoint, old) = app
        .endpoint(format!("http://{addr}/hooks"), json!(["credits.purchased"]))
        .await;
    let state = app.server.state().clone();
    let (s, b) = app
        .post(
            &format!("/v1/webhook-endpoints/{endpoint}/rotate"),
            json!({"expires_in": 3600}),
        )
        .await;
    assert_eq!(s, RStatus::OK, "{b}");
    let new = b["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    notify::enqueue(
        &state,
        "credits.purchased",
        Some("c1"),
        json!({}),
        "r1".into(),
    )
    .await
    .unwrap();
    let got = r.wait_for("one", |g| g.len() == 1).await;
    assert_eq!(got[0].signature.matches("v1=").count(), 2);
    assert_eq!(verify(&got[0], &old), Ok(()));
    assert_eq!(verify(&got[0], &new), Ok(()));
    // After the grace period only the new secret signs.
    state.clock.advance(chrono::Duration::hours(2));
    notify::enqueue(
        &state,
        "credits.purchased",
        Some("c1"),
        json!({}),
        "r2".into(),
    )
    .await
    .unwrap();
    // Types the endpoint did not subscribe to are not sent.
    notify::enqueue(&state, "credits.low", Some("c1"), json!({}), "r3".into())
        .await
        .unwrap();
    let got = r.wait_for("two", |g| g.len() == 2).await;
    assert_eq!(got[1].signature.matches("v1=").count(), 1);
    assert_eq!(verify(&got[1], &new), Ok(()));
    assert!(verify(&got[1], &old).is_err());
    let (s, b) = app
        .post("/v1/webhook-endpoints/we_nope/rotate", json!({}))
        .await;
    assert_eq!(s, RStatus::NOT_FOUND);
    assert_eq!(b["error"]["code"], "webhook_endpoint_not_found");
    // Audited, without secrets.
    let (_, audit) = app.get("/v1/audit").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["webhook_endpoint.rotated", "webhook_endpoint.created"]
    );
    assert!(!audit.to_string().contains(&new) && !audit.to_string().contains(&old));
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_failing_for_three_days_is_disabled_and_announced() {
    let app = app(Db::Sqlite).await.unwrap();
    let (r, addr) = Receiver::spawn().await;
    let (failing, _) = app
        .endpoint(format!("http://{addr}/down"), json!(["*"]))
        .await;
    let (_, secret) = app
        .endpoint(
            format!("http://{addr}/ops"),
            json!(["webhook_endpoint.disabled"]),
        )
        .await;
    let state = app.server.state().clone();
    notify::enqueue(
        &state,
        "credits.purchased",
        Some("c1"),
        json!({}),
        "d1".into(),
    )
    .await
    .unwrap();
    let path = format!("/v1/webhook-endpoints/{failing}/deliveries");
    for attempts in 1..=2 {
        for _ in 0..100 {
            if app.get(&path).await.1["data"][0]["attempts"] == attempts {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(app.get(&path).await.1["data"][0]["attempts"], attempts);
        state.clock.advance(chrono::Duration::days(3));
    }
    let got = r.wait_for("the notice", |g| !g.is_empty()).await;
    assert_eq!(got.len(), 1);
    let e = got[0].event();
    assert_eq!(e["type"], "webhook_endpoint.disabled");
    assert_eq!(e["data"]["object"]["id"], failing.as_str());
    assert_eq!(verify(&got[0], &secret), Ok(()));
    let (_, b) = app.get(&format!("/v1/webhook-endpoints/{failing}")).await;
    assert_eq!(b["status"], "disabled");
    assert_eq!(
        state
            .metrics
            .value("tally_webhook_endpoints_disabled_total"),
        Some(1.0)
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_are_validated() {
    let app = app(Db::Sqlite).await.unwrap();
    for (body, code) in [
        (
            json!({"url": "ftp://x", "events": ["*"]}),
            "invalid_webhook_url",
        ),
        (
            json!({"url": "not a url", "events": ["*"]}),
            "invalid_webhook_url",
        ),
        (
            json!({"url": "http://x", "events": []}),
            "invalid_webhook_events",
        ),
        (
            json!({"url": "http://x", "events": ["nope"]}),
            "invalid_webhook_events",
        ),
    ] {
        let (s, b) = app.post("/v1/webhook-endpoints", body).await;
        assert_eq!(s, RStatus::BAD_REQUEST, "{b}");
        assert_eq!(b["error"]["code"], code);
    }
    let (id, _) = app
        .endpoint("https://example.com/h".into(), json!(["credits.low"]))
        .await;
    let (_, b) = app.get("/v1/webhook-endpoints").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert!(b["data"][0].get("secret").is_none());
    let (s, _) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhook-endpoints/{id}"),
            json!(null),
        )
        .await;
    assert_eq!(s, RStatus::NO_CONTENT);
    let (s, b) = app.get(&format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(s, RStatus::NOT_FOUND, "{b}");
    app.server.shutdown().await.unwrap();
}

/// Two processes sharing one PostgreSQL database deliver each notification once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_postgres_deliver_each_notification_once() {
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let config = |c: &mut tally_server::Config| {
        c.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/notify.toml").unwrap());
    };
    let a = common::app_on_url(url.clone(), None, config).await;
    let b = common::app_on_url(url, None, config).await;
    let (r, addr) = Receiver::spawn().await;
    a.endpoint(format!("http://{addr}/hooks"), json!(["*"]))
        .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let state = if i % 2 == 0 {
            a.server.state()
        } else {
            b.server.state()
        }
        .clone();
        tasks.push(tokio::spawn(async move {
            notify::enqueue(
                &state,
                "credits.purchased",
                Some(&format!("c{}", i % 20)),
                json!({"n": i}),
                format!("two:{i}"),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let got = r.wait_for("200", |g| g.len() >= 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = r.got();
    assert_eq!(got_now.len(), 200, "each once");
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|g| g.event()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 200);
    // Per customer in enqueue order (n ascends within a customer only if enqueued in order;
    // here concurrently, so compare with the outbox's order instead).
    let outbox = a
        .server
        .state()
        .store
        .list_notifications(tally_store::NotificationFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for n in outbox {
        expected
            .entry(n.customer_id.unwrap())
            .or_default()
            .push(n.id);
    }
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for g in &got {
        let e = g.event();
        seen.entry(e["customer"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, expected);
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}

/// Delivery throughput to a local receiver on SQLite (a measurement, not a check: run with
/// `cargo test -p tally-server --test webhooks throughput -- --ignored --nocapture`). 5,000
/// notifications of 100 customers are enqueued while the receiver is down, then delivered once it
/// is back; the time is from the receiver coming back to the last delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn throughput() {
    let app = app(Db::Sqlite).await.unwrap();
    let (r, addr) = Receiver::spawn().await;
    app.endpoint(format!("http://{addr}/hooks"), json!(["*"]))
        .await;
    let state = app.server.state().clone();
    r.down.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for t in 0..10 {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                let n = t * 500 + i;
                notify::enqueue(
                    &state,
                    "credits.purchased",
                    Some(&format!("c{}", n % 100)),
                    json!({"n": n}),
                    format!("bench:{n}"),
                )
                .await
                .unwrap();
            }
        }));
    }
    let start = std::time::Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let enqueued = start.elapsed();
    // Past every first retry.
    state.clock.advance(chrono::Duration::hours(1));
    r.down.store(false, Ordering::SeqCst);
    let start = std::time::Instant::now();
    for _ in 0..12_000 {
        if r.got.lock().unwrap().len() >= 5000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    assert_eq!(r.got().len(), 5000);
    eprintln!(
        "enqueued 5000 in {enqueued:?} ({:.0}/s); delivered 5000 in {took:?} ({:.0}/s)",
        5000.0 / enqueued.as_secs_f64(),
        5000.0 / took.as_secs_f64()
    );
    app.server.shutdown().await.unwrap();
}

/// `/metrics` passes `promtool check metrics` (with the outbox lag and delivery counters in it),
/// and the alert rules pass `promtool check rules` and their unit tests. Needs promtool
/// (`scripts/test.sh` installs Debian's `prometheus` package); skipped without it outside CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_alert_rules_pass_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "promtool is missing: scripts/test.sh installs it"
        );
        return;
    }
    let app = app(Db::Sqlite).await.unwrap();
    let (r, addr) = Receiver::spawn().await;
    app.endpoint(format!("http://{addr}/hooks"), json!(["*"]))
        .await;
    let state = app.server.state().clone();
    notify::enqueue(
        &state,
        "credits.purchased",
        Some("c1"),
        json!({}),
        "m1".into(),
    )
    .await
    .unwrap();
    r.wait_for("one", |g| g.len() == 1).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tally_webhook_deliveries_total{outcome=\"succeeded\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("tally_outbox_lag_seconds 0\n"), "{text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.server.shutdown().await.unwrap();
}

/// Every metric the alert rules and the dashboard use is documented in docs/metrics.md (where the
/// Stripe integration finds the names it must export).
#[test]
fn alerts_and_dashboard_use_documented_metrics() {
    let docs = include_str!("../../../docs/metrics.md");
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let b = text.as_bytes();
        let mut i = 0;
        while let Some(at) = text[i..].find("tally_") {
            let start = i + at;
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
                end += 1;
            }
            let name = text[start..end]
                .trim_end_matches("_bucket")
                .trim_end_matches('_')
                .to_owned();
            out.insert(name);
            i = end;
        }
        out
    };
    let documented = names(docs);
    let used: std::collections::BTreeSet<String> =
        names(include_str!("../../../deploy/prometheus/alerts.yml"))
            .into_iter()
            .chain(names(include_str!("../../../deploy/grafana/tally.json")))
            .chain(names(include_str!(
                "../../../deploy/prometheus/alerts_test.yml"
            )))
            .collect();
    let missing: Vec<&String> = used.difference(&documented).collect();
    assert!(missing.is_empty(), "undocumented metrics: {missing:?}");
    assert!(used.len() >= 15, "{used:?}");
}
