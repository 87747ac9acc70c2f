//! Reconciliation: Tally's closed invoices and the usage lines it sent, the payments it recorded
//! and its mirrored subscriptions, compared with Stripe's, amount for amount and status for
//! status. Every discrepancy names the ids to look at. `tally reconcile` prints one month's; a
//! daily job in `tally serve` exports the count as `tally_reconcile_discrepancies`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use serde_json::Value;
use tally_store::usage_push::state as push_state;
use tally_stripe::model::{Invoice, SubscriptionStatus};
use tally_stripe::{Client, InvoiceFilter};
use tokio::sync::watch;

use super::usage_push::{self, META_INVOICE, META_LINE};
use super::usage_sync::month;
use super::worker;
use crate::error::ApiError;
use crate::state::AppState;

/// The daily job's name in logs and metrics.
pub const WORKER: &str = "reconciler";
/// The lease naming the process that runs the daily job.
pub const LEASE: &str = "reconciler";
/// How often the daily job runs.
pub const EVERY: Duration = Duration::from_secs(86_400);

/// One difference between Tally and Stripe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Discrepancy {
    /// `missing_in_stripe`, `extra_in_stripe`, `missing_in_tally`, `amount_differs`,
    /// `status_differs` or `subscription_state_differs`.
    pub kind: String,
    pub customer: String,
    /// Tally's id: the invoice (`in_…`, with `line` for a line), the subscription's customer
    /// or the transaction.
    pub tally_id: Option<String>,
    /// The invoice line (`L<index>`), for line discrepancies.
    pub line: Option<String>,
    /// Stripe's id: the invoice, invoice item or subscription.
    pub stripe_id: Option<String>,
    /// What Tally has (an amount in minor units or a status).
    pub tally: Option<String>,
    /// What Stripe has.
    pub stripe: Option<String>,
}

/// One currency's revenue in the month, from Stripe's invoices of Tally's customers created in
/// it (minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Revenue {
    pub currency: String,
    /// Finalized invoices' totals.
    pub invoiced: i64,
    /// Paid on them.
    pub collected: i64,
    /// Refunds Tally recorded in the month.
    pub refunded: i64,
    /// Still due on open invoices.
    pub outstanding: i64,
}

/// A reconciliation's report (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// `YYYY-MM`.
    pub period: String,
    /// Tally invoices compared (those of the periods starting in the month, of customers with a
    /// Stripe subscription).
    pub invoices_checked: usize,
    /// Stripe invoices of Tally's customers created in the month, compared with Tally's
    /// payments.
    pub payments_checked: usize,
    /// Stripe charges of Tally's customers created in the month, compared with Tally's refunds
    /// and credit-pack purchases.
    pub charges_checked: usize,
    pub subscriptions_checked: usize,
    pub discrepancies: Vec<Discrepancy>,
    pub revenue: Vec<Revenue>,
}

fn d(kind: &str, customer: &str, tally_id: Option<&str>, stripe_id: Option<&str>) -> Discrepancy {
    Discrepancy {
        kind: kind.to_owned(),
        customer: customer.to_owned(),
        tally_id: tally_id.map(str::to_owned),
        line: None,
        stripe_id: stripe_id.map(str::to_owned),
        tally: None,
        stripe: None,
    }
}

/// How a push state and a Stripe invoice status compare: paid, voided, or neither.
fn settled(push: &str) -> &'static str {
    match push {
        push_state::PAID => "paid",
        push_state::VOIDED => "voided",
        _ => "open",
    }
}

fn stripe_settled(status: &str) -> &'static str {
    match status {
        "paid" => "paid",
        "void" | "uncollectible" => "voided",
        _ => "open",
    }
}

fn status_name(s: &SubscriptionStatus) -> String {
    match s {
        SubscriptionStatus::Incomplete => "incomplete",
        SubscriptionStatus::IncompleteExpired | SubscriptionStatus::Canceled => "canceled",
        SubscriptionStatus::Trialing => "trialing",
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::PastDue => "past_due",
        SubscriptionStatus::Unpaid => "unpaid",
        SubscriptionStatus::Paused => "paused",
        SubscriptionStatus::Other(o) => o.as_str(),
    }
    .to_owned()
}

