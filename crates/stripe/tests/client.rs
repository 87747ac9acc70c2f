//! The client against the Stripe simulator on a loopback port: retries and their exact attempt
//! counts, `Stripe-Should-Retry`, idempotent replays, request ids, error mapping and the
//! endpoints Tally uses.

use serde_json::json;
use std::time::Duration;
use stripe_sim::SimHandle;
use tally_stripe::event::EventKind;
use tally_stripe::model::{
    CouponDiscount, CouponDuration, Interval, Recurring, SubscriptionStatus,
};
use tally_stripe::{
    CheckoutMode, Client, Config, CustomerParams, ErrorKind, EventFilter, IdempotencyKey,
    InvoicePreview, ItemChange, NewCheckoutSession, NewCoupon, NewPrice, NewProduct, RetryPolicy,
    SubscriptionUpdate,
};

const KEY: &str = "sk_test_gateway";

async fn sim() -> SimHandle {
    stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Fast retries so tests do not sleep for seconds.
fn client_with(base: &str, attempts: u32, timeout: Duration) -> Client {
    let mut cfg = Config::new(KEY).with_base_url(base);
    cfg.timeout = timeout;
    cfg.retry = RetryPolicy {
        max_attempts: attempts,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    };
    Client::new(cfg).unwrap()
}

fn client(base: &str) -> Client {
    client_with(base, 3, Duration::from_secs(10))
}

async fn fault(sim: &SimHandle, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn requests(sim: &SimHandle, what: &str) -> usize {
    sim.with(|s| s.faults.log.iter().filter(|l| *l == what).count())
        .unwrap()
}

fn customers(sim: &SimHandle) -> usize {
    sim.with(|s| s.w.customers.len()).unwrap()
}

fn alice() -> CustomerParams {
    CustomerParams {
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        metadata: [("tally_customer".to_string(), "cust_1".to_string())].into(),
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_success() {
    let sim = sim().await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "method": "POST", "kind": "429", "count": 1}),
    )
    .await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "method": "POST", "kind": "500", "count": 1}),
    )
    .await;
    let c = client(&sim.base_url());
    let r = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 3);
    assert!(!r.meta.replayed);
    assert!(r.meta.request_id.as_deref().unwrap().starts_with("req_"));
    assert_eq!(r.value.email.as_deref(), Some("alice@example.com"));
    assert_eq!(r.value.metadata["tally_customer"], "cust_1");
    assert_eq!(requests(&sim, "POST /v1/customers"), 3);
    assert_eq!(customers(&sim), 1);
}

#[tokio::test]
async fn lock_timeouts_and_conflicts_are_retried() {
    let sim = sim().await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "kind": "lock_timeout", "count": 1}),
    )
    .await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "kind": "409", "count": 1}),
    )
    .await;
    let c = client_with(&sim.base_url(), 4, Duration::from_secs(10));
    let r = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 3);
    assert_eq!(requests(&sim, "POST /v1/customers"), 3);
    assert_eq!(customers(&sim), 1);
}

#[tokio::test]
async fn attempts_are_capped_and_the_last_request_id_is_kept() {
    let sim = sim().await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "method": "POST", "kind": "500", "count": 3}),
    )
    .await;
    let c = client(&sim.base_url());
    let e = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap_err();
    assert_eq!(e.attempts, 3);
    assert_eq!(e.status, Some(500));
    assert!(
        matches!(e.kind, ErrorKind::Unavailable { status: 500, .. }),
        "{e:?}"
    );
    assert!(e.request_id.as_deref().unwrap().starts_with("req_"));
    assert_eq!(requests(&sim, "POST /v1/customers"), 3);
    assert_eq!(customers(&sim), 0);

    fault(
        &sim,
        json!({"path": "/v1/customers", "method": "GET", "kind": "429", "count": 3}),
    )
    .await;
    let e = c.customer("cus_missing").await.unwrap_err();
    assert_eq!(e.attempts, 3);
    assert!(matches!(e.kind, ErrorKind::RateLimited { .. }), "{e:?}");
    assert_eq!(requests(&sim, "GET /v1/customers/cus_missing"), 3);
}

