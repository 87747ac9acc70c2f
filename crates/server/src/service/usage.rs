//! Usage per allowance period, the upcoming invoice, and rating a period (shared by the upcoming
//! invoice and the period closer so both bill the same way).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tally_core::catalog::{Aggregation, Allowance, Catalog, Enforcement, Metric, MetricKind, Plan};
use tally_core::decimal;
use tally_core::entitlement::percent_of;
use tally_core::period::{billing_period, Interval, Period};
use tally_core::rating::{billable_quantity, rate, Invoice, InvoiceLine, LineKind, RatingInput};
use tally_store::{Customer, Subscription, UsageRollup};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// How far back a gauge's level is looked for when a period has no event of it.
const GAUGE_LOOKBACK_PERIODS: i32 = 24;

/// The plan a customer is billed on: its subscription's, or the catalog's free plan.
#[derive(Debug, Clone)]
pub struct BilledPlan {
    pub plan: Plan,
    pub interval: Interval,
    /// The discount Stripe applies to the subscription (mirrored from its `discounts`), when it
    /// is a coupon of the catalog for this plan: Tally's invoices take off the same.
    pub coupon: Option<tally_core::catalog::Coupon>,
}

pub fn billed_plan(catalog: &Catalog, sub: Option<&Subscription>) -> Option<BilledPlan> {
    let (id, interval) = match sub {
        // Canceled, never paid (incomplete) or paused subscriptions get the free plan.
        Some(s) if !matches!(s.status.as_str(), "canceled" | "incomplete" | "paused") => (
            s.plan.as_str(),
            Interval::parse(&s.interval).unwrap_or(Interval::Month),
        ),
        _ => (catalog.free_plan.as_deref()?, Interval::Month),
    };
    // Stripe keeps a discount on the subscription only while its duration lasts, so the one
    // mirrored now is the one in force.
    let coupon = sub
        .filter(|s| s.source == "stripe" && s.plan == id)
        .and_then(|s| s.stripe.as_ref())
        .and_then(|st| st.get("coupon"))
        .and_then(|c| c.as_str())
        .and_then(|c| catalog.coupon(c))
        .filter(|c| c.plans.is_empty() || c.plans.iter().any(|p| p == id))
        .cloned();
    Some(BilledPlan {
        plan: catalog.plan(id)?.clone(),
        interval,
        coupon,
    })
}

/// A metric's aggregate from one rollup row.
pub fn aggregate(metric: &Metric, r: &UsageRollup) -> Decimal {
    match metric.aggregation {
        Aggregation::Sum => r.sum,
        Aggregation::Count => Decimal::from(r.count),
        Aggregation::Max => r.max.unwrap_or(Decimal::ZERO),
        Aggregation::Latest => r.latest.unwrap_or(Decimal::ZERO),
        Aggregation::UniqueCount => Decimal::from(r.unique_count),
    }
}

/// Combines an earlier rollup with a later one of the same metric and period; `None` when the
/// sum cannot be held exactly.
fn combine(a: &UsageRollup, b: &UsageRollup) -> Option<UsageRollup> {
    let latest_b = match (a.latest_at, b.latest_at) {
        (Some(x), Some(y)) => y >= x,
        (None, _) => true,
        (Some(_), None) => false,
    };
    Some(UsageRollup {
        sum: decimal::add(a.sum, b.sum)?,
        count: a.count.checked_add(b.count)?,
        max: match (a.max, b.max) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        latest: if latest_b { b.latest } else { a.latest },
        latest_at: if latest_b { b.latest_at } else { a.latest_at },
        unique_count: a.unique_count.checked_add(b.unique_count)?,
        ..a.clone()
    })
}

/// Usage of one period: on-time aggregates per metric (gauges carried over), and late usage of
/// earlier invoiced periods billed in this one.
#[derive(Debug, Clone, Default)]
pub struct PeriodUsage {
    pub used: BTreeMap<String, Decimal>,
    pub late: Vec<UsageRollup>,
    /// On-time rollups of each earlier period that has late usage here.
    pub origins: HashMap<DateTime<Utc>, Vec<UsageRollup>>,
}

