//! Usage to Stripe: each closed invoice of a customer with a Stripe subscription has its usage
//! lines (overage, markups, minimums, late-usage adjustments — everything but the base price,
//! which Stripe bills on the subscription itself) put on the customer's Stripe invoice for that
//! period, exactly once.
//!
//! - **Where.** On the renewal invoice Stripe drafted at the period's end (`subscription_cycle`,
//!   `period_end` = the Tally period's end) while it is still a draft, so the customer pays base
//!   and usage on one invoice. Where it is no longer a draft, or no renewal falls on the period's
//!   end (an annual plan's eleven other months, or periods that do not line up with Stripe's),
//!   on a standalone invoice for that period, finalized and charged at once.
//! - **Once.** A push row per Tally invoice is committed before any Stripe call; each call's
//!   idempotency key comes from it (`invoice_line` keys from the Tally invoice id, the line id and
//!   the Stripe invoice; the standalone invoice's from the Tally invoice id), and each invoice
//!   item carries `metadata[tally_invoice_id]` and `metadata[tally_line_id]`. After adding, the
//!   Stripe invoice's lines are listed (every page) and what is missing is added, what is extra
//!   (a line twice, a line Tally does not have) deleted, until they match, before the invoice is
//!   finalized. A rerun, a crash half-way, a 429/500/timeout or a second process therefore never
//!   bills a line twice: a row is worked on by one holder at a time (a claim), repeated calls
//!   replay Stripe's first answer, and the listing finds what an earlier attempt already did.
//! - **Who.** In `tally serve`, one process among those sharing a database (a lease) runs the
//!   pusher after the closer; `tally sync --commit` pushes through the same functions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tally_store::usage_push::state as push_state;
use tally_store::{InvoicePush, PushOutcome, PushTarget, StoredInvoice};
use tally_stripe::model::InvoiceLine as StripeLine;
use tally_stripe::{Client, ErrorKind, IdempotencyKey, InvoiceFilter, NewInvoice, NewInvoiceItem};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::worker;
use crate::error::ApiError;
use crate::state::AppState;

/// The pusher's name in logs and metrics.
pub const WORKER: &str = "usage_pusher";
/// The lease naming the process that pushes.
pub const LEASE: &str = "usage_pusher";
/// How long a claim keeps other holders off a push. A push makes a few calls, each with the
/// gateway's retries; a holder killed half-way delays the push by this long at most.
pub const CLAIM: Duration = Duration::from_secs(300);
/// How long after a period's end Tally waits for Stripe's renewal invoice when the subscription
/// renews then, before billing the usage on a standalone invoice instead.
pub const RENEWAL_WAIT: Duration = Duration::from_secs(3600);
/// Invoices given push rows, and pushes attempted, per round.
const BATCH: usize = 200;
/// Metadata keys of the invoice items and invoices Tally creates.
pub const META_INVOICE: &str = "tally_invoice_id";
pub const META_LINE: &str = "tally_line_id";
pub const META_CUSTOMER: &str = "tally_customer_id";

/// One line of a Tally invoice billed through Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PushLine {
    /// `L<index>`: the line's position in the Tally invoice.
    pub line_id: String,
    /// `usage`, `minimum` or `adjustment`.
    pub kind: String,
    pub description: String,
    /// Minor units.
    pub amount: i64,
}

/// The lines of a closed invoice that go to Stripe: every non-zero line but the base price
/// (Stripe bills it on the subscription) and prorations (Stripe makes its own).
pub fn push_lines(inv: &StoredInvoice) -> Vec<PushLine> {
    let Some(lines) = inv.body.get("lines").and_then(Value::as_array) else {
        return Vec::new();
    };
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let kind = l.get("kind")?.as_str()?;
            let amount = l.get("amount")?.as_i64()?;
            if !matches!(kind, "usage" | "minimum" | "adjustment") || amount == 0 {
                return None;
            }
            Some(PushLine {
                line_id: format!("L{i}"),
                kind: kind.to_owned(),
                description: l
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or(kind)
                    .to_owned(),
                amount,
            })
        })
        .collect()
}

