//! Stripe customers, Checkout and the Customer Portal against the Stripe simulator, with the
//! real server on a random port, on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::{app_on, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_stripe::push;

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

[plans.free]
name = "Free"

[plans.pro]
name = "Pro"
trial_days = 14
prices.month = { amount = "29.00", lookup_key = "shop_pro_monthly" }
prices.year = { amount = "290.00", lookup_key = "shop_pro_yearly" }

[credit_packs.credits_1000]
name = "1,000 credits"
credits = 1000
price = { amount = "10.00", lookup_key = "shop_credits_1000" }

[coupons.WELCOME10]
name = "Welcome"
percent_off = "10"
duration = "once"

[coupons.FIRST5]
name = "First five"
percent_off = "50"
duration = "forever"
max_redemptions = 5

[coupons.GONE]
name = "Gone"
percent_off = "50"
duration = "once"
redeem_by = 2020-01-01
"#;

const SK: &str = "sk_test_tally";

struct World {
    app: App,
    sim: stripe_sim::SimHandle,
    http: reqwest::Client,
}

/// The simulator with `catalog` pushed, and the app pointed at it.
async fn world(db: Db, catalog: &str, timeout: Duration) -> Option<World> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let parsed = tally_server::config::parse_catalog(catalog, "test.toml").unwrap();
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    push::push(&client, &parsed, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    let app = app_on(db, |c| {
        c.catalog = std::sync::Arc::new(parsed);
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.timeout = timeout;
        c.stripe.success_url = Some("https://app.test/ok?session={CHECKOUT_SESSION_ID}".into());
        c.stripe.cancel_url = Some("https://app.test/pricing".into());
        c.stripe.portal_return_url = Some("https://app.test/account".into());
    })
    .await?;
    Some(World {
        app,
        sim,
        http: reqwest::Client::new(),
    })
}

