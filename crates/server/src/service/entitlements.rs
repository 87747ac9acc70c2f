//! Entitlement checks: may a customer use a feature, or this much more of a metric — and the
//! usage-threshold notifications (80 %, 95 %, 100 % by default) queued the first time a check
//! sees usage at or past each threshold in a period.
//!
//! The plan is the subscription's; without one (or when it is canceled) the catalog's free plan;
//! a subscription past due for longer than `--past-due-grace` (counted from the first failed
//! payment of the episode), or unpaid, gets the free plan's entitlements. Without any plan the check is denied with reason `no_subscription`.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::catalog::{Allowance, Metric, MetricKind, Plan};
use tally_core::decimal;
use tally_core::entitlement::{check_feature, check_metric, percent_of, reaches, MetricCheck};
use tally_core::period::Period;
use tally_store::{Customer, Subscription, UsageNotification};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::credits::parse_amount;
use super::customers::check_id;
use super::{usage, worker};
use crate::error::ApiError;
use crate::state::AppState;

/// Why the plan in force is not the subscription's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Restriction {
    /// Past due beyond the grace period: the free plan's entitlements apply.
    PastDue,
    /// Stripe's retries are exhausted and the subscription is `unpaid`: the free plan's
    /// entitlements apply at once, until an invoice is paid or the customer subscribes again.
    Unpaid,
}

/// The plan whose entitlements apply at `now`, and why it differs from the subscription's.
pub fn effective_plan(
    state: &AppState,
    sub: Option<&Subscription>,
    now: DateTime<Utc>,
) -> Option<(Plan, Option<Restriction>)> {
    if let Some(s) = sub {
        let grace = chrono::Duration::from_std(state.config.past_due_grace)
            .unwrap_or(chrono::Duration::MAX);
        // The grace period counts from the first failed payment of the dunning episode (kept
        // across later failures, restarts and clock moves); rows without one count from their
        // last change.
        let since = s.past_due_since.unwrap_or(s.updated_at);
        let restriction = match s.status.as_str() {
            "unpaid" => Some(Restriction::Unpaid),
            "past_due" if now - since > grace => Some(Restriction::PastDue),
            _ => None,
        };
        if let Some(r) = restriction {
            let free = state.catalog.free_plan.as_deref()?;
            return state.catalog.plan(free).map(|p| (p.clone(), Some(r)));
        }
    }
    usage::billed_plan(&state.catalog, sub).map(|b| (b.plan, None))
}

/// Body of `POST /v1/entitlements/check`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    pub customer: String,
    /// A boolean or numeric feature of the plan.
    pub feature: Option<String>,
    /// A metric of the catalog (with `quantity`, default 0: "am I within the limit now").
    pub metric: Option<String>,
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Value>,
}

/// The answer of `POST /v1/entitlements/check`. Decimals are strings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    pub allowed: bool,
    /// feature_enabled, feature_disabled, feature_not_in_plan, unlimited, within_limit,
    /// limit_exceeded, soft_limit_exceeded (allowed; the excess is billed as overage),
    /// overage (no limit; allowed, usage beyond the included quantity is billed),
    /// insufficient_credits, no_subscription.
    pub reason: String,
    #[schema(value_type = Option<String>)]
    pub used: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    /// ok, warning or at_limit.
    pub level: String,
    /// Whether usage after the request goes beyond the included quantity into a billed overage
    /// charge (a soft limit, or no limit at all).
    pub overage: bool,
    /// Credits the request costs, when the metric is paid with credits.
    #[schema(value_type = Option<String>)]
    pub credits_required: Option<Decimal>,
    /// The customer's credit balance, when the metric is paid with credits.
    #[schema(value_type = Option<String>)]
    pub credit_balance: Option<Decimal>,
    /// The plan whose entitlements applied.
    pub plan: Option<String>,
    /// `past_due` (beyond the grace period) or `unpaid` when the free plan's entitlements apply
    /// because of an overdue payment.
    pub restricted: Option<Restriction>,
}

fn snake<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `POST /v1/entitlements/check` at the current time.
pub async fn check(state: &AppState, input: CheckInput) -> Result<CheckResult, ApiError> {
    check_at(state, input, state.clock.now()).await
}

