//! Credits, entitlements, flags and rate limits, through the real server on a random loopback
//! port (SQLite in a temp dir; PostgreSQL in a fresh database where marked).

use std::sync::Arc;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_server::service::entitlements::{check_at, CheckInput};
use tally_server::Config;
use tally_store::{NewEvent, SubscriptionUpsert};

mod common;

use common::{app_on_url, App, KEY};

const CATALOG: &str = include_str!("fixtures/credits.toml");

/// The app on `url` with the credits catalog; `f` adjusts the config last.
async fn app_on(url: String, dir: Option<tempfile::TempDir>, f: impl FnOnce(&mut Config)) -> App {
    app_on_url(url, dir, |config| {
        config.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/credits.toml").unwrap());
        f(config)
    })
    .await
}

async fn app_with(f: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    app_on(url, Some(dir), f).await
}

async fn app() -> App {
    app_with(|_| {}).await
}

impl App {
    async fn customer(&self, id: &str, plan: Option<&str>) {
        let (s, _) = self.put(&format!("/v1/customers/{id}"), json!({})).await;
        assert!(s.is_success(), "{s}");
        if let Some(p) = plan {
            let (s, b) = self
                .put(
                    &format!("/v1/customers/{id}/subscription"),
                    json!({ "plan": p }),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
    }

    async fn balance(&self, id: &str) -> String {
        let (s, b) = self.get(&format!("/v1/customers/{id}/credits")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().unwrap().to_owned()
    }

    async fn grant(&self, id: &str, amount: &str, key: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/customers/{id}/credits/grants"),
            json!({"amount": amount, "reason": "test top-up", "idempotency_key": key}),
        )
        .await
    }
}

/// 200 consumers race for 1,000 credits, 7 each: exactly 142 succeed (994 debited), 58 get 402,
/// the balance ends at 6 and the ledger holds exactly the successful debits.
async fn race(app: &App, customer: &str) {
    app.customer(customer, Some("pro")).await;
    let (s, b) = app.grant(customer, "1000", "seed").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/customers/{customer}/credits/consume"));
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({"amount": 7, "idempotency_key": format!("race-{i}")}))
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }));
    }
    let mut ok = 0;
    let mut short = 0;
    let mut debited = Decimal::ZERO;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            StatusCode::OK => {
                ok += 1;
                debited += b["consumed"].as_str().unwrap().parse::<Decimal>().unwrap();
                let bal: Decimal = b["balance"].as_str().unwrap().parse().unwrap();
                assert!(bal >= Decimal::ZERO, "{b}");
            }
            StatusCode::PAYMENT_REQUIRED => {
                short += 1;
                assert_eq!(b["error"]["type"], "insufficient_credits", "{b}");
                assert_eq!(b["error"]["required"], "7", "{b}");
                let bal: Decimal = b["error"]["balance"].as_str().unwrap().parse().unwrap();
                assert!(bal < dec!(7) && bal >= Decimal::ZERO, "{b}");
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 142);
    assert_eq!(short, 58);
    assert_eq!(debited, dec!(994));
    assert_eq!(Decimal::from(ok) * dec!(7), debited);
    assert_eq!(app.balance(customer).await, "6");
    let (_, b) = app
        .get(&format!("/v1/customers/{customer}/credits?limit=100"))
        .await;
    let (_, b2) = app
        .get(&format!(
            "/v1/customers/{customer}/credits?limit=100&before={}",
            b["ledger"]["next_before"]
        ))
        .await;
    let consumes = b["ledger"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b2["ledger"]["data"].as_array().unwrap())
        .filter(|e| e["kind"] == "consume")
        .count();
    assert_eq!(consumes, 142);

    // Replaying the grant and every consumption with the same keys changes nothing: the 142 get
    // their first answer again, the 58 refused ones are refused again.
    let (s, b) = app.grant(customer, "1000", "seed").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut replayed = (0, 0);
    for i in 0..200 {
        let (s, _) = app
            .post(
                &format!("/v1/customers/{customer}/credits/consume"),
                json!({"amount": 7, "idempotency_key": format!("race-{i}")}),
            )
            .await;
        match s {
            StatusCode::OK => replayed.0 += 1,
            StatusCode::PAYMENT_REQUIRED => replayed.1 += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!(replayed, (142, 58));
    assert_eq!(app.balance(customer).await, "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_never_overdraw_on_sqlite() {
    let app = app().await;
    race(&app, "racer").await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_never_overdraw_on_postgres() {
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let app = app_on(url, None, |_| {}).await;
    race(&app, "racer").await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_grants_and_consumes_changes_nothing() {
    let app = app().await;
    app.customer("c1", Some("pro")).await;
    let (s, first_grant) = app.grant("c1", "50", "g1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first_grant["amount"], "50");
    assert_eq!(first_grant["actor"], env_actor());
    let (_, g2) = app.grant("c1", "-5", "g2").await;
    assert_eq!(g2["kind"], "adjust");
    let consume = |key: &str, amount: &str| json!({"amount": amount, "idempotency_key": key});
    let (s, c1) = app
        .post("/v1/customers/c1/credits/consume", consume("k1", "10"))
        .await;
    assert_eq!(s, StatusCode::OK, "{c1}");
    assert_eq!(c1["consumed"], "10");
    assert_eq!(c1["balance"], "35");
    let (_, c2) = app
        .post(
            "/v1/customers/c1/credits/consume",
            json!({"metric": "chat", "quantity": 3, "idempotency_key": "k2"}),
        )
        .await;
    assert_eq!(c2["consumed"], "3");
    assert_eq!(c2["balance"], "32");
    let before = app.get("/v1/customers/c1/credits").await.1;

    // Replay everything: same answers, nothing more debited or granted.
    assert_eq!(
        app.grant("c1", "50", "g1").await,
        (StatusCode::OK, first_grant)
    );
    assert_eq!(app.grant("c1", "-5", "g2").await.1, g2);
    let r = app
        .post("/v1/customers/c1/credits/consume", consume("k1", "10"))
        .await;
    assert_eq!(r, (StatusCode::OK, c1));
    let r = app
        .post(
            "/v1/customers/c1/credits/consume",
            json!({"metric": "chat", "quantity": 3, "idempotency_key": "k2"}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, c2));
    let after = app.get("/v1/customers/c1/credits").await.1;
    assert_eq!(before, after);
    assert_eq!(after["balance"], "32");
    assert_eq!(after["ledger"]["data"].as_array().unwrap().len(), 4);

    // The same key with a different body is a conflict and changes nothing.
    let (s, b) = app
        .post("/v1/customers/c1/credits/consume", consume("k1", "11"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "idempotency_conflict");
    let (s, _) = app.grant("c1", "51", "g1").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(app.balance("c1").await, "32");

    // The metric consumption recorded exactly one usage event of 3 chat calls.
    let (_, usage) = app.get("/v1/customers/c1/usage").await;
    let ids = app.server.state().store.event_ids("c1").await.unwrap();
    assert_eq!(ids, vec!["consume:k2".to_owned()], "{usage}");

    // The audit log has both admin entries with the key that made them (after the customer's
    // creation and subscription).
    let (_, audit) = app.get("/v1/customers/c1/audit").await;
    let data = audit["data"].as_array().unwrap();
    assert_eq!(data.len(), 4, "{audit}");
    assert_eq!(data[2]["action"], "subscription.created");
    assert_eq!(data[3]["action"], "customer.created");
    assert_eq!(data[0]["action"], "credits.adjust");
    assert_eq!(data[0]["actor"], env_actor());
    assert_eq!(data[0]["idempotency_key"], "g2");
    assert_eq!(data[1]["action"], "credits.grant");
    assert_eq!(data[1]["after"]["reason"], "test top-up");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_balance_is_402_and_bad_input_changes_nothing() {
    let app = app().await;
    app.customer("c1", Some("pro")).await;
    app.grant("c1", "2", "g").await;
    let (s, b) = app
        .post(
            "/v1/customers/c1/credits/consume",
            json!({"metric": "images", "quantity": 5, "idempotency_key": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        b,
        json!({"error": {"type": "insufficient_credits", "code": "insufficient_credits",
            "message": "the balance of 2 credits does not cover 2.5; nothing was debited",
            "balance": "2", "required": "2.5"}})
    );
    // Half-credit metric: 3 images cost 1.5.
    let (s, b) = app
        .post(
            "/v1/customers/c1/credits/consume",
            json!({"metric": "images", "quantity": 3, "idempotency_key": "y"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["balance"], "0.5");
    for (body, code) in [
        (json!({"amount": 1}), "missing_idempotency_key"),
        (
            json!({"amount": "abc", "idempotency_key": "z"}),
            "invalid_amount",
        ),
        (
            json!({"amount": -1, "idempotency_key": "z"}),
            "invalid_amount",
        ),
        (
            json!({"amount": 1, "metric": "chat", "idempotency_key": "z"}),
            "invalid_request",
        ),
        (
            json!({"metric": "builds", "idempotency_key": "z"}),
            "metric_without_credit_cost",
        ),
        (
            json!({"metric": "nope", "idempotency_key": "z"}),
            "unknown_metric",
        ),
        (
            json!({"amount": "0.0000001", "idempotency_key": "z"}),
            "invalid_amount",
        ),
    ] {
        let (s, b) = app.post("/v1/customers/c1/credits/consume", body).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{s} {b}"
        );
        assert_eq!(b["error"]["code"], code, "{b}");
    }
    let (s, b) = app
        .post(
            "/v1/customers/c1/credits/grants",
            json!({"amount": 5, "idempotency_key": "z"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "missing_reason");
    let (s, _) = app
        .post(
            "/v1/customers/nobody/credits/consume",
            json!({"amount": 1, "idempotency_key": "z"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(app.balance("c1").await, "0.5");
    // The billing summary shows the balance.
    let (_, b) = app.get("/v1/customers/c1/billing").await;
    assert_eq!(b["credits"]["balance"], "0.5");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monthly_plan_grant_is_made_once_per_period() {
    let app = app().await;
    // No subscription: the free plan's 100 credits a month.
    app.customer("f1", None).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = app.http.clone();
        let url = app.url("/v1/customers/f1/credits");
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, b) = app.get("/v1/customers/f1/credits").await;
    assert_eq!(b["balance"], "100");
    let grants: Vec<&Value> = b["ledger"]["data"].as_array().unwrap().iter().collect();
    assert_eq!(grants.len(), 1, "{b}");
    assert_eq!(grants[0]["kind"], "grant");
    assert_eq!(grants[0]["actor"], "system");
    let state = app.server.state();
    let c = state.store.get_customer("f1").await.unwrap().unwrap();
    let period = tally_core::period::allowance_period(c.billing_anchor, Utc::now());
    assert_eq!(
        grants[0]["expires_at"].as_str().unwrap(),
        period
            .end
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    // The next period: the old grant has expired, a new one is made, once.
    let next = period.end + Duration::hours(1);
    for _ in 0..3 {
        let bal = tally_server::service::credits::balance(state, &c, next)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bal, dec!(100));
    }
    let account = state.store.credit_account("f1", 10, None).await.unwrap();
    let kinds: Vec<&str> = account.entries.iter().map(|e| e.kind.as_str()).collect();
    // Newest first: the new grant, the write-off of the expired one, the first grant.
    assert_eq!(kinds, vec!["grant", "expire", "grant"]);
    assert_eq!(account.entries[1].amount, dec!(-100));
    assert_eq!(account.balance(next), dec!(100));
    app.server.shutdown().await.unwrap();
}

fn input(
    customer: &str,
    feature: Option<&str>,
    metric: Option<&str>,
    q: Option<i64>,
) -> CheckInput {
    serde_json::from_value(json!({
        "customer": customer, "feature": feature, "metric": metric, "quantity": q,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlement_checks_answer_features_limits_gauges_and_credits() {
    let app = app().await;
    app.customer("free1", None).await;
    app.customer("pro1", Some("pro")).await;
    let check = |body: Value| async { app.post("/v1/entitlements/check", body).await };

    let (s, b) = check(json!({"customer": "pro1", "feature": "sso"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(true), json!("feature_enabled"))
    );
    let (_, b) = check(json!({"customer": "free1", "feature": "sso"})).await;
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(false), json!("feature_disabled"))
    );
    let (_, b) = check(json!({"customer": "free1", "feature": "seats"})).await;
    assert_eq!(b["limit"], "1");
    let (_, b) = check(json!({"customer": "free1", "feature": "nope"})).await;
    assert_eq!(b["reason"], "feature_not_in_plan");

    // Builds: 90 of a hard 100 on free.
    let ev = json!({"events": [{"id": "b1", "customer": "free1", "metric": "builds", "value": 90},
                               {"id": "b2", "customer": "pro1", "metric": "builds", "value": 990},
                               {"id": "p1", "customer": "pro1", "metric": "projects", "value": 5}]});
    let (s, b) = app.post("/v1/events", ev).await;
    assert!(s.is_success(), "{b}");
    let (_, b) = check(json!({"customer": "free1", "metric": "builds", "quantity": 10})).await;
    assert_eq!(b["allowed"], true, "{b}");
    assert_eq!(b["reason"], "within_limit");
    assert_eq!(b["used"], "90");
    assert_eq!(b["limit"], "100");
    assert_eq!(b["remaining"], "10");
    assert_eq!(b["percent"], "90");
    assert_eq!(b["level"], "warning");
    let (_, b) = check(json!({"customer": "free1", "metric": "builds", "quantity": 11})).await;
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(false), json!("limit_exceeded"))
    );
    // Soft limit on pro: allowed, overage applies.
    let (_, b) = check(json!({"customer": "pro1", "metric": "builds", "quantity": 20})).await;
    assert_eq!(b["allowed"], true);
    assert_eq!(b["reason"], "soft_limit_exceeded");
    assert_eq!(b["overage"], true);
    // Gauge: 5 projects of 5, one more is denied.
    let (_, b) = check(json!({"customer": "pro1", "metric": "projects", "quantity": 1})).await;
    assert_eq!(
        (b["allowed"].clone(), b["used"].clone()),
        (json!(false), json!("5"))
    );
    // Chat has no limit; costs credits: free has 100.
    let (_, b) = check(json!({"customer": "free1", "metric": "chat", "quantity": 100})).await;
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(true), json!("unlimited"))
    );
    assert_eq!(b["credit_balance"], "100");
    let (_, b) = check(json!({"customer": "free1", "metric": "chat", "quantity": 101})).await;
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(false), json!("insufficient_credits"))
    );
    // Bad input.
    let (s, b) = check(json!({"customer": "free1", "metric": "nope"})).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("unknown_metric"))
    );
    let (s, _) = check(json!({"customer": "free1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = check(json!({"customer": "ghost", "feature": "sso"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Past due beyond the grace: the free plan's entitlements.
    let state = app.server.state();
    let now = Utc::now();
    state
        .store
        .put_subscription(SubscriptionUpsert {
            customer_id: "pro1".into(),
            plan: "pro".into(),
            interval: "month".into(),
            status: "past_due".into(),
            source: "local".into(),
            now,
        })
        .await
        .unwrap();
    // The store was changed behind the server's back: drop its cached subscription.
    state.credits.forget("pro1");
    let r = check_at(
        state,
        input("pro1", Some("sso"), None, None),
        now + Duration::days(6),
    )
    .await
    .unwrap();
    assert!(r.allowed);
    let r = check_at(
        state,
        input("pro1", Some("sso"), None, None),
        now + Duration::days(8),
    )
    .await
    .unwrap();
    assert!(!r.allowed);
    assert_eq!(r.plan.as_deref(), Some("free"));
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plan_at_all_denies_with_no_subscription() {
    let app = app_with(|c| {
        let src = CATALOG.replace("free_plan = \"free\"\n", "");
        c.catalog = Arc::new(parse_catalog(&src, "x.toml").unwrap());
    })
    .await;
    app.customer("c", None).await;
    let (_, b) = app
        .post(
            "/v1/entitlements/check",
            json!({"customer": "c", "feature": "sso"}),
        )
        .await;
    assert_eq!(
        (b["allowed"].clone(), b["reason"].clone()),
        (json!(false), json!("no_subscription"))
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_threshold_fires_once_per_period_and_again_next_period() {
    let app = app().await;
    app.customer("t1", None).await;
    let state = app.server.state();
    let c = state.store.get_customer("t1").await.unwrap().unwrap();
    let now = Utc::now();
    let period = tally_core::period::allowance_period(c.billing_anchor, now);
    let mut n = 0;
    let mut add = |value: Decimal, at: chrono::DateTime<Utc>| {
        n += 1;
        NewEvent {
            customer_id: "t1".into(),
            event_id: format!("e{n}"),
            metric: "builds".into(),
            value,
            timestamp: at,
            properties: None,
            period_start: tally_core::period::allowance_period(c.billing_anchor, at).start,
            unique_key: None,
        }
    };
    let thresholds = |list: &[tally_store::UsageNotification]| -> Vec<(u32, i64)> {
        list.iter()
            .map(|n| (n.threshold, n.period_start.timestamp()))
            .collect()
    };
    let check = || input("t1", None, Some("builds"), Some(0));
    let p0 = period.start.timestamp();
    state.store.ingest(vec![add(dec!(79), now)]).await.unwrap();
    check_at(state, check(), now).await.unwrap();
    assert!(state.store.notifications("t1").await.unwrap().is_empty());
    state.store.ingest(vec![add(dec!(1), now)]).await.unwrap();
    for _ in 0..3 {
        check_at(state, check(), now).await.unwrap();
    }
    assert_eq!(
        thresholds(&state.store.notifications("t1").await.unwrap()),
        vec![(80, p0)]
    );
    state.store.ingest(vec![add(dec!(20), now)]).await.unwrap();
    for _ in 0..3 {
        check_at(state, check(), now).await.unwrap();
    }
    assert_eq!(
        thresholds(&state.store.notifications("t1").await.unwrap()),
        vec![(80, p0), (95, p0), (100, p0)]
    );
    // The next period starts from zero: thresholds fire again, once.
    let later = period.end + Duration::hours(1);
    let p1 = tally_core::period::allowance_period(c.billing_anchor, later)
        .start
        .timestamp();
    state
        .store
        .ingest(vec![add(dec!(96), later)])
        .await
        .unwrap();
    for _ in 0..3 {
        check_at(state, check(), later).await.unwrap();
    }
    assert_eq!(
        thresholds(&state.store.notifications("t1").await.unwrap()),
        vec![(80, p0), (95, p0), (100, p0), (80, p1), (95, p1)]
    );
    // Through the API too.
    let (_, b) = app.get("/v1/customers/t1/notifications").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 5);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_stable_across_restarts_and_overrides_win() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let app = app_on(url.clone(), None, |_| {}).await;
    let mut first = Vec::new();
    for i in 0..50 {
        let id = format!("u{i}");
        app.customer(&id, None).await;
        let (s, b) = app.get(&format!("/v1/flags?customer={id}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["environment"], "production");
        let flags = b["flags"].as_array().unwrap();
        assert_eq!(flags.len(), 3);
        let dev = flags.iter().find(|f| f["flag"] == "dev_only").unwrap();
        assert_eq!(
            (dev["enabled"].clone(), dev["reason"].clone()),
            (json!(false), json!("environment"))
        );
        let off = flags.iter().find(|f| f["flag"] == "off").unwrap();
        assert_eq!(off["reason"], "disabled");
        first.push(b);
    }
    app.server.shutdown().await.unwrap();
    let app = app_on(url, None, |c| c.environment = "development".into()).await;
    for (i, before) in first.iter().enumerate() {
        let (_, b) = app.get(&format!("/v1/flags?customer=u{i}")).await;
        let pick = |v: &Value| {
            v["flags"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["flag"] == "new_ui")
                .cloned()
        };
        assert_eq!(pick(&b), pick(before));
        let dev = b["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flag"] == "dev_only")
            .cloned()
            .unwrap();
        assert_eq!(dev["enabled"], true);
    }
    // Overrides.
    let (s, _) = app
        .put("/v1/customers/u0/flags/off", json!({"enabled": true}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = app.get("/v1/flags?customer=u0").await;
    let off = b["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flag"] == "off")
        .cloned()
        .unwrap();
    assert_eq!(
        (off["enabled"].clone(), off["reason"].clone()),
        (json!(true), json!("override"))
    );
    let (s, _) = app
        .send(
            reqwest::Method::DELETE,
            "/v1/customers/u0/flags/off",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, b) = app.get("/v1/flags?customer=u0").await;
    let off = b["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flag"] == "off")
        .cloned()
        .unwrap();
    assert_eq!(off["enabled"], false);
    let (s, _) = app
        .put("/v1/customers/u0/flags/ghost", json!({"enabled": true}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app.get("/v1/flags").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("missing_customer"))
    );
    app.server.shutdown().await.unwrap();
}

#[test]
fn rollout_is_within_one_point_over_10000_customers() {
    let catalog = parse_catalog(CATALOG, "fixtures/credits.toml").unwrap();
    let flag = catalog.flag("new_ui").unwrap();
    let on = (0..10_000)
        .filter(|i| tally_core::flags::evaluate(flag, &format!("cus_{i}"), "production").enabled)
        .count();
    assert!(
        (2_900..=3_100).contains(&on),
        "{on} of 10000 for a 30 % rollout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let app = app_with(|c| {
        c.rate_limits = tally_server::ratelimit::RateLimits::from_args(
            0,
            0,
            &["GET /v1/customers/{id}=3/1m:customer".to_owned()],
        )
        .unwrap();
    })
    .await;
    app.customer("a", None).await;
    app.customer("b", None).await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/customers/a").await.0, StatusCode::OK);
    }
    let r = app
        .http
        .get(app.url("/v1/customers/a"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "20");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "rate_limit_error");
    // Another customer has its own budget; other routes are not limited.
    assert_eq!(app.get("/v1/customers/b").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/customers/a/credits").await.0, StatusCode::OK);
    app.server.shutdown().await.unwrap();

    // Per API key and route.
    let app = app_with(|c| {
        c.rate_limits = tally_server::ratelimit::RateLimits::from_args(2, 0, &[]).unwrap();
    })
    .await;
    assert_eq!(app.get("/v1/plans").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/plans").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/plans").await.0, StatusCode::TOO_MANY_REQUESTS);
    app.server.shutdown().await.unwrap();
}

#[test]
fn checkout_sessions_are_limited_to_5_per_minute_per_customer_by_default() {
    let d = tally_server::ratelimit::RateLimits::default();
    assert_eq!(d.routes.len(), 1);
    let r = &d.routes[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.count),
        ("POST", "/v1/checkout-sessions", 5)
    );
    assert_eq!(r.window, std::time::Duration::from_secs(60));
    assert_eq!(r.scope, tally_server::ratelimit::Scope::Customer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_credit_entitlement_and_flag_routes() {
    let app = app().await;
    let r = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    for path in [
        "/v1/customers/{id}/credits",
        "/v1/customers/{id}/credits/grants",
        "/v1/customers/{id}/credits/consume",
        "/v1/customers/{id}/audit",
        "/v1/customers/{id}/notifications",
        "/v1/entitlements/check",
        "/v1/flags",
        "/v1/customers/{id}/flags/{flag}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(
        doc["paths"]["/v1/customers/{id}/credits/consume"]["post"]["responses"]["402"].is_object()
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_usage_crossing_a_threshold_is_notified_without_a_check() {
    let app = app().await;
    app.customer("n1", None).await;
    let (s, b) = app
        .post(
            "/v1/events",
            json!({"events": [{"id": "a", "customer": "n1", "metric": "builds", "value": 96}]}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    // The background notifier looks at changed usage every second.
    let state = app.server.state();
    let mut got = Vec::new();
    for _ in 0..50 {
        got = state.store.notifications("n1").await.unwrap();
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t: Vec<u32> = got.iter().map(|n| n.threshold).collect();
    assert_eq!(t, vec![80, 95]);
    assert_eq!(got[0].used, dec!(96));
    assert_eq!(got[0].limit, dec!(100));
    // Nothing changed since: a direct run finds nothing to do and adds nothing.
    let n = tally_server::service::entitlements::notify_changed(state, Utc::now()).await;
    assert_eq!(n, 0);
    assert_eq!(state.store.notifications("n1").await.unwrap().len(), 2);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_scoped_route_limit_reads_the_customer_from_the_body() {
    let app = app_with(|c| {
        c.rate_limits = tally_server::ratelimit::RateLimits::from_args(
            0,
            0,
            &["POST /v1/entitlements/check=2/1m:customer".to_owned()],
        )
        .unwrap();
    })
    .await;
    app.customer("a", None).await;
    app.customer("b", None).await;
    let check = |c: &str| json!({"customer": c, "feature": "sso"});
    assert_eq!(
        app.post("/v1/entitlements/check", check("a")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.post("/v1/entitlements/check", check("a")).await.0,
        StatusCode::OK
    );
    let (s, b) = app.post("/v1/entitlements/check", check("a")).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited"))
    );
    // The body still reaches the handler intact for other customers.
    let (s, b) = app.post("/v1/entitlements/check", check("b")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["reason"], "feature_disabled");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gauge_keeps_its_last_level_into_later_periods() {
    let app = app().await;
    app.customer("g1", None).await;
    let (s, b) = app
        .post(
            "/v1/events",
            json!({"events": [{"id": "p", "customer": "g1", "metric": "projects", "value": 1}]}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let state = app.server.state();
    let c = state.store.get_customer("g1").await.unwrap().unwrap();
    let next =
        tally_core::period::allowance_period(c.billing_anchor, Utc::now()).end + Duration::days(40);
    let r = check_at(state, input("g1", None, Some("projects"), Some(1)), next)
        .await
        .unwrap();
    assert_eq!(r.used, Some(dec!(1)));
    assert!(!r.allowed);
    assert_eq!(r.reason, "limit_exceeded");
    // A metered metric starts from zero in a later period.
    let (s, _) = app
        .post(
            "/v1/events",
            json!({"events": [{"id": "b", "customer": "g1", "metric": "builds", "value": 100}]}),
        )
        .await;
    assert!(s.is_success());
    let r = check_at(state, input("g1", None, Some("builds"), Some(1)), next)
        .await
        .unwrap();
    assert_eq!((r.used, r.allowed), (Some(dec!(0)), true));
    app.server.shutdown().await.unwrap();
}

/// Ingests one event at a time and checks right after each acknowledgement, while other tasks
/// keep checking the same customer (so the rollups are cached and re-read all the time): every
/// check must see every event acknowledged before it started.
async fn checks_read_their_writes(app: &App) {
    app.customer("ryw", None).await;
    let check = || async {
        let (s, b) = app
            .post(
                "/v1/entitlements/check",
                json!({"customer": "ryw", "metric": "builds"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["used"].as_str().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(check().await, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for _ in 0..4 {
        let (http, url, stop) = (
            app.http.clone(),
            app.url("/v1/entitlements/check"),
            stop.clone(),
        );
        background.push(tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let b: Value = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"customer": "ryw", "metric": "builds"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let used = b["used"].as_str().unwrap().parse::<u64>().unwrap();
                assert!(used >= last, "usage went back from {last} to {used}");
                last = used;
            }
        }));
    }
    for i in 1..=60u64 {
        let (s, b) = app
            .post(
                "/v1/events",
                json!({"events": [{"id": format!("ryw{i}"), "customer": "ryw", "metric": "builds",
                                   "value": 1}]}),
            )
            .await;
        assert!(s.is_success(), "{b}");
        assert_eq!(
            check().await,
            i,
            "a check right after event {i} was acknowledged"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in background {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_read_their_writes_on_sqlite() {
    let app = app().await;
    checks_read_their_writes(&app).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_read_their_writes_on_postgres() {
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let app = app_on(url, None, |_| {}).await;
    checks_read_their_writes(&app).await;
    app.server.shutdown().await.unwrap();
}

/// The audit and ledger actor of the test apps' `TALLY_API_KEY`.
fn env_actor() -> String {
    tally_server::service::keys::Caller::env(common::KEY).key_id
}
