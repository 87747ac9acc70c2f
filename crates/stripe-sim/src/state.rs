//! The simulator's in-memory world: every Stripe object it holds, typed.

use crate::util::Dec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub type Meta = BTreeMap<String, String>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub metadata: Meta,
    pub test_clock: Option<String>,
    pub default_payment_method: Option<String>,
    pub balance: i64,
    pub currency: Option<String>,
    pub invoice_prefix: String,
    pub next_invoice_sequence: i64,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub updated: i64,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub metadata: Meta,
    pub default_price: Option<String>,
    pub unit_label: Option<String>,
    pub statement_descriptor: Option<String>,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recurring {
    pub interval: String,
    pub interval_count: i64,
    pub usage_type: String,
    pub meter: Option<String>,
    pub trial_period_days: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Price {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub product: String,
    pub currency: String,
    /// Per-unit amount in minor units, possibly fractional (`unit_amount_decimal`).
    pub unit_amount: Dec,
    pub active: bool,
    pub lookup_key: Option<String>,
    pub nickname: Option<String>,
    pub metadata: Meta,
    pub recurring: Option<Recurring>,
    pub tax_behavior: String,
    /// `graduated` or `volume` for tiered prices; `None` for per-unit prices.
    #[serde(default)]
    pub tiers_mode: Option<String>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Package pricing: the quantity is divided by this and rounded `up` or `down`.
    #[serde(default)]
    pub transform_quantity: Option<(i64, String)>,
}

/// One tier of a tiered price; `up_to: None` is the last (`inf`) tier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<i64>,
    pub unit_amount: Dec,
    pub flat_amount: Dec,
}

impl Price {
    pub fn is_metered(&self) -> bool {
        self.recurring
            .as_ref()
            .is_some_and(|r| r.usage_type == "metered")
    }

