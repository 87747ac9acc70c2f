//! Prepaid credits: balance and ledger, admin grants and adjustments, atomic consumption, and the
//! plan's monthly grant (made once per allowance period, the first time the customer's credits
//! are touched in that period).
//!
//! Credits are exact decimals (a metric may cost 0.5 credit); amounts have at most
//! [`MAX_SCALE`] decimal places and are returned as strings.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::credits::{CreditEntry, EntryKind};
use tally_core::decimal::{self, DecimalError, Limits};
use tally_store::{
    CreditEntryRecord, CreditNotify, CreditOutcome, CreditRequest, Customer, Subscription,
};
use utoipa::ToSchema;

use super::customers::check_id;
use super::usage;
use crate::error::ApiError;
use crate::ratelimit::Limiter;
use crate::state::AppState;

/// Most decimal places of a credit amount.
pub const MAX_SCALE: u32 = 6;
/// Largest credit amount of one request.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Default and largest page of the ledger.
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

/// In-memory state shared by the credit, entitlement and rate-limit code.
#[derive(Default)]
pub struct Shared {
    /// `(customer, period start)` whose monthly plan grant is known to exist.
    granted: Mutex<HashSet<(String, i64)>>,
    /// `(customer, metric, period start, threshold)` whose notification is known to exist.
    pub(crate) notified: Mutex<HashSet<(String, String, i64, u32)>>,
    pub limiter: Limiter,
    /// Customer and subscription per customer id, for entitlement checks (see [`PLAN_TTL`]).
    plans: Mutex<HashMap<String, CachedPlan>>,
    /// Customer → metrics whose usage changed since the notifier last looked.
    pub(crate) dirty: Mutex<HashMap<String, super::entitlements::ChangedMetrics>>,
}

/// When it was read, the customer, its subscription.
type CachedPlan = (Instant, Customer, Option<Subscription>);

/// How long an entitlement check may use a cached customer and subscription. A change made
/// through this process is seen at once; one made through another process sharing the database
/// within this time.
pub const PLAN_TTL: Duration = Duration::from_secs(1);

impl Shared {
    /// Forgets the cached subscription of a customer (after it changed).
    pub fn forget(&self, customer: &str) {
        if let Ok(mut p) = self.plans.lock() {
            p.remove(customer);
        }
    }

    /// Forgets every cached customer and subscription (after an allowance anchor changed).
    pub fn forget_all(&self) {
        if let Ok(mut p) = self.plans.lock() {
            p.clear();
        }
    }
}

/// The customer and its subscription, from a cache at most [`PLAN_TTL`] old; 404 when the
/// customer does not exist.
pub async fn customer_and_subscription(
    state: &AppState,
    id: &str,
) -> Result<(Customer, Option<Subscription>), ApiError> {
    let now = Instant::now();
    if let Ok(p) = state.credits.plans.lock() {
        if let Some((at, c, s)) = p.get(id) {
            if now.duration_since(*at) < PLAN_TTL {
                return Ok((c.clone(), s.clone()));
            }
        }
    }
    let c = usage::customer(state, id).await?;
    let s = state.store.get_subscription(id).await?;
    if let Ok(mut p) = state.credits.plans.lock() {
        if p.len() > 100_000 {
            p.retain(|_, (at, _, _)| now.duration_since(*at) < PLAN_TTL);
        }
        p.insert(id.to_owned(), (now, c.clone(), s.clone()));
    }
    Ok((c, s))
}

/// The limits of a credit amount or quantity in Tally's one decimal grammar (15 significant
/// digits: every amount up to [`MAX_AMOUNT`] with [`MAX_SCALE`] places, and no more than a JSON
/// number keeps exactly).
const CREDIT_AMOUNT: Limits = Limits {
    max_integer_digits: 10,
    max_fraction_digits: MAX_SCALE,
    max_significant_digits: 15,
    negative: true,
};

