//! Test harness: the simulator on a random loopback port, a form-encoding client and a webhook
//! receiver that records every delivery.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripe_sim::{Config, SimHandle};

pub const KEY: &str = "sk_test_simulator";

pub struct Env {
    pub sim: SimHandle,
    pub base: String,
    pub http: reqwest::Client,
}

pub async fn start() -> Env {
    start_with(Config::default()).await
}

pub async fn start_with(mut cfg: Config) -> Env {
    cfg.port = 0;
    cfg.webhook_retry_base = Duration::from_millis(50);
    cfg.webhook_retry_max = Duration::from_millis(400);
    cfg.webhook_timeout = Duration::from_secs(2);
    let sim = stripe_sim::spawn(cfg).await.expect("simulator starts");
    let base = sim.base_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env { sim, base, http }
}

/// Encodes `[("a[b][0]", "x")]` pairs as a form body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Env {
    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        pairs: &[(&str, &str)],
        idem: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let body = form(pairs);
        let mut rb = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            let sep = if url.contains('?') { '&' } else { '?' };
            self.http.request(
                method,
                if body.is_empty() {
                    url
                } else {
                    format!("{url}{sep}{body}")
                },
            )
        } else {
            self.http
                .request(method, url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        };
        rb = rb.bearer_auth(KEY);
        if let Some(k) = idem {
            rb = rb.header("Idempotency-Key", k);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, v)
    }

    /// POSTs without an idempotency key and without asserting success: (status, body).
    pub async fn try_post(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        self.req(reqwest::Method::POST, path, pairs, None).await
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Value {
        let (st, v) = self.try_post(path, pairs).await;
        assert_eq!(st, 200, "POST {path} {pairs:?} -> {v}");
        v
    }

    /// GETs without asserting success: (status, body).
    pub async fn try_get(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, path, &[], None).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let (st, v) = self.try_get(path).await;
        assert_eq!(st, 200, "GET {path} -> {v}");
        v
    }

    pub async fn delete(&self, path: &str) -> Value {
        let (st, v) = self.req(reqwest::Method::DELETE, path, &[], None).await;
        assert_eq!(st, 200, "DELETE {path} -> {v}");
        v
    }

    /// Types of every event, oldest first, from `GET /v1/events`.
    pub async fn event_types(&self) -> Vec<String> {
        self.events()
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every event, oldest first, paging through `GET /v1/events`.
    pub async fn events(&self) -> Vec<Value> {
        let mut all = vec![];
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/events?limit=100".to_string();
            if let Some(a) = &after {
                path.push_str(&format!("&starting_after={a}"));
            }
            let page = self.get(&path).await;
            let data = page["data"].as_array().unwrap().clone();
            after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
            all.extend(data);
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
        }
        all.reverse();
        all
    }

    /// Injects a fault through `POST /_sim/faults`; returns the HTTP status.
    pub async fn fault(&self, body: Value) -> u16 {
        self.http
            .post(format!("{}/_sim/faults", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Registers a webhook endpoint delivering `events` (`"*"` for all) to `rx`.
    pub async fn webhook_endpoint(&self, rx: &Receiver, events: &[&str]) -> Value {
        let url = rx.url();
        let mut pairs = vec![("url", url.as_str())];
        pairs.extend(events.iter().map(|e| ("enabled_events[]", *e)));
        self.post("/v1/webhook_endpoints", &pairs).await
    }

    /// Creates a billing meter that sums its events' values.
    pub async fn sum_meter(&self, display_name: &str, event_name: &str) -> Value {
        self.post(
            "/v1/billing/meters",
            &[
                ("display_name", display_name),
                ("event_name", event_name),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await
    }

    /// GETs a hosted page (checkout, portal) without credentials; returns its body.
    pub async fn html(&self, url: &str) -> String {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn clock(&self, t: i64) -> String {
        let c = self
            .post(
                "/v1/test_helpers/test_clocks",
                &[("frozen_time", &t.to_string())],
            )
            .await;
        c["id"].as_str().unwrap().to_string()
    }

    pub async fn advance(&self, clock: &str, t: i64) {
        self.post(
            &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
            &[("frozen_time", &t.to_string())],
        )
        .await;
        let c = self
            .get(&format!("/v1/test_helpers/test_clocks/{clock}"))
            .await;
        assert_eq!(c["status"], "ready");
        assert_eq!(c["frozen_time"], t);
    }
}

/// One recorded webhook delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub signature: String,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Delivery>>>,
    /// Answer 500 to this many deliveries first.
    pub fail_first: Arc<Mutex<u32>>,
    pub addr: Option<SocketAddr>,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> Receiver {
        let mut r = Receiver {
            got: Default::default(),
            fail_first: Arc::new(Mutex::new(fail_first)),
            addr: None,
        };
        let rr = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let rr = rr.clone();
                async move {
                    let mut f = rr.fail_first.lock().unwrap();
                    if *f > 0 {
                        *f -= 1;
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let sig = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    rr.got.lock().unwrap().push(Delivery {
                        signature: sig,
                        body: body.to_vec(),
                    });
                    StatusCode::OK
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r.addr = Some(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr.unwrap())
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` deliveries arrived (or panics after 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        for _ in 0..200 {
            if self.got.lock().unwrap().len() >= n {
                return self.deliveries();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {n} deliveries, got {}",
            self.got.lock().unwrap().len()
        );
    }
}

/// Submits the hosted checkout form like a person would; returns (status, Location header).
pub async fn pay_checkout(
    env: &Env,
    url: &str,
    card: &str,
    promo: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut pairs = vec![
        ("email", "buyer@example.com"),
        ("name", "Ada Buyer"),
        ("card_number", card),
        ("card_expiry", "12 / 34"),
        ("card_cvc", "123"),
    ];
    if let Some(p) = promo {
        pairs.push(("promotion_code", p));
    }
    let r = env
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&pairs))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (st, loc, r.text().await.unwrap())
}

/// 2026-01-01T00:00:00Z
pub const JAN1: i64 = 1_767_225_600;
pub const DAY: i64 = 86_400;
