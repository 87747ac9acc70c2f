//! Business metrics: committed MRR, MRR movements, subscriber churn, ARPU, LTV, trial conversion,
//! usage run-rate, gross revenue, overdue balance and failed payments.
//!
//! The definitions follow Stripe's Billing analytics where Stripe defines a figure (so operators
//! can compare Tally's numbers with their Stripe dashboard) and Lago's invoice-based figures
//! where a usage-based engine needs revenue that MRR leaves out. Every amount is in minor units
//! and per currency, never converted.
//!
//! Rounding: each customer's MRR is its normalized recurring fee minus its forever discount,
//! rounded once, half away from zero, to the minor unit. Every MRR figure is a sum of those
//! rounded amounts, so `start + new + reactivation + expansion − contraction − churn = end`
//! holds exactly. Ratios (churn rates, conversion) are exact decimals rounded to
//! [`RATE_DECIMALS`] places; ARPU and LTV are rounded once to the minor unit.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::money::Currency;

/// Decimal places of the rates (churn, conversion) this module answers: 0.033333 is 3.3333 %.
pub const RATE_DECIMALS: u32 = 6;

/// How long the rolling windows of subscriber churn and trial conversion are.
pub fn rolling_window() -> Duration {
    Duration::days(30)
}

/// How often a recurring fee is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every `n` weeks.
    Weeks(u32),
    /// Every `n` months (1 monthly, 3 quarterly, 6 semiannual).
    Months(u32),
    /// Every `n` years.
    Years(u32),
}

impl Cadence {
    /// The factor that turns one fee into its monthly equivalent: weekly × 52 / 12, monthly × 1,
    /// quarterly / 3, semiannual / 6, yearly / 12. `None` for a zero count.
    fn monthly_factor(self) -> Option<Decimal> {
        let (num, den) = match self {
            Cadence::Weeks(n) => (Decimal::from(52), Decimal::from(12u64 * u64::from(n))),
            Cadence::Months(n) => (Decimal::ONE, Decimal::from(n)),
            Cadence::Years(n) => (Decimal::ONE, Decimal::from(12u64 * u64::from(n))),
        };
        num.checked_div(den)
    }
}

/// A discount that applies for as long as the subscription lasts (Stripe's `duration: forever`).
/// Only these reduce MRR; `once` and `repeating` discounts do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeverDiscount {
    /// A percentage off the fee (`25` is 25 %).
    PercentOff(Decimal),
    /// An amount off each charge, in the fee's minor units.
    AmountOff(i64),
}

/// A subscription's state as the metrics need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    /// Stripe's status: `trialing`, `active`, `past_due`, `canceled`, `unpaid`, `incomplete`,
    /// `incomplete_expired`, `paused`.
    pub status: String,
    /// The recurring fixed fee in minor units (zero or absent for a free plan).
    pub fee_minor: i64,
    /// The fee's currency.
    pub currency: Currency,
    /// How often the fee is charged.
    pub cadence: Cadence,
    /// A forever discount, when the subscription has one.
    pub forever_discount: Option<ForeverDiscount>,
}

impl SubscriptionState {
    /// The committed MRR this state contributes, in minor units, rounded once: the normalized fee
    /// minus a forever discount, for `active` and `past_due` subscriptions; zero otherwise (trials,
    /// free plans, unpaid, canceled, incomplete, paused).
    pub fn committed_mrr(&self) -> i64 {
        if !matches!(self.status.as_str(), "active" | "past_due") || self.fee_minor <= 0 {
            return 0;
        }
        let fee = Decimal::from(self.fee_minor);
        let net = match self.forever_discount {
            None => fee,
            Some(ForeverDiscount::PercentOff(p)) => {
                let off = fee
                    .checked_mul(p.clamp(Decimal::ZERO, Decimal::ONE_HUNDRED))
                    .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED))
                    .unwrap_or(Decimal::ZERO);
                fee - off
            }
            Some(ForeverDiscount::AmountOff(a)) => (fee - Decimal::from(a)).max(Decimal::ZERO),
        };
        let monthly = self
            .cadence
            .monthly_factor()
            .and_then(|f| net.checked_mul(f))
            .unwrap_or(Decimal::ZERO);
        // Minor units in, minor units out: round with a zero-decimal view of the currency.
        to_minor(monthly)
    }
}

/// One change of a customer's subscription: from `at` on, the customer has `state` (`None`: no
/// subscription, e.g. deleted and fallen back to a free plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// The customer's id.
    pub customer: String,
    /// When the change took effect.
    pub at: DateTime<Utc>,
    /// The state from then on.
    pub state: Option<SubscriptionState>,
}