/// Parses a credit amount or quantity given as a JSON number or string by Tally's one decimal
/// grammar (see [`tally_core::decimal`]), never through a float.
pub fn parse_amount(v: &Value, field: &'static str) -> Result<Decimal, ApiError> {
    let number;
    let (text, parsed) = match v {
        Value::String(s) => (s.as_str(), decimal::parse(s, &CREDIT_AMOUNT)),
        Value::Number(n) => {
            number = n.to_string();
            let d = decimal::parse_json_number(&number, &CREDIT_AMOUNT);
            (number.as_str(), d)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_amount",
                format!("{field} must be a number or a decimal string"),
            )
            .with_param(field))
        }
    };
    let d = match parsed {
        Ok(d) => d.normalize(),
        Err(e @ DecimalError::Syntax) => {
            return Err(
                ApiError::bad_request("invalid_amount", format!("{field} {text:?} {e}"))
                    .with_param(field),
            )
        }
        Err(_) => return Err(amount_out_of_range(field)),
    };
    if d.abs() > MAX_AMOUNT {
        return Err(amount_out_of_range(field));
    }
    Ok(d)
}

fn amount_out_of_range(field: &'static str) -> ApiError {
    ApiError::unprocessable(
        "invalid_amount",
        format!("{field} has at most {MAX_SCALE} decimal places and is at most {MAX_AMOUNT}"),
    )
    .with_param(field)
}

fn check_key(key: &Option<String>) -> Result<String, ApiError> {
    match key {
        Some(k) if !k.is_empty() && k.len() <= 255 => Ok(k.clone()),
        Some(_) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "idempotency_key is 1–255 characters",
        )
        .with_param("idempotency_key")),
        None => Err(ApiError::bad_request(
            "missing_idempotency_key",
            "idempotency_key is required so that a retried request is applied once",
        )
        .with_param("idempotency_key")),
    }
}

/// A new ledger entry id: the time in milliseconds (12 hex digits) then 80 random bits. Ids
/// made close in time sort together, so the entries of one group commit insert into the same
/// page of the `id` index rather than one random page each.
pub(crate) fn new_id(prefix: &str, now: DateTime<Utc>) -> String {
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    let ms = now.timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
    format!("{prefix}_{ms:012x}{}", hex::encode(b))
}

/// A ledger entry on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    /// grant, purchase, consume, adjust, refund or expire.
    pub kind: String,
    /// Signed change, as a decimal string.
    #[schema(value_type = String)]
    pub amount: Decimal,
    #[schema(value_type = String)]
    pub balance_after: Decimal,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    /// The API key that made the entry (`env_…` for TALLY_API_KEY, `system` for plan grants and
    /// expiries).
    pub actor: Option<String>,
    pub metric: Option<String>,
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Decimal>,
    pub event_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<CreditEntryRecord> for EntryView {
    fn from(e: CreditEntryRecord) -> Self {
        EntryView {
            id: e.id,
            kind: e.kind,
            amount: e.amount.normalize(),
            balance_after: e.balance_after.normalize(),
            expires_at: e.expires_at,
            reason: e.reason,
            idempotency_key: e.idempotency_key,
            actor: e.actor,
            metric: e.metric,
            quantity: e.quantity.map(|q| q.normalize()),
            event_id: e.event_id,
            created_at: e.created_at,
        }
    }
}

/// Credits left from one grant, purchase or refund.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BucketView {
    /// The entry that added the credits.
    pub entry_id: String,
    pub kind: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    #[schema(value_type = String)]
    pub remaining: Decimal,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A page of the ledger, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerPage {
    pub data: Vec<EntryView>,
    pub has_more: bool,
    /// Pass as `before` to get the next (older) page.
    pub next_before: Option<i64>,
}

/// `GET /v1/customers/{id}/credits`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreditsView {
    pub customer: String,
    /// Credits usable now.
    #[schema(value_type = String)]
    pub balance: Decimal,
    /// Usable credits per grant, in the order they are consumed (expiring first).
    pub breakdown: Vec<BucketView>,
    pub ledger: LedgerPage,
}

/// The customer, or 404.
async fn customer(state: &AppState, id: &str) -> Result<Customer, ApiError> {
    check_id(id)?;
    usage::customer(state, id).await
}

/// What a credit change notifies: `credits.low` below the customer's plan's
/// `low_credit_balance`, if it sets one.
fn credit_notify(
    state: &AppState,
    sub: Option<&tally_store::Subscription>,
    now: DateTime<Utc>,
) -> Option<CreditNotify> {
    let plan = super::entitlements::effective_plan(state, sub, now);
    Some(CreditNotify {
        low_balance: plan.and_then(|(p, _)| p.low_credit_balance),
    })
}

