//! Webhook endpoints: registration, secret rotation and the delivery log (admin scope).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tally_store::WebhookDelivery;
use utoipa::OpenApi;

use super::audit::AuditedBy;
use super::credits::query_param;
use super::schemas::{WebhookDeliveryList, WebhookEndpointList};
use super::{JsonBody, Path};
use crate::error::{ApiError, ErrorBody};
use crate::service::notify::{self, EndpointInput, EndpointWithSecret, RotateInput};
use crate::state::AppState;

/// The webhook routes (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook-endpoints", post(create).get(list))
        .route("/v1/webhook-endpoints/{endpoint}", get(show).delete(delete))
        .route("/v1/webhook-endpoints/{endpoint}/rotate", post(rotate))
        .route(
            "/v1/webhook-endpoints/{endpoint}/deliveries",
            get(deliveries),
        )
}

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi(
    paths(create, list, show, delete, rotate, deliveries),
    components(schemas(EndpointInput, RotateInput, super::schemas::WebhookEndpoint))
)]
pub struct WebhooksDoc;

/// Registers an endpoint: Tally POSTs the events it subscribes to, signed with the secret in the
/// answer (shown only now).
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    request_body = EndpointInput,
    responses((status = 200, description = "the endpoint and its secret", body = EndpointWithSecret),
        (status = 400, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    let input: EndpointInput = body.parse_owned()?;
    Ok(Json(notify::create_endpoint(&state, input, audit).await?))
}

/// The registered endpoints, oldest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = WebhookEndpointList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<WebhookEndpointList>, ApiError> {
    let data = state.store.list_webhook_endpoints().await?;
    Ok(Json(WebhookEndpointList {
        data: data.into_iter().map(Into::into).collect(),
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{endpoint}", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 200, body = super::schemas::WebhookEndpoint), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<super::schemas::WebhookEndpoint>, ApiError> {
    Ok(Json(notify::endpoint(&state, &id).await?.into()))
}

/// Deletes an endpoint: it receives nothing more.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{endpoint}", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
) -> Result<StatusCode, ApiError> {
    notify::delete_endpoint(&state, &id, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the endpoint's secret (answered once); the previous one keeps signing beside it for
/// `expires_in` seconds, so the app can switch without losing a delivery.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{endpoint}/rotate", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint" = String, Path)),
    request_body = RotateInput,
    responses((status = 200, description = "the endpoint and its new secret", body = EndpointWithSecret),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditedBy(audit): AuditedBy,
    body: JsonBody,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    let input: RotateInput = body.parse_owned()?;
    Ok(Json(notify::rotate(&state, &id, input, audit).await?))
}

#[derive(Serialize)]
pub struct Deliveries {
    data: Vec<WebhookDelivery>,
}

/// The endpoint's deliveries, newest first (`?limit=`, 1–100, default 50).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{endpoint}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint" = String, Path), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = WebhookDeliveryList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Deliveries>, ApiError> {
    let limit = match query_param(&query, "limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_limit", "limit must be 1–100").with_param("limit")
            })?,
    };
    notify::endpoint(&state, &id).await?;
    Ok(Json(Deliveries {
        data: state.store.webhook_deliveries(&id, limit).await?,
    }))
}