impl World {
    async fn customer(&self, id: &str) {
        let (s, b) = self
            .app
            .put(
                &format!("/v1/customers/{id}"),
                json!({"email": format!("{id}@example.com"), "name": "Ada"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    /// Stripe customers whose `metadata[tally_customer_id]` is `id`.
    fn stripe_customers_of(&self, id: &str) -> Vec<String> {
        self.sim
            .with(|s| {
                s.w.customers
                    .values()
                    .filter(|c| c.metadata.get("tally_customer_id").map(String::as_str) == Some(id))
                    .map(|c| c.id.clone())
                    .collect()
            })
            .unwrap()
    }

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

    fn price_id(&self, lookup_key: &str) -> String {
        self.sim
            .with(|s| {
                s.w.prices
                    .values()
                    .find(|p| p.lookup_key.as_deref() == Some(lookup_key))
                    .map(|p| p.id.clone())
            })
            .unwrap()
            .unwrap()
    }

    /// Makes the customer's Stripe customer through Tally, then a paid subscription to the price
    /// with `lookup_key` directly in Stripe (what a completed checkout leaves). Returns its id.
    async fn subscribe(&self, customer: &str, lookup_key: &str) -> String {
        let (s, b) = self
            .app
            .post("/v1/portal-sessions", json!({"customer": customer}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let cus = self.stripe_customers_of(customer).remove(0);
        let pm = self
            .sim_post(
                "/v1/payment_methods/pm_card_visa/attach",
                &[("customer", &cus)],
            )
            .await;
        let pm = pm["id"].as_str().unwrap().to_owned();
        let price = self.price_id(lookup_key);
        let sub = self
            .sim_post(
                "/v1/subscriptions",
                &[
                    ("customer", &cus),
                    ("items[0][price]", &price),
                    ("default_payment_method", &pm),
                ],
            )
            .await;
        assert_eq!(sub["status"], "active", "{sub}");
        sub["id"].as_str().unwrap().to_owned()
    }

    async fn fault(&self, path: &str, kind: &str, hang_ms: Option<u64>) {
        let mut body = json!({"path": path, "method": "POST", "kind": kind, "count": 1});
        if let Some(ms) = hang_ms {
            body["hang_ms"] = json!(ms);
        }
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

async fn subscription_session_carries_price_metadata_trial_and_discount(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "plan": "pro", "interval": "year", "coupon": "WELCOME10"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let checkout_id = b["checkout_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cs_test_"), "{b}");
    assert!(checkout_id.starts_with("chk_"), "{b}");
    assert_eq!(b["mode"], "subscription");
    let url = b["url"].as_str().unwrap();
    assert!(url.starts_with(&w.sim.base_url()), "{url}");
    assert!(url.contains(&id), "{url}");

    let stripe_customer = w.stripe_customers_of("c1");
    assert_eq!(stripe_customer.len(), 1);
    let sess = w
        .sim
        .with(|s| s.w.checkout_sessions.get(&id).cloned())
        .unwrap()
        .unwrap();
    let yearly = w
        .sim
        .with(|s| {
            s.w.prices
                .values()
                .find(|p| p.lookup_key.as_deref() == Some("shop_pro_yearly"))
                .map(|p| p.id.clone())
        })
        .unwrap()
        .unwrap();
    assert_eq!(sess.lines.len(), 1);
    assert_eq!(sess.lines[0].price, yearly);
    assert_eq!(sess.lines[0].quantity, 1);
    assert_eq!(sess.mode, "subscription");
    assert_eq!(sess.customer.as_deref(), Some(stripe_customer[0].as_str()));
    assert_eq!(sess.client_reference_id.as_deref(), Some("c1"));
    assert_eq!(sess.trial_period_days, Some(14));
    assert_eq!(
        sess.success_url.as_deref(),
        Some("https://app.test/ok?session={CHECKOUT_SESSION_ID}")
    );
    assert_eq!(sess.cancel_url.as_deref(), Some("https://app.test/pricing"));
    let meta: Vec<(&str, &str)> = sess
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        meta,
        vec![
            ("tally_checkout_id", checkout_id.as_str()),
            ("tally_customer_id", "c1"),
            ("tally_interval", "year"),
            ("tally_plan", "pro"),
        ]
    );
    assert_eq!(
        sess.subscription_metadata
            .get("tally_customer_id")
            .map(String::as_str),
        Some("c1")
    );
    assert_eq!(sess.subscription_metadata.len(), 1);
    assert_eq!(sess.discounts, vec![(Some("WELCOME10".to_owned()), None)]);
    assert_ne!(sess.allow_promotion_codes, Some(true));
    let expected_expiry = sess.created + 3600;
    assert!(
        (sess.expires_at - expected_expiry).abs() <= 5,
        "{}",
        sess.expires_at
    );

    // The row committed first carries Stripe's answer.
    let row = w
        .app
        .server
        .state()
        .store
        .checkout(&checkout_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.stripe_id.as_deref(), Some(id.as_str()));
    assert_eq!(row.plan.as_deref(), Some("pro"));
    assert_eq!(row.interval.as_deref(), Some("year"));
    assert!(row.request_id.is_some());
    // And the creation is audited.
    let (s, audit) = w.app.get("/v1/audit?customer=c1").await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(actions.contains(&"checkout_session.created"), "{audit}");
}

async fn pack_session_is_payment_mode_with_payment_intent_metadata(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "pack": "credits_1000",
                   "success_url": "https://shop.test/thanks", "cancel_url": "https://shop.test/"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["mode"], "payment");
    let id = b["id"].as_str().unwrap().to_owned();
    let checkout_id = b["checkout_id"].as_str().unwrap().to_owned();
    let sess = w
        .sim
        .with(|s| s.w.checkout_sessions.get(&id).cloned())
        .unwrap()
        .unwrap();
    assert_eq!(sess.mode, "payment");
    assert_eq!(
        sess.success_url.as_deref(),
        Some("https://shop.test/thanks")
    );
    assert_eq!(sess.trial_period_days, None);
    assert_eq!(sess.allow_promotion_codes, Some(true));
    assert_eq!(
        sess.metadata.get("tally_pack").map(String::as_str),
        Some("credits_1000")
    );
    let pim: Vec<(&str, &str)> = sess
        .payment_intent_metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pim,
        vec![
            ("tally_checkout_id", checkout_id.as_str()),
            ("tally_customer_id", "c1"),
            ("tally_pack", "credits_1000"),
        ]
    );
}

async fn magic_box_pro_yearly_with_earlybird30(db: Db) {
    let catalog = include_str!("../../../catalogs/magicbox.toml");
    let Some(w) = world(db, catalog, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("mb1").await;
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "mb1", "plan": "pro", "interval": "year",
                   "promotion_code": "EARLYBIRD30"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let (sess, promo) = w
        .sim
        .with(|s| {
            let sess = s.w.checkout_sessions.get(&id).cloned().unwrap();
            let promo =
                s.w.promotion_codes
                    .values()
                    .find(|p| p.code == "EARLYBIRD30")
                    .map(|p| p.id.clone())
                    .unwrap();
            (sess, promo)
        })
        .unwrap();
    assert_eq!(sess.discounts, vec![(None, Some(promo))]);
    let price = w
        .sim
        .with(|s| {
            s.w.prices
                .get(&sess.lines[0].price)
                .and_then(|p| p.lookup_key.clone())
        })
        .unwrap();
    assert_eq!(price.as_deref(), Some("magicbox_pro_yearly"));
    // An expired coupon of the catalog is refused before Stripe is asked.
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "mb1", "plan": "pro", "interval": "month", "coupon": "LAUNCH2025"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "coupon_expired");
}

async fn a_paid_subscriber_gets_409_pointing_to_plan_change(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    // The customer's Stripe customer, made by Tally.
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": "c1"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let cus = w.stripe_customers_of("c1").remove(0);
    let monthly = w
        .sim
        .with(|s| {
            s.w.prices
                .values()
                .find(|p| p.lookup_key.as_deref() == Some("shop_pro_monthly"))
                .map(|p| p.id.clone())
        })
        .unwrap()
        .unwrap();
    let pm = w
        .sim_post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &cus)],
        )
        .await;
    let pm = pm["id"].as_str().unwrap().to_owned();
    let sub = w
        .sim_post(
            "/v1/subscriptions",
            &[
                ("customer", &cus),
                ("items[0][price]", &monthly),
                ("default_payment_method", &pm),
            ],
        )
        .await;
    assert_eq!(sub["status"], "active", "{sub}");
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "plan": "pro", "interval": "year"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "subscription_exists");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("/v1/customers/c1/subscription/change"),
        "{msg}"
    );
    // A credit pack is still sold.
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "pack": "credits_1000"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn refusals_are_documented_codes(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    let mut n = 0;
    for (mut body, status, code) in [
        (
            json!({"customer": "c1", "plan": "gold", "interval": "month"}),
            422,
            "unknown_plan",
        ),
        (
            json!({"customer": "c1", "plan": "pro", "interval": "week"}),
            422,
            "invalid_interval",
        ),
        (
            json!({"customer": "c1", "plan": "pro"}),
            422,
            "invalid_interval",
        ),
        (
            json!({"customer": "c1", "plan": "free", "interval": "month"}),
            422,
            "plan_not_sold",
        ),
        (
            json!({"customer": "c1", "pack": "credits_7"}),
            422,
            "unknown_pack",
        ),
        (json!({"customer": "c1"}), 422, "plan_or_pack_required"),
        (
            json!({"customer": "c1", "plan": "pro", "interval": "month", "pack": "credits_1000"}),
            422,
            "plan_or_pack_required",
        ),
        (
            json!({"customer": "c1", "pack": "credits_1000", "coupon": "NOPE"}),
            422,
            "unknown_coupon",
        ),
        (
            json!({"customer": "c1", "pack": "credits_1000", "promotion_code": "NOPE"}),
            422,
            "unknown_promotion_code",
        ),
        (
            json!({"customer": "c1", "pack": "credits_1000", "coupon": "WELCOME10", "promotion_code": "WELCOME10"}),
            422,
            "one_discount",
        ),
        (
            json!({"customer": "c1", "pack": "credits_1000", "success_url": "ftp://x"}),
            422,
            "invalid_url",
        ),
        (
            json!({"customer": "nobody", "pack": "credits_1000"}),
            404,
            "customer_not_found",
        ),
        (
            json!({"customer": "c1", "pack": "credits_1000", "colour": "red"}),
            400,
            "malformed_json",
        ),
    ] {
        // One customer per request: the 5/min limit counts refused requests too.
        if body["customer"] == "c1" {
            n += 1;
            let id = format!("r{n}");
            w.customer(&id).await;
            body["customer"] = json!(id);
        }
        let (s, b) = w.app.post("/v1/checkout-sessions", body.clone()).await;
        assert_eq!(s.as_u16(), status, "{body}: {b}");
        assert_eq!(b["error"]["code"], code, "{body}: {b}");
    }
}

