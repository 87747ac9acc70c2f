//! Business metrics (`GET /v1/metrics/business` and the admin dashboard), per currency, from
//! Tally's own records: the subscription history (MRR, movements, churn, trials), Tally's closed
//! invoices (usage run-rate), the mirror of Stripe's invoices (revenue, collection, overdue
//! balance) and the transactions recorded from Stripe (refunds, credit packs, failed payments).
//! The figures are computed by `tally_core::business`, which defines each one; this module only
//! turns records into its inputs.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tally_core::business::{
    self, Cadence, ForeverDiscount, InvoiceFacts, Payment, PaymentAttempt, PaymentState,
    SubscriptionChange, SubscriptionState, TrialEnd,
};
use tally_core::catalog::{CouponDuration, Discount};
use tally_core::money::Currency;
use tally_core::period::Interval;
use tally_store::{StripeInvoiceRecord, SubscriptionChangeRecord, Transaction};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// A calendar month in UTC: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let d = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)?;
        Month::starting(d)
    }

    /// The month containing `t`.
    pub fn of(t: DateTime<Utc>) -> Option<Month> {
        Month::starting(NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?)
    }

    fn starting(d: NaiveDate) -> Option<Month> {
        let next = d.checked_add_months(Months::new(1))?;
        Some(Month {
            from: Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?),
            to: Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?),
        })
    }

    /// The month before.
    pub fn previous(self) -> Option<Month> {
        Month::starting(self.from.date_naive().checked_sub_months(Months::new(1))?)
    }

    /// `YYYY-MM`.
    pub fn label(self) -> String {
        self.from.format("%Y-%m").to_string()
    }
}

/// MRR at the month's start and end and what moved it, in minor units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MovementsView {
    pub start: i64,
    pub new: i64,
    pub reactivation: i64,
    pub expansion: i64,
    /// A positive number: MRR lost to decreases that stay above 0.
    pub contraction: i64,
    /// A positive number: MRR lost by customers going to 0.
    pub churn: i64,
    pub end: i64,
}

/// Paying subscribers (customers with MRR above 0).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscribersView {
    pub start: u64,
    pub end: u64,
    /// New or reactivated in the month.
    pub gained: u64,
    /// Went to 0 in the month.
    pub churned: u64,
}

/// A count and an amount in minor units.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CountAmount {
    pub count: u64,
    pub amount: i64,
}

/// Invoices whose latest payment attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailingInvoice {
    /// Stripe's invoice id.
    pub invoice: String,
    pub customer: String,
    /// Still owed, in minor units.
    pub amount_due: i64,
}

/// Every figure of one currency (see docs/business-metrics.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencyMetrics {
    /// Lowercase ISO code.
    pub currency: String,
    /// Committed MRR at the month's end (or now, for the current month).
    pub committed_mrr: i64,
    /// Usage-charge lines of the invoices Tally closed in the month, net of discounts.
    pub usage_run_rate: i64,
    /// The usage run-rate by metric.
    pub usage_by_metric: BTreeMap<String, i64>,
    /// Committed MRR plus the usage run-rate of the last complete month
    /// (`usage_run_rate_month`).
    pub total_recurring_run_rate: i64,
    /// The month whose usage run-rate `total_recurring_run_rate` adds (`YYYY-MM`).
    pub usage_run_rate_month: String,
    pub mrr_movements: MovementsView,
    pub subscribers: SubscribersView,
    /// Churned MRR plus contraction MRR of the month.
    pub churned_revenue: i64,
    /// (churn + contraction) ÷ MRR at the start of the month; null when that MRR is 0.
    #[schema(value_type = Option<String>)]
    pub gross_mrr_churn_rate: Option<Decimal>,
    /// Subscribers churned in the 30 days up to the month's end ÷ (subscribers at the window's
    /// start + gained in it); null when that is 0.
    #[schema(value_type = Option<String>)]
    pub subscriber_churn_rate: Option<Decimal>,
    /// Committed MRR ÷ paying subscribers at the month's end; null without subscribers.
    pub arpu: Option<i64>,
    /// ARPU ÷ subscriber churn rate; null ("n/a") when the churn rate is 0 or unknown.
    pub ltv: Option<i64>,
    /// Trials converted ÷ trials ended in the 30 days up to the month's end; null when none
    /// ended.
    #[schema(value_type = Option<String>)]
    pub trial_conversion_rate: Option<Decimal>,
    /// Trials that ended in that window: converted (became active) and canceled while trialing.
    pub trials_converted: u64,
    pub trials_canceled: u64,
    /// Totals of the Stripe invoices finalized in the month (voided ones excluded) plus credit
    /// packs bought in it, minus refunds of them.
    pub gross_revenue: i64,
    /// Still owed (`amount_remaining`) on finalized open invoices past their due date, at the
    /// month's end (or now): a `send_invoice` invoice once its due date passed, a
    /// `charge_automatically` one once a payment attempt failed.
    pub overdue_balance: i64,
    /// Payment attempts that failed in the month.
    pub failed_payments: CountAmount,
    /// Invoices of the month by payment state: `pending`, `succeeded`, `failed`.
    pub collection: BTreeMap<String, CountAmount>,
    /// Invoices whose latest attempt failed (at the month's end or now), oldest first.
    pub failing_invoices: Vec<FailingInvoice>,
}

