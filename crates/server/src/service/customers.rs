//! Customers, local subscriptions and the billing summary.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::period::Interval;
use tally_store::AuditContext;
use tally_store::{Customer, CustomerUpsert, StoredInvoice, Subscription, SubscriptionUpsert};
use utoipa::ToSchema;

use super::usage::{self, PeriodView, UpcomingInvoice, UsageReport};
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `PUT /v1/customers/{id}`. Omitted fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    pub email: Option<String>,
    pub name: Option<String>,
    /// An object of string values.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `true`: send this customer no email (trial ending, payment failed, …); `false`: send
    /// them again. Notifications to the app's webhook endpoints are unaffected.
    pub email_opt_out: Option<bool>,
}

/// Checks a customer id from a path.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if tally_store::is_valid_customer_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_customer_id",
            "customer ids are 1–255 characters of A–Z a–z 0–9 _ . : - @",
        )
        .with_param("id"))
    }
}

/// `PUT /v1/customers/{id}`: returns the customer and whether it was created.
pub async fn put(
    state: &AppState,
    id: &str,
    input: CustomerInput,
    audit: AuditContext,
) -> Result<(Customer, bool), ApiError> {
    check_id(id)?;
    if let Some(e) = &input.email {
        if e.len() > 320 || !e.contains('@') {
            return Err(ApiError::unprocessable(
                "invalid_email",
                "email must be an address like a@example.com",
            )
            .with_param("email"));
        }
    }
    if let Some(n) = &input.name {
        if n.len() > 1000 {
            return Err(
                ApiError::unprocessable("invalid_name", "name is at most 1000 characters")
                    .with_param("name"),
            );
        }
    }
    if let Some(m) = &input.metadata {
        let ok = m.as_object().is_some_and(|o| {
            o.len() <= 50
                && o.iter()
                    .all(|(k, v)| k.len() <= 40 && v.as_str().is_some_and(|s| s.len() <= 500))
        });
        if !ok {
            return Err(ApiError::unprocessable(
                "invalid_metadata",
                "metadata must be an object of at most 50 string values (keys ≤ 40, values ≤ 500 characters)",
            )
            .with_param("metadata"));
        }
    }
    let out = state
        .store
        .upsert_customer_audited(
            CustomerUpsert {
                email_opt_out: input.email_opt_out,
                id: id.to_owned(),
                email: input.email,
                name: input.name,
                metadata: input.metadata,
                now: state.clock.now(),
            },
            Some(audit),
        )
        .await?;
    Ok(out)
}

/// `GET /v1/customers/{id}`.
pub async fn get(state: &AppState, id: &str) -> Result<Customer, ApiError> {
    check_id(id)?;
    usage::customer(state, id).await
}

/// Body of `PUT /v1/customers/{id}/subscription`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    pub plan: String,
    /// `month` (default) or `year`.
    pub interval: Option<String>,
    /// A catalog coupon to redeem: its `redeem_by` and `max_redemptions` (across all customers)
    /// are enforced; a customer redeeming a coupon again is not counted twice.
    pub coupon: Option<String>,
}

/// `PUT /v1/customers/{id}/subscription`: assigns a plan locally.
pub async fn put_subscription(
    state: &AppState,
    id: &str,
    input: SubscriptionInput,
    audit: AuditContext,
) -> Result<Subscription, ApiError> {
    check_id(id)?;
    let plan = state.catalog.plan(&input.plan).ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_plan",
            format!("the catalog has no plan {:?}", input.plan),
        )
        .with_param("plan")
    })?;
    let interval_s = input.interval.as_deref().unwrap_or("month");
    let interval = Interval::parse(interval_s).ok_or_else(|| {
        ApiError::unprocessable("invalid_interval", "interval must be month or year")
            .with_param("interval")
    })?;
    if !plan.prices.is_empty() && !plan.prices.contains_key(&interval) {
        return Err(ApiError::unprocessable(
            "invalid_interval",
            format!("plan {:?} has no {} price", plan.id, interval.as_str()),
        )
        .with_param("interval"));
    }
    usage::customer(state, id).await?;
    if let Some(c) = &input.coupon {
        redeem_coupon(state, id, &plan.id, c, audit.clone()).await?;
    }
    let sub = state
        .store
        .put_subscription_audited(
            SubscriptionUpsert {
                customer_id: id.to_owned(),
                plan: plan.id.clone(),
                interval: interval.as_str().to_owned(),
                status: "active".into(),
                source: "local".into(),
                now: state.clock.now(),
            },
            Some(audit),
        )
        .await?;
    state.credits.forget(id);
    Ok(sub)
}

