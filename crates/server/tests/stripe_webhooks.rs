//! Stripe → Tally through the real server and the Stripe simulator, on both backends: the
//! webhook endpoint's verification, the inbox, the worker's effects (subscription mirror, credit
//! packs, transactions), duplicates, reordering, a dropped delivery backfilled, two processes.
//!
//! Events are read from the simulator's `GET /v1/events` and posted to Tally signed as Stripe
//! signs them, so each test chooses exactly what is delivered, how often and in which order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_store::InboxFilter;
use tally_stripe::model::Metadata;
use tally_stripe::{
    CheckoutMode, Client, CustomerParams, EventFilter, IdempotencyKey, NewCheckoutSession, RawEvent,
};

#[macro_use]
mod common;

use common::{app_on, App, Db};

const CATALOG: &str = include_str!("../../../catalogs/localboxs.toml");
const SECRET: &str = "whsec_tally_test_secret";
const OLD_SECRET: &str = "whsec_tally_old_secret";
const STRIPE_KEY: &str = "sk_test_tally";

struct Env {
    app: App,
    sim: stripe_sim::SimHandle,
    stripe: Client,
    browser: reqwest::Client,
}

async fn env(db: Db) -> Option<Env> {
    env_with(db, |_| {}).await
}

async fn env_with(db: Db, f: impl FnOnce(&mut tally_server::Config)) -> Option<Env> {
    env_on(db, CATALOG, f).await
}

async fn env_on(
    db: Db,
    catalog_src: &'static str,
    f: impl FnOnce(&mut tally_server::Config),
) -> Option<Env> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let app = app_on(db, |c| {
        c.catalog = Arc::new(parse_catalog(catalog_src, "catalog.toml").unwrap());
        c.stripe_webhook_secrets = vec![SECRET.into()];
        c.stripe.api_key = Some(STRIPE_KEY.into());
        c.stripe.api_base = Some(base.clone());
        f(c);
    })
    .await?;
    let stripe = Client::new(tally_stripe::Config::new(STRIPE_KEY).with_base_url(&base)).unwrap();
    let catalog = parse_catalog(catalog_src, "catalog.toml").unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    Some(Env {
        app,
        sim,
        stripe,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    })
}

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    stripe_sim::webhooks::signature_header(secret, t, body)
}

