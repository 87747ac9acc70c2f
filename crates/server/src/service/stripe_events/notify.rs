//! The moments of Stripe's events at which Tally tells the customer's app something: one function
//! per moment. The fact itself is already durable when they are called (the mirrored subscription,
//! the failed-payment transaction), so a notification can be rebuilt from it; these functions are
//! where the notifications outbox takes them over.

use chrono::{DateTime, Utc};
use tally_store::{Subscription, Transaction};

use crate::state::AppState;

/// `customer.subscription.trial_will_end`: the trial of `subscription` ends at `trial_end`.
pub async fn trial_will_end(
    _state: &AppState,
    customer_id: &str,
    subscription: &Subscription,
    trial_end: Option<DateTime<Utc>>,
) {
    tracing::info!(
        customer = customer_id,
        plan = %subscription.plan,
        trial_end = ?trial_end,
        "notification point: trial will end"
    );
}

/// `invoice.payment_failed`: a payment failed (recorded as `failed`), the subscription is past
/// due since `since`.
pub async fn payment_failed(
    _state: &AppState,
    customer_id: &str,
    failed: &Transaction,
    since: DateTime<Utc>,
) {
    tracing::info!(
        customer = customer_id,
        amount = failed.amount,
        currency = %failed.currency,
        invoice = ?failed.stripe_invoice,
        %since,
        "notification point: payment failed"
    );
}
