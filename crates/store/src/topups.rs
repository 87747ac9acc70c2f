//! Automatic top-ups: a customer's settings (`{threshold, pack, max_per_month}` and the state of
//! its decline backoff and breaker), and the top-up rows, each one charge of the pack's price that
//! Tally decided to make. A row is written before Stripe is called; the payment intent's
//! idempotency key comes from it, and the pack's credits are granted once per row.
//!
//! The rules that hold whichever process asks, enforced by the database:
//! - at most one row in flight (`pending`) per customer: a partial unique index;
//! - at most `max_per_month` rows charged or in flight per calendar month (UTC): counted in the
//!   transaction that writes the row, with the customer's settings row locked (PostgreSQL) or
//!   under the single writer (SQLite);
//! - no row while backing off after a decline, nor after [`BREAKER_AFTER`] declines in a row;
//! - no row unless the balance, read in that same transaction, is below the threshold: the
//!   caller's balance may be stale (a top-up granted since).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::NewNotification;

/// Declines in a row after which top-ups stop until the card changes.
pub const BREAKER_AFTER: i64 = 3;

/// States of a top-up row.
pub mod state {
    /// Written; the charge is being made (or retried after Stripe did not answer).
    pub const PENDING: &str = "pending";
    /// Charged; the pack's credits were granted.
    pub const SUCCEEDED: &str = "succeeded";
    /// Declined (or no card to charge); nothing granted.
    pub const FAILED: &str = "failed";
}

/// A customer's automatic top-up settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoTopup {
    pub customer_id: String,
    /// A consumption that leaves the balance below this requests a top-up.
    pub threshold: Decimal,
    /// The catalog's credit pack bought each time.
    pub pack: String,
    /// Top-ups charged or in flight per calendar month (UTC), at most.
    pub max_per_month: i64,
    /// Declines in a row (0 after a success or a card change).
    pub consecutive_failures: i64,
    /// No top-up is requested before this (after a decline).
    pub retry_after: Option<DateTime<Utc>>,
    /// The payment method of the last decline.
    pub failed_payment_method: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AutoTopup {
    /// Whether the breaker is open (top-ups stopped until the card changes).
    pub fn breaker_open(&self) -> bool {
        self.consecutive_failures >= BREAKER_AFTER
    }
}

/// One top-up: a charge of a pack's price, and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopupRecord {
    pub id: String,
    pub customer_id: String,
    pub pack: String,
    pub credits: Decimal,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// Calendar month (UTC) of the request, `YYYY-MM`.
    pub month: String,
    /// See [`state`].
    pub state: String,
    /// Calls to Stripe that ended without an answer about the charge.
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub payment_method: Option<String>,
    pub payment_intent: Option<String>,
    pub decline_code: Option<String>,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A top-up to write when the rules allow it (see the module's documentation).
#[derive(Debug, Clone)]
pub struct NewTopup {
    pub id: String,
    pub customer_id: String,
    /// The pack the caller priced; nothing is written when the settings name another one.
    pub pack: String,
    pub credits: Decimal,
    pub amount: i64,
    pub currency: String,
    pub now: DateTime<Utc>,
}

impl NewTopup {
    /// The calendar month (UTC) the request counts in.
    pub fn month(&self) -> String {
        self.now.format("%Y-%m").to_string()
    }
}

/// What asking for a top-up did.
#[derive(Debug, Clone, PartialEq)]
pub enum TopupRequest {
    /// The row was written.
    Created(Box<TopupRecord>),
    /// The customer has no settings (or they name another pack now).
    NotConfigured,
    /// The balance is not below the threshold (any more: e.g. a top-up was granted meanwhile).
    AboveThreshold,
    /// A top-up is in flight already.
    InFlight,
    /// `max_per_month` top-ups were charged or are in flight this month.
    CapReached,
    /// Backing off after a decline, until the time given.
    BackingOff(DateTime<Utc>),
    /// [`BREAKER_AFTER`] declines in a row: stopped until the card changes.
    BreakerOpen,
}

/// How a pending top-up ended.
#[derive(Debug, Clone)]
pub struct TopupFinish {
    pub id: String,
    pub succeeded: bool,
    pub payment_intent: Option<String>,
    pub payment_method: Option<String>,
    pub decline_code: Option<String>,
    pub request_id: Option<String>,
    pub error: Option<String>,
    /// On a decline: when the next top-up may be requested (if the breaker stays closed).
    pub retry_after: Option<DateTime<Utc>>,
    /// `topup.succeeded` or `topup.failed`, enqueued in the same transaction.
    pub notification: NewNotification,
    pub now: DateTime<Utc>,
}

/// What a transient failure leaves on a pending top-up: the next attempt's time and the error.
#[derive(Debug, Clone)]
pub struct TopupRetry {
    pub id: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub payment_method: Option<String>,
    pub request_id: Option<String>,
    pub error: String,
    pub now: DateTime<Utc>,
}
