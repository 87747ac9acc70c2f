//! Rows of Tally's links to Stripe and of local coupon redemptions: the Stripe customer of each Tally customer and the Checkout
//! Sessions Tally created. Each is committed before the Stripe call it stands for, so the call's
//! idempotency key can come from it and a crash between the call and the next commit is
//! recoverable.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A Tally customer's Stripe customer: the row exists from the first need, `stripe_id` from the
/// first successful create (or look-up by metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StripeCustomerLink {
    pub customer_id: String,
    pub stripe_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A Checkout Session Tally asked Stripe for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutRecord {
    /// `chk_…`: Tally's id (the idempotency key's row and `metadata[tally_checkout_id]`).
    pub id: String,
    pub customer_id: String,
    /// `subscription` or `payment`.
    pub mode: String,
    pub plan: Option<String>,
    pub interval: Option<String>,
    pub pack: Option<String>,
    /// `cs_…`, once Stripe answered.
    pub stripe_id: Option<String>,
    pub url: Option<String>,
    /// Stripe's `Request-Id` of the create.
    pub request_id: Option<String>,
    /// The last failure of the create, if it failed.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A plan change of a Stripe subscription Tally asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChangeRecord {
    /// `pc_…`: the idempotency key's row.
    pub id: String,
    pub customer_id: String,
    /// `sub_…`.
    pub subscription: String,
    pub from_plan: Option<String>,
    pub from_interval: Option<String>,
    pub to_plan: String,
    pub to_interval: String,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
    /// Whether Stripe applied it.
    pub applied: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The outcome of a durable row's Stripe call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Created {
        stripe_id: String,
        url: Option<String>,
        request_id: Option<String>,
    },
    Failed {
        error: String,
        request_id: Option<String>,
    },
}

/// A redemption of a catalog coupon by a customer's local subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponRedemption {
    pub coupon_id: String,
    pub customer_id: String,
    /// The catalog's limit across all customers.
    pub max_redemptions: Option<u32>,
    pub now: DateTime<Utc>,
}

/// What a redemption did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// Counted now (the number of redemptions so far, this one included).
    Redeemed(u64),
    /// The customer had redeemed it before: nothing counted again.
    AlreadyRedeemed,
    /// `max_redemptions` reached: nothing stored.
    Exhausted,
}