/// Compares the month `ym` (see [`ReconcileReport`]).
pub async fn reconcile(state: &AppState, ym: &str) -> Result<ReconcileReport, ApiError> {
    let (from, to) = month(ym).ok_or_else(|| {
        ApiError::bad_request("invalid_period", format!("--period {ym:?} must be YYYY-MM"))
    })?;
    let Some(client) = state.stripe.clone() else {
        return Err(ApiError::bad_request(
            "stripe_not_configured",
            "reconciliation needs STRIPE_API_KEY",
        ));
    };
    let mut out = Vec::new();
    let subs: Vec<_> = state
        .store
        .list_subscriptions()
        .await?
        .into_iter()
        .filter(|s| s.source == "stripe")
        .collect();
    let stripe_field = |s: &tally_store::Subscription, k: &str| {
        s.stripe
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };

    // Invoices and their pushed lines.
    let mut invoices_checked = 0;
    for inv in state.store.invoices_starting_between(from, to).await? {
        let expected = usage_push::push_lines(&inv);
        let Some(push) = state.store.get_push(&inv.id).await? else {
            // Not seen by the pusher yet: missing when it has lines for a Stripe subscriber.
            let sub = subs.iter().find(|s| s.customer_id == inv.customer_id);
            if sub.is_some_and(|s| inv.period_end > s.created_at) && !expected.is_empty() {
                invoices_checked += 1;
                let mut x = d("missing_in_stripe", &inv.customer_id, Some(&inv.id), None);
                x.tally = Some(format!("{} line(s) not pushed", expected.len()));
                out.push(x);
            }
            continue;
        };
        invoices_checked += 1;
        if push.state == push_state::SKIPPED {
            continue;
        }
        if push.state == push_state::PENDING && push.stripe_invoice().is_none() {
            let mut x = d("missing_in_stripe", &inv.customer_id, Some(&inv.id), None);
            x.tally = Some(format!("{} line(s), {}", expected.len(), push.amount));
            out.push(x);
            continue;
        }
        let metered = if push.renewal_invoice.is_some() {
            super::usage_meters::meter_lines(&state.catalog, &inv, &expected)
        } else {
            Vec::new()
        };
        compare_lines(&client, &inv, &push, &expected, &metered, &mut out).await?;
    }

    // Payments: Stripe's invoices of Tally's customers created in the month.
    let mut payments_checked = 0;
    let mut revenue: BTreeMap<String, Revenue> = BTreeMap::new();
    let mut customers: BTreeMap<String, String> = subs
        .iter()
        .filter_map(|s| stripe_field(s, "customer").map(|c| (c, s.customer_id.clone())))
        .collect();
    for link in state.store.stripe_customer_links().await? {
        if let Some(id) = link.stripe_id {
            customers.entry(id).or_insert(link.customer_id);
        }
    }
    let mut charges_checked = 0;
    for (stripe_customer, customer) in &customers {
        let invoices = client
            .invoices(&InvoiceFilter {
                customer: Some(stripe_customer.clone()),
                created_gte: Some(from.timestamp()),
                created_lt: Some(to.timestamp()),
                ..Default::default()
            })
            .await
            .map_err(stripe_error)?;
        let txns = state.store.transactions(customer, 1000, None).await?;
        for i in &invoices {
            let status = i.status.clone().unwrap_or_default();
            if status == "draft" {
                continue;
            }
            payments_checked += 1;
            add_revenue(&mut revenue, i);
            let Some(id) = &i.id else { continue };
            if i.amount_paid > 0 {
                let paid = txns.iter().find(|t| {
                    t.stripe_invoice.as_deref() == Some(id.as_str())
                        && t.kind == "subscription_payment"
                });
                match paid {
                    None => {
                        let mut x = d("missing_in_tally", customer, None, Some(id));
                        x.stripe = Some(format!("paid {}", i.amount_paid));
                        out.push(x);
                    }
                    Some(t) if t.amount != i.amount_paid => {
                        let mut x = d("amount_differs", customer, Some(&t.id), Some(id));
                        x.tally = Some(t.amount.to_string());
                        x.stripe = Some(i.amount_paid.to_string());
                        out.push(x);
                    }
                    Some(_) => {}
                }
            }
        }
        charges_checked += compare_charges(
            state,
            &client,
            customer,
            stripe_customer,
            &txns,
            (from, to),
            &mut out,
        )
        .await?;
        for t in txns
            .iter()
            .filter(|t| t.kind == "refund" && t.occurred_at >= from && t.occurred_at < to)
        {
            let r = revenue
                .entry(t.currency.to_lowercase())
                .or_insert_with(|| Revenue {
                    currency: t.currency.to_lowercase(),
                    ..Default::default()
                });
            r.refunded = r.refunded.saturating_add(t.amount);
        }
    }

    // Subscriptions: Tally's mirror against Stripe's current state.
    let mut subscriptions_checked = 0;
    for s in &subs {
        let Some(id) = stripe_field(s, "subscription") else {
            continue;
        };
        subscriptions_checked += 1;
        let theirs = client.subscription(&id).await.map_err(stripe_error)?;
        let Some(theirs) = theirs else {
            let mut x = d(
                "missing_in_stripe",
                &s.customer_id,
                Some(&s.customer_id),
                Some(&id),
            );
            x.tally = Some(s.status.clone());
            out.push(x);
            continue;
        };
        let status = status_name(&theirs.value.status);
        if status != s.status {
            let mut x = d(
                "subscription_state_differs",
                &s.customer_id,
                Some(&s.customer_id),
                Some(&id),
            );
            x.tally = Some(s.status.clone());
            x.stripe = Some(status);
            out.push(x);
        }
    }
    Ok(ReconcileReport {
        period: ym.to_owned(),
        invoices_checked,
        payments_checked,
        charges_checked,
        subscriptions_checked,
        discrepancies: out,
        revenue: revenue.into_values().collect(),
    })
}

