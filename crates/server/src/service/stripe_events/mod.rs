//! Stripe → Tally: `POST /webhooks/stripe` stores each verified event in the inbox (answering
//! only after the commit), and a worker applies the inbox.
//!
//! The worker claims pending events (a lease per event, `FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! so processes sharing a database each take different events), oldest first and never an event
//! while an earlier one of the same Stripe object is unfinished. Applying is idempotent, so a
//! duplicate delivery, a replay or a claim taken over after a crash changes nothing twice:
//! subscriptions are re-read from Stripe (the latest state, whatever order events arrive in) and
//! mirrored; a credit pack is granted with the Checkout Session as idempotency key;
//! transactions are recorded once by key. Failures are transient (retried with backoff, attempts
//! counted) or permanent (parked with the reason); events of objects that are not Tally's are
//! recorded as ignored.

mod invoices;
pub mod notify;
pub mod transactions;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use tally_store::{
    InboxEvent, InboxOutcome, NewInboxEvent, NewTransaction, StoreError, StripeSubscriptionUpsert,
};
use tally_stripe::event::{Event, EventKind};
use tally_stripe::model::{
    CheckoutSession, Invoice, PaymentMethod, SetupIntent, Subscription as StripeSub,
    SubscriptionStatus,
};
use tally_stripe::RawEvent;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::service::stripe_schedule;
use crate::state::AppState;

/// The worker's name in logs and metrics.
pub const WORKER: &str = "stripe_events";
/// Events claimed per round.
const BATCH: usize = 20;
/// How long a claim keeps other processes off an event: a process killed while applying it
/// delays it by this long at most. Applying takes milliseconds (plus Stripe's retries); should it
/// ever outlast the claim, another process applying the event as well changes nothing twice.
pub const CLAIM: Duration = Duration::from_secs(15);
/// How often the worker looks for events stored by other processes and for retries due.
const POLL: Duration = Duration::from_millis(500);
/// Attempts before a transient failure is parked.
pub const MAX_ATTEMPTS: i32 = 12;

/// `POST /webhooks/stripe`: verifies the signature on the raw body, then stores the event.
/// Returns whether it was new (a repeated delivery stores nothing).
pub async fn receive(
    state: &AppState,
    signature: Option<&str>,
    body: &[u8],
) -> Result<bool, ApiError> {
    let secrets: Vec<&str> = state
        .config
        .stripe_webhook_secrets
        .iter()
        .map(String::as_str)
        .collect();
    if secrets.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "webhooks_not_configured",
            "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET".into(),
        ));
    }
    let Some(header) = signature else {
        return Err(ApiError::bad_request(
            "missing_signature",
            "the Stripe-Signature header is missing",
        ));
    };
    let now = state.clock.now();
    // Stripe signs with its own time, which `tally clock advance` does not move.
    tally_stripe::webhook::verify(
        body,
        header,
        &secrets,
        state.clock.unshifted_now().timestamp(),
        tally_stripe::webhook::DEFAULT_TOLERANCE,
    )
    .map_err(|e| ApiError::bad_request("invalid_signature", e.to_string()))?;
    let event = RawEvent::parse(body).ok_or_else(|| {
        ApiError::bad_request(
            "malformed_event",
            "the body is not a Stripe event (JSON with id, type and created)",
        )
    })?;
    let event_type = event.event_type.clone();
    let new = store_event(state, event, "webhook", now).await?;
    if !new {
        state.metrics.add_stripe_event(&event_type, "duplicate");
    }
    Ok(new)
}

/// Stores an event in the inbox and wakes the worker when it is new.
pub async fn store_event(
    state: &AppState,
    event: RawEvent,
    source: &str,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let new = state
        .store
        .inbox_insert(NewInboxEvent {
            event_id: event.id,
            event_type: event.event_type,
            object_id: event.object_id,
            created: event.created,
            body: event.body,
            source: source.to_owned(),
            received_at: now,
        })
        .await?;
    if new {
        state.stripe_inbox.notify_one();
    }
    Ok(new)
}

/// Starts the worker; it stops when `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
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
                _ = state.stripe_inbox.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    });
}

