//! Plan changes of a customer's Stripe subscription: change (upgrade now, downgrade at the period
//! end), cancel, resume.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::audit::AuditedBy;
use super::{JsonBody, Path};
use crate::error::{ApiError, ErrorBody};
use crate::service::plan_change::{self, CancelInput, ChangeInput, StripeSubscriptionView};
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/customers/{id}/subscription/change", post(change))
        .route("/v1/customers/{id}/subscription/cancel", post(cancel))
        .route("/v1/customers/{id}/subscription/resume", post(resume))
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(paths(change, cancel, resume))]
pub struct SubscriptionsDoc;

/// Moves the customer's Stripe subscription to another plan or interval. An upgrade (higher
/// price per month, or a longer interval) takes effect at once, prorated and invoiced by Stripe;
/// a downgrade is scheduled for the period end and shown as `pending_change`.
#[utoipa::path(post, path = "/v1/customers/{id}/subscription/change", tag = "stripe", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = ChangeInput,
    responses((status = 200, description = "the subscription as Stripe now has it", body = StripeSubscriptionView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`customer_not_found`, `no_stripe_subscription`", body = ErrorBody),
        (status = 402, description = "`upgrade_payment_failed`: the prorated invoice was not paid; the old plan stays", body = ErrorBody),
        (status = 409, description = "`plan_change_pending_payment`, `subscription_canceling`", body = ErrorBody),
        (status = 422, description = "`unknown_plan`, `invalid_interval`, `plan_not_sold`, `stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`, `stripe_catalog_not_pushed`", body = ErrorBody)))]
pub async fn change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<StripeSubscriptionView>, ApiError> {
    let input: ChangeInput = body.parse()?;
    Ok(Json(plan_change::change(&state, &id, input, audit).await?))
}

/// Cancels the customer's Stripe subscription at the period end (default) or now.
#[utoipa::path(post, path = "/v1/customers/{id}/subscription/cancel", tag = "stripe", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = CancelInput,
    responses((status = 200, description = "the subscription as Stripe now has it", body = StripeSubscriptionView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`customer_not_found`, `no_stripe_subscription`", body = ErrorBody),
        (status = 422, description = "`stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<StripeSubscriptionView>, ApiError> {
    let input: CancelInput = body.parse()?;
    Ok(Json(
        plan_change::set_cancel(&state, &id, Some(input), audit).await?,
    ))
}

/// Keeps a subscription that was to end at the period end. No body.
#[utoipa::path(post, path = "/v1/customers/{id}/subscription/resume", tag = "stripe", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "the subscription as Stripe now has it", body = StripeSubscriptionView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`customer_not_found`, `no_stripe_subscription`", body = ErrorBody),
        (status = 422, description = "`stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
) -> Result<Json<StripeSubscriptionView>, ApiError> {
    Ok(Json(
        plan_change::set_cancel(&state, &id, None, audit).await?,
    ))
}
