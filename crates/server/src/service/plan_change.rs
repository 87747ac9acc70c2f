//! Plan changes of a customer's Stripe subscription, through Tally's API (Stripe's portal cannot
//! change usage-based subscriptions): upgrades, downgrades at the period end, cancel at period
//! end, resume.
//!
//! Stripe owns paid subscriptions, so each operation reads the subscription from Stripe and
//! answers Stripe's view in Tally's shape. An upgrade (a higher price per month, or a longer
//! interval) takes effect at once: the item moves to the new price with
//! `proration_behavior=always_invoice` (the prorated difference is invoiced and charged now) and
//! `payment_behavior=pending_if_incomplete` (if that payment fails, Stripe keeps the old price and
//! leaves the change pending). It moves money, so it starts from a `plan_changes` row committed
//! first, whose id is the idempotency key.
//!
//! A downgrade (cheaper per month, or a shorter interval) keeps what was paid for until the
//! period ends: the subscription gets a Stripe subscription schedule with two phases — the
//! current price until the period end, then the new price — released at its end, so Stripe
//! itself switches the price at the renewal and bills the cheaper price from then on, with no
//! proration. Until then every answer shows the change as `pending_change`.

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
use super::stripe_schedule::{self, PendingCancellation, PendingChange};
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
    /// A change of plan scheduled for the period end (a downgrade), if any.
    pub pending_change: Option<PendingChange>,
    /// A cancellation scheduled for later, if any.
    pub pending_cancellation: Option<PendingCancellation>,
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

fn view_with(
    state: &AppState,
    customer: &str,
    s: &StripeSubscription,
    pending_change: Option<PendingChange>,
) -> StripeSubscriptionView {
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
        pending_change,
        pending_cancellation: stripe_schedule::pending_cancellation(s),
        source: "stripe",
    }
}

/// The subscription in Tally's shape, with its pending change read from its schedule.
async fn view(
    state: &AppState,
    customer: &str,
    s: &StripeSubscription,
) -> Result<StripeSubscriptionView, ApiError> {
    let client = stripe_customers::client(state)?;
    let pending = match stripe_schedule::schedule_of(client, s)
        .await
        .map_err(stripe_error)?
    {
        Some(sc) => stripe_schedule::next_phase(&state.catalog, &sc),
        None => None,
    };
    Ok(view_with(state, customer, s, pending))
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
    view(state, customer, &s).await
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
    let schedule = stripe_schedule::schedule_of(client, &sub)
        .await
        .map_err(stripe_error)?;
    let pending = schedule
        .as_ref()
        .and_then(|sc| stripe_schedule::next_phase(&state.catalog, sc));
    if from
        .as_ref()
        .is_some_and(|f| f.0 == plan.id && f.1 == interval)
    {
        // Back to the plan in force: a pending downgrade is dropped.
        if let (Some(sc), Some(_)) = (&schedule, &pending) {
            stripe_schedule::release(client, &sc.id)
                .await
                .map_err(stripe_error)?;
            let sub = live(state, customer).await?;
            let out = view_with(state, customer, &sub, None);
            record(
                state,
                by,
                "stripe_subscription.pending_change_dropped",
                customer,
                &sub.id,
                serde_json::json!({"pending_change": pending}),
                serde_json::json!(out),
            )
            .await?;
            return Ok(out);
        }
        return view(state, customer, &sub).await;
    }
    if pending
        .as_ref()
        .is_some_and(|p| p.plan == plan.id && p.interval == interval.as_str())
    {
        // The same downgrade again: already scheduled.
        return Ok(view_with(state, customer, &sub, pending));
    }
    if sub.pending_update.is_some() {
        return Err(ApiError::conflict(
            "plan_change_pending_payment",
            "an earlier upgrade is waiting for its payment: the customer can pay its invoice, or the change lapses within 23 hours",
        ));
    }
    // An upgrade costs more per month, or commits to a longer interval.
    let is_upgrade = match &from {
        None => true,
        Some((_, from_interval, from_amount)) => {
            let new_per = i128::from(price.amount) * i128::from(from_interval.months());
            let old_per = i128::from(*from_amount) * i128::from(interval.months());
            (new_per > old_per && interval.months() >= from_interval.months())
                || interval.months() > from_interval.months()
        }
    };
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
    if !is_upgrade {
        return downgrade(state, customer, &sub, schedule, &row, new_price.id, by).await;
    }
    if let Some(sc) = &schedule {
        // An upgrade now replaces a downgrade that was waiting for the period end.
        stripe_schedule::release(client, &sc.id)
            .await
            .map_err(stripe_error)?;
    }
    let mut items = vec![ItemChange::Change {
        item: item.id.clone(),
        price: Some(new_price.id),
        quantity: None,
    }];
    items.extend(metered_item_changes(state, client, &sub, &plan.id, interval).await?);
    let update = SubscriptionUpdate {
        items,
        proration_behavior: Some("always_invoice".into()),
        payment_behavior: Some("pending_if_incomplete".into()),
        ..Default::default()
    };
    let key = IdempotencyKey::from_row("plan_change", &row.id, 0);
    let updated = match client.update_subscription(&sub.id, &update, &key).await {
        Ok(u) => u,
        Err(e) => {
            fail_row(state, &row.id, e.to_string(), e.request_id.clone()).await;
            return Err(stripe_error(e));
        }
    };
    if let Some(pu) = &updated.value.pending_update {
        // Stripe kept the old price: the prorated invoice was not paid.
        fail_row(
            state,
            &row.id,
            "the upgrade's payment failed; Stripe keeps it pending".into(),
            updated.meta.request_id.clone(),
        )
        .await;
        let until =
            at(pu.expires_at).map_or_else(String::new, |t| format!(" until {}", t.to_rfc3339()));
        return Err(ApiError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "upgrade_payment_failed",
            format!(
                "the upgrade's prorated invoice could not be paid: the subscription stays on {}; the change waits for that invoice to be paid{until}",
                from.as_ref().map_or("its current plan".to_owned(), |f| format!("{} {}", f.0, f.1.as_str()))
            ),
        )
        .with_param("plan"));
    }
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
    let out = view_with(state, customer, &updated.value, None);
    record(
        state,
        by,
        "stripe_subscription.plan_changed",
        customer,
        &sub.id,
        serde_json::json!({"plan": row.from_plan, "interval": row.from_interval}),
        serde_json::json!({"plan": out.plan, "interval": out.interval,
            "plan_change": row.id, "request_id": updated.meta.request_id}),
    )
    .await?;
    Ok(out)
}

