//! Hardening of the HTTP layer: slow and silent clients, the connection cap, every error in the
//! documented JSON shape, bounded metric labels, limited failed authentication, `/metrics` access.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &App) -> SocketAddr {
    app.server.addr()
}

/// Sends raw bytes and reads the whole answer (the request should ask `Connection: close`).
async fn raw(at: SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(request).await.unwrap();
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> (u16, String, Value) {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the server answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Whether the server closed `s` (end of stream or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout(within, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn assert_shape(body: &Value, status: u16, code: &str) {
    assert_eq!(body["error"]["code"], code, "{status}: {body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_and_json() {
    let app = app_with(|_| {}).await;
    let (status, head, body) = raw(
        addr(&app),
        format!("DELETE /v1/plans HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 405);
    assert!(head.contains("\r\nallow: get,head"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_shape(&body, 405, "method_not_allowed");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn unknown_paths_and_unreadable_parameters_answer_json() {
    let app = app_with(|_| {}).await;
    for path in ["/nope", "/v1/nope", "/v1/customers/a/b/c/d", "/health/x"] {
        let r = app
            .http
            .get(app.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_shape(&r.json().await.unwrap(), 404, "route_not_found");
    }
    // Percent-encoded bytes that are not UTF-8, in the path and in the query.
    let (s, body) = app.get("/v1/customers/%FF%FE").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_shape(&body, 400, "invalid_path_parameter");
    let (s, body) = app.get("/v1/customers/%FF/usage").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_shape(&body, 400, "invalid_path_parameter");
    let (s, body) = app.get("/v1/flags?customer=%FF").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_shape(&body, 400, "invalid_customer_id");
    // A body on a JSON route without the JSON content type.
    let r = app
        .http
        .post(app.url("/v1/events"))
        .bearer_auth(KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_shape(&r.json().await.unwrap(), 415, "unsupported_content_type");
}

#[tokio::test]
async fn a_trickling_body_is_cut_off_with_408() {
    let app = app_with(|c| c.body_timeout = Duration::from_millis(800)).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
             content-type: application/json\r\ncontent-length: 200\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1200), trickle).await;
    let (status, head, body) = read_answer(&mut s).await;
    assert_eq!(status, 408, "{head}");
    assert_shape(&body, 408, "request_timeout");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn unfinished_headers_and_idle_connections_are_closed() {
    let app = app_with(|c| {
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_millis(700);
    })
    .await;
    // Headers never finished.
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Nothing sent at all.
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    // Kept alive after one answer.
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 1024];
    let n = idle.read(&mut b).await.unwrap();
    assert!(b[..n].starts_with(b"HTTP/1.1 200"));
    let start = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert!(start.elapsed() < Duration::from_secs(3));
    // The server still answers.
    let (s, _) = app.get("/health").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn at_the_cap_new_clients_evict_connections_without_a_request() {
    let app = app_with(|c| {
        c.max_connections = 20;
        c.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One kept-alive client connection for the three requests below: it evicts one more.
    let http = reqwest::Client::new();
    let r = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(app.url("/v1/plans"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tally_http_connections_dropped_total{reason=\"evicted\"} 11\n"),
        "{text}"
    );
    assert!(text.contains("tally_http_connections_dropped_total{reason=\"refused\"} 0\n"));
    // The oldest eleven were closed, the newer ones are still open.
    for s in held.iter_mut().take(11) {
        assert!(closed_within(s, Duration::from_secs(2)).await);
    }
    for s in held.iter_mut().skip(11) {
        assert!(!closed_within(s, Duration::from_millis(50)).await);
    }
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = app_with(|_| {}).await;
    for i in 0..400 {
        let (status, _, body) = raw(
            addr(&app),
            format!("M{i}THOD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status, 405);
        assert_shape(&body, 405, "method_not_allowed");
    }
    for i in 0..50 {
        let (status, _, _) = raw(
            addr(&app),
            format!("X{i} /nothing/{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status, 404);
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("tally_http_requests_total{"))
        .filter_map(|l| l.split_once('}'))
        .map(|(labels, _)| labels)
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "method=\"other\",route=\"/health\",status=\"405\"",
            "method=\"other\",route=\"unmatched\",status=\"404\"",
        ]),
        "{text}"
    );
    assert!(text.contains(
        "tally_http_requests_total{method=\"other\",route=\"/health\",status=\"405\"} 400\n"
    ));
    assert!(text.len() < 8_000, "{} bytes", text.len());
}

#[tokio::test]
async fn failed_authentication_is_limited_before_any_key_lookup() {
    let app = app_with(|c| c.auth_failures_per_minute = 5).await;
    let (s, _) = app.put("/v1/customers/c1", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    let bad = |k: &'static str| {
        app.http
            .get(app.url("/v1/customers/c1"))
            .bearer_auth(k)
            .send()
    };
    for _ in 0..5 {
        let r = bad("tly_wrong-key-0000000000").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = bad("tly_wrong-key-0000000000").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=13).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_shape(&body, 429, "too_many_failed_authentications");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Over its limit, the address is refused whatever key it sends: no key is hashed or looked up.
    let (s, body) = app.get("/v1/customers/c1").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_shape(&body, 429, "too_many_failed_authentications");
    // A valid stored key is refused too, without being looked up: a lookup would have put it in
    // the key cache.
    let (_, secret) = tally_server::service::keys::create(
        &*app.server.state().store,
        "ops",
        tally_server::service::keys::Scope::Admin,
        None,
        None,
        app.server.state().clock.now(),
    )
    .await
    .unwrap();
    let r = app
        .http
        .get(app.url("/v1/customers/c1"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.server.state().key_cache.read().unwrap().len(), 0);
    // Routes without authentication are not affected.
    let r = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_the_limit_a_stored_key_is_looked_up() {
    // The control for the test above: the same request does reach the store.
    let app = app_with(|c| c.auth_failures_per_minute = 0).await;
    for _ in 0..30 {
        let r = app
            .http
            .get(app.url("/v1/plans"))
            .bearer_auth("tly_wrong-key-0000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (_, secret) = tally_server::service::keys::create(
        &*app.server.state().store,
        "ops",
        tally_server::service::keys::Scope::Admin,
        None,
        None,
        app.server.state().clock.now(),
    )
    .await
    .unwrap();
    let r = app
        .http
        .get(app.url("/v1/plans"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.server.state().key_cache.read().unwrap().len(), 1);
}

#[tokio::test]
async fn metrics_behind_a_token() {
    let app = app_with(|c| c.metrics_token = Some("metrics-token-0123456789".into())).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_shape(&r.json().await.unwrap(), 401, "invalid_metrics_token");
    let r = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("metrics-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("tally_events_total"));
}

#[tokio::test]
async fn metrics_on_their_own_address() {
    let app = app_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let m = app.server.metrics_addr().unwrap();
    assert_ne!(m, app.server.addr());
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_shape(&r.json().await.unwrap(), 404, "route_not_found");
    let r = app
        .http
        .get(format!("http://{m}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("tally_events_total"));
    let r = app
        .http
        .get(format!("http://{m}/v1/plans"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_without_waiting_for_slow_clients() {
    let app = app_with(|c| {
        c.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
        c.body_timeout = Duration::from_secs(60);
    })
    .await;
    let (s, _) = app.put("/v1/customers/c1", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    // A client that never finishes its headers.
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // A request in flight: headers sent, body still arriving.
    let mut busy = TcpStream::connect(addr(&app)).await.unwrap();
    let body =
        br#"{"events": [{"id": "e1", "customer": "c1", "metric": "compute_hours", "value": 2}]}"#;
    busy.write_all(
        format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    busy.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = app.server.state().clone();
    let start = Instant::now();
    let stopping = tokio::spawn(async move { app.server.shutdown().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    busy.write_all(&body[10..]).await.unwrap();
    let (status, _, answer) = read_answer(&mut busy).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"accepted": 1, "duplicates": 0}));
    stopping.await.unwrap().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(closed_within(&mut slow, Duration::from_secs(1)).await);
    drop(state);
}
