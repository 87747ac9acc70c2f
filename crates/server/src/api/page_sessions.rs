//! `POST /v1/customers/{id}/page-sessions` and `DELETE /v1/page-sessions/{session}`: the links
//! an app's backend mints to its customers' billing pages (see [`crate::service::pages`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::audit::AuditedBy;
use super::{JsonBody, Path};
use crate::error::{ApiError, ErrorBody};
use crate::service::keys::Caller;
use crate::service::pages::{self, PageLink, PageSessionInput};
use crate::state::AppState;

/// Mints a one-time link to the customer's billing page (usable once, for 15 minutes). Using it
/// starts a page session for this customer only, ended after 60 minutes idle or 12 hours.
#[utoipa::path(post, path = "/v1/customers/{id}/page-sessions", tag = "pages", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = PageSessionInput,
    responses((status = 201, description = "the link", body = PageLink),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<(StatusCode, Json<PageLink>), ApiError> {
    let input: PageSessionInput = if body.0.iter().all(u8::is_ascii_whitespace) {
        PageSessionInput::default()
    } else {
        body.parse()?
    };
    let link = pages::mint(&state, &id, input, audit).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// Revokes a page session: its link, or its page, stops working at once.
#[utoipa::path(delete, path = "/v1/page-sessions/{session}", tag = "pages", security(("bearer" = [])),
    params(("session" = String, Path, description = "The session's id (`ps_…`)")),
    responses((status = 204, description = "revoked"),
        (status = 404, description = "no live page session with this id (`page_session_not_found`)", body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(session): Path<String>,
    Extension(caller): Extension<Caller>,
    AuditedBy(audit): AuditedBy,
) -> Result<StatusCode, ApiError> {
    pages::revoke(&state, &caller, &session, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