impl Env {
    /// A Tally customer and its Stripe customer (with Tally's id in metadata).
    async fn customer(&self, id: &str) -> String {
        let (s, b) = self
            .app
            .put(&format!("/v1/customers/{id}"), json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let mut metadata = Metadata::new();
        metadata.insert("tally_customer_id".into(), id.into());
        self.stripe
            .create_customer(
                &CustomerParams {
                    email: Some(format!("{id}@example.com")),
                    name: None,
                    metadata,
                },
                &IdempotencyKey::from_row("customer", id, 0),
            )
            .await
            .unwrap()
            .value
            .id
    }

    async fn price(&self, lookup_key: &str) -> String {
        let p = self
            .stripe
            .prices_by_lookup_keys(&[lookup_key.to_owned()])
            .await
            .unwrap();
        p[0].id.clone()
    }

    /// A Checkout Session as the other half of Tally creates it (metadata contract), paid through
    /// the hosted page with `card`. Returns the session id and the page's status.
    async fn checkout(
        &self,
        customer: &str,
        stripe_customer: &str,
        what: Checkout,
        card: &str,
    ) -> (String, u16) {
        self.checkout_with(customer, stripe_customer, what, card, None)
            .await
    }

    async fn checkout_with(
        &self,
        customer: &str,
        stripe_customer: &str,
        what: Checkout,
        card: &str,
        promo: Option<&str>,
    ) -> (String, u16) {
        let mut metadata = Metadata::new();
        metadata.insert("tally_customer_id".into(), customer.into());
        let mut sub_meta = Metadata::new();
        let (mode, price) = match what {
            Checkout::Plan(plan, interval, key) => {
                metadata.insert("tally_plan".into(), plan.into());
                metadata.insert("tally_interval".into(), interval.into());
                sub_meta.insert("tally_customer_id".into(), customer.into());
                (CheckoutMode::Subscription, self.price(key).await)
            }
            Checkout::Pack(pack, key) => {
                metadata.insert("tally_pack".into(), pack.into());
                (CheckoutMode::Payment, self.price(key).await)
            }
        };
        let row = format!("{customer}-{price}-{card}");
        let s = self
            .stripe
            .create_checkout_session(
                &NewCheckoutSession {
                    mode,
                    customer: Some(stripe_customer.into()),
                    line_items: vec![(price, 1)],
                    metered_prices: vec![],
                    success_url: "https://app.example/done".into(),
                    cancel_url: Some("https://app.example/cancel".into()),
                    client_reference_id: Some(customer.into()),
                    allow_promotion_codes: promo.is_some(),
                    trial_period_days: None,
                    metadata,
                    subscription_metadata: sub_meta,
                    payment_intent_metadata: Default::default(),
                    discounts: Vec::new(),
                    expires_at: None,
                },
                &IdempotencyKey::from_row("checkout", &row, 0),
            )
            .await
            .unwrap()
            .value;
        let url = s.url.clone().unwrap();
        let mut form = vec![
            ("email", "buyer@example.com"),
            ("name", "Ada Buyer"),
            ("card_number", card),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ];
        if let Some(p) = promo {
            form.push(("promotion_code", p));
        }
        let r = self.browser.post(&url).form(&form).send().await.unwrap();
        (s.id, r.status().as_u16())
    }

    /// Every event of the simulator, oldest first.
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

    /// Posts an event signed with `secret` at `t`.
    async fn deliver_raw(&self, body: &[u8], header: Option<String>) -> (StatusCode, Value) {
        let mut r = self
            .app
            .http
            .post(self.app.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(h) = header {
            r = r.header("Stripe-Signature", h);
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn deliver(&self, e: &RawEvent) -> (StatusCode, Value) {
        let now = chrono::Utc::now().timestamp();
        self.deliver_raw(
            e.body.as_bytes(),
            Some(sign(SECRET, now, e.body.as_bytes())),
        )
        .await
    }

    /// Waits until the inbox has nothing pending.
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
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "inbox not settled: {:?}",
                all.iter()
                    .filter(|e| e.status == "pending")
                    .map(|e| (&e.event_type, &e.last_error))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn inbox_count(&self) -> usize {
        self.app
            .server
            .state()
            .store
            .inbox_list(InboxFilter {
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    async fn balance(&self, customer: &str) -> String {
        let (s, b) = self
            .app
            .get(&format!("/v1/customers/{customer}/credits"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().unwrap().to_owned()
    }

    /// The credit ledger's entries of kind `purchase`.
    async fn purchases(&self, customer: &str) -> usize {
        let (_, b) = self
            .app
            .get(&format!("/v1/customers/{customer}/credits?limit=100"))
            .await;
        b["ledger"]["data"]
            .as_array()
            .or_else(|| b["entries"].as_array())
            .map(|a| a.iter().filter(|e| e["kind"] == "purchase").count())
            .unwrap_or(0)
    }
}

enum Checkout {
    Plan(&'static str, &'static str, &'static str),
    Pack(&'static str, &'static str),
}

/// The end state a test compares: subscription fields, balance, purchases, transactions.
async fn end_state(env: &Env, customer: &str) -> Value {
    let (_, sub) = env
        .app
        .get(&format!("/v1/customers/{customer}/subscription"))
        .await;
    let (_, txns) = env
        .app
        .get(&format!("/v1/customers/{customer}/transactions"))
        .await;
    // As a set: the order of recording follows the order of processing.
    let mut txns: Vec<String> = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["kind"], t["status"], t["amount"], t["currency"]]).to_string())
        .collect();
    txns.sort();
    json!({
        "plan": sub["plan"], "interval": sub["interval"], "status": sub["status"],
        "source": sub["source"],
        "stripe_status": sub["stripe"]["status"],
        "cancel_at_period_end": sub["stripe"]["cancel_at_period_end"],
        "balance": env.balance(customer).await,
        "purchases": env.purchases(customer).await,
        "transactions": txns,
    })
}

/// LocalBoxs: Pro with 4242 → subscription mirrored with exact fields, 3,000 monthly credits; a
/// 1,000-credit pack → 4,000; billing and transactions show both payments.
async fn pro_checkout_and_pack(db: Db) {
    let Some(env) = env(db).await else { return };
    let cus = env.customer("u1").await;
    let (_, st) = env
        .checkout(
            "u1",
            &cus,
            Checkout::Plan("pro", "month", "localboxs_pro_monthly"),
            "4242 4242 4242 4242",
        )
        .await;
    assert_eq!(st, 303);
    // checkout.session.completed alone: the entitlement check sees Pro within 1 s of its arrival.
    let events = env.events().await;
    let completed = events
        .iter()
        .find(|e| e.event_type == "checkout.session.completed")
        .unwrap();
    let check = json!({"customer": "u1", "feature": "team_members"});
    let (_, before) = env.app.post("/v1/entitlements/check", check.clone()).await;
    assert_eq!(before["plan"], "free");
    let arrived = Instant::now();
    let (s, b) = env.deliver(completed).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    loop {
        let (_, now) = env.app.post("/v1/entitlements/check", check.clone()).await;
        if now["plan"] == "pro" {
            break;
        }
        assert!(arrived.elapsed() < Duration::from_secs(1), "{now}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = arrived.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    eprintln!("checkout.session.completed → entitlement check on Pro: {took:?}");
    for e in events {
        let (s, b) = env.deliver(&e).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["received"], true);
    }
    env.settle().await;
    let (s, sub) = env.app.get("/v1/customers/u1/subscription").await;
    assert_eq!(s, StatusCode::OK, "{sub}");
    assert_eq!(sub["plan"], "pro");
    assert_eq!(sub["interval"], "month");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["source"], "stripe");
    assert_eq!(sub["stripe"]["customer"], cus.as_str());
    assert!(sub["stripe"]["subscription"]
        .as_str()
        .unwrap()
        .starts_with("sub_"));
    assert_eq!(sub["stripe"]["cancel_at_period_end"], false);
    assert_eq!(sub["stripe"]["lookup_key"], "localboxs_pro_monthly");
    assert_eq!(sub["stripe"]["trial_end"], Value::Null);
    let start = chrono::DateTime::parse_from_rfc3339(
        sub["stripe"]["current_period_start"].as_str().unwrap(),
    )
    .unwrap();
    let end =
        chrono::DateTime::parse_from_rfc3339(sub["stripe"]["current_period_end"].as_str().unwrap())
            .unwrap();
    let days = (end - start).num_days();
    assert!((28..=31).contains(&days), "a month: {days} days");
    assert_eq!(env.balance("u1").await, "3000");

    let (_, st) = env
        .checkout(
            "u1",
            &cus,
            Checkout::Pack("credits_1000", "localboxs_credits_1000"),
            "4242 4242 4242 4242",
        )
        .await;
    assert_eq!(st, 303);
    for e in env.events().await {
        env.deliver(&e).await;
    }
    env.settle().await;
    assert_eq!(env.balance("u1").await, "4000");
    assert_eq!(env.purchases("u1").await, 1);

    let (s, t) = env.app.get("/v1/customers/u1/transactions").await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let kinds: Vec<(String, String, i64, String)> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
                t["amount"].as_i64().unwrap(),
                t["currency"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("credit_pack".into(), "succeeded".into(), 100, "usd".into()),
            (
                "subscription_payment".into(),
                "succeeded".into(),
                2900,
                "usd".into()
            ),
        ]
    );
    assert_eq!(t["has_more"], false);
    // The app is told once of each: every event was delivered twice, some three times.
    let outbox = env
        .app
        .server
        .state()
        .store
        .list_notifications(tally_store::NotificationFilter {
            customer_id: Some("u1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |kind: &str| outbox.iter().filter(|n| n.kind == kind).count();
    let kinds: Vec<&str> = outbox.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(count("subscription.created"), 1, "{kinds:?}");
    assert_eq!(count("subscription.updated"), 0, "{kinds:?}");
    assert_eq!(count("invoice.paid"), 1, "{kinds:?}");
    assert_eq!(count("credits.purchased"), 1, "{kinds:?}");
    let created = outbox
        .iter()
        .find(|n| n.kind == "subscription.created")
        .unwrap();
    assert_eq!(
        (
            &created.payload["plan"],
            &created.payload["interval"],
            &created.payload["status"]
        ),
        (&json!("pro"), &json!("month"), &json!("active"))
    );
    let paid = outbox.iter().find(|n| n.kind == "invoice.paid").unwrap();
    assert_eq!(
        (&paid.payload["amount"], &paid.payload["currency"]),
        (&json!(2900), &json!("usd"))
    );
    let bought = outbox
        .iter()
        .find(|n| n.kind == "credits.purchased")
        .unwrap();
    assert_eq!(
        (
            &bought.payload["pack"],
            &bought.payload["credits"],
            &bought.payload["amount"]
        ),
        (&json!("credits_1000"), &json!("1000"), &json!(100))
    );
    // Paging: one per page.
    let (_, p1) = env.app.get("/v1/customers/u1/transactions?limit=1").await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 1);
    assert_eq!(p1["has_more"], true);
    let after = p1["data"][0]["id"].as_str().unwrap();
    let (_, p2) = env
        .app
        .get(&format!(
            "/v1/customers/u1/transactions?limit=1&starting_after={after}"
        ))
        .await;
    assert_eq!(p2["data"][0]["kind"], "subscription_payment");
    assert_eq!(p2["has_more"], false);
    let (s, _) = env.app.get("/v1/customers/u1/transactions?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, billing) = env.app.get("/v1/customers/u1/billing").await;
    assert_eq!(billing["plan"], "pro");
    assert_eq!(billing["payments"].as_array().unwrap().len(), 2);
    assert_eq!(billing["credits"]["balance"], "4000");
    let check = env
        .app
        .post(
            "/v1/entitlements/check",
            json!({"customer": "u1", "feature": "team_members"}),
        )
        .await;
    assert_eq!(check.0, StatusCode::OK, "{}", check.1);
    env.sim.shutdown().await;
}

/// A declined card: no subscription, no credits beyond the free plan's.
async fn declined_card(db: Db) {
    let Some(env) = env(db).await else { return };
    let cus = env.customer("u2").await;
    let (_, st) = env
        .checkout(
            "u2",
            &cus,
            Checkout::Plan("pro", "month", "localboxs_pro_monthly"),
            "4000 0000 0000 0002",
        )
        .await;
    assert_ne!(st, 303, "a declined card does not complete the checkout");
    let (_, pst) = env
        .checkout(
            "u2",
            &cus,
            Checkout::Pack("credits_1000", "localboxs_credits_1000"),
            "4000 0000 0000 0002",
        )
        .await;
    assert_ne!(pst, 303);
    for e in env.events().await {
        let (s, _) = env.deliver(&e).await;
        assert_eq!(s, StatusCode::OK);
    }
    env.settle().await;
    let (s, _) = env.app.get("/v1/customers/u2/subscription").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        env.balance("u2").await,
        "100",
        "the free plan's credits only"
    );
    assert_eq!(env.purchases("u2").await, 0);
    env.sim.shutdown().await;
}

/// Duplicated ×3, reordered, one dropped then backfilled: the same end state as a clean run,
/// exactly one grant; the duplicates store nothing.
async fn duplicates_reordering_and_backfill(db: Db) {
    // Clean run.
    let Some(clean) = env(db).await else { return };
    let cus = clean.customer("u3").await;
    clean
        .checkout(
            "u3",
            &cus,
            Checkout::Plan("pro", "month", "localboxs_pro_monthly"),
            "4242 4242 4242 4242",
        )
        .await;
    clean
        .checkout(
            "u3",
            &cus,
            Checkout::Pack("credits_1000", "localboxs_credits_1000"),
            "4242 4242 4242 4242",
        )
        .await;
    for e in clean.events().await {
        clean.deliver(&e).await;
    }
    clean.settle().await;
    let expected = end_state(&clean, "u3").await;
    assert_eq!(expected["balance"], "4000");
    clean.sim.shutdown().await;

    // Faulty run: every event three times, newest first, the pack's checkout.session.completed
    // dropped and then backfilled from Stripe's event list.
    let Some(env) = env(db).await else { return };
    let cus = env.customer("u3").await;
    env.checkout(
        "u3",
        &cus,
        Checkout::Plan("pro", "month", "localboxs_pro_monthly"),
        "4242 4242 4242 4242",
    )
    .await;
    let since = chrono::Utc::now();
    env.checkout(
        "u3",
        &cus,
        Checkout::Pack("credits_1000", "localboxs_credits_1000"),
        "4242 4242 4242 4242",
    )
    .await;
    let events = env.events().await;
    let dropped = events
        .iter()
        .rev()
        .find(|e| e.event_type == "checkout.session.completed")
        .unwrap()
        .id
        .clone();
    let mut distinct = BTreeSet::new();
    for e in events.iter().rev() {
        if e.id == dropped {
            continue;
        }
        for i in 0..3 {
            let (s, b) = env.deliver(e).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(b["duplicate"], i > 0);
        }
        distinct.insert(e.id.clone());
    }
    env.settle().await;
    assert_eq!(env.inbox_count().await, distinct.len());
    assert_eq!(env.purchases("u3").await, 0, "the pack's event was dropped");

    let report = tally_server::service::stripe_events::backfill(
        env.app.server.state(),
        since - chrono::Duration::seconds(5),
    )
    .await
    .unwrap();
    assert_eq!(
        report.stored, 1,
        "only the dropped event is new: {report:?}"
    );
    env.settle().await;
    assert_eq!(end_state(&env, "u3").await, expected);

    // Replaying everything applies nothing twice.
    let n = env
        .app
        .server
        .state()
        .store
        .inbox_replay(
            None,
            Some(since - chrono::Duration::days(1)),
            env.app.server.state().clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(n as usize, distinct.len() + 1);
    env.settle().await;
    assert_eq!(end_state(&env, "u3").await, expected);
    assert_eq!(env.purchases("u3").await, 1);
    env.sim.shutdown().await;
}

/// The endpoint refuses what is not Stripe's, answers 4xx and stores nothing; a rotated secret
/// (two `v1`) is accepted; without a secret the route answers 503.
async fn endpoint_rejections(db: Db) {
    let Some(env) = env_with(db, |c| {
        c.stripe_webhook_secrets = vec![SECRET.into(), OLD_SECRET.into()];
    })
    .await
    else {
        return;
    };
    let body = br#"{"id":"evt_test_1","object":"event","type":"customer.created","created":1767225600,"data":{"object":{"id":"cus_x","object":"customer"}}}"#;
    let now = chrono::Utc::now().timestamp();
    let good = sign(SECRET, now, body);
    let code = |b: &Value| b["error"]["code"].as_str().unwrap_or("").to_owned();

    // Tampered body.
    let mut tampered = body.to_vec();
    tampered[10] = b'X';
    let (s, b) = env.deliver_raw(&tampered, Some(good.clone())).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_signature".into())
    );
    // Wrong secret.
    let (s, b) = env
        .deliver_raw(body, Some(sign("whsec_wrong", now, body)))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_signature".into())
    );
    // v0 only.
    let v0 = sign(SECRET, now, body).replace("v1=", "v0=");
    let (s, b) = env.deliver_raw(body, Some(v0)).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_signature".into())
    );
    // 301 s old.
    let (s, b) = env
        .deliver_raw(body, Some(sign(SECRET, now - 301, body)))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_signature".into())
    );
    // Missing header.
    let (s, b) = env.deliver_raw(body, None).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "missing_signature".into())
    );
    // A 10 MB body: answered 413 from its declared length, before it is read (a client that keeps
    // writing would see the connection closed, so the request is written by hand).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = env.app.server.addr();
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = vec![b' '; 64 * 1024];
        let head = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nStripe-Signature: {}\r\nContent-Length: {}\r\n\r\n",
            sign(SECRET, now, &big),
            10 * 1024 * 1024
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&big).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"body_too_large\""), "{answer}");
    }
    // Malformed JSON, correctly signed.
    let bad = b"{not json";
    let (s, b) = env.deliver_raw(bad, Some(sign(SECRET, now, bad))).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "malformed_event".into())
    );
    assert_eq!(env.inbox_count().await, 0, "nothing stored");

    // A rotation: two v1 signatures, the new secret's and the old one's; each alone works too.
    let rotated = format!(
        "{},v1={}",
        sign(OLD_SECRET, now, body),
        stripe_sim::webhooks::sign(SECRET, now, body)
    );
    let (s, b) = env.deliver_raw(body, Some(rotated)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = env
        .deliver_raw(body, Some(sign(OLD_SECRET, now, body)))
        .await;
    assert_eq!((s, b["duplicate"].clone()), (StatusCode::OK, json!(true)));
    env.settle().await;
    let e = env
        .app
        .server
        .state()
        .store
        .inbox_get("evt_test_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, "ignored");
    assert_eq!(env.inbox_count().await, 1);
    env.sim.shutdown().await;

    // No secret configured: 503.
    let Some(none) = env_with(db, |c| c.stripe_webhook_secrets = Vec::new()).await else {
        return;
    };
    let (s, b) = none.deliver_raw(body, Some(sign(SECRET, now, body))).await;
    assert_eq!(
        (s, code(&b)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_not_configured".into()
        )
    );
    none.sim.shutdown().await;
}

/// Events of objects that are not Tally's are recorded as ignored, answered 2xx, never fail.
async fn foreign_objects_are_ignored(db: Db) {
    let Some(env) = env(db).await else { return };
    // A Stripe customer without Tally metadata buys a pack.
    let stranger = env
        .stripe
        .create_customer(
            &CustomerParams::default(),
            &IdempotencyKey::from_row("customer", "stranger", 0),
        )
        .await
        .unwrap()
        .value
        .id;
    env.app.put("/v1/customers/known", json!({})).await;
    let price = env.price("localboxs_pro_monthly").await;
    let s = env
        .stripe
        .create_checkout_session(
            &NewCheckoutSession {
                mode: CheckoutMode::Subscription,
                customer: Some(stranger),
                line_items: vec![(price, 1)],
                metered_prices: vec![],
                success_url: "https://app.example/done".into(),
                cancel_url: None,
                client_reference_id: Some("nobody".into()),
                allow_promotion_codes: false,
                trial_period_days: None,
                metadata: Metadata::new(),
                subscription_metadata: Metadata::new(),
                payment_intent_metadata: Default::default(),
                discounts: Vec::new(),
                expires_at: None,
            },
            &IdempotencyKey::from_row("checkout", "stranger", 0),
        )
        .await
        .unwrap()
        .value;
    env.browser
        .post(s.url.unwrap())
        .form(&[
            ("email", "x@example.com"),
            ("name", "X"),
            ("card_number", "4242 4242 4242 4242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ])
        .send()
        .await
        .unwrap();
    let events = env.events().await;
    for e in &events {
        let (s, _) = env.deliver(e).await;
        assert_eq!(s, StatusCode::OK);
    }
    env.settle().await;
    let all = env
        .app
        .server
        .state()
        .store
        .inbox_list(InboxFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), events.len());
    assert!(
        all.iter().all(|e| e.status == "ignored"),
        "{:?}",
        all.iter()
            .map(|e| (&e.event_type, &e.status, &e.outcome, &e.last_error))
            .collect::<Vec<_>>()
    );
    let failed = env
        .app
        .server
        .state()
        .store
        .inbox_list(InboxFilter {
            failed: true,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(failed.is_empty());
    env.sim.shutdown().await;
}

/// Magic Box: Pro yearly with the promotion code EARLYBIRD30 → mirrored as pro/year with the
/// coupon; the payment is the discounted yearly price.
async fn magicbox_yearly_with_promotion_code(db: Db) {
    let Some(env) = env_on(db, include_str!("../../../catalogs/magicbox.toml"), |_| {}).await
    else {
        return;
    };
    let cus = env.customer("mb1").await;
    let (_, st) = env
        .checkout_with(
            "mb1",
            &cus,
            Checkout::Plan("pro", "year", "magicbox_pro_yearly"),
            "4242 4242 4242 4242",
            Some("EARLYBIRD30"),
        )
        .await;
    assert_eq!(st, 303);
    for e in env.events().await {
        env.deliver(&e).await;
    }
    env.settle().await;
    let (_, sub) = env.app.get("/v1/customers/mb1/subscription").await;
    assert_eq!(
        (&sub["plan"], &sub["interval"], &sub["status"]),
        (&json!("pro"), &json!("year"), &json!("active"))
    );
    assert_eq!(sub["stripe"]["coupon"], "EARLYBIRD30");
    let (_, t) = env.app.get("/v1/customers/mb1/transactions").await;
    assert_eq!(t["data"][0]["kind"], "subscription_payment");
    assert_eq!(t["data"][0]["amount"], 139_300, "1,990.00 less 30 %");
    // Tally's own invoice takes off what Stripe took off.
    let (s, up) = env.app.get("/v1/customers/mb1/invoices/upcoming").await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(
        (&up["subtotal"], &up["discount"], &up["total"]),
        (&json!(199_000), &json!(59_700), &json!(139_300)),
        "{up}"
    );

    // A coupon applied in Stripe's dashboard to a subscription bought without one follows too.
    let cus2 = env.customer("mb2").await;
    let (_, st) = env
        .checkout(
            "mb2",
            &cus2,
            Checkout::Plan("pro", "month", "magicbox_pro_monthly"),
            "4242 4242 4242 4242",
        )
        .await;
    assert_eq!(st, 303);
    let seen: BTreeSet<String> = env.events().await.into_iter().map(|e| e.id).collect();
    for e in env.events().await {
        env.deliver(&e).await;
    }
    env.settle().await;
    let (_, up) = env.app.get("/v1/customers/mb2/invoices/upcoming").await;
    assert_eq!(
        (&up["discount"], &up["total"]),
        (&json!(0), &json!(19_900)),
        "{up}"
    );
    let sub2 = env
        .stripe
        .subscriptions_of_customer(&cus2)
        .await
        .unwrap()
        .remove(0)
        .id;
    let r = env
        .browser
        .post(format!("{}/v1/subscriptions/{sub2}", env.sim.base_url()))
        .bearer_auth(STRIPE_KEY)
        .form(&[("discounts[0][coupon]", "EARLYBIRD30")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for e in env
        .events()
        .await
        .into_iter()
        .filter(|e| !seen.contains(&e.id))
    {
        env.deliver(&e).await;
    }
    env.settle().await;
    let (_, sub) = env.app.get("/v1/customers/mb2/subscription").await;
    assert_eq!(sub["stripe"]["coupon"], "EARLYBIRD30", "{sub}");
    let (_, up) = env.app.get("/v1/customers/mb2/invoices/upcoming").await;
    assert_eq!(
        (&up["subtotal"], &up["discount"], &up["total"]),
        (&json!(19_900), &json!(5_970), &json!(13_930)),
        "{up}"
    );
    env.sim.shutdown().await;
}

/// A signed synthetic event (as Stripe renders it) for `object`.
fn synthetic(id: &str, kind: &str, created: i64, object: Value) -> RawEvent {
    let body = json!({
        "id": id, "object": "event", "type": kind, "created": created, "livemode": false,
        "api_version": tally_stripe::API_VERSION, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object},
    })
    .to_string();
    RawEvent::parse(body.as_bytes()).unwrap()
}

/// `invoice.payment_failed`: a `payment_failed` transaction, the subscription past due since the
/// failure's instant, and `--past-due-grace` (7 days) counted from that instant: a failure 8 days
/// ago restricts the customer to the free plan, one a day ago does not. Applied from the events
/// alone (no Stripe API key).
async fn payment_failed_starts_the_grace_period(db: Db) {
    let Some(env) = env_with(db, |c| c.stripe.api_key = None).await else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let day = 86_400;
    for (customer, failed_days_ago) in [("late", 8), ("recent", 1)] {
        env.app
            .put(&format!("/v1/customers/{customer}"), json!({}))
            .await;
        let sub = json!({
            "id": format!("sub_{customer}"), "object": "subscription",
            "customer": format!("cus_{customer}"), "status": "active",
            "cancel_at_period_end": false, "cancel_at": null, "canceled_at": null,
            "trial_end": null, "latest_invoice": null,
            "metadata": {"tally_customer_id": customer},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_{customer}"), "object": "subscription_item", "quantity": 1,
                "current_period_start": now - 10 * day, "current_period_end": now + 20 * day,
                "price": {"id": "price_pro", "object": "price", "product": "prod_pro",
                          "active": true, "currency": "usd", "unit_amount": 2900,
                          "lookup_key": "localboxs_pro_monthly", "metadata": {}}
            }]},
        });
        let invoice = json!({
            "id": format!("in_{customer}"), "object": "invoice",
            "customer": format!("cus_{customer}"), "status": "open",
            "billing_reason": "subscription_cycle", "currency": "usd",
            "subtotal": 2900, "total": 2900, "amount_due": 2900, "amount_paid": 0,
            "amount_remaining": 2900, "metadata": {"tally_customer_id": customer},
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": format!("sub_{customer}")}},
            "lines": {"object": "list", "has_more": false, "data": []},
        });
        let failed_at = now - failed_days_ago * day;
        for e in [
            synthetic(
                &format!("evt_{customer}_1"),
                "customer.subscription.created",
                now - 10 * day,
                sub,
            ),
            synthetic(
                &format!("evt_{customer}_2"),
                "invoice.payment_failed",
                failed_at,
                invoice,
            ),
        ] {
            let (s, b) = env.deliver(&e).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        env.settle().await;
        let (_, sub) = env
            .app
            .get(&format!("/v1/customers/{customer}/subscription"))
            .await;
        assert_eq!(sub["status"], "past_due", "{sub}");
        let since =
            chrono::DateTime::parse_from_rfc3339(sub["past_due_since"].as_str().unwrap()).unwrap();
        assert_eq!(since.timestamp(), failed_at);
        let (_, t) = env
            .app
            .get(&format!("/v1/customers/{customer}/transactions"))
            .await;
        assert_eq!(t["data"][0]["kind"], "payment_failed");
        let outbox = env
            .app
            .server
            .state()
            .store
            .list_notifications(tally_store::NotificationFilter {
                customer_id: Some(customer.to_string()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let kinds: Vec<(&str, &Value)> = outbox
            .iter()
            .map(|n| (n.kind.as_str(), &n.payload["status"]))
            .filter(|(k, _)| k.starts_with("subscription."))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("subscription.created", &json!("active")),
                ("subscription.updated", &json!("past_due"))
            ]
        );
        assert_eq!(t["data"][0]["status"], "failed");
        assert_eq!(t["data"][0]["amount"], 2900);
        let (_, check) = env
            .app
            .post(
                "/v1/entitlements/check",
                json!({"customer": customer, "feature": "team_members"}),
            )
            .await;
        if failed_days_ago > 7 {
            assert_eq!(
                (&check["plan"], &check["restricted"]),
                (&json!("free"), &json!("past_due")),
                "{check}"
            );
        } else {
            assert_eq!(check["plan"], "pro", "{check}");
        }
    }
    env.sim.shutdown().await;
}

on_both_backends!(
    pro_checkout_and_pack,
    declined_card,
    duplicates_reordering_and_backfill,
    endpoint_rejections,
    foreign_objects_are_ignored,
    magicbox_yearly_with_promotion_code,
    payment_failed_starts_the_grace_period,
);
