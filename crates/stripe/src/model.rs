//! Tally's view of Stripe objects: small structs with the fields Tally uses. Built from the wire
//! shapes in `wire`, which never leave this crate.

use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Metadata of a Stripe object (Tally's ids live here).
pub type Metadata = BTreeMap<String, String>;

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
    /// Email address.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// `invoice_settings.default_payment_method`: the card charged off-session.
    pub default_payment_method: Option<String>,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// `prod_…` or a custom id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether it can be sold.
    pub active: bool,
    /// Metadata.
    pub metadata: Metadata,
}

/// A billing interval of a recurring price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interval {
    /// Daily.
    Day,
    /// Weekly.
    Week,
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

impl Interval {
    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Interval> {
        Some(match s {
            "day" => Interval::Day,
            "week" => Interval::Week,
            "month" => Interval::Month,
            "year" => Interval::Year,
            _ => return None,
        })
    }
}

/// The recurrence of a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurring {
    /// Interval.
    pub interval: Interval,
    /// Number of intervals per period.
    pub interval_count: u32,
}

/// A price (immutable in Stripe except `active`, `lookup_key`, `metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// `price_…`.
    pub id: String,
    /// Product id.
    pub product: String,
    /// Whether new purchases may use it.
    pub active: bool,
    /// Lowercase ISO currency.
    pub currency: String,
    /// Amount in minor units (None for tiered or decimal prices).
    pub unit_amount: Option<i64>,
    /// Recurrence; None for one-time prices.
    pub recurring: Option<Recurring>,
    /// Lookup key.
    pub lookup_key: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// What a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponDiscount {
    /// Percent off, up to two decimals.
    Percent(Decimal),
    /// A fixed amount in minor units of `currency`.
    Amount {
        /// Minor units.
        amount: i64,
        /// Lowercase ISO currency.
        currency: String,
    },
}

/// How long a redeemed coupon applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponDuration {
    /// The first invoice.
    Once,
    /// N months.
    Repeating {
        /// Months.
        months: u32,
    },
    /// Every invoice.
    Forever,
}

/// A coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    /// Id (custom ids allowed).
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Percent or amount off.
    pub discount: CouponDiscount,
    /// Duration.
    pub duration: CouponDuration,
    /// Redemption limit.
    pub max_redemptions: Option<u32>,
    /// Last redemption instant (unix seconds).
    pub redeem_by: Option<i64>,
    /// Products the coupon is limited to; empty means all.
    pub applies_to_products: Vec<String>,
    /// Whether it can still be redeemed.
    pub valid: bool,
    /// Metadata.
    pub metadata: Metadata,
}

/// A promotion code: a customer-facing code for a coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionCode {
    /// `promo_…`.
    pub id: String,
    /// The code customers type.
    pub code: String,
    /// Coupon id.
    pub coupon: String,
    /// Whether it can be redeemed.
    pub active: bool,
    /// Metadata.
    pub metadata: Metadata,
}

/// A Customer Portal configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfiguration {
    /// `bpc_…`.
    pub id: String,
    /// Whether it can be used.
    pub active: bool,
    /// Whether it is the account's default.
    pub is_default: bool,
    /// Metadata.
    pub metadata: Metadata,
}

/// A Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_…`.
    pub id: String,
    /// Hosted page while open.
    pub url: Option<String>,
    /// `subscription` or `payment`.
    pub mode: String,
    /// `open`, `complete`, `expired`.
    pub status: Option<String>,
    /// `paid`, `unpaid`, `no_payment_required`.
    pub payment_status: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
    /// Subscription id (subscription mode).
    pub subscription: Option<String>,
    /// Payment intent id (payment mode).
    pub payment_intent: Option<String>,
    /// Tally's reference.
    pub client_reference_id: Option<String>,
    /// Total in minor units.
    pub amount_total: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// A Customer Portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// `bps_…`.
    pub id: String,
    /// Where to send the customer.
    pub url: String,
}

/// Status of a Stripe subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// First payment pending.
    Incomplete,
    /// First payment never made.
    IncompleteExpired,
    /// In a trial.
    Trialing,
    /// Paid up.
    Active,
    /// A renewal payment failed; retrying.
    PastDue,
    /// Ended.
    Canceled,
    /// Retries exhausted, kept open.
    Unpaid,
    /// Paused.
    Paused,
    /// A status this version does not know.
    Other(String),
}