/// `GET /v1/metrics/business`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BusinessMetrics {
    /// `YYYY-MM`.
    pub month: String,
    /// The month's first instant (UTC).
    pub from: DateTime<Utc>,
    /// The next month's first instant.
    pub to: DateTime<Utc>,
    /// Where the stock figures are read: the month's end, or now for the current month.
    pub as_of: DateTime<Utc>,
    /// One entry per currency with any figure, by code.
    pub currencies: Vec<CurrencyMetrics>,
}

fn cadence(interval: &str) -> Cadence {
    match Interval::parse(interval) {
        Some(Interval::Year) => Cadence::Years(1),
        _ => Cadence::Months(1),
    }
}

/// The metrics' view of one history row: the plan's fee for its interval from the catalog, and
/// the coupon's discount when the coupon is a forever one.
fn state_of(state: &AppState, r: &SubscriptionChangeRecord) -> Option<SubscriptionState> {
    let plan = state.catalog.plan(&r.plan)?;
    let fee = Interval::parse(&r.interval)
        .and_then(|i| plan.prices.get(&i))
        .map_or(0, |p| p.amount);
    let forever_discount = r
        .coupon
        .as_deref()
        .and_then(|c| state.catalog.coupon(c))
        .filter(|c| c.duration == CouponDuration::Forever)
        .and_then(|c| match &c.discount {
            Discount::Percent(p) => Some(ForeverDiscount::PercentOff(*p)),
            Discount::Amount { amount, currency } => {
                (*currency == plan.currency).then_some(ForeverDiscount::AmountOff(*amount))
            }
        });
    Some(SubscriptionState {
        status: r.status.clone(),
        fee_minor: fee,
        currency: plan.currency,
        cadence: cadence(&r.interval),
        forever_discount,
    })
}

/// The history as changes of MRR.
pub fn changes(state: &AppState, history: &[SubscriptionChangeRecord]) -> Vec<SubscriptionChange> {
    history
        .iter()
        .map(|r| SubscriptionChange {
            customer: r.customer_id.clone(),
            at: r.at,
            state: state_of(state, r),
        })
        .collect()
}

