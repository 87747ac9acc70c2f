//! Rating: a plan plus one period's usage becomes an invoice.
//!
//! Rules, in order:
//! 1. **Base line** — the plan's price for the interval, when `include_base` is set. Annual plans
//!    bill their yearly price once a year but reset allowances monthly, so the caller rates the
//!    first monthly allowance period of each year with `include_base = true` and the other eleven
//!    with `include_base = false`. A plan without any price (free or billed by hand) has no base
//!    line.
//! 2. **Usage lines** — one per plan metric that has an overage charge, in the order the plan lists
//!    its metrics in the catalog, even when nothing is billable (quantity `0`, amount 0), so an
//!    invoice shows every charge that could apply. The billable quantity is `max(0, used − included)`; metrics with no overage
//!    charge (unlimited, or capped by a hard limit) produce no line.
//! 3. **Minimum line** — when the plan has a minimum and the usage lines plus the base price's
//!    share of the period (all of a monthly price, a twelfth of a yearly one, also in the eleven
//!    months without a base line) add up to less, a line makes up the difference, rounded once.
//! 4. **Adjustment and proration lines** passed in by the caller are appended as they are.
//!
//! Each line is rounded once, half away from zero, to the currency's minor unit. The subtotal is
//! the sum of the rounded lines; the coupon's discount is computed on the subtotal and rounded
//! once, never exceeding it; `total = subtotal − discount`, never negative.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::catalog::{Allowance, Charge, Coupon, Discount, Plan, PlanMetric, Tier};
use crate::decimal::{self, Exact};
use crate::money::Currency;
use crate::period::{ceil_days, Interval, Period};

/// Errors rating usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    /// The plan has prices, but none for the requested interval.
    #[error("plan {plan} has no {interval} price")]
    NoPrice {
        /// Plan id.
        plan: String,
        /// The requested interval.
        interval: Interval,
    },
    /// An amount-off coupon is in another currency than the invoice.
    #[error("coupon {coupon} is in {coupon_currency}, the invoice in {invoice_currency}")]
    CouponCurrency {
        /// Coupon id.
        coupon: String,
        /// The coupon's currency.
        coupon_currency: Currency,
        /// The invoice's currency.
        invoice_currency: Currency,
    },
    /// The coupon is limited to other plans.
    #[error("coupon {coupon} does not apply to plan {plan}")]
    CouponNotForPlan {
        /// Coupon id.
        coupon: String,
        /// Plan id.
        plan: String,
    },
    /// Two plans in a plan change are priced in different currencies.
    #[error("cannot prorate between {from} and {to}: different currencies")]
    CurrencyMismatch {
        /// Old plan id.
        from: String,
        /// New plan id.
        to: String,
    },
    /// A plan change happens outside the period it is prorated over.
    #[error("the plan change at {at} is outside the period {start} – {end}")]
    ChangeOutsidePeriod {
        /// When the change happens.
        at: DateTime<Utc>,
        /// Start of the period.
        start: DateTime<Utc>,
        /// End of the period.
        end: DateTime<Utc>,
    },
    /// An amount is too large to compute exactly.
    #[error("the amount for {0} is too large to compute exactly")]
    Overflow(String),
}

/// What a line of an invoice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan's base price.
    Base,
    /// Usage beyond the included quantity of one metric.
    Usage,
    /// Top-up to the plan's minimum charge.
    Minimum,
    /// Credit or charge for a mid-period plan change.
    Proration,
    /// A correction, e.g. late usage of a period already billed.
    Adjustment,
}

/// One rounded line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    /// What the line is for.
    pub kind: LineKind,
    /// The metric, on usage lines (and adjustments for a metric).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Human-readable description.
    pub description: String,
    /// Billable quantity (1 for base and minimum lines); serialized as a decimal string.
    pub quantity: Decimal,
    /// Amount in minor units, rounded once; negative for credits.
    pub amount: i64,
}

/// A rated invoice for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    /// Currency of every amount.
    pub currency: Currency,
    /// Plan id.
    pub plan: String,
    /// Billing interval of the subscription.
    pub interval: Interval,
    /// Lines in order: base, usage, minimum, then adjustments and prorations.
    pub lines: Vec<InvoiceLine>,
    /// Sum of the lines' amounts.
    pub subtotal: i64,
    /// Coupon discount on the subtotal, `0 ≤ discount ≤ max(subtotal, 0)`.
    pub discount: i64,
    /// `max(subtotal − discount, 0)`.
    pub total: i64,
}

