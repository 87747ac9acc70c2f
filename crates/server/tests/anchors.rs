//! Allowance periods follow a mirrored Stripe subscription's billing cycle anchor, on SQLite and
//! PostgreSQL: a customer created on the 3rd takes a subscription on the 17th → usage on the 16th
//! of the next month counts in the first Stripe period, usage on the 17th in the second, the
//! closer closes on the anchor; and a second server on the same PostgreSQL, which had cached the
//! old anchor, answers the same periods right after the first one mirrored the webhook. Tally's
//! clock is moved only through `POST /v1/clock/advance`; the webhook is signed as Stripe signs.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::{app_on, app_on_url, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_store::clock::Clock;

const CATALOG: &str = include_str!("../../../catalogs/devflowhub.toml");
const SECRET: &str = "whsec_anchor_secret";
const CUSTOMER: &str = "anchored";

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
}

fn config(c: &mut tally_server::Config) {
    c.catalog = Arc::new(parse_catalog(CATALOG, "devflowhub.toml").unwrap());
    c.clock = Clock::frozen(at(1, 3, 9));
    c.movable_clock = true;
    c.stripe_webhook_secrets = vec![SECRET.into()];
}

/// `customer.subscription.created` for Pro monthly, anchored at `anchor`, as Stripe renders it.
fn subscription_created(anchor: DateTime<Utc>) -> String {
    let (start, end) = (anchor.timestamp(), at(2, 17, 10).timestamp());
    let price = json!({"id": "price_pro", "object": "price", "product": "prod_pro",
                          "active": true, "currency": "usd", "unit_amount": 6000,
                          "recurring": {"interval": "month", "interval_count": 1},
                          "lookup_key": "devflowhub_pro_monthly", "metadata": {}});
    let sub = json!({
            "id": "sub_anchor", "object": "subscription", "customer": "cus_anchor",
            "status": "active", "cancel_at_period_end": false, "cancel_at": null,
            "canceled_at": null, "trial_end": null, "latest_invoice": null,
            "billing_cycle_anchor": start,
            "metadata": {"tally_customer_id": CUSTOMER},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": "si_anchor", "object": "subscription_item", "quantity": 1,
                "current_period_start": start, "current_period_end": end, "price": price,
            }]},
    });
    json!({
        "id": "evt_anchor_1", "object": "event", "type": "customer.subscription.created",
        "created": start, "livemode": false, "api_version": tally_stripe::API_VERSION,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": sub},
    })
    .to_string()
}

