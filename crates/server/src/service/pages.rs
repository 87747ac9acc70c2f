//! Page sessions: an app's backend mints a one-time link for one customer; using the link starts
//! a session of the billing page scoped to that customer.
//!
//! The session travels as a token in the page's URL path (`/billing/s/{token}/…`), not in a
//! cookie: SameSite cookies are not sent to a page inside a cross-site iframe, and the page's own
//! links carry the token. Only SHA-256 hashes of the code and the token are stored; pages are sent
//! with `Referrer-Policy: no-referrer` so the token does not leak to other sites.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_core::money_display::Locale;
use tally_store::{hash_api_secret, AuditContext, NewPageSession, PageSession, PageSessionCheck};
use utoipa::ToSchema;

use super::customers::check_id;
use super::keys::Caller;
use super::usage;
use crate::error::ApiError;
use crate::state::AppState;

/// A link must be used within this long of being minted.
pub const CODE_TTL: Duration = Duration::minutes(15);
/// A session ends after this long without a request.
pub const IDLE_TTL: Duration = Duration::minutes(60);
/// A session ends this long after it started, used or not.
pub const ABSOLUTE_TTL: Duration = Duration::hours(12);
/// Longest `return_url` accepted.
const MAX_RETURN_URL: usize = 2048;

/// Body of `POST /v1/customers/{id}/page-sessions`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageSessionInput {
    /// The language money and dates are shown in: `en` (default) or `de` (a region such as
    /// `de-AT` is accepted and ignored).
    pub locale: Option<String>,
    /// Where the page's "Back" link goes (an http or https URL), e.g. your app's settings page.
    pub return_url: Option<String>,
}

/// A minted link.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageLink {
    /// The session's id (`ps_…`), to revoke it with `DELETE /v1/page-sessions/{id}`.
    pub id: String,
    /// The one-time link to the customer's billing page: open it or put it in an iframe.
    pub url: String,
    /// The link must be used before this instant.
    pub expires_at: DateTime<Utc>,
}

/// 32 random bytes, hex.
fn secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn valid_return_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() <= MAX_RETURN_URL
        && !u
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
}

/// Mints a one-time link to `customer`'s billing page.
pub async fn mint(
    state: &AppState,
    customer: &str,
    input: PageSessionInput,
    audit: AuditContext,
) -> Result<PageLink, ApiError> {
    check_id(customer)?;
    let locale = match input.locale.as_deref() {
        None => Locale::En,
        Some(tag) => Locale::parse(tag).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_locale",
                format!("locale {tag:?} is not supported: use en or de"),
            )
            .with_param("locale")
        })?,
    };
    if let Some(u) = &input.return_url {
        if !valid_return_url(u) {
            return Err(ApiError::unprocessable(
                "invalid_return_url",
                "return_url must be an http:// or https:// URL of at most 2048 characters",
            )
            .with_param("return_url"));
        }
    }
    usage::customer(state, customer).await?;
    let now = state.clock.now();
    let code = secret();
    let mut id_bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut id_bytes);
    let s = state
        .store
        .create_page_session(
            NewPageSession {
                id: format!("ps_{}", hex::encode(id_bytes)),
                customer_id: customer.to_owned(),
                code_hash: hash_api_secret(&code),
                locale: locale.tag().to_owned(),
                return_url: input.return_url,
                created_at: now,
                code_expires_at: now + CODE_TTL,
            },
            Some(audit),
        )
        .await?;
    Ok(PageLink {
        url: format!("{}/billing/start/{code}", state.config.public_base()),
        id: s.id,
        expires_at: s.code_expires_at,
    })
}

/// Uses a link's code: the new session's token, or `None` when the code is unknown, used,
/// expired or revoked (all answered alike, so a guess learns nothing).
pub async fn redeem(state: &AppState, code: &str) -> Result<Option<String>, ApiError> {
    if !is_secret(code) {
        return Ok(None);
    }
    let token = secret();
    let s = state
        .store
        .redeem_page_code(
            &hash_api_secret(code),
            &hash_api_secret(&token),
            state.clock.now(),
        )
        .await?;
    Ok(s.map(|_| token))
}

/// The live session of `token`, its idle timer restarted; `None` when unknown, revoked, idle too
/// long or too old.
pub async fn session(state: &AppState, token: &str) -> Result<Option<PageSession>, ApiError> {
    if !is_secret(token) {
        return Ok(None);
    }
    let now = state.clock.now();
    Ok(state
        .store
        .touch_page_session(
            &hash_api_secret(token),
            PageSessionCheck {
                now,
                idle_after: now - IDLE_TTL,
                started_after: now - ABSOLUTE_TTL,
            },
        )
        .await?)
}

/// A code or token as minted: 64 lower-case hex digits (anything else is not looked up).
fn is_secret(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Revokes a session (its link stops working, or its page does). A key limited to one customer
/// sees other customers' sessions as missing.
pub async fn revoke(
    state: &AppState,
    caller: &Caller,
    id: &str,
    audit: AuditContext,
) -> Result<(), ApiError> {
    let missing = || {
        ApiError::not_found(
            "page_session_not_found",
            format!("no live page session {id:?}"),
        )
        .with_param("id")
    };
    let s = state
        .store
        .get_page_session(id)
        .await?
        .ok_or_else(missing)?;
    if caller.check_customer(&s.customer_id).is_err() {
        return Err(missing());
    }
    if state
        .store
        .revoke_page_session(id, state.clock.now(), Some(audit))
        .await?
    {
        Ok(())
    } else {
        Err(missing())
    }
}