/// Everything [`rate`] needs.
#[derive(Debug, Clone, Copy)]
pub struct RatingInput<'a> {
    /// The customer's plan.
    pub plan: &'a Plan,
    /// The subscription's billing interval.
    pub interval: Interval,
    /// Aggregated usage per metric id for the period. Metrics the plan does not price are
    /// ignored; a missing metric counts as zero.
    pub usage: &'a BTreeMap<String, Decimal>,
    /// A coupon the caller has already found applicable (see [`Coupon::applies`]).
    pub coupon: Option<&'a Coupon>,
    /// Whether to bill the base price in this period (see the module documentation).
    pub include_base: bool,
    /// Already-rounded lines to add, e.g. proration or late-usage adjustments.
    pub adjustments: &'a [InvoiceLine],
}

impl<'a> RatingInput<'a> {
    /// Input for a period billed with its base price, no coupon and no adjustments.
    pub fn new(
        plan: &'a Plan,
        interval: Interval,
        usage: &'a BTreeMap<String, Decimal>,
    ) -> RatingInput<'a> {
        RatingInput {
            plan,
            interval,
            usage,
            coupon: None,
            include_base: true,
            adjustments: &[],
        }
    }
}

/// Rates one period's usage against a plan. See the module documentation for the rules.
pub fn rate(input: &RatingInput<'_>) -> Result<Invoice, RatingError> {
    let plan = input.plan;
    let currency = plan.currency;
    let mut lines = Vec::new();

    if input.include_base && !plan.prices.is_empty() {
        let price = plan
            .prices
            .get(&input.interval)
            .ok_or_else(|| RatingError::NoPrice {
                plan: plan.id.clone(),
                interval: input.interval,
            })?;
        lines.push(InvoiceLine {
            kind: LineKind::Base,
            metric: None,
            description: format!("{} plan ({})", plan.name, input.interval.adjective()),
            quantity: Decimal::ONE,
            amount: price.amount,
        });
    }

    for (metric, pm) in plan.metrics_in_order() {
        let Some(charge) = &pm.overage else {
            continue;
        };
        let used = input.usage.get(metric).copied().unwrap_or(Decimal::ZERO);
        let billable = billable_quantity(used, pm.included).ok_or_else(|| overflow(metric))?;
        let major = charge_amount(charge, billable).ok_or_else(|| overflow(metric))?;
        let amount = round_exact_to_minor(major, currency).ok_or_else(|| overflow(metric))?;
        lines.push(InvoiceLine {
            kind: LineKind::Usage,
            metric: Some(metric.clone()),
            description: usage_description(pm, charge, billable, currency),
            quantity: billable.normalize(),
            amount,
        });
    }

    if let Some(minimum) = plan.minimum {
        let shortfall = minimum_shortfall(input, minimum, &lines)?;
        if shortfall > 0 {
            lines.push(InvoiceLine {
                kind: LineKind::Minimum,
                metric: None,
                description: format!(
                    "Minimum charge of {} {} per period",
                    currency.code().to_ascii_uppercase(),
                    currency.format_minor(minimum)
                ),
                quantity: Decimal::ONE,
                amount: shortfall,
            });
        }
    }

    lines.extend(input.adjustments.iter().cloned());
    let subtotal = sum(&lines)?;
    let discount = match input.coupon {
        None => 0,
        Some(coupon) => {
            if !coupon.plans.is_empty() && !coupon.plans.contains(&plan.id) {
                return Err(RatingError::CouponNotForPlan {
                    coupon: coupon.id.clone(),
                    plan: plan.id.clone(),
                });
            }
            discount_amount(coupon, subtotal, currency)?
        }
    };
    Ok(Invoice {
        currency,
        plan: plan.id.clone(),
        interval: input.interval,
        lines,
        subtotal,
        discount,
        total: subtotal.saturating_sub(discount).max(0),
    })
}

/// How much the period's base and usage lines fall short of the plan's minimum, rounded once.
///
/// The base price counts for the allowance period it pays for: all of a monthly price, and a
/// twelfth of a yearly price in each of the year's monthly periods — including the other eleven,
/// rated without a base line, whose share the yearly price has already paid. Counting the whole
/// yearly price in the first month and nothing in the others would top up eleven months as if the
/// plan were free, charging a yearly subscriber more than a monthly one.
fn minimum_shortfall(
    input: &RatingInput<'_>,
    minimum: i64,
    lines: &[InvoiceLine],
) -> Result<i64, RatingError> {
    let usage = lines
        .iter()
        .filter(|l| l.kind != LineKind::Base)
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount))
        .ok_or_else(|| overflow("the subtotal"))?;
    let price = input
        .plan
        .prices
        .get(&input.interval)
        .map_or(0, |p| p.amount);
    let base_share = match input.interval {
        Interval::Month if input.include_base => Decimal::from(price),
        Interval::Month => Decimal::ZERO,
        Interval::Year => Decimal::from(price) / Decimal::from(Interval::Year.months()),
    };
    let short = Decimal::from(minimum) - Decimal::from(usage) - base_share;
    if short <= Decimal::ZERO {
        return Ok(0);
    }
    short
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or_else(|| overflow("the minimum"))
}