async fn without_stripe_the_routes_answer_503(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    let (s, b) = app.put("/v1/customers/c1", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (path, body) in [
        (
            "/v1/checkout-sessions",
            json!({"customer": "c1", "plan": "pro", "interval": "month"}),
        ),
        (
            "/v1/portal-sessions",
            json!({"customer": "c1", "return_url": "https://a.test/"}),
        ),
    ] {
        let (s, b) = app.post(path, body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["error"]["code"], "stripe_not_configured");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("STRIPE_API_KEY"));
    }
}

async fn five_checkout_sessions_per_minute_per_customer(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    w.customer("c2").await;
    for i in 0..5 {
        let (s, b) = w
            .app
            .post(
                "/v1/checkout-sessions",
                json!({"customer": "c1", "pack": "credits_1000"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "request {i}: {b}");
    }
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "pack": "credits_1000"}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "rate_limited");
    // Another customer is counted apart.
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c2", "pack": "credits_1000"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sessions = w.sim.with(|s| s.w.checkout_sessions.len()).unwrap();
    assert_eq!(sessions, 6);
}

async fn one_stripe_customer_under_faults(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(1)).await else {
        return;
    };
    w.customer("c1").await;
    w.fault("/v1/customers", "429", None).await;
    w.fault("/v1/customers", "500", None).await;
    w.fault("/v1/customers", "timeout", Some(3000)).await;
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": "c1"}))
        .await;
    // Three faults use up the gateway's three attempts: the request fails cleanly...
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error"]["code"], "stripe_unavailable");
    // ...and once the hung request has ended in Stripe, the next one finishes the job with the
    // same key: still one Stripe customer.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": "c1"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let url = b["url"].as_str().unwrap();
    assert!(url.starts_with(&w.sim.base_url()), "{url}");
    assert_eq!(w.stripe_customers_of("c1").len(), 1);
    let link = w
        .app
        .server
        .state()
        .store
        .stripe_customer("c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.stripe_id, Some(w.stripe_customers_of("c1").remove(0)));
}