#[tokio::test]
async fn should_retry_false_is_never_retried() {
    let sim = sim().await;
    fault(
        &sim,
        json!({"path": "/v1/customers", "kind": "500", "count": 5, "should_retry": false}),
    )
    .await;
    let c = client(&sim.base_url());
    let e = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap_err();
    assert_eq!(e.attempts, 1);
    assert_eq!(requests(&sim, "POST /v1/customers"), 1);

    // Even a 429 (normally retried) is not retried when Stripe says so.
    fault(
        &sim,
        json!({"path": "/v1/products", "kind": "429", "count": 5, "should_retry": false}),
    )
    .await;
    let e = c.product("prod_x").await.unwrap_err();
    assert_eq!(e.attempts, 1);
    assert_eq!(requests(&sim, "GET /v1/products/prod_x"), 1);
}

#[tokio::test]
async fn a_timed_out_create_is_retried_with_the_same_key_and_makes_one_customer() {
    let sim = sim().await;
    // The first attempt is held past the client's timeout and then executed anyway, as on
    // Stripe; the retries carry the same key and get the saved answer.
    fault(
        &sim,
        json!({"path": "/v1/customers", "kind": "timeout", "hang_ms": 400}),
    )
    .await;
    let c = client_with(&sim.base_url(), 8, Duration::from_millis(200));
    let r = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap();
    assert!(r.meta.attempts >= 2, "{:?}", r.meta);
    assert!(r.meta.replayed);
    assert_eq!(customers(&sim), 1);
    assert_eq!(
        requests(&sim, "POST /v1/customers"),
        r.meta.attempts as usize
    );
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let c = client(&base);
    let e = c.customer("cus_1").await.unwrap_err();
    assert_eq!(e.attempts, 3);
    assert_eq!(e.request_id, None);
    assert!(matches!(e.kind, ErrorKind::Connection(_)), "{e:?}");
}

#[tokio::test]
async fn idempotent_replay_gives_one_object_and_other_parameters_conflict() {
    let sim = sim().await;
    let c = client(&sim.base_url());
    let key = IdempotencyKey::from_row("customer", "cust_1", 1);
    let a = c.create_customer(&alice(), &key).await.unwrap();
    let b = c.create_customer(&alice(), &key).await.unwrap();
    assert_eq!(a.value.id, b.value.id);
    assert!(!a.meta.replayed);
    assert!(b.meta.replayed);
    assert_ne!(a.meta.request_id, b.meta.request_id);
    assert_eq!(customers(&sim), 1);

    let mut other = alice();
    other.email = Some("bob@example.com".into());
    let e = c.create_customer(&other, &key).await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::IdempotencyConflict { .. }),
        "{e:?}"
    );
    assert_eq!(e.attempts, 1);
    assert_eq!(e.status, Some(400));
    assert_eq!(customers(&sim), 1);
}

#[tokio::test]
async fn errors_map_to_our_enum() {
    let sim = sim().await;
    let c = client(&sim.base_url());
    assert_eq!(c.customer("cus_missing").await.unwrap(), None);
    assert_eq!(c.product("prod_missing").await.unwrap(), None);

    let bad = Client::new(Config::new("sk_live_nope").with_base_url(sim.base_url())).unwrap();
    let e = bad.customer("cus_1").await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Authentication { .. }), "{e:?}");
    assert_eq!((e.status, e.attempts), (Some(401), 1));
    assert!(e.request_id.is_some());

    let coupon = NewCoupon {
        id: Some("TOO_MUCH".into()),
        name: "Too much".into(),
        discount: CouponDiscount::Percent(150.into()),
        duration: CouponDuration::Once,
        max_redemptions: None,
        redeem_by: None,
        applies_to_products: vec![],
        metadata: Default::default(),
    };
    let e = c
        .create_coupon(
            &coupon,
            &IdempotencyKey::from_content("coupon", &["TOO_MUCH"]),
        )
        .await
        .unwrap_err();
    let ErrorKind::InvalidRequest { param, .. } = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(param.as_deref(), Some("percent_off"));
    assert_eq!(e.attempts, 1);
}

