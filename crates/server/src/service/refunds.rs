//! Refunds: `POST /v1/customers/{id}/refunds` refunds (part of) a payment through Stripe, and a
//! refund made in Stripe's dashboard (`charge.refunded`) is mirrored the same way. A refunded
//! credit pack takes back its credits in proportion to the amount refunded, never below a zero
//! balance; what could not be taken back is recorded on the refund. Each refund is a `refund`
//! transaction in the customer's history.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_core::credits::EntryKind;
use tally_store::{
    AuditContext, CreditOutcome, CreditRequest, NewTransaction, RefundRecord, Transaction,
};
use tally_stripe::model::{Charge, Metadata};
use tally_stripe::{IdempotencyKey, NewRefund};
use utoipa::ToSchema;

use super::credits::new_id;
use super::stripe_customers::{client, stripe_error};
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/customers/{id}/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// The payment refunded: a transaction id (`txn_…`) of kind `credit_pack` or
    /// `subscription_payment` from `GET /v1/customers/{id}/transactions`.
    pub payment: String,
    /// Minor units; by default what is left to refund of the payment.
    pub amount: Option<i64>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: String,
}

/// A refund on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundView {
    /// `rf_…`.
    pub id: String,
    pub customer: String,
    /// The transaction refunded.
    pub payment: Option<String>,
    pub stripe_payment_intent: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    /// `api` (through Tally) or `stripe` (made in Stripe's dashboard).
    pub source: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// `re_…`.
    pub stripe_refund: Option<String>,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
    /// Credits a refunded credit pack took back (decimal string).
    pub credits_taken_back: Option<String>,
    /// Credits it could not take back because the balance was lower (decimal string).
    pub credits_shortfall: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<RefundRecord> for RefundView {
    fn from(r: RefundRecord) -> Self {
        RefundView {
            id: r.id,
            customer: r.customer_id,
            payment: r.payment,
            stripe_payment_intent: r.payment_intent,
            amount: r.amount,
            currency: r.currency,
            reason: r.reason,
            source: r.source,
            status: r.state,
            stripe_refund: r.stripe_refund,
            request_id: r.request_id,
            last_error: r.last_error,
            credits_taken_back: r.credits_taken,
            credits_shortfall: r.credits_shortfall,
            created_at: r.created_at,
        }
    }
}

const REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];

/// Refunded so far by the refunds not failed of a payment intent.
fn refunded(rows: &[RefundRecord]) -> i64 {
    rows.iter()
        .filter(|r| r.state != "failed")
        .fold(0i64, |a, r| a.saturating_add(r.amount))
}

