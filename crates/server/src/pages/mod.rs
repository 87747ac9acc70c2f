//! Server-rendered pages: the customer billing page, reached through a page-session link (see
//! [`crate::service::pages`]). Templates are compiled into the binary (askama), the stylesheet is
//! embedded, and the pages use no JavaScript.
//!
//! Routes:
//! - `GET /billing/start/{code}`: uses a one-time link, then redirects to the session's page;
//! - `GET /billing/s/{token}`: the billing page of the session's customer;
//! - `GET /billing/s/{token}/invoices/{invoice}`: one closed invoice of that customer;
//! - `GET /assets/tally.css`.
//!
//! A link or session that is unknown, used, expired or revoked answers 410 with the same plain
//! "link expired" page; an invoice that is not the session's customer's answers 404.

mod admin;
mod admin_ops;
mod billing;
mod billing_actions;
mod chart;
mod format;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::service;
use crate::state::AppState;

/// The embedded stylesheet.
const CSS: &str = include_str!("../../assets/tally.css");

/// The pages' routes.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/billing/start/{code}", get(start))
        .route("/billing/s/{token}", get(billing_page))
        .route("/billing/s/{token}/invoices/{invoice}", get(invoice_page))
        .route("/assets/tally.css", get(css))
        .merge(billing_actions::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .merge(admin::routes(state))
}

/// Content-Security-Policy and friends on every page answer. `frame-ancestors` comes from
/// `--frame-ancestors`; the token in page URLs must not leak through `Referer`, and pages are
/// never cached.
async fn security_headers(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{}; \
         base-uri 'none'; frame-ancestors {}",
        stripe_pages(&state),
        state.config.frame_ancestors
    );
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Where the page's forms may lead after their `303`: Stripe's hosted Checkout and portal (or,
/// with `--stripe-api-base`, that server's own pages, as the simulator serves them). Nothing
/// without Stripe.
fn stripe_pages(state: &AppState) -> String {
    if state.stripe.is_none() {
        return String::new();
    }
    match &state.config.stripe.api_base {
        Some(base) => match url_origin(base) {
            Some(o) => format!(" {o}"),
            None => String::new(),
        },
        None => " https://checkout.stripe.com https://billing.stripe.com".to_owned(),
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    lang: &'a str,
    heading: &'a str,
    text: &'a str,
}

/// An HTML answer.
fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    match body {
        Ok(b) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            b,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again later.",
            )
        }
    }
}

fn message(status: StatusCode, heading: &str, text: &str) -> Response {
    let body = Message {
        lang: "en",
        heading,
        text,
    }
    .render()
    .unwrap_or_else(|_| heading.to_owned());
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The answer for any link or session that does not (or no longer) work.
fn expired() -> Response {
    message(
        StatusCode::GONE,
        "This link has expired",
        "Open the billing page again from your account to get a new link.",
    )
}

fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing here for this account.",
    )
}

fn failed(e: crate::error::ApiError) -> Response {
    tracing::error!(code = e.code, message = %e.message, "billing page failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Please try again later.",
    )
}

async fn start(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    match service::pages::redeem(&state, &code).await {
        Ok(Some(token)) => Redirect::to(&format!("/billing/s/{token}")).into_response(),
        Ok(None) => expired(),
        Err(e) => failed(e),
    }
}

async fn billing_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let session = match service::pages::session(&state, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => return expired(),
        Err(e) => return failed(e),
    };
    match billing::page(&state, &session, &token, &query).await {
        Ok(p) => html(StatusCode::OK, p.render()),
        Err(e) => failed(e),
    }
}

async fn invoice_page(
    State(state): State<AppState>,
    Path((token, invoice)): Path<(String, String)>,
) -> Response {
    let session = match service::pages::session(&state, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => return expired(),
        Err(e) => return failed(e),
    };
    match billing::invoice(&state, &session, &token, &invoice).await {
        Ok(Some(p)) => html(StatusCode::OK, p.render()),
        Ok(None) => not_found(),
        Err(e) => failed(e),
    }
}