/// Trials that ended: a `trialing` row followed by `active` on a paid plan (converted) or by
/// `canceled` / `incomplete_expired` (canceled while trialing). Other successors (a first
/// payment that failed) are neither.
/// Each with the currency of the plan it ended on.
fn trial_ends(state: &AppState, history: &[SubscriptionChangeRecord]) -> Vec<(TrialEnd, Currency)> {
    let mut last: HashMap<&str, &SubscriptionChangeRecord> = HashMap::new();
    let mut out = Vec::new();
    for r in history {
        if let Some(prev) = last.get(r.customer_id.as_str()) {
            if prev.status == "trialing" && r.status != "trialing" {
                if let Some(s) = state_of(state, r) {
                    let converted = match r.status.as_str() {
                        "active" if s.fee_minor > 0 => Some(true),
                        "canceled" | "incomplete_expired" => Some(false),
                        _ => None,
                    };
                    if let Some(converted) = converted {
                        out.push((
                            TrialEnd {
                                customer: r.customer_id.clone(),
                                at: r.at,
                                converted,
                            },
                            s.currency,
                        ));
                    }
                }
            }
        }
        last.insert(r.customer_id.as_str(), r);
    }
    out
}

/// Stripe invoices as the transactions show them: finalized (and due, as Stripe's automatic
/// collection is) at their first payment attempt; paid when a payment was recorded, failed when
/// only failed attempts were.
fn stripe_invoices(txns: &[Transaction]) -> (Vec<InvoiceFacts>, HashMap<String, String>) {
    let mut by_id: BTreeMap<&str, InvoiceFacts> = BTreeMap::new();
    let mut customer_of = HashMap::new();
    for t in txns {
        let Some(id) = t.stripe_invoice.as_deref() else {
            continue;
        };
        let Ok(currency) = Currency::parse(&t.currency) else {
            continue;
        };
        let f = by_id.entry(id).or_insert_with(|| InvoiceFacts {
            id: id.to_owned(),
            currency,
            finalized_at: t.occurred_at,
            due_at: t.occurred_at,
            total: 0,
            paid: 0,
            credited: 0,
            payment: PaymentState::Pending,
            usage_lines: Vec::new(),
            next_retry_at: None,
        });
        customer_of.insert(id.to_owned(), t.customer_id.clone());
        f.total = f.total.max(t.amount);
        match t.kind.as_str() {
            "subscription_payment" => {
                f.paid = f.paid.saturating_add(t.amount);
                f.payment = PaymentState::Succeeded;
            }
            "payment_failed" if f.payment != PaymentState::Succeeded => {
                f.payment = PaymentState::Failed;
            }
            _ => {}
        }
    }
    (by_id.into_values().collect(), customer_of)
}

/// The facts of a mirrored Stripe invoice; none for a draft (not finalized: not an invoice yet).
///
/// Due: at its due date when it has one (`send_invoice`); a `charge_automatically` invoice has
/// none and is due when Stripe tries to collect it at finalization, so it is past due once an
/// attempt failed (from its finalization on) and never while no attempt was made.
fn mirrored_facts(i: &StripeInvoiceRecord) -> Option<InvoiceFacts> {
    let finalized_at = i.finalized_at?;
    if i.status == "draft" {
        return None;
    }
    let payment = match i.status.as_str() {
        "paid" => PaymentState::Succeeded,
        "void" => PaymentState::Voided,
        "uncollectible" => PaymentState::Uncollectible,
        _ if i.attempt_count > 0 => PaymentState::Failed,
        _ => PaymentState::Pending,
    };
    let due_at = match i.due_date {
        Some(d) => d,
        None if i.attempt_count > 0 => finalized_at,
        None => DateTime::<Utc>::MAX_UTC,
    };
    Some(InvoiceFacts {
        id: i.id.clone(),
        currency: Currency::parse(&i.currency).ok()?,
        finalized_at,
        due_at,
        total: i.total,
        paid: i.amount_paid,
        // What is neither paid nor still owed was settled otherwise (customer balance, credit
        // notes): the overdue balance is what remains.
        credited: i
            .total
            .saturating_sub(i.amount_paid)
            .saturating_sub(i.amount_remaining)
            .max(0),
        payment,
        usage_lines: Vec::new(),
        next_retry_at: i.next_payment_attempt,
    })
}