/// MRR and its movements over a period, for one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MrrMovements {
    /// Committed MRR at the period's start.
    pub start: i64,
    /// From 0 for a customer who never paid before.
    pub new: i64,
    /// From 0 for a customer who paid before and had churned.
    pub reactivation: i64,
    /// Increases while staying above 0.
    pub expansion: i64,
    /// Decreases while staying above 0 (a positive number).
    pub contraction: i64,
    /// To 0 (a positive number: the MRR lost).
    pub churn: i64,
    /// Committed MRR at the period's end.
    pub end: i64,
    /// Customers with MRR above 0 at the period's start.
    pub subscribers_start: u64,
    /// Customers with MRR above 0 at the period's end.
    pub subscribers_end: u64,
    /// Customers who went from 0 to above 0 in the period (new or reactivated).
    pub subscribers_gained: u64,
    /// Customers whose MRR went to 0 in the period.
    pub subscribers_churned: u64,
}

impl MrrMovements {
    /// Churned revenue: churned MRR plus contraction MRR.
    pub fn churned_revenue(&self) -> i64 {
        self.churn.saturating_add(self.contraction)
    }

    /// Gross MRR churn rate: (churn + contraction) ÷ MRR at the start; `None` when the start is 0.
    pub fn gross_mrr_churn_rate(&self) -> Option<Decimal> {
        ratio(
            Decimal::from(self.churned_revenue()),
            Decimal::from(self.start),
        )
    }

    /// Subscriber (logo) churn rate: churned ÷ (subscribers at the start + gained); `None` when
    /// the denominator is 0.
    pub fn subscriber_churn_rate(&self) -> Option<Decimal> {
        ratio(
            Decimal::from(self.subscribers_churned),
            Decimal::from(
                self.subscribers_start
                    .saturating_add(self.subscribers_gained),
            ),
        )
    }

    /// ARPU: MRR at the end ÷ subscribers at the end, in minor units; `None` without subscribers.
    pub fn arpu(&self) -> Option<i64> {
        Decimal::from(self.end)
            .checked_div(Decimal::from(self.subscribers_end))
            .map(to_minor)
    }
}

/// Committed MRR per currency at instant `t` (changes at exactly `t` count).
pub fn committed_mrr_at(
    changes: &[SubscriptionChange],
    t: DateTime<Utc>,
) -> BTreeMap<Currency, i64> {
    let mut out = BTreeMap::new();
    for ((_, currency), mrr) in mrr_by_customer_at(changes, t) {
        if mrr > 0 {
            let e: &mut i64 = out.entry(currency).or_default();
            *e = e.saturating_add(mrr);
        }
    }
    out
}

/// MRR and its movements in `[from, to)`, per currency. A change exactly at `from` is a movement
/// of this period; one at `to` belongs to the next.
pub fn mrr_movements(
    changes: &[SubscriptionChange],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<Currency, MrrMovements> {
    let mut sorted: Vec<&SubscriptionChange> = changes.iter().collect();
    sorted.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.customer.cmp(&b.customer)));
    let mut out: BTreeMap<Currency, MrrMovements> = BTreeMap::new();
    // (customer, currency) → current MRR; and who has ever paid in that currency.
    let mut current: BTreeMap<(String, Currency), i64> = BTreeMap::new();
    let mut ever_paid: BTreeSet<(String, Currency)> = BTreeSet::new();
    let mut gained: BTreeSet<(String, Currency)> = BTreeSet::new();
    let mut churned: BTreeSet<(String, Currency)> = BTreeSet::new();
    let mut started = false;
    for c in sorted.iter().copied().filter(|c| c.at < to) {
        if !started && c.at >= from {
            snapshot_start(&current, &mut out);
            started = true;
        }
        // Every currency the customer has MRR in now, and the new state's currency.
        let after = c.state.as_ref().map(|s| (s.currency, s.committed_mrr()));
        let mut keys: Vec<Currency> = current
            .iter()
            .filter(|((cust, _), m)| *cust == c.customer && **m > 0)
            .map(|((_, cur), _)| *cur)
            .collect();
        if let Some((cur, _)) = after {
            if !keys.contains(&cur) {
                keys.push(cur);
            }
        }
        for cur in keys {
            let key = (c.customer.clone(), cur);
            let before = current.get(&key).copied().unwrap_or(0);
            let now = match after {
                Some((a_cur, m)) if a_cur == cur => m,
                _ => 0,
            };
            if c.at >= from && before != now {
                let m = out.entry(cur).or_default();
                if before == 0 {
                    if ever_paid.contains(&key) {
                        m.reactivation = m.reactivation.saturating_add(now);
                    } else {
                        m.new = m.new.saturating_add(now);
                    }
                    gained.insert(key.clone());
                } else if now == 0 {
                    m.churn = m.churn.saturating_add(before);
                    churned.insert(key.clone());
                } else if now > before {
                    m.expansion = m.expansion.saturating_add(now - before);
                } else {
                    m.contraction = m.contraction.saturating_add(before - now);
                }
            }
            if now > 0 {
                ever_paid.insert(key.clone());
            }
            current.insert(key, now);
        }
    }
    if !started {
        snapshot_start(&current, &mut out);
    }
    for ((_, cur), mrr) in &current {
        if *mrr > 0 {
            let m = out.entry(*cur).or_default();
            m.end = m.end.saturating_add(*mrr);
            m.subscribers_end += 1;
        }
    }
    for (_, cur) in gained {
        out.entry(cur).or_default().subscribers_gained += 1;
    }
    for (_, cur) in churned {
        out.entry(cur).or_default().subscribers_churned += 1;
    }
    out
}

