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
