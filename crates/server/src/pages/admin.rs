//! The admin console at `/admin`: sign in with an admin API key (exchanged for an HttpOnly,
//! SameSite=Strict session cookie), customers with search and filters, and a customer's detail
//! with a manual credit adjustment and a link to the customer's billing page.
//!
//! Every `POST` but sign-in needs the session's CSRF token in its form; every `POST` is refused
//! when the browser says it comes from another site (`Origin` or `Sec-Fetch-Site`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use rand::RngCore;
use serde::Deserialize;
use serde_json::Value;
use tally_store::{AuditContext, AuditFilter};

use super::format::segment;
use super::html;
use crate::service::admin::AdminSession;
use crate::service::credits::{self, Applied, CreditFailure, GrantInput};
use crate::service::{customers, keys, pages};
use crate::state::AppState;

const COOKIE: &str = "tally_admin";
/// Customers scanned for one list page, and rows shown.
const SCAN_LIMIT: usize = 10_000;
const ROWS: usize = 200;

/// The console's routes.
pub fn routes(state: AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/customers") }))
        .route("/admin/customers", get(customers_page))
        .route("/admin/customers/{id}", get(customer_page))
        .route("/admin/customers/{id}/credits", post(adjust_credits))
        .route(
            "/admin/customers/{id}/billing-page",
            post(open_billing_page),
        )
        .route("/admin/sign-out", post(sign_out))
        .merge(super::admin_ops::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/admin/sign-in", get(sign_in_form).post(sign_in))
        .route("/admin/sign-in/{code}", get(sign_in_link))
        .merge(signed_in)
        .route_layer(middleware::from_fn_with_state(state, same_site_posts))
}

/// The session's token, found in the request's cookie.
#[derive(Clone)]
struct Token(String);

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn to_sign_in() -> Response {
    Redirect::to("/admin/sign-in").into_response()
}

pub(super) fn refused(text: &str) -> Response {
    super::message(StatusCode::FORBIDDEN, "Refused", text)
}

/// Pages of the console need a live session; without one they redirect to sign-in.
async fn require_session(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = cookie_token(req.headers()) else {
        return to_sign_in();
    };
    let Some(session) = state.admin_sessions.touch(&token, state.clock.now()) else {
        return to_sign_in();
    };
    req.extensions_mut().insert(session);
    req.extensions_mut().insert(Token(token));
    next.run(req).await
}

/// A `POST` a browser marks as coming from another site is refused, whatever it carries.
async fn same_site_posts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let h = req.headers();
        let base = state.config.public_base();
        let origin_ok = h
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|o| o == base);
        let site_ok = h
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|s| s == "same-origin" || s == "none");
        if !(origin_ok && site_ok) {
            return refused("This form must be sent from Tally's own pages.");
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(super) fn csrf_ok(session: &AdminSession, form: &HashMap<String, String>) -> bool {
    form.get("csrf").is_some_and(|c| {
        c.len() == session.csrf.len()
            && c.bytes()
                .zip(session.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[derive(Template)]
#[template(path = "admin_sign_in.html")]
struct SignInPage {
    signed_in_csrf: Option<String>,
    error: Option<String>,
}

async fn sign_in_form() -> Response {
    html(
        StatusCode::OK,
        SignInPage {
            signed_in_csrf: None,
            error: None,
        }
        .render(),
    )
}

#[derive(Deserialize)]
struct SignInForm {
    key: String,
}

async fn sign_in(State(state): State<AppState>, Form(f): Form<SignInForm>) -> Response {
    let refuse = |error: &str| {
        html(
            StatusCode::UNAUTHORIZED,
            SignInPage {
                signed_in_csrf: None,
                error: Some(error.to_owned()),
            }
            .render(),
        )
    };
    let bearer = format!("Bearer {}", f.key.trim());
    let Ok(caller) = keys::authenticate(&state, Some(&bearer)).await else {
        return refuse("That is not a valid API key.");
    };
    let Some(token) = state.admin_sessions.start(&caller, state.clock.now()) else {
        return refuse("The console needs an admin key.");
    };
    let secure = if state.config.public_base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict{secure}");
    let mut res = Redirect::to("/admin/customers").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The session cookie of a new session.
fn session_cookie(state: &AppState, token: &str) -> Option<HeaderValue> {
    let secure = if state.config.public_base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// A one-time sign-in link (see `Sessions::link`): a session cookie and the console, or the
/// sign-in form for a used, expired or unknown link.
async fn sign_in_link(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    let Some(token) = state.admin_sessions.redeem_link(&code, state.clock.now()) else {
        return Redirect::to("/admin/sign-in").into_response();
    };
    let mut res = Redirect::to("/admin/dashboard").into_response();
    if let Some(v) = session_cookie(&state, &token) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn sign_out(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Extension(Token(token)): Extension<Token>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return refused("The form's CSRF token is missing or wrong.");
    }
    state.admin_sessions.end(&token);
    let mut res = to_sign_in();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tally_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

struct CustomerRow {
    id: String,
    href: String,
    name: Option<String>,
    email: String,
    plan: String,
    status: String,
}

#[derive(Template)]
#[template(path = "admin_customers.html")]
struct CustomersPage {
    signed_in_csrf: Option<String>,
    q: String,
    plan: String,
    status: String,
    plans: Vec<(String, String)>,
    statuses: Vec<String>,
    rows: Vec<CustomerRow>,
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    plan: Option<String>,
    status: Option<String>,
}

async fn customers_page(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Query(q): Query<ListQuery>,
) -> Response {
    let needle = q.q.clone().unwrap_or_default().trim().to_lowercase();
    let plan = q.plan.clone().unwrap_or_default();
    let status = q.status.clone().unwrap_or_default();
    let subs: HashMap<String, tally_store::Subscription> =
        match state.store.list_subscriptions().await {
            Ok(s) => s.into_iter().map(|s| (s.customer_id.clone(), s)).collect(),
            Err(e) => return super::failed(e.into()),
        };
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    let mut scanned = 0;
    while scanned < SCAN_LIMIT && rows.len() < ROWS {
        let page = match state
            .store
            .list_customers_after(after.as_deref(), 500)
            .await
        {
            Ok(p) => p,
            Err(e) => return super::failed(e.into()),
        };
        if page.is_empty() {
            break;
        }
        scanned += page.len();
        after = page.last().map(|c| c.id.clone());
        for c in page {
            let sub = subs.get(&c.id);
            let matches_text = needle.is_empty()
                || c.id.to_lowercase().contains(&needle)
                || c.email
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&needle)
                || c.name
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&needle);
            let matches_plan = plan.is_empty() || sub.is_some_and(|s| s.plan == plan);
            let matches_status = status.is_empty() || sub.is_some_and(|s| s.status == status);
            if matches_text && matches_plan && matches_status && rows.len() < ROWS {
                rows.push(CustomerRow {
                    href: format!("/admin/customers/{}", segment(&c.id)),
                    plan: sub.map_or_else(|| "—".to_owned(), |s| s.plan.clone()),
                    status: sub.map_or_else(|| "—".to_owned(), |s| s.status.clone()),
                    email: c.email.clone().unwrap_or_default(),
                    name: c.name.clone(),
                    id: c.id,
                });
            }
        }
    }
    html(
        StatusCode::OK,
        CustomersPage {
            signed_in_csrf: Some(session.csrf.clone()),
            q: q.q.unwrap_or_default(),
            plans: state
                .catalog
                .plans()
                .iter()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect(),
            statuses: [
                "active", "trialing", "past_due", "unpaid", "canceled", "paused",
            ]
            .map(str::to_owned)
            .to_vec(),
            plan,
            status,
            rows,
        }
        .render(),
    )
}

#[derive(Template)]
#[template(path = "admin_customer.html")]
struct CustomerPage {
    signed_in_csrf: Option<String>,
    csrf: String,
    nonce: String,
    notice: Option<String>,
    base: String,
    id: String,
    name: String,
    email: String,
    plan: String,
    status: String,
    usage: Vec<(String, String, String)>,
    balance: String,
    ledger: Vec<(String, String, String, String, String)>,
    invoices: Vec<(String, String, String)>,
    notifications: Vec<String>,
    flags: Vec<String>,
    audit: Vec<(String, String, String)>,
    /// The subscription history, newest first: (when, plan, interval, status, details).
    timeline: Vec<(String, String, String, String, String)>,
}

#[derive(Deserialize)]
struct DetailQuery {
    done: Option<String>,
}

async fn customer_page(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    match customer_view(&state, &session, &id, query.done).await {
        Ok(Some(p)) => html(StatusCode::OK, p.render()),
        Ok(None) => super::not_found(),
        Err(e) => super::failed(e),
    }
}

async fn customer_view(
    state: &AppState,
    session: &AdminSession,
    id: &str,
    done: Option<String>,
) -> Result<Option<CustomerPage>, crate::error::ApiError> {
    if customers::check_id(id).is_err() || state.store.get_customer(id).await?.is_none() {
        return Ok(None);
    }
    let b = customers::billing(state, id).await?;
    let account = state.store.credit_account(id, 20, None).await?;
    let notifications = state.store.notifications(id).await?;
    let flags = state.store.flag_overrides(id).await?;
    let audit = state
        .store
        .audit_log(AuditFilter {
            customer_id: Some(id.to_owned()),
            actor: None,
            since: None,
            before_seq: None,
            limit: 20,
        })
        .await?;
    let history = state.store.subscription_history(Some(id)).await?;
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let ts = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    Ok(Some(CustomerPage {
        signed_in_csrf: Some(session.csrf.clone()),
        csrf: session.csrf.clone(),
        nonce: hex::encode(nonce),
        notice: done
            .filter(|d| d == "adjusted")
            .map(|_| "Adjustment recorded.".to_owned()),
        base: format!("/admin/customers/{}", segment(id)),
        id: id.to_owned(),
        name: b.customer.name.clone().unwrap_or_default(),
        email: b.customer.email.clone().unwrap_or_default(),
        plan: b.plan.clone().unwrap_or_else(|| "none".to_owned()),
        status: b
            .subscription
            .as_ref()
            .map_or_else(|| "none".to_owned(), |s| s.status.clone()),
        usage: b
            .usage
            .metrics
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.used.normalize().to_string(),
                    m.included.clone(),
                )
            })
            .collect(),
        balance: b
            .credits
            .as_ref()
            .and_then(|c| c.get("balance"))
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_owned(),
        ledger: account
            .entries
            .iter()
            .map(|e| {
                (
                    ts(e.created_at),
                    format!("{} {}", e.kind, e.reason.clone().unwrap_or_default()),
                    e.amount.normalize().to_string(),
                    e.balance_after.normalize().to_string(),
                    e.actor.clone().unwrap_or_default(),
                )
            })
            .collect(),
        invoices: b
            .invoices
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    ts(i.period.start),
                    format!("{} {}", i.total, i.currency),
                )
            })
            .collect(),
        notifications: notifications
            .iter()
            .map(|n| {
                format!(
                    "{} reached {} % ({} of {})",
                    n.metric, n.threshold, n.used, n.limit
                )
            })
            .collect(),
        flags: flags
            .iter()
            .map(|f| format!("{}: {}", f.flag, if f.enabled { "on" } else { "off" }))
            .collect(),
        timeline: history
            .iter()
            .rev()
            .map(|h| {
                let mut details = Vec::new();
                if let Some(c) = &h.coupon {
                    details.push(format!("coupon {c}"));
                }
                if h.cancel_at_period_end {
                    details.push("cancels at period end".to_owned());
                }
                if let Some(t) = h.trial_end {
                    details.push(format!("trial ends {}", ts(t)));
                }
                (
                    ts(h.at),
                    h.plan.clone(),
                    h.interval.clone(),
                    h.status.clone(),
                    format!("{} · {}", h.source, details.join(", ")),
                )
            })
            .collect(),
        audit: audit
            .records
            .iter()
            .map(|r| {
                (
                    ts(r.at),
                    r.action.clone(),
                    r.actor.clone().unwrap_or_default(),
                )
            })
            .collect(),
    }))
}