fn stripe_error(e: tally_stripe::Error) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "api_error",
        "stripe_error",
        format!("Stripe: {e}"),
    )
}

fn add_revenue(revenue: &mut BTreeMap<String, Revenue>, i: &Invoice) {
    let status = i.status.as_deref().unwrap_or_default();
    if status == "void" {
        return;
    }
    let r = revenue
        .entry(i.currency.to_lowercase())
        .or_insert_with(|| Revenue {
            currency: i.currency.to_lowercase(),
            ..Default::default()
        });
    r.invoiced = r.invoiced.saturating_add(i.total);
    r.collected = r.collected.saturating_add(i.amount_paid);
    if status == "open" {
        r.outstanding = r.outstanding.saturating_add(i.amount_remaining);
    }
}

/// Compares a customer's Stripe charges of the month with Tally: what each refunded against
/// Tally's refunds of its payment, and each credit-pack payment (`metadata[tally_pack]` on its
/// payment intent) with a `credit_pack` transaction; and each `credit_pack` transaction of the
/// month with a charge. Returns how many charges it compared.
async fn compare_charges(
    state: &AppState,
    client: &Client,
    customer: &str,
    stripe_customer: &str,
    txns: &[tally_store::Transaction],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    out: &mut Vec<Discrepancy>,
) -> Result<usize, ApiError> {
    let charges = client
        .charges_of_customer(stripe_customer, from.timestamp(), to.timestamp())
        .await
        .map_err(stripe_error)?;
    let mut n = 0;
    let mut intents = BTreeSet::new();
    for ch in charges
        .iter()
        .filter(|c| c.status.as_deref() == Some("succeeded"))
    {
        n += 1;
        let Some(pi) = &ch.payment_intent else {
            continue;
        };
        intents.insert(pi.clone());
        let rows = state.store.refunds_of_payment_intent(pi).await?;
        let ours = rows
            .iter()
            .filter(|r| r.state != "failed")
            .fold(0i64, |a, r| a.saturating_add(r.amount));
        if ours != ch.amount_refunded {
            let kind = if ours == 0 {
                "missing_in_tally"
            } else {
                "amount_differs"
            };
            let mut x = d(
                kind,
                customer,
                rows.first().map(|r| r.id.as_str()),
                Some(&ch.id),
            );
            x.tally = Some(format!("refunded {ours}"));
            x.stripe = Some(format!("refunded {}", ch.amount_refunded));
            out.push(x);
        }
        let recorded = txns
            .iter()
            .any(|t| t.stripe_payment_intent.as_deref() == Some(pi.as_str()));
        if !recorded {
            let intent = client.payment_intent(pi).await.map_err(stripe_error)?;
            if let Some(pack) = intent.and_then(|i| i.value.metadata.get("tally_pack").cloned()) {
                let mut x = d("missing_in_tally", customer, None, Some(pi));
                x.stripe = Some(format!("credit pack {pack} paid {}", ch.amount));
                out.push(x);
            }
        }
    }
    for t in txns.iter().filter(|t| {
        t.kind == "credit_pack"
            && t.status == "succeeded"
            && t.occurred_at >= from
            && t.occurred_at < to
    }) {
        let Some(pi) = &t.stripe_payment_intent else {
            continue;
        };
        if !intents.contains(pi) {
            let mut x = d("missing_in_stripe", customer, Some(&t.id), Some(pi));
            x.tally = Some(format!("credit pack paid {}", t.amount));
            out.push(x);
        }
    }
    Ok(n)
}

