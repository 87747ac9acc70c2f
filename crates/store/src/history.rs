//! The subscription history: one row per change of a customer's subscription, written in the
//! transaction of the change (local assignments and the Stripe mirror alike). Business metrics
//! read it instead of reconstructing the past from the current row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::Subscription;

/// One change of a customer's subscription: its state from `at` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionChangeRecord {
    /// Order of writing (ties of `at` are read in this order).
    pub seq: i64,
    pub customer_id: String,
    /// When the change took effect: the change's own instant for local changes, the Stripe
    /// event's `created` for the mirror.
    pub at: DateTime<Utc>,
    pub plan: String,
    /// `month` or `year`.
    pub interval: String,
    /// `trialing`, `active`, `past_due`, `canceled`, `unpaid`, `incomplete`, `paused`, …
    pub status: String,
    /// `local` or `stripe`.
    pub source: String,
    /// The coupon applied to the subscription (Stripe's, or the customer's latest local
    /// redemption).
    pub coupon: Option<String>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<DateTime<Utc>>,
}

/// The facts of a subscription row that the history records; a new history row is written only
/// when one of them differs from the customer's previous row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryFacts {
    pub plan: String,
    pub interval: String,
    pub status: String,
    pub source: String,
    pub coupon: Option<String>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<DateTime<Utc>>,
}

impl HistoryFacts {
    /// The facts of a stored subscription; `local_coupon` is used for local subscriptions (a
    /// mirrored one carries Stripe's coupon).
    pub(crate) fn of(sub: &Subscription, local_coupon: Option<String>) -> HistoryFacts {
        let stripe = sub.stripe.as_ref();
        let field = |k: &str| stripe.and_then(|s| s.get(k));
        HistoryFacts {
            plan: sub.plan.clone(),
            interval: sub.interval.clone(),
            status: sub.status.clone(),
            source: sub.source.clone(),
            coupon: if sub.source == "stripe" {
                field("coupon").and_then(Value::as_str).map(str::to_owned)
            } else {
                local_coupon
            },
            cancel_at_period_end: field("cancel_at_period_end")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            trial_end: field("trial_end")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    pub(crate) fn of_record(r: &SubscriptionChangeRecord) -> HistoryFacts {
        HistoryFacts {
            plan: r.plan.clone(),
            interval: r.interval.clone(),
            status: r.status.clone(),
            source: r.source.clone(),
            coupon: r.coupon.clone(),
            cancel_at_period_end: r.cancel_at_period_end,
            trial_end: r.trial_end,
        }
    }
}
