//! The catalog's plans.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use tally_core::catalog::Plan;
use utoipa::ToSchema;

use crate::state::AppState;

/// Body of `GET /v1/plans`.
#[derive(Serialize, ToSchema)]
pub struct PlanList {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Plan>,
    /// The catalog's free plan, if any.
    pub free_plan: Option<String>,
}

/// The catalog's plans: prices (minor units), included quantities, overage charges, limits,
/// features.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", security(("bearer" = [])),
    responses((status = 200, body = PlanList)))]
pub async fn list(State(state): State<AppState>) -> Json<PlanList> {
    Json(PlanList {
        data: state.catalog.plans().to_vec(),
        free_plan: state.catalog.free_plan.clone(),
    })
}