/// An entitlement check at `now`.
pub async fn check_at(
    state: &AppState,
    input: CheckInput,
    now: DateTime<Utc>,
) -> Result<CheckResult, ApiError> {
    check_id(&input.customer).map_err(|e| e.with_param("customer"))?;
    let quantity = match &input.quantity {
        Some(q) => parse_amount(q, "quantity")?,
        None => Decimal::ZERO,
    };
    if quantity < Decimal::ZERO {
        return Err(
            ApiError::unprocessable("invalid_quantity", "quantity must not be negative")
                .with_param("quantity"),
        );
    }
    let metric = match (&input.feature, &input.metric) {
        (Some(_), None) if input.quantity.is_none() => None,
        (None, Some(m)) => Some(state.catalog.metric(m).ok_or_else(|| {
            ApiError::unprocessable("unknown_metric", format!("the catalog has no metric {m:?}"))
                .with_param("metric")
        })?),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either feature, or metric with an optional quantity",
            ))
        }
    };
    let (customer, sub) = super::credits::customer_and_subscription(state, &input.customer).await?;
    let Some((plan, restricted)) = effective_plan(state, sub.as_ref(), now) else {
        return Ok(CheckResult {
            allowed: false,
            reason: "no_subscription".into(),
            used: None,
            limit: None,
            remaining: None,
            percent: None,
            level: "ok".into(),
            overage: false,
            credits_required: None,
            credit_balance: None,
            plan: None,
            restricted: None,
        });
    };
    let Some(metric) = metric else {
        let feature = input.feature.as_deref().unwrap_or_default();
        let d = check_feature(&plan, feature);
        return Ok(CheckResult {
            allowed: d.allowed,
            reason: snake(d.reason),
            used: None,
            limit: d.limit,
            remaining: d.remaining,
            percent: None,
            level: snake(d.level),
            overage: false,
            credits_required: None,
            credit_balance: None,
            plan: Some(plan.id.clone()),
            restricted,
        });
    };
    let period = customer.allowance_period(now);
    let used = used_of(state, &customer, period, metric).await?;
    let credit_balance = match metric.credit_cost {
        Some(_) => Some(super::credits::balance(state, &customer, now).await?),
        None => None,
    };
    exact_enough(&plan, metric, used, quantity)?;
    let d = check_metric(&MetricCheck {
        plan: &plan,
        metric,
        used,
        quantity,
        credit_balance: credit_balance.unwrap_or(Decimal::ZERO),
    });
    record_thresholds(
        state,
        &customer.id,
        &plan,
        &metric.id,
        period.start,
        used,
        now,
    )
    .await?;
    Ok(CheckResult {
        allowed: d.allowed,
        reason: snake(d.reason),
        used: d.used.map(|u| u.normalize()),
        limit: d.limit.map(|l| l.normalize()),
        remaining: d.remaining.map(|r| r.normalize()),
        percent: d.percent.map(|p| p.normalize()),
        level: snake(d.level),
        overage: d.overage,
        credits_required: d.credits_required.map(|c| c.normalize()),
        credit_balance: credit_balance.map(|b| b.normalize()),
        plan: Some(plan.id.clone()),
        restricted,
    })
}

/// How many periods back a gauge's last level is looked for (as in usage reports).
const GAUGE_LOOKBACK_PERIODS: usize = 24;

/// One metric's usage in `period`: its on-time aggregate, or for a gauge without an event this
/// period, its last level from an earlier period. Reads only what this metric needs.
async fn used_of(
    state: &AppState,
    customer: &Customer,
    period: Period,
    metric: &Metric,
) -> Result<Decimal, ApiError> {
    let on_time = |rows: &[tally_store::UsageRollup]| {
        rows.iter()
            .find(|r| r.metric == metric.id && !r.is_adjustment())
            .map(|r| usage::aggregate(metric, r))
    };
    if let Some(v) = on_time(&state.store.usage(&customer.id, period.start).await?) {
        return Ok(v);
    }
    if metric.kind != MetricKind::Gauge {
        return Ok(Decimal::ZERO);
    }
    let mut start = period.start;
    for _ in 0..GAUGE_LOOKBACK_PERIODS {
        let prev = customer.allowance_period(start - chrono::Duration::milliseconds(1));
        if prev.start >= start {
            break;
        }
        start = prev.start;
        if let Some(v) = on_time(&state.store.usage(&customer.id, start).await?) {
            return Ok(v);
        }
    }
    Ok(Decimal::ZERO)
}

