//! Checkout, portal sessions, subscriptions, invoice previews and events.

use super::{found, seg};
use crate::event::{Event, ParseError};
use crate::form::Form;
use crate::model::{
    CheckoutSession, Invoice, Metadata, Page, PortalSession, Subscription, SubscriptionSchedule,
};
use crate::{wire, Client, Error, ErrorKind, IdempotencyKey, Stripe};

/// What a Checkout Session sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutMode {
    /// A subscription to recurring prices.
    Subscription,
    /// A one-time payment (credit packs).
    Payment,
}

/// A new Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckoutSession {
    /// Mode.
    pub mode: CheckoutMode,
    /// Existing customer id.
    pub customer: Option<String>,
    /// (price id, quantity) per line.
    pub line_items: Vec<(String, u64)>,
    /// Metered prices added as lines without a quantity (subscription mode, meter mode).
    pub metered_prices: Vec<String>,
    /// Where Stripe sends the customer after paying; may contain `{CHECKOUT_SESSION_ID}`.
    pub success_url: String,
    /// Where the back link goes.
    pub cancel_url: Option<String>,
    /// Tally's reference (the pending checkout row).
    pub client_reference_id: Option<String>,
    /// Let customers type promotion codes.
    pub allow_promotion_codes: bool,
    /// Trial length (subscription mode).
    pub trial_period_days: Option<u32>,
    /// Metadata of the session.
    pub metadata: Metadata,
    /// Metadata copied onto the subscription (subscription mode).
    pub subscription_metadata: Metadata,
    /// Metadata copied onto the payment intent (payment mode).
    pub payment_intent_metadata: Metadata,
    /// Discounts applied up front (then promotion codes cannot be typed: Stripe allows one or
    /// the other).
    pub discounts: Vec<CheckoutDiscount>,
    /// When the session expires (unix seconds; Stripe allows 30 minutes to 24 hours ahead).
    pub expires_at: Option<i64>,
}

/// A discount of a Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutDiscount {
    /// A coupon id.
    Coupon(String),
    /// A promotion code id (`promo_…`).
    PromotionCode(String),
}

/// A schedule phase: its start (None: where the previous ends), its end (None: one interval of
/// its price), and its prices with their quantities (None for a metered price).
pub type SchedulePhase = (Option<i64>, Option<i64>, Vec<(String, Option<u64>)>);

/// One item change of a subscription update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemChange {
    /// Add a price.
    Add {
        /// Price id.
        price: String,
        /// Quantity (None for metered prices).
        quantity: Option<u64>,
    },
    /// Switch an existing item to another price and/or quantity.
    Change {
        /// `si_…`.
        item: String,
        /// New price.
        price: Option<String>,
        /// New quantity.
        quantity: Option<u64>,
    },
    /// Remove an item.
    Remove {
        /// `si_…`.
        item: String,
    },
}

/// Changes to a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    /// Item changes.
    pub items: Vec<ItemChange>,
    /// `create_prorations`, `always_invoice` or `none`.
    pub proration_behavior: Option<String>,
    /// Cancel (or keep) at the period end.
    pub cancel_at_period_end: Option<bool>,
    /// `pending_if_incomplete`: a change whose payment fails is left pending instead of applied.
    pub payment_behavior: Option<String>,
    /// Metadata entries to set.
    pub metadata: Metadata,
}

fn items_form(f: &mut Form, prefix: &str, items: &[ItemChange]) {
    for (i, c) in items.iter().enumerate() {
        match c {
            ItemChange::Add { price, quantity } => {
                f.set(format!("{prefix}[{i}][price]"), price)
                    .opt(format!("{prefix}[{i}][quantity]"), *quantity);
            }
            ItemChange::Change {
                item,
                price,
                quantity,
            } => {
                f.set(format!("{prefix}[{i}][id]"), item)
                    .opt(format!("{prefix}[{i}][price]"), price.as_ref())
                    .opt(format!("{prefix}[{i}][quantity]"), *quantity);
            }
            ItemChange::Remove { item } => {
                f.set(format!("{prefix}[{i}][id]"), item)
                    .set(format!("{prefix}[{i}][deleted]"), true);
            }
        }
    }
}