/// A Tally invoice's push state as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StripeState {
    /// `pending`, `sent`, `paid`, `failed`, `voided` or `skipped` (nothing to bill through
    /// Stripe).
    pub state: String,
    /// The Stripe invoice that carries the usage lines (the standalone one when there is one).
    pub invoice: Option<String>,
    /// The renewal invoice the lines went on, if any.
    pub renewal_invoice: Option<String>,
    /// The invoice Tally made for lines no renewal took, if any.
    pub standalone_invoice: Option<String>,
    /// Lines billed through Stripe, and their sum in minor units.
    pub lines: i64,
    pub amount: i64,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Stripe's `Request-Id` of the last call.
    pub request_id: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Stripe's page where the customer sees and pays the invoice, once Stripe finalized it.
    pub hosted_invoice_url: Option<String>,
}

impl From<&InvoicePush> for StripeState {
    fn from(p: &InvoicePush) -> Self {
        StripeState {
            state: p.state.clone(),
            invoice: p.stripe_invoice().map(str::to_owned),
            renewal_invoice: p.renewal_invoice.clone(),
            standalone_invoice: p.standalone_invoice.clone(),
            lines: p.lines,
            amount: p.amount,
            attempts: p.attempts,
            last_error: p.last_error.clone(),
            request_id: p.request_id.clone(),
            updated_at: p.updated_at,
            hosted_invoice_url: p.hosted_invoice_url.clone(),
        }
    }
}

