//! `POST /webhooks/stripe`: Stripe's endpoint. No API key (Stripe signs its deliveries instead):
//! the signature is verified on the raw bytes, then the event is stored in the inbox and the
//! answer is sent only after that commit.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::service::stripe_events;
use crate::state::AppState;

/// The answer to a stored (or already stored) delivery.
#[derive(Serialize, ToSchema)]
pub struct WebhookReceived {
    /// Always true: the event is in the inbox.
    pub received: bool,
    /// Whether this event id had been received before (nothing new was stored).
    pub duplicate: bool,
}

fn too_large() -> ApiError {
    let mut e = ApiError::bad_request(
        "body_too_large",
        "the webhook body is larger than the server's limit (--webhook-max-body-bytes)",
    );
    e.status = StatusCode::PAYLOAD_TOO_LARGE;
    e
}

/// Receives a Stripe event: verifies `Stripe-Signature` (any `v1` of any configured secret,
/// 300 s tolerance), stores the event in the inbox by its id and answers once it is committed.
/// A repeated delivery answers 200 and stores nothing.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks",
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event, exactly as Stripe sent it"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header")),
    responses(
        (status = 200, body = WebhookReceived),
        (status = 400, body = ErrorBody,
            description = "missing or invalid signature (`missing_signature`, `invalid_signature`), or not a Stripe event (`malformed_event`)"),
        (status = 408, body = ErrorBody, description = "the body was not received in time (`request_timeout`)"),
        (status = 413, body = ErrorBody, description = "the body is over the limit (`body_too_large`)"),
        (status = 415, body = ErrorBody, description = "the body is not `application/json` (`unsupported_content_type`)"),
        (status = 503, body = ErrorBody,
            description = "STRIPE_WEBHOOK_SECRET is not set (`webhooks_not_configured`), or the server is shutting down (`unavailable`)"),
    ))]
pub async fn stripe(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<WebhookReceived>, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        let mut e = ApiError::bad_request(
            "unsupported_content_type",
            "Stripe's events are JSON with Content-Type: application/json",
        );
        e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(e);
    }
    let limit = state.config.webhook_max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if crate::conn::BodyTimedOut::caused(&*inner) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "request_timeout",
                    "the request body was not received in time (--body-timeout)".into(),
                )
            } else {
                too_large()
            }
        })?;
    let new = stripe_events::receive(&state, signature.as_deref(), &body).await?;
    Ok(Json(WebhookReceived {
        received: true,
        duplicate: !new,
    }))
}
