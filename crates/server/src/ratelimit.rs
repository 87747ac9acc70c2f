//! Request rate limits, per API key and route and per customer and route.
//!
//! Each limit is a count per window enforced as a smoothed token bucket (GCRA): a burst of up to
//! `count` requests is allowed, then one request per `window / count`. A refused request gets 429
//! with `Retry-After` (whole seconds until a request would be allowed). On PostgreSQL the limits
//! are counted in the shared database (one row per key, advanced in one statement), so several
//! `tally serve` processes together admit exactly the configured rate; on SQLite (one process per
//! database) they are counted in memory. If the database cannot count a request, the request is
//! admitted and the failure logged: requests that reach the database would fail anyway.
//!
//! Limits that apply:
//! - `per_key`: every route, per API key (0 = unlimited; default unlimited);
//! - `per_customer`: every route naming a customer (path `{id}` or query `customer=`), per
//!   customer (0 = unlimited; default unlimited);
//! - route rules such as `POST /v1/checkout-sessions=5/1m:customer` (the default: creating
//!   checkout sessions is limited to 5 per minute per customer). For customer-scoped rules the
//!   customer comes from the path, the query, or the JSON body's `customer` field.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::parse_duration;
use crate::error::ApiError;
use crate::state::AppState;

/// Who a limit counts requests of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    ApiKey,
    Customer,
}

/// A limit of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    pub method: String,
    /// The route pattern, e.g. `/v1/customers/{id}/credits/consume`.
    pub path: String,
    pub count: u32,
    pub window: Duration,
    pub scope: Scope,
}

impl RouteLimit {
    /// Parses `METHOD PATH=COUNT/WINDOW:key|customer`.
    pub fn parse(s: &str) -> Result<RouteLimit, String> {
        let bad = || {
            format!(
                "rate limit {s:?} must look like `POST /v1/checkout-sessions=5/1m:customer` (scope key or customer)"
            )
        };
        let (route, rest) = s.trim().split_once('=').ok_or_else(bad)?;
        let (method, path) = route.trim().split_once(' ').ok_or_else(bad)?;
        let (rate, scope) = rest.split_once(':').unwrap_or((rest, "key"));
        let (count, window) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let window = parse_duration(window)?;
        let scope = match scope.trim() {
            "key" => Scope::ApiKey,
            "customer" => Scope::Customer,
            _ => return Err(bad()),
        };
        if count == 0 || window.is_zero() {
            return Err(format!(
                "rate limit {s:?}: the count and window must be positive"
            ));
        }
        Ok(RouteLimit {
            method: method.trim().to_ascii_uppercase(),
            path: path.trim().to_owned(),
            count,
            window,
            scope,
        })
    }
}

/// The configured limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute per API key and route; 0 = unlimited.
    pub per_key: u32,
    /// Requests per minute per customer and route; 0 = unlimited.
    pub per_customer: u32,
    pub routes: Vec<RouteLimit>,
}

/// The default route limits.
pub const DEFAULT_ROUTE_LIMITS: &[&str] = &["POST /v1/checkout-sessions=5/1m:customer"];

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_key: 0,
            per_customer: 0,
            routes: DEFAULT_ROUTE_LIMITS
                .iter()
                .filter_map(|r| RouteLimit::parse(r).ok())
                .collect(),
        }
    }
}

impl RateLimits {
    /// Builds the limits from the CLI's flags; `routes` replaces the defaults when not empty.
    pub fn from_args(per_key: u32, per_customer: u32, routes: &[String]) -> Result<Self, String> {
        let mut out = RateLimits {
            per_key,
            per_customer,
            ..RateLimits::default()
        };
        let given: Vec<&String> = routes.iter().filter(|r| !r.trim().is_empty()).collect();
        if !given.is_empty() {
            out.routes = given
                .into_iter()
                .map(|r| RouteLimit::parse(r))
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }
}

/// The authenticated caller: the API key's id (`env_…` for `TALLY_API_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    limit: usize,
    route: String,
    who: String,
}

/// The limiter's state: the theoretical arrival time of the next request per key.
#[derive(Default)]
pub struct Limiter {
    tat: Mutex<HashMap<Key, Instant>>,
}

impl Limiter {
    /// Admits one request under `count` per `window`, or answers how long to wait.
    fn admit(&self, key: Key, count: u32, window: Duration, now: Instant) -> Result<(), Duration> {
        let (interval, burst) = gcra(count, window);
        let Ok(mut map) = self.tat.lock() else {
            return Ok(());
        };
        if map.len() > 100_000 {
            map.retain(|_, t| *t > now);
        }
        let tat = map.get(&key).copied().unwrap_or(now).max(now);
        let allow_at = tat.checked_sub(burst).unwrap_or(now);
        if allow_at > now {
            return Err(allow_at - now);
        }
        map.insert(key, tat + interval);
        Ok(())
    }
}