/// A manual credit adjustment, through the audited credits path with the admin's key as actor;
/// the form's nonce is the idempotency key, so a double submit writes one entry.
async fn adjust_credits(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return refused("The form's CSRF token is missing or wrong.");
    }
    let nonce = form.get("nonce").cloned().unwrap_or_default();
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refused("The form is incomplete; reload the page.");
    }
    let input = GrantInput {
        amount: Value::String(
            form.get("amount")
                .cloned()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        reason: form.get("reason").cloned(),
        idempotency_key: Some(format!("admin-{nonce}")),
        kind: None,
        expires_at: None,
    };
    match credits::grant(&state, &id, Some(session.key_id.clone()), input).await {
        Ok(Applied::New(_) | Applied::Replayed(_)) => {
            Redirect::to(&format!("/admin/customers/{}?done=adjusted", segment(&id)))
                .into_response()
        }
        Err(CreditFailure::Api(e)) => super::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Adjustment refused",
            &e.message,
        ),
        Err(CreditFailure::Insufficient(_)) => super::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Adjustment refused",
            "The balance is too small for this adjustment.",
        ),
    }
}

/// Mints a billing-page link for the customer (audited with the admin's key) and opens it.
async fn open_billing_page(
    State(state): State<AppState>,
    Extension(session): Extension<AdminSession>,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return refused("The form's CSRF token is missing or wrong.");
    }
    let audit = AuditContext {
        actor: session.key_id.clone(),
        idempotency_key: None,
        at: state.clock.now(),
    };
    match pages::mint(&state, &id, pages::PageSessionInput::default(), audit).await {
        Ok(link) => Redirect::to(&link.url).into_response(),
        Err(e) if e.status == StatusCode::NOT_FOUND => super::not_found(),
        Err(e) => super::failed(e),
    }
}
