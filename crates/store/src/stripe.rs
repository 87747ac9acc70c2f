//! Records of Stripe → Tally: the webhook inbox, the subscription mirror and transactions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// A verified Stripe event to store in the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxEvent {
    /// `evt_…`: the inbox is unique by it.
    pub event_id: String,
    pub event_type: String,
    /// The id of `data.object` (events of one object are processed in order).
    pub object_id: Option<String>,
    /// Stripe's `created` (unix seconds).
    pub created: i64,
    /// The raw body, as received.
    pub body: String,
    /// `webhook` or `backfill`.
    pub source: String,
    pub received_at: DateTime<Utc>,
}

/// An event of the inbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxEvent {
    pub event_id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub created: i64,
    #[serde(skip)]
    pub body: String,
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// `pending`, `applied`, `ignored` or `parked`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// What processing did (e.g. `subscription mirrored`, `not Tally's customer`).
    pub outcome: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// How processing an event ended.
#[derive(Debug, Clone)]
pub enum InboxOutcome {
    /// Applied (or already applied): done.
    Applied(String),
    /// Not Tally's, or a type Tally does not handle: done.
    Ignored(String),
    /// A transient failure: retried from `retry_at`.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// A permanent failure: parked with the reason.
    Parked(String),
}

/// Which inbox events to list.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    /// Only parked events and events that failed at least once.
    pub failed: bool,
    /// Only events received at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// The state of a Stripe subscription mirrored onto a customer's subscription (source `stripe`).
#[derive(Debug, Clone)]
pub struct StripeSubscriptionUpsert {
    pub customer_id: String,
    pub plan: String,
    pub interval: String,
    pub status: String,
    /// Stripe's ids and fields (subscription, customer, current period, cancel_at_period_end,
    /// trial_end, coupon).
    pub stripe: Value,
    /// When the subscription became past due or unpaid, if it is; kept when it already was.
    pub past_due_at: Option<DateTime<Utc>>,
    /// When the change took effect at Stripe (the event's `created`): the instant of the
    /// subscription history's row.
    pub changed_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The subscription's billing cycle anchor, when allowance periods follow it from now on:
    /// set on the customer in the same transaction (see [`crate::Store::set_allowance_anchor`]),
    /// so no reader sees the new plan with the old periods.
    pub allowance_anchor: Option<DateTime<Utc>>,
}

/// A payment, purchase, failed payment or refund to record once (by `key`).
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub id: String,
    pub key: String,
    pub customer_id: String,
    /// `subscription_payment`, `credit_pack`, `payment_failed` or `refund`.
    pub kind: String,
    /// `succeeded`, `failed` or `refunded`.
    pub status: String,
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    pub description: Option<String>,
    pub stripe_invoice: Option<String>,
    pub stripe_payment_intent: Option<String>,
    pub stripe_charge: Option<String>,
    pub stripe_checkout_session: Option<String>,
    pub stripe_subscription: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A recorded transaction.
pub type Transaction = NewTransaction;