async fn advance(app: &App, by: &str) {
    let (s, b) = app.post("/v1/clock/advance", json!({ "by": by })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn usage_event(app: &App, id: &str, hours: u32, t: DateTime<Utc>) {
    let (s, b) = app
        .post(
            "/v1/events",
            json!({"events": [{"id": id, "customer": CUSTOMER, "metric": "build_hours",
                               "value": hours, "timestamp": t.to_rfc3339()}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"], 1, "{b}");
}

/// The usage period and the build hours used in it, as `app` answers them.
async fn period_and_used(app: &App) -> (DateTime<Utc>, DateTime<Utc>, String) {
    let (s, b) = app.get(&format!("/v1/customers/{CUSTOMER}/usage")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let t = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let used = b["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "build_hours")
        .map(|m| m["used"].as_str().unwrap().to_owned())
        .unwrap();
    (t(&b["period"]["start"]), t(&b["period"]["end"]), used)
}

/// Polls `app` until its usage period starts at `start` (within `within`).
async fn period_until(app: &App, start: DateTime<Utc>, within: Duration) {
    let t0 = Instant::now();
    loop {
        let (s, _, _) = period_and_used(app).await;
        if s == start {
            return;
        }
        assert!(t0.elapsed() < within, "the period still starts at {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `app`'s clock reads `t` (an advance made through another server).
async fn clock_until(app: &App, t: DateTime<Utc>) {
    let t0 = Instant::now();
    while app.server.state().clock.now() != t {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the clock is still at {}",
            app.server.state().clock.now()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn periods_follow_the_stripe_anchor(db: Db) {
    let Some(a) = app_on(db, config).await else {
        return;
    };
    let (s, b) = a.put(&format!("/v1/customers/{CUSTOMER}"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A second server on the same PostgreSQL (its own caches), which reads the customer first.
    let b_app = match db {
        Db::Postgres => {
            Some(app_on_url(a.server.state().config.database_url.clone(), None, config).await)
        }
        Db::Sqlite => None,
    };
    advance(&a, "7d").await;
    usage_event(&a, "before_stripe", 2, at(1, 10, 9)).await;
    assert_eq!(
        period_and_used(&a).await,
        (at(1, 3, 9), at(2, 3, 9), "2".to_string())
    );
    if let Some(b) = &b_app {
        // Follows the advance made through the first server, and caches the old anchor.
        clock_until(b, at(1, 10, 9)).await;
        usage_event(b, "before_stripe_b", 1, at(1, 10, 9)).await;
        assert_eq!(
            period_and_used(b).await,
            (at(1, 3, 9), at(2, 3, 9), "3".to_string())
        );
    }
    // The subscription starts on the 17th at 10:00: Stripe's billing cycle anchor.
    advance(&a, "7d").await;
    advance(&a, "1h").await;
    let body = subscription_created(at(1, 17, 10));
    let now = a.server.state().clock.unshifted_now().timestamp();
    let r = a
        .http
        .post(a.url("/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            tally_stripe::webhook::signature_header(body.as_bytes(), &[SECRET], now),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    period_until(&a, at(1, 17, 10), Duration::from_secs(10)).await;
    assert_eq!(
        period_and_used(&a).await,
        (at(1, 17, 10), at(2, 17, 10), "0".to_string())
    );
    if let Some(b) = &b_app {
        // Within the other process's sync interval plus its one-second plan cache.
        let mirrored = Instant::now();
        period_until(b, at(1, 17, 10), Duration::from_millis(1500)).await;
        println!(
            "second server saw the new anchor after {:?}",
            mirrored.elapsed()
        );
        assert_eq!(
            period_and_used(b).await,
            (at(1, 17, 10), at(2, 17, 10), "0".to_string())
        );
    }
    // Feb 16, 12:00: still the first Stripe period.
    advance(&a, "30d").await;
    advance(&a, "2h").await;
    usage_event(&a, "feb16", 5, at(2, 16, 12)).await;
    assert_eq!(
        period_and_used(&a).await,
        (at(1, 17, 10), at(2, 17, 10), "5".to_string())
    );
    if let Some(b) = &b_app {
        clock_until(b, at(2, 16, 12)).await;
        usage_event(b, "feb16_b", 1, at(2, 16, 12)).await;
        assert_eq!(
            period_and_used(b).await,
            (at(1, 17, 10), at(2, 17, 10), "6".to_string())
        );
    }
    // Feb 17, 12:00: the second one.
    advance(&a, "1d").await;
    usage_event(&a, "feb17", 7, at(2, 17, 12)).await;
    assert_eq!(
        period_and_used(&a).await,
        (at(2, 17, 10), at(3, 17, 10), "7".to_string())
    );
    if let Some(b) = &b_app {
        clock_until(b, at(2, 17, 12)).await;
        assert_eq!(
            period_and_used(b).await,
            (at(2, 17, 10), at(3, 17, 10), "7".to_string())
        );
    }
    // The closer closed on the anchor: the free plan's days up to it, then Pro's first month.
    advance(&a, "2h").await;
    let (s, inv) = a.get(&format!("/v1/customers/{CUSTOMER}/invoices")).await;
    assert_eq!(s, StatusCode::OK, "{inv}");
    let mut closed: Vec<(String, String, String, i64)> = inv["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["plan"].as_str().unwrap().to_owned(),
                i["period"]["start"].as_str().unwrap().to_owned(),
                i["period"]["end"].as_str().unwrap().to_owned(),
                i["total"].as_i64().unwrap(),
            )
        })
        .collect();
    closed.sort_by(|x, y| x.1.cmp(&y.1));
    let t = |d: DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(
        closed,
        vec![
            ("free".into(), t(at(1, 3, 9)), t(at(1, 17, 10)), 0),
            ("pro".into(), t(at(1, 17, 10)), t(at(2, 17, 10)), 6000),
        ],
        "{inv}"
    );
}

on_both_backends!(periods_follow_the_stripe_anchor);
