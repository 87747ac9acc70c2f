//! Audit rows of actions whose change is not stored in Tally's database (e.g. a refund or another
//! call to Stripe). Changes Tally stores are audited by the store method that makes them, in
//! their own transaction (see `tally_store::audit`).

use serde_json::Value;
use tally_store::{AuditContext, AuditEntry, Store};

use crate::error::ApiError;

/// What an external action was about.
pub struct Target<'a> {
    /// e.g. `refund`, `stripe_subscription`.
    pub kind: &'a str,
    pub id: &'a str,
    pub customer: Option<&'a str>,
}

/// Records one action (`<target type>.<verb>`, e.g. `refund.created`) made by `by`, with the
/// target's state before and after it.
pub async fn record(
    store: &dyn Store,
    by: AuditContext,
    action: &str,
    target: Target<'_>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), ApiError> {
    store
        .record_audit(AuditEntry {
            action: action.to_owned(),
            target_type: target.kind.to_owned(),
            target_id: target.id.to_owned(),
            customer_id: target.customer.map(str::to_owned),
            before,
            after,
            context: by,
        })
        .await?;
    Ok(())
}
