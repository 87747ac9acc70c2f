//! Automatic top-ups (overage protection): per customer `{threshold, pack, max_per_month}`.
//!
//! When a consumption leaves the balance below the threshold (or is refused for a short
//! balance), a top-up row is written right after the debit — the consume call never waits on
//! Stripe. The store enforces the rules across processes (one top-up in flight per customer, the
//! monthly cap, the backoff and the breaker; see [`tally_store::topups`]). This module's worker
//! then charges the customer's default card off-session for the pack's price, with an idempotency
//! key from the row, and grants the pack's credits once per row (the grant's key is the row's
//! id), whether the answer comes from the call or from the `payment_intent.*` webhook.
//!
//! A decline notifies (`topup.failed`) and backs off ([`FIRST_BACKOFF`], doubling); after
//! [`BREAKER_AFTER`] declines in a row top-ups stop until Stripe says the card changed
//! (`payment_method.attached`, `setup_intent.succeeded`, or `customer.updated` with a new default
//! payment method).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_core::credits::EntryKind;
use tally_store::topups::{state as row_state, BREAKER_AFTER};
use tally_store::{
    AuditContext, AutoTopup, CreditOutcome, CreditRequest, NewNotification, NewTopup,
    NewTransaction, TopupFinish, TopupRecord, TopupRequest, TopupRetry,
};
use tally_stripe::model::{Metadata, PaymentIntent};
use tally_stripe::{ErrorKind, IdempotencyKey, NewOffSessionPayment};
use tokio::sync::{watch, Notify};
use utoipa::ToSchema;

use super::credits::{new_id, parse_amount};
use super::stripe_customers::client;
use super::worker;
use crate::error::ApiError;
use crate::state::AppState;

/// The first wait after a decline; each further decline in a row doubles it.
pub const FIRST_BACKOFF: chrono::Duration = chrono::Duration::hours(1);
/// Largest `max_per_month`.
pub const MAX_PER_MONTH: i64 = 100;
/// How long a consumption may use cached settings: a change made through another process is
/// seen within this time.
pub const SETTINGS_TTL: Duration = Duration::from_secs(1);
/// Top-ups claimed per round, and how long a claim lasts.
const BATCH: usize = 32;
const CLAIM: chrono::Duration = chrono::Duration::minutes(2);
/// How often an idle worker looks for due top-ups.
const POLL: Duration = Duration::from_millis(500);
/// After a 5xx: the first wait before asking again, doubling, capped.
const FIRST_RETRY_SECS: i64 = 2;
const MAX_RETRY_SECS: i64 = 600;
/// After a timeout, 429, 409 or lost connection: the wait before asking again with the same key.
const SAME_KEY_RETRY_SECS: i64 = 10;
/// Metadata keys on the payment intent.
const TOPUP_KEY: &str = "tally_topup_id";

/// The settings cache and the worker's wake-up, owned by this service.
#[derive(Default)]
pub struct Shared {
    settings: Mutex<HashMap<String, (Instant, Option<AutoTopup>)>>,
    wake: Notify,
}

impl Shared {
    fn forget(&self, customer: &str) {
        if let Ok(mut s) = self.settings.lock() {
            s.remove(customer);
        }
    }
}

/// Body of `PUT /v1/customers/{id}/auto-top-up`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopupInput {
    /// A consumption that leaves the balance below this many credits buys `pack` (a decimal,
    /// as a JSON number or string; positive).
    #[schema(value_type = String)]
    pub threshold: Value,
    /// The catalog's credit pack to buy.
    pub pack: String,
    /// Top-ups charged or in flight per calendar month (UTC), 1–100.
    pub max_per_month: i64,
}

