//! Automatic top-ups with the real server, Stripe's simulator (which delivers its webhooks to
//! Tally) and both backends: 200 concurrent consumers draining a balance are topped up exactly as
//! often as needed, never past the monthly cap and never two at once; a declining card backs off,
//! notifies and stops after exactly 3 declines until the card changes; Stripe's 429/500/timeouts
//! on the charge still make one charge per top-up.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{app_on, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CATALOG: &str = r#"
[catalog]
name = "Overage"
currency = "usd"
free_plan = "free"

[plans.free]
name = "Free"

[credit_packs.pack_100]
name = "100 credits"
credits = 100
price = { amount = "10.00", lookup_key = "overage_pack_100" }
"#;

const SK: &str = "sk_test_topups";
const SECRET: &str = "whsec_topups_test";

struct World {
    app: App,
    sim: stripe_sim::SimHandle,
    http: reqwest::Client,
}

async fn world(db: Db, stripe_timeout: Duration) -> Option<World> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let app = app_on(db, |c| {
        c.catalog = Arc::new(tally_server::config::parse_catalog(CATALOG, "overage.toml").unwrap());
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.timeout = stripe_timeout;
        c.stripe_webhook_secrets = vec![SECRET.into()];
    })
    .await?;
    // Stripe delivers every event to Tally's endpoint, signed with Tally's secret.
    let url = app.url("/webhooks/stripe");
    sim.with(|s| {
        let seq = s.w.next_seq();
        s.w.webhook_endpoints.insert(
            "we_topups".into(),
            stripe_sim::state::WebhookEndpoint {
                id: "we_topups".into(),
                seq,
                created: chrono::Utc::now().timestamp(),
                url,
                enabled_events: vec!["*".into()],
                secret: SECRET.into(),
                status: "enabled".into(),
                description: None,
                metadata: Default::default(),
                api_version: None,
            },
        );
    })
    .unwrap();
    Some(World {
        app,
        sim,
        http: reqwest::Client::new(),
    })
}

