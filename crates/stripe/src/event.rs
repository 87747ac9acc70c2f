//! Webhook (and `GET /v1/events`) envelopes parsed into the domain events Tally handles.
//!
//! Parse only after [`crate::webhook::verify`] accepted the raw bytes.

use crate::model::{
    Charge, CheckoutSession, Customer, Invoice, PaymentIntent, PaymentMethod, SetupIntent,
    Subscription,
};
use crate::wire;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// An event envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_…`; deliveries repeat, deduplicate on it.
    pub id: String,
    /// Stripe's type, e.g. `invoice.paid`.
    pub event_type: String,
    /// Creation time (unix seconds).
    pub created: i64,
    /// Live or test mode.
    pub livemode: bool,
    /// API version the object is rendered in.
    pub api_version: Option<String>,
    /// Id of the API request that caused it (None for automatic changes such as renewals).
    pub request_id: Option<String>,
    /// Idempotency key of that request.
    pub idempotency_key: Option<String>,
    /// Top-level keys of `data.previous_attributes` (on `*.updated`): what changed.
    pub changed: BTreeSet<String>,
    /// The parsed object.
    pub kind: EventKind,
}

/// Previous values of the fields of a subscription that Tally reacts to, from
/// `data.previous_attributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionChanges {
    /// Previous status, when it changed.
    pub status: Option<String>,
    /// Previous `cancel_at_period_end`, when it changed.
    pub cancel_at_period_end: Option<bool>,
    /// Whether the items (prices, quantities or periods) changed.
    pub items: bool,
}

/// The events Tally handles, with their objects.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `checkout.session.completed`.
    CheckoutCompleted(CheckoutSession),
    /// `checkout.session.async_payment_succeeded`.
    CheckoutAsyncPaymentSucceeded(CheckoutSession),
    /// `checkout.session.async_payment_failed`.
    CheckoutAsyncPaymentFailed(CheckoutSession),
    /// `checkout.session.expired`.
    CheckoutExpired(CheckoutSession),
    /// `customer.subscription.created`.
    SubscriptionCreated(Subscription),
    /// `customer.subscription.updated`.
    SubscriptionUpdated {
        /// The subscription now.
        subscription: Subscription,
        /// What it was before.
        previous: SubscriptionChanges,
    },
    /// `customer.subscription.deleted`.
    SubscriptionDeleted(Subscription),
    /// `customer.subscription.trial_will_end`.
    SubscriptionTrialWillEnd(Subscription),
    /// `invoice.paid`.
    InvoicePaid(Invoice),
    /// `invoice.payment_succeeded`.
    InvoicePaymentSucceeded(Invoice),
    /// `invoice.payment_failed`.
    InvoicePaymentFailed(Invoice),
    /// `invoice.finalized`, `invoice.voided`, `invoice.marked_uncollectible`: the invoice's
    /// status moved (the invoice as it is now).
    InvoiceStatusChanged(Invoice),
    /// `invoice.created`, `invoice.updated`: the invoice as it is now.
    InvoiceChanged(Invoice),
    /// `charge.refunded`.
    ChargeRefunded(Charge),
    /// `customer.updated`.
    CustomerUpdated(Customer),
    /// `payment_intent.succeeded`.
    PaymentIntentSucceeded(PaymentIntent),
    /// `payment_intent.payment_failed`.
    PaymentIntentFailed(PaymentIntent),
    /// `payment_method.attached`.
    PaymentMethodAttached(PaymentMethod),
    /// `setup_intent.succeeded`.
    SetupIntentSucceeded(SetupIntent),
    /// Any other type: acknowledged and ignored.
    Unhandled,
}

/// Why an event could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse Stripe event{}: {message}", id.as_ref().map(|i| format!(" {i}")).unwrap_or_default())]
pub struct ParseError {
    /// Event id, when the envelope was readable.
    pub id: Option<String>,
    /// What was wrong.
    pub message: String,
}

fn object<W: DeserializeOwned, T: From<W>>(
    id: &str,
    value: serde_json::Value,
) -> Result<T, ParseError> {
    serde_json::from_value::<W>(value)
        .map(T::from)
        .map_err(|e| ParseError {
            id: Some(id.to_string()),
            message: format!("data.object: {e}"),
        })
}

