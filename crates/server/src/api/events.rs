//! `POST /v1/events`.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::events;
use crate::service::keys::Caller;
use crate::state::AppState;

/// Body of a successful ingest.
#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    /// Events stored by this request.
    pub accepted: u64,
    /// Events already stored before (same customer and id), counted once.
    pub duplicates: u64,
}

/// One usage event (documentation of the accepted shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventInput {
    /// Chosen by the app; `(customer, id)` is unique forever.
    id: String,
    customer: String,
    metric: String,
    /// A JSON number or a numeric string; 1 when omitted.
    #[schema(value_type = Option<String>)]
    value: Option<String>,
    /// RFC 3339; now when omitted; at most 5 minutes ahead and at most `--dedup-window` (35 days
    /// by default) behind, else `timestamp_outside_dedup_window`.
    timestamp: Option<String>,
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
}

/// A batch of events.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventBatch {
    /// 1–1000 events.
    events: Vec<EventInput>,
}

/// Records usage. A batch is all-or-nothing; a 2xx means the events are durable.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    request_body = EventBatch,
    responses(
        (status = 200, body = IngestResponse),
        (status = 400, description = "malformed JSON, no or empty `events`, more than 1000 events", body = ErrorBody),
        (status = 413, description = "body over the limit", body = ErrorBody),
        (status = 415, description = "not application/json", body = ErrorBody),
        (status = 422, description = "invalid events, each index explained in `error.invalid` (e.g. `timestamp_in_future`, `timestamp_outside_dedup_window`); nothing stored", body = ErrorBody),
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonBody,
) -> Result<Json<IngestResponse>, ApiError> {
    if caller.customer.is_some() {
        check_batch_customers(&caller, &body.0)?;
    }
    let out = events::ingest_body(&state, &body.0).await?;
    Ok(Json(IngestResponse {
        accepted: out.accepted,
        duplicates: out.duplicates,
    }))
}

/// For a key limited to one customer: 403 unless every event of the batch names that customer.
/// Only the `customer` fields are read here (other keys skip this). A body this cannot read is
/// refused as malformed (fail closed): no valid batch is unreadable here.
fn check_batch_customers(caller: &Caller, body: &[u8]) -> Result<(), ApiError> {
    #[derive(serde::Deserialize)]
    struct Batch {
        events: Vec<Event>,
    }
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        customer: Option<serde_json::Value>,
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    for (i, e) in batch.events.iter().enumerate() {
        let named = match &e.customer {
            Some(serde_json::Value::String(s)) => s.as_str(),
            // Missing: invalid, rejected whole by the ingest path.
            None => continue,
            Some(_) => {
                return Err(ApiError::customer_forbidden(
                    "every event's customer must be this API key's customer",
                )
                .with_param(format!("events[{i}].customer")))
            }
        };
        caller
            .check_customer(named)
            .map_err(|e| e.with_param(format!("events[{i}].customer")))?;
    }
    Ok(())
}