/// Makes the plan's monthly grant for the allowance period containing `now`, once.
pub async fn ensure_plan_grant(
    state: &AppState,
    c: &Customer,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let period = c.allowance_period(now);
    let marker = (c.id.clone(), period.start.timestamp_millis());
    if state
        .credits
        .granted
        .lock()
        .is_ok_and(|g| g.contains(&marker))
    {
        return Ok(());
    }
    let sub = state.store.get_subscription(&c.id).await?;
    let plan = super::entitlements::effective_plan(state, sub.as_ref(), now);
    let Some((plan, _)) = plan else {
        return Ok(());
    };
    if let Some(amount) = plan.monthly_credits.filter(|a| *a > Decimal::ZERO) {
        let key = format!("plan_grant:{}", period.start.to_rfc3339());
        let outcome = state
            .store
            .credit_apply(CreditRequest {
                entry_id: new_id("ce", state.clock.now()),
                customer_id: c.id.clone(),
                kind: EntryKind::Grant,
                amount,
                expires_at: (!plan.credits_roll_over).then_some(period.end),
                reason: Some(format!("monthly credits of plan {}", plan.id)),
                fingerprint: key.clone(),
                idempotency_key: Some(key),
                actor: Some("system".into()),
                audit: false,
                event: None,
                quantity: None,
                now: now.max(period.start),
                notify: Some(CreditNotify {
                    low_balance: plan.low_credit_balance,
                }),
            })
            .await?;
        if matches!(outcome, CreditOutcome::IdempotencyConflict) {
            return Err(ApiError::internal("the monthly grant's key is taken"));
        }
    }
    if let Ok(mut g) = state.credits.granted.lock() {
        if g.len() > 1_000_000 {
            g.clear();
        }
        g.insert(marker);
    }
    Ok(())
}

