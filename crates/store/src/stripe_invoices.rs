//! The mirror of the Stripe invoices of Tally's customers (renewals, prorations, usage
//! invoices, …), written from Stripe's `invoice.*` events. Business metrics (gross revenue,
//! overdue balance) and the billing page read it.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One Stripe invoice as Tally last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StripeInvoiceRecord {
    /// `in_…`.
    pub id: String,
    pub customer_id: String,
    /// `cus_…`.
    pub stripe_customer: Option<String>,
    /// `sub_…`.
    pub stripe_subscription: Option<String>,
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub status: String,
    /// `charge_automatically` or `send_invoice`.
    pub collection_method: Option<String>,
    /// Lowercase ISO code.
    pub currency: String,
    /// Minor units, tax included, after discounts.
    pub total: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    /// `status_transitions.finalized_at`.
    pub finalized_at: Option<DateTime<Utc>>,
    pub due_date: Option<DateTime<Utc>>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub billing_reason: Option<String>,
    pub hosted_invoice_url: Option<String>,
    pub number: Option<String>,
    pub attempt_count: i64,
    pub next_payment_attempt: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    /// Stripe's `created` of the newest event applied: an older event never overwrites a newer
    /// one's state.
    pub event_created: i64,
    pub updated_at: DateTime<Utc>,
}
