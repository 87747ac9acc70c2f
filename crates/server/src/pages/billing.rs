//! The billing page's view: the figures of `GET /v1/customers/{id}/billing` (the same service
//! call), written for the session's locale.

use askama::Template;
use rust_decimal::Decimal;
use serde_json::Value;
use tally_core::money::Currency;
use tally_core::money_display::{format_money, format_quantity, Locale};
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
}

/// Links of the page's actions; each is `None` until its route exists (checkout, credit packs
/// and the customer portal go through Stripe, in the top window).
#[derive(Default)]
pub struct Actions {
    pub change_plan: Option<String>,
    pub buy_credits: Option<String>,
    pub portal: Option<String>,
}

impl Actions {
    pub fn any(&self) -> bool {
        self.change_plan.is_some() || self.buy_credits.is_some() || self.portal.is_some()
    }
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
    href: String,
    period: String,
    plan: String,
    total: String,
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

/// Payments and refunds of the customer, newest first: empty until the transactions service
/// records them (the page's payments section reads only from here).
async fn payments(_state: &AppState, _customer: &str, _locale: Locale) -> Vec<PaymentRow> {
    Vec::new()
}

/// The page's action links (see [`Actions`]).
fn actions(_state: &AppState, _session: &PageSession) -> Actions {
    Actions::default()
}

fn invoice_href(token: &str, id: &str) -> String {
    format!("/billing/s/{token}/invoices/{}", segment(id))
}

/// The billing page of the session's customer.
pub async fn page(
    state: &AppState,
    session: &PageSession,
    token: &str,
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
    let renewal = b.subscription.as_ref().map(|s| match s.status.as_str() {
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
    let invoices = b
        .invoices
        .iter()
        .map(|i: &InvoiceView| InvoiceRow {
            href: invoice_href(token, &i.id),
            period: period(i.period.start, i.period.end, locale),
            plan: state
                .catalog
                .plan(&i.plan)
                .map_or_else(|| i.plan.clone(), |p| p.name.clone()),
            total: money(i.total, &i.currency, locale),
        })
        .collect();
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
    Ok(BillingPage {
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
        actions: actions(state, session),
        meters: b.usage.metrics.iter().map(|m| meter(m, locale)).collect(),
        upcoming,
        credit_balance: format_quantity(&balance_raw, locale),
        credit_balance_raw: balance_raw,
        ledger,
        invoices,
        payments: payments(state, id, locale).await,
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