/// Stripe invoices: the mirror's, and for invoices the mirror does not have (recorded before
/// it existed) what the transactions show.
async fn all_stripe_invoices(
    state: &AppState,
    txns: &[Transaction],
    before: DateTime<Utc>,
) -> Result<(Vec<InvoiceFacts>, HashMap<String, String>), ApiError> {
    let mirrored = state.store.stripe_invoices_before(before).await?;
    let (from_txns, mut customer_of) = stripe_invoices(txns);
    let mut out = Vec::new();
    for row in &mirrored {
        customer_of.insert(row.id.clone(), row.customer_id.clone());
        if let Some(f) = mirrored_facts(row) {
            out.push(f);
        }
    }
    out.extend(
        from_txns
            .into_iter()
            .filter(|f| !mirrored.iter().any(|m| m.id == f.id)),
    );
    Ok((out, customer_of))
}

/// Credit packs (paid in advance, outside invoices) and refunds, with each refund's reference:
/// the credit pack of its payment intent, else the customer's latest paid invoice before it.
fn payments(txns: &[Transaction]) -> (Vec<Payment>, Vec<Payment>) {
    let mut packs = Vec::new();
    let mut refunds = Vec::new();
    // Stripe reports a charge's refunded amount cumulatively: keep the largest per charge.
    let mut refunded: BTreeMap<String, (Payment, i64)> = BTreeMap::new();
    let mut latest_paid: HashMap<(&str, &str), &str> = HashMap::new();
    for t in txns {
        let Ok(currency) = Currency::parse(&t.currency) else {
            continue;
        };
        let reference = |t: &Transaction| {
            t.stripe_payment_intent
                .clone()
                .or_else(|| t.stripe_checkout_session.clone())
                .unwrap_or_else(|| t.id.clone())
        };
        match t.kind.as_str() {
            "credit_pack" => packs.push(Payment {
                reference: reference(t),
                at: t.occurred_at,
                currency,
                amount: t.amount,
            }),
            "subscription_payment" => {
                if let Some(inv) = t.stripe_invoice.as_deref() {
                    latest_paid.insert((t.customer_id.as_str(), t.currency.as_str()), inv);
                }
            }
            "refund" => {
                let pack = t.stripe_payment_intent.as_deref().and_then(|pi| {
                    packs
                        .iter()
                        .find(|p| p.reference == pi)
                        .map(|p| p.reference.clone())
                });
                let reference = pack
                    .or_else(|| {
                        latest_paid
                            .get(&(t.customer_id.as_str(), t.currency.as_str()))
                            .map(|s| (*s).to_owned())
                    })
                    .unwrap_or_else(|| reference(t));
                let charge = t.stripe_charge.clone().unwrap_or_else(|| t.id.clone());
                let p = Payment {
                    reference,
                    at: t.occurred_at,
                    currency,
                    amount: t.amount,
                };
                match refunded.get(&charge) {
                    Some((_, a)) if *a >= t.amount => {}
                    _ => {
                        refunded.insert(charge, (p, t.amount));
                    }
                }
            }
            _ => {}
        }
    }
    refunds.extend(refunded.into_values().map(|(p, _)| p));
    (packs, refunds)
}

fn attempts(txns: &[Transaction]) -> Vec<PaymentAttempt> {
    txns.iter()
        .filter(|t| matches!(t.kind.as_str(), "subscription_payment" | "payment_failed"))
        .filter_map(|t| {
            Some(PaymentAttempt {
                at: t.occurred_at,
                currency: Currency::parse(&t.currency).ok()?,
                amount: t.amount,
                succeeded: t.kind == "subscription_payment",
            })
        })
        .collect()
}

