//! `POST /v1/checkout-sessions` and `POST /v1/portal-sessions`: links to Stripe's hosted pages.

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use utoipa::OpenApi;

use super::audit::AuditedBy;
use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::checkout::{
    self, CheckoutInput, CheckoutSessionView, PortalInput, PortalSessionView,
};
use crate::service::keys::Caller;
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/checkout-sessions", post(create_checkout))
        .route("/v1/portal-sessions", post(create_portal))
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(paths(create_checkout, create_portal))]
pub struct CheckoutDoc;

/// A Stripe Checkout Session for a plan (`plan`, `interval`: subscription mode, with the plan's
/// trial) or a credit pack (`pack`: payment mode). The customer's Stripe customer is created on
/// first need. 5 per minute per customer by default.
#[utoipa::path(post, path = "/v1/checkout-sessions", tag = "stripe", security(("bearer" = [])),
    request_body = CheckoutInput,
    responses((status = 200, description = "the session to send the customer to", body = CheckoutSessionView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`customer_not_found`", body = ErrorBody),
        (status = 409, description = "`subscription_exists`: change the plan with POST /v1/customers/{id}/subscription/change", body = ErrorBody),
        (status = 422, description = "`unknown_plan`, `invalid_interval`, `unknown_pack`, `plan_or_pack_required`, `plan_not_sold`, `unknown_coupon`, `coupon_expired`, `unknown_promotion_code`, `one_discount`, `url_required`, `invalid_url`, `stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`, `stripe_catalog_not_pushed`", body = ErrorBody)))]
pub async fn create_checkout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<CheckoutSessionView>, ApiError> {
    let input: CheckoutInput = body.parse()?;
    caller
        .check_customer(&input.customer)
        .map_err(|e| e.with_param("customer"))?;
    Ok(Json(checkout::create(&state, input, audit).await?))
}

/// A Stripe Customer Portal session (payment methods, invoices, cancel at period end). The
/// customer's Stripe customer is created on first need.
#[utoipa::path(post, path = "/v1/portal-sessions", tag = "stripe", security(("bearer" = [])),
    request_body = PortalInput,
    responses((status = 200, description = "the portal page to send the customer to", body = PortalSessionView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`customer_not_found`", body = ErrorBody),
        (status = 422, description = "`url_required`, `invalid_url`, `stripe_invalid_request`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_not_configured`, `stripe_unavailable`", body = ErrorBody)))]
pub async fn create_portal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonBody,
) -> Result<Json<PortalSessionView>, ApiError> {
    let input: PortalInput = body.parse()?;
    caller
        .check_customer(&input.customer)
        .map_err(|e| e.with_param("customer"))?;
    Ok(Json(checkout::portal(&state, input).await?))
}