/// Redeems a catalog coupon for a local subscription (audited as `coupon.redeemed`).
async fn redeem_coupon(
    state: &AppState,
    customer: &str,
    plan: &str,
    coupon_id: &str,
    audit: AuditContext,
) -> Result<(), ApiError> {
    let coupon = state.catalog.coupon(coupon_id).ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_coupon",
            format!("the catalog has no coupon {coupon_id:?}"),
        )
        .with_param("coupon")
    })?;
    let now = state.clock.now();
    if coupon.redeem_by.is_some_and(|t| t <= now) {
        return Err(ApiError::unprocessable(
            "coupon_expired",
            format!("coupon {coupon_id:?} could be redeemed until its redeem_by date"),
        )
        .with_param("coupon"));
    }
    if !coupon.plans.is_empty() && !coupon.plans.iter().any(|p| p == plan) {
        return Err(ApiError::unprocessable(
            "coupon_not_applicable",
            format!("coupon {coupon_id:?} does not apply to plan {plan:?}"),
        )
        .with_param("coupon"));
    }
    let outcome = state
        .store
        .redeem_coupon(
            tally_store::CouponRedemption {
                coupon_id: coupon.id.clone(),
                customer_id: customer.to_owned(),
                max_redemptions: coupon.max_redemptions,
                now,
            },
            Some(audit),
        )
        .await?;
    match outcome {
        tally_store::RedeemOutcome::Exhausted => Err(ApiError::conflict(
            "coupon_exhausted",
            format!(
                "coupon {coupon_id:?} has been redeemed its maximum {} times",
                coupon.max_redemptions.unwrap_or(0)
            ),
        )
        .with_param("coupon")),
        tally_store::RedeemOutcome::Redeemed(_) | tally_store::RedeemOutcome::AlreadyRedeemed => {
            Ok(())
        }
    }
}

/// `GET /v1/customers/{id}/invoices`.
pub async fn invoices(state: &AppState, id: &str) -> Result<Vec<StoredInvoice>, ApiError> {
    check_id(id)?;
    usage::customer(state, id).await?;
    Ok(state.store.list_invoices(id).await?)
}

/// Everything a billing page shows, in one call.
#[derive(Serialize, ToSchema)]
pub struct BillingSummary {
    #[schema(value_type = Object)]
    pub customer: Customer,
    #[schema(value_type = Option<Object>)]
    pub subscription: Option<Subscription>,
    pub plan: Option<String>,
    /// The plan whose entitlements apply now: the free plan's while a failed payment restricts
    /// the customer (see `restricted`), else `plan`.
    pub entitled_plan: Option<String>,
    /// `past_due` or `unpaid` while an overdue payment restricts the customer to the free plan.
    pub restricted: Option<super::entitlements::Restriction>,
    pub period: PeriodView,
    pub usage: UsageReport,
    pub upcoming_invoice: Option<UpcomingInvoice>,
    /// The most recent closed invoices, newest first.
    #[schema(value_type = Vec<Object>)]
    pub invoices: Vec<InvoiceView>,
    /// Prepaid credits: `{"balance"}` (details at `GET /v1/customers/{id}/credits`).
    #[schema(value_type = Option<Object>)]
    pub credits: Option<Value>,
    /// The most recent transactions (payments, credit-pack purchases, failed payments, refunds),
    /// newest first; all of them at `GET /v1/customers/{id}/transactions`.
    pub payments: Vec<super::stripe_events::transactions::TransactionView>,
}