/// After a subscription's plan changed in the middle of an allowance period (e.g. an upgrade
/// bought through Stripe Checkout): when the period's monthly grant was made under another plan,
/// the new plan's monthly credits are granted too, once per plan and period; when no grant was
/// made yet, the period's grant is made now under the new plan.
pub async fn plan_changed(
    state: &AppState,
    c: &Customer,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let period = c.allowance_period(now);
    if let Ok(mut g) = state.credits.granted.lock() {
        g.remove(&(c.id.clone(), period.start.timestamp_millis()));
    }
    let sub = state.store.get_subscription(&c.id).await?;
    let Some((plan, _)) = super::entitlements::effective_plan(state, sub.as_ref(), now) else {
        return Ok(());
    };
    let Some(amount) = plan.monthly_credits.filter(|a| *a > Decimal::ZERO) else {
        return Ok(());
    };
    let reason = format!("monthly credits of plan {}", plan.id);
    let request = |key: String, reason: String| CreditRequest {
        entry_id: new_id("ce", now),
        customer_id: c.id.clone(),
        kind: EntryKind::Grant,
        amount,
        expires_at: (!plan.credits_roll_over).then_some(period.end),
        reason: Some(reason),
        fingerprint: key.clone(),
        idempotency_key: Some(key),
        actor: Some("system".into()),
        audit: false,
        event: None,
        quantity: None,
        now: now.max(period.start),
        notify: Some(CreditNotify {
            low_balance: plan.low_credit_balance,
        }),
    };
    let base = format!("plan_grant:{}", period.start.to_rfc3339());
    match state
        .store
        .credit_apply(request(base, reason.clone()))
        .await?
    {
        CreditOutcome::Replayed(first) if first.reason.as_deref() != Some(reason.as_str()) => {
            let key = format!("plan_grant:{}:{}", period.start.to_rfc3339(), plan.id);
            let why = format!("{reason} (changed during the period)");
            state.store.credit_apply(request(key, why)).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Grants purchased credits (e.g. a credit pack paid through Stripe Checkout) once per
/// `idempotency_key`, audited; unlike [`grant`], the plan's monthly grant is left to the next
/// read of the balance, so the order in which Stripe's events are applied never changes which
/// plan's monthly credits the customer gets.
pub async fn grant_purchase(
    state: &AppState,
    customer_id: &str,
    amount: Decimal,
    reason: String,
    idempotency_key: String,
    now: DateTime<Utc>,
) -> Result<Applied<EntryView>, ApiError> {
    let fingerprint = format!("purchase|{amount}|{reason}");
    let sub = state.store.get_subscription(customer_id).await?;
    let outcome = state
        .store
        .credit_apply(CreditRequest {
            entry_id: new_id("ce", now),
            customer_id: customer_id.to_owned(),
            kind: EntryKind::Purchase,
            amount,
            expires_at: None,
            reason: Some(reason),
            idempotency_key: Some(idempotency_key),
            fingerprint,
            actor: Some("stripe".into()),
            audit: true,
            event: None,
            quantity: None,
            now,
            notify: credit_notify(state, sub.as_ref(), now),
        })
        .await?;
    match outcome {
        CreditOutcome::Applied(e) => Ok(Applied::New(e.into())),
        CreditOutcome::Replayed(e) => Ok(Applied::Replayed(e.into())),
        CreditOutcome::IdempotencyConflict => Err(ApiError::internal(
            "the purchase's idempotency key was used for another grant",
        )),
        CreditOutcome::Insufficient { .. } => {
            Err(ApiError::internal("a purchase cannot be short of credits"))
        }
    }
}

/// The customer's usable balance (after its monthly grant).
pub async fn balance(
    state: &AppState,
    c: &Customer,
    now: DateTime<Utc>,
) -> Result<Decimal, ApiError> {
    ensure_plan_grant(state, c, now).await?;
    Ok(state
        .store
        .credit_account(&c.id, 0, None)
        .await?
        .balance(now))
}

/// `GET /v1/customers/{id}/credits`.
pub async fn get(
    state: &AppState,
    id: &str,
    limit: Option<usize>,
    before: Option<i64>,
) -> Result<CreditsView, ApiError> {
    let c = customer(state, id).await?;
    let now = state.clock.now();
    ensure_plan_grant(state, &c, now).await?;
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(
            ApiError::bad_request("invalid_limit", format!("limit is 1–{MAX_PAGE}"))
                .with_param("limit"),
        );
    }
    let account = state.store.credit_account(id, limit, before).await?;
    let balance = account.balance(now).normalize();
    let mut open: Vec<_> = account
        .buckets
        .into_iter()
        .filter(|b| b.is_open(now))
        .collect();
    open.sort_by_key(|b| (b.expires_at.is_none(), b.expires_at, b.created_at));
    let next_before = if account.has_more {
        account.entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(CreditsView {
        customer: c.id,
        balance,
        breakdown: open
            .into_iter()
            .map(|b| BucketView {
                entry_id: b.entry_id,
                kind: b.kind,
                amount: b.amount.normalize(),
                remaining: b.remaining.normalize(),
                created_at: b.created_at,
                expires_at: b.expires_at,
            })
            .collect(),
        ledger: LedgerPage {
            data: account.entries.into_iter().map(EntryView::from).collect(),
            has_more: account.has_more,
            next_before,
        },
    })
}

/// Body of `POST /v1/customers/{id}/credits/grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Signed credits: positive adds, negative removes (an adjustment).
    #[schema(value_type = String)]
    pub amount: Value,
    /// Why; kept in the ledger and the audit log.
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    /// `grant` (default for positive amounts), `adjust` (default for negative), `refund` or
    /// `purchase`.
    pub kind: Option<String>,
    /// When granted or refunded credits expire.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a grant or a consumption answers.
pub enum Applied<T> {
    /// First time: written.
    New(T),
    /// Same idempotency key and request as before: the first result, nothing written.
    Replayed(T),
}

/// A short debit: 402.
#[derive(Debug, Clone, PartialEq)]
pub struct Insufficient {
    pub balance: Decimal,
    pub required: Decimal,
}

/// Errors of credit writes: the usual ones, or a short balance.
pub enum CreditFailure {
    Api(ApiError),
    Insufficient(Insufficient),
}

impl From<ApiError> for CreditFailure {
    fn from(e: ApiError) -> Self {
        CreditFailure::Api(e)
    }
}

impl From<tally_store::StoreError> for CreditFailure {
    fn from(e: tally_store::StoreError) -> Self {
        CreditFailure::Api(e.into())
    }
}

fn conflict() -> CreditFailure {
    CreditFailure::Api(
        ApiError::conflict(
            "idempotency_conflict",
            "this idempotency_key was used with a different request",
        )
        .with_param("idempotency_key"),
    )
}

/// `POST /v1/customers/{id}/credits/grants`.
pub async fn grant(
    state: &AppState,
    id: &str,
    actor: Option<String>,
    input: GrantInput,
) -> Result<Applied<EntryView>, CreditFailure> {
    check_id(id)?;
    let key = check_key(&input.idempotency_key)?;
    let amount = parse_amount(&input.amount, "amount")?;
    let reason = match input.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() && r.len() <= 1000 => r.to_owned(),
        _ => {
            return Err(ApiError::bad_request(
                "missing_reason",
                "reason is required (1–1000 characters): it goes into the audit log",
            )
            .with_param("reason")
            .into())
        }
    };
    let kind = match input.kind.as_deref() {
        None if amount > Decimal::ZERO => EntryKind::Grant,
        None => EntryKind::Adjust,
        Some("grant") => EntryKind::Grant,
        Some("adjust") => EntryKind::Adjust,
        Some("refund") => EntryKind::Refund,
        Some("purchase") => EntryKind::Purchase,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_kind",
                format!("kind {other:?} is not one of grant, adjust, refund, purchase"),
            )
            .with_param("kind")
            .into())
        }
    };
    let now = state.clock.now();
    CreditEntry {
        id: "request".into(),
        kind,
        amount,
        at: now,
        expires_at: input.expires_at,
    }
    .validate()
    .map_err(|e| {
        ApiError::unprocessable("invalid_entry", e.to_string().replace("request: ", ""))
            .with_param("amount")
    })?;
    let (c, sub) = customer_and_subscription(state, id).await?;
    ensure_plan_grant(state, &c, now).await?;
    let notify = credit_notify(state, sub.as_ref(), now);
    let fingerprint = format!(
        "grant|{}|{}|{}|{}",
        kind.as_str(),
        amount,
        reason,
        input.expires_at.map(|e| e.to_rfc3339()).unwrap_or_default()
    );
    let outcome = state
        .store
        .credit_apply(CreditRequest {
            entry_id: new_id("ce", state.clock.now()),
            customer_id: c.id.clone(),
            kind,
            amount,
            expires_at: input.expires_at,
            reason: Some(reason),
            idempotency_key: Some(key),
            fingerprint,
            actor,
            audit: true,
            event: None,
            quantity: None,
            now,
            notify,
        })
        .await?;
    match outcome {
        CreditOutcome::Applied(e) => Ok(Applied::New(e.into())),
        CreditOutcome::Replayed(e) => Ok(Applied::Replayed(e.into())),
        CreditOutcome::IdempotencyConflict => Err(conflict()),
        CreditOutcome::Insufficient { balance, required } => {
            Err(CreditFailure::Insufficient(Insufficient {
                balance,
                required,
            }))
        }
    }
}