/// `POST /v1/customers/{id}/refunds`.
pub async fn create(
    state: &AppState,
    customer_id: &str,
    input: RefundInput,
    audit: AuditContext,
) -> Result<RefundView, ApiError> {
    super::customers::check_id(customer_id)?;
    super::usage::customer(state, customer_id).await?;
    if !REASONS.contains(&input.reason.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason must be one of {}", REASONS.join(", ")),
        )
        .with_param("reason"));
    }
    let stripe = client(state)?.clone();
    let payment = find_payment(state, customer_id, &input.payment).await?;
    let pi = match (&payment.stripe_payment_intent, &payment.stripe_invoice) {
        (Some(pi), _) => pi.clone(),
        (None, Some(inv)) => stripe
            .invoice_payment_intent(inv)
            .await
            .map_err(stripe_error)?
            .ok_or_else(not_refundable)?,
        (None, None) => return Err(not_refundable()),
    };
    let done = state.store.refunds_of_payment_intent(&pi).await?;
    let left = payment.amount.saturating_sub(refunded(&done));
    let amount = input.amount.unwrap_or(left);
    if amount <= 0 || amount > left {
        return Err(ApiError::bad_request(
            "invalid_refund_amount",
            format!(
                "amount must be between 1 and {left}, what is left to refund of this payment \
                 (minor units)"
            ),
        )
        .with_param("amount"));
    }
    let now = state.clock.now();
    let id = new_id("rf", now);
    let (mut row, _) = state
        .store
        .insert_refund(RefundRecord {
            id: id.clone(),
            dedup_key: id.clone(),
            customer_id: customer_id.to_owned(),
            payment: Some(payment.id.clone()),
            payment_intent: pi.clone(),
            amount,
            currency: payment.currency.clone(),
            reason: Some(input.reason.clone()),
            source: "api".into(),
            state: "pending".into(),
            stripe_refund: None,
            request_id: None,
            last_error: None,
            credits_taken: None,
            credits_shortfall: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
    let mut metadata = Metadata::new();
    metadata.insert("tally_refund_id".into(), id.clone());
    metadata.insert("tally_customer_id".into(), customer_id.to_owned());
    let res = stripe
        .create_refund(
            &NewRefund {
                payment_intent: pi.clone(),
                amount,
                reason: Some(input.reason.clone()),
                metadata,
            },
            &IdempotencyKey::from_row("refund", &id, 0),
        )
        .await;
    let refund = match res {
        Ok(r) => r,
        Err(e) => {
            row.state = "failed".into();
            row.last_error = Some(format!("Stripe: {e}"));
            row.request_id = e.request_id.clone();
            row.updated_at = state.clock.now();
            state.store.update_refund(&row).await?;
            return Err(stripe_error(e));
        }
    };
    row.state = "succeeded".into();
    row.stripe_refund = Some(refund.value.id.clone());
    row.request_id = refund.meta.request_id.clone();
    take_back(state, &mut row, &payment, &pi).await?;
    row.updated_at = state.clock.now();
    state.store.update_refund(&row).await?;
    // The same key as the `charge.refunded` this refund causes, so it is one transaction.
    if let Some(charge) = &refund.value.charge {
        if let Some(c) = stripe.charge(charge).await.map_err(stripe_error)? {
            record(state, &row, &c.value).await?;
        }
    }
    super::audit::record(
        state.store.as_ref(),
        audit,
        "refund.created",
        super::audit::Target {
            kind: "refund",
            id: &id,
            customer: Some(customer_id),
        },
        None,
        serde_json::to_value(RefundView::from(row.clone())).ok(),
    )
    .await?;
    Ok(row.into())
}

fn not_refundable() -> ApiError {
    ApiError::unprocessable(
        "payment_not_refundable",
        "the payment has no Stripe payment to refund",
    )
    .with_param("payment")
}

async fn find_payment(
    state: &AppState,
    customer_id: &str,
    payment: &str,
) -> Result<Transaction, ApiError> {
    let txns = state.store.transactions(customer_id, 1000, None).await?;
    txns.into_iter()
        .find(|t| {
            t.id == payment
                && t.status == "succeeded"
                && matches!(t.kind.as_str(), "credit_pack" | "subscription_payment")
        })
        .ok_or_else(|| {
            ApiError::not_found(
                "payment_not_found",
                format!("customer {customer_id:?} has no succeeded payment {payment:?}"),
            )
            .with_param("payment")
        })
}

/// For a credit pack's payment: takes back the pack's credits in proportion to the refund,
/// never below a zero balance, and records on the row what it took and what it could not.
async fn take_back(
    state: &AppState,
    row: &mut RefundRecord,
    payment: &Transaction,
    pi: &str,
) -> Result<(), ApiError> {
    if payment.kind != "credit_pack" || payment.amount <= 0 {
        return Ok(());
    }
    let stripe = client(state)?;
    let Some(intent) = stripe.payment_intent(pi).await.map_err(stripe_error)? else {
        return Ok(());
    };
    let Some(pack) = intent
        .value
        .metadata
        .get("tally_pack")
        .and_then(|p| state.catalog.credit_pack(p))
    else {
        return Ok(());
    };
    // In proportion to the amount refunded, whole credits, never more than the pack's.
    let due = pack
        .credits
        .checked_mul(Decimal::from(row.amount))
        .and_then(|x| x.checked_div(Decimal::from(payment.amount)))
        .map_or(pack.credits, |d| d.floor())
        .min(pack.credits);
    let customer = super::usage::customer(state, &row.customer_id).await?;
    let mut taken = Decimal::ZERO;
    for _ in 0..3 {
        let now = state.clock.now();
        let balance = super::credits::balance(state, &customer, now).await?;
        let take = due.min(balance.max(Decimal::ZERO));
        if take <= Decimal::ZERO {
            break;
        }
        let outcome = state
            .store
            .credit_apply(CreditRequest {
                entry_id: new_id("ce", now),
                customer_id: row.customer_id.clone(),
                kind: EntryKind::Adjust,
                amount: -take,
                expires_at: None,
                reason: Some(format!("credit pack {} refunded ({})", pack.id, row.id)),
                idempotency_key: Some(format!("refund:{}", row.dedup_key)),
                fingerprint: format!("refund|{}|{take}", row.dedup_key),
                actor: Some("stripe".into()),
                audit: true,
                event: None,
                quantity: None,
                now,
                notify: None,
            })
            .await?;
        match outcome {
            CreditOutcome::Applied(e) | CreditOutcome::Replayed(e) => {
                taken = -e.amount;
                break;
            }
            // The balance moved meanwhile: read it again.
            CreditOutcome::Insufficient { .. } => continue,
            CreditOutcome::IdempotencyConflict => {
                return Err(ApiError::internal(
                    "the refund's credit key was used for another amount",
                ))
            }
        }
    }
    state.credits.forget(&row.customer_id);
    row.credits_taken = Some(taken.normalize().to_string());
    let short = due.checked_sub(taken).unwrap_or(Decimal::ZERO);
    row.credits_shortfall = Some(short.max(Decimal::ZERO).normalize().to_string());
    Ok(())
}

/// The `refund` transaction of a refund, keyed like `charge.refunded`'s (the charge and the
/// amount refunded of it so far) so that both make one.
async fn record(state: &AppState, row: &RefundRecord, c: &Charge) -> Result<bool, ApiError> {
    Ok(state
        .store
        .record_transaction(NewTransaction {
            id: new_id("txn", state.clock.now()),
            key: format!("refund:{}:{}", c.id, c.amount_refunded),
            customer_id: row.customer_id.clone(),
            kind: "refund".into(),
            status: "refunded".into(),
            amount: row.amount,
            currency: row.currency.clone(),
            description: Some(match &row.reason {
                Some(r) => format!("refund ({r})"),
                None => "refund".into(),
            }),
            stripe_invoice: None,
            stripe_payment_intent: Some(row.payment_intent.clone()),
            stripe_charge: Some(c.id.clone()),
            stripe_checkout_session: None,
            stripe_subscription: None,
            occurred_at: row.created_at,
            created_at: state.clock.now(),
        })
        .await?)
}

/// `charge.refunded`: what Stripe refunded beyond the refunds Tally knows of (made in Stripe's
/// dashboard) becomes a refund row, takes back a credit pack's credits and is recorded as a
/// transaction — once, however often the event arrives. Returns what it did.
pub async fn on_charge_refunded(
    state: &AppState,
    customer_id: &str,
    c: &Charge,
    at: DateTime<Utc>,
) -> Result<String, ApiError> {
    let Some(pi) = &c.payment_intent else {
        return Ok("a charge without a payment intent: nothing to mirror".into());
    };
    let known = refunded(&state.store.refunds_of_payment_intent(pi).await?);
    let extra = c.amount_refunded.saturating_sub(known);
    if extra <= 0 {
        return Ok("refund already recorded".into());
    }
    let txns = state.store.transactions(customer_id, 1000, None).await?;
    let payment = txns.into_iter().find(|t| {
        t.stripe_payment_intent.as_deref() == Some(pi.as_str())
            && matches!(t.kind.as_str(), "credit_pack" | "subscription_payment")
    });
    let now = state.clock.now();
    let (mut row, new) = state
        .store
        .insert_refund(RefundRecord {
            id: new_id("rf", now),
            dedup_key: format!("charge:{}:{}", c.id, c.amount_refunded),
            customer_id: customer_id.to_owned(),
            payment: payment.as_ref().map(|p| p.id.clone()),
            payment_intent: pi.clone(),
            amount: extra,
            currency: c.currency.clone(),
            reason: None,
            source: "stripe".into(),
            state: "succeeded".into(),
            stripe_refund: None,
            request_id: None,
            last_error: None,
            credits_taken: None,
            credits_shortfall: None,
            created_at: at,
            updated_at: now,
        })
        .await?;
    if let Some(p) = &payment {
        if row.credits_taken.is_none() {
            take_back(state, &mut row, p, pi).await?;
            row.updated_at = state.clock.now();
            state.store.update_refund(&row).await?;
        }
    }
    record(state, &row, c).await?;
    Ok(if new {
        format!("refund of {extra} mirrored")
    } else {
        "refund already mirrored".into()
    })
}
