//! The mirror of the Stripe invoices of Tally's customers (see `tally_store::stripe_invoices`),
//! written from every `invoice.*` event the worker handles.
//!
//! The invoice is re-read from Stripe when Tally has a Stripe client, so whichever event of an
//! invoice is applied last writes Stripe's current state; the store keeps a row only for an
//! event at least as new as the one it has (`event_created`), so a replayed old event without a
//! re-read cannot move the row back.

use tally_store::StripeInvoiceRecord;
use tally_stripe::event::Event;
use tally_stripe::model::Invoice;

use super::{instant, invoice_customer, Fail};
use crate::state::AppState;

/// Mirrors the invoice of `event`; returns whether it is a Tally customer's (mirrored).
pub(super) async fn mirror(state: &AppState, event: &Event, i: &Invoice) -> Result<bool, Fail> {
    let Some(id) = &i.id else {
        return Ok(false);
    };
    let Some(customer) = invoice_customer(state, i).await? else {
        return Ok(false);
    };
    let latest = match &state.stripe {
        Some(client) => client.invoice(id).await?.map(|r| r.value),
        None => None,
    };
    let inv = latest.as_ref().unwrap_or(i);
    let at = |t: Option<i64>| t.map(instant);
    let record = StripeInvoiceRecord {
        id: id.clone(),
        customer_id: customer,
        stripe_customer: inv.customer.clone(),
        stripe_subscription: inv.subscription.clone(),
        status: inv.status.clone().unwrap_or_else(|| "draft".into()),
        collection_method: inv.collection_method.clone(),
        currency: inv.currency.to_ascii_lowercase(),
        total: inv.total,
        amount_paid: inv.amount_paid,
        amount_remaining: inv.amount_remaining,
        finalized_at: at(inv.finalized_at),
        due_date: at(inv.due_date),
        period_start: at(inv.period_start),
        period_end: at(inv.period_end),
        billing_reason: inv.billing_reason.clone(),
        hosted_invoice_url: inv.hosted_invoice_url.clone(),
        number: inv.number.clone(),
        attempt_count: inv.attempt_count,
        next_payment_attempt: at(inv.next_payment_attempt),
        created: instant(inv.created.unwrap_or(event.created)),
        event_created: event.created,
        updated_at: state.clock.now(),
    };
    state.store.put_stripe_invoice(record).await?;
    Ok(true)
}
