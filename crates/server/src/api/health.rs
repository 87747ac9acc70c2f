//! Liveness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Status of one dependency.
#[derive(Serialize, ToSchema)]
pub struct DependencyStatus {
    /// `ok`, `error` or `not_configured`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Body of `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every configured dependency is reachable, else `degraded`.
    pub status: &'static str,
    pub version: &'static str,
    pub database: DependencyStatus,
    pub stripe: DependencyStatus,
}

/// Liveness and dependency status (503 when the database is unreachable).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store.ping().await;
    let ok = db.is_ok();
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        database: DependencyStatus {
            status: if ok { "ok" } else { "error" },
            backend: Some(state.store.backend().name()),
            message: db.err().map(|e| e.to_string()),
        },
        stripe: DependencyStatus {
            status: "not_configured",
            backend: None,
            message: None,
        },
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Prometheus metrics: requests and latency by route, events by outcome.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
