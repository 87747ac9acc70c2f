//! Upcoming and closed invoices.

use axum::extract::State;

use super::Path;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::service::customers::{self, InvoiceView};
use crate::service::usage::{self, UpcomingInvoice};
use crate::state::AppState;

/// Body of `GET /v1/customers/{id}/invoices`.
#[derive(Serialize, ToSchema)]
pub struct InvoiceList {
    /// Newest first.
    pub data: Vec<InvoiceView>,
}

/// The current period rated so far: lines, subtotal, discount, total, currency (minor units).
#[utoipa::path(get, path = "/v1/customers/{id}/invoices/upcoming", tag = "invoices", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UpcomingInvoice), (status = 404, body = ErrorBody)))]
pub async fn upcoming(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UpcomingInvoice>, ApiError> {
    customers::check_id(&id)?;
    Ok(Json(usage::upcoming_invoice(&state, &id).await?))
}

/// Closed invoices, newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/invoices", tag = "invoices", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = InvoiceList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InvoiceList>, ApiError> {
    Ok(Json(InvoiceList {
        data: customers::invoice_views(&state, &id).await?,
    }))
}
