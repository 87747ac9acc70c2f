//! The catalog: one hand-edited TOML file, the single source of truth for what Tally sells.
//!
//! It declares metrics (what is measured), plans (prices, allowances, overage charges, limits,
//! features, credit grants), credit packs, coupons and feature flags. [`Catalog::parse`] validates
//! all of it and reports every problem with its file, line and column.

mod build;
mod error;
pub mod meters;
mod raw;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::Currency;
use crate::period::Interval;

pub use error::{CatalogError, CatalogErrors};

/// A validated catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalog {
    /// Display name of the product, e.g. "Magic Box".
    pub name: String,
    /// Default currency of plans, packs and amount-off coupons.
    pub currency: Currency,
    /// The plan a customer falls back to when a subscription is deleted, or when it stays past due
    /// beyond the grace period.
    pub free_plan: Option<String>,
    /// How usage reaches Stripe: invoice items Tally rated (the default) or Billing Meter events
    /// Stripe rates (`[catalog] stripe_usage = "meters"`).
    pub stripe_usage: StripeUsage,
    metrics: Vec<Metric>,
    plans: Vec<Plan>,
    credit_packs: Vec<CreditPack>,
    coupons: Vec<Coupon>,
    flags: Vec<FeatureFlag>,
}

impl Catalog {
    /// Parses and validates a catalog. `file` is only used to locate errors
    /// (`"<file>:<line>:<col>: <message>"`).
    pub fn parse(src: &str, file: &str) -> Result<Catalog, CatalogErrors> {
        build::parse(src, file)
    }

    /// The metric with this id.
    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// The plan with this id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The coupon with this id (case-sensitive, as Stripe coupon ids are).
    pub fn coupon(&self, id: &str) -> Option<&Coupon> {
        self.coupons.iter().find(|c| c.id == id)
    }

    /// The credit pack with this id.
    pub fn credit_pack(&self, id: &str) -> Option<&CreditPack> {
        self.credit_packs.iter().find(|c| c.id == id)
    }

    /// The feature flag with this id.
    pub fn flag(&self, id: &str) -> Option<&FeatureFlag> {
        self.flags.iter().find(|f| f.id == id)
    }

    /// Metrics in file order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Plans in file order.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// Credit packs in file order.
    pub fn credit_packs(&self) -> &[CreditPack] {
        &self.credit_packs
    }

    /// Coupons in file order.
    pub fn coupons(&self) -> &[Coupon] {
        &self.coupons
    }

    /// Feature flags in file order.
    pub fn flags(&self) -> &[FeatureFlag] {
        &self.flags
    }
}

/// How a catalog's usage reaches Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StripeUsage {
    /// Tally rates each period and puts its usage lines on the Stripe invoice as invoice items.
    InvoiceItems,
    /// Tally reports each period's quantities as Billing Meter events; Stripe rates them with
    /// the metered prices `tally stripe push` creates.
    Meters,
}

impl StripeUsage {
    /// The name used in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            StripeUsage::InvoiceItems => "invoice_items",
            StripeUsage::Meters => "meters",
        }
    }

    /// The mode named `s` in the catalog, if any.
    pub fn parse(s: &str) -> Option<StripeUsage> {
        match s {
            "invoice_items" => Some(StripeUsage::InvoiceItems),
            "meters" => Some(StripeUsage::Meters),
            _ => None,
        }
    }
}

/// How a metric's events are combined over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum of event values.
    Sum,
    /// Number of events.
    Count,
    /// Largest event value.
    Max,
    /// Value of the most recent event.
    Latest,
    /// Number of distinct values of one event property.
    UniqueCount,
}

impl Aggregation {
    /// The name used in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Max => "max",
            Aggregation::Latest => "latest",
            Aggregation::UniqueCount => "unique_count",
        }
    }
}

/// Whether a metric starts from zero every period or describes a standing level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Consumption that resets each allowance period (compute hours, API calls).
    Metered,
    /// A level that carries over between periods (projects, storage); checked by its latest value.
    Gauge,
}

