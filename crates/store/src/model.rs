//! Rows the store reads and writes. Wire shapes live in the server; these are storage records.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

/// Largest accepted id length (customer ids, event ids).
pub const MAX_ID_LEN: usize = 255;

/// Whether `id` is a valid customer id: 1–255 characters of `[A-Za-z0-9_.:@-]`.
pub fn is_valid_customer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'@'))
}

/// A customer of the app, keyed by the app's own id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// A JSON object of string values chosen by the app.
    pub metadata: Value,
    /// The instant usage allowances are anchored on (monthly from here): the customer's creation,
    /// until a mirrored Stripe subscription's billing cycle anchor replaces it.
    pub billing_anchor: DateTime<Utc>,
    /// The anchor the periods before `billing_anchor` follow, once it changed (see
    /// [`tally_core::period::AllowanceAnchor`]). Not part of the API's customer.
    #[serde(skip)]
    pub previous_anchor: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The customer asked for no email from Tally (notifications to the app still go out).
    pub email_opt_out: bool,
    /// The end of the customer's last invoiced allowance period (`None` before its first invoice):
    /// where the period closer resumes, and before which events are late. Not part of the API's
    /// customer.
    #[serde(skip)]
    pub billed_through: Option<DateTime<Utc>>,
}

impl Customer {
    /// Where the customer's allowance periods are anchored, with its last change.
    pub fn allowance(&self) -> tally_core::period::AllowanceAnchor {
        tally_core::period::AllowanceAnchor {
            anchor: self.billing_anchor,
            previous: self.previous_anchor,
        }
    }

    /// The customer's allowance period containing `at`.
    pub fn allowance_period(&self, at: DateTime<Utc>) -> tally_core::period::Period {
        self.allowance().period(at)
    }
}

/// Create-or-update of a customer. `None` fields keep their stored value on update.
#[derive(Debug, Clone)]
pub struct CustomerUpsert {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<Value>,
    /// `Some`: opt the customer out of (or back into) customer emails.
    pub email_opt_out: Option<bool>,
    pub now: DateTime<Utc>,
}

/// A customer's current subscription (local or mirrored from Stripe).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub plan: String,
    /// `month` or `year`.
    pub interval: String,
    /// Stripe's statuses: trialing, active, past_due, canceled, unpaid, incomplete, paused.
    pub status: String,
    /// `local` (assigned through the API) or `stripe`.
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Since when it is past due or unpaid (the grace period counts from here); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub past_due_since: Option<DateTime<Utc>>,
    /// The mirrored Stripe subscription (source `stripe`): its ids, current period,
    /// cancel-at-period-end, trial end and coupon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe: Option<Value>,
}

/// Assignment of a customer's subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionUpsert {
    pub customer_id: String,
    pub plan: String,
    pub interval: String,
    pub status: String,
    pub source: String,
    pub now: DateTime<Utc>,
}

/// A validated usage event, with the allowance period it falls in already computed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub customer_id: String,
    pub event_id: String,
    pub metric: String,
    pub value: Decimal,
    pub timestamp: DateTime<Utc>,
    pub properties: Option<Value>,
    /// Start of the customer's allowance period containing `timestamp`.
    pub period_start: DateTime<Utc>,
    /// For `unique_count` metrics: the value whose distinct occurrences are counted.
    pub unique_key: Option<String>,
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub duplicates: u64,
}

/// Aggregates of one metric's events for one customer, by the period the usage happened in and the
/// period it is billed in. They differ only for late events of an already invoiced period, which
/// are billed in the next open period as an adjustment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRollup {
    pub metric: String,
    pub usage_period_start: DateTime<Utc>,
    pub billed_period_start: DateTime<Utc>,
    pub sum: Decimal,
    pub count: i64,
    pub max: Option<Decimal>,
    pub latest: Option<Decimal>,
    pub latest_at: Option<DateTime<Utc>>,
    pub unique_count: i64,
}

impl UsageRollup {
    /// Whether this rollup is late usage of an earlier, already invoiced period.
    pub fn is_adjustment(&self) -> bool {
        self.usage_period_start != self.billed_period_start
    }
}

/// An invoice to write for a closed period.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvoice {
    pub id: String,
    pub customer_id: String,
    pub plan: String,
    pub interval: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
    /// The rated invoice as JSON (lines etc.).
    pub body: Value,
    pub created_at: DateTime<Utc>,
}

/// A written invoice.
pub type StoredInvoice = NewInvoice;

/// An API key's record. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// What the key may do: `admin`, `app` or `read` (the server defines each).
    pub scope: String,
    /// The one customer the key may act for; `None`: every customer.
    pub customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub customer_id: Option<String>,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
}
