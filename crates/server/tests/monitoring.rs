//! Monitoring through the real server and the Stripe simulator: every metric `/metrics` exports is
//! documented in docs/metrics.md (and the other way round); requests to Stripe are counted by
//! endpoint and outcome; `/health` reports Stripe's reachability from Tally's own requests (never
//! calling Stripe for the probe) and turns `degraded` when Stripe cannot be reached.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{app_on, App, Db, KEY};
use reqwest::StatusCode;
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

[plans.free]
name = "Free"

[plans.pro]
name = "Pro"
prices.month = { amount = "29.00", lookup_key = "mon_pro_monthly" }
"#;

const SK: &str = "sk_test_tally";
const DOCS: &str = include_str!("../../../docs/metrics.md");

async fn world(db: Db) -> Option<(App, stripe_sim::SimHandle)> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let parsed = tally_server::config::parse_catalog(CATALOG, "test.toml").unwrap();
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&client, &parsed, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    let app = app_on(db, |c| {
        c.catalog = std::sync::Arc::new(parsed);
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.success_url = Some("https://app.test/ok".into());
        c.stripe.cancel_url = Some("https://app.test/pricing".into());
    })
    .await?;
    Some((app, sim))
}

async fn metrics(app: &App) -> String {
    app.http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn value(text: &str, series: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or("absent")
        .to_owned()
}

async fn health(app: &App) -> (StatusCode, Value) {
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

/// The metric names of docs/metrics.md's table of exported metrics.
fn documented() -> BTreeSet<String> {
    let table = DOCS
        .split("## Exported")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

on_both_backends!(stripe_requests_are_counted_and_health_follows_them);

async fn stripe_requests_are_counted_and_health_follows_them(db: Db) {
    let Some((app, sim)) = world(db).await else {
        return;
    };
    // Before any request to Stripe: unknown, and no probe calls it.
    let (s, h) = health(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["stripe"]["status"], "unknown", "{h}");
    assert_eq!(h["stripe"]["inbox_lag_seconds"], 0);
    assert_eq!(h["status"], "ok");

    let (s, b) = app
        .put("/v1/customers/c1", json!({"email": "c1@example.com"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "c1", "plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let text = metrics(&app).await;
    assert_eq!(
        value(
            &text,
            "tally_stripe_requests_total{endpoint=\"/v1/checkout/sessions\",outcome=\"ok\"}"
        ),
        "1",
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "tally_stripe_request_duration_seconds_count{endpoint=\"/v1/checkout/sessions\"}"
        ),
        "1"
    );
    assert_eq!(
        value(&text, "tally_checkout_sessions_total{outcome=\"created\"}"),
        "1"
    );
    assert_eq!(value(&text, "tally_stripe_reachable"), "1");
    let (s, h) = health(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["stripe"]["status"], "ok", "{h}");
    assert!(h["stripe"]["last_success_at"].is_string(), "{h}");

    // Every exported family is documented, and every documented metric is exported (the lag
    // histograms appear with their first observation, the series labelled by what Stripe sends
    // with the first of it; none happened here).
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let docs = documented();
    let undocumented: Vec<_> = exported.difference(&docs).collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
    let lazy: BTreeSet<String> = [
        "tally_stripe_webhook_processing_lag_seconds",
        "tally_webhook_delivery_lag_seconds",
        "tally_revenue_collected_minor_total",
        "tally_stripe_webhook_events_total",
    ]
    .map(str::to_owned)
    .into();
    let missing: Vec<_> = docs
        .difference(&exported)
        .filter(|m| !lazy.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );

    // Stripe goes away: the next checkout (which first looks for the customer's subscriptions)
    // fails after the client's 3 attempts, each counted, and /health says so without calling
    // Stripe.
    sim.shutdown().await;
    let r = app
        .http
        .post(app.url("/v1/checkout-sessions"))
        .bearer_auth(KEY)
        .json(&json!({"customer": "c1", "plan": "pro", "interval": "month"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let text = metrics(&app).await;
    assert_eq!(
        value(
            &text,
            "tally_stripe_requests_total{endpoint=\"/v1/subscriptions\",outcome=\"network_error\"}"
        ),
        "3",
        "{text}"
    );
    assert_eq!(value(&text, "tally_stripe_reachable"), "0");
    assert_eq!(
        value(&text, "tally_checkout_sessions_total{outcome=\"created\"}"),
        "1"
    );
    let (s, h) = health(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["stripe"]["status"], "unreachable", "{h}");
    assert!(
        h["stripe"]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("GET /v1/subscriptions: "),
        "{h}"
    );
    app.server.shutdown().await.unwrap();
}