/// Compares a pushed invoice's lines and status with its Stripe invoices.
async fn compare_lines(
    client: &Client,
    inv: &tally_store::StoredInvoice,
    push: &tally_store::InvoicePush,
    expected: &[usage_push::PushLine],
    metered: &[super::usage_meters::MeterLine],
    out: &mut Vec<Discrepancy>,
) -> Result<(), ApiError> {
    // Meter mode: Stripe's metered line of a metric (its price, the Tally period) stands for the
    // Tally line it rated.
    let metered_prices: BTreeMap<String, String> = if metered.is_empty() {
        BTreeMap::new()
    } else {
        let keys: Vec<String> = metered.iter().map(|m| m.lookup_key.clone()).collect();
        client
            .prices_by_lookup_keys(&keys)
            .await
            .map_err(stripe_error)?
            .into_iter()
            .filter_map(|p| {
                let k = p.lookup_key?;
                let m = metered.iter().find(|m| m.lookup_key == k)?;
                Some((p.id, m.line_id.clone()))
            })
            .collect()
    };
    let targets: BTreeSet<String> = [&push.renewal_invoice, &push.standalone_invoice]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let mut found: BTreeMap<String, Vec<(String, i64, Option<String>)>> = BTreeMap::new();
    let carrier = push.stripe_invoice().unwrap_or_default().to_owned();
    for sid in &targets {
        let Some(si) = client.invoice(sid).await.map_err(stripe_error)? else {
            let mut x = d(
                "missing_in_stripe",
                &inv.customer_id,
                Some(&inv.id),
                Some(sid),
            );
            x.tally = Some(push.state.clone());
            out.push(x);
            continue;
        };
        let status = si.value.status.clone().unwrap_or_default();
        if *sid == carrier && settled(&push.state) != stripe_settled(&status) {
            let mut x = d("status_differs", &inv.customer_id, Some(&inv.id), Some(sid));
            x.tally = Some(push.state.clone());
            x.stripe = Some(status.clone());
            out.push(x);
        }
        for l in client.invoice_lines(sid).await.map_err(stripe_error)? {
            let metered_line = l
                .price
                .as_ref()
                .and_then(|p| metered_prices.get(p))
                .filter(|_| l.period_end == Some(push.period_end.timestamp()));
            if let Some(line) = metered_line {
                found
                    .entry(line.clone())
                    .or_default()
                    .push((sid.clone(), l.amount, None));
                continue;
            }
            if l.metadata.get(META_INVOICE) != Some(&inv.id) {
                continue;
            }
            let line = l.metadata.get(META_LINE).cloned().unwrap_or_default();
            found
                .entry(line)
                .or_default()
                .push((sid.clone(), l.amount, l.invoice_item.clone()));
        }
    }
    for e in expected {
        match found.get(&e.line_id).map(Vec::as_slice) {
            None | Some([]) => {
                let mut x = d(
                    "missing_in_stripe",
                    &inv.customer_id,
                    Some(&inv.id),
                    Some(&carrier),
                );
                x.line = Some(e.line_id.clone());
                x.tally = Some(e.amount.to_string());
                out.push(x);
            }
            Some([(sid, amount, _), rest @ ..]) => {
                if *amount != e.amount {
                    let mut x = d("amount_differs", &inv.customer_id, Some(&inv.id), Some(sid));
                    x.line = Some(e.line_id.clone());
                    x.tally = Some(e.amount.to_string());
                    x.stripe = Some(amount.to_string());
                    out.push(x);
                }
                for (sid, amount, item) in rest {
                    let mut x = d(
                        "extra_in_stripe",
                        &inv.customer_id,
                        Some(&inv.id),
                        Some(item.as_deref().unwrap_or(sid)),
                    );
                    x.line = Some(e.line_id.clone());
                    x.stripe = Some(amount.to_string());
                    out.push(x);
                }
            }
        }
    }
    for (line, items) in &found {
        if expected.iter().any(|e| e.line_id == *line) {
            continue;
        }
        for (sid, amount, item) in items {
            let mut x = d(
                "extra_in_stripe",
                &inv.customer_id,
                Some(&inv.id),
                Some(item.as_deref().unwrap_or(sid)),
            );
            x.line = Some(line.clone());
            x.stripe = Some(amount.to_string());
            out.push(x);
        }
    }
    Ok(())
}