impl SubscriptionStatus {
    pub(crate) fn parse(s: &str) -> SubscriptionStatus {
        match s {
            "incomplete" => SubscriptionStatus::Incomplete,
            "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "canceled" => SubscriptionStatus::Canceled,
            "unpaid" => SubscriptionStatus::Unpaid,
            "paused" => SubscriptionStatus::Paused,
            other => SubscriptionStatus::Other(other.to_string()),
        }
    }
}

/// An item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItem {
    /// `si_…`.
    pub id: String,
    /// Price id.
    pub price: String,
    /// Lookup key of the price.
    pub lookup_key: Option<String>,
    /// Quantity (None for metered prices).
    pub quantity: Option<u64>,
    /// Start of the current period (unix seconds).
    pub current_period_start: i64,
    /// End of the current period (unix seconds).
    pub current_period_end: i64,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// Customer id.
    pub customer: String,
    /// Status.
    pub status: SubscriptionStatus,
    /// Cancels at the end of the period.
    pub cancel_at_period_end: bool,
    /// Scheduled cancellation (unix seconds).
    pub cancel_at: Option<i64>,
    /// When it was canceled.
    pub canceled_at: Option<i64>,
    /// End of the trial.
    pub trial_end: Option<i64>,
    /// Items.
    pub items: Vec<SubscriptionItem>,
    /// Latest invoice id.
    pub latest_invoice: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// Coupons of the subscription's discounts; read with [`crate::Client::subscription`],
    /// which expands them (unexpanded discounts, as in events, give none).
    pub coupons: Vec<String>,
    /// The billing cycle anchor (unix seconds): periods start on its day of the month.
    pub billing_cycle_anchor: Option<i64>,
    /// The subscription schedule managing it (`sub_sched_…`), if any.
    pub schedule: Option<String>,
    /// A change waiting for its payment (`payment_behavior=pending_if_incomplete`).
    pub pending_update: Option<PendingUpdate>,
}

/// A subscription change that is not applied until its invoice is paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpdate {
    /// When Stripe drops it (unix seconds).
    pub expires_at: i64,
    /// The items as they would be.
    pub items: Vec<SubscriptionItem>,
}

/// A subscription schedule: the subscription's future as phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSchedule {
    /// `sub_sched_…`.
    pub id: String,
    /// `not_started`, `active`, `completed`, `released` or `canceled`.
    pub status: String,
    /// The subscription it manages (None once released).
    pub subscription: Option<String>,
    /// Start of the current phase (unix seconds), if one is current.
    pub current_phase_start: Option<i64>,
    /// The phases in order.
    pub phases: Vec<SchedulePhase>,
}

/// One phase of a [`SubscriptionSchedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePhase {
    /// Unix seconds.
    pub start_date: i64,
    /// Unix seconds.
    pub end_date: Option<i64>,
    /// (price id, lookup key when the price was expanded, quantity).
    pub items: Vec<PhaseItem>,
}

/// An item of a [`SchedulePhase`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseItem {
    /// Price id.
    pub price: String,
    /// The price's lookup key (schedules are read with their prices expanded).
    pub lookup_key: Option<String>,
    /// Quantity.
    pub quantity: Option<u64>,
}

/// A line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// `il_…` (absent on some previews).
    pub id: Option<String>,
    /// Amount in minor units.
    pub amount: i64,
    /// Description.
    pub description: Option<String>,
    /// Price id.
    pub price: Option<String>,
    /// Quantity.
    pub quantity: Option<u64>,
    /// Period start (unix seconds).
    pub period_start: Option<i64>,
    /// Period end (unix seconds).
    pub period_end: Option<i64>,
    /// Metadata (an invoice item's line carries the item's metadata).
    pub metadata: Metadata,
    /// The invoice item (`ii_…`) the line comes from, if it comes from one.
    pub invoice_item: Option<String>,
}

