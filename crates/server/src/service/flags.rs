//! Feature flags: the catalog's flags evaluated for a customer in the server's environment
//! (`--environment`), with per-customer overrides set through the API taking precedence.

use serde::{Deserialize, Serialize};
use tally_core::flags::evaluate;
use tally_store::AuditContext;
use tally_store::FlagOverride;
use utoipa::ToSchema;

use super::customers::check_id;
use super::usage;
use crate::error::ApiError;
use crate::state::AppState;

/// One flag evaluated for a customer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagView {
    pub flag: String,
    pub enabled: bool,
    /// disabled, environment, in_rollout, out_of_rollout, or override.
    pub reason: String,
    /// The customer's rollout bucket for this flag, 0–9999.
    pub bucket: u32,
    /// Set when a per-customer override decided the value.
    pub overridden: bool,
}

/// `GET /v1/flags?customer=ID`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagsView {
    pub customer: String,
    pub environment: String,
    pub flags: Vec<FlagView>,
}

/// Evaluates every catalog flag for a customer.
pub async fn evaluate_all(state: &AppState, customer: &str) -> Result<FlagsView, ApiError> {
    check_id(customer).map_err(|e| e.with_param("customer"))?;
    usage::customer(state, customer).await?;
    let overrides = state.store.flag_overrides(customer).await?;
    let env = state.config.environment.as_str();
    let flags = state
        .catalog
        .flags()
        .iter()
        .map(|f| {
            let e = evaluate(f, customer, env);
            match overrides.iter().find(|o| o.flag == f.id) {
                Some(o) => FlagView {
                    flag: e.flag,
                    enabled: o.enabled,
                    reason: "override".into(),
                    bucket: e.bucket,
                    overridden: true,
                },
                None => FlagView {
                    reason: serde_json::to_value(e.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    flag: e.flag,
                    enabled: e.enabled,
                    bucket: e.bucket,
                    overridden: false,
                },
            }
        })
        .collect();
    Ok(FlagsView {
        customer: customer.to_owned(),
        environment: env.to_owned(),
        flags,
    })
}

/// Body of `PUT /v1/customers/{id}/flags/{flag}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideInput {
    pub enabled: bool,
}

fn known_flag(state: &AppState, flag: &str) -> Result<(), ApiError> {
    if state.catalog.flag(flag).is_some() {
        Ok(())
    } else {
        Err(
            ApiError::not_found("unknown_flag", format!("the catalog has no flag {flag:?}"))
                .with_param("flag"),
        )
    }
}

/// `PUT /v1/customers/{id}/flags/{flag}`: sets the customer's override (idempotent).
pub async fn put_override(
    state: &AppState,
    customer: &str,
    flag: &str,
    input: OverrideInput,
    audit: AuditContext,
) -> Result<FlagOverride, ApiError> {
    check_id(customer)?;
    known_flag(state, flag)?;
    usage::customer(state, customer).await?;
    let o = FlagOverride {
        customer_id: customer.to_owned(),
        flag: flag.to_owned(),
        enabled: input.enabled,
        updated_at: state.clock.now(),
    };
    state
        .store
        .put_flag_override_audited(o.clone(), Some(audit))
        .await?;
    Ok(o)
}

/// `DELETE /v1/customers/{id}/flags/{flag}`: removes the override (idempotent); returns whether
/// one existed.
pub async fn delete_override(
    state: &AppState,
    customer: &str,
    flag: &str,
    audit: AuditContext,
) -> Result<bool, ApiError> {
    check_id(customer)?;
    known_flag(state, flag)?;
    usage::customer(state, customer).await?;
    Ok(state
        .store
        .delete_flag_override_audited(customer, flag, Some(audit))
        .await?)
}
