//! `GET /v1/metrics/business`: the business metrics of a month, per currency — the figures of
//! the admin dashboard.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::error::{ApiError, ErrorBody};
use crate::service::business::{self, BusinessMetrics, Month};
use crate::service::keys::Caller;
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/metrics/business", get(metrics))
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(
    paths(metrics),
    components(schemas(
        business::BusinessMetrics,
        business::CurrencyMetrics,
        business::MovementsView,
        business::SubscribersView,
        business::CountAmount,
        business::FailingInvoice
    ))
)]
pub struct BusinessDoc;

/// Which month.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// `YYYY-MM` (UTC); the current month when absent.
    pub month: Option<String>,
}

/// Committed MRR and its movements, subscriber churn, churned revenue, ARPU, LTV, trial
/// conversion, usage run-rate, gross revenue, overdue balance and failed payments of one
/// calendar month, per currency, from Tally's subscription history, invoices and transactions.
/// Amounts are minor units; rates are decimal strings (`0.25` is 25 %). Not for keys limited to
/// one customer.
#[utoipa::path(get, path = "/v1/metrics/business", tag = "metrics",
    security(("bearer" = [])),
    params(MonthQuery),
    responses(
        (status = 200, body = BusinessMetrics),
        (status = 400, body = ErrorBody, description = "`invalid_month`: not `YYYY-MM`"),
        (status = 403, body = ErrorBody, description = "`customer_forbidden`: a key limited to one customer")))]
pub async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<MonthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BusinessMetrics>, ApiError> {
    if let Some(own) = &caller.customer {
        return Err(ApiError::customer_forbidden(format!(
            "this API key may only act for customer {own:?}; business metrics cover every customer"
        )));
    }
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let month = match q.month.as_deref() {
        Some(m) => Month::parse(m).ok_or_else(|| {
            ApiError::bad_request("invalid_month", format!("month must be YYYY-MM, not {m:?}"))
                .with_param("month")
        })?,
        None => Month::of(state.clock.now())
            .ok_or_else(|| ApiError::bad_request("invalid_month", "no current month"))?,
    };
    Ok(Json(business::metrics(&state, month).await?))
}