/// `YYYY-MM` of an instant.
pub fn month_of(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// Runs the reconciliation of the current and the previous month once a day, in the process
/// holding its lease, and exports the number of discrepancies found.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if state.stripe.is_some() {
                worker::run_item(&state, WORKER, "daily", daily(&state)).await;
            }
        }
    });
}

/// One run of the daily job: the discrepancies of this month and the previous one, logged and
/// exported. Returns their number (`None` when another process holds the job's lease).
pub async fn daily(state: &AppState) -> Result<Option<usize>, ApiError> {
    let now = state.clock.now();
    // Held for the whole day: another process's daily tick, whenever it falls, finds it taken
    // until a day after this run, so the job runs once a day whatever the number of processes
    // (after a crash of the holder, another process runs it once the day is over).
    let lease = chrono::Duration::from_std(EVERY).unwrap_or(chrono::Duration::days(1));
    if !state
        .store
        .acquire_lease(LEASE, &state.instance_id, now, now + lease)
        .await?
    {
        return Ok(None);
    }
    let last_month = month_of(now - chrono::Duration::days(i64::from(now.day())));
    // Subscriptions are compared in both months' reports: each discrepancy counts once.
    let mut seen = BTreeSet::new();
    for ym in [last_month, month_of(now)] {
        let report = reconcile(state, &ym).await?;
        for x in report.discrepancies {
            if seen.insert(x.clone()) {
                tracing::warn!(period = %ym, kind = %x.kind, customer = %x.customer,
                    tally = ?x.tally_id, stripe = ?x.stripe_id, line = ?x.line,
                    "Stripe discrepancy");
            }
        }
    }
    state.metrics.set_reconcile_discrepancies(seen.len() as u64);
    Ok(Some(seen.len()))
}