/// Tally's closed invoices with their usage lines net of the invoice's discount (each line's
/// share of it, rounded half away from zero).
async fn tally_invoices(state: &AppState, month: Month) -> Result<Vec<InvoiceFacts>, ApiError> {
    let rows = state.store.invoices_between(month.from, month.to).await?;
    Ok(rows
        .into_iter()
        .filter_map(|i| {
            let currency = Currency::parse(&i.currency).ok()?;
            let lines = i.body.get("lines").and_then(|l| l.as_array()).cloned();
            let usage: Vec<(String, i64)> = lines
                .unwrap_or_default()
                .iter()
                .filter(|l| l.get("kind").and_then(|k| k.as_str()) == Some("usage"))
                .filter_map(|l| {
                    let metric = l.get("metric")?.as_str()?.to_owned();
                    let amount = l.get("amount")?.as_i64()?;
                    let share = if i.discount > 0 && i.subtotal > 0 {
                        (Decimal::from(amount) * Decimal::from(i.discount)
                            / Decimal::from(i.subtotal))
                        .round_dp_with_strategy(
                            0,
                            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                        )
                        .try_into()
                        .unwrap_or(0i64)
                    } else {
                        0
                    };
                    Some((metric, amount.saturating_sub(share)))
                })
                .collect();
            Some(InvoiceFacts {
                id: i.id,
                currency,
                finalized_at: i.created_at,
                due_at: i.created_at,
                total: i.total,
                paid: 0,
                credited: 0,
                payment: PaymentState::Pending,
                usage_lines: usage,
                next_retry_at: None,
            })
        })
        .collect())
}

/// The figures of `month`.
pub async fn metrics(state: &AppState, month: Month) -> Result<BusinessMetrics, ApiError> {
    let now = state.clock.now();
    let as_of = month.to.min(now).max(month.from);
    // Stock figures at `as_of` count changes up to and including it; the movements' window is
    // half-open, so it ends just after.
    let end = if as_of < month.to {
        as_of + chrono::Duration::milliseconds(1)
    } else {
        month.to
    };
    let history = state.store.subscription_history(None).await?;
    let changes = changes(state, &history);
    let movements = business::mrr_movements(&changes, month.from, end);
    let rolling = business::mrr_movements(&changes, end - business::rolling_window(), end);
    let trials = trial_ends(state, &history);
    let window_from = end - business::rolling_window();
    let txns = state.store.transactions_before(end).await?;
    let (invoices, customer_of) = all_stripe_invoices(state, &txns, end).await?;
    let (packs, refunds) = payments(&txns);
    let revenue = business::revenue(
        &invoices,
        &packs,
        &refunds,
        &attempts(&txns),
        month.from,
        end,
    );
    let overdue = business::overdue_balance(&invoices, end);
    let usage = business::revenue(
        &tally_invoices(state, month).await?,
        &[],
        &[],
        &[],
        month.from,
        end,
    );
    let last_complete = if as_of < month.to {
        month.previous()
    } else {
        Some(month)
    };
    let last_usage = match last_complete {
        Some(m) if m == month => usage.clone(),
        Some(m) => business::revenue(
            &tally_invoices(state, m).await?,
            &[],
            &[],
            &[],
            m.from,
            m.to,
        ),
        None => BTreeMap::new(),
    };

    let mut currencies: Vec<Currency> = movements
        .keys()
        .chain(revenue.keys())
        .chain(usage.keys())
        .chain(overdue.keys())
        .copied()
        .collect();
    currencies.sort_by_key(|c| c.code());
    currencies.dedup();
    let mut out = Vec::new();
    for cur in currencies {
        let m = movements.get(&cur).cloned().unwrap_or_default();
        let r = revenue.get(&cur).cloned().unwrap_or_default();
        let u = usage.get(&cur).cloned().unwrap_or_default();
        let churn_rate = rolling
            .get(&cur)
            .and_then(business::MrrMovements::subscriber_churn_rate);
        let arpu = m.arpu();
        let ended: Vec<TrialEnd> = trials
            .iter()
            .filter(|(t, c)| *c == cur && t.at >= window_from && t.at < end)
            .map(|(t, _)| t.clone())
            .collect();
        let mut collection: BTreeMap<String, CountAmount> = ["pending", "succeeded", "failed"]
            .into_iter()
            .map(|k| (k.to_owned(), CountAmount::default()))
            .collect();
        for (k, (n, a)) in &r.collection {
            collection.insert(
                (*k).to_owned(),
                CountAmount {
                    count: *n,
                    amount: *a,
                },
            );
        }
        let failing = business::failing_invoices(&invoices)
            .into_iter()
            .filter_map(|(id, _)| {
                let inv = invoices.iter().find(|i| i.id == id)?;
                (inv.currency == cur).then(|| FailingInvoice {
                    invoice: id.to_owned(),
                    customer: customer_of.get(id).cloned().unwrap_or_default(),
                    amount_due: inv.total.saturating_sub(inv.paid).max(0),
                })
            })
            .collect();
        let last_usage_rate = last_usage.get(&cur).map_or(0, |x| x.usage_run_rate);
        out.push(CurrencyMetrics {
            currency: cur.code().to_ascii_lowercase(),
            committed_mrr: m.end,
            usage_run_rate: u.usage_run_rate,
            usage_by_metric: u.usage_by_metric.clone(),
            total_recurring_run_rate: m.end.saturating_add(last_usage_rate),
            usage_run_rate_month: last_complete.map(Month::label).unwrap_or_default(),
            mrr_movements: MovementsView {
                start: m.start,
                new: m.new,
                reactivation: m.reactivation,
                expansion: m.expansion,
                contraction: m.contraction,
                churn: m.churn,
                end: m.end,
            },
            subscribers: SubscribersView {
                start: m.subscribers_start,
                end: m.subscribers_end,
                gained: m.subscribers_gained,
                churned: m.subscribers_churned,
            },
            churned_revenue: m.churned_revenue(),
            gross_mrr_churn_rate: m.gross_mrr_churn_rate().map(|r| r.normalize()),
            subscriber_churn_rate: churn_rate.map(|r| r.normalize()),
            arpu,
            ltv: business::ltv(arpu, churn_rate),
            trial_conversion_rate: business::trial_conversion_rate(&ended, end)
                .map(|r| r.normalize()),
            trials_converted: ended.iter().filter(|t| t.converted).count() as u64,
            trials_canceled: ended.iter().filter(|t| !t.converted).count() as u64,
            gross_revenue: r.gross_revenue,
            overdue_balance: overdue.get(&cur).copied().unwrap_or(0),
            failed_payments: CountAmount {
                count: r.failed_payments,
                amount: r.failed_amount,
            },
            collection,
            failing_invoices: failing,
        });
    }
    Ok(BusinessMetrics {
        month: month.label(),
        from: month.from,
        to: month.to,
        as_of,
        currencies: out,
    })
}

