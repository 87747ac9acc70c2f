//! The checkout, customer and plan-change flows with a fault on every Stripe call Tally makes
//! (the first attempt of each answers 429, 500, or hangs past the client's timeout, in turn) and
//! every webhook delivered three times in reverse order — except every third one, dropped and then
//! read back from Stripe by the backfill — against the same flows run cleanly: the
//! end state is identical, with exactly one Stripe customer, one subscription, one schedule, one
//! test clock and one credit grant. On SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::{app_on, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_store::clock::Clock;
use tally_store::InboxFilter;

const CATALOG: &str = include_str!("../../../catalogs/localboxs.toml");
const SECRET: &str = "whsec_faults_secret";
const SK: &str = "sk_test_faults";
/// Tally's timeout per Stripe attempt; hung requests are held a little longer.
const TIMEOUT: Duration = Duration::from_millis(1000);
const HANG_MS: u64 = 1200;

struct World {
    app: App,
    sim: stripe_sim::SimHandle,
    browser: reqwest::Client,
    delivered: BTreeSet<String>,
    /// Events never delivered, read back by the backfill.
    dropped: usize,
}

async fn world(db: Db) -> Option<World> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let catalog = parse_catalog(CATALOG, "localboxs.toml").unwrap();
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&client, &catalog, true, Utc::now().timestamp())
        .await
        .unwrap();
    let app = app_on(db, |c| {
        c.catalog = Arc::new(catalog);
        c.clock = Clock::frozen(Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap());
        c.stripe_webhook_secrets = vec![SECRET.into()];
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.test_clocks = true;
        c.stripe.timeout = TIMEOUT;
        c.stripe.success_url = Some("https://localboxs.test/ok".into());
        c.stripe.cancel_url = Some("https://localboxs.test/pricing".into());
    })
    .await?;
    Some(World {
        app,
        sim,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        delivered: BTreeSet::new(),
        dropped: 0,
    })
}