#[tokio::test]
async fn customers_are_found_by_metadata_and_updated() {
    let sim = sim().await;
    let c = client(&sim.base_url());
    let a = c
        .create_customer(&alice(), &IdempotencyKey::from_row("customer", "cust_1", 1))
        .await
        .unwrap()
        .value;
    let found = c
        .find_customers_by_metadata("tally_customer", "cust_1")
        .await
        .unwrap()
        .value;
    assert_eq!(found, vec![a.clone()]);
    assert!(c
        .find_customers_by_metadata("tally_customer", "cust_2")
        .await
        .unwrap()
        .value
        .is_empty());
    let upd = CustomerParams {
        name: Some("Alice B".into()),
        ..Default::default()
    };
    let u = c
        .update_customer(
            &a.id,
            &upd,
            &IdempotencyKey::from_row("customer_update", "cu_1", 1),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(u.name.as_deref(), Some("Alice B"));
    assert_eq!(u.email.as_deref(), Some("alice@example.com"));
    assert_eq!(c.customer(&a.id).await.unwrap().unwrap().value, u);
}

/// Checkout, portal, subscription changes, previews and the event log, end to end.
#[tokio::test]
async fn subscription_lifecycle_through_the_gateway() {
    let sim = sim().await;
    let c = client(&sim.base_url());
    let k = |s: &str| IdempotencyKey::from_content("test", &[s]);
    let prod = c
        .create_product(
            &NewProduct {
                id: Some("tally_pro".into()),
                name: "Pro".into(),
                metadata: Default::default(),
            },
            &k("prod"),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(prod.id, "tally_pro");
    let monthly = Recurring {
        interval: Interval::Month,
        interval_count: 1,
    };
    let price = |amount: i64, lookup: &str| NewPrice {
        product: prod.id.clone(),
        currency: "usd".into(),
        unit_amount: amount,
        recurring: Some(monthly),
        lookup_key: Some(lookup.into()),
        transfer_lookup_key: false,
        metadata: Default::default(),
    };
    let p1 = c
        .create_price(&price(2000, "pro_monthly"), &k("p1"))
        .await
        .unwrap()
        .value;
    let p2 = c
        .create_price(&price(5000, "max_monthly"), &k("p2"))
        .await
        .unwrap()
        .value;
    assert_eq!(p1.unit_amount, Some(2000));
    assert_eq!(p1.recurring, Some(monthly));
    let by_key = c
        .prices_by_lookup_keys(&["pro_monthly".into()])
        .await
        .unwrap();
    assert_eq!(by_key, vec![p1.clone()]);

    // A customer with a card, subscribed directly (Tally subscribes through Checkout; the
    // hosted page is not driven here).
    let http = reqwest::Client::new();
    let cus: serde_json::Value = http
        .post(format!("{}/v1/customers", sim.base_url()))
        .bearer_auth(KEY)
        .form(&[
            ("payment_method", "pm_card_visa"),
            ("invoice_settings[default_payment_method]", "pm_card_visa"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cus = cus["id"].as_str().unwrap().to_string();
    let session = c
        .create_checkout_session(
            &NewCheckoutSession {
                mode: CheckoutMode::Subscription,
                customer: Some(cus.clone()),
                line_items: vec![(p1.id.clone(), 1)],
                metered_prices: vec![],
                success_url: "https://tally.test/ok?s={CHECKOUT_SESSION_ID}".into(),
                cancel_url: None,
                client_reference_id: Some("chk_1".into()),
                allow_promotion_codes: true,
                trial_period_days: None,
                metadata: [("tally_checkout".to_string(), "chk_1".to_string())].into(),
                subscription_metadata: Default::default(),
                payment_intent_metadata: Default::default(),
                discounts: vec![],
                expires_at: None,
            },
            &IdempotencyKey::from_row("checkout", "chk_1", 1),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(session.mode, "subscription");
    assert_eq!(session.status.as_deref(), Some("open"));
    assert_eq!(session.client_reference_id.as_deref(), Some("chk_1"));
    assert!(session.url.unwrap().contains(&session.id));

    let sub: serde_json::Value = http
        .post(format!("{}/v1/subscriptions", sim.base_url()))
        .bearer_auth(KEY)
        .form(&[
            ("customer", cus.as_str()),
            ("items[0][price]", p1.id.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub_id = sub["id"].as_str().unwrap();
    let s = c.subscription(sub_id).await.unwrap().unwrap().value;
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.customer, cus);
    assert_eq!(s.items.len(), 1);
    assert_eq!(s.items[0].price, p1.id);
    assert_eq!(s.items[0].lookup_key.as_deref(), Some("pro_monthly"));
    let item = s.items[0].id.clone();

    // Previewing the switch to the dearer price: no proration is asked for, so the next
    // invoice is one period of the new price.
    let preview = c
        .preview_invoice(
            &InvoicePreview {
                subscription: Some(sub_id.to_string()),
                items: vec![ItemChange::Change {
                    item: item.clone(),
                    price: Some(p2.id.clone()),
                    quantity: None,
                }],
                proration_behavior: Some("none".into()),
                ..Default::default()
            },
            &k("preview"),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(preview.subscription.as_deref(), Some(sub_id));
    assert_eq!(preview.total, 5000);

    let portal = c
        .create_portal_session(&cus, Some("https://tally.test/account"), None, &k("portal"))
        .await
        .unwrap()
        .value;
    assert!(portal.id.starts_with("bps_"));

    let s = c
        .update_subscription(
            sub_id,
            &SubscriptionUpdate {
                cancel_at_period_end: Some(true),
                ..Default::default()
            },
            &k("cancel_at_end"),
        )
        .await
        .unwrap()
        .value;
    assert!(s.cancel_at_period_end);
    let s = c
        .cancel_subscription(sub_id, false, false)
        .await
        .unwrap()
        .value;
    assert_eq!(s.status, SubscriptionStatus::Canceled);

    let page = c
        .events(&EventFilter {
            types: vec![
                "customer.subscription.created".into(),
                "customer.subscription.deleted".into(),
                "customer.subscription.updated".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .value;
    let kinds: Vec<&str> = page.data.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "customer.subscription.deleted",
            "customer.subscription.updated",
            "customer.subscription.created"
        ]
    );
    let EventKind::SubscriptionUpdated { previous, .. } = &page.data[1].kind else {
        panic!()
    };
    assert_eq!(previous.cancel_at_period_end, Some(false));
    assert!(page.data[1]
        .request_id
        .as_deref()
        .unwrap()
        .starts_with("req_"));

    // Expire the checkout session, refund the first invoice's charge and rename the customer:
    // the events parse into their domain kinds.
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let r = http
                .post(path)
                .bearer_auth(KEY)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    post(
        format!(
            "{}/v1/checkout/sessions/{}/expire",
            sim.base_url(),
            session.id
        ),
        vec![],
    )
    .await;
    let charges = http
        .get(format!("{}/v1/charges?customer={cus}", sim.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let charge = charges["data"][0]["id"].as_str().unwrap().to_string();
    post(
        format!("{}/v1/refunds", sim.base_url()),
        vec![("charge", charge.clone())],
    )
    .await;
    c.update_customer(
        &cus,
        &CustomerParams {
            name: Some("Renamed".into()),
            ..Default::default()
        },
        &k("rename"),
    )
    .await
    .unwrap();
    let page = c
        .events(&EventFilter {
            types: vec![
                "checkout.session.expired".into(),
                "charge.refunded".into(),
                "customer.updated".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .value;
    assert_eq!(page.data.len(), 3, "{:#?}", page.data);
    let EventKind::CustomerUpdated(cu) = &page.data[0].kind else {
        panic!("{:?}", page.data[0].kind)
    };
    assert_eq!(cu.name.as_deref(), Some("Renamed"));
    assert!(page.data[0].changed.contains("name"));
    let EventKind::ChargeRefunded(ch) = &page.data[1].kind else {
        panic!("{:?}", page.data[1].kind)
    };
    assert_eq!(ch.id, charge);
    assert_eq!(
        (ch.amount, ch.amount_refunded, ch.refunded),
        (2000, 2000, true)
    );
    let EventKind::CheckoutExpired(cs) = &page.data[2].kind else {
        panic!("{:?}", page.data[2].kind)
    };
    assert_eq!(cs.id, session.id);
    assert_eq!(cs.status.as_deref(), Some("expired"));
}
