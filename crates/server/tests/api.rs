//! Drives the real server on a random loopback port with a temporary SQLite database.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};
use rust_decimal_macros::dec;
use serde_json::{json, Value};

#[macro_use]
mod common;

use common::{app_on, app_with, App, Db, KEY};

async fn app() -> App {
    app_with(|_| {}).await
}

on_both_backends!(
    events_are_counted_once_and_resends_are_duplicates,
    bad_requests_get_their_status_and_store_nothing,
    an_invalid_event_rejects_the_batch_and_every_reason_is_listed,
    the_same_batch_from_eight_clients_counts_once,
    magic_box_pro_upcoming_invoice_matches_the_preview,
    a_closed_period_is_invoiced_once_and_late_usage_becomes_an_adjustment,
);

impl App {
    async fn customer(&self, id: &str, plan: Option<&str>) {
        let (s, _) = self.put(&format!("/v1/customers/{id}"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED);
        if let Some(p) = plan {
            let (s, b) = self
                .put(
                    &format!("/v1/customers/{id}/subscription"),
                    json!({"plan": p, "interval": "month"}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
    }

    async fn stored(&self) -> u64 {
        self.server.state().store.event_count().await.unwrap()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn event(id: &str, customer: &str, metric: &str, value: Value) -> Value {
    json!({"id": id, "customer": customer, "metric": metric, "value": value, "timestamp": now()})
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn health_metrics_and_openapi_need_no_key() {
    let a = app().await;
    let r = a.http.get(a.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["database"]["backend"], "sqlite");

    let doc: Value = a
        .http
        .get(a.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/events",
        "/v1/customers/{id}",
        "/v1/customers/{id}/usage",
        "/v1/customers/{id}/invoices/upcoming",
        "/v1/customers/{id}/billing",
        "/v1/plans",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }

    a.get("/v1/plans").await;
    let text = a
        .http
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tally_events_total{outcome=\"accepted\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "tally_http_requests_total{method=\"GET\",route=\"/v1/plans\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("tally_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/plans\",le=\"+Inf\"} 1"));
}

#[tokio::test]
async fn every_v1_call_needs_a_valid_key() {
    let a = app().await;
    let r = a.http.get(a.url("/v1/plans")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let r = a
        .http
        .get(a.url("/v1/plans"))
        .bearer_auth("wrong-key-wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (key, secret) = tally_server::service::keys::create(
        &*a.server.state().store,
        "ci",
        tally_server::service::keys::Scope::Admin,
        None,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(secret.starts_with("tly_"));
    let r = a
        .http
        .get(a.url("/v1/plans"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["starter", "pro", "enterprise"]);
    a.server
        .state()
        .store
        .revoke_api_key(&key.id, chrono::Utc::now())
        .await
        .unwrap();
    // Validity is cached for up to KEY_CACHE_TTL; dropping the cache shows the revocation now.
    a.server.state().key_cache.write().unwrap().clear();
    let r = a
        .http
        .get(a.url("/v1/plans"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn customers_are_created_updated_and_validated() {
    let a = app().await;
    let (s, b) = a
        .put(
            "/v1/customers/acme:42",
            json!({"email": "ops@acme.test", "name": "Acme", "metadata": {"crm": "7"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["id"], "acme:42");
    let (s, b) = a
        .put("/v1/customers/acme:42", json!({"name": "Acme Inc"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["email"], "ops@acme.test");
    assert_eq!(b["name"], "Acme Inc");
    let (s, b) = a.get("/v1/customers/acme:42").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["metadata"]["crm"], "7");
    let (s, b) = a.get("/v1/customers/nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, "customer_not_found");
    let (s, b) = a.put("/v1/customers/bad%20id", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "invalid_customer_id");
    let (s, b) = a
        .put("/v1/customers/x", json!({"metadata": {"n": 1}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&b, "invalid_metadata");
    let (s, b) = a.put("/v1/customers/x", json!({"colour": "red"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "malformed_json");

    let (s, b) = a
        .put(
            "/v1/customers/acme:42/subscription",
            json!({"plan": "platinum"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&b, "unknown_plan");
    let (s, b) = a
        .put(
            "/v1/customers/acme:42/subscription",
            json!({"plan": "pro", "interval": "week"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&b, "invalid_interval");
    let (s, b) = a
        .put("/v1/customers/ghost/subscription", json!({"plan": "pro"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = a
        .put(
            "/v1/customers/acme:42/subscription",
            json!({"plan": "pro", "interval": "year"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            b["plan"].as_str(),
            b["interval"].as_str(),
            b["source"].as_str()
        ),
        (Some("pro"), Some("year"), Some("local"))
    );
}

async fn events_are_counted_once_and_resends_are_duplicates(db: Db) {
    let a = match app_on(db, |_| {}).await {
        Some(a) => a,
        None => return,
    };
    a.customer("c1", Some("pro")).await;
    let batch = json!({"events": [
        event("e1", "c1", "compute_hours", json!(1.5)),
        event("e2", "c1", "compute_hours", json!("2.25")),
        event("e1", "c1", "compute_hours", json!(9)),
    ]});
    let (s, b) = a.post("/v1/events", batch.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"accepted": 2, "duplicates": 1}));
    let (s, b) = a.post("/v1/events", batch).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"accepted": 0, "duplicates": 3}));
    let (_, u) = a.get("/v1/customers/c1/usage").await;
    let compute = u["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "compute_hours")
        .unwrap();
    assert_eq!(compute["used"], "3.75");
    assert_eq!(compute["included"], "300");
    assert_eq!(compute["percent"], "1.25");
    assert_eq!(compute["overage"], "0");
    assert_eq!(a.stored().await, 2);
}

async fn bad_requests_get_their_status_and_store_nothing(db: Db) {
    let a = match app_on(db, |c| c.max_body_bytes = 64 * 1024).await {
        Some(a) => a,
        None => return,
    };
    a.customer("c1", Some("pro")).await;
    let post_raw = |body: Vec<u8>, ct: &'static str| {
        let req = a
            .http
            .post(a.url("/v1/events"))
            .bearer_auth(KEY)
            .header("content-type", ct)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, b) = post_raw(b"{\"events\": [".to_vec(), "application/json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "malformed_json");
    let ok_body =
        serde_json::to_vec(&json!({"events": [event("e1", "c1", "compute_hours", json!(1))]}))
            .unwrap();
    let (s, b) = post_raw(ok_body.clone(), "text/plain").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&b, "unsupported_content_type");
    let (s, b) = a.post("/v1/events", json!({"events": []})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "empty_batch");
    let (s, b) = a.post("/v1/events", json!({"items": []})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "missing_events");
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"id": format!("e{i}"), "customer": "c1", "metric": "compute_hours"}))
        .collect();
    let (s, b) = a.post("/v1/events", json!({"events": many})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "batch_too_large");
    let huge = format!(
        "{{\"events\": [{{\"id\": \"{}\"}}]}}",
        "x".repeat(200 * 1024)
    );
    let (s, b) = post_raw(huge.into_bytes(), "application/json").await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&b, "body_too_large");
    assert_eq!(a.stored().await, 0);
    // Exactly 1000 events is fine.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("e{i}"), "customer": "c1", "metric": "compute_hours"}))
        .collect();
    let (s, b) = a.post("/v1/events", json!({"events": thousand})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"], 1000);
    let m = a
        .http
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("tally_events_total{outcome=\"accepted\"} 1000"),
        "{m}"
    );
}

async fn an_invalid_event_rejects_the_batch_and_every_reason_is_listed(db: Db) {
    let a = match app_on(db, |_| {}).await {
        Some(a) => a,
        None => return,
    };
    a.customer("c1", Some("pro")).await;
    let future = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(2)).to_rfc3339();
    let batch = json!({"events": [
        event("ok1", "c1", "compute_hours", json!(1)),
        event("x1", "ghost", "compute_hours", json!(1)),
        event("x2", "c1", "gpu_hours", json!(1)),
        {"customer": "c1", "metric": "compute_hours", "value": 1},
        event("x4", "c1", "compute_hours", json!("NaN")),
        event("x5", "c1", "compute_hours", json!("abc")),
        event("x6", "c1", "compute_hours", json!(-1)),
        {"id": "x7", "customer": "c1", "metric": "compute_hours", "value": 1, "timestamp": future},
        event("x8", "c1", "compute_hours", json!("1e99999")),
        {"id": "ok2", "customer": "c1", "metric": "compute_hours", "value": 1, "timestamp": soon},
    ]});
    let (s, b) = a.post("/v1/events", batch).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_error(&b, "invalid_events");
    let got: Vec<(u64, &str)> = b["error"]["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["index"].as_u64().unwrap(), i["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "unknown_customer"),
            (2, "unknown_metric"),
            (3, "missing_id"),
            (4, "invalid_value"),
            (5, "invalid_value"),
            (6, "negative_value"),
            (7, "timestamp_in_future"),
            (8, "invalid_value"),
        ]
    );
    assert_eq!(a.stored().await, 0);
    let (_, u) = a.get("/v1/customers/c1/usage").await;
    assert_eq!(u["metrics"][0]["used"], "0");
}

async fn the_same_batch_from_eight_clients_counts_once(db: Db) {
    let a = match app_on(db, |_| {}).await {
        Some(a) => a,
        None => return,
    };
    a.customer("c1", Some("pro")).await;
    let batch = json!({"events": (0..100).map(|i| event(&format!("e{i}"), "c1", "compute_hours", json!("0.5"))).collect::<Vec<_>>()});
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = Client::new();
        let url = a.url("/v1/events");
        let body = batch.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for t in tasks {
        let b = t.await.unwrap();
        accepted += b["accepted"].as_u64().unwrap();
        duplicates += b["duplicates"].as_u64().unwrap();
    }
    assert_eq!((accepted, duplicates), (100, 700));
    assert_eq!(a.stored().await, 100);
    let (_, u) = a.get("/v1/customers/c1/usage").await;
    assert_eq!(u["metrics"][0]["metric"], "compute_hours", "catalog order");
    let compute = u["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "compute_hours")
        .unwrap();
    assert_eq!(compute["used"], "50.0");
}

async fn magic_box_pro_upcoming_invoice_matches_the_preview(db: Db) {
    let a = match app_on(db, |_| {}).await {
        Some(a) => a,
        None => return,
    };
    a.customer("mb_1", Some("pro")).await;
    let mut events = Vec::new();
    // 350 compute hours in 35 events, EUR 180 of API spend in 4 events.
    for i in 0..35 {
        events.push(event(&format!("c{i}"), "mb_1", "compute_hours", json!(10)));
    }
    for (i, v) in ["45.50", "44.50", "60", "30.00"].iter().enumerate() {
        events.push(event(&format!("s{i}"), "mb_1", "api_spend", json!(v)));
    }
    let (s, b) = a.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, got) = a.get("/v1/customers/mb_1/invoices/upcoming").await;
    assert_eq!(s, StatusCode::OK, "{got}");

    // What `tally invoice preview --plan pro --usage compute_hours=350 --usage api_spend=180 --json` prints.
    let catalog =
        tally_core::catalog::Catalog::parse(tally_server::config::EXAMPLE_CATALOG, "magicbox.toml")
            .unwrap();
    let usage = BTreeMap::from([
        ("compute_hours".to_string(), dec!(350)),
        ("api_spend".to_string(), dec!(180)),
    ]);
    let plan = catalog.plan("pro").unwrap();
    let preview = tally_core::rating::rate(&tally_core::rating::RatingInput::new(
        plan,
        tally_core::period::Interval::Month,
        &usage,
    ))
    .unwrap();
    let expected = serde_json::to_value(&preview).unwrap();
    let mut got_invoice = got.clone();
    let obj = got_invoice.as_object_mut().unwrap();
    obj.remove("customer");
    obj.remove("period");
    assert_eq!(got_invoice, expected);
    // 199.00 base + 50 h × 0.04 + 30 EUR × 1.15.
    assert_eq!(got["total"], 19900 + 200 + 3450);
    assert_eq!(got["currency"], "eur");

    let (s, billing) = a.get("/v1/customers/mb_1/billing").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(billing["plan"], "pro");
    assert_eq!(billing["upcoming_invoice"]["total"], 23550);
    assert_eq!(billing["invoices"], json!([]));
}

async fn a_closed_period_is_invoiced_once_and_late_usage_becomes_an_adjustment(db: Db) {
    use tally_server::service::{closer, usage};
    let a = match app_on(db, |c| c.grace = std::time::Duration::from_secs(3600)).await {
        Some(a) => a,
        None => return,
    };
    a.customer("c1", Some("pro")).await;
    let events = json!({"events": [event("e1", "c1", "compute_hours", json!(310))]});
    assert_eq!(a.post("/v1/events", events).await.0, StatusCode::OK);
    let state = a.server.state();
    let customer = state.store.get_customer("c1").await.unwrap().unwrap();
    let p1 = tally_core::period::allowance_period(customer.billing_anchor, chrono::Utc::now());

    // Within the grace window nothing closes.
    let within = p1.end + chrono::Duration::minutes(30);
    assert!(closer::close_due(state, within).await.unwrap().is_empty());
    let after = p1.end + chrono::Duration::hours(2);
    let written = closer::close_due(state, after).await.unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].period_start, p1.start);
    assert_eq!(written[0].total, 19900 + 40);
    assert!(
        closer::close_due(state, after).await.unwrap().is_empty(),
        "exactly once"
    );
    let (_, list) = a.get("/v1/customers/c1/invoices").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["total"], 19940);

    // A late event of p1 is billed in p2 as a labelled adjustment: 5 more hours × 0.04.
    let late = json!({"events": [event("late", "c1", "compute_hours", json!(5))]});
    assert_eq!(a.post("/v1/events", late).await.0, StatusCode::OK);
    let p2 = tally_core::period::allowance_period(customer.billing_anchor, p1.end);
    let u = usage::period_usage(state, &customer, p2).await.unwrap();
    let billed = usage::billed_plan(
        &state.catalog,
        state.store.get_subscription("c1").await.unwrap().as_ref(),
    )
    .unwrap();
    let inv = usage::rate_period(&state.catalog, &billed, customer.billing_anchor, p2, &u).unwrap();
    let adj: Vec<_> = inv
        .lines
        .iter()
        .filter(|l| l.kind == tally_core::rating::LineKind::Adjustment)
        .collect();
    assert_eq!(adj.len(), 1);
    assert_eq!(adj[0].amount, 20);
    assert!(
        adj[0]
            .description
            .starts_with("Late usage of Compute hours"),
        "{}",
        adj[0].description
    );
    let written = closer::close_due(state, p2.end + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].total, 19900 + 20);
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let a = app().await;
    let (s, b) = a.get("/v1/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, "route_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_in_flight_writes() {
    let a = app().await;
    a.customer("c1", Some("pro")).await;
    let url_db = a.server.state().config.database_url.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (http, url, acked) = (a.http.clone(), a.url("/v1/events"), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let ids: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| event(id, "c1", "compute_hours", json!(1)))
                    .collect();
                match http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(ids),
                    _ => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 2000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let App { server, _dir, .. } = a;
    server.shutdown().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let store = tally_store::connect(&url_db).await.unwrap();
    let stored: std::collections::HashSet<String> =
        store.event_ids("c1").await.unwrap().into_iter().collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "an acknowledged event is missing"
    );
    drop(_dir);
}