impl World {
    /// Faults the first attempt of each of the next `n` Stripe calls: 429, 500 and a hang past
    /// Tally's timeout in turn (each retry goes through).
    async fn fault_every_call(&self, n: usize) {
        let http = reqwest::Client::new();
        for i in 0..n {
            let kind = ["429", "500", "timeout"][i % 3];
            let body = json!({"path": "/v1/", "kind": kind, "count": 1,
                "after": if i == 0 { 0 } else { 1 }, "hang_ms": HANG_MS});
            let r = http
                .post(format!("{}/_sim/faults", self.sim.base_url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    }

    /// Delivers the events Stripe made since the last call, signed as Stripe signs them: once
    /// each in order, or (`faulty`) every third one dropped and the others three times each in
    /// reverse order, then the dropped ones read back from Stripe's `GET /v1/events` by the
    /// backfill (what `tally webhooks backfill` and the clock advance run).
    async fn deliver(&mut self, faulty: bool) {
        let mut events: Vec<(u64, String, String)> = self
            .sim
            .with(|s| {
                s.w.events
                    .values()
                    .map(|e| (e.seq, e.id.clone(), s.r_event(e).to_string()))
                    .collect()
            })
            .unwrap();
        events.retain(|e| !self.delivered.contains(&e.1));
        events.sort();
        let mut dropped = 0;
        if faulty {
            let mut n = 0;
            events.retain(|e| {
                n += 1;
                let drop = n % 3 == 1;
                if drop {
                    self.delivered.insert(e.1.clone());
                    dropped += 1;
                }
                !drop
            });
            events.reverse();
        }
        let copies = if faulty { 3 } else { 1 };
        for (_, id, body) in &events {
            for _ in 0..copies {
                let t = Utc::now().timestamp();
                let r = self
                    .app
                    .http
                    .post(self.app.url("/webhooks/stripe"))
                    .header("content-type", "application/json")
                    .header(
                        "Stripe-Signature",
                        stripe_sim::webhooks::signature_header(SECRET, t, body.as_bytes()),
                    )
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
            self.delivered.insert(id.clone());
        }
        if dropped > 0 {
            let report = tally_server::service::stripe_events::backfill(
                self.app.server.state(),
                chrono::DateTime::UNIX_EPOCH,
            )
            .await
            .unwrap();
            // Exactly the dropped events were new; everything delivered stored nothing again.
            assert_eq!(report.stored, dropped, "{report:?}");
            self.dropped += dropped;
        }
        self.settle().await;
    }

    async fn settle(&self) {
        let store = &self.app.server.state().store;
        let start = Instant::now();
        loop {
            let all = store
                .inbox_list(InboxFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if all.iter().all(|e| e.status != "pending") {
                let parked: Vec<_> = all
                    .iter()
                    .filter(|e| e.status == "parked")
                    .map(|e| (&e.event_type, &e.last_error))
                    .collect();
                assert!(parked.is_empty(), "{parked:?}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "inbox not settled"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn pay(&self, url: &str) {
        let r = self
            .browser
            .post(url)
            .form(&[
                ("email", "lb1@localboxs.test"),
                ("name", "Lee"),
                ("card_number", "4242424242424242"),
                ("card_expiry", "12 / 34"),
                ("card_cvc", "123"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.app.post(path, body).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        b
    }
}

/// The flows: Pro monthly through Checkout, a 1,000-credit pack, an upgrade to Pro Plus, a
/// downgrade back to Pro at the period end. Returns the end state.
async fn run(db: Db, faulty: bool) -> Option<Value> {
    let mut w = world(db).await?;
    let c = "lb1";
    if faulty {
        w.fault_every_call(400).await;
    }
    let (s, b) = w
        .app
        .put(
            &format!("/v1/customers/{c}"),
            json!({"email": "lb1@localboxs.test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let b = w
        .ok(
            "/v1/checkout-sessions",
            json!({"customer": c, "plan": "pro", "interval": "month"}),
        )
        .await;
    w.pay(b["url"].as_str().unwrap()).await;
    w.deliver(faulty).await;
    let b = w
        .ok(
            "/v1/checkout-sessions",
            json!({"customer": c, "pack": "credits_1000"}),
        )
        .await;
    w.pay(b["url"].as_str().unwrap()).await;
    w.deliver(faulty).await;
    let b = w
        .ok(
            &format!("/v1/customers/{c}/subscription/change"),
            json!({"plan": "pro_plus", "interval": "month"}),
        )
        .await;
    assert_eq!(b["plan"], "pro_plus");
    w.deliver(faulty).await;
    let b = w
        .ok(
            &format!("/v1/customers/{c}/subscription/change"),
            json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(b["pending_change"]["plan"], "pro");
    w.deliver(faulty).await;

    let (_, sub) = w.app.get(&format!("/v1/customers/{c}/subscription")).await;
    let (_, credits) = w
        .app
        .get(&format!("/v1/customers/{c}/credits?limit=100"))
        .await;
    let (_, txns) = w.app.get(&format!("/v1/customers/{c}/transactions")).await;
    let mut txns: Vec<String> = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["kind"], t["status"], t["amount"], t["currency"]]).to_string())
        .collect();
    txns.sort();
    let ledger = credits["ledger"]["data"]
        .as_array()
        .or_else(|| credits["entries"].as_array())
        .cloned()
        .unwrap_or_default();
    let purchases = ledger.iter().filter(|e| e["kind"] == "purchase").count();
    let counts = w
        .sim
        .with(|s| {
            let cus: Vec<String> =
                s.w.customers
                    .values()
                    .filter(|x| x.metadata.get("tally_customer_id").map(String::as_str) == Some(c))
                    .map(|x| x.id.clone())
                    .collect();
            let subs =
                s.w.subscriptions
                    .values()
                    .filter(|x| cus.contains(&x.customer))
                    .count();
            let schedules =
                s.w.subscription_schedules
                    .values()
                    .filter(|x| cus.contains(&x.customer))
                    .count();
            json!({"stripe_customers": cus.len(), "subscriptions": subs,
                "schedules": schedules, "test_clocks": s.w.test_clocks.len()})
        })
        .unwrap();
    let faults_left = w.sim.with(|s| s.faults.http.len()).unwrap();
    if faulty {
        // Every call's first attempt was faulted, and its retry went through.
        let used = 400 - faults_left;
        eprintln!("Stripe calls faulted: {used}");
        assert!(used >= 20, "only {used} calls were faulted");
        eprintln!("webhooks dropped and backfilled: {}", w.dropped);
        assert!(w.dropped >= 4, "only {} webhooks were dropped", w.dropped);
    }
    Some(json!({
        "plan": sub["plan"], "interval": sub["interval"], "status": sub["status"],
        "pending_change": sub["stripe"]["pending_change"],
        "cancel_at_period_end": sub["stripe"]["cancel_at_period_end"],
        "balance": credits["balance"], "purchases": purchases,
        "transactions": txns, "stripe": counts,
    }))
}

async fn faults_and_duplicates_change_nothing(db: Db) {
    let Some(clean) = run(db, false).await else {
        return;
    };
    let faulty = run(db, true).await.unwrap();
    assert_eq!(faulty, clean);
    assert_eq!(
        clean["stripe"],
        json!({"stripe_customers": 1, "subscriptions": 1, "schedules": 1, "test_clocks": 1})
    );
    assert_eq!(clean["purchases"], 1);
    assert_eq!(
        (&clean["plan"], &clean["status"]),
        (&json!("pro_plus"), &json!("active"))
    );
    assert_eq!(clean["pending_change"]["plan"], "pro");
}

on_both_backends!(faults_and_duplicates_change_nothing);