/// What to preview (`POST /v1/invoices/create_preview`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoicePreview {
    /// Customer id.
    pub customer: Option<String>,
    /// Subscription id.
    pub subscription: Option<String>,
    /// Proposed item changes.
    pub items: Vec<ItemChange>,
    /// Proration behaviour of the proposed change.
    pub proration_behavior: Option<String>,
    /// Instant the proration is computed for (unix seconds), so that the preview and the later
    /// update agree.
    pub proration_date: Option<i64>,
}

/// Filter of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these types.
    pub types: Vec<String>,
    /// Created at or after (unix seconds).
    pub created_gte: Option<i64>,
    /// The page after this event id.
    pub starting_after: Option<String>,
    /// Page size (1–100).
    pub limit: Option<u32>,
}

impl Client {
    /// `POST /v1/checkout/sessions`.
    pub async fn create_checkout_session(
        &self,
        s: &NewCheckoutSession,
        key: &IdempotencyKey,
    ) -> Result<Stripe<CheckoutSession>, Error> {
        let mut f = Form::new();
        f.set(
            "mode",
            match s.mode {
                CheckoutMode::Subscription => "subscription",
                CheckoutMode::Payment => "payment",
            },
        )
        .opt("customer", s.customer.as_ref());
        for (i, (price, qty)) in s.line_items.iter().enumerate() {
            f.set(format!("line_items[{i}][price]"), price)
                .set(format!("line_items[{i}][quantity]"), qty);
        }
        let n = s.line_items.len();
        for (j, price) in s.metered_prices.iter().enumerate() {
            f.set(format!("line_items[{}][price]", n + j), price);
        }
        f.set("success_url", &s.success_url)
            .opt("cancel_url", s.cancel_url.as_ref())
            .opt("client_reference_id", s.client_reference_id.as_ref());
        if s.allow_promotion_codes {
            f.set("allow_promotion_codes", true);
        }
        for (i, d) in s.discounts.iter().enumerate() {
            match d {
                CheckoutDiscount::Coupon(c) => f.set(format!("discounts[{i}][coupon]"), c),
                CheckoutDiscount::PromotionCode(p) => {
                    f.set(format!("discounts[{i}][promotion_code]"), p)
                }
            };
        }
        f.opt("subscription_data[trial_period_days]", s.trial_period_days)
            .map("subscription_data[metadata]", &s.subscription_metadata)
            .map("payment_intent_data[metadata]", &s.payment_intent_metadata)
            .map("metadata", &s.metadata)
            .opt("expires_at", s.expires_at);
        let r = self
            .post::<wire::CheckoutSession>("/v1/checkout/sessions", &f, key)
            .await?;
        Ok(r.map(CheckoutSession::from))
    }

    /// `POST /v1/billing_portal/sessions`.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: Option<&str>,
        configuration: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<Stripe<PortalSession>, Error> {
        let mut f = Form::new();
        f.set("customer", customer)
            .opt("return_url", return_url)
            .opt("configuration", configuration);
        let r = self
            .post::<wire::PortalSession>("/v1/billing_portal/sessions", &f, key)
            .await?;
        Ok(r.map(|s| PortalSession {
            id: s.id,
            url: s.url,
        }))
    }

    /// `GET /v1/subscriptions/{id}`; None when it does not exist.
    pub async fn subscription(&self, id: &str) -> Result<Option<Stripe<Subscription>>, Error> {
        let path = format!("/v1/subscriptions/{}", seg(id));
        // Discounts expanded, so that their coupons can be read.
        let mut q = Form::new();
        q.list("expand", &["discounts".to_string()]);
        let r = found(self.get::<wire::Subscription>(&path, &q).await)?;
        Ok(r.map(|r| r.map(Subscription::from)))
    }

