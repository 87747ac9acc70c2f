//! Customers, their local subscription, usage and billing summary.

use axum::extract::State;

use super::Path;
use axum::http::StatusCode;
use axum::Json;
use tally_store::{Customer, Subscription};

use super::audit::AuditedBy;
use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::customers::{self, BillingSummary, CustomerInput, SubscriptionInput};
use crate::service::usage::{self, UsageReport};
use crate::state::AppState;

/// Creates (201) or updates (200) a customer. Omitted fields keep their value.
#[utoipa::path(put, path = "/v1/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(("id" = String, Path, description = "The app's customer id: 1–255 of [A-Za-z0-9_.:@-]")),
    request_body = CustomerInput,
    responses((status = 201, description = "created", body = super::schemas::Customer),
        (status = 200, description = "updated", body = super::schemas::Customer),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let input: CustomerInput = body.parse()?;
    let details_changed = input.email.is_some() || input.name.is_some();
    let (c, created) = customers::put(&state, &id, input, audit).await?;
    if details_changed && !created {
        // After the commit, in the background: Stripe being slow or down never delays the PUT.
        crate::service::stripe_customers::propagate(&state, c.clone());
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(c)))
}

/// The customer.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "the customer", body = super::schemas::Customer),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Customer>, ApiError> {
    Ok(Json(customers::get(&state, &id).await?))
}

/// Assigns a plan locally (free or manual plans, or without Stripe).
#[utoipa::path(put, path = "/v1/customers/{id}/subscription", tag = "customers", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = SubscriptionInput,
    responses((status = 200, description = "the subscription", body = super::schemas::Subscription),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`coupon_exhausted`", body = ErrorBody),
        (status = 422, description = "`unknown_plan`, `invalid_interval`, `unknown_coupon`, `coupon_expired`, `coupon_not_applicable`", body = ErrorBody)))]
pub async fn put_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<Subscription>, ApiError> {
    let input: SubscriptionInput = body.parse()?;
    Ok(Json(
        customers::put_subscription(&state, &id, input, audit).await?,
    ))
}

/// The customer's subscription.
#[utoipa::path(get, path = "/v1/customers/{id}/subscription", tag = "customers", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "the subscription", body = super::schemas::Subscription),
        (status = 404, body = ErrorBody)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    customers::check_id(&id)?;
    usage::customer(&state, &id).await?;
    state
        .store
        .get_subscription(&id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "no_subscription",
                format!("customer {id:?} has no subscription"),
            )
        })
}

/// Usage this period per metric: used, included, limit, percent, overage.
#[utoipa::path(get, path = "/v1/customers/{id}/usage", tag = "usage", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UsageReport), (status = 404, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UsageReport>, ApiError> {
    customers::check_id(&id)?;
    Ok(Json(usage::current_usage(&state, &id).await?))
}

/// Everything a billing page needs in one call.
#[utoipa::path(get, path = "/v1/customers/{id}/billing", tag = "customers", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = BillingSummary), (status = 404, body = ErrorBody)))]
pub async fn billing(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BillingSummary>, ApiError> {
    Ok(Json(customers::billing(&state, &id).await?))
}