/// Answers `422 usage_out_of_range` when a figure of the check (usage after the request, the
/// credits it needs, the percentage, what remains) cannot be computed exactly, so the decision never rests on a rounded
/// or saturated number.
fn exact_enough(
    plan: &Plan,
    metric: &Metric,
    used: Decimal,
    quantity: Decimal,
) -> Result<(), ApiError> {
    let out = || usage::out_of_range(&metric.id);
    decimal::add(used, quantity).ok_or_else(out)?;
    if let Some(cost) = metric.credit_cost {
        decimal::mul(cost, quantity).ok_or_else(out)?;
    }
    if let Some(r) = reference(plan, &metric.id) {
        percent_of(used, r).ok_or_else(out)?;
    }
    if let Some(l) = plan.metrics.get(&metric.id).and_then(|pm| pm.limit) {
        decimal::sub(l.quantity, used).ok_or_else(out)?;
    }
    Ok(())
}

/// The quantity percentages refer to: the limit, or a finite included quantity.
fn reference(plan: &Plan, metric: &str) -> Option<Decimal> {
    let pm = plan.metrics.get(metric)?;
    pm.limit
        .map(|l| l.quantity)
        .or(match pm.included {
            Allowance::Quantity(q) if q > Decimal::ZERO => Some(q),
            _ => None,
        })
        .filter(|r| *r > Decimal::ZERO)
}

/// Queues one notification per threshold that `used` has reached in the period (once per
/// customer, metric, period and threshold; the outbox's unique key makes it exactly once across
/// processes).
pub async fn record_thresholds(
    state: &AppState,
    customer: &str,
    plan: &Plan,
    metric: &str,
    period_start: DateTime<Utc>,
    used: Decimal,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let Some(limit) = reference(plan, metric) else {
        return Ok(());
    };
    let Some(pm) = plan.metrics.get(metric) else {
        return Ok(());
    };
    for t in &pm.warn_at_percent {
        // Compared exactly and without overflow, whatever the usage.
        if !reaches(used, limit, *t) {
            break;
        }
        let marker = (
            customer.to_owned(),
            metric.to_owned(),
            period_start.timestamp_millis(),
            *t,
        );
        let known = state
            .credits
            .notified
            .lock()
            .is_ok_and(|n| n.contains(&marker));
        if known {
            continue;
        }
        state
            .store
            .record_notification(UsageNotification {
                id: format!(
                    "ntf_{}_{}_{}_{}",
                    customer,
                    metric,
                    period_start.timestamp_millis(),
                    t
                ),
                customer_id: customer.to_owned(),
                metric: metric.to_owned(),
                period_start,
                threshold: *t,
                used: used.normalize(),
                limit: limit.normalize(),
                created_at: now,
                delivered_at: None,
            })
            .await?;
        if let Ok(mut n) = state.credits.notified.lock() {
            if n.len() > 1_000_000 {
                n.clear();
            }
            n.insert(marker);
        }
    }
    Ok(())
}

/// How often usage changed by ingestion is compared with the thresholds.
pub const NOTIFY_EVERY: Duration = Duration::from_secs(1);

/// The `(customer, metric)` of a batch's events whose metric has a limit or an included quantity
/// on some plan (the only ones with thresholds).
pub fn touched<'b>(
    state: &AppState,
    usage: &'b [(Cow<'b, str>, &'b str)],
) -> Vec<(&'b str, &'b str)> {
    // Whether a metric has thresholds is asked once per metric of the batch, not per event.
    let mut known: Vec<(&str, bool)> = Vec::new();
    let mut out = Vec::new();
    for (customer, metric) in usage {
        let has = match known.iter().find(|(m, _)| m == metric) {
            Some((_, has)) => *has,
            None => {
                let has = state
                    .catalog
                    .plans()
                    .iter()
                    .any(|p| reference(p, metric).is_some());
                known.push((metric, has));
                has
            }
        };
        if has {
            out.push((&**customer, *metric));
        }
    }
    out
}

