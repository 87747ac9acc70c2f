//! The console's dashboard (business metrics with a 12-month revenue chart and the MRR
//! movements, drawn as SVG on the server) and its webhooks view (the Stripe inbox's lag and
//! failed events, each with a replay button). Both sit behind the console's session, like
//! every console page (see [`super::admin`]).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;
use tally_core::money::Currency;
use tally_core::money_display::{format_money, Locale};
use tally_store::{AuditContext, InboxFilter};

use super::admin::{csrf_ok, refused};
use super::chart;
use super::format::segment;
use super::html;
use crate::service::admin::AdminSession;
use crate::service::audit::{self, Target};
use crate::service::business::{self, CurrencyMetrics, Month};
use crate::state::AppState;

/// Failed inbox events listed.
const FAILED_ROWS: usize = 50;

/// The routes (mounted inside the console's signed-in router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/dashboard", get(dashboard))
        .route("/admin/webhooks", get(webhooks))
        .route("/admin/webhooks/{event}/replay", post(replay))
}

struct Figure {
    id: &'static str,
    label: &'static str,
    value: String,
}

struct CurrencyView {
    code: String,
    figures: Vec<Figure>,
    revenue_svg: String,
    movements_svg: String,
}

#[derive(Template)]
#[template(path = "admin_dashboard.html")]
struct DashboardPage {
    signed_in_csrf: Option<String>,
    month: String,
    previous: Option<String>,
    next: Option<String>,
    as_of: String,
    currencies: Vec<CurrencyView>,
}

#[derive(Deserialize)]
struct MonthQuery {
    month: Option<String>,
}

fn rate(r: Option<rust_decimal::Decimal>) -> String {
    r.map_or_else(
        || "n/a".to_owned(),
        |r| {
            let pct = (r * rust_decimal::Decimal::ONE_HUNDRED)
                .round_dp(2)
                .normalize();
            format!("{pct} %")
        },
    )
}

fn view(c: &CurrencyMetrics, chart_rows: Vec<(String, i64, i64)>) -> CurrencyView {
    let cur = Currency::parse(&c.currency).ok();
    let money = move |minor: i64| match cur {
        Some(cur) => format_money(minor, cur, Locale::En),
        None => format!("{minor} {}", c.currency),
    };
    let opt = |v: Option<i64>| v.map_or_else(|| "n/a".to_owned(), money);
    let m = &c.mrr_movements;
    let figures = vec![
        Figure {
            id: "committed-mrr",
            label: "Committed MRR",
            value: money(c.committed_mrr),
        },
        Figure {
            id: "usage-run-rate",
            label: "Usage run-rate (invoiced this month)",
            value: money(c.usage_run_rate),
        },
        Figure {
            id: "total-run-rate",
            label: "Total recurring run-rate (MRR + last complete month's usage)",
            value: money(c.total_recurring_run_rate),
        },
        Figure {
            id: "subscribers",
            label: "Paying subscribers",
            value: c.subscribers.end.to_string(),
        },
        Figure {
            id: "subscriber-churn",
            label: "Subscriber churn (30 days)",
            value: rate(c.subscriber_churn_rate),
        },
        Figure {
            id: "churned-revenue",
            label: "Churned revenue",
            value: money(c.churned_revenue),
        },
        Figure {
            id: "gross-mrr-churn",
            label: "Gross MRR churn rate",
            value: rate(c.gross_mrr_churn_rate),
        },
        Figure {
            id: "arpu",
            label: "ARPU",
            value: opt(c.arpu),
        },
        Figure {
            id: "ltv",
            label: "LTV",
            value: opt(c.ltv),
        },
        Figure {
            id: "trial-conversion",
            label: "Trial conversion (30 days)",
            value: rate(c.trial_conversion_rate),
        },
        Figure {
            id: "gross-revenue",
            label: "Gross revenue",
            value: money(c.gross_revenue),
        },
        Figure {
            id: "overdue",
            label: "Overdue balance",
            value: money(c.overdue_balance),
        },
        Figure {
            id: "failed-payments",
            label: "Failed payments",
            value: format!(
                "{} ({})",
                c.failed_payments.count,
                money(c.failed_payments.amount)
            ),
        },
    ];
    let revenue_svg = chart::revenue(
        &format!(
            "Gross revenue per month (bars) and committed MRR (line), {}",
            c.currency.to_uppercase()
        ),
        &chart_rows,
        money,
    );
    let movements_svg = chart::movements(
        &format!("MRR movements, {}", c.currency.to_uppercase()),
        &[
            ("start", m.start),
            ("new", m.new),
            ("reactivation", m.reactivation),
            ("expansion", m.expansion),
            ("contraction", -m.contraction),
            ("churn", -m.churn),
            ("end", m.end),
        ],
        money,
    );
    CurrencyView {
        code: c.currency.clone(),
        figures,
        revenue_svg,
        movements_svg,
    }
}

