//! Stripe's JSON shapes (API version [`crate::API_VERSION`]), only the fields Tally reads, and
//! their conversion into the domain structs of [`crate::model`]. Nothing here is public.

use crate::model::{self, Metadata};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Deserialize)]
pub(crate) struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
}

/// An id that Stripe may send as a string or, when expanded, as an object with an `id`.
fn id_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Object(o)) => {
            o.get("id").and_then(|x| x.as_str()).map(str::to_string)
        }
        _ => None,
    })
}

fn required_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_or_object(d)?.ok_or_else(|| serde::de::Error::custom("missing id"))
}

fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
    Ok(Option::<Metadata>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub(crate) struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

impl<T> List<T> {
    pub fn into_page<U>(self, f: impl Fn(T) -> U) -> model::Page<U> {
        model::Page {
            data: self.data.into_iter().map(f).collect(),
            has_more: self.has_more,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct SearchResult<T> {
    pub data: Vec<T>,
}

#[derive(Deserialize)]
pub(crate) struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    #[serde(default)]
    pub invoice_settings: Option<InvoiceSettings>,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceSettings {
    #[serde(default, deserialize_with = "id_or_object")]
    pub default_payment_method: Option<String>,
}

impl From<Customer> for model::Customer {
    fn from(c: Customer) -> Self {
        model::Customer {
            id: c.id,
            email: c.email,
            name: c.name,
            metadata: c.metadata,
            default_payment_method: c.invoice_settings.and_then(|i| i.default_payment_method),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Product {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<Product> for model::Product {
    fn from(p: Product) -> Self {
        model::Product {
            id: p.id,
            name: p.name,
            active: p.active,
            metadata: p.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Recurring {
    pub interval: String,
    #[serde(default)]
    pub interval_count: Option<u32>,
}

#[derive(Deserialize)]
pub(crate) struct Price {
    pub id: String,
    #[serde(deserialize_with = "required_id")]
    pub product: String,
    #[serde(default)]
    pub active: bool,
    pub currency: String,
    pub unit_amount: Option<i64>,
    pub recurring: Option<Recurring>,
    pub lookup_key: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<Price> for model::Price {
    fn from(p: Price) -> Self {
        model::Price {
            id: p.id,
            product: p.product,
            active: p.active,
            currency: p.currency,
            unit_amount: p.unit_amount,
            recurring: p.recurring.and_then(|r| {
                Some(model::Recurring {
                    interval: model::Interval::parse(&r.interval)?,
                    interval_count: r.interval_count.unwrap_or(1),
                })
            }),
            lookup_key: p.lookup_key,
            metadata: p.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct AppliesTo {
    #[serde(default)]
    pub products: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct Coupon {
    pub id: String,
    pub name: Option<String>,
    pub percent_off: Option<serde_json::Number>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
    pub duration_in_months: Option<u32>,
    pub max_redemptions: Option<u32>,
    pub redeem_by: Option<i64>,
    pub applies_to: Option<AppliesTo>,
    #[serde(default)]
    pub valid: bool,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl TryFrom<Coupon> for model::Coupon {
    type Error = String;
    fn try_from(c: Coupon) -> Result<Self, String> {
        let discount = match (c.percent_off, c.amount_off, c.currency) {
            (Some(p), _, _) => model::CouponDiscount::Percent(
                // Stripe sends a JSON number with at most two decimals; its decimal text is exact.
                Decimal::from_str(&p.to_string())
                    .map_err(|e| format!("coupon {}: percent_off {p}: {e}", c.id))?
                    .normalize(),
            ),
            (None, Some(amount), Some(currency)) => {
                model::CouponDiscount::Amount { amount, currency }
            }
            _ => {
                return Err(format!(
                    "coupon {} has neither percent_off nor amount_off",
                    c.id
                ))
            }
        };
        let duration = match c.duration.as_str() {
            "once" => model::CouponDuration::Once,
            "forever" => model::CouponDuration::Forever,
            "repeating" => model::CouponDuration::Repeating {
                months: c.duration_in_months.unwrap_or(0),
            },
            other => return Err(format!("coupon {}: unknown duration {other}", c.id)),
        };
        Ok(model::Coupon {
            id: c.id,
            name: c.name,
            discount,
            duration,
            max_redemptions: c.max_redemptions,
            redeem_by: c.redeem_by,
            applies_to_products: c.applies_to.map(|a| a.products).unwrap_or_default(),
            valid: c.valid,
            metadata: c.metadata,
        })
    }
}

#[derive(Deserialize)]
pub(crate) struct Promotion {
    #[serde(default, deserialize_with = "id_or_object")]
    pub coupon: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct PromotionCode {
    pub id: String,
    pub code: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub coupon: Option<String>,
    pub promotion: Option<Promotion>,
    #[serde(default)]
    pub active: bool,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<PromotionCode> for model::PromotionCode {
    fn from(p: PromotionCode) -> Self {
        model::PromotionCode {
            id: p.id,
            code: p.code,
            // Current versions nest the coupon under `promotion`; older ones had it top-level.
            coupon: p
                .promotion
                .and_then(|x| x.coupon)
                .or(p.coupon)
                .unwrap_or_default(),
            active: p.active,
            metadata: p.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct PortalConfiguration {
    pub id: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<PortalConfiguration> for model::PortalConfiguration {
    fn from(p: PortalConfiguration) -> Self {
        model::PortalConfiguration {
            id: p.id,
            active: p.active,
            is_default: p.is_default,
            metadata: p.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    pub mode: String,
    pub status: Option<String>,
    pub payment_status: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub subscription: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_intent: Option<String>,
    pub client_reference_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<CheckoutSession> for model::CheckoutSession {
    fn from(c: CheckoutSession) -> Self {
        model::CheckoutSession {
            id: c.id,
            url: c.url,
            mode: c.mode,
            status: c.status,
            payment_status: c.payment_status,
            customer: c.customer,
            subscription: c.subscription,
            payment_intent: c.payment_intent,
            client_reference_id: c.client_reference_id,
            amount_total: c.amount_total,
            currency: c.currency,
            metadata: c.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct PortalSession {
    pub id: String,
    pub url: String,
}

#[derive(Deserialize)]
pub(crate) struct SubscriptionItem {
    pub id: String,
    pub price: Price,
    pub quantity: Option<u64>,
    #[serde(default)]
    pub current_period_start: i64,
    #[serde(default)]
    pub current_period_end: i64,
}

#[derive(Deserialize)]
pub(crate) struct Subscription {
    pub id: String,
    #[serde(deserialize_with = "required_id")]
    pub customer: String,
    pub status: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub trial_end: Option<i64>,
    pub items: List<SubscriptionItem>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub latest_invoice: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    /// Ids, or discount objects when expanded (`expand[]=discounts`).
    #[serde(default)]
    pub discounts: Vec<serde_json::Value>,
    #[serde(default)]
    pub billing_cycle_anchor: Option<i64>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub schedule: Option<String>,
    #[serde(default)]
    pub pending_update: Option<PendingUpdate>,
}

#[derive(Deserialize)]
pub(crate) struct PendingUpdate {
    pub expires_at: i64,
    #[serde(default)]
    pub subscription_items: Option<Vec<SubscriptionItem>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum PriceRef {
    Object(Price),
    Id(String),
}

#[derive(Deserialize)]
pub(crate) struct PhaseItem {
    pub price: PriceRef,
    pub quantity: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct Phase {
    pub start_date: i64,
    pub end_date: Option<i64>,
    #[serde(default)]
    pub items: Vec<PhaseItem>,
}

#[derive(Deserialize)]
pub(crate) struct CurrentPhase {
    pub start_date: i64,
}

#[derive(Deserialize)]
pub(crate) struct SubscriptionSchedule {
    pub id: String,
    pub status: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub subscription: Option<String>,
    pub current_phase: Option<CurrentPhase>,
    #[serde(default)]
    pub phases: Vec<Phase>,
}

impl From<SubscriptionSchedule> for model::SubscriptionSchedule {
    fn from(s: SubscriptionSchedule) -> Self {
        model::SubscriptionSchedule {
            id: s.id,
            status: s.status,
            subscription: s.subscription,
            current_phase_start: s.current_phase.map(|c| c.start_date),
            phases: s
                .phases
                .into_iter()
                .map(|p| model::SchedulePhase {
                    start_date: p.start_date,
                    end_date: p.end_date,
                    items: p
                        .items
                        .into_iter()
                        .map(|i| {
                            let (price, lookup_key) = match i.price {
                                PriceRef::Object(p) => (p.id, p.lookup_key),
                                PriceRef::Id(id) => (id, None),
                            };
                            model::PhaseItem {
                                price,
                                lookup_key,
                                quantity: i.quantity,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn item_model(i: SubscriptionItem) -> model::SubscriptionItem {
    model::SubscriptionItem {
        id: i.id,
        price: i.price.id,
        lookup_key: i.price.lookup_key,
        quantity: i.quantity,
        current_period_start: i.current_period_start,
        current_period_end: i.current_period_end,
    }
}

/// The coupon id of an expanded discount: `source.coupon` (current API) or `coupon` (older
/// shapes), each an id or an object.
fn discount_coupon(d: &serde_json::Value) -> Option<String> {
    let c = d
        .get("source")
        .and_then(|s| s.get("coupon"))
        .or_else(|| d.get("coupon"))?;
    match c {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("id").and_then(|x| x.as_str()).map(str::to_string),
        _ => None,
    }
}

impl From<Subscription> for model::Subscription {
    fn from(s: Subscription) -> Self {
        model::Subscription {
            id: s.id,
            customer: s.customer,
            status: model::SubscriptionStatus::parse(&s.status),
            cancel_at_period_end: s.cancel_at_period_end,
            cancel_at: s.cancel_at,
            canceled_at: s.canceled_at,
            trial_end: s.trial_end,
            items: s.items.data.into_iter().map(item_model).collect(),
            latest_invoice: s.latest_invoice,
            metadata: s.metadata,
            coupons: s.discounts.iter().filter_map(discount_coupon).collect(),
            billing_cycle_anchor: s.billing_cycle_anchor,
            schedule: s.schedule,
            pending_update: s.pending_update.map(|p| model::PendingUpdate {
                expires_at: p.expires_at,
                items: p
                    .subscription_items
                    .unwrap_or_default()
                    .into_iter()
                    .map(item_model)
                    .collect(),
            }),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Period {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

#[derive(Deserialize)]
pub(crate) struct PriceDetails {
    #[serde(default, deserialize_with = "id_or_object")]
    pub price: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Pricing {
    pub price_details: Option<PriceDetails>,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceLine {
    pub id: Option<String>,
    #[serde(default)]
    pub amount: i64,
    pub description: Option<String>,
    pub pricing: Option<Pricing>,
    pub quantity: Option<u64>,
    pub period: Option<Period>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    pub parent: Option<LineParent>,
}

#[derive(Deserialize)]
pub(crate) struct LineParent {
    pub invoice_item_details: Option<InvoiceItemDetails>,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceItemDetails {
    #[serde(default, deserialize_with = "id_or_object")]
    pub invoice_item: Option<String>,
}

impl From<InvoiceLine> for model::InvoiceLine {
    fn from(l: InvoiceLine) -> Self {
        model::InvoiceLine {
            id: l.id,
            amount: l.amount,
            description: l.description,
            price: l
                .pricing
                .and_then(|p| p.price_details)
                .and_then(|d| d.price),
            quantity: l.quantity,
            period_start: l.period.as_ref().and_then(|p| p.start),
            period_end: l.period.as_ref().and_then(|p| p.end),
            metadata: l.metadata,
            invoice_item: l
                .parent
                .and_then(|p| p.invoice_item_details)
                .and_then(|d| d.invoice_item),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct SubscriptionDetails {
    #[serde(default, deserialize_with = "id_or_object")]
    pub subscription: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceParent {
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Deserialize)]
pub(crate) struct Invoice {
    pub id: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
    pub parent: Option<InvoiceParent>,
    pub status: Option<String>,
    pub billing_reason: Option<String>,
    pub currency: String,
    #[serde(default)]
    pub subtotal: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub amount_due: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub amount_remaining: i64,
    #[serde(default)]
    pub attempted: bool,
    pub lines: Option<List<InvoiceLine>>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    pub created: Option<i64>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    pub hosted_invoice_url: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub due_date: Option<i64>,
    #[serde(default)]
    pub collection_method: Option<String>,
    #[serde(default)]
    pub attempt_count: i64,
    #[serde(default)]
    pub status_transitions: Option<InvoiceTransitions>,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceTransitions {
    #[serde(default)]
    pub finalized_at: Option<i64>,
}

impl From<Invoice> for model::Invoice {
    fn from(i: Invoice) -> Self {
        model::Invoice {
            id: i.id,
            customer: i.customer,
            subscription: i
                .parent
                .and_then(|p| p.subscription_details)
                .and_then(|d| d.subscription),
            status: i.status,
            billing_reason: i.billing_reason,
            currency: i.currency,
            subtotal: i.subtotal,
            total: i.total,
            amount_due: i.amount_due,
            amount_paid: i.amount_paid,
            amount_remaining: i.amount_remaining,
            attempted: i.attempted,
            lines: i
                .lines
                .map(|l| l.data)
                .unwrap_or_default()
                .into_iter()
                .map(model::InvoiceLine::from)
                .collect(),
            metadata: i.metadata,
            created: i.created,
            period_start: i.period_start,
            period_end: i.period_end,
            next_payment_attempt: i.next_payment_attempt,
            hosted_invoice_url: i.hosted_invoice_url,
            number: i.number,
            due_date: i.due_date,
            collection_method: i.collection_method,
            attempt_count: i.attempt_count,
            finalized_at: i.status_transitions.and_then(|t| t.finalized_at),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Charge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub refunded: bool,
    pub status: Option<String>,
    pub created: Option<i64>,
}

impl From<Charge> for model::Charge {
    fn from(c: Charge) -> Self {
        model::Charge {
            id: c.id,
            amount: c.amount,
            amount_refunded: c.amount_refunded,
            currency: c.currency,
            customer: c.customer,
            payment_intent: c.payment_intent,
            refunded: c.refunded,
            status: c.status,
            created: c.created,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct EventData {
    pub object: serde_json::Value,
    pub previous_attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
pub(crate) struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub api_version: Option<String>,
    pub request: Option<EventRequest>,
    pub data: EventData,
}

#[derive(Deserialize)]
pub(crate) struct InvoiceItem {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    pub currency: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub invoice: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl From<InvoiceItem> for model::InvoiceItem {
    fn from(i: InvoiceItem) -> Self {
        model::InvoiceItem {
            id: i.id,
            amount: i.amount,
            currency: i.currency,
            invoice: i.invoice,
            metadata: i.metadata,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Deleted {
    pub id: String,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Deserialize)]
pub(crate) struct Refund {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default, deserialize_with = "id_or_object")]
    pub charge: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_intent: Option<String>,
    pub status: Option<String>,
}

impl From<Refund> for model::Refund {
    fn from(r: Refund) -> Self {
        model::Refund {
            id: r.id,
            amount: r.amount,
            charge: r.charge,
            payment_intent: r.payment_intent,
            status: r.status,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub latest_charge: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
    #[serde(default)]
    pub created: i64,
}

#[derive(Deserialize)]
pub(crate) struct PaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub payment_method: Option<serde_json::Value>,
}

impl From<PaymentIntent> for model::PaymentIntent {
    fn from(p: PaymentIntent) -> Self {
        let error = p.last_payment_error;
        // A declined payment method is detached from the intent; the error still names it.
        let failed_pm = error
            .as_ref()
            .and_then(|e| e.payment_method.as_ref())
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("id").and_then(|i| i.as_str()).map(str::to_string),
            });
        model::PaymentIntent {
            id: p.id,
            amount: p.amount,
            currency: p.currency,
            status: p.status,
            latest_charge: p.latest_charge,
            metadata: p.metadata,
            customer: p.customer,
            payment_method: p.payment_method.or(failed_pm),
            decline_code: error
                .as_ref()
                .and_then(|e| e.decline_code.clone().or(e.code.clone())),
            failure_message: error.as_ref().and_then(|e| e.message.clone()),
            last_payment_error: error.map(|e| model::PaymentError {
                code: e.code,
                decline_code: e.decline_code,
                message: e.message,
            }),
            created: p.created,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct InvoicePaymentDetails {
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_intent: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct InvoicePayment {
    pub payment: Option<InvoicePaymentDetails>,
}

#[derive(Deserialize)]
pub(crate) struct PaymentMethod {
    pub id: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
}

impl From<PaymentMethod> for model::PaymentMethod {
    fn from(p: PaymentMethod) -> Self {
        model::PaymentMethod {
            id: p.id,
            customer: p.customer,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct SetupIntent {
    pub id: String,
    #[serde(default, deserialize_with = "id_or_object")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub payment_method: Option<String>,
}

impl From<SetupIntent> for model::SetupIntent {
    fn from(s: SetupIntent) -> Self {
        model::SetupIntent {
            id: s.id,
            customer: s.customer,
            payment_method: s.payment_method,
        }
    }
}
