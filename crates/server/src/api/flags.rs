//! Feature flags: evaluation for a customer and per-customer overrides.

use axum::extract::{RawQuery, State};

use super::Path;
use axum::http::StatusCode;
use axum::Json;
use tally_store::FlagOverride;

use super::audit::AuditedBy;
use super::credits::query_param;
use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::flags::{self, FlagsView, OverrideInput};
use crate::state::AppState;

/// The catalog's flags evaluated for `customer` in the server's environment.
#[utoipa::path(get, path = "/v1/flags", tag = "flags", security(("bearer" = [])),
    params(("customer" = String, Query)),
    responses((status = 200, body = FlagsView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<FlagsView>, ApiError> {
    let customer = query_param(&query, "customer").ok_or_else(|| {
        ApiError::bad_request("missing_customer", "give ?customer=ID").with_param("customer")
    })?;
    Ok(Json(flags::evaluate_all(&state, customer).await?))
}

/// Forces a flag on or off for one customer.
#[utoipa::path(put, path = "/v1/customers/{id}/flags/{flag}", tag = "flags", security(("bearer" = [])),
    params(("id" = String, Path), ("flag" = String, Path)),
    request_body = OverrideInput,
    responses((status = 200, description = "the override", body = super::schemas::FlagOverride),
        (status = 404, body = ErrorBody)))]
pub async fn put_override(
    State(state): State<AppState>,
    Path((id, flag)): Path<(String, String)>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<FlagOverride>, ApiError> {
    let input: OverrideInput = body.parse()?;
    Ok(Json(
        flags::put_override(&state, &id, &flag, input, audit).await?,
    ))
}

/// Removes a customer's override: the flag follows the catalog again. 204 whether or not one
/// existed.
#[utoipa::path(delete, path = "/v1/customers/{id}/flags/{flag}", tag = "flags", security(("bearer" = [])),
    params(("id" = String, Path), ("flag" = String, Path)),
    responses((status = 204, description = "no override remains"), (status = 404, body = ErrorBody)))]
pub async fn delete_override(
    State(state): State<AppState>,
    Path((id, flag)): Path<(String, String)>,
    AuditedBy(audit): AuditedBy,
) -> Result<StatusCode, ApiError> {
    flags::delete_override(&state, &id, &flag, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