/// An invoice, or a preview of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// `in_…` (absent on previews).
    pub id: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
    /// Subscription id (from `parent.subscription_details`).
    pub subscription: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible`, `void`.
    pub status: Option<String>,
    /// Why it was created (`subscription_cycle`, …).
    pub billing_reason: Option<String>,
    /// Currency.
    pub currency: String,
    /// Before discounts.
    pub subtotal: i64,
    /// After discounts.
    pub total: i64,
    /// Still to collect at finalization.
    pub amount_due: i64,
    /// Collected.
    pub amount_paid: i64,
    /// Outstanding.
    pub amount_remaining: i64,
    /// Whether Stripe has tried to collect it (an open invoice that was attempted failed).
    pub attempted: bool,
    /// Lines (the first page).
    pub lines: Vec<InvoiceLine>,
    /// Metadata.
    pub metadata: Metadata,
    /// Created (unix seconds).
    pub created: Option<i64>,
    /// Start of the period the invoice bills in arrears (unix seconds); for a renewal, the
    /// period that just ended.
    pub period_start: Option<i64>,
    /// End of that period (unix seconds): a renewal's is the renewal instant.
    pub period_end: Option<i64>,
    /// When Stripe retries collecting it (unix seconds); none when it will not retry.
    pub next_payment_attempt: Option<i64>,
    /// Stripe's page where the customer sees and pays the invoice (once finalized).
    pub hosted_invoice_url: Option<String>,
    /// Its number (once finalized).
    pub number: Option<String>,
    /// When a `send_invoice` invoice is due (unix seconds).
    pub due_date: Option<i64>,
    /// `charge_automatically` or `send_invoice`.
    pub collection_method: Option<String>,
    /// Payment attempts made so far.
    pub attempt_count: i64,
    /// When it was finalized (`status_transitions.finalized_at`, unix seconds).
    pub finalized_at: Option<i64>,
}

/// A charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `ch_…`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Refunded so far.
    pub amount_refunded: i64,
    /// Currency.
    pub currency: String,
    /// Customer id.
    pub customer: Option<String>,
    /// Payment intent id.
    pub payment_intent: Option<String>,
    /// Fully refunded.
    pub refunded: bool,
    /// `succeeded`, `pending` or `failed`.
    pub status: Option<String>,
    /// Created (unix seconds).
    pub created: Option<i64>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Items, newest first.
    pub data: Vec<T>,
    /// Whether more follow (pass the last id as `starting_after`).
    pub has_more: bool,
}

/// An invoice item: one line added to a customer's invoice by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceItem {
    /// `ii_…`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// The invoice it is on, if any.
    pub invoice: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// A refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// The refunded charge.
    pub charge: Option<String>,
    /// Its payment intent.
    pub payment_intent: Option<String>,
    /// `succeeded`, `pending`, `failed`, …
    pub status: Option<String>,
}

/// A payment intent (what Tally reads of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// `succeeded`, …
    pub status: String,
    /// Its latest charge.
    pub latest_charge: Option<String>,
    /// Metadata (a credit pack's checkout puts `tally_pack` here).
    pub metadata: Metadata,
    /// `cus_…`.
    pub customer: Option<String>,
    /// The payment method charged (or, after a decline, the one declined).
    pub payment_method: Option<String>,
    /// After a failed attempt: Stripe's `decline_code` (or `code` when there is none).
    pub decline_code: Option<String>,
    /// After a failed attempt: Stripe's message.
    pub failure_message: Option<String>,
    /// Creation time (unix seconds).
    pub created: i64,
    /// Why its latest attempt failed, if it did.
    pub last_payment_error: Option<PaymentError>,
}

/// A payment intent's `last_payment_error`: a declined attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentError {
    /// `card_declined`, `expired_card`, …
    pub code: Option<String>,
    /// The issuer's reason (`lost_card`, `insufficient_funds`, …).
    pub decline_code: Option<String>,
    /// Stripe's message for it.
    pub message: Option<String>,
}

impl PaymentError {
    /// Whether the issuer will never approve the card: Stripe does not retry these, the customer
    /// must give another payment method.
    pub fn is_hard_decline(&self) -> bool {
        [self.decline_code.as_deref(), self.code.as_deref()]
            .into_iter()
            .flatten()
            .any(|c| {
                matches!(
                    c,
                    "lost_card" | "stolen_card" | "fraudulent" | "pickup_card" | "expired_card"
                )
            })
    }
}

/// A payment method (`payment_method.attached`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod {
    /// `pm_…`.
    pub id: String,
    /// The customer it is attached to.
    pub customer: Option<String>,
}

/// A setup intent (`setup_intent.succeeded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupIntent {
    /// `seti_…`.
    pub id: String,
    /// The customer whose card was saved.
    pub customer: Option<String>,
    /// The card saved.
    pub payment_method: Option<String>,
}
