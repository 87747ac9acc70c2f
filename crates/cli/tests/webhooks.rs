//! The Stripe webhook inbox with the real `tally` binary: two `tally serve` processes on one
//! PostgreSQL database each apply every event once; `kill -9` of the server while webhooks arrive
//! loses no acknowledged event and applies none twice; `tally webhooks list|replay|backfill`.
//! Events come from the Stripe simulator's `GET /v1/events`, posted signed as Stripe signs them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_stripe::model::Metadata;
use tally_stripe::{
    CheckoutMode, Client, CustomerParams, EventFilter, IdempotencyKey, NewCheckoutSession, RawEvent,
};

mod common;

use common::{put, tally, KEY};

const SECRET: &str = "whsec_cli_test_secret";
const STRIPE_KEY: &str = "sk_test_cli";
const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalogs/localboxs.toml");

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tally serve` with Stripe configured against the simulator.
fn serve(db: &str, sim: &str) -> (Child, String) {
    let mut child = tally()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            db,
            "--catalog",
            CATALOG,
        ])
        .env("TALLY_API_KEY", KEY)
        .env("TALLY_LOG", "warn")
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("STRIPE_API_KEY", STRIPE_KEY)
        .env("STRIPE_API_BASE", sim)
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

struct World {
    sim: stripe_sim::SimHandle,
    stripe: Client,
    browser: reqwest::Client,
}

async fn world() -> World {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let stripe =
        Client::new(tally_stripe::Config::new(STRIPE_KEY).with_base_url(sim.base_url())).unwrap();
    let src = std::fs::read_to_string(CATALOG).unwrap();
    let catalog = tally_core::catalog::Catalog::parse(&src, "localboxs.toml").unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    World {
        sim,
        stripe,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl World {
    async fn stripe_customer(&self, tally_id: &str) -> String {
        let mut metadata = Metadata::new();
        metadata.insert("tally_customer_id".into(), tally_id.into());
        self.stripe
            .create_customer(
                &CustomerParams {
                    email: None,
                    name: None,
                    metadata,
                },
                &IdempotencyKey::from_row("customer", tally_id, 0),
            )
            .await
            .unwrap()
            .value
            .id
    }

    /// A paid checkout: `pack` (payment mode) or Pro monthly when `None`. Returns the session id.
    async fn buy(
        &self,
        customer: &str,
        stripe_customer: &str,
        pack: Option<&str>,
        n: u32,
    ) -> String {
        let mut metadata = Metadata::new();
        metadata.insert("tally_customer_id".into(), customer.into());
        let mut sub_meta = Metadata::new();
        let (mode, key) = match pack {
            Some(p) => {
                metadata.insert("tally_pack".into(), p.into());
                (CheckoutMode::Payment, format!("localboxs_{p}"))
            }
            None => {
                sub_meta.insert("tally_customer_id".into(), customer.into());
                (CheckoutMode::Subscription, "localboxs_pro_monthly".into())
            }
        };
        let price = self.stripe.prices_by_lookup_keys(&[key]).await.unwrap()[0]
            .id
            .clone();
        let s = self
            .stripe
            .create_checkout_session(
                &NewCheckoutSession {
                    mode,
                    customer: Some(stripe_customer.into()),
                    line_items: vec![(price, 1)],
                    metered_prices: vec![],
                    success_url: "https://app.example/done".into(),
                    cancel_url: None,
                    client_reference_id: Some(customer.into()),
                    allow_promotion_codes: false,
                    trial_period_days: None,
                    metadata,
                    subscription_metadata: sub_meta,
                    payment_intent_metadata: Default::default(),
                    discounts: Vec::new(),
                    expires_at: None,
                },
                &IdempotencyKey::from_row("checkout", &format!("{customer}-{n}"), 0),
            )
            .await
            .unwrap()
            .value;
        let r = self
            .browser
            .post(s.url.unwrap())
            .form(&[
                ("email", "buyer@example.com"),
                ("name", "Ada Buyer"),
                ("card_number", "4242 4242 4242 4242"),
                ("card_expiry", "12 / 34"),
                ("card_cvc", "123"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        s.id
    }

    /// Every event, oldest first.
    async fn events(&self) -> Vec<RawEvent> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stripe
                .raw_events(&EventFilter {
                    starting_after: after.clone(),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .unwrap()
                .value;
            after = page.data.last().map(|e| e.id.clone());
            out.extend(page.data);
            if !page.has_more {
                break;
            }
        }
        out.reverse();
        out
    }
}

async fn deliver(http: &reqwest::Client, base: &str, e: &RawEvent) -> reqwest::Result<u16> {
    let now = chrono::Utc::now().timestamp();
    let r = http
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header(
            "Stripe-Signature",
            stripe_sim::webhooks::signature_header(SECRET, now, e.body.as_bytes()),
        )
        .body(e.body.clone())
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// `tally webhooks list --json` on `db`.
fn inbox(db: &str) -> Vec<Value> {
    let out = tally()
        .args([
            "webhooks",
            "list",
            "--json",
            "--limit",
            "10000",
            "--database-url",
            db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until nothing in the inbox is pending; returns the inbox.
async fn settle(db: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let rows = inbox(db);
        if rows.iter().all(|e| e["status"] != "pending") {
            return rows;
        }
        // A claim of the killed process holds its event up to 15 s.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Two processes on one PostgreSQL database, every event delivered to both: each event is
/// processed by one of them, once (one attempt), and the pack is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_postgres_apply_each_event_once() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let w = world().await;
    let (a, url_a) = serve(&db, &w.sim.base_url());
    let (b, url_b) = serve(&db, &w.sim.base_url());
    let _servers = Servers(vec![a, b]);
    let http = reqwest::Client::new();
    put(&http, format!("{url_a}/v1/customers/pg1"), json!({})).await;
    let cus = w.stripe_customer("pg1").await;
    w.buy("pg1", &cus, None, 0).await;
    for i in 1..=3 {
        w.buy("pg1", &cus, Some("credits_1000"), i).await;
    }
    let events = w.events().await;
    let mut tasks = Vec::new();
    for e in events.clone() {
        for base in [url_a.clone(), url_b.clone()] {
            let (http, e) = (http.clone(), e.clone());
            tasks.push(tokio::spawn(async move {
                deliver(&http, &base, &e).await.unwrap()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let rows = settle(&db).await;
    assert_eq!(rows.len(), events.len());
    for r in &rows {
        assert_eq!(r["attempts"], 1, "processed once: {r}");
        assert!(r["status"] == "applied" || r["status"] == "ignored", "{r}");
    }
    let credits = get(&http, format!("{url_b}/v1/customers/pg1/credits")).await;
    assert_eq!(credits["balance"], "6000", "3,000 of Pro + 3 × 1,000");
    let txns = get(&http, format!("{url_a}/v1/customers/pg1/transactions")).await;
    let packs = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "credit_pack")
        .count();
    assert_eq!(packs, 3);
    let sub = get(&http, format!("{url_a}/v1/customers/pg1/subscription")).await;
    assert_eq!(
        (sub["plan"].clone(), sub["status"].clone()),
        (json!("pro"), json!("active"))
    );
}

/// `kill -9` of `tally serve` while webhooks arrive: after a restart (or, with `two_processes`,
/// on the other process, which takes over the killed one's claims once they expire), every event
/// that was answered 2xx is applied exactly once (packs granted once each, never twice).
async fn kill_9_while_webhooks_arrive(db: String, two_processes: bool) {
    let w = world().await;
    let (a, url) = serve(&db, &w.sim.base_url());
    let mut servers = Servers(vec![a]);
    let survivor = two_processes.then(|| {
        let (b, url_b) = serve(&db, &w.sim.base_url());
        servers.0.push(b);
        url_b
    });
    let http = reqwest::Client::new();
    put(&http, format!("{url}/v1/customers/k9"), json!({})).await;
    let cus = w.stripe_customer("k9").await;
    let mut sessions = Vec::new();
    for i in 0..8 {
        sessions.push(w.buy("k9", &cus, Some("credits_500"), i).await);
    }
    let events = w.events().await;
    let completed: Vec<RawEvent> = events
        .iter()
        .filter(|e| e.event_type == "checkout.session.completed")
        .cloned()
        .collect();
    assert_eq!(completed.len(), 8);
    // Deliver every event (three times each, as Stripe's retries would) while the server is
    // killed part-way.
    let sender = {
        let (http, url, events) = (http.clone(), url.clone(), events.clone());
        tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            for _ in 0..3 {
                for e in &events {
                    if let Ok(200) = deliver(&http, &url, e).await {
                        acked.insert(e.id.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut child = servers.0.remove(0);
    // SIGKILL: no graceful shutdown.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let acked = sender.await.unwrap();
    let url = match survivor {
        Some(url) => url,
        None => {
            let (b, url) = serve(&db, &w.sim.base_url());
            servers.0.push(b);
            url
        }
    };
    let rows = settle(&db).await;
    if two_processes {
        // The killed process's claims lapse after their time; the survivor then takes them.
        let took = killed.elapsed();
        let limit = tally_server::service::stripe_events::CLAIM + Duration::from_secs(5);
        assert!(took <= limit, "settled {took:?} after the kill");
    }
    let stored: BTreeSet<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        acked.is_subset(&stored),
        "every acknowledged event is stored"
    );
    let txns = get(
        &http,
        format!("{url}/v1/customers/k9/transactions?limit=100"),
    )
    .await;
    let granted: Vec<String> = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "credit_pack")
        .map(|t| t["stripe_checkout_session"].as_str().unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = granted.iter().collect();
    assert_eq!(distinct.len(), granted.len(), "no pack recorded twice");
    let acked_sessions: BTreeSet<String> = completed
        .iter()
        .filter(|e| acked.contains(&e.id))
        .map(|e| {
            let v: Value = serde_json::from_str(&e.body).unwrap();
            v["data"]["object"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for s in &acked_sessions {
        assert!(granted.contains(s), "acknowledged checkout {s} applied");
    }
    let credits = get(&http, format!("{url}/v1/customers/k9/credits")).await;
    let expected = 100 + 500 * granted.len();
    assert_eq!(
        credits["balance"],
        expected.to_string(),
        "one grant per pack"
    );

    // What the kill prevented from being delivered is backfilled; still one grant per pack.
    let out = tally()
        .args([
            "webhooks",
            "backfill",
            "--since",
            "2000-01-01T00:00:00Z",
            "--json",
            "--database-url",
            &db,
        ])
        .env("STRIPE_API_KEY", STRIPE_KEY)
        .env("STRIPE_API_BASE", w.sim.base_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["read"], events.len());
    assert_eq!(report["stored"], events.len() - stored.len());
    let rows = settle(&db).await;
    assert_eq!(rows.len(), events.len());
    let credits = get(&http, format!("{url}/v1/customers/k9/credits")).await;
    assert_eq!(credits["balance"], "4100", "100 free + 8 × 500, each once");

    // Replaying one event, then everything: nothing applied twice.
    let first = &completed[0].id;
    let out = tally()
        .args(["webhooks", "replay", first, "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 event(s) to process again"
    );
    let out = tally()
        .args([
            "webhooks",
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    settle(&db).await;
    let credits = get(&http, format!("{url}/v1/customers/k9/credits")).await;
    assert_eq!(credits["balance"], "4100");
    let out = tally()
        .args(["webhooks", "list", "--failed", "--database-url", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "only the header: nothing failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    kill_9_while_webhooks_arrive(db, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_postgres() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    kill_9_while_webhooks_arrive(db, false).await;
}

/// Two processes on PostgreSQL, one killed while webhooks arrive: the other finishes its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_of_two_processes_on_postgres() {
    let Some(db) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    kill_9_while_webhooks_arrive(db, true).await;
}
