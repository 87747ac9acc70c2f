//! The HTTP layer: one module per resource. Handlers parse, call one service function, and shape
//! the response; errors become JSON through [`ApiError`].

pub mod audit;
pub mod business;
pub mod checkout;
pub mod clock;
pub mod credits;
pub mod customers;
pub mod entitlements;
pub mod events;
pub mod flags;
pub mod health;
pub mod invoices;
pub mod page_sessions;
pub mod plans;
pub mod refunds;
pub mod schemas;
pub mod subscriptions;
pub mod topups;
pub mod transactions;
pub mod webhook_endpoints;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, RawPathParams,
    Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::RequestExt;
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth_limit::AuthLimiter;
use crate::error::ApiError;
use crate::service;
use crate::service::keys::Access;
use crate::state::AppState;

/// Builds the whole router.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/plans", get(plans::list))
        .route(
            "/v1/customers/{id}",
            put(customers::put).get(customers::get),
        )
        .route(
            "/v1/customers/{id}/subscription",
            put(customers::put_subscription).get(customers::get_subscription),
        )
        .route("/v1/customers/{id}/billing", get(customers::billing))
        .route("/v1/customers/{id}/usage", get(customers::usage))
        .route("/v1/customers/{id}/invoices", get(invoices::list))
        .route(
            "/v1/customers/{id}/invoices/upcoming",
            get(invoices::upcoming),
        )
        .route("/v1/customers/{id}/transactions", get(transactions::list))
        .route("/v1/events", post(events::ingest))
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/customers/{id}/page-sessions",
            post(page_sessions::create),
        )
        .route(
            "/v1/page-sessions/{session}",
            axum::routing::delete(page_sessions::revoke),
        )
        .merge(credits::routes())
        .merge(webhook_endpoints::routes())
        .merge(checkout::routes())
        .merge(subscriptions::routes())
        .merge(clock::routes())
        .merge(business::routes())
        .merge(refunds::routes())
        .merge(topups::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(AuthLimiter::new(
                state.config.auth_failures_per_minute,
                std::time::Duration::from_secs(60),
                crate::auth_limit::DEFAULT_CAPACITY,
            )),
            limit_failed_auth,
        ));
    let mut app = Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(crate::openapi::document))
        // Stripe's endpoint: no API key (deliveries are signed), its own body limit.
        .route("/webhooks/stripe", post(webhooks::stripe));
    if state.config.metrics_listen.is_none() {
        app = app.route("/metrics", get(health::metrics));
    }
    app.merge(v1)
        .merge(crate::pages::routes(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The header naming a request in answers and logs.
pub const REQUEST_ID: &str = "request-id";

/// Gives every request an id — the client's `Request-Id` or `X-Request-Id` when it is 1–64
/// characters of `[A-Za-z0-9_.:-]`, else a new `req_…` — answered in `Request-Id` and carried by
/// every log line written while the request is handled.
async fn request_id(mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let given = [REQUEST_ID, "x-request-id"].iter().find_map(|h| {
        req.headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            })
            .map(str::to_owned)
    });
    let id = given.unwrap_or_else(|| {
        use rand::RngCore;
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        format!("req_{}", hex::encode(b))
    });
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// The id of the request being handled (see [`request_id`]).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The router of `--metrics-listen`: `/metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The client's address, when the connection layer provided it.
fn client_ip(req: &Request) -> std::net::IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Around [`require_api_key`]: a client address over its failed-authentication limit is answered
/// 429 before its key is hashed or looked up; each 401 counts against it.
async fn limit_failed_auth(
    State(limiter): State<Arc<AuthLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&req);
    if let Some(wait) = limiter.check(ip) {
        let mut e = ApiError::too_many_requests(
            "too many failed authentications from this address; retry later",
        );
        e.code = "too_many_failed_authentications";
        let mut res = e.into_response();
        let secs = wait.as_secs().saturating_add(1);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        limiter.failed(ip);
    }
    res
}

/// Answers that did not come from [`ApiError`] (the router's 405, extractor rejections) get the
/// documented JSON shape; their headers (e.g. `Allow`) are kept. Successful answers pass through
/// untouched.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // Pages answer their errors in HTML (see `crate::pages`).
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_json || is_html {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (kind, code, fallback) = match status {
        StatusCode::NOT_FOUND => ("invalid_request_error", "route_not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "invalid_request_error",
            "method_not_allowed",
            "this route does not answer this method; see the Allow header",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "invalid_request_error",
            "request_timeout",
            "the request was not received in time",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "invalid_request_error",
            "body_too_large",
            "the request body is larger than the server's limit (--max-body-bytes)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_request_error",
            "unsupported_content_type",
            "the body must be JSON with Content-Type: application/json",
        ),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limited", "too many requests"),
        StatusCode::SERVICE_UNAVAILABLE => ("api_error", "unavailable", "try again later"),
        s if s.is_server_error() => ("api_error", "internal_error", "the server failed"),
        _ => (
            "invalid_request_error",
            "invalid_request",
            "the request is invalid",
        ),
    };
    let message = if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    };
    let mut out = ApiError::new(status, kind, code, message).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in parts.headers.drain().filter_map(|(n, v)| n.map(|n| (n, v))) {
        out.headers_mut().append(name, value);
    }
    out
}

/// A path parameter; a value that cannot be read (e.g. percent-encoded bytes that are not
/// UTF-8) is `400 invalid_path_parameter` in the documented shape.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(ApiError::bad_request(
                "invalid_path_parameter",
                r.body_text(),
            )),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

