//! The billing page's view: the figures of `GET /v1/customers/{id}/billing` (the same service
//! call), written for the session's locale.

use std::collections::HashMap;

use askama::Template;
use rust_decimal::Decimal;
use serde_json::Value;
use tally_core::money::Currency;
use tally_core::money_display::{format_money, format_quantity, Locale};
use tally_core::period::Interval;
use tally_store::PageSession;

use super::format::{date, period, segment};
use crate::error::ApiError;
use crate::service::customers::{self, InvoiceView};
use crate::service::usage::MetricUsage;
use crate::state::AppState;

/// Ledger entries shown.
const LEDGER_ROWS: usize = 10;

/// Usage at or above this share of its limit (or included quantity) is shown as a warning.
const WARN_PERCENT: Decimal = Decimal::from_parts(80, 0, 0, false, 0);
/// … and at or above this one as critical.
const CRIT_PERCENT: Decimal = Decimal::from_parts(95, 0, 0, false, 0);

#[derive(Template)]
#[template(path = "billing.html")]
pub struct BillingPage {
    lang: &'static str,
    customer_name: String,
    return_url: Option<String>,
    plan_name: Option<String>,
    interval: Option<String>,
    status: String,
    status_class: String,
    period: String,
    renewal: Option<String>,
    actions: Actions,
    meters: Vec<Meter>,
    upcoming: Option<Upcoming>,
    credit_balance: String,
    credit_balance_raw: String,
    ledger: Vec<LedgerRow>,
    invoices: Vec<InvoiceRow>,
    payments: Vec<PaymentRow>,
    /// A message after a return from Stripe or a change (`?done=…`).
    notice: Option<String>,
    /// Reload the page here shortly: Tally is waiting for Stripe's webhook of a payment just
    /// made.
    refresh: Option<String>,
}

/// The page's actions, shown when Stripe is configured: plans (with the monthly/yearly toggle),
/// credit packs and the customer portal. Stripe's pages open in the top window (they refuse
/// iframes).
#[derive(Default)]
pub struct Actions {
    /// `month` or `year`: the interval the plan cards show.
    pub interval: String,
    /// Links showing the cards in the other interval: (label, href, selected).
    pub toggle: Vec<(String, String, bool)>,
    pub plans: Vec<PlanCard>,
    /// Credit packs: (id, name, price, form action).
    pub packs: Vec<(String, String, String)>,
    /// The checkout form's action (plans without a Stripe subscription, and credit packs).
    pub checkout: String,
    /// The portal form's action, once the customer has a Stripe customer.
    pub portal: Option<String>,
}

impl Actions {
    pub fn any(&self) -> bool {
        !self.plans.is_empty() || !self.packs.is_empty() || self.portal.is_some()
    }
}

/// What a plan card offers.
pub enum PlanAction {
    /// The customer's plan and interval.
    Current,
    /// No Stripe subscription yet: Checkout (a form to the top window).
    Checkout { label: &'static str },
    /// A Stripe subscription: the confirmation page of an upgrade.
    Upgrade { href: String },
    /// A cheaper plan or shorter interval: the confirmation page of a change scheduled for the
    /// period's end.
    Downgrade { applies: String, href: String },
}

pub struct PlanCard {
    pub id: String,
    pub name: String,
    /// "€199.00 / month".
    pub price: String,
    /// "Save €398.00 a year" on yearly prices cheaper than twelve months.
    pub saving: Option<String>,
    pub action: PlanAction,
}

pub struct Meter {
    metric: String,
    name: String,
    used: String,
    used_raw: String,
    /// "of 1,000 included", "of 1,000 (limit)", or "(unlimited)".
    of: String,
    percent_text: Option<String>,
    /// 0–100, for `<progress>`.
    progress: Option<String>,
    /// `ok`, `warn` (≥ 80 %) or `crit` (≥ 95 %).
    level: &'static str,
    overage: Option<String>,
}

pub struct Line {
    description: String,
    amount: String,
}

pub struct Upcoming {
    lines: Vec<Line>,
    discount: Option<String>,
    total: String,
}

pub struct LedgerRow {
    date: String,
    kind: String,
    reason: Option<String>,
    amount: String,
    amount_raw: String,
    balance_after: String,
}

pub struct InvoiceRow {
    /// Tally's page of the invoice; none for a Stripe invoice Tally did not close.
    href: Option<String>,
    period: String,
    plan: String,
    total: String,
    /// The Stripe state of the invoice's usage push, in words, when it goes through Stripe.
    stripe_state: Option<&'static str>,
    /// Stripe's hosted page of the invoice (opened in the top window: Stripe refuses frames).
    stripe_href: Option<String>,
}

/// At most this many Stripe invoices without a Tally invoice (renewals, prorations, …).
const STRIPE_ONLY_ROWS: usize = 24;

/// What a Stripe invoice without a Tally invoice bills, from Stripe's `billing_reason`.
fn billing_reason_label(reason: Option<&str>) -> &'static str {
    match reason {
        Some("subscription_cycle") => "Renewal",
        Some("subscription_create") => "Subscription start",
        Some("subscription_update") => "Plan change (proration)",
        Some("subscription_threshold") => "Usage threshold",
        _ => "Invoice",
    }
}