/// A closed invoice on the wire.
#[derive(Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: String,
    pub customer: String,
    pub plan: String,
    pub interval: String,
    pub period: PeriodView,
    pub currency: String,
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
    #[schema(value_type = Vec<Object>)]
    pub lines: Value,
    pub created_at: chrono::DateTime<Utc>,
    /// How the invoice's usage lines reach Stripe, for a customer with a Stripe subscription
    /// (absent otherwise, and until the pusher has seen the invoice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe: Option<super::usage_push::StripeState>,
}

impl From<StoredInvoice> for InvoiceView {
    fn from(i: StoredInvoice) -> Self {
        InvoiceView {
            lines: i
                .body
                .get("lines")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
            id: i.id,
            customer: i.customer_id,
            plan: i.plan,
            interval: i.interval,
            period: PeriodView {
                start: i.period_start,
                end: i.period_end,
            },
            currency: i.currency,
            subtotal: i.subtotal,
            discount: i.discount,
            total: i.total,
            created_at: i.created_at,
            stripe: None,
        }
    }
}

/// `GET /v1/customers/{id}/invoices`: closed invoices, newest first, each with its Stripe state.
pub async fn invoice_views(state: &AppState, id: &str) -> Result<Vec<InvoiceView>, ApiError> {
    let invoices = invoices(state, id).await?;
    with_stripe_state(state, id, invoices).await
}

/// The wire form of a customer's closed invoices, each with the state of its Stripe push.
async fn with_stripe_state(
    state: &AppState,
    id: &str,
    invoices: Vec<StoredInvoice>,
) -> Result<Vec<InvoiceView>, ApiError> {
    let pushes = state.store.pushes_of_customer(id).await?;
    Ok(invoices
        .into_iter()
        .map(|i| {
            let push = pushes.iter().find(|p| p.invoice_id == i.id);
            let mut v = InvoiceView::from(i);
            v.stripe = push.map(super::usage_push::StripeState::from);
            v
        })
        .collect())
}

/// `GET /v1/customers/{id}/billing`.
pub async fn billing(state: &AppState, id: &str) -> Result<BillingSummary, ApiError> {
    check_id(id)?;
    let c = usage::customer(state, id).await?;
    let sub = state.store.get_subscription(id).await?;
    let billed = usage::billed_plan(&state.catalog, sub.as_ref());
    let period = c.allowance_period(state.clock.now());
    let anchor = c.allowance().anchor_at(period.start);
    let period_usage = usage::period_usage(state, &c, period).await?;
    let report = usage::report(&state.catalog, &c, billed.as_ref(), period, &period_usage)?;
    let upcoming = match &billed {
        Some(b) => Some(UpcomingInvoice {
            customer: c.id.clone(),
            period: period.into(),
            invoice: usage::rate_period(&state.catalog, b, anchor, period, &period_usage)
                .map_err(|m| ApiError::unprocessable("rating_failed", m))?,
        }),
        None => None,
    };
    let mut invoices = state.store.list_invoices(id).await?;
    invoices.truncate(12);
    let balance = super::credits::balance(state, &c, state.clock.now()).await?;
    let entitled = super::entitlements::effective_plan(state, sub.as_ref(), state.clock.now());
    Ok(BillingSummary {
        entitled_plan: entitled.as_ref().map(|(p, _)| p.id.clone()),
        restricted: entitled.and_then(|(_, r)| r),
        plan: billed.map(|b| b.plan.id),
        subscription: sub,
        period: period.into(),
        usage: report,
        upcoming_invoice: upcoming,
        invoices: with_stripe_state(state, id, invoices).await?,
        credits: Some(serde_json::json!({ "balance": balance.normalize().to_string() })),
        payments: state
            .store
            .transactions(id, 10, None)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
        customer: c,
    })
}
