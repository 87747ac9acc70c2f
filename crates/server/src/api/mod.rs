//! The HTTP layer: one module per resource. Handlers parse, call one service function, and shape
//! the response; errors become JSON through [`ApiError`].

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
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service;
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

async fn require_api_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match service::keys::authenticate(&state, header).await {
        Ok(actor) => {
            req.extensions_mut().insert(crate::ratelimit::Actor(actor));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
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
