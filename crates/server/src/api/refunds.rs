//! Refunds of a customer's payments through Stripe.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::audit::AuditedBy;
use super::{JsonBody, Path};
use crate::error::{ApiError, ErrorBody};
use crate::service::refunds::{self, RefundInput, RefundView};
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/customers/{id}/refunds", post(create))
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(paths(create))]
pub struct RefundsDoc;

/// Refunds (part of) a payment through Stripe. A refunded credit pack takes back its credits in
/// proportion, never below a zero balance (the shortfall is recorded); the refund appears in the
/// customer's transactions.
#[utoipa::path(post, path = "/v1/customers/{id}/refunds", tag = "stripe", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = RefundInput,
    responses((status = 200, description = "the refund, made in Stripe", body = RefundView),
        (status = 400, description = "`invalid_reason`, `invalid_refund_amount`", body = ErrorBody),
        (status = 404, description = "`customer_not_found`, `payment_not_found`", body = ErrorBody),
        (status = 422, description = "`payment_not_refundable`, `stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<RefundView>, ApiError> {
    let input: RefundInput = body.parse()?;
    Ok(Json(refunds::create(&state, &id, input, audit).await?))
}