    /// The customer's subscriptions in any status (`GET /v1/subscriptions?customer=…&status=all`),
    /// newest first: Stripe's own view, read when Tally needs to be sure.
    pub async fn subscriptions_of_customer(
        &self,
        customer: &str,
    ) -> Result<Vec<Subscription>, Error> {
        let mut out: Vec<Subscription> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("customer", customer)
                .set("status", "all")
                .set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page: Page<Subscription> = self
                .get::<wire::List<wire::Subscription>>("/v1/subscriptions", &q)
                .await?
                .value
                .into_page(Subscription::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/subscriptions/{id}`.
    pub async fn update_subscription(
        &self,
        id: &str,
        u: &SubscriptionUpdate,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Subscription>, Error> {
        let mut f = Form::new();
        items_form(&mut f, "items", &u.items);
        f.opt("proration_behavior", u.proration_behavior.as_ref())
            .opt("payment_behavior", u.payment_behavior.as_ref())
            .opt("cancel_at_period_end", u.cancel_at_period_end)
            .map("metadata", &u.metadata);
        let path = format!("/v1/subscriptions/{}", seg(id));
        let r = self.post::<wire::Subscription>(&path, &f, key).await?;
        Ok(r.map(Subscription::from))
    }

    /// `POST /v1/subscription_schedules` with `from_subscription`: a schedule whose one phase is
    /// the subscription's current period. Creates nothing billable; the key comes from the
    /// subscription.
    pub async fn create_schedule_from_subscription(
        &self,
        subscription: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<SubscriptionSchedule>, Error> {
        let mut f = Form::new();
        f.set("from_subscription", subscription);
        f.list("expand", &["phases.items.price".to_string()]);
        let r = self
            .post::<wire::SubscriptionSchedule>("/v1/subscription_schedules", &f, key)
            .await?;
        Ok(r.map(SubscriptionSchedule::from))
    }

    /// `GET /v1/subscription_schedules/{id}` with the phases' prices expanded; None when it
    /// does not exist.
    pub async fn subscription_schedule(
        &self,
        id: &str,
    ) -> Result<Option<Stripe<SubscriptionSchedule>>, Error> {
        let path = format!("/v1/subscription_schedules/{}", seg(id));
        let mut q = Form::new();
        q.list("expand", &["phases.items.price".to_string()]);
        let r = found(self.get::<wire::SubscriptionSchedule>(&path, &q).await)?;
        Ok(r.map(|r| r.map(SubscriptionSchedule::from)))
    }

    /// `POST /v1/subscription_schedules/{id}`: replaces the phases. Each phase is its start
    /// (None: where the previous ends), its end (None: one interval of its price) and its
    /// prices with their quantities (None for a metered price); the schedule is released at the
    /// end, and phase changes are not prorated.
    pub async fn set_schedule_phases(
        &self,
        id: &str,
        phases: &[SchedulePhase],
        key: &IdempotencyKey,
    ) -> Result<Stripe<SubscriptionSchedule>, Error> {
        let mut f = Form::new();
        f.set("end_behavior", "release")
            .set("proration_behavior", "none");
        for (i, (start, end, prices)) in phases.iter().enumerate() {
            f.opt(format!("phases[{i}][start_date]"), *start)
                .opt(format!("phases[{i}][end_date]"), *end);
            if end.is_none() {
                f.set(format!("phases[{i}][iterations]"), 1);
            }
            for (j, (p, q)) in prices.iter().enumerate() {
                f.set(format!("phases[{i}][items][{j}][price]"), p)
                    .opt(format!("phases[{i}][items][{j}][quantity]"), *q);
            }
        }
        f.list("expand", &["phases.items.price".to_string()]);
        let path = format!("/v1/subscription_schedules/{}", seg(id));
        let r = self
            .post::<wire::SubscriptionSchedule>(&path, &f, key)
            .await?;
        Ok(r.map(SubscriptionSchedule::from))
    }

    /// `POST /v1/subscription_schedules/{id}/release`: the subscription stays as it is and is
    /// no longer managed by the schedule.
    pub async fn release_schedule(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<SubscriptionSchedule>, Error> {
        let path = format!("/v1/subscription_schedules/{}/release", seg(id));
        let r = self
            .post::<wire::SubscriptionSchedule>(&path, &Form::new(), key)
            .await?;
        Ok(r.map(SubscriptionSchedule::from))
    }

    /// Cancels now (`DELETE /v1/subscriptions/{id}`); `invoice_now` bills pending usage and
    /// prorations at once.
    pub async fn cancel_subscription(
        &self,
        id: &str,
        invoice_now: bool,
        prorate: bool,
    ) -> Result<Stripe<Subscription>, Error> {
        let mut q = Form::new();
        if invoice_now {
            q.set("invoice_now", true);
        }
        if prorate {
            q.set("prorate", true);
        }
        let path = format!("/v1/subscriptions/{}", seg(id));
        let r = self.delete::<wire::Subscription>(&path, &q).await?;
        Ok(r.map(Subscription::from))
    }

    /// `POST /v1/invoices/create_preview`. It creates nothing, but it is a POST, so it carries a
    /// key like every other (derive it from the preview's content).
    pub async fn preview_invoice(
        &self,
        p: &InvoicePreview,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Invoice>, Error> {
        let mut f = Form::new();
        f.opt("customer", p.customer.as_ref())
            .opt("subscription", p.subscription.as_ref());
        items_form(&mut f, "subscription_details[items]", &p.items);
        f.opt(
            "subscription_details[proration_behavior]",
            p.proration_behavior.as_ref(),
        )
        .opt("subscription_details[proration_date]", p.proration_date);
        let r = self
            .post::<wire::Invoice>("/v1/invoices/create_preview", &f, key)
            .await?;
        Ok(r.map(Invoice::from))
    }

    /// One page of `GET /v1/events`, newest first, parsed into domain events.
    pub async fn events(&self, filter: &EventFilter) -> Result<Stripe<Page<Event>>, Error> {
        let mut q = Form::new();
        q.list("types", &filter.types)
            .opt("created[gte]", filter.created_gte)
            .opt("starting_after", filter.starting_after.as_ref())
            .set("limit", filter.limit.unwrap_or(100).clamp(1, 100));
        let r = self
            .get::<wire::List<wire::Event>>("/v1/events", &q)
            .await?;
        let meta = r.meta;
        let mut data = Vec::with_capacity(r.value.data.len());
        for e in r.value.data {
            match Event::from_wire(e) {
                Ok(ev) => data.push(ev),
                Err(ParseError { id, message }) => {
                    return Err(Error {
                        kind: ErrorKind::Decode(format!("event {id:?}: {message}")),
                        request_id: meta.request_id,
                        status: Some(200),
                        attempts: meta.attempts,
                    })
                }
            }
        }
        Ok(Stripe {
            value: Page {
                data,
                has_more: r.value.has_more,
            },
            meta,
        })
    }

    /// One page of `GET /v1/events`, newest first, each event kept as its raw JSON (for Tally's
    /// webhook inbox, which stores events as delivered and parses them when it processes them).
    pub async fn raw_events(&self, filter: &EventFilter) -> Result<Stripe<Page<RawEvent>>, Error> {
        let mut q = Form::new();
        q.list("types", &filter.types)
            .opt("created[gte]", filter.created_gte)
            .opt("starting_after", filter.starting_after.as_ref())
            .set("limit", filter.limit.unwrap_or(100).clamp(1, 100));
        let r = self
            .get::<wire::List<serde_json::Value>>("/v1/events", &q)
            .await?;
        let meta = r.meta;
        let mut data = Vec::with_capacity(r.value.data.len());
        for v in r.value.data {
            match RawEvent::from_value(&v) {
                Some(e) => data.push(e),
                None => {
                    return Err(Error {
                        kind: ErrorKind::Decode(format!("event without id, type or created: {v}")),
                        request_id: meta.request_id,
                        status: Some(200),
                        attempts: meta.attempts,
                    })
                }
            }
        }
        Ok(Stripe {
            value: Page {
                data,
                has_more: r.value.has_more,
            },
            meta,
        })
    }
}

/// An event as Stripe sent it, with the envelope fields an inbox keys and orders on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// `evt_…`.
    pub id: String,
    /// Stripe's type.
    pub event_type: String,
    /// Creation time (unix seconds).
    pub created: i64,
    /// The id of `data.object`.
    pub object_id: Option<String>,
    /// The event's JSON.
    pub body: String,
}

impl RawEvent {
    /// Reads the envelope of a raw body (a webhook delivery); `None` when it is not an event.
    pub fn parse(body: &[u8]) -> Option<RawEvent> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut e = RawEvent::from_value(&v)?;
        e.body = String::from_utf8(body.to_vec()).ok()?;
        Some(e)
    }

    fn from_value(v: &serde_json::Value) -> Option<RawEvent> {
        Some(RawEvent {
            id: v.get("id")?.as_str()?.to_owned(),
            event_type: v.get("type")?.as_str()?.to_owned(),
            created: v.get("created")?.as_i64()?,
            object_id: v
                .get("data")
                .and_then(|d| d.get("object"))
                .and_then(|o| o.get("id"))
                .and_then(|i| i.as_str())
                .map(str::to_owned),
            body: v.to_string(),
        })
    }
}
