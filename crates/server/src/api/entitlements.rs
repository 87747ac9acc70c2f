//! `POST /v1/entitlements/check`.

use axum::extract::State;
use axum::{Extension, Json};

use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::entitlements::{self, CheckInput, CheckResult};
use crate::service::keys::Caller;
use crate::state::AppState;

/// May the customer use a feature, or `quantity` more of a metric? Hard limits deny, soft limits
/// allow with `overage: true`, gauges compare their latest level; metrics paid with credits also
/// need the balance.
#[utoipa::path(post, path = "/v1/entitlements/check", tag = "entitlements", security(("bearer" = [])),
    request_body = CheckInput,
    responses((status = 200, body = CheckResult), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonBody,
) -> Result<Json<CheckResult>, ApiError> {
    let input: CheckInput = body.parse()?;
    caller
        .check_customer(&input.customer)
        .map_err(|e| e.with_param("customer"))?;
    let answer = entitlements::check(&state, input).await?;
    state.metrics.add_entitlement_check(answer.allowed);
    Ok(Json(answer))
}