async fn dashboard(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Query(q): Query<MonthQuery>,
) -> Response {
    let month = match q.month.as_deref() {
        Some(m) => match Month::parse(m) {
            Some(m) => m,
            None => return super::message(StatusCode::BAD_REQUEST, "Bad month", "Use YYYY-MM."),
        },
        None => match Month::of(state.clock.now()) {
            Some(m) => m,
            None => return super::not_found(),
        },
    };
    let metrics = match business::metrics(&state, month).await {
        Ok(m) => m,
        Err(e) => return super::failed(e),
    };
    let twelve = match business::twelve_months(&state, month).await {
        Ok(t) => t,
        Err(e) => return super::failed(e),
    };
    let currencies = metrics
        .currencies
        .iter()
        .map(|c| {
            let rows = twelve
                .iter()
                .map(|(m, per)| {
                    let (rev, mrr) = Currency::parse(&c.currency)
                        .ok()
                        .and_then(|cur| per.get(&cur).copied())
                        .unwrap_or((0, 0));
                    (m.label(), rev, mrr)
                })
                .collect();
            view(c, rows)
        })
        .collect();
    let now_month = Month::of(state.clock.now());
    html(
        StatusCode::OK,
        DashboardPage {
            signed_in_csrf: Some(session.csrf.clone()),
            month: month.label(),
            previous: month.previous().map(Month::label),
            next: Month::of(month.to)
                .filter(|n| now_month.is_some_and(|c| n.from <= c.from))
                .map(Month::label),
            as_of: metrics.as_of.format("%Y-%m-%d %H:%M UTC").to_string(),
            currencies,
        }
        .render(),
    )
}

struct FailedRow {
    id: String,
    kind: String,
    status: String,
    attempts: i32,
    reason: String,
    received: String,
    replay: String,
}

#[derive(Template)]
#[template(path = "admin_webhooks.html")]
struct WebhooksPage {
    signed_in_csrf: Option<String>,
    csrf: String,
    notice: Option<String>,
    counts: Vec<(String, usize)>,
    pending: usize,
    lag: String,
    failed: Vec<FailedRow>,
    endpoints: Vec<(String, String, String)>,
}

#[derive(Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

async fn webhooks(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let now = state.clock.now();
    let recent = match state
        .store
        .inbox_list(InboxFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return super::failed(e.into()),
    };
    let failed = match state
        .store
        .inbox_list(InboxFilter {
            failed: true,
            limit: FAILED_ROWS,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return super::failed(e.into()),
    };
    let mut counts: Vec<(String, usize)> = ["pending", "applied", "ignored", "parked"]
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                recent.iter().filter(|e| e.status == *s).count(),
            )
        })
        .collect();
    counts.retain(|(_, n)| *n > 0);
    let oldest = recent
        .iter()
        .filter(|e| e.status == "pending")
        .map(|e| e.received_at)
        .min();
    let lag = oldest.map_or_else(
        || "none pending".to_owned(),
        |t| format!("{} s", (now - t).num_seconds().max(0)),
    );
    let endpoints = match state.store.list_webhook_endpoints().await {
        Ok(list) => list
            .into_iter()
            .map(|e| {
                (
                    e.url,
                    e.status,
                    e.failing_since.map_or_else(
                        || "healthy".to_owned(),
                        |t| format!("failing since {}", t.format("%Y-%m-%d %H:%M")),
                    ),
                )
            })
            .collect(),
        Err(e) => return super::failed(e.into()),
    };
    html(
        StatusCode::OK,
        WebhooksPage {
            signed_in_csrf: Some(session.csrf.clone()),
            csrf: session.csrf.clone(),
            notice: q
                .done
                .filter(|d| d == "replayed")
                .map(|_| "Event queued again: the worker processes it within seconds.".to_owned()),
            pending: recent.iter().filter(|e| e.status == "pending").count(),
            counts,
            endpoints,
            lag,
            failed: failed
                .into_iter()
                .map(|e| FailedRow {
                    replay: format!("/admin/webhooks/{}/replay", segment(&e.event_id)),
                    reason: e.last_error.clone().unwrap_or_default(),
                    received: e.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    id: e.event_id,
                    kind: e.event_type,
                    status: e.status,
                    attempts: e.attempts,
                })
                .collect(),
        }
        .render(),
    )
}

/// Makes one inbox event pending again (the existing replay of `tally webhooks replay`),
/// audited with the admin's key.
async fn replay(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Path(event): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return refused("The form's CSRF token is missing or wrong.");
    }
    let now = state.clock.now();
    match state.store.inbox_get(&event).await {
        Ok(Some(_)) => {}
        Ok(None) => return super::not_found(),
        Err(e) => return super::failed(e.into()),
    }
    if let Err(e) = state.store.inbox_replay(Some(&event), None, now).await {
        return super::failed(e.into());
    }
    let by = AuditContext {
        actor: session.key_id.clone(),
        idempotency_key: None,
        at: now,
    };
    if let Err(e) = audit::record(
        state.store.as_ref(),
        by,
        "stripe_event.replayed",
        Target {
            kind: "stripe_event",
            id: &event,
            customer: None,
        },
        None,
        None,
    )
    .await
    {
        return super::failed(e);
    }
    Redirect::to("/admin/webhooks?done=replayed").into_response()
}
