//! Refunds through Stripe (the simulator) with the real server, on SQLite and PostgreSQL: a
//! partial refund of a credit pack takes back its credits in proportion, never below zero, with
//! the shortfall recorded; the refund's `charge.refunded` changes nothing more; a refund made in
//! Stripe's dashboard is mirrored the same way, once; transactions show both.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{app_on, App, Db};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const CATALOG: &str = r#"
[catalog]
name = "Shop"
currency = "usd"
free_plan = "free"

[metrics.calls]
name = "Calls"
unit = "call"
aggregation = "count"
kind = "metered"
credit_cost = 1

[plans.free]
name = "Free"

[credit_packs.credits_1000]
name = "1,000 credits"
credits = 1000
price = { amount = "10.00", lookup_key = "shop_credits_1000" }
"#;

const SK: &str = "sk_test_refunds";
const SECRET: &str = "whsec_refunds_test";

struct World {
    app: App,
    sim: stripe_sim::SimHandle,
    http: reqwest::Client,
    stripe_customer: String,
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

    async fn balance(&self) -> String {
        let (s, b) = self.app.get("/v1/customers/c1/credits").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().unwrap().to_owned()
    }

    async fn refunds_in_history(&self) -> Vec<i64> {
        let (s, b) = self.app.get("/v1/customers/c1/transactions").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let mut v: Vec<i64> = b["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "refund")
            .map(|t| t["amount"].as_i64().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Delivers the simulator's `charge.refunded` events, signed now, and waits for the inbox.
    async fn deliver_refunds(&self) {
        let r = self
            .http
            .get(format!(
                "{}/v1/events?type=charge.refunded",
                self.sim.base_url()
            ))
            .bearer_auth(SK)
            .send()
            .await
            .unwrap();
        let list: Value = r.json().await.unwrap();
        let t = chrono::Utc::now().timestamp();
        for ev in list["data"].as_array().unwrap() {
            let body = serde_json::to_vec(ev).unwrap();
            let r = self
                .http
                .post(self.app.url("/webhooks/stripe"))
                .header(
                    "Stripe-Signature",
                    stripe_sim::webhooks::signature_header(SECRET, t, &body),
                )
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let store = &self.app.server.state().store;
        for _ in 0..200 {
            let events = store
                .inbox_list(tally_store::InboxFilter {
                    failed: false,
                    since: None,
                    limit: 1000,
                })
                .await
                .unwrap();
            if events.iter().all(|e| e.status != "pending") {
                for e in &events {
                    assert_ne!(e.status, "parked", "{e:?}");
                }
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the inbox did not drain");
    }
}

/// A customer `c1` with a Stripe customer, a paid credit pack (payment intent with
/// `metadata[tally_pack]`, 10.00 USD) whose 1,000 credits were granted, and 700 of them consumed.
async fn world(db: Db) -> Option<(World, String, String)> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let app = app_on(db, |c| {
        c.catalog = Arc::new(tally_server::config::parse_catalog(CATALOG, "shop.toml").unwrap());
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe_webhook_secrets = vec![SECRET.into()];
    })
    .await?;
    let mut w = World {
        app,
        sim,
        http: reqwest::Client::new(),
        stripe_customer: String::new(),
    };
    let (s, b) = w
        .app
        .put("/v1/customers/c1", json!({"email": "c1@example.com"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let cus = w
        .sim_post(
            "/v1/customers",
            &[
                ("email", "c1@example.com"),
                ("metadata[tally_customer_id]", "c1"),
            ],
        )
        .await;
    w.stripe_customer = cus["id"].as_str().unwrap().to_owned();
    let store = &w.app.server.state().store;
    let now = w.app.server.state().clock.now();
    store.claim_stripe_customer("c1", now).await.unwrap();
    store
        .set_stripe_customer("c1", &w.stripe_customer, now)
        .await
        .unwrap();
    let pi = w
        .sim_post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("customer", &w.stripe_customer),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("metadata[tally_pack]", "credits_1000"),
            ],
        )
        .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");
    let pi = pi["id"].as_str().unwrap().to_owned();
    // What the webhook of a completed pack checkout leaves: the grant and the transaction.
    let state = w.app.server.state();
    let now = state.clock.now();
    tally_server::service::credits::grant_purchase(
        state,
        "c1",
        Decimal::from(1000),
        "credit pack credits_1000 bought".into(),
        "stripe_checkout:cs_test".into(),
        now,
    )
    .await
    .unwrap();
    state
        .store
        .record_transaction(tally_store::NewTransaction {
            id: "txn_pack".into(),
            key: "checkout:cs_test".into(),
            customer_id: "c1".into(),
            kind: "credit_pack".into(),
            status: "succeeded".into(),
            amount: 1000,
            currency: "usd".into(),
            description: Some("1,000 credits".into()),
            stripe_invoice: None,
            stripe_payment_intent: Some(pi.clone()),
            stripe_charge: None,
            stripe_checkout_session: Some("cs_test".into()),
            stripe_subscription: None,
            occurred_at: now,
            created_at: now,
        })
        .await
        .unwrap();
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/credits/consume",
            json!({"amount": "700", "idempotency_key": "use-700"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(w.balance().await, "300");
    Some((w, pi, "txn_pack".into()))
}

async fn a_refunded_pack_takes_back_its_credits_once(db: Db) {
    let Some((w, pi, txn)) = world(db).await else {
        return;
    };
    // Refusals first: nothing is refunded.
    for (body, status, code) in [
        (
            json!({"payment": txn, "reason": "because"}),
            400,
            "invalid_reason",
        ),
        (
            json!({"payment": txn, "amount": 1001, "reason": "duplicate"}),
            400,
            "invalid_refund_amount",
        ),
        (
            json!({"payment": txn, "amount": 0, "reason": "duplicate"}),
            400,
            "invalid_refund_amount",
        ),
        (
            json!({"payment": "txn_nope", "reason": "duplicate"}),
            404,
            "payment_not_found",
        ),
    ] {
        let (s, b) = w.app.post("/v1/customers/c1/refunds", body).await;
        assert_eq!(s.as_u16(), status, "{b}");
        assert_eq!(b["error"]["code"], code, "{b}");
    }
    // Half the pack refunded: 500 credits due, 300 left to take, 200 short.
    let (s, r) = w
        .app
        .post(
            "/v1/customers/c1/refunds",
            json!({"payment": txn, "amount": 500, "reason": "requested_by_customer"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["amount"], 500);
    assert_eq!(r["currency"], "usd");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["source"], "api");
    assert_eq!(r["stripe_payment_intent"], pi.as_str());
    assert_eq!(r["credits_taken_back"], "300");
    assert_eq!(r["credits_shortfall"], "200");
    assert!(r["request_id"].as_str().unwrap().starts_with("req_"));
    let re = r["stripe_refund"].as_str().unwrap().to_owned();
    let in_stripe = w
        .sim
        .with(move |s| {
            let x = &s.w.refunds[&re];
            (x.amount, x.metadata.get("tally_customer_id").cloned())
        })
        .unwrap();
    assert_eq!(in_stripe, (500, Some("c1".to_owned())));
    assert_eq!(w.balance().await, "0");
    assert_eq!(w.refunds_in_history().await, vec![500]);
    // More than what is left (500) is refused.
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/refunds",
            json!({"payment": txn, "amount": 501, "reason": "duplicate"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // The refund's own charge.refunded (twice) changes nothing more.
    w.deliver_refunds().await;
    w.deliver_refunds().await;
    assert_eq!(w.refunds_in_history().await, vec![500]);
    assert_eq!(w.balance().await, "0");

    // A refund made in Stripe's dashboard: 300 more, 300 credits due, none left to take.
    w.sim_post("/v1/refunds", &[("payment_intent", &pi), ("amount", "300")])
        .await;
    // Credits bought since are not taken below what the dashboard refund is due: grant 50.
    let state = w.app.server.state();
    tally_server::service::credits::grant_purchase(
        state,
        "c1",
        Decimal::from(50),
        "another pack".into(),
        "stripe_checkout:cs_other".into(),
        state.clock.now(),
    )
    .await
    .unwrap();
    w.deliver_refunds().await;
    w.deliver_refunds().await;
    assert_eq!(w.refunds_in_history().await, vec![300, 500]);
    assert_eq!(w.balance().await, "0");
    let rows = state.store.refunds_of_payment_intent(&pi).await.unwrap();
    assert_eq!(rows.len(), 2);
    let dash = rows.iter().find(|r| r.source == "stripe").unwrap();
    assert_eq!(dash.amount, 300);
    assert_eq!(dash.payment.as_deref(), Some("txn_pack"));
    assert_eq!(dash.credits_taken.as_deref(), Some("50"));
    assert_eq!(dash.credits_shortfall.as_deref(), Some("250"));
    // What is left to refund through Tally: 1000 − 500 − 300.
    let (s, r) = w
        .app
        .post(
            "/v1/customers/c1/refunds",
            json!({"payment": txn, "reason": "duplicate"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["amount"], 200);
    w.deliver_refunds().await;

    // Reconciliation of the month: the pack's charge, its refunds and the transactions agree.
    let month = tally_server::service::reconcile::month_of(state.clock.now());
    let report = tally_server::service::reconcile::reconcile(state, &month)
        .await
        .unwrap();
    assert_eq!(report.discrepancies, vec![], "{report:?}");
    assert_eq!(report.charges_checked, 1);
    let rev = serde_json::to_value(&report.revenue).unwrap();
    assert_eq!(
        rev,
        json!([{"currency": "usd", "invoiced": 0, "collected": 0, "refunded": 1000, "outstanding": 0}])
    );
    // A refund in Stripe Tally never heard of, and a pack Tally recorded that Stripe lacks.
    let pi2 = w
        .sim_post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("customer", &w.stripe_customer),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    w.sim_post(
        "/v1/refunds",
        &[
            ("payment_intent", pi2["id"].as_str().unwrap()),
            ("amount", "100"),
        ],
    )
    .await;
    let now = state.clock.now();
    state
        .store
        .record_transaction(tally_store::NewTransaction {
            id: "txn_ghost".into(),
            key: "checkout:cs_ghost".into(),
            customer_id: "c1".into(),
            kind: "credit_pack".into(),
            status: "succeeded".into(),
            amount: 1000,
            currency: "usd".into(),
            description: None,
            stripe_invoice: None,
            stripe_payment_intent: Some("pi_ghost".into()),
            stripe_charge: None,
            stripe_checkout_session: None,
            stripe_subscription: None,
            occurred_at: now,
            created_at: now,
        })
        .await
        .unwrap();
    let report = tally_server::service::reconcile::reconcile(state, &month)
        .await
        .unwrap();
    let mut kinds: Vec<(String, Option<String>, Option<String>)> = report
        .discrepancies
        .iter()
        .map(|x| (x.kind.clone(), x.tally_id.clone(), x.stripe.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("missing_in_stripe".into(), Some("txn_ghost".into()), None),
            ("missing_in_tally".into(), None, Some("refunded 100".into())),
        ],
        "{report:?}"
    );
}

on_both_backends!(a_refunded_pack_takes_back_its_credits_once);
