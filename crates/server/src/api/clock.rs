//! `POST /v1/clock/advance`: moves Tally's clock and Tally's Stripe test clocks together (tests
//! and demos; refused unless the clock is movable).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::service::clock::{self, AdvanceInput, ClockAdvanced};
use crate::state::AppState;

/// The routes of this module (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/clock/advance", post(advance))
}

/// The OpenAPI paths of this module, merged into the main document.
#[derive(OpenApi)]
#[openapi(paths(advance))]
pub struct ClockDoc;

/// Moves Tally's clock forward, and with `--stripe-test-clocks` the Stripe test clock of every
/// customer Tally made, then waits until both have settled: Stripe's clocks ready, the events
/// they caused applied, the period closer caught up. Answers with the new time.
#[utoipa::path(post, path = "/v1/clock/advance", tag = "clock", security(("bearer" = [])),
    request_body = AdvanceInput,
    responses((status = 200, description = "the clocks moved and settled", body = ClockAdvanced),
        (status = 400, body = ErrorBody),
        (status = 409, description = "`clock_not_movable`: the server runs on the system clock", body = ErrorBody),
        (status = 422, description = "`invalid_duration`", body = ErrorBody),
        (status = 502, description = "`stripe_error`", body = ErrorBody),
        (status = 503, description = "`stripe_unavailable`", body = ErrorBody),
        (status = 504, description = "`clock_not_settled`: moved, but not settled in time", body = ErrorBody)))]
pub async fn advance(
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<Json<ClockAdvanced>, ApiError> {
    let input: AdvanceInput = body.parse()?;
    Ok(Json(clock::advance(&state, input).await?))
}