/// Body of `POST /v1/customers/{id}/credits/consume`: `amount`, or `metric` (and `quantity`,
/// default 1) to pay the metric's credit cost and record the usage event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeInput {
    #[schema(value_type = Option<String>)]
    pub amount: Option<Value>,
    pub metric: Option<String>,
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Value>,
    pub idempotency_key: Option<String>,
    /// Id of the usage event recorded with a metric (default `consume:<idempotency_key>`).
    pub event_id: Option<String>,
    /// The usage event's properties.
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
    pub reason: Option<String>,
}

/// Answer of `POST /v1/customers/{id}/credits/consume`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumeResult {
    pub customer: String,
    /// Credits debited.
    #[schema(value_type = String)]
    pub consumed: String,
    /// Balance right after the debit.
    #[schema(value_type = String)]
    pub balance: String,
    pub entry_id: String,
    pub idempotency_key: Option<String>,
    pub metric: Option<String>,
    #[schema(value_type = Option<String>)]
    pub quantity: Option<String>,
    /// The usage event recorded with the debit.
    pub event_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<CreditEntryRecord> for ConsumeResult {
    fn from(e: CreditEntryRecord) -> Self {
        ConsumeResult {
            customer: e.customer_id,
            consumed: (-e.amount).normalize().to_string(),
            balance: e.balance_after.normalize().to_string(),
            entry_id: e.id,
            idempotency_key: e.idempotency_key,
            metric: e.metric,
            quantity: e.quantity.map(|q| q.normalize().to_string()),
            event_id: e.event_id,
            created_at: e.created_at,
        }
    }
}