fn snapshot_start(
    current: &BTreeMap<(String, Currency), i64>,
    out: &mut BTreeMap<Currency, MrrMovements>,
) {
    for ((_, cur), mrr) in current {
        if *mrr > 0 {
            let m = out.entry(*cur).or_default();
            m.start = m.start.saturating_add(*mrr);
            m.subscribers_start += 1;
        }
    }
}

fn mrr_by_customer_at(
    changes: &[SubscriptionChange],
    t: DateTime<Utc>,
) -> BTreeMap<(String, Currency), i64> {
    let mut latest: BTreeMap<&str, &SubscriptionChange> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.at <= t) {
        let e = latest.entry(c.customer.as_str()).or_insert(c);
        if c.at >= e.at {
            *e = c;
        }
    }
    latest
        .into_iter()
        .filter_map(|(cust, c)| {
            c.state
                .as_ref()
                .map(|s| ((cust.to_owned(), s.currency), s.committed_mrr()))
        })
        .collect()
}

/// LTV: ARPU ÷ subscriber churn rate, in minor units; `None` ("n/a") when the churn rate is 0 or
/// unknown.
pub fn ltv(arpu: Option<i64>, churn_rate: Option<Decimal>) -> Option<i64> {
    let rate = churn_rate.filter(|r| !r.is_zero())?;
    Decimal::from(arpu?).checked_div(rate).map(to_minor)
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialEnd {
    /// The customer's id.
    pub customer: String,
    /// When the trial ended (or was canceled).
    pub at: DateTime<Utc>,
    /// True when the trial ended, was not canceled and the first invoice was paid; false when the
    /// subscription was canceled while trialing.
    pub converted: bool,
}

/// Trial conversion rate over `[to − 30 days, to)`: converted ÷ ended; `None` when no trial ended.
pub fn trial_conversion_rate(trials: &[TrialEnd], to: DateTime<Utc>) -> Option<Decimal> {
    let from = to - rolling_window();
    let ended: Vec<&TrialEnd> = trials
        .iter()
        .filter(|t| t.at >= from && t.at < to)
        .collect();
    let converted = ended.iter().filter(|t| t.converted).count();
    ratio(Decimal::from(converted), Decimal::from(ended.len()))
}

/// An invoice's payment state, as the revenue figures need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Not paid yet, no attempt failed (or none made).
    Pending,
    /// Paid.
    Succeeded,
    /// The latest attempt failed.
    Failed,
    /// Voided: never revenue.
    Voided,
    /// Marked uncollectible (written off): revenue of its month, never overdue.
    Uncollectible,
    /// A dispute was lost: never revenue.
    DisputeLost,
}

/// A finalized invoice's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    /// The invoice's id.
    pub id: String,
    /// Its currency.
    pub currency: Currency,
    /// When it was finalized.
    pub finalized_at: DateTime<Utc>,
    /// When payment is due.
    pub due_at: DateTime<Utc>,
    /// Its total, tax included, in minor units.
    pub total: i64,
    /// How much of it was paid.
    pub paid: i64,
    /// Credit notes issued against it (offsets, not refunds of money paid).
    pub credited: i64,
    /// Its payment state.
    pub payment: PaymentState,
    /// Usage-charge lines net of discounts, excluding tax: (metric, amount in minor units).
    pub usage_lines: Vec<(String, i64)>,
    /// When the next payment attempt is scheduled, for an invoice whose latest attempt failed.
    pub next_retry_at: Option<DateTime<Utc>>,
}

impl InvoiceFacts {
    fn is_revenue(&self) -> bool {
        !matches!(
            self.payment,
            PaymentState::Voided | PaymentState::DisputeLost
        )
    }
}

/// Money received outside invoices (a credit pack paid in advance), or a refund of money received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The invoice or one-off payment this belongs to.
    pub reference: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Its currency.
    pub currency: Currency,
    /// Amount in minor units.
    pub amount: i64,
}