/// Middleware (after authentication): enforces the limits that apply to the request.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.config.rate_limits;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_owned();
    let rules: Vec<(usize, &RouteLimit)> = limits
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == method && r.path == route)
        .collect();
    if limits.per_key == 0 && limits.per_customer == 0 && rules.is_empty() {
        return next.run(req).await;
    }
    let actor = req
        .extensions()
        .get::<Actor>()
        .map_or_else(String::new, |a| a.0.clone());
    let mut customer = customer_of(&req, &route);
    let mut req = req;
    let needs_body = customer.is_none() && rules.iter().any(|(_, r)| r.scope == Scope::Customer);
    if needs_body {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
            Ok(b) => b,
            Err(_) => {
                let mut e = ApiError::bad_request(
                    "body_too_large",
                    "the request body is larger than the server's limit (--max-body-bytes)",
                );
                e.status = StatusCode::PAYLOAD_TOO_LARGE;
                return e.into_response();
            }
        };
        customer = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("customer")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            });
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let now = Instant::now();
    let limiter = &state.credits.limiter;
    let mut checks: Vec<(Key, u32, Duration)> = Vec::new();
    let minute = Duration::from_secs(60);
    if limits.per_key > 0 {
        checks.push((
            Key {
                limit: usize::MAX,
                route: format!("{method} {route}"),
                who: actor.clone(),
            },
            limits.per_key,
            minute,
        ));
    }
    if let (true, Some(c)) = (limits.per_customer > 0, &customer) {
        checks.push((
            Key {
                limit: usize::MAX - 1,
                route: format!("{method} {route}"),
                who: c.clone(),
            },
            limits.per_customer,
            minute,
        ));
    }
    for (i, r) in rules {
        let who = match r.scope {
            Scope::ApiKey => Some(actor.clone()),
            Scope::Customer => customer.clone(),
        };
        if let Some(who) = who {
            checks.push((
                Key {
                    limit: i,
                    route: route.clone(),
                    who,
                },
                r.count,
                r.window,
            ));
        }
    }
    let shared = state.store.shares_rate_limits();
    for (key, count, window) in checks {
        let refused = if shared {
            let (interval, burst) = gcra(count, window);
            let name = format!("{}|{}|{}", key.limit, key.route, key.who);
            match state.store.rate_admit(&name, interval, burst).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "the database could not count a rate-limited request; admitted");
                    None
                }
            }
        } else {
            limiter.admit(key, count, window, now).err()
        };
        if let Some(wait) = refused {
            return too_many(wait);
        }
    }
    next.run(req).await
}

/// The interval between requests and the burst allowance of `count` per `window`.
fn gcra(count: u32, window: Duration) -> (Duration, Duration) {
    let interval = window / count.max(1);
    (interval, window.saturating_sub(interval))
}

fn customer_of(req: &Request, route: &str) -> Option<String> {
    if route.starts_with("/v1/customers/{id}") {
        return req
            .uri()
            .path()
            .strip_prefix("/v1/customers/")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("customer="))
            .map(str::to_owned)
    })
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let e =
        ApiError::too_many_requests(format!("rate limit exceeded; retry after {secs} second(s)"));
    let mut res = e.into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_route_limits() {
        let r = RouteLimit::parse("POST /v1/checkout-sessions=5/1m:customer").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/checkout-sessions");
        assert_eq!(r.count, 5);
        assert_eq!(r.window, Duration::from_secs(60));
        assert_eq!(r.scope, Scope::Customer);
        assert_eq!(
            RouteLimit::parse("get /v1/plans=10/1s").unwrap().scope,
            Scope::ApiKey
        );
        assert!(RouteLimit::parse("POST /x=0/1m").is_err());
        assert!(RouteLimit::parse("POST /x=5/1m:team").is_err());
        assert!(RouteLimit::parse("nonsense").is_err());
    }

    #[test]
    fn a_burst_of_count_then_refusal_until_the_interval_passes() {
        let l = Limiter::default();
        let key = || Key {
            limit: 0,
            route: "r".into(),
            who: "c".into(),
        };
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.admit(key(), 5, w, t0).is_ok());
        }
        let wait = l.admit(key(), 5, w, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12));
        assert!(l.admit(key(), 5, w, t0 + Duration::from_secs(11)).is_err());
        assert!(l.admit(key(), 5, w, t0 + Duration::from_secs(12)).is_ok());
        // Another customer has its own budget.
        let other = Key {
            who: "d".into(),
            ..key()
        };
        assert!(l.admit(other, 5, w, t0).is_ok());
    }
}