/// Claims and applies one batch; returns how many events it finished.
pub async fn round(state: &AppState) -> usize {
    let now = state.clock.now();
    let until = now + chrono::Duration::from_std(CLAIM).unwrap_or(chrono::Duration::zero());
    let claimed = crate::service::worker::run_item(state, WORKER, "claim", async {
        Ok::<_, ApiError>(
            state
                .store
                .inbox_claim(&state.instance_id, now, until, BATCH)
                .await?,
        )
    })
    .await
    .unwrap_or_default();
    let mut done = 0;
    for ev in claimed {
        let outcome = crate::service::worker::run_item(state, WORKER, &ev.event_id, async {
            Ok::<_, ApiError>(process(state, &ev).await)
        })
        .await
        .unwrap_or_else(|| retry(state, &ev, "processing panicked".into()));
        if let InboxOutcome::Retry { error, .. } | InboxOutcome::Parked(error) = &outcome {
            tracing::warn!(event = %ev.event_id, r#type = %ev.event_type, %error, "Stripe event failed");
            state.metrics.add_worker_failure(WORKER);
            state.metrics.add_stripe_event(&ev.event_type, "failed");
        } else {
            state.metrics.add_stripe_event(&ev.event_type, "processed");
            let lag = (state.clock.now() - ev.received_at)
                .to_std()
                .unwrap_or_default();
            state.metrics.observe_stripe_event_lag(lag);
        }
        let finished = crate::service::worker::run_item(state, WORKER, &ev.event_id, async {
            Ok::<_, ApiError>(
                state
                    .store
                    .inbox_finish(&ev.event_id, &state.instance_id, outcome, state.clock.now())
                    .await?,
            )
        })
        .await;
        if finished.is_some() {
            done += 1;
        }
    }
    done
}

/// How an event's processing failed.
enum Fail {
    /// Worth retrying (database or Stripe unavailable, rate limited, …).
    Transient(String),
    /// Will fail again: parked.
    Permanent(String),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => Fail::Permanent(m),
            other => Fail::Transient(other.to_string()),
        }
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        if e.status.is_server_error() {
            Fail::Transient(e.message)
        } else {
            Fail::Permanent(format!("{}: {}", e.code, e.message))
        }
    }
}

impl From<tally_stripe::Error> for Fail {
    fn from(e: tally_stripe::Error) -> Self {
        use tally_stripe::ErrorKind as K;
        let transient = matches!(
            e.kind,
            K::RateLimited { .. }
                | K::Conflict { .. }
                | K::Unavailable { .. }
                | K::Timeout
                | K::Connection(_)
        );
        let msg = format!("Stripe: {e} (request {:?})", e.request_id);
        if transient {
            Fail::Transient(msg)
        } else {
            Fail::Permanent(msg)
        }
    }
}

fn retry(state: &AppState, ev: &InboxEvent, error: String) -> InboxOutcome {
    let attempts = ev.attempts.saturating_add(1);
    if attempts >= MAX_ATTEMPTS {
        return InboxOutcome::Parked(format!("{error} (after {attempts} attempts)"));
    }
    // 1 s, 2 s, 4 s, … capped at 10 minutes.
    let secs = 1i64 << attempts.clamp(0, 10);
    InboxOutcome::Retry {
        error,
        retry_at: state.clock.now() + chrono::Duration::seconds(secs.min(600)),
    }
}

async fn process(state: &AppState, ev: &InboxEvent) -> InboxOutcome {
    let event = match Event::parse(ev.body.as_bytes()) {
        Ok(e) => e,
        Err(e) => return InboxOutcome::Parked(e.to_string()),
    };
    match apply(state, &event).await {
        Ok(o) => o,
        Err(Fail::Transient(m)) => retry(state, ev, m),
        Err(Fail::Permanent(m)) => InboxOutcome::Parked(m),
    }
}

fn ignored(why: impl Into<String>) -> Result<InboxOutcome, Fail> {
    Ok(InboxOutcome::Ignored(why.into()))
}

fn applied(what: impl Into<String>) -> Result<InboxOutcome, Fail> {
    Ok(InboxOutcome::Applied(what.into()))
}

