//! What a Stripe subscription has pending: a change scheduled for the period end (a subscription
//! schedule's next phase) and a cancellation. Shared by the plan-change routes, which answer
//! with it, and the webhook mirror, which stores it with the subscription.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tally_stripe::model::{Subscription, SubscriptionSchedule};
use tally_stripe::{Client, IdempotencyKey};
use utoipa::ToSchema;

use tally_core::catalog::Catalog;

/// A plan change that takes effect later (a downgrade at the period end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PendingChange {
    /// The plan from then on.
    pub plan: String,
    /// `month` or `year`.
    pub interval: String,
    /// When it takes effect (the current period's end).
    pub effective_at: DateTime<Utc>,
}

/// A cancellation that takes effect later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PendingCancellation {
    /// When the subscription ends.
    pub effective_at: DateTime<Utc>,
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// The catalog plan and interval of a price lookup key, as `tally stripe push` writes them.
pub fn plan_of_lookup_key(catalog: &Catalog, key: &str) -> Option<(String, String)> {
    catalog.plans().iter().find_map(|p| {
        p.prices
            .iter()
            .find(|(_, price)| price.lookup_key == key)
            .map(|(interval, _)| (p.id.clone(), interval.as_str().to_owned()))
    })
}

/// The schedule's next phase after the current one, as a pending change of plan.
pub fn next_phase(catalog: &Catalog, sc: &SubscriptionSchedule) -> Option<PendingChange> {
    if sc.status != "active" && sc.status != "not_started" {
        return None;
    }
    let current = sc.current_phase_start?;
    let next = sc.phases.iter().find(|p| p.start_date > current)?;
    let key = next.items.first()?.lookup_key.as_deref()?;
    let (plan, interval) = plan_of_lookup_key(catalog, key)?;
    Some(PendingChange {
        plan,
        interval,
        effective_at: at(next.start_date)?,
    })
}

/// Whether the schedule is in its last phase: its change is in force, nothing is pending.
pub fn in_last_phase(sc: &SubscriptionSchedule) -> bool {
    sc.status == "active"
        && sc
            .current_phase_start
            .is_some_and(|c| sc.phases.last().is_some_and(|l| l.start_date == c))
}

/// The subscription's pending cancellation.
pub fn pending_cancellation(s: &Subscription) -> Option<PendingCancellation> {
    if s.cancel_at_period_end {
        let end = s
            .cancel_at
            .or_else(|| s.items.first().map(|i| i.current_period_end))?;
        return Some(PendingCancellation {
            effective_at: at(end)?,
        });
    }
    s.cancel_at
        .and_then(at)
        .map(|effective_at| PendingCancellation { effective_at })
}

/// The subscription's schedule, read from Stripe.
pub async fn schedule_of(
    client: &Client,
    s: &Subscription,
) -> Result<Option<SubscriptionSchedule>, tally_stripe::Error> {
    let Some(id) = &s.schedule else {
        return Ok(None);
    };
    Ok(client.subscription_schedule(id).await?.map(|r| r.value))
}

/// Releases a schedule: the subscription keeps its current price and is managed directly
/// again. Releasing changes nothing billable, so the key comes from the schedule itself.
pub async fn release(client: &Client, schedule: &str) -> Result<(), tally_stripe::Error> {
    let key = IdempotencyKey::from_content("subscription_schedule_release", &[schedule]);
    match client.release_schedule(schedule, &key).await {
        Ok(_) => Ok(()),
        // Already released (by an earlier attempt or in Stripe's dashboard): nothing to do.
        Err(e) if matches!(e.kind, tally_stripe::ErrorKind::InvalidRequest { .. }) => {
            tracing::info!(%schedule, error = %e, "schedule not released (no longer active)");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