fn overflow(what: &str) -> RatingError {
    RatingError::Overflow(what.to_string())
}

fn sum(lines: &[InvoiceLine]) -> Result<i64, RatingError> {
    lines
        .iter()
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount))
        .ok_or_else(|| overflow("the subtotal"))
}

/// Usage beyond the included quantity, never negative; `None` when the exact difference does not
/// fit a [`Decimal`] (it is never rounded).
pub fn billable_quantity(used: Decimal, included: Allowance) -> Option<Decimal> {
    match included {
        Allowance::Unlimited => Some(Decimal::ZERO),
        Allowance::Quantity(q) => Some(decimal::sub(used, q)?.max(Decimal::ZERO)),
    }
}

/// The exact, unrounded charge in major units for a billable quantity; `None` when it cannot be
/// computed exactly (the caller answers an error rather than a rounded amount).
///
/// Computed with [`Exact`]: `Decimal`'s own products round to 28 digits, which can move the one
/// rounding to the minor unit (99.99999999999999999999999999 × 0.00015 is 0.0149999…985, one
/// cent, but rounds to 0.015 first and then to two).
pub fn charge_amount(charge: &Charge, billable: Decimal) -> Option<Exact> {
    if billable <= Decimal::ZERO {
        return Some(Exact::ZERO);
    }
    let q = Exact::from(billable);
    match charge {
        Charge::PerUnit { unit_price } => q.checked_mul(Exact::from(*unit_price)),
        Charge::Graduated { tiers } => graduated(tiers, q),
        Charge::Volume { tiers } => volume(tiers, q),
        Charge::Package { size, price } => {
            let packages = q.div_ceil(Exact::from(*size))?;
            packages.checked_mul(Exact::from(*price))
        }
        Charge::PassThrough { markup } => {
            // q × (1 + markup / 100) = q × (100 + markup) / 100, exactly.
            let factor = Exact::from(Decimal::ONE_HUNDRED).checked_add(Exact::from(*markup))?;
            let scaled = q.checked_mul(factor)?;
            scaled.checked_mul(Exact::new(1, 2)?)
        }
    }
}

/// Each tier prices the units within it; a tier's flat amount is due once any unit reaches it.
fn graduated(tiers: &[Tier], billable: Exact) -> Option<Exact> {
    let mut total = Exact::ZERO;
    let mut lower = Exact::ZERO;
    for tier in tiers {
        if billable <= lower {
            break;
        }
        let upper = tier
            .up_to
            .map_or(billable, |u| Exact::from(u).min(billable));
        let units = upper.checked_sub(lower)?;
        let tier_amount = units
            .checked_mul(Exact::from(tier.unit_price))?
            .checked_add(Exact::from(tier.flat))?;
        total = total.checked_add(tier_amount)?;
        lower = upper;
    }
    Some(total)
}

/// The tier containing the whole billable quantity prices every unit.
fn volume(tiers: &[Tier], billable: Exact) -> Option<Exact> {
    let tier = tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|u| billable <= Exact::from(u)))
        .or(tiers.last())?;
    billable
        .checked_mul(Exact::from(tier.unit_price))?
        .checked_add(Exact::from(tier.flat))
}

/// An exact amount in major units rounded once, half away from zero, to the currency's minor
/// unit; `None` beyond `i64`.
pub fn round_exact_to_minor(major: Exact, currency: Currency) -> Option<i64> {
    major
        .round_to(currency.exponent())
        .and_then(|m| i64::try_from(m).ok())
}

fn usage_description(pm: &PlanMetric, charge: &Charge, billable: Decimal, c: Currency) -> String {
    let code = c.code().to_ascii_uppercase();
    let included = match pm.included {
        Allowance::Unlimited => "unlimited".to_string(),
        Allowance::Quantity(q) => q.normalize().to_string(),
    };
    let billable = billable.normalize();
    match charge {
        Charge::PassThrough { markup } => format!(
            "{}: {code} {billable} beyond {code} {included} included, plus {}% markup",
            pm.name,
            markup.normalize()
        ),
        _ => {
            let how = match charge {
                Charge::PerUnit { unit_price } => {
                    format!("at {code} {} per {}", unit_price.normalize(), pm.unit)
                }
                Charge::Graduated { .. } => "at graduated tier prices".to_string(),
                Charge::Volume { .. } => "at volume tier prices".to_string(),
                Charge::Package { size, price } => format!(
                    "in packages of {} at {code} {}",
                    size.normalize(),
                    price.normalize()
                ),
                Charge::PassThrough { .. } => String::new(),
            };
            format!(
                "{}: {billable} {} beyond {included} included, {how}",
                pm.name, pm.unit
            )
        }
    }
}

