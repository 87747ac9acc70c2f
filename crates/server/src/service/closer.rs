//! The period closer: for each subscription, and for each customer without one when the catalog has
//! a free plan (on which a subscribed customer's periods before its subscription are billed too),
//! every allowance period that ended more than the grace window ago gets its invoice written,
//! exactly once (unique per customer and period; the store rates inside its transaction so no
//! event slips in between). Free-plan periods total zero (the free plan must not charge) and are
//! invoiced all the same, so the closed invoices are complete and `billed_through` moves on.
//! Events of a closed period that arrive later are billed in the next invoice as labelled
//! adjustments.

use chrono::{DateTime, Utc};
use tally_core::period::Period;
use tally_store::{Customer, NewInvoice, StoredInvoice};
use tokio::sync::watch;

use super::usage::{self, billed_plan, BilledPlan};
use super::worker;
use crate::error::ApiError;
use crate::state::AppState;

/// The lease naming the process that closes periods.
pub const CLOSER_LEASE: &str = "period_closer";

/// How many customers the closer reads at a time when it walks every customer.
const CUSTOMER_PAGE: usize = 500;

/// Runs [`close_due`] every `close_every` until `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            // Invoices are counted, not kept: a month's invoices of every customer may be many.
            let mut count = 0usize;
            // A round that fails outside any customer (e.g. the database is away) is logged and
            // counted like an item, and retried at the next tick.
            let round = close_due_each(&state, state.clock.now(), |_| count += 1);
            if worker::run_item(&state, worker::CLOSER, "round", round)
                .await
                .is_some()
                && count > 0
            {
                tracing::info!(invoices = count, "periods closed");
            }
            tokio::select! {
                _ = tokio::time::sleep(state.config.close_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Writes the invoices of every period that ended before `now − grace`. Returns those written.
/// A customer whose periods cannot be closed is logged, counted and skipped (see
/// [`worker::run_item`]); the others are closed all the same.
pub async fn close_due(
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<Vec<StoredInvoice>, ApiError> {
    let mut written = Vec::new();
    close_due_each(state, now, |inv| written.push(inv)).await?;
    Ok(written)
}

/// Like [`close_due`], handing each invoice written to `on_written` instead of collecting them.
pub async fn close_due_each(
    state: &AppState,
    now: DateTime<Utc>,
    mut on_written: impl FnMut(StoredInvoice) + Send,
) -> Result<(), ApiError> {
    let grace =
        chrono::Duration::from_std(state.config.grace).unwrap_or(chrono::Duration::hours(1));
    let Some(mut lead) = Leadership::take(state, now).await? else {
        return Ok(());
    };
    let due = DuePeriods { now, grace };
    let free = billed_plan(&state.catalog, None);
    for sub in state.store.list_subscriptions().await? {
        let Some(customer) = state.store.get_customer(&sub.customer_id).await? else {
            continue;
        };
        let Some(billed) = billed_plan(&state.catalog, Some(&sub)) else {
            tracing::warn!(customer = %customer.id, plan = %sub.plan, "plan not in the catalog; not closing");
            continue;
        };
        // Before its subscription, the customer was billed on the free plan, if there is one.
        let plans = PlanSchedule {
            plan: &billed,
            from: customer.allowance_period(sub.created_at).start,
            before: free.as_ref(),
        };
        let work = close_customer(state, &customer, plans, due, &mut on_written);
        worker::run_item(state, worker::CLOSER, &customer.id, work).await;
        if !lead.keep(state).await? {
            return Ok(());
        }
    }
    // Customers without a subscription are billed on the free plan, if the catalog has one. They
    // are read a page at a time, so the closer never holds all of them in memory.
    if let Some(free) = &free {
        let mut after: Option<String> = None;
        loop {
            let page = state
                .store
                .list_customers_after(after.as_deref(), CUSTOMER_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id.clone());
            for customer in &page {
                let plans = PlanSchedule {
                    plan: free,
                    from: customer.allowance_period(customer.created_at).start,
                    before: None,
                };
                // Most customers have nothing due at a given tick: they cost no query.
                if !due.is_due(plans.next_open_period(customer)) {
                    continue;
                }
                // A subscription (even a canceled one) is closed by the loop above.
                if state.store.get_subscription(&customer.id).await?.is_some() {
                    continue;
                }
                let work = close_customer(state, customer, plans, due, &mut on_written);
                worker::run_item(state, worker::CLOSER, &customer.id, work).await;
                if !lead.keep(state).await? {
                    return Ok(());
                }
            }
            if page.len() < CUSTOMER_PAGE {
                break;
            }
        }
    }
    Ok(())
}

/// This process's lease on closing periods: one closer among the processes sharing a database.
/// The lease (a row with holder and expiry, see [`tally_store::Store::acquire_lease`]) is taken
/// at each tick and renewed during a long round, so it lapses only when its holder stops — killed,
/// hung, or cut off from the database — and another process takes over within the lease time. A
/// holder that fails to renew stops its round. (Invoices are unique per customer and period
/// anyway, so even two closers could not bill a period twice.)
struct Leadership {
    lease: chrono::Duration,
    renewed: DateTime<Utc>,
}

impl Leadership {
    /// Takes or renews the lease at `now`; `None` when another process holds it.
    async fn take(state: &AppState, now: DateTime<Utc>) -> Result<Option<Leadership>, ApiError> {
        // The lease outlives a few ticks, so a leader renews it long before it lapses.
        let lease = chrono::Duration::from_std(state.config.worker_lease)
            .unwrap_or(chrono::Duration::seconds(60))
            .max(
                chrono::Duration::from_std(state.config.close_every * 3)
                    .unwrap_or(chrono::Duration::minutes(3)),
            );
        let held = state
            .store
            .acquire_lease(CLOSER_LEASE, &state.instance_id, now, now + lease)
            .await;
        let held = held.inspect_err(|_| state.metrics.set_closer_leader(false))?;
        state.metrics.set_closer_leader(held);
        Ok(held.then_some(Leadership {
            lease,
            renewed: now,
        }))
    }

    /// Renews the lease once a third of it has passed; false when it was lost.
    async fn keep(&mut self, state: &AppState) -> Result<bool, ApiError> {
        let now = state.clock.now();
        if now - self.renewed < self.lease / 3 {
            return Ok(true);
        }
        match Leadership::take(state, now).await? {
            Some(renewed) => {
                *self = renewed;
                Ok(true)
            }
            None => {
                tracing::warn!(
                    "the period closer's lease passed to another process; round stopped"
                );
                Ok(false)
            }
        }
    }
}

/// When periods are due for closing.
#[derive(Debug, Clone, Copy)]
struct DuePeriods {
    now: DateTime<Utc>,
    /// A period closes once it ended this long ago.
    grace: chrono::Duration,
}

impl DuePeriods {
    fn is_due(self, period: Period) -> bool {
        period.end + self.grace <= self.now
    }
}

/// The plans a customer's periods are billed on.
#[derive(Debug, Clone, Copy)]
struct PlanSchedule<'a> {
    /// The plan of the periods from `from` on.
    plan: &'a BilledPlan,
    /// The start of the first period billed on `plan` (the one in which it was taken).
    from: DateTime<Utc>,
    /// The plan of the earlier periods, since the customer was created; without one they are
    /// not invoiced.
    before: Option<&'a BilledPlan>,
}

impl PlanSchedule<'_> {
    /// The customer's first period without an invoice that is billed at all.
    fn next_open_period(&self, customer: &Customer) -> Period {
        let first = match self.before {
            Some(_) => customer.allowance_period(customer.created_at).start,
            None => self.from,
        };
        let start = customer.billed_through.map_or(first, |b| b.max(first));
        customer.allowance_period(start)
    }

    fn plan_of(&self, period: Period) -> &BilledPlan {
        match self.before {
            Some(before) if period.start < self.from => before,
            _ => self.plan,
        }
    }
}

/// Writes the invoice of every due period of one customer, from the end of its last invoice on (or
/// its first billed period), and hands each to `on_written` (a period another process closed first
/// is skipped). `customer` carries where its invoices end: a stale value costs a skipped close.
async fn close_customer(
    state: &AppState,
    customer: &Customer,
    plans: PlanSchedule<'_>,
    due: DuePeriods,
    on_written: &mut (impl FnMut(StoredInvoice) + Send),
) -> Result<(), ApiError> {
    let allowance = customer.allowance();
    let mut period = plans.next_open_period(customer);
    while due.is_due(period) {
        let pre = usage::period_usage(state, customer, period).await?;
        let catalog = state.catalog.clone();
        let billed = plans.plan_of(period).clone();
        let anchor = allowance.anchor_at(period.start);
        let customer_id = customer.id.clone();
        let created_at = state.clock.now();
        let build: tally_store::InvoiceBuilder = Box::new(move |rows| {
            // Late rows read again inside the transaction; origins were loaded just before.
            let mut usage = pre;
            usage.late = rows.iter().filter(|r| r.is_adjustment()).cloned().collect();
            for r in rows.iter().filter(|r| !r.is_adjustment()) {
                if let Some(m) = catalog.metric(&r.metric) {
                    usage.used.insert(r.metric.clone(), usage::aggregate(m, r));
                }
            }
            let inv = usage::rate_period(&catalog, &billed, anchor, period, &usage)?;
            Ok(NewInvoice {
                id: format!("in_{}_{}", period.start.format("%Y%m%d%H%M%S"), customer_id),
                customer_id: customer_id.clone(),
                plan: inv.plan.clone(),
                interval: inv.interval.as_str().to_owned(),
                period_start: period.start,
                period_end: period.end,
                currency: inv.currency.code().to_owned(),
                subtotal: inv.subtotal,
                discount: inv.discount,
                total: inv.total,
                body: serde_json::to_value(&inv).map_err(|e| e.to_string())?,
                created_at,
            })
        });
        if let Some(inv) = state
            .store
            .close_period(&customer.id, period.start, period.end, build)
            .await?
        {
            tracing::info!(customer = %customer.id, invoice = %inv.id, total = inv.total, "period closed");
            on_written(inv);
        }
        period = allowance.period(period.end);
    }
    Ok(())
}