/// A mirrored Stripe invoice's state as the customer reads it.
fn mirrored_state_label(
    i: &tally_store::StripeInvoiceRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> &'static str {
    match i.status.as_str() {
        "paid" => "Paid",
        "void" => "Voided",
        "uncollectible" => "Uncollectible",
        "open" if i.attempt_count > 0 => "Payment failed",
        "open" if i.due_date.is_some_and(|d| d < now) => "Overdue",
        "open" => "Open",
        _ => "Draft",
    }
}

/// The customer's Stripe invoices that no Tally invoice went onto (renewals of the plan,
/// prorations, …), finalized ones only (a draft is not the customer's yet), each with the
/// instant it is listed by.
async fn stripe_only_rows(
    state: &AppState,
    customer: &str,
    locale: Locale,
) -> Result<Vec<(chrono::DateTime<chrono::Utc>, InvoiceRow)>, ApiError> {
    let pushes = state.store.pushes_of_customer(customer).await?;
    let now = state.clock.now();
    let rows = state
        .store
        .stripe_invoices_of_customer(customer)
        .await?
        .into_iter()
        .filter(|i| i.status != "draft")
        .filter(|i| {
            !pushes.iter().any(|p| {
                p.renewal_invoice.as_deref() == Some(i.id.as_str())
                    || p.standalone_invoice.as_deref() == Some(i.id.as_str())
            })
        })
        .take(STRIPE_ONLY_ROWS)
        .map(|i| {
            let at = i.finalized_at.unwrap_or(i.created);
            let reason = billing_reason_label(i.billing_reason.as_deref());
            let row = InvoiceRow {
                href: None,
                period: date(at, locale),
                plan: match &i.number {
                    Some(n) => format!("{reason} · {n}"),
                    None => reason.to_owned(),
                },
                total: money(i.total, &i.currency, locale),
                stripe_state: Some(mirrored_state_label(&i, now)),
                stripe_href: i
                    .hosted_invoice_url
                    .clone()
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            };
            (at, row)
        })
        .collect();
    Ok(rows)
}

/// A usage push's state as the customer reads it.
fn stripe_state_label(state: &str) -> &'static str {
    match state {
        "pending" => "Pending",
        "sent" => "Sent",
        "paid" => "Paid",
        "failed" => "Payment failed",
        "voided" => "Voided",
        _ => "Not billed through Stripe",
    }
}

pub struct PaymentRow {
    date: String,
    status: String,
    amount: String,
}

#[derive(Template)]
#[template(path = "invoice.html")]
pub struct InvoicePage {
    lang: &'static str,
    back: String,
    id: String,
    period: String,
    plan: String,
    lines: Vec<Line>,
    discount: Option<String>,
    total: String,
}

fn locale_of(s: &PageSession) -> Locale {
    Locale::parse(&s.locale).unwrap_or_default()
}

