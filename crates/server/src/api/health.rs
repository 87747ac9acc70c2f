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

/// What Tally's own requests to Stripe found (a probe never calls Stripe itself).
#[derive(Serialize, ToSchema)]
pub struct StripeHealth {
    /// `ok` (the last request got an answer), `unreachable` (it did not), `unknown` (no request
    /// yet) or `not_configured`.
    pub status: &'static str,
    /// When Stripe last answered a request with success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last failed request: an error answer or no answer at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Age in seconds of the oldest inbound Stripe event not yet processed (0 when none; absent
    /// when the database is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox_lag_seconds: Option<i64>,
}

/// Body of `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every configured dependency is reachable, else `degraded`.
    pub status: &'static str,
    pub version: &'static str,
    pub database: DependencyStatus,
    pub stripe: StripeHealth,
    /// Age in seconds of the oldest notification not yet delivered to an enabled endpoint (0
    /// when none waits; absent when the database is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_lag_seconds: Option<i64>,
}

/// Liveness and dependency status (503 when the database is unreachable). Stripe's status comes
/// from Tally's own requests to Stripe (and the inbox of its events), never from a request made
/// for the probe; an unreachable Stripe makes the status `degraded` but not 503.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store.ping().await;
    let ok = db.is_ok();
    let outbox_lag_seconds = if ok { outbox_lag(&state).await } else { None };
    let stripe = stripe_health(&state, ok).await;
    let body = Health {
        status: if ok && stripe.status != "unreachable" {
            "ok"
        } else {
            "degraded"
        },
        version: env!("CARGO_PKG_VERSION"),
        database: DependencyStatus {
            status: if ok { "ok" } else { "error" },
            backend: Some(state.store.backend().name()),
            message: db.err().map(|e| e.to_string()),
        },
        stripe,
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
    // Read at scrape time: the outbox and the inbox are shared by every process on the database.
    if let Some(lag) = outbox_lag(&state).await {
        state.metrics.set_outbox_lag(lag);
    }
    if let Some(age) = inbox_lag(&state).await {
        state.metrics.set_stripe_inbox_age(age);
    }
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Age in seconds of the oldest notification waiting for a webhook delivery (0 when none
/// waits), or `None` when the database cannot say.
async fn outbox_lag(state: &AppState) -> Option<i64> {
    let oldest = state.store.oldest_pending_delivery().await.ok()?;
    Some(oldest.map_or(0, |at| (state.clock.now() - at).num_seconds().max(0)))
}

/// Age in seconds of the oldest pending inbound Stripe event (0 when none), or `None` when the
/// database cannot say.
async fn inbox_lag(state: &AppState) -> Option<i64> {
    let oldest = state.store.inbox_oldest_pending().await.ok()?;
    Some(oldest.map_or(0, |at| (state.clock.now() - at).num_seconds().max(0)))
}

async fn stripe_health(state: &AppState, db_ok: bool) -> StripeHealth {
    if state.stripe.is_none() {
        return StripeHealth {
            status: "not_configured",
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            inbox_lag_seconds: None,
        };
    }
    let seen = state.stripe_status.snapshot();
    StripeHealth {
        status: match seen.reachable {
            Some(true) => "ok",
            Some(false) => "unreachable",
            None => "unknown",
        },
        last_success_at: seen.last_ok,
        last_error_at: seen.last_error.as_ref().map(|(at, _)| *at),
        last_error: seen.last_error.map(|(_, e)| e),
        inbox_lag_seconds: if db_ok { inbox_lag(state).await } else { None },
    }
}

/// Constant-time comparison of two secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
