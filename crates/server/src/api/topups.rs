//! A customer's automatic top-up settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::audit::AuditedBy;
use super::{JsonBody, Path};
use crate::error::{ApiError, ErrorBody};
use crate::service::topups::{self, AutoTopupInput, AutoTopupView};
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/customers/{id}/auto-top-up",
        get(show).put(put).delete(delete),
    )
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(paths(show, put, delete))]
pub struct TopupsDoc;

/// The customer's automatic top-up settings, their state (active, backing off after a decline,
/// or stopped after 3 declines in a row until the card changes) and the latest top-ups.
#[utoipa::path(get, path = "/v1/customers/{id}/auto-top-up", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "the settings and latest top-ups", body = AutoTopupView),
        (status = 404, description = "`customer_not_found`, `auto_top_up_not_found`", body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AutoTopupView>, ApiError> {
    Ok(Json(topups::get(&state, &id).await?))
}

/// Turns automatic top-ups on (or changes them): when a consumption leaves the balance below
/// `threshold`, Tally buys `pack` with the customer's default card in Stripe, at most
/// `max_per_month` times per calendar month (UTC). When the balance is already below the
/// threshold, a top-up is requested at once.
#[utoipa::path(put, path = "/v1/customers/{id}/auto-top-up", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = AutoTopupInput,
    responses((status = 200, description = "the settings, changed", body = AutoTopupView),
        (status = 201, description = "the settings, created", body = AutoTopupView),
        (status = 400, description = "`invalid_amount` (threshold not a decimal)", body = ErrorBody),
        (status = 404, description = "`customer_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_amount`, `unknown_pack`, `invalid_max_per_month`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`", body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<(StatusCode, Json<AutoTopupView>), ApiError> {
    let input: AutoTopupInput = body.parse()?;
    let (view, created) = topups::put(&state, &id, input, audit).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Turns automatic top-ups off. A top-up already in flight finishes.
#[utoipa::path(delete, path = "/v1/customers/{id}/auto-top-up", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "automatic top-ups are off"),
        (status = 404, description = "`customer_not_found`, `auto_top_up_not_found`", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
) -> Result<StatusCode, ApiError> {
    topups::delete(&state, &id, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