impl Event {
    /// Parses an event from the raw body of a webhook delivery (or one item of `/v1/events`).
    pub fn parse(body: &[u8]) -> Result<Event, ParseError> {
        let raw: wire::Event = serde_json::from_slice(body).map_err(|e| ParseError {
            id: None,
            message: e.to_string(),
        })?;
        Event::from_wire(raw)
    }

    pub(crate) fn from_wire(raw: wire::Event) -> Result<Event, ParseError> {
        let id = raw.id.clone();
        let obj = raw.data.object;
        let prev = raw.data.previous_attributes.unwrap_or_default();
        let changed: BTreeSet<String> = prev.keys().cloned().collect();
        use EventKind as K;
        let kind = match raw.kind.as_str() {
            "checkout.session.completed" => {
                K::CheckoutCompleted(object::<wire::CheckoutSession, _>(&id, obj)?)
            }
            "checkout.session.async_payment_succeeded" => {
                K::CheckoutAsyncPaymentSucceeded(object::<wire::CheckoutSession, _>(&id, obj)?)
            }
            "checkout.session.async_payment_failed" => {
                K::CheckoutAsyncPaymentFailed(object::<wire::CheckoutSession, _>(&id, obj)?)
            }
            "checkout.session.expired" => {
                K::CheckoutExpired(object::<wire::CheckoutSession, _>(&id, obj)?)
            }
            "customer.subscription.created" => {
                K::SubscriptionCreated(object::<wire::Subscription, _>(&id, obj)?)
            }
            "customer.subscription.updated" => K::SubscriptionUpdated {
                subscription: object::<wire::Subscription, _>(&id, obj)?,
                previous: SubscriptionChanges {
                    status: prev
                        .get("status")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    cancel_at_period_end: prev
                        .get("cancel_at_period_end")
                        .and_then(|v| v.as_bool()),
                    items: prev.contains_key("items"),
                },
            },
            "customer.subscription.deleted" => {
                K::SubscriptionDeleted(object::<wire::Subscription, _>(&id, obj)?)
            }
            "customer.subscription.trial_will_end" => {
                K::SubscriptionTrialWillEnd(object::<wire::Subscription, _>(&id, obj)?)
            }
            "invoice.paid" => K::InvoicePaid(object::<wire::Invoice, _>(&id, obj)?),
            "invoice.payment_succeeded" => {
                K::InvoicePaymentSucceeded(object::<wire::Invoice, _>(&id, obj)?)
            }
            "invoice.payment_failed" => {
                K::InvoicePaymentFailed(object::<wire::Invoice, _>(&id, obj)?)
            }
            "invoice.finalized" | "invoice.voided" | "invoice.marked_uncollectible" => {
                K::InvoiceStatusChanged(object::<wire::Invoice, _>(&id, obj)?)
            }
            "invoice.created" | "invoice.updated" => {
                K::InvoiceChanged(object::<wire::Invoice, _>(&id, obj)?)
            }
            "charge.refunded" => K::ChargeRefunded(object::<wire::Charge, _>(&id, obj)?),
            "customer.updated" => K::CustomerUpdated(object::<wire::Customer, _>(&id, obj)?),
            "payment_intent.succeeded" => {
                K::PaymentIntentSucceeded(object::<wire::PaymentIntent, _>(&id, obj)?)
            }
            "payment_intent.payment_failed" => {
                K::PaymentIntentFailed(object::<wire::PaymentIntent, _>(&id, obj)?)
            }
            "payment_method.attached" => {
                K::PaymentMethodAttached(object::<wire::PaymentMethod, _>(&id, obj)?)
            }
            "setup_intent.succeeded" => {
                K::SetupIntentSucceeded(object::<wire::SetupIntent, _>(&id, obj)?)
            }
            _ => K::Unhandled,
        };
        Ok(Event {
            id,
            event_type: raw.kind,
            created: raw.created,
            livemode: raw.livemode,
            api_version: raw.api_version,
            request_id: raw.request.as_ref().and_then(|r| r.id.clone()),
            idempotency_key: raw.request.and_then(|r| r.idempotency_key),
            changed,
            kind,
        })
    }
}
