//! Rows of the usage pushes: how each closed invoice of a customer with a Stripe subscription
//! reaches Stripe. A row is committed before any Stripe call, so every call's idempotency key
//! comes from it, and a crash or a second process resumes from it instead of billing again.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a push stands with Stripe.
pub mod state {
    /// Not (completely) on Stripe yet; retried at `next_attempt_at`.
    pub const PENDING: &str = "pending";
    /// Every line is on a Stripe invoice that Stripe collects (a renewal draft or a finalized
    /// standalone invoice).
    pub const SENT: &str = "sent";
    /// Stripe collected the invoice.
    pub const PAID: &str = "paid";
    /// Stripe's charge failed (Stripe retries on its schedule).
    pub const FAILED: &str = "failed";
    /// The Stripe invoice was voided or marked uncollectible.
    pub const VOIDED: &str = "voided";
    /// Nothing to bill through Stripe: the invoice has no usage lines (its base price is the
    /// subscription's, which Stripe bills by itself).
    pub const SKIPPED: &str = "skipped";
}

/// One Tally invoice's push to Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoicePush {
    pub invoice_id: String,
    pub customer_id: String,
    /// `cus_…`.
    pub stripe_customer: String,
    /// `sub_…`.
    pub stripe_subscription: Option<String>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    /// Lines to bill through Stripe.
    pub lines: i64,
    /// Their sum, in minor units.
    pub amount: i64,
    /// See [`state`].
    pub state: String,
    /// The renewal draft the lines went on, once chosen.
    pub renewal_invoice: Option<String>,
    /// The invoice Tally made for lines no renewal could take, once made.
    pub standalone_invoice: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Stripe's `Request-Id` of the last call (the failing one after a failure).
    pub request_id: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Stripe's hosted page of the invoice that carries the lines, once its events reported it.
    pub hosted_invoice_url: Option<String>,
}

impl InvoicePush {
    /// The Stripe invoice that carries the lines: the standalone one when there is one.
    pub fn stripe_invoice(&self) -> Option<&str> {
        self.standalone_invoice
            .as_deref()
            .or(self.renewal_invoice.as_deref())
    }
}

/// Which Stripe invoice of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTarget {
    Renewal,
    Standalone,
}

/// How a claimed push attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub state: String,
    pub last_error: Option<String>,
    pub request_id: Option<String>,
    /// When to try again (pending only).
    pub next_attempt_at: DateTime<Utc>,
    /// Whether this attempt failed (counted in `attempts`).
    pub failed: bool,
    pub now: DateTime<Utc>,
}

/// A refund of a payment (see the `refunds` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundRecord {
    /// `rf_…`.
    pub id: String,
    /// One row per refund: the row id for refunds made through Tally,
    /// `charge:<ch_…>:<amount refunded so far>` for refunds seen only in `charge.refunded`.
    pub dedup_key: String,
    pub customer_id: String,
    /// The Tally transaction refunded, when known.
    pub payment: Option<String>,
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    /// `api` or `stripe` (made in Stripe's dashboard).
    pub source: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub stripe_refund: Option<String>,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
    /// Credits a refunded pack took back, and what it could not (decimal strings).
    pub credits_taken: Option<String>,
    pub credits_shortfall: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