/// One top-up on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopupView {
    /// `tu_…`.
    pub id: String,
    pub pack: String,
    /// Credits granted on success (decimal string).
    pub credits: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    /// Calendar month (UTC) it counts in, `YYYY-MM`.
    pub month: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Calls to Stripe that ended in a 5xx (each retried with a new idempotency key after looking
    /// the charge up).
    pub attempts: i64,
    pub stripe_payment_intent: Option<String>,
    pub payment_method: Option<String>,
    /// Stripe's decline code of a failed top-up (`no_payment_method` when there was no card).
    pub decline_code: Option<String>,
    pub last_error: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TopupRecord> for TopupView {
    fn from(t: TopupRecord) -> Self {
        TopupView {
            id: t.id,
            pack: t.pack,
            credits: t.credits.normalize().to_string(),
            amount: t.amount,
            currency: t.currency,
            month: t.month,
            status: t.state,
            attempts: t.attempts,
            stripe_payment_intent: t.payment_intent,
            payment_method: t.payment_method,
            decline_code: t.decline_code,
            last_error: t.last_error,
            request_id: t.request_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A customer's automatic top-up settings and state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AutoTopupView {
    pub customer: String,
    /// Decimal string.
    pub threshold: String,
    pub pack: String,
    pub max_per_month: i64,
    /// Top-ups charged or in flight this calendar month (UTC).
    pub used_this_month: i64,
    /// `active`, `backing_off` (after a decline, until `retry_after`) or `stopped` (3 declines in
    /// a row: until the card changes).
    pub status: String,
    /// Declines in a row.
    pub consecutive_failures: i64,
    pub retry_after: Option<DateTime<Utc>>,
    /// The card of the last decline.
    pub failed_payment_method: Option<String>,
    /// The latest top-ups, newest first (at most 20).
    pub recent: Vec<TopupView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn status_of(s: &AutoTopup, now: DateTime<Utc>) -> &'static str {
    if s.breaker_open() {
        "stopped"
    } else if s.retry_after.is_some_and(|a| a > now) {
        "backing_off"
    } else {
        "active"
    }
}

async fn view(state: &AppState, s: AutoTopup) -> Result<AutoTopupView, ApiError> {
    let now = state.clock.now();
    let recent = state.store.topups_of_customer(&s.customer_id, 20).await?;
    let month = now.format("%Y-%m").to_string();
    // Rows are newest first and a month holds at most MAX_PER_MONTH charged ones; count them all.
    let used = if recent.len() < 20 {
        count_used(&recent, &month)
    } else {
        let all = state
            .store
            .topups_of_customer(&s.customer_id, usize::MAX)
            .await?;
        count_used(&all, &month)
    };
    Ok(AutoTopupView {
        customer: s.customer_id.clone(),
        threshold: s.threshold.normalize().to_string(),
        pack: s.pack.clone(),
        max_per_month: s.max_per_month,
        used_this_month: used,
        status: status_of(&s, now).into(),
        consecutive_failures: s.consecutive_failures,
        retry_after: s.retry_after,
        failed_payment_method: s.failed_payment_method.clone(),
        recent: recent.into_iter().map(TopupView::from).collect(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

fn count_used(rows: &[TopupRecord], month: &str) -> i64 {
    let n = rows
        .iter()
        .filter(|t| t.month == month && t.state != row_state::FAILED)
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn not_set(id: &str) -> ApiError {
    ApiError::not_found(
        "auto_top_up_not_found",
        format!("customer {id:?} has no automatic top-up settings"),
    )
}

/// `GET /v1/customers/{id}/auto-top-up`.
pub async fn get(state: &AppState, id: &str) -> Result<AutoTopupView, ApiError> {
    super::customers::check_id(id)?;
    super::usage::customer(state, id).await?;
    let s = state
        .store
        .get_auto_topup(id)
        .await?
        .ok_or_else(|| not_set(id))?;
    view(state, s).await
}

/// `PUT /v1/customers/{id}/auto-top-up`: creates or replaces the settings (audited); when the
/// balance is already below the new threshold, a top-up is requested at once.
pub async fn put(
    state: &AppState,
    id: &str,
    input: AutoTopupInput,
    audit: AuditContext,
) -> Result<(AutoTopupView, bool), ApiError> {
    super::customers::check_id(id)?;
    super::usage::customer(state, id).await?;
    client(state)?;
    let (stored, before) = store_settings(
        state.store.as_ref(),
        &state.catalog,
        id,
        input,
        audit,
        state.clock.now(),
    )
    .await?;
    state.topups.forget(id);
    maybe_request(state, id).await?;
    let fresh = state.store.get_auto_topup(id).await?.unwrap_or(stored);
    Ok((view(state, fresh).await?, before.is_none()))
}

/// Validates and stores a customer's settings (audited as `auto_top_up.updated`); returns them as
/// stored and the settings they replaced. The API and `tally topups set` share it.
pub async fn store_settings(
    store: &dyn tally_store::Store,
    catalog: &tally_core::catalog::Catalog,
    id: &str,
    input: AutoTopupInput,
    audit: AuditContext,
    now: DateTime<Utc>,
) -> Result<(AutoTopup, Option<AutoTopup>), ApiError> {
    let threshold = parse_amount(&input.threshold, "threshold")?;
    if threshold <= Decimal::ZERO {
        return Err(
            ApiError::unprocessable("invalid_amount", "threshold must be positive")
                .with_param("threshold"),
        );
    }
    let pack = catalog.credit_pack(&input.pack).ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_pack",
            format!("the catalog has no credit pack {:?}", input.pack),
        )
        .with_param("pack")
    })?;
    if !(1..=MAX_PER_MONTH).contains(&input.max_per_month) {
        return Err(ApiError::unprocessable(
            "invalid_max_per_month",
            format!("max_per_month must be 1–{MAX_PER_MONTH}"),
        )
        .with_param("max_per_month"));
    }
    let before = store.get_auto_topup(id).await?;
    let stored = store
        .put_auto_topup(AutoTopup {
            customer_id: id.to_owned(),
            threshold,
            pack: pack.id.clone(),
            max_per_month: input.max_per_month,
            consecutive_failures: 0,
            retry_after: None,
            failed_payment_method: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
    let settings_json = |s: &AutoTopup| {
        json!({
            "threshold": s.threshold.normalize().to_string(),
            "pack": s.pack,
            "max_per_month": s.max_per_month,
        })
    };
    super::audit::record(
        store,
        audit,
        "auto_top_up.updated",
        super::audit::Target {
            kind: "auto_top_up",
            id,
            customer: Some(id),
        },
        before.as_ref().map(settings_json),
        Some(settings_json(&stored)),
    )
    .await?;
    Ok((stored, before))
}

/// `DELETE /v1/customers/{id}/auto-top-up` (audited); a top-up in flight still finishes.
pub async fn delete(state: &AppState, id: &str, audit: AuditContext) -> Result<(), ApiError> {
    super::customers::check_id(id)?;
    super::usage::customer(state, id).await?;
    remove_settings(state.store.as_ref(), id, audit).await?;
    state.topups.forget(id);
    Ok(())
}

/// Removes a customer's settings (audited as `auto_top_up.deleted`); `404 auto_top_up_not_found`
/// when there are none. The API and `tally topups off` share it.
pub async fn remove_settings(
    store: &dyn tally_store::Store,
    id: &str,
    audit: AuditContext,
) -> Result<(), ApiError> {
    let before = store.get_auto_topup(id).await?.ok_or_else(|| not_set(id))?;
    store.delete_auto_topup(id).await?;
    super::audit::record(
        store,
        audit,
        "auto_top_up.deleted",
        super::audit::Target {
            kind: "auto_top_up",
            id,
            customer: Some(id),
        },
        serde_json::to_value(&before).ok(),
        None,
    )
    .await
}

/// The settings, from a cache at most [`SETTINGS_TTL`] old.
async fn cached_settings(state: &AppState, id: &str) -> Result<Option<AutoTopup>, ApiError> {
    let now = Instant::now();
    if let Ok(c) = state.topups.settings.lock() {
        if let Some((at, s)) = c.get(id) {
            if now.duration_since(*at) < SETTINGS_TTL {
                return Ok(s.clone());
            }
        }
    }
    let s = state.store.get_auto_topup(id).await?;
    if let Ok(mut c) = state.topups.settings.lock() {
        if c.len() > 100_000 {
            c.retain(|_, (at, _)| now.duration_since(*at) < SETTINGS_TTL);
        }
        c.insert(id.to_owned(), (now, s.clone()));
    }
    Ok(s)
}

/// Called right after a consumption with the balance it left (or the balance that refused it):
/// below the customer's threshold, a top-up row is written for the worker. Never fails the
/// consumption: an error is logged and the next consumption asks again.
pub async fn after_consumption(state: &AppState, customer: &str, balance: Decimal) {
    let settings = match cached_settings(state, customer).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(customer, error = %e, "automatic top-up settings unreadable");
            return;
        }
    };
    if balance >= settings.threshold {
        return;
    }
    if let Err(e) = request(state, customer, &settings.pack).await {
        tracing::warn!(customer, error = %e, "automatic top-up not requested");
    }
}

/// Writes a top-up row if the rules allow it, and wakes the worker.
async fn request(
    state: &AppState,
    customer: &str,
    pack_id: &str,
) -> Result<TopupRequest, ApiError> {
    let Some(pack) = state.catalog.credit_pack(pack_id) else {
        return Ok(TopupRequest::NotConfigured);
    };
    let now = state.clock.now();
    let outcome = state
        .store
        .request_topup(NewTopup {
            id: new_id("tu", now),
            customer_id: customer.to_owned(),
            pack: pack.id.clone(),
            credits: pack.credits,
            amount: pack.amount,
            currency: pack.currency.code().to_ascii_lowercase(),
            now,
        })
        .await?;
    match &outcome {
        TopupRequest::Created(t) => {
            tracing::info!(customer, topup = %t.id, pack = %t.pack, "automatic top-up requested");
            state.metrics.add_topup("requested");
            state.topups.wake.notify_one();
        }
        TopupRequest::CapReached => state.metrics.add_topup("capped"),
        _ => {}
    }
    Ok(outcome)
}

/// Requests a top-up when the customer's balance is below its threshold now (after a setting
/// change, a success, a card change or the end of a backoff).
async fn maybe_request(state: &AppState, customer: &str) -> Result<Option<TopupRequest>, ApiError> {
    let Some(s) = state.store.get_auto_topup(customer).await? else {
        return Ok(None);
    };
    let now = state.clock.now();
    let balance = state
        .store
        .credit_account(customer, 0, None)
        .await?
        .balance(now);
    if balance >= s.threshold {
        return Ok(None);
    }
    Ok(Some(request(state, customer, &s.pack).await?))
}

/// Starts the worker; it stops when `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    if state.stripe.is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                break;
            }
            let done = round(&state).await;
            if done > 0 {
                continue;
            }
            tokio::select! {
                _ = state.topups.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    });
}

/// One round: charges the due top-ups, then asks again for the customers whose backoff ended.
/// Returns how many top-ups it worked on.
pub async fn round(state: &AppState) -> usize {
    let now = state.clock.now();
    let claimed = worker::run_item(state, worker::TOPUPS, "claim", async {
        Ok::<_, ApiError>(state.store.claim_topups(now, now + CLAIM, BATCH).await?)
    })
    .await
    .unwrap_or_default();
    let n = claimed.len();
    for row in claimed {
        worker::run_item(state, worker::TOPUPS, &row.id.clone(), charge(state, row)).await;
    }
    let due = worker::run_item(state, worker::TOPUPS, "retries", async {
        Ok::<_, ApiError>(state.store.topup_retries_due(now, BATCH).await?)
    })
    .await
    .unwrap_or_default();
    for customer in due {
        worker::run_item(state, worker::TOPUPS, &customer.clone(), async {
            if let None | Some(TopupRequest::AboveThreshold) =
                maybe_request(state, &customer).await?
            {
                state.store.clear_topup_retry(&customer).await?;
            }
            Ok::<_, ApiError>(())
        })
        .await;
    }
    n
}

/// Charges one claimed top-up.
async fn charge(state: &AppState, row: TopupRecord) -> Result<(), ApiError> {
    let client = client(state)?;
    let link = state.store.stripe_customer(&row.customer_id).await?;
    let Some(stripe_customer) = link.and_then(|l| l.stripe_id) else {
        return fail(state, &row, Decline::no_card(), None).await;
    };
    // An earlier call ended in a 5xx and may have charged: find it before charging again.
    if row.attempts > 0 {
        match find_intent(state, &stripe_customer, &row).await {
            Ok(Some(pi)) => return settle(state, &row, &pi, None).await,
            Ok(None) => {}
            Err(e) => return retry_later(state, &row, None, e, false).await,
        }
    }
    // The card of an earlier attempt, so that a retry with the same key sends the same request.
    let known = row.payment_method.clone();
    let pm = match known {
        Some(pm) => Ok(Some(pm)),
        None => client.default_payment_method(&stripe_customer).await,
    };
    let pm = match pm {
        Ok(Some(pm)) => pm,
        Ok(None) => return fail(state, &row, Decline::no_card(), None).await,
        Err(e) => return retry_later(state, &row, None, e, false).await,
    };
    let mut metadata = Metadata::new();
    metadata.insert(TOPUP_KEY.into(), row.id.clone());
    metadata.insert(
        super::stripe_customers::METADATA_KEY.into(),
        row.customer_id.clone(),
    );
    // As a credit pack's checkout does, so that a refund takes the pack's credits back.
    metadata.insert("tally_pack".into(), row.pack.clone());
    // The key stays the same across timeouts and 429s (the first request may still be running:
    // Stripe answers the same key with that request's outcome). After a 5xx it changes, since
    // Stripe replays a key's first answer, even a 500, for 24 h; the lookup above then keeps the
    // row to one charge.
    let attempt = u32::try_from(row.attempts).unwrap_or(u32::MAX);
    let res = client
        .create_off_session_payment(
            &NewOffSessionPayment {
                customer: stripe_customer.clone(),
                payment_method: pm.clone(),
                amount: row.amount,
                currency: row.currency.clone(),
                description: Some(format!("Automatic top-up: {}", row.pack)),
                metadata,
            },
            &IdempotencyKey::from_row("topup", &row.id, attempt),
        )
        .await;
    match res {
        Ok(pi) => settle(state, &row, &pi.value, pi.meta.request_id.clone()).await,
        Err(e) => match &e.kind {
            ErrorKind::CardDeclined {
                code,
                decline_code,
                message,
            } => {
                let pi = find_intent(state, &stripe_customer, &row)
                    .await
                    .ok()
                    .flatten();
                let d = Decline {
                    code: decline_code
                        .clone()
                        .or(code.clone())
                        .unwrap_or_else(|| "card_declined".into()),
                    message: message.clone(),
                    payment_method: Some(pm),
                    payment_intent: pi.map(|p| p.id),
                };
                fail(state, &row, d, e.request_id.clone()).await
            }
            ErrorKind::Unavailable { .. } | ErrorKind::Decode(_) => {
                retry_later(state, &row, Some(pm), e, true).await
            }
            // With the same key and the same request, a conflict means the first request is still
            // going through.
            ErrorKind::RateLimited { .. }
            | ErrorKind::Conflict { .. }
            | ErrorKind::IdempotencyConflict { .. }
            | ErrorKind::Timeout
            | ErrorKind::Connection(_) => retry_later(state, &row, Some(pm), e, false).await,
            other => {
                // Stripe refused the request itself (e.g. the card is not the customer's): it
                // would refuse again, so it counts as a failed top-up.
                let d = Decline {
                    code: "payment_refused".into(),
                    message: other.to_string(),
                    payment_method: Some(pm),
                    payment_intent: None,
                };
                fail(state, &row, d, e.request_id.clone()).await
            }
        },
    }
}

/// The payment intent of a top-up, found by its metadata.
async fn find_intent(
    state: &AppState,
    stripe_customer: &str,
    row: &TopupRecord,
) -> Result<Option<PaymentIntent>, tally_stripe::Error> {
    let Some(client) = &state.stripe else {
        return Ok(None);
    };
    // Stripe's `created` is in seconds, and Tally's clock may run ahead of Stripe's: look back.
    let since = row.created_at.timestamp().saturating_sub(86_400);
    let all = client
        .payment_intents_of_customer(stripe_customer, since)
        .await?;
    Ok(all
        .into_iter()
        .find(|p| p.metadata.get(TOPUP_KEY) == Some(&row.id)))
}

/// Applies what Stripe says of the top-up's payment intent.
async fn settle(
    state: &AppState,
    row: &TopupRecord,
    pi: &PaymentIntent,
    request_id: Option<String>,
) -> Result<(), ApiError> {
    match pi.status.as_str() {
        "succeeded" => succeed(state, row, pi, request_id).await,
        "requires_payment_method" | "canceled" => {
            let d = Decline {
                code: pi
                    .decline_code
                    .clone()
                    .unwrap_or_else(|| "card_declined".into()),
                message: pi
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| format!("the payment intent is {}", pi.status)),
                payment_method: pi.payment_method.clone(),
                payment_intent: Some(pi.id.clone()),
            };
            fail(state, row, d, request_id).await
        }
        // `processing`, `requires_action`, …: look again later.
        other => {
            let e = tally_stripe::Error {
                kind: ErrorKind::Decode(format!("the payment intent is {other}")),
                request_id,
                status: None,
                attempts: 1,
            };
            retry_later(state, row, pi.payment_method.clone(), e, false).await
        }
    }
}

/// Leaves the top-up for a later attempt. `new_key`: Stripe may have saved its answer (a 5xx)
/// against the key, so the next attempt looks the charge up and then uses the next key.
async fn retry_later(
    state: &AppState,
    row: &TopupRecord,
    pm: Option<String>,
    e: tally_stripe::Error,
    new_key: bool,
) -> Result<(), ApiError> {
    let (attempts, secs) = if new_key {
        let n = row.attempts.saturating_add(1);
        let secs = FIRST_RETRY_SECS
            .saturating_mul(1i64 << n.clamp(0, 20))
            .min(MAX_RETRY_SECS);
        (n, secs)
    } else {
        (row.attempts, SAME_KEY_RETRY_SECS)
    };
    let now = state.clock.now();
    state
        .store
        .retry_topup(TopupRetry {
            id: row.id.clone(),
            attempts,
            next_attempt_at: now + chrono::Duration::seconds(secs),
            payment_method: pm,
            request_id: e.request_id.clone(),
            error: format!("Stripe: {e}"),
            now,
        })
        .await?;
    tracing::warn!(topup = %row.id, error = %e, "automatic top-up: Stripe did not answer; retried");
    state.metrics.add_topup("retried");
    Ok(())
}

/// The payment went through: the pack's credits (once per row), the transaction, then the row
/// and `topup.succeeded` in one store transaction. Each step is keyed by the row, so the worker
/// and the webhook may both get here.
async fn succeed(
    state: &AppState,
    row: &TopupRecord,
    pi: &PaymentIntent,
    request_id: Option<String>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let key = format!("topup:{}", row.id);
    let outcome = state
        .store
        .credit_apply(CreditRequest {
            entry_id: new_id("ce", now),
            customer_id: row.customer_id.clone(),
            kind: EntryKind::Purchase,
            amount: row.credits,
            expires_at: None,
            reason: Some(format!("automatic top-up {} (pack {})", row.id, row.pack)),
            idempotency_key: Some(key.clone()),
            fingerprint: format!("topup|{}|{}", row.id, row.credits),
            actor: Some("stripe".into()),
            audit: true,
            event: None,
            quantity: None,
            now,
            notify: None,
        })
        .await?;
    let balance = match outcome {
        CreditOutcome::Applied(e) | CreditOutcome::Replayed(e) => e.balance_after,
        CreditOutcome::IdempotencyConflict | CreditOutcome::Insufficient { .. } => {
            return Err(ApiError::internal(
                "the top-up's grant key was used for another change",
            ))
        }
    };
    state
        .store
        .record_transaction(NewTransaction {
            id: new_id("txn", now),
            key: key.clone(),
            customer_id: row.customer_id.clone(),
            kind: "credit_pack".into(),
            status: "succeeded".into(),
            amount: row.amount,
            currency: row.currency.clone(),
            description: Some(format!("automatic top-up: {}", row.pack)),
            stripe_invoice: None,
            stripe_payment_intent: Some(pi.id.clone()),
            stripe_charge: pi.latest_charge.clone(),
            stripe_checkout_session: None,
            stripe_subscription: None,
            occurred_at: now,
            created_at: now,
        })
        .await?;
    let ended = state
        .store
        .finish_topup(TopupFinish {
            id: row.id.clone(),
            succeeded: true,
            payment_intent: Some(pi.id.clone()),
            payment_method: pi.payment_method.clone(),
            decline_code: None,
            request_id,
            error: None,
            retry_after: None,
            notification: NewNotification {
                kind: "topup.succeeded".into(),
                customer_id: Some(row.customer_id.clone()),
                payload: json!({
                    "customer": row.customer_id,
                    "topup": row.id,
                    "pack": row.pack,
                    "credits": row.credits.normalize().to_string(),
                    "amount": row.amount,
                    "currency": row.currency,
                    "stripe_payment_intent": pi.id,
                    "balance": balance.normalize().to_string(),
                }),
                dedup_key: format!("topup.succeeded:{}", row.id),
                created_at: now,
            },
            now,
        })
        .await?;
    if ended {
        tracing::info!(topup = %row.id, customer = %row.customer_id, "automatic top-up succeeded");
        state.metrics.add_topup("succeeded");
        state
            .metrics
            .add_payment_succeeded(row.amount, &row.currency);
        // Still below the threshold (a large consumption): top up again, within the cap.
        maybe_request(state, &row.customer_id).await?;
    }
    Ok(())
}

/// Why a top-up failed.
struct Decline {
    code: String,
    message: String,
    payment_method: Option<String>,
    payment_intent: Option<String>,
}

impl Decline {
    fn no_card() -> Decline {
        Decline {
            code: "no_payment_method".into(),
            message: "the customer has no default payment method in Stripe".into(),
            payment_method: None,
            payment_intent: None,
        }
    }
}

/// The top-up failed: the failed payment in the history, then the row, the customer's decline
/// count, backoff or breaker and `topup.failed` in one store transaction.
async fn fail(
    state: &AppState,
    row: &TopupRecord,
    d: Decline,
    request_id: Option<String>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let before = state.store.get_auto_topup(&row.customer_id).await?;
    let failures = before
        .as_ref()
        .map_or(0, |s| s.consecutive_failures)
        .saturating_add(1);
    let stopped = failures >= BREAKER_AFTER;
    let wait = FIRST_BACKOFF
        .checked_mul(1i32 << failures.saturating_sub(1).clamp(0, 20))
        .unwrap_or(FIRST_BACKOFF);
    let retry_after = (!stopped).then(|| now + wait);
    if d.payment_intent.is_some() {
        state
            .store
            .record_transaction(NewTransaction {
                id: new_id("txn", now),
                key: format!("topup_failed:{}", row.id),
                customer_id: row.customer_id.clone(),
                kind: "payment_failed".into(),
                status: "failed".into(),
                amount: row.amount,
                currency: row.currency.clone(),
                description: Some(format!(
                    "automatic top-up declined ({}): {}",
                    d.code, row.pack
                )),
                stripe_invoice: None,
                stripe_payment_intent: d.payment_intent.clone(),
                stripe_charge: None,
                stripe_checkout_session: None,
                stripe_subscription: None,
                occurred_at: now,
                created_at: now,
            })
            .await?;
    }
    let ended = state
        .store
        .finish_topup(TopupFinish {
            id: row.id.clone(),
            succeeded: false,
            payment_intent: d.payment_intent.clone(),
            payment_method: d.payment_method.clone(),
            decline_code: Some(d.code.clone()),
            request_id,
            error: Some(d.message.clone()),
            retry_after,
            notification: NewNotification {
                kind: "topup.failed".into(),
                customer_id: Some(row.customer_id.clone()),
                payload: json!({
                    "customer": row.customer_id,
                    "topup": row.id,
                    "pack": row.pack,
                    "credits": row.credits.normalize().to_string(),
                    "amount": row.amount,
                    "currency": row.currency,
                    "stripe_payment_intent": d.payment_intent,
                    "decline_code": d.code,
                    "message": d.message,
                    "consecutive_failures": failures,
                    "retry_after": retry_after,
                    "stopped": stopped,
                }),
                dedup_key: format!("topup.failed:{}", row.id),
                created_at: now,
            },
            now,
        })
        .await?;
    if ended {
        tracing::warn!(topup = %row.id, customer = %row.customer_id, code = %d.code, failures,
            "automatic top-up failed");
        state.metrics.add_topup("failed");
        state.metrics.add_payment_failed(false);
        if stopped {
            state.metrics.add_topup("stopped");
        }
    }
    Ok(())
}

/// `payment_intent.succeeded` / `payment_intent.payment_failed`: settles the top-up the intent
/// names in its metadata, if it is still pending (the worker may have settled it already).
/// `None` for an intent that is not a top-up's.
pub async fn on_payment_intent(
    state: &AppState,
    pi: &PaymentIntent,
) -> Result<Option<String>, ApiError> {
    let Some(id) = pi.metadata.get(TOPUP_KEY) else {
        return Ok(None);
    };
    let Some(row) = state.store.get_topup(id).await? else {
        return Ok(None);
    };
    if row.state != row_state::PENDING {
        return Ok(Some(format!("top-up {id} already {}", row.state)));
    }
    settle(state, &row, pi, None).await?;
    Ok(Some(format!("top-up {id} settled from the event")))
}

/// The customer's card changed (a card attached, a setup intent succeeded, a new default
/// payment method): the breaker closes and the backoff ends; below the threshold, a top-up is
/// requested at once. `card` is the card the event names: the one that was declined last (e.g.
/// its own `payment_method.attached`, delivered late) changes nothing.
pub async fn on_card_changed(
    state: &AppState,
    customer: &str,
    card: Option<&str>,
) -> Result<String, ApiError> {
    let settings = state.store.get_auto_topup(customer).await?;
    if let Some(failed) = settings.and_then(|s| s.failed_payment_method) {
        if card == Some(failed.as_str()) {
            return Ok("the card that was declined: top-ups stay as they are".into());
        }
    }
    if !state
        .store
        .reset_topup_failures(customer, state.clock.now())
        .await?
    {
        return Ok("no automatic top-up was stopped".into());
    }
    state.topups.forget(customer);
    Ok(match maybe_request(state, customer).await? {
        Some(TopupRequest::Created(t)) => format!("top-ups resumed: {} requested", t.id),
        _ => "top-ups resumed".into(),
    })
}
