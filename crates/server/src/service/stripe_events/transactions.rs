//! The transactions history (seed 002's Transaction model), read from what the Stripe worker
//! recorded.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::service::customers::check_id;
use crate::state::AppState;

/// Default and largest page.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// A transaction on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransactionView {
    pub id: String,
    pub customer: String,
    /// `subscription_payment`, `credit_pack`, `payment_failed` or `refund`.
    pub kind: String,
    /// `succeeded`, `failed` or `refunded`.
    pub status: String,
    /// Minor units of `currency` (for a refund: refunded so far on the charge).
    pub amount: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    pub description: Option<String>,
    pub stripe_invoice: Option<String>,
    pub stripe_payment_intent: Option<String>,
    pub stripe_charge: Option<String>,
    pub stripe_checkout_session: Option<String>,
    pub stripe_subscription: Option<String>,
    /// When it happened (Stripe's event time).
    pub occurred_at: DateTime<Utc>,
}

impl From<tally_store::Transaction> for TransactionView {
    fn from(t: tally_store::Transaction) -> Self {
        TransactionView {
            id: t.id,
            customer: t.customer_id,
            kind: t.kind,
            status: t.status,
            amount: t.amount,
            currency: t.currency,
            description: t.description,
            stripe_invoice: t.stripe_invoice,
            stripe_payment_intent: t.stripe_payment_intent,
            stripe_charge: t.stripe_charge,
            stripe_checkout_session: t.stripe_checkout_session,
            stripe_subscription: t.stripe_subscription,
            occurred_at: t.occurred_at,
        }
    }
}

/// A page of the customer's transactions, newest first, and whether more follow.
pub async fn list(
    state: &AppState,
    id: &str,
    limit: Option<usize>,
    starting_after: Option<&str>,
) -> Result<(Vec<TransactionView>, bool), ApiError> {
    check_id(id)?;
    crate::service::usage::customer(state, id).await?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_limit", format!("limit must be 1–{MAX_LIMIT}"))
                .with_param("limit"),
        );
    }
    if let Some(after) = starting_after {
        let first = state.store.transactions(id, usize::MAX, None).await?;
        if !first.iter().any(|t| t.id == after) {
            return Err(ApiError::bad_request(
                "invalid_starting_after",
                format!("the customer has no transaction {after:?}"),
            )
            .with_param("starting_after"));
        }
    }
    let mut rows = state
        .store
        .transactions(id, limit.saturating_add(1), starting_after)
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((
        rows.into_iter().map(TransactionView::from).collect(),
        has_more,
    ))
}
