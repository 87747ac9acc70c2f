//! The period closer: for each subscription, every allowance period that ended more than the grace
//! window ago gets its invoice written, exactly once (unique per customer and period; the store
//! rates inside its transaction so no event slips in between). Events of a closed period that
//! arrive later are billed in the next invoice as labelled adjustments.

use chrono::{DateTime, Utc};
use tally_core::period::allowance_period;
use tally_store::{NewInvoice, StoredInvoice};
use tokio::sync::watch;

use super::usage::{self, billed_plan};
use crate::error::ApiError;
use crate::state::AppState;

/// The lease naming the process that closes periods.
pub const CLOSER_LEASE: &str = "period_closer";

/// Runs [`close_due`] every `close_every` until `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = close_due(&state, Utc::now()).await {
                tracing::warn!(error = %e, "period close failed; retrying at the next tick");
            }
            tokio::select! {
                _ = tokio::time::sleep(state.config.close_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Writes the invoices of every period that ended before `now − grace`. Returns those written.
pub async fn close_due(
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>, ApiError> {
    let grace =
        chrono::Duration::from_std(state.config.grace).unwrap_or(chrono::Duration::hours(1));
    // One closer among the processes sharing a database; the lease outlives a few ticks so a
    // crashed leader is replaced soon. (Invoices are unique per customer and period anyway.)
    let lease = chrono::Duration::from_std(state.config.close_every * 3)
        .unwrap_or(chrono::Duration::minutes(3))
        .max(chrono::Duration::seconds(60));
    if !state
        .store
        .acquire_lease(CLOSER_LEASE, &state.instance_id, now, now + lease)
        .await?
    {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    for sub in state.store.list_subscriptions().await? {
        let Some(customer) = state.store.get_customer(&sub.customer_id).await? else {
            continue;
        };
        let anchor = customer.billing_anchor;
        let mut start = match state.store.list_invoices(&customer.id).await?.first() {
            Some(last) => last.period_end,
            None => allowance_period(anchor, sub.created_at).start,
        };
        loop {
            let period = allowance_period(anchor, start);
            if period.end + grace > now {
                break;
            }
            let Some(billed) = billed_plan(&state.catalog, Some(&sub)) else {
                tracing::warn!(customer = %customer.id, plan = %sub.plan, "plan not in the catalog; not closing");
                break;
            };
            let pre = usage::period_usage(state, &customer, period).await?;
            let catalog = state.catalog.clone();
            let customer_id = customer.id.clone();
            let build: tally_store::InvoiceBuilder = Box::new(move |rows| {
                // Late rows read again inside the transaction; origins were loaded just before.
                let mut usage = pre;
                usage.late = rows.iter().filter(|r| r.is_adjustment()).cloned().collect();
                for r in rows.iter().filter(|r| !r.is_adjustment()) {
                    if let Some(m) = catalog.metric(&r.metric) {
                        usage.used.insert(r.metric.clone(), usage::aggregate(m, r));
                    }
                }
                let inv = usage::rate_period(&catalog, &billed, anchor, period, &usage)?;
                Ok(NewInvoice {
                    id: format!("in_{}_{}", period.start.format("%Y%m%d%H%M%S"), customer_id),
                    customer_id: customer_id.clone(),
                    plan: inv.plan.clone(),
                    interval: inv.interval.as_str().to_owned(),
                    period_start: period.start,
                    period_end: period.end,
                    currency: inv.currency.code().to_owned(),
                    subtotal: inv.subtotal,
                    discount: inv.discount,
                    total: inv.total,
                    body: serde_json::to_value(&inv).map_err(|e| e.to_string())?,
                    created_at: Utc::now(),
                })
            });
            if let Some(inv) = state
                .store
                .close_period(&customer.id, period.start, period.end, build)
                .await?
            {
                tracing::info!(customer = %customer.id, invoice = %inv.id, total = inv.total, "period closed");
                written.push(inv);
            }
            start = period.end;
        }
    }
    Ok(written)
}
