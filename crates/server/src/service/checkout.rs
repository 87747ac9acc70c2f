//! Checkout Sessions and Customer Portal sessions: how a customer reaches Stripe's hosted pages.
//!
//! A Checkout Session starts from a `checkout_sessions` row committed first (`chk_…`); its id is
//! the idempotency key's row, `metadata[tally_checkout_id]` and, with the customer's id, what the
//! webhook side reads back (see docs/stripe.md for the metadata contract).

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tally_core::period::Interval;
use tally_store::{AuditContext, CallOutcome, CheckoutRecord};
use tally_stripe::model::{Metadata, SubscriptionStatus};
use tally_stripe::{CheckoutDiscount, CheckoutMode, IdempotencyKey, NewCheckoutSession};
use utoipa::ToSchema;

use super::audit::{self, Target};
use super::stripe_customers::{self, stripe_error, METADATA_KEY};
use super::usage;
use crate::config::is_web_url;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/checkout-sessions`: `plan` and `interval` for a subscription, or `pack` for
/// a credit pack.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutInput {
    /// The Tally customer.
    pub customer: String,
    /// A plan of the catalog with prices (subscription mode).
    pub plan: Option<String>,
    /// `month` or `year` (with `plan`).
    pub interval: Option<String>,
    /// A credit pack of the catalog (payment mode).
    pub pack: Option<String>,
    /// Where Stripe sends the customer after paying (default `TALLY_CHECKOUT_SUCCESS_URL`);
    /// `{CHECKOUT_SESSION_ID}` is filled in by Stripe.
    pub success_url: Option<String>,
    /// Checkout's back link (default `TALLY_CHECKOUT_CANCEL_URL`).
    pub cancel_url: Option<String>,
    /// A coupon of the catalog applied up front.
    pub coupon: Option<String>,
    /// A promotion code applied up front (e.g. `EARLYBIRD30`). Without `coupon` or
    /// `promotion_code` the customer may type a code on the page.
    pub promotion_code: Option<String>,
}

/// A Checkout Session to send the customer to.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutSessionView {
    /// Stripe's session id (`cs_…`).
    pub id: String,
    /// The hosted page: navigate the top window there (Checkout refuses iframes).
    pub url: String,
    /// Tally's id of the session (`chk_…`, `metadata[tally_checkout_id]`).
    pub checkout_id: String,
    /// `subscription` or `payment`.
    pub mode: String,
    /// When the session expires (RFC 3339).
    pub expires_at: DateTime<Utc>,
}

/// What a checkout sells, checked against the catalog.
enum Sale {
    Plan {
        plan: String,
        interval: Interval,
        lookup_key: String,
        trial_days: u32,
    },
    Pack {
        pack: String,
        lookup_key: String,
    },
}

fn sale(state: &AppState, input: &CheckoutInput) -> Result<Sale, ApiError> {
    match (&input.plan, &input.pack) {
        (Some(_), Some(_)) | (None, None) => Err(ApiError::unprocessable(
            "plan_or_pack_required",
            "give either plan and interval (a subscription) or pack (a credit pack)",
        )),
        (Some(plan_id), None) => {
            let plan = state.catalog.plan(plan_id).ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_plan",
                    format!("the catalog has no plan {plan_id:?}"),
                )
                .with_param("plan")
            })?;
            if plan.prices.is_empty() {
                return Err(ApiError::unprocessable(
                    "plan_not_sold",
                    format!("plan {plan_id:?} has no price: assign it with PUT /v1/customers/{{id}}/subscription"),
                )
                .with_param("plan"));
            }
            let interval = input
                .interval
                .as_deref()
                .and_then(Interval::parse)
                .ok_or_else(|| {
                    ApiError::unprocessable("invalid_interval", "interval must be month or year")
                        .with_param("interval")
                })?;
            let price = plan.prices.get(&interval).ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_interval",
                    format!("plan {plan_id:?} has no {} price", interval.as_str()),
                )
                .with_param("interval")
            })?;
            Ok(Sale::Plan {
                plan: plan.id.clone(),
                interval,
                lookup_key: price.lookup_key.clone(),
                trial_days: plan.trial_days,
            })
        }
        (None, Some(pack_id)) => {
            if input.interval.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_interval",
                    "a credit pack is bought once: interval goes with plan",
                )
                .with_param("interval"));
            }
            let pack = state.catalog.credit_pack(pack_id).ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_pack",
                    format!("the catalog has no credit pack {pack_id:?}"),
                )
                .with_param("pack")
            })?;
            Ok(Sale::Pack {
                pack: pack.id.clone(),
                lookup_key: pack.lookup_key.clone(),
            })
        }
    }
}

fn url_or_default(
    given: Option<String>,
    default: Option<&String>,
    param: &'static str,
    setting: &str,
) -> Result<String, ApiError> {
    let url = given.or_else(|| default.cloned()).ok_or_else(|| {
        ApiError::unprocessable(
            "url_required",
            format!("{param} is required (no default: set {setting})"),
        )
        .with_param(param)
    })?;
    if !is_web_url(&url) {
        return Err(ApiError::unprocessable(
            "invalid_url",
            format!("{param} must be an absolute http(s) URL"),
        )
        .with_param(param));
    }
    Ok(url)
}

/// Whether a Stripe subscription is one the customer pays for now (a second checkout would
/// make two subscriptions). An `unpaid` one (dunning ended) is not: the customer may subscribe
/// again, and the unpaid one is canceled when the new checkout completes.
fn is_live(s: &SubscriptionStatus) -> bool {
    matches!(
        s,
        SubscriptionStatus::Active
            | SubscriptionStatus::Trialing
            | SubscriptionStatus::PastDue
            | SubscriptionStatus::Paused
    )
}

fn new_id(now: DateTime<Utc>) -> String {
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    let ms = now.timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
    format!("chk_{ms:012x}{}", hex::encode(b))
}

/// `POST /v1/checkout-sessions`.
pub async fn create(
    state: &AppState,
    input: CheckoutInput,
    by: AuditContext,
) -> Result<CheckoutSessionView, ApiError> {
    let client = stripe_customers::client(state)?;
    super::customers::check_id(&input.customer).map_err(|e| e.with_param("customer"))?;
    let sale = sale(state, &input)?;
    let cfg = &state.config.stripe;
    let success_url = url_or_default(
        input.success_url.clone(),
        cfg.success_url.as_ref(),
        "success_url",
        "TALLY_CHECKOUT_SUCCESS_URL",
    )?;
    let cancel_url = url_or_default(
        input.cancel_url.clone(),
        cfg.cancel_url.as_ref(),
        "cancel_url",
        "TALLY_CHECKOUT_CANCEL_URL",
    )?;
    let now = state.clock.now();
    if input.coupon.is_some() && input.promotion_code.is_some() {
        return Err(ApiError::unprocessable(
            "one_discount",
            "give coupon or promotion_code, not both (Stripe applies one discount at checkout)",
        )
        .with_param("promotion_code"));
    }
    if let Some(c) = &input.coupon {
        let coupon = state.catalog.coupon(c).ok_or_else(|| {
            ApiError::unprocessable("unknown_coupon", format!("the catalog has no coupon {c:?}"))
                .with_param("coupon")
        })?;
        if coupon.redeem_by.is_some_and(|t| t <= now) {
            return Err(ApiError::unprocessable(
                "coupon_expired",
                format!("coupon {c:?} could be redeemed until its redeem_by date"),
            )
            .with_param("coupon"));
        }
    }
    let customer = usage::customer(state, &input.customer)
        .await
        .map_err(|e| e.with_param("customer"))?;
    let stripe_customer = stripe_customers::ensure(state, &customer).await?;

    if matches!(sale, Sale::Plan { .. }) {
        // Stripe's own view (the mirror may lag a webhook): one live subscription per customer.
        let subs = client
            .subscriptions_of_customer(&stripe_customer)
            .await
            .map_err(stripe_error)?;
        if let Some(s) = subs.iter().find(|s| is_live(&s.status)) {
            return Err(ApiError::conflict(
                "subscription_exists",
                format!(
                    "customer {:?} already has a subscription ({}): change its plan with POST /v1/customers/{}/subscription/change",
                    customer.id, s.id, customer.id
                ),
            )
            .with_param("customer"));
        }
    }

    let lookup_key = match &sale {
        Sale::Plan { lookup_key, .. } | Sale::Pack { lookup_key, .. } => lookup_key.clone(),
    };
    // Meter mode: the plan's metered prices ride along as items without a quantity.
    let metered_keys = match &sale {
        Sale::Plan { plan, interval, .. } => {
            tally_stripe::push_meters::metered_lookup_keys(&state.catalog, plan, *interval)
        }
        Sale::Pack { .. } => Vec::new(),
    };
    let mut keys = vec![lookup_key.clone()];
    keys.extend(metered_keys.iter().cloned());
    let prices = client
        .prices_by_lookup_keys(&keys)
        .await
        .map_err(stripe_error)?;
    let not_pushed = |k: &str| {
        let mut e = ApiError::unavailable(format!(
            "Stripe has no active price with lookup key {k:?}: run `tally stripe push --commit`"
        ));
        e.code = "stripe_catalog_not_pushed";
        e
    };
    let mut metered_prices = Vec::new();
    for k in &metered_keys {
        let p = prices
            .iter()
            .find(|p| p.active && p.lookup_key.as_deref() == Some(k.as_str()))
            .ok_or_else(|| not_pushed(k))?;
        metered_prices.push(p.id.clone());
    }
    let price = prices
        .into_iter()
        .find(|p| p.active && p.lookup_key.as_deref() == Some(lookup_key.as_str()))
        .ok_or_else(|| {
            let mut e = ApiError::unavailable(format!(
                "Stripe has no active price with lookup key {lookup_key:?}: run `tally stripe push --commit`"
            ));
            e.code = "stripe_catalog_not_pushed";
            e
        })?;

    let mut discounts = Vec::new();
    if let Some(c) = &input.coupon {
        discounts.push(CheckoutDiscount::Coupon(c.clone()));
    }
    if let Some(code) = &input.promotion_code {
        let found = client
            .promotion_codes_by_code(code)
            .await
            .map_err(stripe_error)?;
        let promo = found
            .into_iter()
            .find(|p| p.active && p.code.eq_ignore_ascii_case(code))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_promotion_code",
                    format!("no active promotion code {code:?}"),
                )
                .with_param("promotion_code")
            })?;
        discounts.push(CheckoutDiscount::PromotionCode(promo.id));
    }

    let expiry = i64::try_from(state.config.stripe.checkout_expiry.as_secs()).unwrap_or(3600);
    let expires_at = now + chrono::Duration::seconds(expiry);
    let (mode, plan, interval, pack) = match &sale {
        Sale::Plan { plan, interval, .. } => (
            CheckoutMode::Subscription,
            Some(plan.clone()),
            Some(interval.as_str().to_owned()),
            None,
        ),
        Sale::Pack { pack, .. } => (CheckoutMode::Payment, None, None, Some(pack.clone())),
    };
    let mode_s = match mode {
        CheckoutMode::Subscription => "subscription",
        CheckoutMode::Payment => "payment",
    };
    let row = CheckoutRecord {
        id: new_id(now),
        customer_id: customer.id.clone(),
        mode: mode_s.to_owned(),
        plan: plan.clone(),
        interval: interval.clone(),
        pack: pack.clone(),
        stripe_id: None,
        url: None,
        request_id: None,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_checkout(row.clone()).await?;

    let mut metadata: Metadata = [
        (METADATA_KEY.to_owned(), customer.id.clone()),
        ("tally_checkout_id".to_owned(), row.id.clone()),
    ]
    .into();
    for (k, v) in [
        ("tally_plan", &plan),
        ("tally_interval", &interval),
        ("tally_pack", &pack),
    ] {
        if let Some(v) = v {
            metadata.insert(k.to_owned(), v.clone());
        }
    }
    let (subscription_metadata, payment_intent_metadata) = match mode {
        CheckoutMode::Subscription => (
            [(METADATA_KEY.to_owned(), customer.id.clone())].into(),
            Metadata::new(),
        ),
        CheckoutMode::Payment => (Metadata::new(), {
            let mut m: Metadata = [
                (METADATA_KEY.to_owned(), customer.id.clone()),
                ("tally_checkout_id".to_owned(), row.id.clone()),
            ]
            .into();
            if let Some(p) = &pack {
                m.insert("tally_pack".to_owned(), p.clone());
            }
            m
        }),
    };
    let trial_period_days = match &sale {
        Sale::Plan { trial_days, .. } if *trial_days > 0 => Some(*trial_days),
        _ => None,
    };
    let session = NewCheckoutSession {
        mode,
        customer: Some(stripe_customer),
        line_items: vec![(price.id, 1)],
        metered_prices,
        success_url,
        cancel_url: Some(cancel_url),
        client_reference_id: Some(customer.id.clone()),
        allow_promotion_codes: discounts.is_empty(),
        trial_period_days,
        metadata,
        subscription_metadata,
        payment_intent_metadata,
        discounts,
        expires_at: Some(expires_at.timestamp()),
    };
    let key = IdempotencyKey::from_row("checkout_session", &row.id, 0);
    let created = match client.create_checkout_session(&session, &key).await {
        Ok(c) => c,
        Err(e) => {
            let outcome = CallOutcome::Failed {
                error: e.to_string(),
                request_id: e.request_id.clone(),
            };
            if let Err(se) = state
                .store
                .finish_checkout(&row.id, outcome, state.clock.now())
                .await
            {
                tracing::warn!(checkout = %row.id, error = %se, "cannot record the failed checkout");
            }
            return Err(stripe_error(e));
        }
    };
    let cs = created.value;
    if !created.meta.replayed {
        state.metrics.add_checkout_session("created");
    }
    let url = cs.url.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "api_error",
            "stripe_error",
            "Stripe returned a Checkout Session without a URL".into(),
        )
    })?;
    state
        .store
        .finish_checkout(
            &row.id,
            CallOutcome::Created {
                stripe_id: cs.id.clone(),
                url: Some(url.clone()),
                request_id: created.meta.request_id.clone(),
            },
            state.clock.now(),
        )
        .await?;
    audit::record(
        state.store.as_ref(),
        by,
        "checkout_session.created",
        Target {
            kind: "checkout_session",
            id: &row.id,
            customer: Some(&customer.id),
        },
        None,
        Some(serde_json::json!({
            "stripe_id": cs.id, "mode": mode_s, "plan": plan, "interval": interval, "pack": pack,
            "request_id": created.meta.request_id,
        })),
    )
    .await?;
    Ok(CheckoutSessionView {
        id: cs.id,
        url,
        checkout_id: row.id,
        mode: mode_s.to_owned(),
        expires_at,
    })
}

/// Body of `POST /v1/portal-sessions`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalInput {
    /// The Tally customer.
    pub customer: String,
    /// The portal's back link (default `TALLY_PORTAL_RETURN_URL`).
    pub return_url: Option<String>,
}

/// A Customer Portal session.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionView {
    /// Where to send the customer (top window: the portal refuses iframes).
    pub url: String,
}

/// `POST /v1/portal-sessions`.
pub async fn portal(state: &AppState, input: PortalInput) -> Result<PortalSessionView, ApiError> {
    let client = stripe_customers::client(state)?;
    super::customers::check_id(&input.customer).map_err(|e| e.with_param("customer"))?;
    let return_url = url_or_default(
        input.return_url,
        state.config.stripe.portal_return_url.as_ref(),
        "return_url",
        "TALLY_PORTAL_RETURN_URL",
    )?;
    let customer = usage::customer(state, &input.customer)
        .await
        .map_err(|e| e.with_param("customer"))?;
    let stripe_customer = stripe_customers::ensure(state, &customer).await?;
    // The configuration `tally stripe push` made for this catalog; Stripe's default otherwise.
    let slug = tally_stripe::push::catalog_slug(&state.catalog);
    let configuration = client
        .portal_configurations()
        .await
        .map_err(stripe_error)?
        .into_iter()
        .find(|c| c.active && c.metadata.get("tally_catalog") == Some(&slug))
        .map(|c| c.id);
    // A portal session creates nothing lasting and moves no money: its key comes from the
    // request itself, so the gateway's retries of this call reuse it.
    let stamp = state.clock.now().timestamp_millis().to_string();
    let key =
        IdempotencyKey::from_content("portal_session", &[&stripe_customer, &return_url, &stamp]);
    let session = client
        .create_portal_session(
            &stripe_customer,
            Some(&return_url),
            configuration.as_deref(),
            &key,
        )
        .await
        .map_err(stripe_error)?;
    Ok(PortalSessionView {
        url: session.value.url,
    })
}
