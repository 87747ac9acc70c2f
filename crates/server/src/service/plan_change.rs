//! Plan changes of a customer's Stripe subscription, through Tally's API (Stripe's portal cannot
//! change usage-based subscriptions): upgrades, cancel at period end, resume.
//!
//! Stripe owns paid subscriptions, so each operation reads the subscription from Stripe and
//! answers Stripe's view in Tally's shape. An upgrade (a higher price per month, or a longer
//! interval) takes effect at once: the item moves to the new price with
//! `proration_behavior=always_invoice` (the prorated difference is invoiced and charged now) and
//! `payment_behavior=pending_if_incomplete` (if that payment fails, Stripe keeps the old price and
//! leaves the change pending). It moves money, so it starts from a `plan_changes` row committed
//! first, whose id is the idempotency key.

use chrono::{DateTime, TimeZone, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_core::period::Interval;
use tally_store::{AuditContext, CallOutcome, PlanChangeRecord};
use tally_stripe::model::{Subscription as StripeSubscription, SubscriptionStatus};
use tally_stripe::{IdempotencyKey, ItemChange, SubscriptionUpdate};
use utoipa::ToSchema;

use super::audit::{self, Target};
use super::stripe_customers::{self, stripe_error};
use super::usage;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/customers/{id}/subscription/change`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    /// The new plan (one with prices).
    pub plan: String,
    /// `month` or `year` (default: the current interval).
    pub interval: Option<String>,
}

/// Body of `POST /v1/customers/{id}/subscription/cancel`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// `true` (default): cancel when the current period ends; `false`: cancel now.
    pub at_period_end: Option<bool>,
}

/// The customer's Stripe subscription as Tally sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StripeSubscriptionView {
    /// Stripe's id (`sub_…`).
    pub id: String,
    pub customer_id: String,
    /// The catalog plan of the subscription's price (by lookup key), if it is one.
    pub plan: Option<String>,
    /// `month` or `year`.
    pub interval: Option<String>,
    /// Stripe's status: `trialing`, `active`, `past_due`, `canceled`, `unpaid`, `paused`, …
    pub status: String,
    /// End of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Whether it ends at the period end.
    pub cancel_at_period_end: bool,
    /// When it is scheduled to end.
    pub cancel_at: Option<DateTime<Utc>>,
    /// Always `stripe`.
    pub source: &'static str,
}

fn status_str(s: &SubscriptionStatus) -> String {
    match s {
        SubscriptionStatus::Incomplete => "incomplete",
        SubscriptionStatus::IncompleteExpired => "incomplete_expired",
        SubscriptionStatus::Trialing => "trialing",
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::PastDue => "past_due",
        SubscriptionStatus::Canceled => "canceled",
        SubscriptionStatus::Unpaid => "unpaid",
        SubscriptionStatus::Paused => "paused",
        SubscriptionStatus::Other(o) => o.as_str(),
    }
    .to_owned()
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// The catalog plan and interval of a lookup key.
fn plan_of(state: &AppState, lookup_key: Option<&str>) -> Option<(String, Interval, i64)> {
    let key = lookup_key?;
    state.catalog.plans().iter().find_map(|p| {
        p.prices
            .iter()
            .find(|(_, price)| price.lookup_key == key)
            .map(|(i, price)| (p.id.clone(), *i, price.amount))
    })
}

fn view(state: &AppState, customer: &str, s: &StripeSubscription) -> StripeSubscriptionView {
    let item = s.items.first();
    let plan = item.and_then(|i| plan_of(state, i.lookup_key.as_deref()));
    StripeSubscriptionView {
        id: s.id.clone(),
        customer_id: customer.to_owned(),
        plan: plan.as_ref().map(|p| p.0.clone()),
        interval: plan.as_ref().map(|p| p.1.as_str().to_owned()),
        status: status_str(&s.status),
        current_period_end: item.and_then(|i| at(i.current_period_end)),
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at.and_then(at),
        source: "stripe",
    }
}

fn no_subscription(customer: &str) -> ApiError {
    ApiError::not_found(
        "no_stripe_subscription",
        format!("customer {customer:?} has no live Stripe subscription: start one with POST /v1/checkout-sessions"),
    )
}

/// The customer's live Stripe subscription, read from Stripe.
async fn live(state: &AppState, customer: &str) -> Result<StripeSubscription, ApiError> {
    super::customers::check_id(customer)?;
    let client = stripe_customers::client(state)?;
    usage::customer(state, customer).await?;
    let link = state.store.stripe_customer(customer).await?;
    let Some(stripe_id) = link.and_then(|l| l.stripe_id) else {
        return Err(no_subscription(customer));
    };
    let subs = client
        .subscriptions_of_customer(&stripe_id)
        .await
        .map_err(stripe_error)?;
    subs.into_iter()
        .find(|s| {
            matches!(
                s.status,
                SubscriptionStatus::Active
                    | SubscriptionStatus::Trialing
                    | SubscriptionStatus::PastDue
                    | SubscriptionStatus::Unpaid
                    | SubscriptionStatus::Paused
            )
        })
        .ok_or_else(|| no_subscription(customer))
}

/// `GET`-like read used by the routes' answers.
pub async fn current(state: &AppState, customer: &str) -> Result<StripeSubscriptionView, ApiError> {
    let s = live(state, customer).await?;
    Ok(view(state, customer, &s))
}

fn new_id(now: DateTime<Utc>) -> String {
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    let ms = now.timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
    format!("pc_{ms:012x}{}", hex::encode(b))
}

/// `POST /v1/customers/{id}/subscription/change`.
pub async fn change(
    state: &AppState,
    customer: &str,
    input: ChangeInput,
    by: AuditContext,
) -> Result<StripeSubscriptionView, ApiError> {
    let sub = live(state, customer).await?;
    let client = stripe_customers::client(state)?;
    let item = sub.items.first().ok_or_else(|| no_subscription(customer))?;
    let from = plan_of(state, item.lookup_key.as_deref());
    let plan = state.catalog.plan(&input.plan).ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_plan",
            format!("the catalog has no plan {:?}", input.plan),
        )
        .with_param("plan")
    })?;
    let interval = match input.interval.as_deref() {
        Some(i) => Interval::parse(i).ok_or_else(|| {
            ApiError::unprocessable("invalid_interval", "interval must be month or year")
                .with_param("interval")
        })?,
        None => from.as_ref().map_or(Interval::Month, |f| f.1),
    };
    let Some(price) = plan.prices.get(&interval) else {
        let code = if plan.prices.is_empty() {
            "plan_not_sold"
        } else {
            "invalid_interval"
        };
        return Err(ApiError::unprocessable(
            code,
            format!("plan {:?} has no {} price", plan.id, interval.as_str()),
        )
        .with_param("interval"));
    };
    if from
        .as_ref()
        .is_some_and(|f| f.0 == plan.id && f.1 == interval)
    {
        return Ok(view(state, customer, &sub));
    }
    // An upgrade costs more per month, or commits to a longer interval.
    let is_upgrade = match &from {
        None => true,
        Some((_, from_interval, from_amount)) => {
            let new_per = i128::from(price.amount) * i128::from(from_interval.months());
            let old_per = i128::from(*from_amount) * i128::from(interval.months());
            new_per > old_per || interval.months() > from_interval.months()
        }
    };
    if !is_upgrade {
        return Err(ApiError::conflict(
            "downgrade_not_supported",
            "a change to a cheaper plan or a shorter interval takes effect at the period end, which this version does not schedule yet: cancel at period end and check out again",
        )
        .with_param("plan"));
    }
    let prices = client
        .prices_by_lookup_keys(std::slice::from_ref(&price.lookup_key))
        .await
        .map_err(stripe_error)?;
    let new_price = prices
        .into_iter()
        .find(|p| p.active && p.lookup_key.as_deref() == Some(price.lookup_key.as_str()))
        .ok_or_else(|| {
            let mut e = ApiError::unavailable(format!(
                "Stripe has no active price with lookup key {:?}: run `tally stripe push --commit`",
                price.lookup_key
            ));
            e.code = "stripe_catalog_not_pushed";
            e
        })?;
    let now = state.clock.now();
    let row = PlanChangeRecord {
        id: new_id(now),
        customer_id: customer.to_owned(),
        subscription: sub.id.clone(),
        from_plan: from.as_ref().map(|f| f.0.clone()),
        from_interval: from.as_ref().map(|f| f.1.as_str().to_owned()),
        to_plan: plan.id.clone(),
        to_interval: interval.as_str().to_owned(),
        request_id: None,
        last_error: None,
        applied: false,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_plan_change(row.clone()).await?;
    let update = SubscriptionUpdate {
        items: vec![ItemChange::Change {
            item: item.id.clone(),
            price: Some(new_price.id),
            quantity: None,
        }],
        proration_behavior: Some("always_invoice".into()),
        payment_behavior: Some("pending_if_incomplete".into()),
        ..Default::default()
    };
    let key = IdempotencyKey::from_row("plan_change", &row.id, 0);
    let updated = match client.update_subscription(&sub.id, &update, &key).await {
        Ok(u) => u,
        Err(e) => {
            let outcome = CallOutcome::Failed {
                error: e.to_string(),
                request_id: e.request_id.clone(),
            };
            if let Err(se) = state
                .store
                .finish_plan_change(&row.id, outcome, state.clock.now())
                .await
            {
                tracing::warn!(plan_change = %row.id, error = %se, "cannot record the failed change");
            }
            return Err(stripe_error(e));
        }
    };
    state
        .store
        .finish_plan_change(
            &row.id,
            CallOutcome::Created {
                stripe_id: sub.id.clone(),
                url: None,
                request_id: updated.meta.request_id.clone(),
            },
            state.clock.now(),
        )
        .await?;
    let out = view(state, customer, &updated.value);
    audit::record(
        state.store.as_ref(),
        by,
        "stripe_subscription.plan_changed",
        Target {
            kind: "stripe_subscription",
            id: &sub.id,
            customer: Some(customer),
        },
        Some(serde_json::json!({"plan": row.from_plan, "interval": row.from_interval})),
        Some(
            serde_json::json!({"plan": out.plan, "interval": out.interval,
            "plan_change": row.id, "request_id": updated.meta.request_id}),
        ),
    )
    .await?;
    Ok(out)
}

/// `POST /v1/customers/{id}/subscription/cancel` and `…/resume` (`cancel: None`).
pub async fn set_cancel(
    state: &AppState,
    customer: &str,
    cancel: Option<CancelInput>,
    by: AuditContext,
) -> Result<StripeSubscriptionView, ApiError> {
    let sub = live(state, customer).await?;
    let client = stripe_customers::client(state)?;
    let before = view(state, customer, &sub);
    let stamp = state.clock.now().timestamp_millis().to_string();
    let (action, updated) = match cancel.map(|c| c.at_period_end.unwrap_or(true)) {
        Some(false) => {
            // Ending now moves no money (no proration, no final invoice) and DELETE needs no key.
            let r = client
                .cancel_subscription(&sub.id, false, false)
                .await
                .map_err(stripe_error)?;
            ("stripe_subscription.canceled", r.value)
        }
        at_end => {
            let cancel_at_end = at_end.is_some();
            // Setting a flag moves no money: the key comes from the request itself.
            let key = IdempotencyKey::from_content(
                "subscription_cancel_at_period_end",
                &[&sub.id, if cancel_at_end { "1" } else { "0" }, &stamp],
            );
            let update = SubscriptionUpdate {
                cancel_at_period_end: Some(cancel_at_end),
                ..Default::default()
            };
            let r = client
                .update_subscription(&sub.id, &update, &key)
                .await
                .map_err(stripe_error)?;
            let action = if cancel_at_end {
                "stripe_subscription.cancel_scheduled"
            } else {
                "stripe_subscription.resumed"
            };
            (action, r.value)
        }
    };
    let out = view(state, customer, &updated);
    audit::record(
        state.store.as_ref(),
        by,
        action,
        Target {
            kind: "stripe_subscription",
            id: &sub.id,
            customer: Some(customer),
        },
        Some(serde_json::json!(before)),
        Some(serde_json::json!(out)),
    )
    .await?;
    Ok(out)
}

/// What a change of the customer's Stripe subscription to `plan`/`interval` would do: the
/// billing page's confirmation step.
#[derive(Debug, Clone)]
pub struct ChangePreview {
    /// An upgrade takes effect at once and charges the prorated difference now.
    pub upgrade: bool,
    /// Already on this plan and interval.
    pub current: bool,
    /// What Stripe would charge now (its invoice preview), for an upgrade.
    pub due_today: Option<i64>,
    /// Lowercase ISO code of `due_today`.
    pub currency: String,
    /// When the current period ends: where a downgrade would apply.
    pub period_end: Option<DateTime<Utc>>,
}

/// Previews a change (nothing is changed): the same upgrade rule as [`change`], and for an
/// upgrade Stripe's invoice preview of the prorated charge.
pub async fn preview(
    state: &AppState,
    customer: &str,
    plan_id: &str,
    interval: Interval,
) -> Result<ChangePreview, ApiError> {
    let sub = live(state, customer).await?;
    let client = stripe_customers::client(state)?;
    let item = sub.items.first().ok_or_else(|| no_subscription(customer))?;
    let from = plan_of(state, item.lookup_key.as_deref());
    let plan = state.catalog.plan(plan_id).ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_plan",
            format!("the catalog has no plan {plan_id:?}"),
        )
        .with_param("plan")
    })?;
    let price = plan.prices.get(&interval).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_interval",
            format!("plan {:?} has no {} price", plan.id, interval.as_str()),
        )
        .with_param("interval")
    })?;
    let period_end = at(item.current_period_end);
    let currency = plan.currency.code().to_ascii_lowercase();
    if from
        .as_ref()
        .is_some_and(|f| f.0 == plan.id && f.1 == interval)
    {
        return Ok(ChangePreview {
            upgrade: false,
            current: true,
            due_today: None,
            currency,
            period_end,
        });
    }
    let upgrade = match &from {
        None => true,
        Some((_, from_interval, from_amount)) => {
            let new_per = i128::from(price.amount) * i128::from(from_interval.months());
            let old_per = i128::from(*from_amount) * i128::from(interval.months());
            new_per > old_per || interval.months() > from_interval.months()
        }
    };
    if !upgrade {
        return Ok(ChangePreview {
            upgrade,
            current: false,
            due_today: None,
            currency,
            period_end,
        });
    }
    let prices = client
        .prices_by_lookup_keys(std::slice::from_ref(&price.lookup_key))
        .await
        .map_err(stripe_error)?;
    let new_price = prices
        .into_iter()
        .find(|p| p.active && p.lookup_key.as_deref() == Some(price.lookup_key.as_str()))
        .ok_or_else(|| {
            let mut e = ApiError::unavailable(format!(
                "Stripe has no active price with lookup key {:?}: run `tally stripe push --commit`",
                price.lookup_key
            ));
            e.code = "stripe_catalog_not_pushed";
            e
        })?;
    let now = state.clock.now().timestamp();
    let preview = tally_stripe::InvoicePreview {
        customer: Some(sub.customer.clone()),
        subscription: Some(sub.id.clone()),
        items: vec![ItemChange::Change {
            item: item.id.clone(),
            price: Some(new_price.id.clone()),
            quantity: None,
        }],
        proration_behavior: Some("always_invoice".into()),
        proration_date: Some(now),
    };
    // A preview creates nothing: its key comes from its content.
    let key = IdempotencyKey::from_content(
        "invoice_preview",
        &[&sub.id, &new_price.id, &now.to_string()],
    );
    let inv = client
        .preview_invoice(&preview, &key)
        .await
        .map_err(stripe_error)?;
    Ok(ChangePreview {
        upgrade,
        current: false,
        due_today: Some(inv.value.amount_due),
        currency: inv.value.currency.clone(),
        period_end,
    })
}