/// Reads a period's usage (plus what adjustments and gauges need) from the store.
pub async fn period_usage(
    state: &AppState,
    customer: &Customer,
    period: Period,
) -> Result<PeriodUsage, ApiError> {
    let rows = state.store.usage(&customer.id, period.start).await?;
    let mut usage = PeriodUsage::default();
    for r in rows {
        let Some(metric) = state.catalog.metric(&r.metric) else {
            continue;
        };
        if r.is_adjustment() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                usage.origins.entry(r.usage_period_start)
            {
                let origin: Vec<UsageRollup> = state
                    .store
                    .usage(&customer.id, r.usage_period_start)
                    .await?
                    .into_iter()
                    .filter(|o| !o.is_adjustment())
                    .collect();
                slot.insert(origin);
            }
            usage.late.push(r);
        } else {
            usage.used.insert(r.metric.clone(), aggregate(metric, &r));
        }
    }
    // A gauge is a level: without an event this period, its last known level still holds.
    for metric in state.catalog.metrics() {
        if metric.kind != MetricKind::Gauge || usage.used.contains_key(&metric.id) {
            continue;
        }
        let mut start = period.start;
        for _ in 0..GAUGE_LOOKBACK_PERIODS {
            let prev = customer.allowance_period(start - chrono::Duration::milliseconds(1));
            if prev.start >= start {
                break;
            }
            start = prev.start;
            let rows = state.store.usage(&customer.id, start).await?;
            if let Some(r) = rows
                .iter()
                .find(|r| r.metric == metric.id && !r.is_adjustment())
            {
                usage.used.insert(metric.id.clone(), aggregate(metric, r));
                break;
            }
        }
    }
    Ok(usage)
}

/// Whether the base price is billed in this allowance period: every month on monthly plans, in the
/// first allowance period of each year on annual plans.
pub fn bills_base(anchor: DateTime<Utc>, interval: Interval, period: Period) -> bool {
    match interval {
        Interval::Month => true,
        Interval::Year => {
            billing_period(anchor, Interval::Year, period.start).start == period.start
        }
    }
}

/// The usage-line amount and billable quantity of one metric for a usage level.
fn metric_charge(
    plan: &Plan,
    interval: Interval,
    metric: &str,
    used: Decimal,
) -> Result<(i64, Decimal), String> {
    let usage = BTreeMap::from([(metric.to_owned(), used)]);
    let mut input = RatingInput::new(plan, interval, &usage);
    input.include_base = false;
    let inv = rate(&input).map_err(|e| e.to_string())?;
    Ok(inv
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Usage && l.metric.as_deref() == Some(metric))
        .map(|l| (l.amount, l.quantity))
        .unwrap_or((0, Decimal::ZERO)))
}

/// Labelled adjustment lines for late usage of already invoiced periods: what the late events
/// would have added to their own period's invoice.
pub fn late_adjustments(
    catalog: &Catalog,
    billed: &BilledPlan,
    usage: &PeriodUsage,
) -> Result<Vec<InvoiceLine>, String> {
    let mut lines = Vec::new();
    for late in &usage.late {
        let Some(metric) = catalog.metric(&late.metric) else {
            continue;
        };
        let origin_rows = usage.origins.get(&late.usage_period_start).ok_or_else(|| {
            format!(
                "usage of the period starting {} is not loaded",
                late.usage_period_start
            )
        })?;
        let before = origin_rows.iter().find(|r| r.metric == late.metric);
        let (before_used, after_used) = match before {
            Some(b) => {
                let all = combine(b, late).ok_or_else(|| not_exact(&late.metric))?;
                (aggregate(metric, b), aggregate(metric, &all))
            }
            None => (Decimal::ZERO, aggregate(metric, late)),
        };
        let (a0, q0) = metric_charge(&billed.plan, billed.interval, &late.metric, before_used)?;
        let (a1, q1) = metric_charge(&billed.plan, billed.interval, &late.metric, after_used)?;
        lines.push(InvoiceLine {
            kind: LineKind::Adjustment,
            metric: Some(late.metric.clone()),
            description: format!(
                "Late usage of {} from the period starting {}",
                metric.name,
                late.usage_period_start.format("%Y-%m-%d")
            ),
            quantity: decimal::sub(q1, q0)
                .ok_or_else(|| not_exact(&late.metric))?
                .normalize(),
            amount: a1.checked_sub(a0).ok_or_else(|| not_exact(&late.metric))?,
        });
    }
    Ok(lines)
}