/// Metrics whose usage changed, by position in the catalog's metrics: a bit each for the first
/// 64, a list beyond (marking one is then a bit operation, not a comparison of names).
#[derive(Debug, Default)]
pub struct ChangedMetrics {
    first: u64,
    more: Vec<usize>,
}

impl ChangedMetrics {
    fn insert(&mut self, i: usize) {
        if i < 64 {
            self.first |= 1 << i;
        } else if !self.more.contains(&i) {
            self.more.push(i);
        }
    }

    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64)
            .filter(|b| self.first & (1 << b) != 0)
            .chain(self.more.iter().copied())
    }
}

/// Marks usage as changed; the notifier compares it with the thresholds within [`NOTIFY_EVERY`].
/// Metrics the catalog does not have are ignored (they have no thresholds).
pub fn usage_changed(state: &AppState, touched: &[(&str, &str)]) {
    if touched.is_empty() {
        return;
    }
    let metrics = state.catalog.metrics();
    // A batch nearly always names one metric: its position is looked up once.
    let mut last: Option<(&str, usize)> = None;
    if let Ok(mut d) = state.credits.dirty.lock() {
        for (customer, metric) in touched {
            let i = match last {
                Some((m, i)) if std::ptr::eq(m, *metric) || m == *metric => i,
                _ => match metrics.iter().position(|m| m.id == *metric) {
                    Some(i) => {
                        last = Some((metric, i));
                        i
                    }
                    None => continue,
                },
            };
            // Copies the customer's id only the first time it is marked between two rounds of
            // the notifier.
            match d.get_mut(*customer) {
                Some(changed) => changed.insert(i),
                None => {
                    let mut changed = ChangedMetrics::default();
                    changed.insert(i);
                    d.insert((*customer).to_owned(), changed);
                }
            }
        }
    }
}

/// Queues the threshold notifications of every `(customer, metric)` whose usage changed.
///
/// Each customer is its own item (see [`worker::run_item`]): one that fails is logged, counted
/// and skipped, and the others are notified all the same. Answers how many `(customer, metric)`
/// were looked at.
pub async fn notify_changed(state: &AppState, now: DateTime<Utc>) -> usize {
    let by_customer: std::collections::BTreeMap<String, ChangedMetrics> =
        match state.credits.dirty.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => return 0,
        };
    let n = by_customer.values().map(|m| m.positions().count()).sum();
    for (customer, changed) in by_customer {
        let work = notify_customer(state, &customer, &changed, now);
        worker::run_item(state, worker::NOTIFIER, &customer, work).await;
    }
    n
}

/// [`notify_changed`] of one customer.
async fn notify_customer(
    state: &AppState,
    customer: &str,
    changed: &ChangedMetrics,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let catalog = state.catalog.metrics();
    let (c, sub) = super::credits::customer_and_subscription(state, customer).await?;
    let Some((plan, _)) = effective_plan(state, sub.as_ref(), now) else {
        return Ok(());
    };
    let period = c.allowance_period(now);
    let usage = usage::period_usage(state, &c, period).await?;
    for i in changed.positions() {
        let Some(m) = catalog.get(i).map(|m| &m.id) else {
            continue;
        };
        let used = usage.used.get(m).copied().unwrap_or(Decimal::ZERO);
        record_thresholds(state, &c.id, &plan, m, period.start, used, now).await?;
    }
    Ok(())
}

/// Runs [`notify_changed`] every [`NOTIFY_EVERY`] until `stop` turns true. A round that panics
/// outside any customer's item is logged and counted; the next round runs all the same.
pub fn spawn_notifier(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(NOTIFY_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let round = async { Ok(notify_changed(&state, state.clock.now()).await) };
            worker::run_item(&state, worker::NOTIFIER, "round", round).await;
        }
    });
}