/// `POST /v1/customers/{id}/credits/consume`: atomic check-and-debit.
pub async fn consume(
    state: &AppState,
    id: &str,
    actor: Option<String>,
    input: ConsumeInput,
) -> Result<Applied<ConsumeResult>, CreditFailure> {
    check_id(id)?;
    let key = check_key(&input.idempotency_key)?;
    let now = state.clock.now();
    let (amount, metric, quantity) = match (&input.amount, &input.metric) {
        (Some(a), None) => {
            if input.quantity.is_some() || input.event_id.is_some() || input.properties.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "quantity, event_id and properties go with metric, not amount",
                )
                .into());
            }
            (parse_amount(a, "amount")?, None, None)
        }
        (None, Some(m)) => {
            let metric = state.catalog.metric(m).ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_metric",
                    format!("the catalog has no metric {m:?}"),
                )
                .with_param("metric")
            })?;
            let cost = metric.credit_cost.ok_or_else(|| {
                ApiError::unprocessable(
                    "metric_without_credit_cost",
                    format!("metric {m:?} has no credit_cost in the catalog"),
                )
                .with_param("metric")
            })?;
            let q = match &input.quantity {
                Some(q) => parse_amount(q, "quantity")?,
                None => Decimal::ONE,
            };
            if q <= Decimal::ZERO {
                return Err(ApiError::unprocessable(
                    "invalid_quantity",
                    "quantity must be positive",
                )
                .with_param("quantity")
                .into());
            }
            // Exactly, or not at all: Decimal's `*` would round (or panic) silently.
            let amount = decimal::mul(cost, q).ok_or_else(|| amount_out_of_range("quantity"))?;
            (amount, Some(metric.id.clone()), Some(q))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either amount, or metric (with an optional quantity)",
            )
            .into())
        }
    };
    if amount <= Decimal::ZERO {
        return Err(
            ApiError::unprocessable("invalid_amount", "amount must be positive")
                .with_param("amount")
                .into(),
        );
    }
    // Customers are never deleted, and an anchor change drops the cache: the cached record is enough.
    let (c, sub) = customer_and_subscription(state, id).await?;
    ensure_plan_grant(state, &c, now).await?;
    let notify = credit_notify(state, sub.as_ref(), now);
    let event = match (&metric, quantity) {
        (Some(m), Some(q)) => {
            let event_id = input
                .event_id
                .clone()
                .unwrap_or_else(|| format!("consume:{key}"));
            let wire = serde_json::json!({
                "id": event_id,
                "customer": c.id,
                "metric": m,
                "value": q.to_string(),
                "timestamp": now.to_rfc3339(),
                "properties": input.properties,
            });
            let raw = serde_json::value::to_raw_value(&wire)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut events = super::events::validate(state, &[raw.as_ref()], now).await?;
            events.pop()
        }
        _ => None,
    };
    let fingerprint = format!(
        "consume|{}|{}|{}|{}|{}",
        amount,
        metric.as_deref().unwrap_or(""),
        quantity.map(|q| q.to_string()).unwrap_or_default(),
        input.event_id.as_deref().unwrap_or(""),
        input
            .properties
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    let outcome = state
        .store
        .credit_apply(CreditRequest {
            entry_id: new_id("ce", state.clock.now()),
            customer_id: c.id.clone(),
            kind: EntryKind::Consume,
            amount: -amount,
            expires_at: None,
            reason: input.reason,
            idempotency_key: Some(key),
            fingerprint,
            actor,
            audit: false,
            event,
            quantity,
            now,
            notify,
        })
        .await?;
    match outcome {
        CreditOutcome::Applied(e) => {
            if let Some(m) = &e.metric {
                state.metrics.add_events(1, 0);
                super::entitlements::usage_changed(state, &[(c.id.as_str(), m.as_str())]);
            }
            super::topups::after_consumption(state, &c.id, e.balance_after).await;
            Ok(Applied::New(e.into()))
        }
        CreditOutcome::Replayed(e) => Ok(Applied::Replayed(e.into())),
        CreditOutcome::IdempotencyConflict => Err(conflict()),
        CreditOutcome::Insufficient { balance, required } => {
            super::topups::after_consumption(state, &c.id, balance).await;
            Err(CreditFailure::Insufficient(Insufficient {
                balance,
                required,
            }))
        }
    }
}
