//! `GET /v1/audit` and the extractor handlers use to say who makes a change.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
use tally_store::{AuditContext, AuditFilter, AuditRecord};
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::service::keys::Caller;
use crate::service::rfc3339::parse_utc;
use crate::state::AppState;

/// The audit context of a mutating request: the calling key and the request's `Idempotency-Key`
/// header, if any.
pub struct AuditedBy(pub AuditContext);

impl FromRequestParts<AppState> for AuditedBy {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .ok_or_else(|| ApiError::internal("an audited route is not behind the API key"))?;
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(AuditedBy(caller.audit(key, state.clock.now())))
    }
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only rows about this customer.
    pub customer: Option<String>,
    /// Only rows made by this key id (`env_…` for `TALLY_API_KEY`, `cli` for operator commands).
    pub actor: Option<String>,
    /// Only rows at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// Rows per page, 1–1000 (100).
    pub limit: Option<usize>,
    /// The previous page's last `id`: the page continues with older rows.
    pub starting_after: Option<String>,
}

/// A page of audit rows, newest first.
#[derive(Serialize)]
pub struct AuditList {
    pub data: Vec<AuditRecord>,
    pub has_more: bool,
}

/// Every mutation made by an operator or an API key, newest first (admin keys only).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, description = "a page of audit rows, newest first", body = super::schemas::AuditPage),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1–1000").with_param("limit"));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| {
            parse_utc(s).ok_or_else(|| {
                ApiError::bad_request("invalid_parameter", "since must be an RFC 3339 instant")
                    .with_param("since")
            })
        })
        .transpose()?;
    let before_seq = q
        .starting_after
        .as_deref()
        .map(|s| {
            tally_store::audit::audit_seq(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "starting_after must be an audit row id",
                )
                .with_param("starting_after")
            })
        })
        .transpose()?;
    let page = state
        .store
        .audit_log(AuditFilter {
            customer_id: q.customer,
            actor: q.actor,
            since,
            before_seq,
            limit,
        })
        .await?;
    Ok(Json(AuditList {
        data: page.records,
        has_more: page.has_more,
    }))
}