/// The coupon's discount on a subtotal: rounded once, at most the subtotal, never negative.
pub fn discount_amount(
    coupon: &Coupon,
    subtotal: i64,
    currency: Currency,
) -> Result<i64, RatingError> {
    if let Discount::Amount {
        currency: coupon_currency,
        ..
    } = &coupon.discount
    {
        if *coupon_currency != currency {
            return Err(RatingError::CouponCurrency {
                coupon: coupon.id.clone(),
                coupon_currency: *coupon_currency,
                invoice_currency: currency,
            });
        }
    }
    if subtotal <= 0 {
        return Ok(0);
    }
    let amount = match &coupon.discount {
        Discount::Percent(p) => {
            let raw = Decimal::from(subtotal)
                .checked_mul(*p)
                .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
                .ok_or_else(|| overflow("the discount"))?;
            raw.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                .to_i64()
                .ok_or_else(|| overflow("the discount"))?
        }
        Discount::Amount { amount, .. } => *amount,
    };
    Ok(amount.clamp(0, subtotal))
}

/// A mid-period plan change to prorate by days.
#[derive(Debug, Clone, Copy)]
pub struct PlanChange<'a> {
    /// The plan until the change.
    pub from: &'a Plan,
    /// The plan from the change on.
    pub to: &'a Plan,
    /// The subscription's billing interval (the same before and after).
    pub interval: Interval,
    /// The billing period the old plan was paid for.
    pub period: Period,
    /// When the change takes effect.
    pub at: DateTime<Utc>,
}

/// The result of [`prorate`]: a credit for the old plan's unused days and a charge for the new
/// plan's remaining days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proration {
    /// Negative line crediting the unused part of the old plan's price.
    pub credit: InvoiceLine,
    /// Positive line charging the remaining part of the new plan's price.
    pub charge: InvoiceLine,
    /// `credit.amount + charge.amount`: positive for an upgrade, negative for a downgrade.
    pub net: i64,
    /// Days left in the period at the change (a started day counts as remaining).
    pub days_remaining: i64,
    /// Days in the period.
    pub days_in_period: i64,
}

/// Prorates a plan change by days: the unused days of the old price are credited and the
/// remaining days of the new price charged, each `price × days_remaining / days_in_period`,
/// rounded once, half away from zero. The day of the change counts as remaining (it is billed at
/// the new plan). A plan without prices counts as free.
pub fn prorate(change: &PlanChange<'_>) -> Result<Proration, RatingError> {
    let PlanChange {
        from,
        to,
        interval,
        period,
        at,
    } = *change;
    if from.currency != to.currency {
        return Err(RatingError::CurrencyMismatch {
            from: from.id.clone(),
            to: to.id.clone(),
        });
    }
    if !period.contains(at) {
        return Err(RatingError::ChangeOutsidePeriod {
            at,
            start: period.start,
            end: period.end,
        });
    }
    let total_days = period.days().max(1);
    let remaining = ceil_days(period.end - at).min(total_days);
    let price_of = |plan: &Plan| -> Result<i64, RatingError> {
        if plan.prices.is_empty() {
            return Ok(0);
        }
        plan.prices
            .get(&interval)
            .map(|p| p.amount)
            .ok_or_else(|| RatingError::NoPrice {
                plan: plan.id.clone(),
                interval,
            })
    };
    let share = |amount: i64| -> Result<i64, RatingError> {
        let v = Decimal::from(amount)
            .checked_mul(Decimal::from(remaining))
            .and_then(|v| v.checked_div(Decimal::from(total_days)))
            .ok_or_else(|| overflow("the proration"))?;
        v.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .ok_or_else(|| overflow("the proration"))
    };
    let days = Decimal::from(remaining);
    let credit_amount = -share(price_of(from)?)?;
    let charge_amount = share(price_of(to)?)?;
    Ok(Proration {
        credit: InvoiceLine {
            kind: LineKind::Proration,
            metric: None,
            description: format!(
                "Unused time on {} ({remaining} of {total_days} days)",
                from.name
            ),
            quantity: days,
            amount: credit_amount,
        },
        charge: InvoiceLine {
            kind: LineKind::Proration,
            metric: None,
            description: format!(
                "Remaining time on {} ({remaining} of {total_days} days)",
                to.name
            ),
            quantity: days,
            amount: charge_amount,
        },
        net: credit_amount + charge_amount,
        days_remaining: remaining,
        days_in_period: total_days,
    })
}

#[cfg(test)]
mod tests;