fn money(minor: i64, currency: &str, locale: Locale) -> String {
    match Currency::parse(currency) {
        Ok(c) => format_money(minor, c, locale),
        Err(_) => format!("{minor} {currency}"),
    }
}

fn quantity(d: Decimal, locale: Locale) -> String {
    format_quantity(&d.normalize().to_string(), locale)
}

fn lines_of(lines: &Value, currency: &str, locale: Locale) -> Vec<Line> {
    lines
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| Line {
                    description: l
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    amount: money(
                        l.get("amount").and_then(Value::as_i64).unwrap_or(0),
                        currency,
                        locale,
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn meter(m: &MetricUsage, locale: Locale) -> Meter {
    let included = if m.included == "unlimited" {
        None
    } else {
        Some(format_quantity(&m.included, locale))
    };
    let of = match (&m.limit, &included) {
        (Some(l), _) => format!("of {} (limit)", quantity(*l, locale)),
        (None, Some(i)) => format!("of {i} included"),
        (None, None) => "(unlimited)".to_owned(),
    };
    let level = match m.percent {
        Some(p) if p >= CRIT_PERCENT => "crit",
        Some(p) if p >= WARN_PERCENT => "warn",
        _ => "ok",
    };
    let hundred = Decimal::ONE_HUNDRED;
    Meter {
        metric: m.metric.clone(),
        name: m.name.clone(),
        used: format!("{} {}", quantity(m.used, locale), m.unit),
        used_raw: m.used.normalize().to_string(),
        of,
        percent_text: m
            .percent
            .map(|p| format!("{} %", format_quantity(&p.normalize().to_string(), locale))),
        progress: m
            .percent
            .map(|p| p.clamp(Decimal::ZERO, hundred).normalize().to_string()),
        level,
        overage: (m.overage > Decimal::ZERO).then(|| quantity(m.overage, locale)),
    }
}

/// Payments, credit-pack purchases, failed payments and refunds of the customer, newest first
/// (the transactions recorded from Stripe's events).
fn payments(b: &customers::BillingSummary, locale: Locale) -> Vec<PaymentRow> {
    b.payments
        .iter()
        .map(|t| PaymentRow {
            date: date(t.occurred_at, locale),
            status: match (t.kind.as_str(), t.status.as_str()) {
                ("subscription_payment", _) => "Subscription payment".to_owned(),
                ("credit_pack", _) => "Credit purchase".to_owned(),
                ("payment_failed", _) => "Payment failed".to_owned(),
                ("refund", _) => "Refund".to_owned(),
                (k, s) => format!("{k} ({s})"),
            },
            amount: money(
                if t.kind == "refund" {
                    -t.amount
                } else {
                    t.amount
                },
                &t.currency,
                locale,
            ),
        })
        .collect()
}

/// Whether the customer pays Stripe for a subscription now (plan changes then go through
/// Stripe's subscription; otherwise through Checkout).
fn stripe_live(sub: Option<&tally_store::Subscription>) -> bool {
    sub.is_some_and(|s| {
        s.source == "stripe"
            && matches!(
                s.status.as_str(),
                "active" | "trialing" | "past_due" | "unpaid" | "paused"
            )
    })
}

/// A price per year, to compare plans of different intervals.
fn per_year(amount: i64, interval: Interval) -> i128 {
    i128::from(amount) * 12 / i128::from(interval.months().max(1))
}

/// The page's actions (see [`Actions`]); none without Stripe.
async fn actions(
    state: &AppState,
    token: &str,
    b: &customers::BillingSummary,
    shown: Option<&str>,
    locale: Locale,
) -> Result<Actions, ApiError> {
    if state.stripe.is_none() {
        return Ok(Actions::default());
    }
    let base = format!("/billing/s/{token}");
    let sub = b.subscription.as_ref();
    let current_interval = sub
        .and_then(|s| Interval::parse(&s.interval))
        .unwrap_or(Interval::Month);
    let interval = shown.and_then(Interval::parse).unwrap_or(current_interval);
    let live = stripe_live(sub);
    let current = sub.and_then(|s| {
        let p = state.catalog.plan(&s.plan)?;
        let i = Interval::parse(&s.interval)?;
        Some((p, i, p.prices.get(&i).map_or(0, |x| x.amount)))
    });
    let period_end = sub
        .and_then(|s| s.stripe.as_ref())
        .and_then(|j| j.get("current_period_end"))
        .and_then(Value::as_str)
        .and_then(crate::service::rfc3339::parse_utc)
        .unwrap_or(b.period.end);
    let mut plans = Vec::new();
    for p in state.catalog.plans() {
        let Some(price) = p.prices.get(&interval) else {
            continue;
        };
        let unit = if interval == Interval::Year {
            "year"
        } else {
            "month"
        };
        let saving = match (interval, p.prices.get(&Interval::Month)) {
            (Interval::Year, Some(m)) => {
                let twelve = m.amount.saturating_mul(12);
                (twelve > price.amount).then(|| {
                    format!(
                        "Save {} a year",
                        format_money(twelve - price.amount, p.currency, locale)
                    )
                })
            }
            _ => None,
        };
        let is_current = current
            .as_ref()
            .is_some_and(|(cp, ci, _)| cp.id == p.id && *ci == interval);
        let action = if is_current {
            PlanAction::Current
        } else if live {
            // The rule of the plan change: more per month, or a longer commitment, is an
            // upgrade (at once); anything else applies at the period's end.
            let cheaper = current.as_ref().is_some_and(|(_, ci, ca)| {
                !(per_year(price.amount, interval) > per_year(*ca, *ci)
                    || interval.months() > ci.months())
            });
            if cheaper {
                PlanAction::Downgrade {
                    applies: format!(
                        "Applies at the end of this period, {}",
                        date(period_end, locale)
                    ),
                    href: format!(
                        "{base}/change?plan={}&interval={}",
                        segment(&p.id),
                        interval.as_str()
                    ),
                }
            } else {
                PlanAction::Upgrade {
                    href: format!(
                        "{base}/change?plan={}&interval={}",
                        segment(&p.id),
                        interval.as_str()
                    ),
                }
            }
        } else {
            let paying = current.as_ref().map_or(0, |(_, ci, ca)| per_year(*ca, *ci));
            PlanAction::Checkout {
                label: if per_year(price.amount, interval) > paying {
                    "Upgrade"
                } else {
                    "Choose"
                },
            }
        };
        plans.push(PlanCard {
            id: p.id.clone(),
            name: p.name.clone(),
            price: format!(
                "{} / {unit}",
                format_money(price.amount, p.currency, locale)
            ),
            saving,
            action,
        });
    }
    let toggle = [Interval::Month, Interval::Year]
        .into_iter()
        .filter(|i| {
            state
                .catalog
                .plans()
                .iter()
                .any(|p| p.prices.contains_key(i))
        })
        .map(|i| {
            (
                if i == Interval::Year {
                    "Yearly"
                } else {
                    "Monthly"
                }
                .to_owned(),
                format!("{base}?interval={}", i.as_str()),
                i == interval,
            )
        })
        .collect();
    let packs = state
        .catalog
        .credit_packs()
        .iter()
        .map(|k| {
            (
                k.id.clone(),
                k.name.clone(),
                format_money(k.amount, k.currency, locale),
            )
        })
        .collect();
    let has_stripe_customer = state
        .store
        .stripe_customer(&b.customer.id)
        .await?
        .is_some_and(|l| l.stripe_id.is_some());
    Ok(Actions {
        interval: interval.as_str().to_owned(),
        toggle,
        plans,
        packs,
        checkout: format!("{base}/checkout"),
        portal: has_stripe_customer.then(|| format!("{base}/portal")),
    })
}

/// The message of `?done=…` and, while the payment just made is not known to Tally yet, where
/// to reload (at most a few times).
fn notice(
    b: &customers::BillingSummary,
    token: &str,
    query: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    let waited: u32 = query.get("wait").and_then(|w| w.parse().ok()).unwrap_or(0);
    let again = |q: &HashMap<String, String>| {
        let mut parts: Vec<String> = q
            .iter()
            .filter(|(k, _)| *k != "wait")
            .map(|(k, v)| format!("{}={}", segment(k), segment(v)))
            .collect();
        parts.sort();
        parts.push(format!("wait={}", waited + 1));
        format!("/billing/s/{token}?{}", parts.join("&"))
    };
    let done = query.get("done").map(String::as_str);
    match done {
        Some("subscribed") => {
            let plan = query.get("plan");
            let known = b
                .subscription
                .as_ref()
                .is_some_and(|s| s.source == "stripe" && Some(&s.plan) == plan);
            if known || waited >= 5 {
                (Some("Thank you: your new plan is active.".into()), None)
            } else {
                (
                    Some("Payment received: your new plan appears in a moment.".into()),
                    Some(again(query)),
                )
            }
        }
        Some("credits") => {
            let session = query.get("session");
            let known = b
                .payments
                .iter()
                .any(|t| t.kind == "credit_pack" && t.stripe_checkout_session.as_ref() == session);
            if known || waited >= 5 {
                (Some("Thank you: your credits were added.".into()), None)
            } else {
                (
                    Some("Payment received: your credits appear in a moment.".into()),
                    Some(again(query)),
                )
            }
        }
        Some("canceled") => (
            Some("Checkout was canceled: nothing was charged.".into()),
            None,
        ),
        Some("changed") => (Some("Your plan was changed.".into()), None),
        Some("portal") => (Some("Welcome back from the billing portal.".into()), None),
        _ => (None, None),
    }
}

fn invoice_href(token: &str, id: &str) -> String {
    format!("/billing/s/{token}/invoices/{}", segment(id))
}

/// The billing page of the session's customer.
pub async fn page(
    state: &AppState,
    session: &PageSession,
    token: &str,
    query: &HashMap<String, String>,
) -> Result<BillingPage, ApiError> {
    let locale = locale_of(session);
    let id = &session.customer_id;
    let b = customers::billing(state, id).await?;
    let account = state.store.credit_account(id, LEDGER_ROWS, None).await?;
    let plan = b.plan.as_deref().and_then(|p| state.catalog.plan(p));
    let status = b
        .subscription
        .as_ref()
        .map_or("none", |s| s.status.as_str())
        .to_owned();
    let cancels_at = b.subscription.as_ref().and_then(|s| {
        let j = s.stripe.as_ref()?;
        if j.get("cancel_at_period_end").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        j.get("current_period_end")
            .and_then(Value::as_str)
            .and_then(crate::service::rfc3339::parse_utc)
    });
    // A downgrade scheduled for the period end (Stripe's subscription schedule), as mirrored.
    let pending = b.subscription.as_ref().and_then(|s| {
        let p = s.stripe.as_ref()?.get("pending_change")?;
        let plan = p.get("plan").and_then(Value::as_str)?;
        let interval = p.get("interval").and_then(Value::as_str)?;
        let at = p
            .get("effective_at")
            .and_then(Value::as_str)
            .and_then(crate::service::rfc3339::parse_utc)?;
        let name = state.catalog.plan(plan).map_or(plan, |p| p.name.as_str());
        Some(format!(
            "Change pending: {name} ({interval}) from {}",
            date(at, locale)
        ))
    });
    let renewal = b.subscription.as_ref().map(|s| match s.status.as_str() {
        _ if pending.is_some() && s.status != "canceled" => pending.clone().unwrap_or_default(),
        _ if cancels_at.is_some() && s.status != "canceled" => format!(
            "Cancellation pending: ends on {}",
            date(cancels_at.unwrap_or(b.period.end), locale)
        ),
        "trialing" => format!("Trial · next invoice on {}", date(b.period.end, locale)),
        "canceled" => "Canceled".to_owned(),
        "past_due" | "unpaid" => "Payment overdue: please update your payment method".to_owned(),
        _ => format!("Renews on {}", date(b.period.end, locale)),
    });
    let balance_raw = b
        .credits
        .as_ref()
        .and_then(|c| c.get("balance"))
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned();
    let upcoming = b.upcoming_invoice.as_ref().map(|u| {
        let cur = u.invoice.currency.code();
        Upcoming {
            lines: lines_of(
                &serde_json::to_value(&u.invoice.lines).unwrap_or(Value::Null),
                cur,
                locale,
            ),
            discount: (u.invoice.discount != 0).then(|| money(-u.invoice.discount, cur, locale)),
            total: money(u.invoice.total, cur, locale),
        }
    });
    let mut invoices: Vec<(chrono::DateTime<chrono::Utc>, InvoiceRow)> = b
        .invoices
        .iter()
        .map(|i: &InvoiceView| {
            (
                i.period.end,
                InvoiceRow {
                    href: Some(invoice_href(token, &i.id)),
                    period: period(i.period.start, i.period.end, locale),
                    plan: state
                        .catalog
                        .plan(&i.plan)
                        .map_or_else(|| i.plan.clone(), |p| p.name.clone()),
                    total: money(i.total, &i.currency, locale),
                    stripe_state: i.stripe.as_ref().map(|s| stripe_state_label(&s.state)),
                    stripe_href: i
                        .stripe
                        .as_ref()
                        .and_then(|s| s.hosted_invoice_url.clone())
                        .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
                },
            )
        })
        .collect();
    invoices.extend(stripe_only_rows(state, id, locale).await?);
    // Newest first; a stable sort keeps Tally's own order among equal instants.
    invoices.sort_by_key(|r| std::cmp::Reverse(r.0));
    let invoices: Vec<InvoiceRow> = invoices.into_iter().map(|(_, r)| r).collect();
    let ledger = account
        .entries
        .iter()
        .map(|e| LedgerRow {
            date: date(e.created_at, locale),
            kind: e.kind.clone(),
            reason: e.reason.clone(),
            amount: {
                let q = quantity(e.amount, locale);
                if e.amount > Decimal::ZERO {
                    format!("+{q}")
                } else {
                    q
                }
            },
            amount_raw: e.amount.normalize().to_string(),
            balance_after: quantity(e.balance_after, locale),
        })
        .collect();
    let actions = actions(
        state,
        token,
        &b,
        query.get("interval").map(String::as_str),
        locale,
    )
    .await?;
    let (notice, refresh) = notice(&b, token, query);
    Ok(BillingPage {
        notice,
        refresh,
        lang: locale.tag(),
        customer_name: b
            .customer
            .name
            .clone()
            .unwrap_or_else(|| b.customer.id.clone()),
        return_url: session.return_url.clone(),
        plan_name: plan.map(|p| p.name.clone()).or(b.plan.clone()),
        interval: b.subscription.as_ref().map(|s| s.interval.clone()),
        status_class: status.clone(),
        status: status.replace('_', " "),
        period: period(b.period.start, b.period.end, locale),
        renewal,
        actions,
        meters: b.usage.metrics.iter().map(|m| meter(m, locale)).collect(),
        upcoming,
        credit_balance: format_quantity(&balance_raw, locale),
        credit_balance_raw: balance_raw,
        ledger,
        invoices,
        payments: payments(&b, locale),
    })
}

/// One closed invoice of the session's customer; `None` for any other id.
pub async fn invoice(
    state: &AppState,
    session: &PageSession,
    token: &str,
    invoice_id: &str,
) -> Result<Option<InvoicePage>, ApiError> {
    let locale = locale_of(session);
    let invoices = state.store.list_invoices(&session.customer_id).await?;
    let Some(i) = invoices.into_iter().find(|i| i.id == invoice_id) else {
        return Ok(None);
    };
    let v = InvoiceView::from(i);
    Ok(Some(InvoicePage {
        lang: locale.tag(),
        back: format!("/billing/s/{token}"),
        lines: lines_of(&v.lines, &v.currency, locale),
        discount: (v.discount != 0).then(|| money(-v.discount, &v.currency, locale)),
        total: money(v.total, &v.currency, locale),
        period: period(v.period.start, v.period.end, locale),
        plan: state
            .catalog
            .plan(&v.plan)
            .map_or_else(|| v.plan.clone(), |p| p.name.clone()),
        id: v.id,
    }))
}
