//! Liveness and metrics.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
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
    /// Age in seconds of the oldest notification not yet delivered to an enabled endpoint (0
    /// when none waits; absent when the database is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_lag_seconds: Option<i64>,
}

/// Liveness and dependency status (503 when the database is unreachable).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store.ping().await;
    let ok = db.is_ok();
    let outbox_lag_seconds = if ok { outbox_lag(&state).await } else { None };
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
        outbox_lag_seconds,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Prometheus metrics: requests and latency by route, events by outcome, connections dropped at
/// the cap. Needs `Authorization: Bearer <TALLY_METRICS_TOKEN>` when that token is set.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "TALLY_METRICS_TOKEN is set and was not given", body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            let mut e =
                ApiError::unauthorized("/metrics needs Authorization: Bearer <metrics token>");
            e.code = "invalid_metrics_token";
            return e.into_response();
        }
    }
    let mut text = state.metrics.render();
    // Read at scrape time: the outbox is shared by every process on the database.
    if let Some(lag) = outbox_lag(&state).await {
        text.push_str(
            "# HELP tally_outbox_lag_seconds Age of the oldest notification waiting for delivery to an enabled webhook endpoint.\n# TYPE tally_outbox_lag_seconds gauge\n",
        );
        text.push_str(&format!("tally_outbox_lag_seconds {lag}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Age in seconds of the oldest notification waiting for a webhook delivery (0 when none
/// waits), or `None` when the database cannot say.
async fn outbox_lag(state: &AppState) -> Option<i64> {
    let oldest = state.store.oldest_pending_delivery().await.ok()?;
    Some(oldest.map_or(0, |at| (state.clock.now() - at).num_seconds().max(0)))
}

/// Constant-time comparison of two secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
