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

/// What Stripe said about a failed attempt to collect an invoice.
#[derive(Debug, Clone, Default)]
pub struct Decline {
    /// `card_declined`, `expired_card`, … (Stripe's error code).
    pub code: Option<String>,
    /// The issuer's reason (`insufficient_funds`, `lost_card`, …).
    pub decline_code: Option<String>,
    /// Lost or stolen card, fraud, pick-up or expired card: Stripe will not retry.
    pub hard: bool,
    /// When Stripe retries, if it does.
    pub next_payment_attempt: Option<DateTime<Utc>>,
}

/// `invoice.payment_failed` (or a failed checkout payment): a payment failed (recorded as
/// `failed`), the subscription is past due since `since`.
pub async fn payment_failed(
    state: &AppState,
    customer_id: &str,
    failed: &Transaction,
    since: DateTime<Utc>,
    decline: &Decline,
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
            "decline_code": decline.decline_code,
            "hard_decline": decline.hard,
            "next_payment_attempt": decline.next_payment_attempt.map(|t| t.to_rfc3339()),
        }),
        format!("invoice.payment_failed:{}", failed.key),
    )
    .await?;
    Ok(())
}

/// `payment.action_required`: a hard decline (lost or stolen card, fraud, pick-up, expired).
/// Stripe does not retry it, so only a new payment method from the customer (the portal) can
/// collect the invoice; sent at once, beside `invoice.payment_failed`.
pub async fn payment_action_required(
    state: &AppState,
    customer_id: &str,
    failed: &Transaction,
    since: DateTime<Utc>,
    decline: &Decline,
) -> Result<(), ApiError> {
    enqueue(
        state,
        "payment.action_required",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "reason": "hard_decline",
            "transaction": failed.id,
            "amount": failed.amount,
            "currency": failed.currency,
            "stripe_invoice": failed.stripe_invoice,
            "code": decline.code,
            "decline_code": decline.decline_code,
            "past_due_since": since.to_rfc3339(),
        }),
        format!("payment.action_required:{}", failed.key),
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

/// `subscription.created` (the first mirror of a Stripe subscription for the customer) or
/// `subscription.updated` (its plan, interval, status, cancellation flag or period changed). Keyed
/// by the state reached, so a replayed or duplicated event enqueues nothing more.
pub async fn subscription_changed(
    state: &AppState,
    customer_id: &str,
    before: Option<&Subscription>,
    after: &Subscription,
) -> Result<(), ApiError> {
    let field = |s: &Subscription, k: &str| {
        s.stripe
            .as_ref()
            .and_then(|j| j.get(k))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let stripe_id = field(after, "subscription");
    let created = before.is_none_or(|b| field(b, "subscription") != stripe_id);
    let shape = |s: &Subscription| {
        (
            s.plan.clone(),
            s.interval.clone(),
            s.status.clone(),
            field(s, "cancel_at_period_end"),
            field(s, "current_period_end"),
        )
    };
    if !created && before.map(shape) == Some(shape(after)) {
        return Ok(());
    }
    let (plan, interval, status, cancel, period_end) = shape(after);
    let kind = if created {
        "subscription.created"
    } else {
        "subscription.updated"
    };
    enqueue(
        state,
        kind,
        Some(customer_id),
        json!({
            "customer": customer_id,
            "subscription": after.id,
            "stripe_subscription": stripe_id,
            "plan": plan,
            "interval": interval,
            "status": status,
            "cancel_at_period_end": cancel,
            "current_period_end": period_end,
        }),
        format!(
            "{kind}:{customer_id}:{stripe_id}:{plan}:{interval}:{status}:{cancel}:{period_end}"
        ),
    )
    .await?;
    Ok(())
}

/// `invoice.paid`: Stripe collected a subscription invoice (recorded as `paid`).
pub async fn invoice_paid(
    state: &AppState,
    customer_id: &str,
    paid: &Transaction,
) -> Result<(), ApiError> {
    enqueue(
        state,
        "invoice.paid",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "transaction": paid.id,
            "amount": paid.amount,
            "currency": paid.currency,
            "stripe_invoice": paid.stripe_invoice,
            "stripe_subscription": paid.stripe_subscription,
        }),
        format!("invoice.paid:{}", paid.key),
    )
    .await?;
    Ok(())
}

/// `credits.purchased`: a credit pack bought through Checkout was granted.
pub async fn credits_purchased(
    state: &AppState,
    customer_id: &str,
    pack: &str,
    credits: rust_decimal::Decimal,
    purchase: &Transaction,
) -> Result<(), ApiError> {
    enqueue(
        state,
        "credits.purchased",
        Some(customer_id),
        json!({
            "customer": customer_id,
            "pack": pack,
            "credits": credits.to_string(),
            "transaction": purchase.id,
            "amount": purchase.amount,
            "currency": purchase.currency,
            "stripe_checkout_session": purchase.stripe_checkout_session,
        }),
        format!("credits.purchased:{}", purchase.key),
    )
    .await?;
    Ok(())
}