async fn one_stripe_customer_under_concurrent_first_calls(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let calls = (0..8).map(|_| w.app.post("/v1/portal-sessions", json!({"customer": "c1"})));
    for (s, b) in futures_util::future::join_all(calls).await {
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    assert_eq!(w.stripe_customers_of("c1").len(), 1);
}

async fn a_crash_between_create_and_commit_makes_no_second_customer(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    // What a crash leaves behind: the claimed row without an id, and the customer in Stripe.
    let store = w.app.server.state().store.clone();
    store
        .claim_stripe_customer("c1", chrono::Utc::now())
        .await
        .unwrap();
    let made = w
        .sim_post(
            "/v1/customers",
            &[
                ("email", "c1@example.com"),
                ("metadata[tally_customer_id]", "c1"),
            ],
        )
        .await;
    let made = made["id"].as_str().unwrap().to_owned();
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "pack": "credits_1000"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(w.stripe_customers_of("c1"), vec![made.clone()]);
    let link = store.stripe_customer("c1").await.unwrap().unwrap();
    assert_eq!(link.stripe_id.as_deref(), Some(made.as_str()));
}

async fn email_and_name_changes_reach_stripe(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": "c1"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = w
        .app
        .put(
            "/v1/customers/c1",
            json!({"email": "new@example.com", "name": "Grace"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let cus = w.stripe_customers_of("c1").remove(0);
    let mut seen = None;
    for _ in 0..100 {
        seen = w
            .sim
            .with(|s| {
                s.w.customers
                    .get(&cus)
                    .map(|c| (c.email.clone(), c.name.clone()))
            })
            .unwrap();
        if seen == Some((Some("new@example.com".into()), Some("Grace".into()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        Some((Some("new@example.com".into()), Some("Grace".into())))
    );
}

async fn portal_session_for_the_customer(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let (s, b) = w
        .app
        .post(
            "/v1/portal-sessions",
            json!({"customer": "c1", "return_url": "https://app.test/back"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let url = b["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&w.sim.base_url()), "{url}");
    let cus = w.stripe_customers_of("c1").remove(0);
    let sessions: Vec<(String, Option<String>)> = w
        .sim
        .with(|s| {
            s.w.portal_sessions
                .values()
                .map(|p| (p.customer.clone(), p.return_url.clone()))
                .collect()
        })
        .unwrap();
    assert_eq!(
        sessions,
        vec![(cus, Some("https://app.test/back".to_owned()))]
    );
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": "ghost"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "customer_not_found");
}

async fn upgrade_moves_the_subscription_to_the_new_price_with_proration(db: Db) {
    let catalog = include_str!("../../../catalogs/magicbox.toml");
    let Some(w) = world(db, catalog, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    let sub = w.subscribe("c1", "magicbox_starter_monthly").await;
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/change",
            json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], sub.as_str());
    assert_eq!(b["plan"], "pro");
    assert_eq!(b["interval"], "month");
    assert_eq!(b["status"], "active");
    assert_eq!(b["cancel_at_period_end"], false);
    assert_eq!(b["source"], "stripe");
    let pro = w.price_id("magicbox_pro_monthly");
    let (items, proration_lines) = w
        .sim
        .with(|s| {
            let items: Vec<String> = s.w.subscriptions[&sub]
                .items
                .iter()
                .map(|i| i.price.clone())
                .collect();
            let lines: Vec<(i64, Option<String>)> =
                s.w.invoices
                    .values()
                    .filter(|i| i.subscription.as_deref() == Some(sub.as_str()))
                    .flat_map(|i| i.lines.iter())
                    .filter(|l| l.proration)
                    .map(|l| (l.amount, l.price.clone()))
                    .collect();
            (items, lines)
        })
        .unwrap();
    assert_eq!(items, vec![pro.clone()]);
    // Unused starter time credited (negative), remaining pro time charged (positive), at once.
    assert_eq!(proration_lines.len(), 2, "{proration_lines:?}");
    assert!(proration_lines
        .iter()
        .any(|(a, p)| *a < 0 && p.as_deref() != Some(pro.as_str())));
    assert!(proration_lines
        .iter()
        .any(|(a, p)| *a > 0 && p.as_deref() == Some(pro.as_str())));
    // The same change again changes nothing.
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/change",
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["plan"], "pro");
    // A cheaper plan waits for the period end: Stripe keeps the pro price until then, and a
    // schedule holds the change.
    let end = w
        .sim
        .with(|s| s.w.subscriptions[&sub].items[0].current_period_end)
        .unwrap();
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/change",
            json!({"plan": "starter"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["plan"], "pro");
    assert_eq!(
        b["pending_change"],
        json!({"plan": "starter", "interval": "month",
            "effective_at": chrono::DateTime::from_timestamp(end, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
    );
    let (items, schedule) = w
        .sim
        .with(|s| {
            let x = &s.w.subscriptions[&sub];
            (x.items[0].price.clone(), x.schedule.clone())
        })
        .unwrap();
    assert_eq!(items, pro);
    let schedule = schedule.expect("a subscription schedule");
    let phases = w
        .sim
        .with(|s| {
            s.w.subscription_schedules[&schedule]
                .phases
                .iter()
                .map(|p| (p.start_date, p.end_date, p.items[0].0.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(phases.len(), 2, "{phases:?}");
    assert_eq!((phases[0].1, phases[0].2.as_str()), (end, pro.as_str()));
    assert_eq!(phases[1].0, end);
    assert_eq!(phases[1].2, w.price_id("magicbox_starter_monthly"));
    // Back to pro: the pending downgrade is dropped and the schedule released.
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/change",
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["pending_change"], Value::Null);
    let (sched, status) = w
        .sim
        .with(|s| {
            (
                s.w.subscriptions[&sub].schedule.clone(),
                s.w.subscription_schedules[&schedule].status.clone(),
            )
        })
        .unwrap();
    assert_eq!((sched, status.as_str()), (None, "released"));
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/change",
            json!({"plan": "gold"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "unknown_plan");
}

async fn cancel_at_period_end_resume_and_cancel_now(db: Db) {
    let Some(w) = world(db, CATALOG, Duration::from_secs(10)).await else {
        return;
    };
    w.customer("c1").await;
    w.customer("c2").await;
    let (s, b) = w
        .app
        .post("/v1/customers/c2/subscription/cancel", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "no_stripe_subscription");
    let sub = w.subscribe("c1", "shop_pro_monthly").await;
    let end = w
        .sim
        .with(|s| s.w.subscriptions[&sub].items[0].current_period_end)
        .unwrap();
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/cancel",
            json!({"at_period_end": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["cancel_at_period_end"], true);
    assert_eq!(b["status"], "active");
    assert_eq!(b["plan"], "pro");
    let end_rfc = chrono::DateTime::from_timestamp(end, 0).unwrap();
    assert_eq!(
        b["current_period_end"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        Some(end_rfc)
    );
    assert!(w
        .sim
        .with(|s| s.w.subscriptions[&sub].cancel_at_period_end)
        .unwrap());
    let (s, b) = w
        .app
        .send(
            reqwest::Method::POST,
            "/v1/customers/c1/subscription/resume",
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["cancel_at_period_end"], false);
    assert!(!w
        .sim
        .with(|s| s.w.subscriptions[&sub].cancel_at_period_end)
        .unwrap());
    let (s, b) = w
        .app
        .post(
            "/v1/customers/c1/subscription/cancel",
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "canceled");
    let (s, audit) = w.app.get("/v1/audit?customer=c1").await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "stripe_subscription.cancel_scheduled",
        "stripe_subscription.resumed",
        "stripe_subscription.canceled",
    ] {
        assert!(actions.contains(&a), "{a}: {actions:?}");
    }
}

async fn local_coupon_max_redemptions_exact_under_20_concurrent(db: Db) {
    let Some(app) = app_on(db, |c| {
        c.catalog =
            std::sync::Arc::new(tally_server::config::parse_catalog(CATALOG, "t.toml").unwrap());
    })
    .await
    else {
        return;
    };
    for i in 0..20 {
        let (s, b) = app.put(&format!("/v1/customers/k{i}"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let paths: Vec<String> = (0..20)
        .map(|i| format!("/v1/customers/k{i}/subscription"))
        .collect();
    let calls = paths
        .iter()
        .map(|p| app.put(p, json!({"plan": "pro", "coupon": "FIRST5"})));
    let answers = futures_util::future::join_all(calls).await;
    let ok: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == StatusCode::OK)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ok.len(), 5, "{answers:?}");
    for (s, b) in &answers {
        if *s != StatusCode::OK {
            assert_eq!(*s, StatusCode::CONFLICT, "{b}");
            assert_eq!(b["error"]["code"], "coupon_exhausted");
        }
    }
    // A customer who redeemed it may put its subscription again with it: not counted twice.
    let (s, b) = app
        .put(
            &format!("/v1/customers/k{}/subscription", ok[0]),
            json!({"plan": "pro", "interval": "year", "coupon": "FIRST5"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, audit) = app.get("/v1/audit?limit=100").await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let redeemed = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "coupon.redeemed")
        .count();
    assert_eq!(redeemed, 5);
    for (coupon, status, code) in [
        ("GONE", 422, "coupon_expired"),
        ("NOPE", 422, "unknown_coupon"),
    ] {
        let (s, b) = app
            .put(
                "/v1/customers/k19/subscription",
                json!({"plan": "pro", "coupon": coupon}),
            )
            .await;
        assert_eq!(s.as_u16(), status, "{b}");
        assert_eq!(b["error"]["code"], code);
    }
}

on_both_backends!(
    local_coupon_max_redemptions_exact_under_20_concurrent,
    upgrade_moves_the_subscription_to_the_new_price_with_proration,
    cancel_at_period_end_resume_and_cancel_now,
    subscription_session_carries_price_metadata_trial_and_discount,
    pack_session_is_payment_mode_with_payment_intent_metadata,
    magic_box_pro_yearly_with_earlybird30,
    a_paid_subscriber_gets_409_pointing_to_plan_change,
    refusals_are_documented_codes,
    without_stripe_the_routes_answer_503,
    five_checkout_sessions_per_minute_per_customer,
    one_stripe_customer_under_faults,
    one_stripe_customer_under_concurrent_first_calls,
    a_crash_between_create_and_commit_makes_no_second_customer,
    email_and_name_changes_reach_stripe,
    portal_session_for_the_customer,
);
