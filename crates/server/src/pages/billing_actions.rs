//! The billing page's actions, each through the service of its API route: Checkout for a plan
//! or a credit pack (`POST /billing/s/{token}/checkout`), an upgrade of a Stripe subscription
//! with Stripe's invoice preview first (`GET` then `POST /billing/s/{token}/change`), and the
//! customer portal (`POST /billing/s/{token}/portal`). Stripe's pages are reached by a `303`
//! the form opened in the top window; success and cancel come back to the page with `?done=…`.
//!
//! The session token in the path is the credential: another site cannot forge these forms
//! without it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use tally_core::money::Currency;
use tally_core::money_display::{format_money, Locale};
use tally_core::period::Interval;
use tally_store::{AuditContext, PageSession};

use super::format::{date, segment};
use super::{expired, failed, html, message};
use crate::error::ApiError;
use crate::service::checkout::{self, CheckoutInput, PortalInput};
use crate::service::plan_change::{self, ChangeInput};
use crate::service::{self as services};
use crate::state::AppState;

/// The routes (behind the pages' security headers).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/s/{token}/checkout", post(checkout))
        .route("/billing/s/{token}/change", get(confirm).post(change))
        .route("/billing/s/{token}/portal", post(portal))
}

/// Changes made from the page are audited as the page session's.
fn by(state: &AppState, s: &PageSession) -> AuditContext {
    AuditContext {
        actor: format!("page_session:{}", s.id),
        idempotency_key: None,
        at: state.clock.now(),
    }
}

async fn live(state: &AppState, token: &str) -> Result<PageSession, Response> {
    match services::pages::session(state, token).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(expired()),
        Err(e) => Err(failed(e)),
    }
}

/// The page's own address as browsers reach it (Stripe sends the customer back here).
fn page_url(state: &AppState, token: &str) -> String {
    format!("{}/billing/s/{token}", state.config.public_base())
}

/// A refusal from a service, shown as a page with its message.
fn refused(e: ApiError) -> Response {
    if e.status.is_server_error() {
        return failed(e);
    }
    message(e.status, "That did not work", &e.message)
}

async fn checkout(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match live(&state, &token).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let base = page_url(&state, &token);
    let cancel_url = Some(format!("{base}?done=canceled"));
    let input = if let Some(pack) = form.get("pack") {
        CheckoutInput {
            customer: session.customer_id.clone(),
            pack: Some(pack.clone()),
            success_url: Some(format!(
                "{base}?done=credits&session={{CHECKOUT_SESSION_ID}}"
            )),
            cancel_url,
            ..Default::default()
        }
    } else {
        let plan = form.get("plan").cloned().unwrap_or_default();
        let interval = form
            .get("interval")
            .cloned()
            .unwrap_or_else(|| "month".into());
        CheckoutInput {
            customer: session.customer_id.clone(),
            success_url: Some(format!(
                "{base}?done=subscribed&plan={}&session={{CHECKOUT_SESSION_ID}}",
                segment(&plan)
            )),
            plan: Some(plan),
            interval: Some(interval),
            cancel_url,
            ..Default::default()
        }
    };
    match checkout::create(&state, input, by(&state, &session)).await {
        Ok(v) => Redirect::to(&v.url).into_response(),
        Err(e) => refused(e),
    }
}

async fn portal(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let session = match live(&state, &token).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let input = PortalInput {
        customer: session.customer_id.clone(),
        return_url: Some(format!("{}?done=portal", page_url(&state, &token))),
    };
    match checkout::portal(&state, input).await {
        Ok(v) => Redirect::to(&v.url).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Template)]
#[template(path = "billing_change.html")]
struct ConfirmPage {
    lang: &'static str,
    back: String,
    action: String,
    plan: String,
    plan_name: String,
    interval: String,
    upgrade: bool,
    due_today: Option<String>,
    applies: String,
}

async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let session = match live(&state, &token).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let locale = Locale::parse(&session.locale).unwrap_or_default();
    let plan_id = q.get("plan").cloned().unwrap_or_default();
    let Some(plan) = state.catalog.plan(&plan_id) else {
        return super::not_found();
    };
    let Some(interval) = q.get("interval").and_then(|i| Interval::parse(i)) else {
        return super::not_found();
    };
    let p = match plan_change::preview(&state, &session.customer_id, &plan.id, interval).await {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    if p.current {
        return Redirect::to(&format!("/billing/s/{token}")).into_response();
    }
    let due_today = p.due_today.map(|d| match Currency::parse(&p.currency) {
        Ok(c) => format_money(d, c, locale),
        Err(_) => format!("{d} {}", p.currency),
    });
    html(
        StatusCode::OK,
        ConfirmPage {
            lang: locale.tag(),
            back: format!("/billing/s/{token}"),
            action: format!("/billing/s/{token}/change"),
            plan: plan.id.clone(),
            plan_name: plan.name.clone(),
            interval: interval.as_str().to_owned(),
            upgrade: p.upgrade,
            due_today,
            applies: p
                .period_end
                .map(|t| date(t, locale))
                .unwrap_or_else(|| "the end of this period".into()),
        }
        .render(),
    )
}

async fn change(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match live(&state, &token).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let input = ChangeInput {
        plan: form.get("plan").cloned().unwrap_or_default(),
        interval: form.get("interval").cloned(),
    };
    match plan_change::change(&state, &session.customer_id, input, by(&state, &session)).await {
        Ok(_) => Redirect::to(&format!("/billing/s/{token}?done=changed")).into_response(),
        Err(e) => refused(e),
    }
}
