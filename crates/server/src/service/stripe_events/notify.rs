//! The moments of Stripe's events at which Tally tells the customer's app something, written to
//! the notifications outbox (see `service::notify`). The fact itself is already durable when they
//! are called (the mirrored subscription, the failed-payment transaction); the outbox row is keyed
//! by that fact, so the event's processing is retried until the notification is stored and a
//! retry never stores it twice.

use chrono::{DateTime, Utc};
use serde_json::json;
use tally_store::{Subscription, Transaction};

use crate::error::ApiError;
use crate::service::notify::enqueue;
use crate::state::AppState;

/// `customer.subscription.trial_will_end`: the trial of `subscription` ends at `trial_end`.
pub async fn trial_will_end(
    state: &AppState,
    customer_id: &str,
    subscription: &Subscription,
    trial_end: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    let ends = trial_end.map(|t| t.to_rfc3339());
    enqueue(
        state,
        "subscription.trial_will_end",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "subscription": subscription.id,
            "plan": subscription.plan,
            "interval": subscription.interval,
            "trial_end": ends,
        }),
        format!(
            "subscription.trial_will_end:{customer_id}:{}:{}",
            subscription.id,
            ends.as_deref().unwrap_or("")
        ),
    )
    .await?;
    Ok(())
}

/// `invoice.payment_failed` (or a failed checkout payment): a payment failed (recorded as
/// `failed`), the subscription is past due since `since`.
pub async fn payment_failed(
    state: &AppState,
    customer_id: &str,
    failed: &Transaction,
    since: DateTime<Utc>,
) -> Result<(), ApiError> {
    enqueue(
        state,
        "invoice.payment_failed",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "transaction": failed.id,
            "amount": failed.amount,
            "currency": failed.currency,
            "stripe_invoice": failed.stripe_invoice,
            "stripe_payment_intent": failed.stripe_payment_intent,
            "past_due_since": since.to_rfc3339(),
        }),
        format!("invoice.payment_failed:{}", failed.key),
    )
    .await?;
    Ok(())
}

/// `subscription.canceled`: the mirrored subscription turned `canceled` (the free plan applies).
pub async fn subscription_canceled(
    state: &AppState,
    customer_id: &str,
    subscription: &Subscription,
) -> Result<(), ApiError> {
    let stripe_id = subscription
        .stripe
        .as_ref()
        .and_then(|s| s.get("subscription"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let canceled_at = subscription
        .stripe
        .as_ref()
        .and_then(|s| s.get("canceled_at"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    enqueue(
        state,
        "subscription.canceled",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "subscription": subscription.id,
            "plan": subscription.plan,
            "interval": subscription.interval,
            "canceled_at": canceled_at,
        }),
        format!("subscription.canceled:{customer_id}:{stripe_id}"),
    )
    .await?;
    Ok(())
}
