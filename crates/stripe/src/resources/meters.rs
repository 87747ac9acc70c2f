//! Billing Meters, meter events and metered prices: how a catalog in meter mode has Stripe rate
//! usage.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::form::Form;
use crate::model::{Interval, Metadata, Page, Price};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A Billing Meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// `mtr_…`.
    pub id: String,
    /// The event name meter events are sent with.
    pub event_name: String,
    /// Display name.
    pub display_name: String,
    /// `active` or `inactive`.
    pub status: String,
}

/// A new meter summing its events' `value` per Stripe customer (`stripe_customer_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMeter {
    /// Display name.
    pub display_name: String,
    /// Event name, unique among active meters.
    pub event_name: String,
}

/// One graduated tier of a metered price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTier {
    /// Upper bound (inclusive) in meter units; None for the last tier (`inf`).
    pub up_to: Option<i64>,
    /// Minor units per meter unit, possibly fractional (`unit_amount_decimal`).
    pub unit_amount: Decimal,
    /// Minor units due once the tier is reached (`flat_amount_decimal`).
    pub flat_amount: Decimal,
}

/// A new metered, graduated-tiered recurring price billing a meter's sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMeteredPrice {
    /// Product id.
    pub product: String,
    /// Lowercase ISO currency.
    pub currency: String,
    /// Billing interval (the subscription's).
    pub interval: Interval,
    /// `mtr_…`.
    pub meter: String,
    /// Graduated tiers.
    pub tiers: Vec<PriceTier>,
    /// Lookup key (taken over from an older price with `transfer_lookup_key`).
    pub lookup_key: String,
    /// Metadata.
    pub metadata: Metadata,
}

/// A meter event: `value` meter units for a Stripe customer at `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMeterEvent {
    /// The meter's event name.
    pub event_name: String,
    /// `cus_…`.
    pub stripe_customer: String,
    /// Integer value (Stripe's meters take integers here).
    pub value: i64,
    /// Unix seconds: at most 35 days back, 5 minutes ahead.
    pub timestamp: i64,
    /// Stripe counts one event per identifier.
    pub identifier: String,
}

/// What Stripe did with a meter event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterEventOutcome {
    /// Recorded now.
    Recorded,
    /// An event with this identifier was already recorded; this one was not counted.
    Duplicate,
}

#[derive(Deserialize)]
struct WireMeter {
    id: String,
    event_name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    status: String,
}

impl From<WireMeter> for Meter {
    fn from(m: WireMeter) -> Self {
        Meter {
            id: m.id,
            event_name: m.event_name,
            display_name: m.display_name,
            status: m.status,
        }
    }
}

#[derive(Deserialize)]
struct WireMeterEvent {}

impl Client {
    /// `POST /v1/billing/meters` with `default_aggregation[formula]=sum`, the customer mapped
    /// from `payload[stripe_customer_id]` and the value from `payload[value]`.
    pub async fn create_meter(
        &self,
        m: &NewMeter,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Meter>, Error> {
        let mut f = Form::new();
        f.set("display_name", &m.display_name)
            .set("event_name", &m.event_name)
            .set("default_aggregation[formula]", "sum")
            .set("customer_mapping[type]", "by_id")
            .set("customer_mapping[event_payload_key]", "stripe_customer_id")
            .set("value_settings[event_payload_key]", "value");
        Ok(self
            .post::<WireMeter>("/v1/billing/meters", &f, key)
            .await?
            .map(Meter::from))
    }

    /// Every active meter (`GET /v1/billing/meters?status=active`, all pages).
    pub async fn active_meters(&self) -> Result<Vec<Meter>, Error> {
        let mut out: Vec<Meter> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("status", "active").set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page: Page<Meter> = self
                .get::<wire::List<WireMeter>>("/v1/billing/meters", &q)
                .await?
                .value
                .into_page(Meter::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/prices` for a metered price (`recurring[usage_type]=metered`,
    /// `billing_scheme=tiered`, `tiers_mode=graduated`).
    pub async fn create_metered_price(
        &self,
        p: &NewMeteredPrice,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Price>, Error> {
        let mut f = Form::new();
        f.set("product", &p.product)
            .set("currency", &p.currency)
            .set("recurring[interval]", p.interval.as_str())
            .set("recurring[usage_type]", "metered")
            .set("recurring[meter]", &p.meter)
            .set("billing_scheme", "tiered")
            .set("tiers_mode", "graduated");
        for (i, t) in p.tiers.iter().enumerate() {
            match t.up_to {
                Some(u) => f.set(format!("tiers[{i}][up_to]"), u),
                None => f.set(format!("tiers[{i}][up_to]"), "inf"),
            };
            f.set(
                format!("tiers[{i}][unit_amount_decimal]"),
                t.unit_amount.normalize(),
            );
            if !t.flat_amount.is_zero() {
                f.set(
                    format!("tiers[{i}][flat_amount_decimal]"),
                    t.flat_amount.normalize(),
                );
            }
        }
        f.set("lookup_key", &p.lookup_key)
            .set("transfer_lookup_key", true)
            .map("metadata", &p.metadata);
        Ok(self
            .post::<wire::Price>("/v1/prices", &f, key)
            .await?
            .map(Price::from))
    }

    /// `POST /v1/billing/meter_events`. A second event with the same identifier is answered
    /// [`MeterEventOutcome::Duplicate`]: Stripe counted the first one only.
    pub async fn create_meter_event(
        &self,
        e: &NewMeterEvent,
        key: &IdempotencyKey,
    ) -> Result<Stripe<MeterEventOutcome>, Error> {
        let mut f = Form::new();
        f.set("event_name", &e.event_name)
            .set("payload[stripe_customer_id]", &e.stripe_customer)
            .set("payload[value]", e.value)
            .set("timestamp", e.timestamp)
            .set("identifier", &e.identifier);
        match self
            .post::<WireMeterEvent>("/v1/billing/meter_events", &f, key)
            .await
        {
            Ok(r) => Ok(r.map(|_| MeterEventOutcome::Recorded)),
            Err(err) if err.kind.is_already_exists() => Ok(Stripe {
                value: MeterEventOutcome::Duplicate,
                meta: crate::Meta {
                    request_id: err.request_id,
                    attempts: err.attempts,
                    replayed: false,
                },
            }),
            Err(err) => Err(err),
        }
    }
}