async fn fail_row(state: &AppState, id: &str, error: String, request_id: Option<String>) {
    let outcome = CallOutcome::Failed { error, request_id };
    if let Err(se) = state
        .store
        .finish_plan_change(id, outcome, state.clock.now())
        .await
    {
        tracing::warn!(plan_change = %id, error = %se, "cannot record the failed change");
    }
}

async fn record(
    state: &AppState,
    by: AuditContext,
    action: &str,
    customer: &str,
    subscription: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Result<(), ApiError> {
    audit::record(
        state.store.as_ref(),
        by,
        action,
        Target {
            kind: "stripe_subscription",
            id: subscription,
            customer: Some(customer),
        },
        Some(before),
        Some(after),
    )
    .await?;
    Ok(())
}

/// Schedules a downgrade at the period end: a subscription schedule (made from the
/// subscription, or the one it has) whose first phase is the current period on the current
/// price and whose second is one interval of the new price; released at its end.
async fn downgrade(
    state: &AppState,
    customer: &str,
    sub: &StripeSubscription,
    schedule: Option<tally_stripe::model::SubscriptionSchedule>,
    row: &PlanChangeRecord,
    new_price: String,
    by: AuditContext,
) -> Result<StripeSubscriptionView, ApiError> {
    let client = stripe_customers::client(state)?;
    let item = sub.items.first().ok_or_else(|| no_subscription(customer))?;
    if sub.cancel_at_period_end || sub.cancel_at.is_some() {
        fail_row(
            state,
            &row.id,
            "the subscription is to be canceled".into(),
            None,
        )
        .await;
        return Err(ApiError::conflict(
            "subscription_canceling",
            "the subscription ends at the period end: resume it before changing its plan",
        ));
    }
    let sc = match schedule {
        Some(sc) => sc,
        None => {
            // The key comes from the row: a retry makes the same schedule, never a second.
            let key = IdempotencyKey::from_row("plan_change_schedule", &row.id, 0);
            match client
                .create_schedule_from_subscription(&sub.id, &key)
                .await
            {
                Ok(r) => r.value,
                Err(e) => {
                    fail_row(state, &row.id, e.to_string(), e.request_id.clone()).await;
                    return Err(stripe_error(e));
                }
            }
        }
    };
    // The current phase keeps every item (metered ones too); the next has the new price and, in
    // meter mode, the new plan's metered prices.
    let current: Vec<(String, Option<u64>)> = sub
        .items
        .iter()
        .map(|it| {
            let q = if it.id == item.id {
                Some(it.quantity.unwrap_or(1))
            } else {
                it.quantity
            };
            (it.price.clone(), q)
        })
        .collect();
    let mut next = vec![(new_price, Some(1))];
    let to_interval = Interval::parse(&row.to_interval).unwrap_or(Interval::Month);
    let metered: Vec<ItemChange> =
        metered_item_changes(state, client, &no_items(sub), &row.to_plan, to_interval).await?;
    for m in metered {
        if let ItemChange::Add { price, .. } = m {
            next.push((price, None));
        }
    }
    let phases = vec![
        (
            Some(item.current_period_start),
            Some(item.current_period_end),
            current,
        ),
        (None, None, next),
    ];
    let key = IdempotencyKey::from_row("plan_change", &row.id, 0);
    let updated = match client.set_schedule_phases(&sc.id, &phases, &key).await {
        Ok(r) => r,
        Err(e) => {
            fail_row(state, &row.id, e.to_string(), e.request_id.clone()).await;
            return Err(stripe_error(e));
        }
    };
    state
        .store
        .finish_plan_change(
            &row.id,
            CallOutcome::Created {
                stripe_id: sc.id.clone(),
                url: None,
                request_id: updated.meta.request_id.clone(),
            },
            state.clock.now(),
        )
        .await?;
    let pending = stripe_schedule::next_phase(&state.catalog, &updated.value);
    let out = view_with(state, customer, sub, pending);
    record(
        state,
        by,
        "stripe_subscription.downgrade_scheduled",
        customer,
        &sub.id,
        serde_json::json!({"plan": row.from_plan, "interval": row.from_interval}),
        serde_json::json!({"pending_change": out.pending_change, "plan_change": row.id,
            "schedule": sc.id, "request_id": updated.meta.request_id}),
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
    let before = view(state, customer, &sub).await?;
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
        None if !sub.cancel_at_period_end && sub.cancel_at.is_none() => {
            // Nothing to resume (and a subscription its schedule manages refuses the flag).
            return Ok(before);
        }
        at_end => {
            let cancel_at_end = at_end.is_some();
            if let (true, Some(sc)) = (cancel_at_end, &sub.schedule) {
                // Ending at the period end replaces a downgrade scheduled for then (and Stripe
                // refuses a cancellation on a subscription its schedule manages).
                stripe_schedule::release(client, sc)
                    .await
                    .map_err(stripe_error)?;
            }
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
    let out = view(state, customer, &updated).await?;
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

/// Meter mode: the item changes that swap the subscription's metered items for those of the
/// new plan and interval (the meter's events of the period are rated by the price in force at
/// its end). Nothing outside meter mode.
async fn metered_item_changes(
    state: &AppState,
    client: &tally_stripe::Client,
    sub: &StripeSubscription,
    plan: &str,
    interval: Interval,
) -> Result<Vec<ItemChange>, ApiError> {
    if state.catalog.stripe_usage != tally_core::catalog::StripeUsage::Meters {
        return Ok(Vec::new());
    }
    let keys = tally_stripe::push_meters::metered_lookup_keys(&state.catalog, plan, interval);
    let mut out: Vec<ItemChange> = Vec::new();
    let mut kept = Vec::new();
    for it in sub.items.iter().skip(1) {
        match &it.lookup_key {
            Some(k) if keys.contains(k) => kept.push(k.clone()),
            _ => out.push(ItemChange::Remove {
                item: it.id.clone(),
            }),
        }
    }
    let wanted: Vec<String> = keys.into_iter().filter(|k| !kept.contains(k)).collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let prices = client
        .prices_by_lookup_keys(&wanted)
        .await
        .map_err(stripe_error)?;
    for k in &wanted {
        let p = prices
            .iter()
            .find(|p| p.active && p.lookup_key.as_deref() == Some(k.as_str()))
            .ok_or_else(|| {
                let mut e = ApiError::unavailable(format!(
                    "Stripe has no active price with lookup key {k:?}: run `tally stripe push --commit`"
                ));
                e.code = "stripe_catalog_not_pushed";
                e
            })?;
        out.push(ItemChange::Add {
            price: p.id.clone(),
            quantity: None,
        });
    }
    Ok(out)
}

/// The subscription with only its first (base) item: the metered prices a plan needs, all added.
fn no_items(sub: &StripeSubscription) -> StripeSubscription {
    let mut s = sub.clone();
    s.items.truncate(1);
    s
}
