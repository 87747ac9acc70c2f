//! Fault injection: the next N requests to a path answer 429 or 500 or hang; the next N webhook
//! deliveries are dropped, duplicated or reordered.

use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpFaultKind {
    /// 429 `rate_limit` error.
    RateLimit,
    /// 500 `api_error`.
    ServerError,
    /// The request is held for `hang_ms` before being processed (past a client's timeout).
    Hang,
    /// 429 `lock_timeout`: another request holds a lock on the object.
    LockTimeout,
    /// 409: the request conflicts with another one.
    Conflict,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpFault {
    /// Path prefix the fault applies to, e.g. `/v1/customers`.
    pub path: String,
    /// Optional HTTP method filter (`POST`, `GET`, …).
    #[serde(default)]
    pub method: Option<String>,
    pub kind: HttpFaultKind,
    pub remaining: u32,
    #[serde(default)]
    pub hang_ms: u64,
    /// Overrides the `Stripe-Should-Retry` header of the injected answer (`None`: Stripe's
    /// default for the status).
    #[serde(default)]
    pub should_retry: Option<bool>,
    /// Matching requests to let through before the fault starts (to fail a run half-way).
    #[serde(default)]
    pub after: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Faults {
    pub http: Vec<HttpFault>,
    /// `drop`, `duplicate` or `reorder`, one per upcoming delivery.
    pub webhooks: VecDeque<String>,
    /// Every API request received, as `METHOD /path`, in arrival order (faulted ones included),
    /// so tests can count a client's attempts.
    #[serde(skip)]
    pub log: Vec<String>,
    /// Idempotency slots of requests being processed (held by a `timeout` fault): a concurrent
    /// request with the same key answers 409, as Stripe does.
    #[serde(skip)]
    pub in_flight: HashSet<String>,
}

impl Faults {
    pub fn take_http_fault(&mut self, method: &str, path: &str) -> Option<HttpFault> {
        let f = self.http.iter_mut().find(|f| {
            f.remaining > 0
                && path.starts_with(&f.path)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        if f.after > 0 {
            f.after -= 1;
            return None;
        }
        f.remaining -= 1;
        let out = f.clone();
        self.http.retain(|f| f.remaining > 0);
        Some(out)
    }

    pub fn take_webhook_fault(&mut self) -> Option<String> {
        self.webhooks.pop_front()
    }
}

/// Body of `POST /_sim/faults` (JSON).
#[derive(Debug, Deserialize)]
pub struct FaultRequest {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// `429`, `lock_timeout`, `409`, `500` or `timeout` for requests; `drop`, `duplicate` or
    /// `reorder` for webhooks.
    pub kind: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub hang_ms: Option<u64>,
    /// `Stripe-Should-Retry` to send with an injected error instead of Stripe's default.
    #[serde(default)]
    pub should_retry: Option<bool>,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub after: u32,
}

fn one() -> u32 {
    1
}

impl Faults {
    pub fn add(&mut self, r: FaultRequest) -> Result<(), String> {
        let kind = match r.kind.as_str() {
            "429" | "rate_limit" => HttpFaultKind::RateLimit,
            "500" | "server_error" => HttpFaultKind::ServerError,
            "timeout" | "hang" => HttpFaultKind::Hang,
            "lock_timeout" => HttpFaultKind::LockTimeout,
            "409" | "conflict" => HttpFaultKind::Conflict,
            "drop" | "duplicate" | "reorder" => {
                for _ in 0..r.count {
                    self.webhooks.push_back(r.kind.clone());
                }
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown fault kind `{other}` (429, lock_timeout, 409, 500, timeout, drop, duplicate, reorder)"
                ))
            }
        };
        let path = r.path.ok_or("`path` is required for request faults")?;
        self.http.push(HttpFault {
            path,
            method: r.method,
            kind,
            remaining: r.count,
            hang_ms: r.hang_ms.unwrap_or(30_000),
            should_retry: r.should_retry,
            after: r.after,
        });
        Ok(())
    }
}