/// One payment attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAttempt {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Its currency.
    pub currency: Currency,
    /// Amount in minor units.
    pub amount: i64,
    /// Whether it succeeded.
    pub succeeded: bool,
}

/// Revenue figures of one currency over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revenue {
    /// Usage run-rate: usage-charge lines of invoices finalized in the period, by metric.
    pub usage_by_metric: BTreeMap<String, i64>,
    /// Σ of `usage_by_metric`.
    pub usage_run_rate: i64,
    /// Gross revenue: totals of invoices finalized in the period plus fees paid in advance in the
    /// period, minus refunds issued against those invoices and fees (voided and dispute-lost
    /// invoices excluded).
    pub gross_revenue: i64,
    /// Failed payment attempts in the period: count and amount.
    pub failed_payments: u64,
    /// Amount of the failed attempts.
    pub failed_amount: i64,
    /// Invoices finalized in the period by payment state: (count, total) for pending, succeeded,
    /// failed.
    pub collection: BTreeMap<&'static str, (u64, i64)>,
}

/// Revenue per currency over `[from, to)`.
pub fn revenue(
    invoices: &[InvoiceFacts],
    advance_fees: &[Payment],
    refunds: &[Payment],
    attempts: &[PaymentAttempt],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<Currency, Revenue> {
    let within = |t: DateTime<Utc>| t >= from && t < to;
    let mut out: BTreeMap<Currency, Revenue> = BTreeMap::new();
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    for inv in invoices
        .iter()
        .filter(|i| within(i.finalized_at) && i.is_revenue())
    {
        let r = out.entry(inv.currency).or_default();
        for (metric, amount) in &inv.usage_lines {
            let e = r.usage_by_metric.entry(metric.clone()).or_default();
            *e = e.saturating_add(*amount);
            r.usage_run_rate = r.usage_run_rate.saturating_add(*amount);
        }
        r.gross_revenue = r.gross_revenue.saturating_add(inv.total);
        let state = match inv.payment {
            PaymentState::Succeeded => "succeeded",
            PaymentState::Failed | PaymentState::Uncollectible => "failed",
            _ => "pending",
        };
        let e = r.collection.entry(state).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(inv.total);
        counted.insert(inv.id.as_str());
    }
    for fee in advance_fees.iter().filter(|f| within(f.at)) {
        let r = out.entry(fee.currency).or_default();
        r.gross_revenue = r.gross_revenue.saturating_add(fee.amount);
        counted.insert(fee.reference.as_str());
    }
    for refund in refunds
        .iter()
        .filter(|r| counted.contains(r.reference.as_str()))
    {
        let r = out.entry(refund.currency).or_default();
        r.gross_revenue = r.gross_revenue.saturating_sub(refund.amount);
    }
    for a in attempts.iter().filter(|a| within(a.at) && !a.succeeded) {
        let r = out.entry(a.currency).or_default();
        r.failed_payments += 1;
        r.failed_amount = r.failed_amount.saturating_add(a.amount);
    }
    out
}

/// Overdue balance per currency at `t`: Σ (total − paid − credited) of finalized invoices due
/// before `t` whose payment is pending or failed (voided and disputed excluded).
pub fn overdue_balance(invoices: &[InvoiceFacts], t: DateTime<Utc>) -> BTreeMap<Currency, i64> {
    let mut out = BTreeMap::new();
    for inv in invoices.iter().filter(|i| {
        i.finalized_at <= t
            && i.due_at < t
            && matches!(i.payment, PaymentState::Pending | PaymentState::Failed)
    }) {
        let open = inv
            .total
            .saturating_sub(inv.paid)
            .saturating_sub(inv.credited)
            .max(0);
        let e: &mut i64 = out.entry(inv.currency).or_default();
        *e = e.saturating_add(open);
    }
    out
}

/// Invoices whose latest attempt failed, with their next retry date, oldest due first.
pub fn failing_invoices(invoices: &[InvoiceFacts]) -> Vec<(&str, Option<DateTime<Utc>>)> {
    let mut v: Vec<&InvoiceFacts> = invoices
        .iter()
        .filter(|i| i.payment == PaymentState::Failed)
        .collect();
    v.sort_by_key(|i| i.due_at);
    v.into_iter()
        .map(|i| (i.id.as_str(), i.next_retry_at))
        .collect()
}

fn ratio(num: Decimal, den: Decimal) -> Option<Decimal> {
    num.checked_div(den)
        .map(|r| r.round_dp_with_strategy(RATE_DECIMALS, RoundingStrategy::MidpointAwayFromZero))
}

/// Rounds a decimal count of minor units to a whole one, half away from zero (saturating at
/// the `i64` range, far beyond any real amount).
fn to_minor(minor: Decimal) -> i64 {
    minor
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(if minor.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

#[cfg(test)]
mod tests;