/// Rates one allowance period of a customer.
pub fn rate_period(
    catalog: &Catalog,
    billed: &BilledPlan,
    anchor: DateTime<Utc>,
    period: Period,
    usage: &PeriodUsage,
) -> Result<Invoice, String> {
    let adjustments = late_adjustments(catalog, billed, usage)?;
    let mut input = RatingInput::new(&billed.plan, billed.interval, &usage.used);
    input.include_base = bills_base(anchor, billed.interval, period);
    input.adjustments = &adjustments;
    input.coupon = billed.coupon.as_ref();
    rate(&input).map_err(|e| e.to_string())
}

/// `[start, end)` of a period on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeriodView {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl From<Period> for PeriodView {
    fn from(p: Period) -> Self {
        PeriodView {
            start: p.start,
            end: p.end,
        }
    }
}

/// One metric's usage against the plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricUsage {
    pub metric: String,
    pub name: String,
    pub unit: String,
    /// `sum`, `count`, `max`, `latest` or `unique_count`.
    pub aggregation: &'static str,
    /// Usage so far this period (decimal string).
    #[schema(value_type = String)]
    pub used: Decimal,
    /// Included quantity (decimal string) or `unlimited`.
    pub included: String,
    /// The cap, if any (decimal string).
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    /// `hard` or `soft`, with a limit.
    pub enforcement: Option<&'static str>,
    /// Used as a percentage of the limit, or of the included quantity without a limit.
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    /// What is left before the limit (or the included quantity), never negative.
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    /// Billable quantity beyond the included one.
    #[schema(value_type = String)]
    pub overage: Decimal,
}

/// Usage of the current allowance period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageReport {
    pub customer: String,
    pub plan: Option<String>,
    pub period: PeriodView,
    pub metrics: Vec<MetricUsage>,
}

/// Loads a customer or answers 404.
pub async fn customer(state: &AppState, id: &str) -> Result<Customer, ApiError> {
    state.store.get_customer(id).await?.ok_or_else(|| {
        ApiError::not_found("customer_not_found", format!("no customer {id:?}")).with_param("id")
    })
}

fn not_exact(metric: &str) -> String {
    format!("the usage of {metric} cannot be computed exactly within Tally's limits")
}

/// A usage figure Tally cannot compute exactly (see the value limits in docs/api.md).
pub fn out_of_range(metric: &str) -> ApiError {
    ApiError::unprocessable("usage_out_of_range", not_exact(metric)).with_param("metric")
}

/// `used` as a percentage of `of` (two decimals), `Ok(None)` without a positive `of`.
fn percent(metric: &str, used: Decimal, of: Decimal) -> Result<Option<Decimal>, ApiError> {
    if of <= Decimal::ZERO {
        return Ok(None);
    }
    percent_of(used, of)
        .map(|p| Some(p.normalize()))
        .ok_or_else(|| out_of_range(metric))
}