/// Runs [`round`] every `close_every` until `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if state.stripe.is_some() {
                worker::run_item(&state, WORKER, "round", round(&state)).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(state.config.close_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// One round of the pusher, in the process holding its lease: gives new closed invoices their
/// push rows, then attempts the pushes due. Returns how many pushes it attempted.
pub async fn round(state: &AppState) -> Result<usize, ApiError> {
    let Some(client) = state.stripe.clone() else {
        return Ok(0);
    };
    let now = state.clock.now();
    let lease = chrono::Duration::from_std(state.config.close_every * 3)
        .unwrap_or(chrono::Duration::minutes(3))
        .max(chrono::Duration::seconds(60));
    if !state
        .store
        .acquire_lease(LEASE, &state.instance_id, now, now + lease)
        .await?
    {
        return Ok(0);
    }
    enqueue(state).await?;
    let due = state.store.due_pushes(now, BATCH).await?;
    let mut n = 0;
    for id in due {
        let work = push_invoice(state, &client, &id);
        if worker::run_item(state, WORKER, &id, work).await.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Gives each closed invoice of a customer with a Stripe subscription its push row (pending, or
/// skipped when it has nothing to bill through Stripe). Returns how many rows it wrote.
pub async fn enqueue(state: &AppState) -> Result<usize, ApiError> {
    let mut written = 0;
    loop {
        let invoices = state.store.invoices_to_push(BATCH).await?;
        let n = invoices.len();
        for inv in invoices {
            row_for(state, &inv).await?;
            written += 1;
        }
        if n < BATCH {
            return Ok(written);
        }
    }
}

/// The push row of a closed invoice, written now unless it exists; `None` when the customer's
/// subscription does not come from Stripe.
pub async fn row_for(
    state: &AppState,
    inv: &StoredInvoice,
) -> Result<Option<InvoicePush>, ApiError> {
    if let Some(p) = state.store.get_push(&inv.id).await? {
        return Ok(Some(p));
    }
    let Some(sub) = state.store.get_subscription(&inv.customer_id).await? else {
        return Ok(None);
    };
    if sub.source != "stripe" {
        return Ok(None);
    }
    let field = |k: &str| {
        sub.stripe
            .as_ref()
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let lines = push_lines(inv);
    let amount = lines.iter().fold(0i64, |a, l| a.saturating_add(l.amount));
    let now = state.clock.now();
    // A period that ended before Tally saw the Stripe subscription was not billed through it.
    let before_subscription = inv.period_end <= sub.created_at;
    let (row_state, why) = if lines.is_empty() {
        (push_state::SKIPPED, None)
    } else if before_subscription {
        (
            push_state::SKIPPED,
            Some("the period ended before the Stripe subscription".to_owned()),
        )
    } else {
        (push_state::PENDING, None)
    };
    let row = InvoicePush {
        invoice_id: inv.id.clone(),
        customer_id: inv.customer_id.clone(),
        stripe_customer: field("customer").unwrap_or_default(),
        stripe_subscription: field("subscription"),
        period_start: inv.period_start,
        period_end: inv.period_end,
        currency: inv.currency.clone(),
        lines: i64::try_from(lines.len()).unwrap_or(i64::MAX),
        amount,
        state: row_state.to_owned(),
        renewal_invoice: None,
        standalone_invoice: None,
        attempts: 0,
        last_error: why,
        request_id: None,
        next_attempt_at: now,
        created_at: now,
        updated_at: now,
        hosted_invoice_url: None,
    };
    Ok(Some(state.store.insert_push(row).await?))
}

/// Why an attempt did not finish.
enum Stop {
    /// Stripe's renewal invoice for the period is not there yet: try again soon.
    Waiting,
    /// The attempt failed; retried with backoff.
    Failed {
        error: String,
        request_id: Option<String>,
    },
}

impl From<tally_stripe::Error> for Stop {
    fn from(e: tally_stripe::Error) -> Self {
        Stop::Failed {
            request_id: e.request_id.clone(),
            error: format!("Stripe: {e}"),
        }
    }
}

impl From<tally_store::StoreError> for Stop {
    fn from(e: tally_store::StoreError) -> Self {
        Stop::Failed {
            error: format!("database: {e}"),
            request_id: None,
        }
    }
}

/// Pushes one invoice's lines (a pending push, claimed for this process; others are left
/// alone) and records how it went. Returns the row afterwards.
pub async fn push_invoice(
    state: &AppState,
    client: &Client,
    invoice_id: &str,
) -> Result<Option<InvoicePush>, ApiError> {
    let now = state.clock.now();
    let Some(row) = state.store.get_push(invoice_id).await? else {
        return Ok(None);
    };
    if row.state != push_state::PENDING {
        return Ok(Some(row));
    }
    let until = now + chrono::Duration::from_std(CLAIM).unwrap_or(chrono::Duration::minutes(5));
    let holder = state.instance_id.to_string();
    let Some(row) = state
        .store
        .claim_push(invoice_id, &holder, now, until)
        .await?
    else {
        // Another process is pushing it.
        return Ok(state.store.get_push(invoice_id).await?);
    };
    if row.state != push_state::PENDING {
        state
            .store
            .finish_push(invoice_id, &holder, unchanged(&row, now))
            .await?;
        return Ok(Some(row));
    }
    let inv = state
        .store
        .list_invoices(&row.customer_id)
        .await?
        .into_iter()
        .find(|i| i.id == row.invoice_id);
    let result = match &inv {
        Some(inv) => attempt(state, client, row.clone(), inv).await,
        None => Err(Stop::Failed {
            error: "the Tally invoice is missing".into(),
            request_id: None,
        }),
    };
    let now = state.clock.now();
    let outcome = match result {
        Ok((final_state, request_id)) => PushOutcome {
            state: final_state.to_owned(),
            last_error: None,
            request_id,
            next_attempt_at: now,
            failed: false,
            now,
        },
        Err(Stop::Waiting) => PushOutcome {
            state: push_state::PENDING.into(),
            last_error: Some("waiting for Stripe's renewal invoice of the period".into()),
            request_id: None,
            next_attempt_at: now + chrono::Duration::seconds(60),
            failed: false,
            now,
        },
        Err(Stop::Failed { error, request_id }) => {
            tracing::warn!(invoice = %invoice_id, %error, "usage push failed; will retry");
            state.metrics.add_worker_failure(WORKER);
            state.metrics.add_sync_failure();
            // 2, 4, 8 … s, at most an hour.
            let secs = 1i64 << (row.attempts.saturating_add(1)).clamp(1, 12);
            PushOutcome {
                state: push_state::PENDING.into(),
                last_error: Some(error),
                request_id,
                next_attempt_at: now + chrono::Duration::seconds(secs.min(3600)),
                failed: true,
                now,
            }
        }
    };
    state
        .store
        .finish_push(invoice_id, &holder, outcome)
        .await?;
    Ok(state.store.get_push(invoice_id).await?)
}

fn unchanged(row: &InvoicePush, now: DateTime<Utc>) -> PushOutcome {
    PushOutcome {
        state: row.state.clone(),
        last_error: row.last_error.clone(),
        request_id: None,
        next_attempt_at: row.next_attempt_at,
        failed: false,
        now,
    }
}

/// One attempt: the lines onto the renewal draft, the rest onto the standalone invoice, which is
/// then finalized and charged. Returns the push's state and the last request id.
async fn attempt(
    state: &AppState,
    client: &Client,
    mut row: InvoicePush,
    inv: &StoredInvoice,
) -> Result<(&'static str, Option<String>), Stop> {
    if row.stripe_customer.is_empty() {
        return Err(Stop::Failed {
            error: "the customer's Stripe subscription names no Stripe customer".into(),
            request_id: None,
        });
    }
    let mut lines = push_lines(inv);
    let mut metered = super::usage_meters::meter_lines(&state.catalog, inv, &lines);
    if !metered.is_empty() {
        // Only a subscription carrying a metric's metered price bills its meter (one made
        // before the catalog moved to meter mode does not): other lines stay invoice items.
        let items = match &row.stripe_subscription {
            Some(sub) => client
                .subscription(sub)
                .await?
                .map(|s| s.value.items)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        metered.retain(|m| {
            items
                .iter()
                .any(|it| it.lookup_key.as_deref() == Some(m.lookup_key.as_str()))
        });
    }
    let now = state.clock.now();
    if row.renewal_invoice.is_none() && row.standalone_invoice.is_none() {
        match find_renewal(client, &row, now).await? {
            // Meter mode: meter events reach only a renewal that is still a draft; otherwise
            // the lines go on a standalone invoice, rated by Tally.
            Renewal::Found(id) if !metered.is_empty() && !is_draft(client, &id).await? => {}
            Renewal::Found(id) => {
                if let Some(r) = state
                    .store
                    .set_push_invoice(&row.invoice_id, PushTarget::Renewal, &id, now)
                    .await?
                {
                    row = r;
                }
            }
            Renewal::Wait => return Err(Stop::Waiting),
            Renewal::None => {}
        }
    }
    let mut meter_request = None;
    if row.renewal_invoice.is_some() && !metered.is_empty() {
        // A renewal is recorded only as a draft in meter mode: these lines go by meter events.
        let (recorded, request_id) = super::usage_meters::send(client, &row, &metered).await?;
        state.metrics.add_lines_pushed(recorded);
        meter_request = request_id;
        lines.retain(|l| !metered.iter().any(|m| m.line_id == l.line_id));
    }
    let mut rest = lines.clone();
    let mut renewal_status = None;
    if let Some(renewal) = row.renewal_invoice.clone() {
        let settled = settle(&state.metrics, client, &renewal, &row, &lines).await?;
        rest = settled.missing;
        renewal_status = Some(settled.status);
    }
    if rest.is_empty() && row.standalone_invoice.is_none() {
        let st = match renewal_status.as_deref() {
            Some("paid") => push_state::PAID,
            Some("void") | Some("uncollectible") => push_state::VOIDED,
            _ => push_state::SENT,
        };
        return Ok((st, meter_request));
    }
    // A standalone invoice for what no renewal took.
    let standalone = match row.standalone_invoice.clone() {
        Some(s) => s,
        None => {
            let mut metadata = tally_stripe::model::Metadata::new();
            metadata.insert(META_INVOICE.into(), row.invoice_id.clone());
            metadata.insert(META_CUSTOMER.into(), row.customer_id.clone());
            let created = client
                .create_invoice(
                    &NewInvoice {
                        customer: row.stripe_customer.clone(),
                        currency: row.currency.to_lowercase(),
                        subscription: row.stripe_subscription.clone(),
                        description: Some(format!(
                            "Usage {} to {}",
                            row.period_start.format("%Y-%m-%d"),
                            row.period_end.format("%Y-%m-%d")
                        )),
                        metadata,
                    },
                    &IdempotencyKey::from_row("usage_invoice", &row.invoice_id, 0),
                )
                .await?;
            let id = created.value.id.clone().ok_or_else(|| Stop::Failed {
                error: "Stripe returned an invoice without an id".into(),
                request_id: created.meta.request_id.clone(),
            })?;
            match state
                .store
                .set_push_invoice(&row.invoice_id, PushTarget::Standalone, &id, now)
                .await?
            {
                Some(r) => {
                    row = r;
                    row.standalone_invoice.clone().unwrap_or(id)
                }
                None => id,
            }
        }
    };
    let settled = settle(&state.metrics, client, &standalone, &row, &rest).await?;
    if !settled.missing.is_empty() {
        return Err(Stop::Failed {
            error: format!(
                "{} line(s) missing on {standalone}, which is no longer a draft",
                settled.missing.len()
            ),
            request_id: None,
        });
    }
    let mut status = settled.status;
    let mut request_id = None;
    if status == "draft" {
        let fin = client
            .finalize_invoice(
                &standalone,
                &IdempotencyKey::from_row("usage_invoice_finalize", &row.invoice_id, 0),
            )
            .await?;
        request_id = fin.meta.request_id.clone();
        status = fin.value.status.unwrap_or_default();
    }
    if status == "open" {
        match client
            .pay_invoice(
                &standalone,
                &IdempotencyKey::from_row("usage_invoice_pay", &row.invoice_id, 0),
            )
            .await
        {
            Ok(paid) => {
                request_id = paid.meta.request_id.clone();
                status = paid.value.status.unwrap_or_default();
            }
            // A declined card: Stripe keeps collecting on its schedule; the webhook moves the
            // push to paid when it succeeds.
            Err(e) if matches!(e.kind, ErrorKind::CardDeclined { .. }) => {
                return Ok((push_state::FAILED, e.request_id));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((
        match status.as_str() {
            "paid" => push_state::PAID,
            "void" | "uncollectible" => push_state::VOIDED,
            "open" => push_state::FAILED,
            _ => push_state::SENT,
        },
        request_id,
    ))
}

async fn is_draft(client: &Client, invoice: &str) -> Result<bool, Stop> {
    Ok(client
        .invoice(invoice)
        .await?
        .is_some_and(|i| i.value.status.as_deref() == Some("draft")))
}

enum Renewal {
    Found(String),
    /// The subscription renews at the period's end and the renewal is not there yet.
    Wait,
    None,
}

/// Stripe's renewal invoice whose billed period ends where the Tally period ends.
async fn find_renewal(
    client: &Client,
    row: &InvoicePush,
    now: DateTime<Utc>,
) -> Result<Renewal, Stop> {
    let Some(sub) = &row.stripe_subscription else {
        return Ok(Renewal::None);
    };
    let end = row.period_end.timestamp();
    let invoices = client
        .invoices(&InvoiceFilter {
            subscription: Some(sub.clone()),
            created_gte: Some(end.saturating_sub(86_400)),
            ..Default::default()
        })
        .await?;
    if let Some(found) = invoices.iter().find(|i| {
        i.billing_reason.as_deref() == Some("subscription_cycle") && i.period_end == Some(end)
    }) {
        return Ok(found.id.clone().map_or(Renewal::None, Renewal::Found));
    }
    let wait = chrono::Duration::from_std(RENEWAL_WAIT).unwrap_or(chrono::Duration::hours(1));
    let Some(s) = client.subscription(sub).await? else {
        return Ok(Renewal::None);
    };
    let renews_then = s
        .value
        .items
        .first()
        .is_some_and(|it| it.current_period_end == end);
    let live = !matches!(
        s.value.status,
        tally_stripe::model::SubscriptionStatus::Canceled
            | tally_stripe::model::SubscriptionStatus::IncompleteExpired
    );
    if renews_then && live && now < row.period_end + wait {
        return Ok(Renewal::Wait);
    }
    Ok(Renewal::None)
}

struct Settled {
    /// Lines expected but not on the invoice, which is no longer a draft.
    missing: Vec<PushLine>,
    /// The invoice's status when it matched (or stopped being editable).
    status: String,
}

fn line_key(row: &InvoicePush, line: &PushLine, stripe_invoice: &str) -> IdempotencyKey {
    IdempotencyKey::from_row(
        "invoice_line",
        &format!("{}:{}:{}", row.invoice_id, line.line_id, stripe_invoice),
        0,
    )
}

/// Makes the lines of this Tally invoice on `stripe_invoice` exactly `expected` while it is a
/// draft: lists its lines (every page), adds the missing ones, deletes the extra ones, and lists
/// again until they match. Once it is not a draft, reports what it lacks.
async fn settle(
    metrics: &crate::metrics::Metrics,
    client: &Client,
    stripe_invoice: &str,
    row: &InvoicePush,
    expected: &[PushLine],
) -> Result<Settled, Stop> {
    for _ in 0..4 {
        let Some(inv) = client.invoice(stripe_invoice).await? else {
            return Err(Stop::Failed {
                error: format!("Stripe invoice {stripe_invoice} does not exist"),
                request_id: None,
            });
        };
        let status = inv.value.status.clone().unwrap_or_default();
        let lines = client.invoice_lines(stripe_invoice).await?;
        let (missing, extra) = compare(row, expected, &lines);
        if status != "draft" {
            if !extra.is_empty() {
                tracing::error!(invoice = %row.invoice_id, stripe_invoice, extra = extra.len(),
                    "lines Tally does not expect on a finalized Stripe invoice");
            }
            return Ok(Settled { missing, status });
        }
        if missing.is_empty() && extra.is_empty() {
            return Ok(Settled { missing, status });
        }
        for item in extra {
            match client.delete_invoice_item(&item).await {
                Ok(_) => {}
                Err(e) if not_editable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for line in missing {
            let mut metadata = tally_stripe::model::Metadata::new();
            metadata.insert(META_INVOICE.into(), row.invoice_id.clone());
            metadata.insert(META_LINE.into(), line.line_id.clone());
            metadata.insert(META_CUSTOMER.into(), row.customer_id.clone());
            let item = NewInvoiceItem {
                customer: row.stripe_customer.clone(),
                amount: line.amount,
                currency: row.currency.to_lowercase(),
                description: line.description.clone(),
                invoice: Some(stripe_invoice.to_owned()),
                period: Some((row.period_start.timestamp(), row.period_end.timestamp())),
                metadata,
            };
            match client
                .create_invoice_item(&item, &line_key(row, &line, stripe_invoice))
                .await
            {
                // A replayed create (the same key) was counted when it was made.
                Ok(r) if r.meta.replayed => {}
                Ok(_) => {
                    metrics.add_lines_pushed(1);
                }
                // Finalized meanwhile: the next listing says what it holds.
                Err(e) if not_editable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(Stop::Failed {
        error: format!("the lines on {stripe_invoice} did not settle"),
        request_id: None,
    })
}

fn not_editable(e: &tally_stripe::Error) -> bool {
    matches!(&e.kind, ErrorKind::InvalidRequest { code: Some(c), .. } if c == "invoice_not_editable")
}

/// The expected lines missing from `lines`, and the invoice items of this Tally invoice on it
/// that are not expected (or repeat a line).
fn compare(
    row: &InvoicePush,
    expected: &[PushLine],
    lines: &[StripeLine],
) -> (Vec<PushLine>, Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut extra = Vec::new();
    for l in lines {
        if l.metadata.get(META_INVOICE) != Some(&row.invoice_id) {
            continue;
        }
        let line_id = l.metadata.get(META_LINE).cloned().unwrap_or_default();
        let wanted = expected.iter().any(|e| e.line_id == line_id);
        if !wanted || !seen.insert(line_id) {
            if let Some(ii) = &l.invoice_item {
                extra.push(ii.clone());
            }
        }
    }
    let missing = expected
        .iter()
        .filter(|e| !seen.contains(&e.line_id))
        .cloned()
        .collect();
    (missing, extra)
}

/// The push state a Stripe invoice's status means: paid; voided (void or uncollectible); failed
/// (open after a collection attempt: Stripe retries); otherwise sent.
pub fn state_of_stripe_invoice(i: &tally_stripe::model::Invoice) -> &'static str {
    match i.status.as_deref() {
        Some("paid") => push_state::PAID,
        Some("void" | "uncollectible") => push_state::VOIDED,
        Some("open") if i.attempted => push_state::FAILED,
        _ => push_state::SENT,
    }
}

/// Moves the pushes on a Stripe invoice to the state its event reports (`invoice.paid`,
/// `invoice.payment_failed`, `invoice.voided`, `invoice.marked_uncollectible`). Returns how many
/// moved.
pub async fn on_invoice_status(
    state: &AppState,
    stripe_invoice: &str,
    new_state: &str,
) -> Result<u64, ApiError> {
    Ok(state
        .store
        .set_push_state_of_stripe_invoice(stripe_invoice, new_state, state.clock.now())
        .await?)
}