fn instant(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn apply(state: &AppState, event: &Event) -> Result<InboxOutcome, Fail> {
    match &event.kind {
        EventKind::CheckoutCompleted(s) | EventKind::CheckoutAsyncPaymentSucceeded(s) => {
            checkout_completed(state, event, s).await
        }
        EventKind::CheckoutAsyncPaymentFailed(s) => checkout_failed(state, event, s).await,
        EventKind::CheckoutExpired(s) => match tally_customer_of_session(state, s).await? {
            Some(_) => applied("checkout expired: nothing to apply"),
            None => ignored("not a Tally checkout"),
        },
        EventKind::SubscriptionCreated(s)
        | EventKind::SubscriptionUpdated {
            subscription: s, ..
        }
        | EventKind::SubscriptionDeleted(s) => mirror(state, s, Some(instant(event.created)))
            .await
            .map(|o| match o {
                Some(what) => InboxOutcome::Applied(what),
                None => InboxOutcome::Ignored("not a Tally customer's subscription".into()),
            }),
        EventKind::SubscriptionTrialWillEnd(s) => {
            let Some(customer) = tally_customer_of_subscription(state, s).await? else {
                return ignored("not a Tally customer's subscription");
            };
            let Some(sub) = state.store.get_subscription(&customer).await? else {
                return ignored("the customer has no subscription");
            };
            notify::trial_will_end(state, &customer, &sub, s.trial_end.map(instant)).await?;
            applied("trial_will_end notification point")
        }
        EventKind::InvoiceChanged(i) => {
            if invoices::mirror(state, event, i).await? {
                applied("invoice mirrored")
            } else {
                ignored("not a Tally customer's invoice")
            }
        }
        EventKind::InvoicePaid(i) | EventKind::InvoicePaymentSucceeded(i) => {
            invoices::mirror(state, event, i).await?;
            push_status(state, i, tally_store::usage_push::state::PAID).await?;
            invoice_paid(state, event, i).await
        }
        EventKind::InvoicePaymentFailed(i) => {
            invoices::mirror(state, event, i).await?;
            push_status(state, i, tally_store::usage_push::state::FAILED).await?;
            invoice_failed(state, event, i).await
        }
        EventKind::InvoiceStatusChanged(i) => {
            let mirrored = invoices::mirror(state, event, i).await?;
            let voided = matches!(i.status.as_deref(), Some("void" | "uncollectible"));
            let moved = if voided {
                push_status(state, i, tally_store::usage_push::state::VOIDED).await?
            } else {
                match (&i.id, &i.hosted_invoice_url) {
                    // `invoice.finalized`: the hosted page exists from now on.
                    (Some(id), Some(url)) => state.store.set_push_hosted_url(id, url).await?,
                    _ => 0,
                }
            };
            if moved > 0 {
                applied(if voided {
                    "usage push marked voided"
                } else {
                    "hosted invoice page kept"
                })
            } else if mirrored {
                applied("invoice mirrored")
            } else {
                ignored(format!("{}: nothing to apply", event.event_type))
            }
        }
        EventKind::ChargeRefunded(c) => {
            let customer = match &c.customer {
                Some(cus) => tally_customer_of_stripe_customer(state, cus).await?,
                None => None,
            };
            let Some(customer) = customer else {
                return ignored("not a Tally customer's charge");
            };
            let what = crate::service::refunds::on_charge_refunded(
                state,
                &customer,
                c,
                instant(event.created),
            )
            .await?;
            applied(what)
        }
        EventKind::PaymentIntentSucceeded(pi) | EventKind::PaymentIntentFailed(pi) => {
            match crate::service::topups::on_payment_intent(state, pi).await? {
                Some(what) => applied(what),
                None => ignored("not a Tally top-up"),
            }
        }
        EventKind::PaymentMethodAttached(PaymentMethod { id, customer }) => {
            card_changed(state, customer.as_deref(), Some(id)).await
        }
        EventKind::SetupIntentSucceeded(SetupIntent {
            customer,
            payment_method,
            ..
        }) => card_changed(state, customer.as_deref(), payment_method.as_deref()).await,
        // A new default payment method (`invoice_settings` changed) is a card change.
        EventKind::CustomerUpdated(c) if event.changed.contains("invoice_settings") => {
            card_changed(state, Some(&c.id), c.default_payment_method.as_deref()).await
        }
        EventKind::CustomerUpdated(_) | EventKind::Unhandled => {
            ignored(format!("{} is not handled", event.event_type))
        }
    }
}

/// A Stripe customer's card changed: automatic top-ups stopped by declines resume.
async fn card_changed(
    state: &AppState,
    stripe_customer: Option<&str>,
    card: Option<&str>,
) -> Result<InboxOutcome, Fail> {
    let customer = match stripe_customer {
        Some(c) => tally_customer_of_stripe_customer(state, c).await?,
        None => None,
    };
    let Some(customer) = customer else {
        return ignored("not a Tally customer's card");
    };
    applied(crate::service::topups::on_card_changed(state, &customer, card).await?)
}

/// Moves the usage pushes whose lines are on this invoice to the state of the invoice as Stripe
/// has it now (re-read, so that duplicated and reordered events of one invoice end where a
/// clean run ends); `to`, the state the event reports, when Stripe cannot be read. Keeps the
/// invoice's hosted page with them as well. Returns how many moved.
async fn push_status(state: &AppState, i: &Invoice, to: &str) -> Result<u64, Fail> {
    let Some(id) = &i.id else {
        return Ok(0);
    };
    if state.store.pushes_of_stripe_invoice(id).await?.is_empty() {
        return Ok(0);
    }
    if let Some(url) = &i.hosted_invoice_url {
        state.store.set_push_hosted_url(id, url).await?;
    }
    let now = match &state.stripe {
        Some(client) => client.invoice(id).await?.map(|r| r.value),
        None => None,
    };
    let to = match now {
        Some(inv) => crate::service::usage_push::state_of_stripe_invoice(&inv),
        None => to,
    };
    Ok(crate::service::usage_push::on_invoice_status(state, id, to).await?)
}

/// The Tally customer a Stripe object names in its metadata, if it exists.
async fn known_customer(state: &AppState, id: Option<&str>) -> Result<Option<String>, Fail> {
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    Ok(state.store.get_customer(id).await?.map(|c| c.id))
}

async fn tally_customer_of_session(
    state: &AppState,
    s: &CheckoutSession,
) -> Result<Option<String>, Fail> {
    let named = s
        .metadata
        .get("tally_customer_id")
        .or(s.client_reference_id.as_ref());
    known_customer(state, named.map(String::as_str)).await
}

/// The Tally customer of a Stripe customer, from its metadata (read from Stripe).
async fn tally_customer_of_stripe_customer(
    state: &AppState,
    stripe_customer: &str,
) -> Result<Option<String>, Fail> {
    let Some(client) = &state.stripe else {
        return Ok(None);
    };
    let Some(c) = client.customer(stripe_customer).await? else {
        return Ok(None);
    };
    known_customer(
        state,
        c.value
            .metadata
            .get("tally_customer_id")
            .map(String::as_str),
    )
    .await
}

async fn tally_customer_of_subscription(
    state: &AppState,
    s: &StripeSub,
) -> Result<Option<String>, Fail> {
    if let Some(id) = known_customer(
        state,
        s.metadata.get("tally_customer_id").map(String::as_str),
    )
    .await?
    {
        return Ok(Some(id));
    }
    tally_customer_of_stripe_customer(state, &s.customer).await
}

/// The catalog plan and interval of a price lookup key (as `tally stripe push` writes them).
fn plan_of_lookup_key(state: &AppState, key: &str) -> Option<(String, String)> {
    state.catalog.plans().iter().find_map(|p| {
        p.prices
            .iter()
            .find(|(_, price)| price.lookup_key == key)
            .map(|(interval, _)| (p.id.clone(), interval.as_str().to_owned()))
    })
}

fn status_str(s: &SubscriptionStatus) -> String {
    match s {
        SubscriptionStatus::Incomplete => "incomplete",
        // Never paid and over: as good as canceled (the free plan applies).
        SubscriptionStatus::IncompleteExpired => "canceled",
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

/// Mirrors a Stripe subscription onto its Tally customer's subscription, re-read from Stripe when
/// a client is configured (so the latest state wins whatever order events arrive in).
/// `past_due_at`: the instant a payment failed, when this follows one. Returns what it did, or
/// `None` when the subscription is not a Tally customer's.
async fn mirror(
    state: &AppState,
    payload: &StripeSub,
    past_due_at: Option<DateTime<Utc>>,
) -> Result<Option<String>, Fail> {
    let latest = match &state.stripe {
        Some(client) => client
            .subscription(&payload.id)
            .await?
            .map(|s| s.value)
            .unwrap_or_else(|| payload.clone()),
        None => payload.clone(),
    };
    let s = &latest;
    let Some(customer) = tally_customer_of_subscription(state, s).await? else {
        return Ok(None);
    };
    let Some((item, plan, interval)) = s.items.iter().find_map(|i| {
        let key = i.lookup_key.as_deref()?;
        plan_of_lookup_key(state, key).map(|(p, iv)| (i, p, iv))
    }) else {
        let keys: Vec<_> = s
            .items
            .iter()
            .filter_map(|i| i.lookup_key.clone())
            .collect();
        return Err(Fail::Permanent(format!(
            "subscription {}: no price lookup key of the catalog among {keys:?} (run tally stripe push)",
            s.id
        )));
    };
    // The change a schedule holds for the period end; once its last phase is in force the
    // schedule is released, so the subscription is managed directly again (the portal's cancel,
    // later plan changes).
    let pending_change = match &state.stripe {
        Some(client) => match stripe_schedule::schedule_of(client, s).await? {
            Some(sc) if stripe_schedule::in_last_phase(&sc) => {
                stripe_schedule::release(client, &sc.id).await?;
                None
            }
            Some(sc) => stripe_schedule::next_phase(&state.catalog, &sc),
            None => None,
        },
        None => None,
    };
    let status = status_str(&s.status);
    let overdue = matches!(status.as_str(), "past_due" | "unpaid");
    let stripe = json!({
        "subscription": s.id,
        "customer": s.customer,
        "status": status,
        "price": item.price,
        "lookup_key": item.lookup_key,
        "current_period_start": instant(item.current_period_start),
        "current_period_end": instant(item.current_period_end),
        "cancel_at_period_end": s.cancel_at_period_end,
        "cancel_at": s.cancel_at.map(instant),
        "canceled_at": s.canceled_at.map(instant),
        "trial_end": s.trial_end.map(instant),
        "latest_invoice": s.latest_invoice,
        // Mirrored so that Tally's own invoices can apply the discount Stripe applies.
        "coupon": s.coupons.first(),
        "billing_cycle_anchor": s.billing_cycle_anchor.map(instant),
        "pending_change": pending_change,
        "pending_cancellation": stripe_schedule::pending_cancellation(s),
    });
    let now = state.clock.now();
    let before = state.store.get_subscription(&customer).await?;
    if superseded(before.as_ref(), &s.id, &status) {
        return Ok(Some(format!(
            "subscription {} ({status}) superseded by the customer's live subscription",
            s.id
        )));
    }
    // Allowance periods follow Stripe's billing cycle from its anchor on (a subscription that
    // never started, or one that ended, leaves the anchor where it was).
    let started = !matches!(status.as_str(), "incomplete" | "canceled");
    let allowance_anchor = s.billing_cycle_anchor.map(instant).filter(|_| started);
    let anchor_before = match allowance_anchor {
        Some(_) => state
            .store
            .get_customer(&customer)
            .await?
            .map(|c| c.billing_anchor),
        None => None,
    };
    let sub = state
        .store
        .put_stripe_subscription(StripeSubscriptionUpsert {
            customer_id: customer.clone(),
            plan,
            interval,
            status,
            stripe,
            past_due_at: overdue.then(|| past_due_at.unwrap_or(now)),
            // The event's instant when there is one: the history dates the change at Stripe.
            changed_at: past_due_at.unwrap_or(now),
            now,
            allowance_anchor,
        })
        .await?;
    if allowance_anchor.is_some() && anchor_before != allowance_anchor {
        crate::service::sync::forget_anchors(state);
    }
    state.credits.forget(&customer);
    // Once per Stripe subscription (keyed by it): replays and duplicates enqueue nothing more.
    if sub.status == "canceled" {
        notify::subscription_canceled(state, &customer, &sub).await?;
    } else {
        notify::subscription_changed(state, &customer, before.as_ref(), &sub).await?;
    }
    let plan_of = |s: Option<&tally_store::Subscription>| {
        crate::service::entitlements::effective_plan(state, s, now).map(|(p, _)| p.id)
    };
    if plan_of(before.as_ref()) != plan_of(Some(&sub)) {
        if let Some(c) = state.store.get_customer(&customer).await? {
            crate::service::credits::plan_changed(state, &c, now).await?;
        }
    }
    Ok(Some(format!(
        "subscription mirrored: {} {} {}",
        sub.plan, sub.interval, sub.status
    )))
}

/// Whether an ended (`canceled`, `unpaid`) Stripe subscription's news arrives after the customer
/// resubscribed: the live subscription mirrored now stays.
fn superseded(before: Option<&tally_store::Subscription>, incoming: &str, status: &str) -> bool {
    let Some(b) = before else {
        return false;
    };
    let mirrored = b
        .stripe
        .as_ref()
        .and_then(|j| j.get("subscription"))
        .and_then(|v| v.as_str());
    b.source == "stripe"
        && mirrored.is_some_and(|m| m != incoming)
        && matches!(b.status.as_str(), "active" | "trialing" | "past_due")
        && matches!(status, "canceled" | "unpaid")
}

async fn checkout_completed(
    state: &AppState,
    event: &Event,
    s: &CheckoutSession,
) -> Result<InboxOutcome, Fail> {
    let Some(customer) = tally_customer_of_session(state, s).await? else {
        return ignored("not a Tally checkout (no known tally_customer_id)");
    };
    // `completed` once per session: the async-payment event that may follow is the same session.
    if matches!(event.kind, EventKind::CheckoutCompleted(_)) {
        state.metrics.add_checkout_session("completed");
    }
    if s.mode == "subscription" {
        let Some(sub_id) = &s.subscription else {
            return applied("subscription checkout without a subscription yet");
        };
        // Mirror at once (the subscription's own events may come later): access follows payment
        // within the same round.
        let Some(client) = &state.stripe else {
            return applied("subscription follows from its own events");
        };
        let Some(sub) = client.subscription(sub_id).await? else {
            return Err(Fail::Transient(format!(
                "subscription {sub_id} not found yet"
            )));
        };
        // A resubscription after dunning ended in `unpaid`: the old subscription would go on
        // drafting invoices in Stripe, so it ends now (cancelling creates and charges nothing).
        for old in client
            .subscriptions_of_customer(&sub.value.customer)
            .await?
        {
            if old.id != *sub_id && matches!(old.status, SubscriptionStatus::Unpaid) {
                client.cancel_subscription(&old.id, false, false).await?;
            }
        }
        return match mirror(state, &sub.value, None).await? {
            Some(what) => applied(what),
            None => ignored("the checkout's subscription is not a Tally customer's"),
        };
    }
    let Some(pack_id) = s.metadata.get("tally_pack") else {
        return ignored("a payment checkout without tally_pack");
    };
    let Some(pack) = state.catalog.credit_pack(pack_id) else {
        return Err(Fail::Permanent(format!(
            "the catalog has no credit pack {pack_id:?}"
        )));
    };
    if s.payment_status.as_deref() != Some("paid") {
        return applied("credit pack checkout awaiting its payment");
    }
    // Idempotent by the Checkout Session: a repeated or replayed event grants nothing more.
    let granted = crate::service::credits::grant_purchase(
        state,
        &customer,
        pack.credits,
        format!("credit pack {} bought (Stripe Checkout {})", pack.id, s.id),
        format!("stripe_checkout:{}", s.id),
        state.clock.now(),
    )
    .await?;
    let new_grant = matches!(granted, crate::service::credits::Applied::New(_));
    let amount = s.amount_total.unwrap_or(pack.amount);
    let currency = s
        .currency
        .clone()
        .unwrap_or_else(|| pack.currency.code().to_ascii_lowercase());
    let purchase = NewTransaction {
        id: crate::service::credits::new_id("txn", state.clock.now()),
        key: format!("checkout:{}", s.id),
        customer_id: customer.clone(),
        kind: "credit_pack".into(),
        status: "succeeded".into(),
        amount,
        currency: currency.clone(),
        description: Some(pack.name.clone()),
        stripe_invoice: None,
        stripe_payment_intent: s.payment_intent.clone(),
        stripe_charge: None,
        stripe_checkout_session: Some(s.id.clone()),
        stripe_subscription: None,
        occurred_at: instant(event.created),
        created_at: state.clock.now(),
    };
    if state.store.record_transaction(purchase.clone()).await? {
        state.metrics.add_payment_succeeded(amount, &currency);
    }
    // Unconditionally: the outbox deduplicates, and a retry after a failed enqueue must enqueue.
    notify::credits_purchased(state, &customer, &pack.id, pack.credits, &purchase).await?;
    state.credits.forget(&customer);
    applied(if new_grant {
        format!("credit pack {} granted", pack.id)
    } else {
        format!("credit pack {} already granted", pack.id)
    })
}

async fn checkout_failed(
    state: &AppState,
    event: &Event,
    s: &CheckoutSession,
) -> Result<InboxOutcome, Fail> {
    let Some(customer) = tally_customer_of_session(state, s).await? else {
        return ignored("not a Tally checkout (no known tally_customer_id)");
    };
    let failed = NewTransaction {
        id: crate::service::credits::new_id("txn", state.clock.now()),
        key: format!("checkout_failed:{}", s.id),
        customer_id: customer.clone(),
        kind: "payment_failed".into(),
        status: "failed".into(),
        amount: s.amount_total.unwrap_or(0),
        currency: s.currency.clone().unwrap_or_default(),
        description: Some("checkout payment failed".into()),
        stripe_invoice: None,
        stripe_payment_intent: s.payment_intent.clone(),
        stripe_charge: None,
        stripe_checkout_session: Some(s.id.clone()),
        stripe_subscription: s.subscription.clone(),
        occurred_at: instant(event.created),
        created_at: state.clock.now(),
    };
    if state.store.record_transaction(failed.clone()).await? {
        state.metrics.add_payment_failed(false);
    }
    // Unconditionally: the outbox deduplicates, and a retry after a failed enqueue must enqueue.
    notify::payment_failed(
        state,
        &customer,
        &failed,
        instant(event.created),
        &notify::Decline::default(),
    )
    .await?;
    applied("failed checkout payment recorded")
}

async fn invoice_customer(state: &AppState, i: &Invoice) -> Result<Option<String>, Fail> {
    if let Some(id) = known_customer(
        state,
        i.metadata.get("tally_customer_id").map(String::as_str),
    )
    .await?
    {
        return Ok(Some(id));
    }
    match &i.customer {
        Some(c) => tally_customer_of_stripe_customer(state, c).await,
        None => Ok(None),
    }
}

async fn invoice_paid(state: &AppState, event: &Event, i: &Invoice) -> Result<InboxOutcome, Fail> {
    let Some(id) = &i.id else {
        return Err(Fail::Permanent("an invoice without an id".into()));
    };
    let Some(customer) = invoice_customer(state, i).await? else {
        return ignored("not a Tally customer's invoice");
    };
    if i.amount_paid <= 0 {
        return applied("nothing was paid");
    }
    // invoice.paid and invoice.payment_succeeded describe one payment: one key.
    let paid = NewTransaction {
        id: crate::service::credits::new_id("txn", state.clock.now()),
        key: format!("invoice_paid:{id}"),
        customer_id: customer.clone(),
        kind: "subscription_payment".into(),
        status: "succeeded".into(),
        amount: i.amount_paid,
        currency: i.currency.clone(),
        description: i.billing_reason.clone(),
        stripe_invoice: Some(id.clone()),
        stripe_payment_intent: None,
        stripe_charge: None,
        stripe_checkout_session: None,
        stripe_subscription: i.subscription.clone(),
        occurred_at: instant(event.created),
        created_at: state.clock.now(),
    };
    let new = state.store.record_transaction(paid.clone()).await?;
    if new {
        state
            .metrics
            .add_payment_succeeded(i.amount_paid, &i.currency);
    }
    notify::invoice_paid(state, &customer, &paid).await?;
    if let Some(what) = restore_after_payment(state, &customer, i).await? {
        return applied(format!("payment recorded; {what}"));
    }
    applied(if new {
        "payment recorded"
    } else {
        "payment already recorded"
    })
}

async fn invoice_failed(
    state: &AppState,
    event: &Event,
    i: &Invoice,
) -> Result<InboxOutcome, Fail> {
    let Some(id) = &i.id else {
        return Err(Fail::Permanent("an invoice without an id".into()));
    };
    let Some(customer) = invoice_customer(state, i).await? else {
        return ignored("not a Tally customer's invoice");
    };
    let at = instant(event.created);
    // Each failed attempt is its own event: one failed payment per event.
    let failed = NewTransaction {
        id: crate::service::credits::new_id("txn", state.clock.now()),
        key: format!("invoice_failed:{id}:{}", event.id),
        customer_id: customer.clone(),
        kind: "payment_failed".into(),
        status: "failed".into(),
        amount: i.amount_due,
        currency: i.currency.clone(),
        description: i.billing_reason.clone(),
        stripe_invoice: Some(id.clone()),
        stripe_payment_intent: None,
        stripe_charge: None,
        stripe_checkout_session: None,
        stripe_subscription: i.subscription.clone(),
        occurred_at: at,
        created_at: state.clock.now(),
    };
    if state.store.record_transaction(failed.clone()).await? {
        state.metrics.add_payment_failed(true);
    }
    // Past due since this instant: the grace period of the entitlements counts from it.
    if let (Some(sub_id), Some(client)) = (&i.subscription, &state.stripe) {
        if let Some(sub) = client.subscription(sub_id).await? {
            mirror(state, &sub.value, Some(at)).await?;
        }
    } else if let Some(sub) = state.store.get_subscription(&customer).await? {
        if sub.source == "stripe" {
            let after = state
                .store
                .put_stripe_subscription(StripeSubscriptionUpsert {
                    customer_id: customer.clone(),
                    plan: sub.plan.clone(),
                    interval: sub.interval.clone(),
                    status: "past_due".into(),
                    stripe: sub.stripe.clone().unwrap_or(Value::Null),
                    past_due_at: Some(at),
                    changed_at: at,
                    now: state.clock.now(),
                    allowance_anchor: None,
                })
                .await?;
            state.credits.forget(&customer);
            notify::subscription_changed(state, &customer, Some(&sub), &after).await?;
        }
    }
    // Why it failed: a hard decline is not retried by Stripe, so the customer must act now.
    let decline = decline_of(state, id, i).await?;
    // Unconditionally: the outbox deduplicates, and a retry after a failed enqueue must enqueue.
    notify::payment_failed(state, &customer, &failed, at, &decline).await?;
    if decline.hard {
        notify::payment_action_required(state, &customer, &failed, at, &decline).await?;
    }
    applied(if decline.hard {
        "failed payment recorded (hard decline)"
    } else {
        "failed payment recorded"
    })
}

/// What Stripe says about the latest failed attempt on invoice `id` (its payment intent's
/// `last_payment_error`) and when it retries.
async fn decline_of(state: &AppState, id: &str, i: &Invoice) -> Result<notify::Decline, Fail> {
    let error = match &state.stripe {
        Some(client) => client.invoice_payment_error(id).await?,
        None => None,
    };
    Ok(notify::Decline {
        hard: error.as_ref().is_some_and(|e| e.is_hard_decline()),
        code: error.as_ref().and_then(|e| e.code.clone()),
        decline_code: error.and_then(|e| e.decline_code),
        next_payment_attempt: i.next_payment_attempt.map(instant),
    })
}

/// After a paid invoice: a subscription that was past due or unpaid is mirrored again at once
/// (Stripe has made it active before the event is processed), so the plan's entitlements and the
/// billing summary come back in the same round as the payment — whatever order the subscription's
/// own `customer.subscription.updated` arrives in.
async fn restore_after_payment(
    state: &AppState,
    customer: &str,
    i: &Invoice,
) -> Result<Option<String>, Fail> {
    let Some(client) = &state.stripe else {
        return Ok(None);
    };
    let Some(local) = state.store.get_subscription(customer).await? else {
        return Ok(None);
    };
    if local.source != "stripe" || !matches!(local.status.as_str(), "past_due" | "unpaid") {
        return Ok(None);
    }
    let mirrored = local
        .stripe
        .as_ref()
        .and_then(|j| j.get("subscription"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let Some(sub_id) = i.subscription.clone().or(mirrored) else {
        return Ok(None);
    };
    let Some(sub) = client.subscription(&sub_id).await? else {
        return Ok(None);
    };
    mirror(state, &sub.value, None).await
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct BackfillReport {
    /// Events read from Stripe.
    pub read: usize,
    /// Events the inbox did not have (stored pending; the others changed nothing).
    pub stored: usize,
}

/// Reads Stripe's events created at or after `since` (`GET /v1/events`, every page) into the
/// inbox, e.g. after an outage: events already received store nothing, the others are applied
/// by the worker of a running server like any delivery.
pub async fn backfill_into(
    store: &dyn tally_store::Store,
    client: &tally_stripe::Client,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<BackfillReport, String> {
    let mut report = BackfillReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .raw_events(&tally_stripe::EventFilter {
                created_gte: Some(since.timestamp()),
                starting_after: after.clone(),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("Stripe: {e}"))?
            .value;
        after = page.data.last().map(|e| e.id.clone());
        for e in page.data {
            report.read += 1;
            let new = store
                .inbox_insert(NewInboxEvent {
                    event_id: e.id,
                    event_type: e.event_type,
                    object_id: e.object_id,
                    created: e.created,
                    body: e.body,
                    source: "backfill".into(),
                    received_at: now,
                })
                .await
                .map_err(|e| e.to_string())?;
            if new {
                report.stored += 1;
            }
        }
        if !page.has_more || after.is_none() {
            break;
        }
    }
    Ok(report)
}

/// [`backfill_into`] with this server's store and Stripe client; wakes the worker.
pub async fn backfill(state: &AppState, since: DateTime<Utc>) -> Result<BackfillReport, ApiError> {
    let Some(client) = &state.stripe else {
        return Err(ApiError::unavailable(
            "STRIPE_API_KEY is not set: cannot read Stripe's events",
        ));
    };
    let report = backfill_into(&*state.store, client, since, state.clock.now())
        .await
        .map_err(ApiError::unavailable)?;
    if report.stored > 0 {
        state.stripe_inbox.notify_one();
    }
    Ok(report)
}