/// Per-metric usage of `period` against the customer's plan.
pub fn report(
    catalog: &Catalog,
    customer: &Customer,
    billed: Option<&BilledPlan>,
    period: Period,
    usage: &PeriodUsage,
) -> Result<UsageReport, ApiError> {
    // The plan's metrics in catalog order, then any other metric with usage.
    let mut ids: Vec<String> = billed
        .map(|b| {
            b.plan
                .metrics_in_order()
                .into_iter()
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    for m in catalog.metrics() {
        if usage.used.contains_key(&m.id) && !ids.contains(&m.id) {
            ids.push(m.id.clone());
        }
    }
    let mut metrics = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(m) = catalog.metric(id) else {
            continue;
        };
        {
            let used = usage.used.get(id).copied().unwrap_or(Decimal::ZERO);
            let pm = billed.and_then(|b| b.plan.metrics.get(id));
            let included = pm.map_or(Allowance::Quantity(Decimal::ZERO), |p| p.included);
            let limit = pm.and_then(|p| p.limit);
            let cap = limit.map(|l| l.quantity).or(match included {
                Allowance::Quantity(q) => Some(q),
                Allowance::Unlimited => None,
            });
            let remaining = match cap {
                Some(c) => Some(
                    decimal::sub(c, used)
                        .ok_or_else(|| out_of_range(id))?
                        .max(Decimal::ZERO),
                ),
                None => None,
            };
            metrics.push(MetricUsage {
                metric: id.clone(),
                name: m.name.clone(),
                unit: m.unit.clone(),
                aggregation: m.aggregation.as_str(),
                used,
                included: match included {
                    Allowance::Unlimited => "unlimited".into(),
                    Allowance::Quantity(q) => q.normalize().to_string(),
                },
                limit: limit.map(|l| l.quantity),
                enforcement: limit.map(|l| match l.enforcement {
                    Enforcement::Hard => "hard",
                    Enforcement::Soft => "soft",
                }),
                percent: match cap {
                    Some(c) => percent(id, used, c)?,
                    None => None,
                },
                remaining,
                overage: billable_quantity(used, included).ok_or_else(|| out_of_range(id))?,
            });
        }
    }
    Ok(UsageReport {
        customer: customer.id.clone(),
        plan: billed.map(|b| b.plan.id.clone()),
        period: period.into(),
        metrics,
    })
}

/// The customer's plan, allowance period at `at`, and that period's usage.
pub async fn usage_at(
    state: &AppState,
    customer: &Customer,
    at: DateTime<Utc>,
) -> Result<(Option<BilledPlan>, Period, PeriodUsage), ApiError> {
    let sub = state.store.get_subscription(&customer.id).await?;
    let billed = billed_plan(&state.catalog, sub.as_ref());
    let period = customer.allowance_period(at);
    let usage = period_usage(state, customer, period).await?;
    Ok((billed, period, usage))
}

/// `GET /v1/customers/{id}/usage`.
pub async fn current_usage(state: &AppState, customer_id: &str) -> Result<UsageReport, ApiError> {
    let c = customer(state, customer_id).await?;
    let (billed, period, usage) = usage_at(state, &c, state.clock.now()).await?;
    report(&state.catalog, &c, billed.as_ref(), period, &usage)
}

/// The upcoming invoice: the current period rated so far.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpcomingInvoice {
    pub customer: String,
    pub period: PeriodView,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub invoice: Invoice,
}

/// `GET /v1/customers/{id}/invoices/upcoming`.
pub async fn upcoming_invoice(
    state: &AppState,
    customer_id: &str,
) -> Result<UpcomingInvoice, ApiError> {
    let c = customer(state, customer_id).await?;
    let (billed, period, usage) = usage_at(state, &c, state.clock.now()).await?;
    let billed = billed.ok_or_else(|| {
        ApiError::not_found(
            "no_subscription",
            format!(
                "customer {customer_id:?} has no subscription and the catalog has no free plan"
            ),
        )
    })?;
    let anchor = c.allowance().anchor_at(period.start);
    let invoice = rate_period(&state.catalog, &billed, anchor, period, &usage)
        .map_err(|m| ApiError::unprocessable("rating_failed", m))?;
    Ok(UpcomingInvoice {
        customer: c.id,
        period: period.into(),
        invoice,
    })
}