/// Authenticates the key, then checks that its scope allows the route and, for a key limited to
/// one customer, that the route's path `{id}` and `customer` query parameter name that customer
/// (handlers check `customer` fields of bodies).
async fn require_api_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let caller = match service::keys::authenticate(&state, header).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    let Some(access) = required_access(req.method(), route) else {
        // A method the route does not answer: 405 with the methods it has rules for.
        let allowed: Vec<&str> = [Method::GET, Method::PUT, Method::POST, Method::DELETE]
            .iter()
            .filter(|m| required_access(m, route).is_some())
            .flat_map(|m| {
                if *m == Method::GET {
                    vec!["GET", "HEAD"]
                } else {
                    vec![m.as_str()]
                }
            })
            .collect();
        if !allowed.is_empty() && *req.method() != Method::HEAD {
            let mut res = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "this route does not answer this method; see the Allow header".into(),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allowed.join(",")) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            return res;
        }
        // Deny by default: a route without a rule is a bug, caught by the scope matrix test.
        return ApiError::insufficient_scope(format!("{route} has no scope rule")).into_response();
    };
    if !caller.scope.allows(access) {
        return ApiError::insufficient_scope(format!(
            "this API key's scope ({}) does not allow {} {route}",
            caller.scope.as_str(),
            req.method()
        ))
        .into_response();
    }
    if caller.customer.is_some() {
        let params = match req.extract_parts::<RawPathParams>().await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let query = req.uri().query().map(str::to_owned);
        let named = params
            .iter()
            .filter(|(k, _)| *k == "id")
            .map(|(_, v)| v)
            .chain(credits::query_param(&query, "customer"));
        for customer in named {
            if let Err(e) = caller.check_customer(customer) {
                return e.into_response();
            }
        }
    }
    req.extensions_mut()
        .insert(crate::ratelimit::Actor(caller.key_id.clone()));
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The access each `/v1` route needs (`None`: no rule, denied). `read` keys may only `GET`
/// (and `HEAD`, which the router answers like `GET`); `app` keys get what an app's backend
/// needs on its hot path (events, entitlement checks, credit consumption, customer upserts at
/// signup, Checkout, Portal and billing-page links for its customers); everything else is
/// `admin`.
pub fn required_access(method: &Method, route: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let access = match (method, route) {
        (
            "GET",
            "/v1/plans"
            | "/v1/customers/{id}"
            | "/v1/customers/{id}/subscription"
            | "/v1/customers/{id}/billing"
            | "/v1/customers/{id}/usage"
            | "/v1/customers/{id}/invoices"
            | "/v1/customers/{id}/invoices/upcoming"
            | "/v1/customers/{id}/transactions"
            | "/v1/customers/{id}/credits"
            | "/v1/customers/{id}/auto-top-up"
            | "/v1/customers/{id}/notifications"
            | "/v1/flags"
            | "/v1/metrics/business",
        ) => Access::Read,
        ("GET", "/v1/audit" | "/v1/customers/{id}/audit") => Access::Admin,
        (
            "GET",
            "/v1/webhook-endpoints"
            | "/v1/webhook-endpoints/{endpoint}"
            | "/v1/webhook-endpoints/{endpoint}/deliveries",
        )
        | ("POST", "/v1/webhook-endpoints" | "/v1/webhook-endpoints/{endpoint}/rotate")
        | ("DELETE", "/v1/webhook-endpoints/{endpoint}") => Access::Admin,
        (
            "POST",
            "/v1/events"
            | "/v1/entitlements/check"
            | "/v1/customers/{id}/credits/consume"
            | "/v1/customers/{id}/page-sessions"
            | "/v1/checkout-sessions"
            | "/v1/portal-sessions",
        )
        | ("PUT", "/v1/customers/{id}" | "/v1/customers/{id}/auto-top-up")
        | ("DELETE", "/v1/page-sessions/{session}" | "/v1/customers/{id}/auto-top-up") => {
            Access::App
        }
        (
            "POST",
            "/v1/customers/{id}/credits/grants"
            | "/v1/customers/{id}/subscription/change"
            | "/v1/customers/{id}/subscription/cancel"
            | "/v1/customers/{id}/subscription/resume"
            | "/v1/clock/advance"
            | "/v1/customers/{id}/refunds",
        )
        | ("PUT", "/v1/customers/{id}/subscription" | "/v1/customers/{id}/flags/{flag}")
        | ("DELETE", "/v1/customers/{id}/flags/{flag}") => Access::Admin,
        _ => return None,
    };
    Some(access)
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = crate::metrics::method_label(req.method());
    let res = next.run(req).await;
    state
        .metrics
        .record(method, &route, res.status().as_u16(), start.elapsed());
    res
}

/// A JSON request body: checks the content type, the size limit (413) and the time limit (408,
/// `--body-timeout` from the request's headers, see [`crate::conn`]), then parses (400).
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            let mut e = ApiError::bad_request(
                "unsupported_content_type",
                "the body must be JSON with Content-Type: application/json",
            );
            e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Err(e);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if crate::conn::BodyTimedOut::caused(&r) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "request_timeout",
                    "the request body was not received in time (--body-timeout)".into(),
                )
            } else if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let mut e = ApiError::bad_request(
                    "body_too_large",
                    "the request body is larger than the server's limit (--max-body-bytes)",
                );
                e.status = StatusCode::PAYLOAD_TOO_LARGE;
                e
            } else {
                ApiError::bad_request("unreadable_body", r.body_text())
            }
        })?;
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    /// Parses the body into `T`.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| ApiError::malformed_json(&e))
    }

    /// Parses the body into an owned `T`.
    pub fn parse_owned<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        self.parse()
    }
}
