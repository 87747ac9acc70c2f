//! The HTTP layer: one module per resource. Handlers parse, call one service function, and shape
//! the response; errors become JSON through [`ApiError`].

pub mod audit;
pub mod credits;
pub mod customers;
pub mod entitlements;
pub mod events;
pub mod flags;
pub mod health;
pub mod invoices;
pub mod plans;

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::RequestExt;
use axum::Router;
use serde::de::DeserializeOwned;

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
        .route("/v1/events", post(events::ingest))
        .route("/v1/audit", get(audit::list))
        .merge(credits::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(crate::openapi::document))
        .merge(v1)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
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

/// The access each `/v1` route needs (`None`: no rule, denied). `read` keys may only `GET`;
/// `app` keys get what an app's backend needs on its hot path (events, entitlement checks,
/// credit consumption, customer upserts at signup); everything else is `admin`.
pub fn required_access(method: &Method, route: &str) -> Option<Access> {
    let access = match (method.as_str(), route) {
        (
            "GET",
            "/v1/plans"
            | "/v1/customers/{id}"
            | "/v1/customers/{id}/subscription"
            | "/v1/customers/{id}/billing"
            | "/v1/customers/{id}/usage"
            | "/v1/customers/{id}/invoices"
            | "/v1/customers/{id}/invoices/upcoming"
            | "/v1/customers/{id}/credits"
            | "/v1/customers/{id}/notifications"
            | "/v1/flags",
        ) => Access::Read,
        ("GET", "/v1/audit" | "/v1/customers/{id}/audit") => Access::Admin,
        (
            "POST",
            "/v1/events" | "/v1/entitlements/check" | "/v1/customers/{id}/credits/consume",
        )
        | ("PUT", "/v1/customers/{id}") => Access::App,
        ("POST", "/v1/customers/{id}/credits/grants")
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
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    state
        .metrics
        .record(&method, &route, res.status().as_u16(), start.elapsed());
    res
}

/// A JSON request body: checks the content type and the size limit (413), then parses (400).
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
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
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