/// Something Tally measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Id used in events and plans, e.g. `compute_hours`.
    pub id: String,
    /// Display name, e.g. "Compute hours".
    pub name: String,
    /// Unit of one quantity, e.g. "hour"; for money-valued metrics the currency code.
    pub unit: String,
    /// How events are combined over a period.
    pub aggregation: Aggregation,
    /// Metered per period, or a gauge.
    pub kind: MetricKind,
    /// Whether events may carry negative values (corrections, a gauge going down).
    pub allow_negative: bool,
    /// For `unique_count`: the event property whose distinct values are counted.
    pub unique_property: Option<String>,
    /// Prepaid credits consumed per unit, when the metric is paid for with credits.
    pub credit_cost: Option<Decimal>,
}

/// A plan customers subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Id, e.g. `pro`.
    pub id: String,
    /// Display name, e.g. "Pro".
    pub name: String,
    /// Currency of every amount of the plan.
    pub currency: Currency,
    /// Base price per billing interval. A plan without prices is free or billed by hand.
    pub prices: BTreeMap<Interval, Price>,
    /// Days of free trial when subscribing through checkout.
    pub trial_days: u32,
    /// Allowance, overage charge and limit per metric id. [`Plan::metrics_in_order`] lists them
    /// in the order the catalog file does.
    pub metrics: BTreeMap<String, PlanMetric>,
    /// Boolean and numeric features, e.g. `priority_support = true`, `seats = 5`.
    pub features: BTreeMap<String, FeatureValue>,
    /// Credits granted at the start of every allowance period.
    pub monthly_credits: Option<Decimal>,
    /// Whether unused monthly credits carry over; by default they expire at the period's end.
    pub credits_roll_over: bool,
    /// A balance below which the customer is notified (`credits.low`) when a change takes the
    /// balance from at least this to below it.
    pub low_credit_balance: Option<Decimal>,
    /// Minimum charge per allowance period, in minor units: when the period's usage lines and its
    /// share of the base price (a twelfth of a yearly price) add up to less, a minimum line makes
    /// up the difference.
    pub minimum: Option<i64>,
}

impl Plan {
    /// The plan's metrics in the order the catalog file lists them.
    pub fn metrics_in_order(&self) -> Vec<(&String, &PlanMetric)> {
        let mut v: Vec<_> = self.metrics.iter().collect();
        v.sort_by_key(|(_, pm)| pm.position);
        v
    }
}

/// A plan's base price for one interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Price {
    /// Amount in the plan currency's minor units.
    pub amount: i64,
    /// Stripe lookup key the price is matched by.
    pub lookup_key: String,
}

/// How a plan treats one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanMetric {
    /// Display name of the metric, copied from the catalog so a plan rates on its own.
    pub name: String,
    /// Unit of the metric, copied from the catalog.
    pub unit: String,
    /// Where the plan lists the metric in the catalog file (0 = first); invoices and tables show
    /// a plan's metrics in this order.
    pub position: usize,
    /// Quantity included in the plan each allowance period.
    pub included: Allowance,
    /// What usage beyond the included quantity costs; `None` means it is not billed.
    pub overage: Option<Charge>,
    /// A cap on usage, enforced hard (deny) or soft (warn and bill overage).
    pub limit: Option<Limit>,
    /// Percentages of the limit (or, without one, of the included quantity) at which a
    /// notification is sent, once each per period.
    pub warn_at_percent: Vec<u32>,
}

/// Included quantity of a metric. Serializes as `"unlimited"` or the quantity as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Everything is included.
    Unlimited,
    /// This much is included each period.
    Quantity(Decimal),
}

impl Serialize for Allowance {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Allowance::Unlimited => serializer.serialize_str("unlimited"),
            Allowance::Quantity(q) => Serialize::serialize(&q.normalize(), serializer),
        }
    }
}