impl World {
    async fn sim_post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(SK)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Customer `id` in Tally with `credits`, linked to a Stripe customer whose default card is
    /// `card`; returns the Stripe customer id.
    async fn customer(&self, id: &str, credits: u32, card: &str) -> String {
        let (s, b) = self
            .app
            .put(&format!("/v1/customers/{id}"), json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let cus = self
            .sim_post(
                "/v1/customers",
                &[
                    ("metadata[tally_customer_id]", id),
                    ("payment_method", card),
                    ("invoice_settings[default_payment_method]", card),
                ],
            )
            .await;
        let cus = cus["id"].as_str().unwrap().to_owned();
        let state = self.app.server.state();
        let now = state.clock.now();
        state.store.claim_stripe_customer(id, now).await.unwrap();
        state
            .store
            .set_stripe_customer(id, &cus, now)
            .await
            .unwrap();
        let (s, b) = self
            .app
            .post(
                &format!("/v1/customers/{id}/credits/grants"),
                json!({"amount": credits, "reason": "seed", "idempotency_key": "seed"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        cus
    }

    async fn settings(&self, id: &str, threshold: u32, max_per_month: u32) -> Value {
        let (s, b) = self
            .app
            .put(
                &format!("/v1/customers/{id}/auto-top-up"),
                json!({"threshold": threshold, "pack": "pack_100", "max_per_month": max_per_month}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b
    }

    async fn consume(&self, id: &str, amount: u32, key: &str) -> (StatusCode, Value) {
        self.app
            .post(
                &format!("/v1/customers/{id}/credits/consume"),
                json!({"amount": amount, "idempotency_key": key}),
            )
            .await
    }

    async fn balance(&self, id: &str) -> String {
        let (s, b) = self.app.get(&format!("/v1/customers/{id}/credits")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().unwrap().to_owned()
    }

    /// The top-up payment intents Stripe holds for a Stripe customer: (status, created).
    fn intents(&self, cus: &str) -> Vec<String> {
        self.sim
            .with(|s| {
                let mut v: Vec<_> =
                    s.w.payment_intents
                        .values()
                        .filter(|p| p.customer.as_deref() == Some(cus))
                        .filter(|p| p.metadata.contains_key("tally_topup_id"))
                        .map(|p| (p.seq, p.status.clone()))
                        .collect();
                v.sort();
                v.into_iter().map(|(_, s)| s).collect()
            })
            .unwrap()
    }

    /// Tally's top-up rows, oldest first.
    async fn topups(&self, id: &str) -> Vec<tally_store::TopupRecord> {
        let mut rows = self
            .app
            .server
            .state()
            .store
            .topups_of_customer(id, 1000)
            .await
            .unwrap();
        rows.reverse();
        rows
    }

    /// Waits until no top-up is pending and `n` top-ups exist, then a little longer to see that
    /// nothing more comes.
    async fn settled(&self, id: &str, n: usize) -> Vec<tally_store::TopupRecord> {
        let start = Instant::now();
        loop {
            let rows = self.topups(id).await;
            if rows.len() >= n && rows.iter().all(|r| r.state != "pending") {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let again = self.topups(id).await;
                if again == rows {
                    return rows;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "top-ups never settled: {rows:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn notifications(&self, id: &str, kind: &str) -> Vec<Value> {
        self.app
            .server
            .state()
            .store
            .list_notifications(tally_store::NotificationFilter {
                customer_id: Some(id.into()),
                kind: Some(kind.into()),
                after_seq: None,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.payload)
            .collect()
    }

    fn shift(&self, by: chrono::Duration) {
        self.app.server.state().clock.shift(by);
    }

    async fn fault(&self, kind: &str, count: u32) {
        let body = json!({"path": "/v1/payment_intents", "method": "POST", "kind": kind,
            "count": count, "hang_ms": 4000});
        let r = self
            .http
            .post(format!("{}/_sim/faults", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
}

/// 200 consumers take 2 credits each at once from 1,000 credits, with a threshold of 950 and a
/// pack of 100: the balance stays below the threshold until the cap (3) is spent, so exactly 3
/// charges, and 1,000 − 400 + 300 = 900 left. With a cap of 10 the balance is back above 950
/// after the 4th (1,000 − 400 + 400), so exactly 4.
async fn concurrent_consumers_are_topped_up_exactly_within_the_cap(db: Db) {
    let Some(w) = world(db, Duration::from_secs(30)).await else {
        return;
    };
    for (id, cap, charges, left) in [("capped", 3, 3, "900"), ("roomy", 10, 4, "1000")] {
        let cus = w.customer(id, 1000, "pm_card_visa").await;
        let b = w.settings(id, 950, cap).await;
        assert_eq!(b["status"], "active", "{b}");
        assert_eq!(b["used_this_month"], 0, "{b}");
        let w = &w;
        let calls = (0..200).map(|i| async move { w.consume(id, 2, &format!("k{i}")).await });
        // Meanwhile, Tally's rows never show two top-ups in flight.
        let done = std::sync::atomic::AtomicBool::new(false);
        let watch = async {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let rows = w.topups(id).await;
                most = most.max(rows.iter().filter(|r| r.state == "pending").count());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        };
        let consume = async {
            let answers = futures_util::future::join_all(calls).await;
            w.settled(id, charges).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            answers
        };
        let (answers, most_in_flight) = tokio::join!(consume, watch);
        assert_eq!(most_in_flight, 1);
        for (s, b) in answers {
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let rows = w.settled(id, charges).await;
        assert_eq!(rows.len(), charges, "{rows:#?}");
        assert!(rows.iter().all(|r| r.state == "succeeded"), "{rows:#?}");
        assert_eq!(w.intents(&cus), vec!["succeeded"; charges]);
        assert_eq!(w.balance(id).await, left);
        assert_eq!(w.notifications(id, "topup.succeeded").await.len(), charges);
        let (s, b) = w.app.get(&format!("/v1/customers/{id}/auto-top-up")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["used_this_month"], charges, "{b}");
        // Each charge is a credit-pack payment in the history.
        let (_, t) = w.app.get(&format!("/v1/customers/{id}/transactions")).await;
        let paid: Vec<&Value> = t["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "credit_pack" && t["status"] == "succeeded")
            .collect();
        assert_eq!(paid.len(), charges, "{t}");
        assert!(paid.iter().all(|t| t["amount"] == 1000), "{t}");
    }
    let metrics = w
        .http
        .get(w.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tally_topups_total{outcome=\"succeeded\"} 7"),
        "{metrics}"
    );
}

/// A card that declines (0341): each decline notifies and backs off 1 h, then 2 h; the third
/// stops top-ups — no more charges however long the customer keeps consuming — until a new card
/// is saved in Stripe, when the top-up goes through at once.
async fn a_declining_card_backs_off_and_stops_after_three_until_the_card_changes(db: Db) {
    let Some(w) = world(db, Duration::from_secs(30)).await else {
        return;
    };
    let cus = w.customer("c1", 10, "pm_card_chargeCustomerFail").await;
    w.settings("c1", 50, 10).await;
    // Already below the threshold: the first top-up is requested by the settings themselves.
    let rows = w.settled("c1", 1).await;
    assert_eq!(rows[0].state, "failed");
    assert_eq!(rows[0].decline_code.as_deref(), Some("generic_decline"));
    let (_, b) = w.app.get("/v1/customers/c1/auto-top-up").await;
    assert_eq!(b["status"], "backing_off", "{b}");
    assert_eq!(b["consecutive_failures"], 1, "{b}");
    // Backing off: consumption asks, nothing is charged.
    assert_eq!(w.consume("c1", 1, "a").await.0, StatusCode::OK);
    w.shift(chrono::Duration::minutes(59));
    assert_eq!(w.consume("c1", 1, "b").await.0, StatusCode::OK);
    assert_eq!(w.settled("c1", 1).await.len(), 1);
    // The hour is over: the worker asks again by itself.
    w.shift(chrono::Duration::minutes(1));
    let rows = w.settled("c1", 2).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].state, "failed");
    // The second decline waits 2 h.
    w.shift(chrono::Duration::minutes(119));
    assert_eq!(w.consume("c1", 1, "c").await.0, StatusCode::OK);
    assert_eq!(w.settled("c1", 2).await.len(), 2);
    w.shift(chrono::Duration::minutes(1));
    let rows = w.settled("c1", 3).await;
    assert_eq!(rows.len(), 3);
    let (_, b) = w.app.get("/v1/customers/c1/auto-top-up").await;
    assert_eq!(b["status"], "stopped", "{b}");
    assert_eq!(b["consecutive_failures"], 3, "{b}");
    // The breaker is open: days later, consumption still charges nothing.
    w.shift(chrono::Duration::days(3));
    assert_eq!(w.consume("c1", 1, "d").await.0, StatusCode::OK);
    assert_eq!(w.settled("c1", 3).await.len(), 3);
    assert_eq!(w.intents(&cus), vec!["requires_payment_method"; 3]);
    let failed = w.notifications("c1", "topup.failed").await;
    assert_eq!(failed.len(), 3, "{failed:#?}");
    for (i, n) in failed.iter().enumerate() {
        assert_eq!(n["decline_code"], "generic_decline", "{n}");
        assert_eq!(n["consecutive_failures"], i + 1, "{n}");
        assert_eq!(n["stopped"], i == 2, "{n}");
        assert_eq!(n["amount"], 1000, "{n}");
    }
    assert_eq!(w.balance("c1").await, "6");
    // A new card saved as the default in Stripe: top-ups resume at once.
    w.sim_post(
        &format!("/v1/customers/{cus}"),
        &[
            ("payment_method", "pm_card_visa"),
            ("invoice_settings[default_payment_method]", "pm_card_visa"),
        ],
    )
    .await;
    let rows = w.settled("c1", 4).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3].state, "succeeded");
    assert_eq!(
        w.intents(&cus),
        vec![
            "requires_payment_method",
            "requires_payment_method",
            "requires_payment_method",
            "succeeded"
        ]
    );
    assert_eq!(w.balance("c1").await, "106");
    assert_eq!(w.notifications("c1", "topup.succeeded").await.len(), 1);
    let (_, b) = w.app.get("/v1/customers/c1/auto-top-up").await;
    assert_eq!(b["status"], "active", "{b}");
    assert_eq!(b["consecutive_failures"], 0, "{b}");
}

/// Stripe answers the charge with a 500, a 429 and a timeout whose request Stripe carries out
/// after Tally gave up: the next attempt uses the same key and gets that charge. Then three 500s
/// in a row: the next attempt looks the charge up by the top-up's id and, finding none, charges
/// with the next key. Each top-up is exactly one charge, its credits granted once.
async fn stripe_faults_on_the_charge_still_charge_once(db: Db) {
    let Some(w) = world(db, Duration::from_secs(2)).await else {
        return;
    };
    for (id, faults, attempts, min_posts) in [
        ("c1", &[("500", 1), ("429", 1), ("timeout", 1)][..], 0, 3),
        ("c2", &[("500", 3)][..], 1, 4),
    ] {
        let cus = w.customer(id, 100, "pm_card_visa").await;
        let posts = || {
            w.sim
                .with(|s| {
                    s.faults
                        .log
                        .iter()
                        .filter(|l| *l == "POST /v1/payment_intents")
                        .count()
                })
                .unwrap()
        };
        let before = posts();
        for (kind, count) in faults {
            w.fault(kind, *count).await;
        }
        w.settings(id, 50, 5).await;
        assert_eq!(w.consume(id, 60, "big").await.0, StatusCode::OK);
        // The worker waits before its next attempt; let Tally's time pass.
        let start = Instant::now();
        loop {
            let rows = w.topups(id).await;
            assert_eq!(rows.len(), 1, "{rows:#?}");
            if rows[0].state != "pending" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{rows:#?}");
            w.shift(chrono::Duration::seconds(10));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rows = w.settled(id, 1).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, "succeeded", "{rows:#?}");
        assert_eq!(rows[0].attempts, attempts, "{rows:#?}");
        assert!(posts() - before >= min_posts, "the faults were not all hit");
        assert_eq!(w.intents(&cus), vec!["succeeded"]);
        assert_eq!(w.balance(id).await, "140");
        let (_, t) = w.app.get(&format!("/v1/customers/{id}/transactions")).await;
        let paid = t["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "credit_pack")
            .count();
        assert_eq!(paid, 1, "{t}");
    }
}

/// Settings are validated and audited; turning them off stops top-ups.
async fn settings_are_validated_and_can_be_removed(db: Db) {
    let Some(w) = world(db, Duration::from_secs(30)).await else {
        return;
    };
    w.customer("c1", 100, "pm_card_visa").await;
    let put = |body: Value| {
        let w = &w;
        async move { w.app.put("/v1/customers/c1/auto-top-up", body).await }
    };
    let (s, b) = put(json!({"threshold": 0, "pack": "pack_100", "max_per_month": 3})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "invalid_amount");
    let (s, b) = put(json!({"threshold": 10, "pack": "nope", "max_per_month": 3})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "unknown_pack");
    let (s, b) = put(json!({"threshold": 10, "pack": "pack_100", "max_per_month": 0})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "invalid_max_per_month");
    let (s, b) = put(json!({"threshold": "12.5", "pack": "pack_100", "max_per_month": 2})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["threshold"], "12.5");
    let (s, b) = put(json!({"threshold": 20, "pack": "pack_100", "max_per_month": 2})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["threshold"], "20");
    let (s, _) = w
        .app
        .send(
            reqwest::Method::DELETE,
            "/v1/customers/c1/auto-top-up",
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = w.app.get("/v1/customers/c1/auto-top-up").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "auto_top_up_not_found");
    // Off: a consumption far below the old threshold charges nothing.
    assert_eq!(w.consume("c1", 95, "k").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(w.topups("c1").await.is_empty());
    let (_, a) = w.app.get("/v1/customers/c1/audit").await;
    let actions: Vec<&str> = a["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("auto_top_up"))
        .collect();
    assert_eq!(
        actions,
        vec![
            "auto_top_up.deleted",
            "auto_top_up.updated",
            "auto_top_up.updated"
        ]
    );
}

on_both_backends!(
    concurrent_consumers_are_topped_up_exactly_within_the_cap,
    a_declining_card_backs_off_and_stops_after_three_until_the_card_changes,
    stripe_faults_on_the_charge_still_charge_once,
    settings_are_validated_and_can_be_removed,
);