    /// The charge in minor units for `quantity`, rounded once, half away from zero.
    pub fn amount_for(&self, quantity: Dec) -> i64 {
        let scale = crate::util::DEC_SCALE;
        let q = match &self.transform_quantity {
            Some((divide_by, round)) if *divide_by > 0 => {
                let d = *divide_by as i128 * scale;
                let whole = quantity.0.div_euclid(d);
                let exact = quantity.0.rem_euclid(d) == 0;
                Dec((if round == "up" && !exact {
                    whole + 1
                } else {
                    whole
                }) * scale)
            }
            _ => quantity,
        };
        // Summed in units of 1e-18 of the minor unit, then rounded once.
        let total: i128 = match self.tiers_mode.as_deref() {
            Some("graduated") => {
                let mut total = 0i128;
                let mut lower = 0i128;
                for t in &self.tiers {
                    if q.0 <= lower {
                        break;
                    }
                    let upper = t.up_to.map(|u| u as i128 * scale).unwrap_or(i128::MAX);
                    let units = q.0.min(upper) - lower;
                    total += units * t.unit_amount.0 + t.flat_amount.0 * scale;
                    lower = upper;
                }
                total
            }
            Some(_) => match self
                .tiers
                .iter()
                .find(|t| t.up_to.is_none_or(|u| q.0 <= u as i128 * scale))
            {
                Some(t) if q.0 > 0 => q.0 * t.unit_amount.0 + t.flat_amount.0 * scale,
                _ => 0,
            },
            None => q.0 * self.unit_amount.0,
        };
        crate::util::div_round(total, scale * scale) as i64
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meter {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub updated: i64,
    pub display_name: String,
    pub event_name: String,
    pub formula: String,
    pub customer_key: String,
    pub value_key: String,
    pub status: String,
    pub deactivated_at: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeterEvent {
    pub identifier: String,
    pub event_name: String,
    pub meter: String,
    pub customer: String,
    pub value: Dec,
    pub payload: BTreeMap<String, String>,
    pub timestamp: i64,
    pub created: i64,
    pub canceled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Coupon {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub name: Option<String>,
    /// Percent off in hundredths of a percent (25.5 % = 2550).
    pub percent_off_bp: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<i64>,
    pub times_redeemed: i64,
    pub metadata: Meta,
    pub deleted: bool,
}

impl Coupon {
    pub fn valid_at(&self, now: i64) -> bool {
        !self.deleted
            && self.redeem_by.is_none_or(|r| now <= r)
            && self.max_redemptions.is_none_or(|m| self.times_redeemed < m)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PromotionCode {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub code: String,
    pub coupon: String,
    pub active: bool,
    pub customer: Option<String>,
    pub expires_at: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub times_redeemed: i64,
    pub first_time_transaction: bool,
    pub minimum_amount: Option<i64>,
    pub minimum_amount_currency: Option<String>,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Discount {
    pub id: String,
    pub coupon: String,
    pub promotion_code: Option<String>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
    pub checkout_session: Option<String>,
    pub start: i64,
    pub end: Option<i64>,
    /// A `once` discount is spent after its first non-zero invoice.
    pub spent: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
    pub seq: u64,
    pub customer: String,
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub date: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub proration: bool,
    pub quantity: i64,
    pub unit_amount: Dec,
    pub price: Option<String>,
    pub invoice: Option<String>,
    pub subscription: Option<String>,
    pub subscription_item: Option<String>,
    pub metadata: Meta,
    pub discountable: bool,
    pub test_clock: Option<String>,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubItem {
    pub id: String,
    pub created: i64,
    pub price: String,
    pub quantity: Option<i64>,
    pub metadata: Meta,
    pub current_period_start: i64,
    pub current_period_end: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub seq: u64,
    pub customer: String,
    pub created: i64,
    pub start_date: i64,
    pub status: String,
    pub items: Vec<SubItem>,
    pub billing_cycle_anchor: i64,
    /// Completed billing periods since the anchor (−1 during a trial).
    pub cycle: i64,
    pub interval: String,
    pub interval_count: i64,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_feedback: Option<String>,
    pub ended_at: Option<i64>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub trial_will_end_sent: bool,
    pub metadata: Meta,
    pub default_payment_method: Option<String>,
    pub latest_invoice: Option<String>,
    pub currency: String,
    pub discounts: Vec<String>,
    pub collection_method: String,
    pub days_until_due: Option<i64>,
    pub description: Option<String>,
    pub test_clock: Option<String>,
    pub upcoming_sent_for: Option<i64>,
    /// The subscription schedule managing it (`sub_sched_…`), while one does.
    #[serde(default)]
    pub schedule: Option<String>,
    /// An update made with `payment_behavior=pending_if_incomplete` whose payment failed.
    #[serde(default)]
    pub pending_update: Option<PendingUpdate>,
}

/// A change that waits for its invoice to be paid (`pending_if_incomplete`); it expires after
/// 23 hours, and its invoice is voided then.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub expires_at: i64,
    /// The subscription as it would be once the update applies.
    pub after: Box<Subscription>,
    /// The open invoice whose payment applies the update.
    pub invoice: String,
}

/// One phase of a subscription schedule: its items from `start_date` until `end_date`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchedulePhase {
    pub start_date: i64,
    pub end_date: i64,
    /// (price, quantity)
    pub items: Vec<(String, Option<i64>)>,
    pub proration_behavior: String,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscriptionSchedule {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub customer: String,
    pub subscription: Option<String>,
    /// not_started, active, completed, released, canceled
    pub status: String,
    pub phases: Vec<SchedulePhase>,
    /// release or cancel
    pub end_behavior: String,
    pub released_at: Option<i64>,
    pub released_subscription: Option<String>,
    pub canceled_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub metadata: Meta,
    pub test_clock: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Line {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub period_start: i64,
    pub period_end: i64,
    pub proration: bool,
    pub quantity: Dec,
    pub unit_amount: Dec,
    pub price: Option<String>,
    pub product: Option<String>,
    pub invoice_item: Option<String>,
    pub subscription: Option<String>,
    pub subscription_item: Option<String>,
    pub discountable: bool,
    pub discount_amounts: Vec<(i64, String)>,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub seq: u64,
    pub customer: String,
    pub created: i64,
    pub subscription: Option<String>,
    pub subscription_metadata: Option<Meta>,
    pub billing_reason: String,
    pub status: String,
    pub lines: Vec<Line>,
    pub period_start: i64,
    pub period_end: i64,
    pub currency: String,
    pub number: Option<String>,
    pub auto_advance: bool,
    pub attempt_count: i64,
    pub attempted: bool,
    pub next_payment_attempt: Option<i64>,
    pub amount_paid: i64,
    pub starting_balance: i64,
    pub ending_balance: Option<i64>,
    pub description: Option<String>,
    pub metadata: Meta,
    pub discounts: Vec<String>,
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
    pub collection_method: String,
    pub payment_intent: Option<String>,
    pub due_date: Option<i64>,
    pub effective_at: Option<i64>,
    pub test_clock: Option<String>,
    pub automatically_finalizes_at: Option<i64>,
    pub default_payment_method: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub last_finalization_error: Option<Value>,
}

impl Invoice {
    pub fn subtotal(&self) -> i64 {
        self.lines.iter().map(|l| l.amount).sum()
    }
    pub fn discount_total(&self) -> i64 {
        self.lines
            .iter()
            .flat_map(|l| l.discount_amounts.iter().map(|d| d.0))
            .sum()
    }
    pub fn total(&self) -> i64 {
        self.subtotal() - self.discount_total()
    }
    /// What the customer owes after applying the customer balance (negative balance is credit).
    pub fn amount_due(&self) -> i64 {
        (self.total() + self.starting_balance).max(0)
    }
    pub fn amount_remaining(&self) -> i64 {
        if self.status == "paid" || self.status == "void" {
            0
        } else {
            self.amount_due() - self.amount_paid
        }
    }
}

/// How a test card behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardBehavior {
    Succeeds,
    /// Declined whenever used, including when first entered.
    Declines {
        code: String,
        decline_code: String,
        message: String,
    },
    /// Attaches fine; every charge is declined.
    ChargeFails,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub customer: Option<String>,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub behavior: CardBehavior,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub amount: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub status: String,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    pub metadata: Meta,
    pub latest_charge: Option<String>,
    pub last_payment_error: Option<Value>,
    pub invoice: Option<String>,
    pub amount_received: i64,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub setup_future_usage: Option<String>,
    pub receipt_email: Option<String>,
    pub client_secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub payment_intent: Option<String>,
    pub payment_method: Option<String>,
    pub status: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub decline_code: Option<String>,
    pub description: Option<String>,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub amount: i64,
    pub charge: String,
    pub payment_intent: Option<String>,
    pub currency: String,
    pub reason: Option<String>,
    pub metadata: Meta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutLine {
    pub id: String,
    pub price: String,
    pub quantity: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub expires_at: i64,
    pub mode: String,
    pub status: String,
    pub payment_status: String,
    pub lines: Vec<CheckoutLine>,
    pub currency: String,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub customer_creation: Option<String>,
    pub client_reference_id: Option<String>,
    pub metadata: Meta,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub allow_promotion_codes: Option<bool>,
    pub discounts: Vec<(Option<String>, Option<String>)>,
    pub trial_period_days: Option<i64>,
    pub trial_end: Option<i64>,
    pub subscription_metadata: Meta,
    pub payment_intent_metadata: Meta,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
    pub payment_intent: Option<String>,
    pub amount_discount: i64,
    pub customer_details_email: Option<String>,
    pub customer_details_name: Option<String>,
    pub applied_discount: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortalConfig {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub updated: i64,
    pub is_default: bool,
    pub active: bool,
    pub name: Option<String>,
    pub default_return_url: Option<String>,
    pub metadata: Meta,
    pub cancel_enabled: bool,
    pub cancel_mode: String,
    pub update_enabled: bool,
    pub update_proration: String,
    /// (product, prices) pairs a customer may switch between.
    pub update_products: Vec<(String, Vec<String>)>,
    pub payment_method_update: bool,
    pub invoice_history: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortalSession {
    pub id: String,
    pub created: i64,
    pub customer: String,
    pub configuration: String,
    pub return_url: Option<String>,
    pub locale: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestClock {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub frozen_time: i64,
    pub name: Option<String>,
    pub status: String,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub seq: u64,
    pub created: i64,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub secret: String,
    pub status: String,
    pub description: Option<String>,
    pub metadata: Meta,
    pub api_version: Option<String>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.status == "enabled"
            && self
                .enabled_events
                .iter()
                .any(|e| e == "*" || e == event_type)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub seq: u64,
    pub kind: String,
    pub created: i64,
    pub object: Value,
    pub previous_attributes: Option<Value>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub pending_webhooks: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdempotentResponse {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub created: i64,
}

/// What the simulator does when an invoice's last automatic retry fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterRetries {
    Cancel,
    Unpaid,
    PastDue,
}

/// The whole world. Serializable so it can be saved to and loaded from a state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct World {
    pub seq: u64,
    pub customers: BTreeMap<String, Customer>,
    pub products: BTreeMap<String, Product>,
    pub prices: BTreeMap<String, Price>,
    pub meters: BTreeMap<String, Meter>,
    pub meter_events: Vec<MeterEvent>,
    pub coupons: BTreeMap<String, Coupon>,
    pub promotion_codes: BTreeMap<String, PromotionCode>,
    pub discounts: BTreeMap<String, Discount>,
    pub invoice_items: BTreeMap<String, InvoiceItem>,
    pub subscriptions: BTreeMap<String, Subscription>,
    #[serde(default)]
    pub subscription_schedules: BTreeMap<String, SubscriptionSchedule>,
    pub invoices: BTreeMap<String, Invoice>,
    pub payment_methods: BTreeMap<String, PaymentMethod>,
    pub payment_intents: BTreeMap<String, PaymentIntent>,
    pub charges: BTreeMap<String, Charge>,
    pub refunds: BTreeMap<String, Refund>,
    pub checkout_sessions: BTreeMap<String, CheckoutSession>,
    pub portal_configs: BTreeMap<String, PortalConfig>,
    pub portal_sessions: BTreeMap<String, PortalSession>,
    pub test_clocks: BTreeMap<String, TestClock>,
    pub webhook_endpoints: BTreeMap<String, WebhookEndpoint>,
    pub events: BTreeMap<String, Event>,
    pub idempotency: HashMap<String, IdempotentResponse>,
}

impl World {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}
