//! Each Tally customer's Stripe customer: created on first need, exactly once.
//!
//! A row (`stripe_customers`) is committed before Stripe is called and the create's idempotency
//! key comes from it, so two processes (or two requests) creating at once send the same key and
//! Stripe answers both with one customer. After a crash between Stripe's create and Tally's
//! commit, the customer is found by `metadata[tally_customer_id]` before anything is created
//! again (and, within Stripe's 24 hours, the same key would replay the first answer anyway).
//! The first Stripe id recorded wins.
//!
//! Email and name changes reach Stripe after the customer's commit, in the background (the
//! gateway retries); a `PUT /v1/customers/{id}` never waits for Stripe. The link's `updated_at`
//! is when Stripe last received them: a change Stripe missed (it was down past the retries) is
//! sent again before the customer's next Checkout or Portal session.

use tally_store::{Customer, StripeCustomerLink};
use tally_stripe::{Client, CustomerParams, ErrorKind, IdempotencyKey};

use crate::error::ApiError;
use crate::state::AppState;

/// The metadata key holding Tally's customer id on Stripe objects.
pub const METADATA_KEY: &str = "tally_customer_id";

/// The gateway, or `503 stripe_not_configured`.
pub fn client(state: &AppState) -> Result<&Client, ApiError> {
    state.stripe.as_ref().ok_or_else(|| {
        let mut e = ApiError::unavailable(
            "Stripe is not configured: set STRIPE_API_KEY (and STRIPE_API_BASE for the simulator)",
        );
        e.code = "stripe_not_configured";
        e
    })
}

/// A failed Stripe call as Tally answers it: Stripe refusing the request is `422
/// stripe_invalid_request` with Stripe's message and parameter; Stripe out of reach after the
/// gateway's retries is `503 stripe_unavailable`; anything else `502 stripe_error`.
pub fn stripe_error(e: tally_stripe::Error) -> ApiError {
    tracing::warn!(error = %e, request_id = ?e.request_id, "Stripe call failed");
    match e.kind {
        ErrorKind::InvalidRequest { param, message, .. } => {
            let mut err =
                ApiError::unprocessable("stripe_invalid_request", format!("Stripe: {message}"));
            err.param = param;
            err
        }
        ErrorKind::RateLimited { .. }
        | ErrorKind::Unavailable { .. }
        | ErrorKind::Timeout
        | ErrorKind::Connection(_) => {
            let mut err = ApiError::unavailable(format!(
                "Stripe did not answer after {} attempts ({}); try again later",
                e.attempts, e.kind
            ));
            err.code = "stripe_unavailable";
            err
        }
        other => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "api_error",
            "stripe_error",
            format!("Stripe: {other}"),
        ),
    }
}

fn params(customer: &Customer) -> CustomerParams {
    CustomerParams {
        email: customer.email.clone(),
        name: customer.name.clone(),
        metadata: [(METADATA_KEY.to_owned(), customer.id.clone())].into(),
    }
}

/// The Stripe customer id of `customer`, creating the Stripe customer on first need.
pub async fn ensure(state: &AppState, customer: &Customer) -> Result<String, ApiError> {
    let client = client(state)?;
    let link = state
        .store
        .claim_stripe_customer(&customer.id, state.clock.now())
        .await?;
    if let Some(id) = &link.stripe_id {
        if customer.updated_at > link.updated_at {
            // An email/name change Stripe may have missed: send it again (best effort).
            push_details(state, client, customer, id).await;
        }
        return Ok(id.clone());
    }
    let found = client
        .find_customers_by_metadata(METADATA_KEY, &customer.id)
        .await
        .map_err(stripe_error)?
        .value;
    // Several matches can only come from outside Tally; the oldest one (listed last) is Tally's.
    let stripe_id = match found.into_iter().last() {
        Some(c) => c.id,
        None => {
            let key = IdempotencyKey::from_row("stripe_customer", &customer.id, 0);
            let created = if state.config.stripe.test_clocks {
                // One test clock per customer (Stripe allows only three customers per clock),
                // made at Tally's now and named after the customer; its key comes from the same
                // row, so a retry finds the same clock.
                let clock_key = IdempotencyKey::from_row("stripe_test_clock", &customer.id, 0);
                let clock = client
                    .create_test_clock(
                        state.clock.now().timestamp(),
                        &format!("{}{}", super::clock::CLOCK_NAME_PREFIX, customer.id),
                        &clock_key,
                    )
                    .await
                    .map_err(stripe_error)?;
                client
                    .create_customer_on_clock(&params(customer), &clock.value.id, &key)
                    .await
                    .map_err(stripe_error)?
            } else {
                client
                    .create_customer(&params(customer), &key)
                    .await
                    .map_err(stripe_error)?
            };
            tracing::info!(customer = %customer.id, stripe_customer = %created.value.id,
                request_id = ?created.meta.request_id, "Stripe customer created");
            created.value.id
        }
    };
    let link = state
        .store
        .set_stripe_customer(&customer.id, &stripe_id, state.clock.now())
        .await?;
    link.stripe_id
        .ok_or_else(|| ApiError::internal("the Stripe customer link has no id after it was set"))
}

/// Sends the customer's email and name to its Stripe customer and records when.
async fn push_details(state: &AppState, client: &Client, customer: &Customer, stripe_id: &str) {
    let stamp = customer.updated_at.timestamp_millis().to_string();
    let key = IdempotencyKey::from_content("stripe_customer_update", &[stripe_id, &stamp]);
    match client
        .update_customer(stripe_id, &params(customer), &key)
        .await
    {
        Ok(_) => {
            if let Err(e) = state
                .store
                .set_stripe_customer(&customer.id, stripe_id, state.clock.now())
                .await
            {
                tracing::warn!(customer = %customer.id, error = %e, "cannot record the Stripe update");
            }
        }
        Err(e) => {
            tracing::warn!(customer = %customer.id, error = %e, request_id = ?e.request_id,
                "the email/name change did not reach Stripe; it is sent again before the next session");
        }
    }
}

/// After a committed email or name change: updates the Stripe customer in the background, if
/// there is one. Never delays the caller.
pub fn propagate(state: &AppState, customer: Customer) {
    let Some(client) = state.stripe.clone() else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        let link: Option<StripeCustomerLink> = match state.store.stripe_customer(&customer.id).await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(customer = %customer.id, error = %e, "cannot read the Stripe link");
                return;
            }
        };
        if let Some(stripe_id) = link.and_then(|l| l.stripe_id) {
            push_details(&state, &client, &customer, &stripe_id).await;
        }
    });
}
