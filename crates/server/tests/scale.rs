//! Several Tally instances on one PostgreSQL database: limits they count together.

mod common;

use common::{app_on_url, App, KEY};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

/// Two instances of the server on one fresh PostgreSQL database, each with `limits`; `None` when
/// PostgreSQL is not configured (outside CI).
async fn two_instances(limits: &'static [&'static str]) -> Option<(App, App)> {
    let url = tally_store::testing::fresh_postgres_url().await?;
    let set = |c: &mut tally_server::Config| {
        let routes: Vec<String> = limits.iter().map(|s| s.to_string()).collect();
        c.rate_limits = tally_server::ratelimit::RateLimits::from_args(0, 0, &routes).unwrap();
    };
    let a = app_on_url(url.clone(), None, set).await;
    let b = app_on_url(url, None, set).await;
    Some((a, b))
}

/// Sends `n` requests at once, alternating between the two instances; returns the statuses.
async fn burst(
    a: &App,
    b: &App,
    n: usize,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Vec<StatusCode> {
    let requests = (0..n).map(|i| {
        let app = if i % 2 == 0 { a } else { b };
        let mut r = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(KEY);
        if let Some(body) = &body {
            r = r.json(body);
        }
        async move { r.send().await.unwrap().status() }
    });
    join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_of_10_per_minute_shared_by_two_instances_admits_exactly_10() {
    let Some((a, b)) = two_instances(&["GET /v1/customers/{id}=10/1m:customer"]).await else {
        return;
    };
    assert_eq!(
        a.put("/v1/customers/c1", json!({})).await.0,
        StatusCode::CREATED
    );
    let got = burst(&a, &b, 30, reqwest::Method::GET, "/v1/customers/c1", None).await;
    let ok = got.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = got
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (10, 20), "{got:?}");
    // Each instance refuses on its own too, with the wait until the next slot (6 s at most).
    let r = b
        .http
        .get(b.url("/v1/customers/c1"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkout_limit_is_shared_by_two_instances() {
    // The default limits: 5 checkout sessions per minute per customer.
    let Some((a, b)) = two_instances(&[]).await else {
        return;
    };
    for c in ["c1", "c2"] {
        assert_eq!(
            a.put(&format!("/v1/customers/{c}"), json!({})).await.0,
            StatusCode::CREATED
        );
    }
    let body = json!({"customer": "c1", "plan": "pro", "interval": "month"});
    let got = burst(
        &a,
        &b,
        12,
        reqwest::Method::POST,
        "/v1/checkout-sessions",
        Some(body),
    )
    .await;
    let limited = got
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // Without Stripe the admitted ones answer 503; only the count of refusals matters here.
    assert_eq!(limited, 7, "{got:?}");
    // Another customer is counted apart.
    let other = json!({"customer": "c2", "plan": "pro", "interval": "month"});
    let got = burst(
        &a,
        &b,
        2,
        reqwest::Method::POST,
        "/v1/checkout-sessions",
        Some(other),
    )
    .await;
    assert!(!got.contains(&StatusCode::TOO_MANY_REQUESTS), "{got:?}");
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}

/// The daily reconciliation runs once a day across two instances: the one that ran it holds its
/// lease for the day, so the other instance's daily tick, at any hour of that day, runs nothing;
/// a day later exactly one of them runs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_reconciliation_runs_once_a_day_across_two_instances() {
    use tally_server::service::reconcile;
    use tally_store::clock::Clock;
    let Some(url) = tally_store::testing::fresh_postgres_url().await else {
        return;
    };
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-10T06:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Clock::frozen(start);
    let instance = |url: String| {
        let (clock, base) = (clock.clone(), sim.base_url());
        app_on_url(url, None, move |c| {
            c.clock = clock;
            c.stripe.api_key = Some("sk_test_tally".into());
            c.stripe.api_base = Some(base);
        })
    };
    let a = instance(url.clone()).await;
    let b = instance(url).await;
    let (sa, sb) = (a.server.state(), b.server.state());
    assert_eq!(reconcile::daily(sa).await.unwrap(), Some(0));
    assert_eq!(reconcile::daily(sb).await.unwrap(), None);
    // The other instance's tick later that day: nothing runs.
    clock.advance(chrono::Duration::minutes(23 * 60 + 59));
    assert_eq!(reconcile::daily(sb).await.unwrap(), None);
    // A day after the run: the first tick runs it, the other one that day does not.
    clock.advance(chrono::Duration::minutes(1));
    assert_eq!(reconcile::daily(sb).await.unwrap(), Some(0));
    assert_eq!(reconcile::daily(sa).await.unwrap(), None);
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}
