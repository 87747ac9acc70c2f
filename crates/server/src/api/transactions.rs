//! `GET /v1/customers/{id}/transactions`: payments, credit-pack purchases, failed payments and
//! refunds, from Stripe's events.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Path;
use crate::error::{ApiError, ErrorBody};
use crate::service::stripe_events::transactions::{self, TransactionView};
use crate::state::AppState;

/// Paging of the transactions.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// At most this many (1–100, default 20).
    pub limit: Option<usize>,
    /// The id of the last transaction of the previous page.
    pub starting_after: Option<String>,
}

/// A page of transactions, newest first.
#[derive(Serialize, ToSchema)]
pub struct TransactionList {
    pub data: Vec<TransactionView>,
    /// Whether more follow (pass the last id as `starting_after`).
    pub has_more: bool,
}

/// The customer's transactions, newest first: subscription payments, credit-pack purchases,
/// failed payments and refunds, amounts in minor units.
#[utoipa::path(get, path = "/v1/customers/{id}/transactions", tag = "transactions",
    security(("bearer" = [])),
    params(("id" = String, Path), TransactionsQuery),
    responses(
        (status = 200, body = TransactionList),
        (status = 400, body = ErrorBody, description = "`limit` out of range (`invalid_limit`), or an unknown `starting_after` (`invalid_starting_after`)"),
        (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<TransactionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TransactionList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (data, has_more) =
        transactions::list(&state, &id, q.limit, q.starting_after.as_deref()).await?;
    Ok(Json(TransactionList { data, has_more }))
}