/// The charge for billable usage (usage beyond the included quantity).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Charge {
    /// Every billable unit costs `unit_price` (major units).
    PerUnit {
        /// Price of one unit in major units.
        unit_price: Decimal,
    },
    /// Each tier prices the units that fall into it.
    Graduated {
        /// Tiers in increasing order; the last is unbounded.
        tiers: Vec<Tier>,
    },
    /// The tier the whole billable quantity falls into prices every unit.
    Volume {
        /// Tiers in increasing order; the last is unbounded.
        tiers: Vec<Tier>,
    },
    /// Billable units are sold in packages of `size`, a started package counting as a whole one.
    Package {
        /// Units per package.
        size: Decimal,
        /// Price of one package in major units.
        price: Decimal,
    },
    /// The metric is itself money (e.g. API spend in the plan currency), re-billed with a markup:
    /// charge = billable × (1 + markup / 100).
    PassThrough {
        /// Markup in percent, e.g. 15 for 15 %.
        markup: Decimal,
    },
}

impl Charge {
    /// The model's name as written in the catalog.
    pub fn model(&self) -> &'static str {
        match self {
            Charge::PerUnit { .. } => "per_unit",
            Charge::Graduated { .. } => "graduated",
            Charge::Volume { .. } => "volume",
            Charge::Package { .. } => "package",
            Charge::PassThrough { .. } => "pass_through",
        }
    }
}

/// One price tier, covering billable quantities up to and including `up_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    /// Upper bound of the tier (inclusive); `None` is unbounded.
    pub up_to: Option<Decimal>,
    /// Price per unit in major units.
    pub unit_price: Decimal,
    /// Flat amount in major units, charged once when any unit falls into the tier.
    pub flat: Decimal,
}

/// A cap on a metric's usage per period (or, for gauges, on its level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// The capped quantity.
    pub quantity: Decimal,
    /// What happens beyond it.
    pub enforcement: Enforcement,
}

/// How a limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Usage beyond the limit is denied.
    Hard,
    /// Usage beyond the limit is allowed, warned about and billed as overage.
    Soft,
}

/// A plan feature's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// On or off.
    Bool(bool),
    /// A number, e.g. seats.
    Number(Decimal),
}

/// Prepaid credits sold in one payment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditPack {
    /// Id, e.g. `credits_500`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Credits granted on purchase.
    pub credits: Decimal,
    /// Currency of the price.
    pub currency: Currency,
    /// Price in minor units.
    pub amount: i64,
    /// Stripe lookup key of the one-time price.
    pub lookup_key: String,
}

/// A discount customers redeem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coupon {
    /// Id customers type, e.g. `EARLYBIRD30`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Percent or amount off.
    pub discount: Discount,
    /// For how many periods a redemption discounts invoices.
    pub duration: CouponDuration,
    /// Redemptions are accepted strictly before this instant. A date `2025-12-31` in the catalog
    /// means the end of that day in UTC, i.e. `2026-01-01T00:00:00Z`.
    pub redeem_by: Option<DateTime<Utc>>,
    /// How many times the coupon may be redeemed in all.
    pub max_redemptions: Option<u32>,
    /// Plans the coupon is limited to; empty means every plan.
    pub plans: Vec<String>,
}

/// What a coupon takes off the subtotal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discount {
    /// A percentage of the subtotal, 0 < p ≤ 100.
    Percent(Decimal),
    /// A fixed amount in minor units, never more than the subtotal.
    Amount {
        /// Amount in minor units.
        amount: i64,
        /// Currency of the amount; the coupon applies only to invoices in it.
        currency: Currency,
    },
}

/// How long a redeemed coupon keeps discounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponDuration {
    /// The first period only.
    Once,
    /// The first `months` monthly periods.
    Repeating {
        /// Number of months.
        months: u32,
    },
    /// Every period.
    Forever,
}

/// A feature flag evaluated per customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureFlag {
    /// Id, e.g. `billing_v2`.
    pub id: String,
    /// What the flag controls.
    pub description: String,
    /// Master switch: off means off for everyone.
    pub enabled: bool,
    /// Share of customers who get the flag when enabled, 0–100 with up to two decimals.
    pub rollout_percent: Decimal,
    /// Environments the flag is on in; empty means all.
    pub environments: Vec<String>,
}

#[cfg(test)]
mod tests;