/// The dashboard's chart: for each of the 12 months ending with `last`, per currency, the month's
/// gross revenue and the committed MRR at its end (or now, for the current month).
pub async fn twelve_months(
    state: &AppState,
    last: Month,
) -> Result<Vec<(Month, BTreeMap<Currency, (i64, i64)>)>, ApiError> {
    let now = state.clock.now();
    let history = state.store.subscription_history(None).await?;
    let changes = changes(state, &history);
    let mut months = vec![last];
    for _ in 0..11 {
        let Some(p) = months.last().and_then(|m| m.previous()) else {
            break;
        };
        months.push(p);
    }
    months.reverse();
    let txns = state
        .store
        .transactions_before(last.to.min(now + chrono::Duration::milliseconds(1)))
        .await?;
    let (invoices, _) = all_stripe_invoices(
        state,
        &txns,
        last.to.min(now + chrono::Duration::milliseconds(1)),
    )
    .await?;
    let (packs, refunds) = payments(&txns);
    let mut out = Vec::new();
    for m in months {
        let end = m.to.min(now + chrono::Duration::milliseconds(1));
        let revenue = if end > m.from {
            business::revenue(&invoices, &packs, &refunds, &[], m.from, end)
        } else {
            BTreeMap::new()
        };
        let mrr = business::committed_mrr_at(
            &changes,
            (end - chrono::Duration::milliseconds(1)).max(m.from),
        );
        let mut per: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
        for (c, r) in revenue {
            per.entry(c).or_default().0 = r.gross_revenue;
        }
        for (c, v) in mrr {
            per.entry(c).or_default().1 = v;
        }
        out.push((m, per));
    }
    Ok(out)
}
