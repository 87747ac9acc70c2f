//! `tally sync`: the usage of one month's periods sent to Stripe on demand (the monthly cron job
//! of a deployment that wants it), through the same code as the pusher, so running it next to a
//! server, or twice, bills nothing twice. A dry run writes nothing and calls Stripe for nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

use super::closer;
use super::usage_push::{self, PushLine};
use crate::error::ApiError;
use crate::state::AppState;

/// One closed invoice in a sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncInvoice {
    pub customer: String,
    pub invoice: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    /// The lines billed through Stripe (the base price is Stripe's own).
    pub lines: Vec<PushLine>,
    /// Their sum, in minor units.
    pub amount: i64,
    /// `pending`, `sent`, `paid`, `failed`, `voided`, `skipped`; `not_pushed` (a dry run before
    /// the pusher saw it) or `no_stripe_subscription`.
    pub state: String,
    pub stripe_invoice: Option<String>,
    pub error: Option<String>,
    pub request_id: Option<String>,
}

/// A currency's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncTotal {
    pub currency: String,
    pub invoices: usize,
    /// Minor units billed through Stripe.
    pub amount: i64,
}

/// The report of a sync (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// `YYYY-MM`: the invoices of the periods that start in this month.
    pub period: String,
    pub dry_run: bool,
    pub invoices: Vec<SyncInvoice>,
    pub totals: Vec<SyncTotal>,
    /// Invoices whose push failed or is still pending after this run.
    pub failed: usize,
}

/// The first instant of the month `YYYY-MM` and of the next one.
pub fn month(ym: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (y, m) = ym.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let start = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
    let (ny, nm) = if start.month() == 12 {
        (y.checked_add(1)?, 1)
    } else {
        (y, m + 1)
    };
    let end = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single()?;
    Some((start, end))
}

/// Syncs the closed invoices of the periods starting in `ym` (of one customer, or all). With
/// `commit`, closes what is due first (once, as the closer does), then pushes each invoice of a
/// customer with a Stripe subscription; otherwise reports what a push would bill.
pub async fn sync(
    state: &AppState,
    ym: &str,
    customer: Option<&str>,
    commit: bool,
) -> Result<SyncReport, ApiError> {
    let (from, to) = month(ym).ok_or_else(|| {
        ApiError::bad_request("invalid_period", format!("--period {ym:?} must be YYYY-MM"))
    })?;
    let client = state.stripe.clone();
    if commit {
        if client.is_none() {
            return Err(ApiError::bad_request(
                "stripe_not_configured",
                "--commit needs STRIPE_API_KEY",
            ));
        }
        closer::close_due(state, state.clock.now()).await?;
    }
    let invoices = state.store.invoices_starting_between(from, to).await?;
    let mut out = Vec::new();
    for inv in invoices
        .iter()
        .filter(|i| customer.is_none_or(|c| c == i.customer_id))
    {
        let lines = usage_push::push_lines(inv);
        let amount = lines.iter().fold(0i64, |a, l| a.saturating_add(l.amount));
        let mut row = state.store.get_push(&inv.id).await?;
        if commit {
            row = usage_push::row_for(state, inv).await?;
            if let (Some(r), Some(c)) = (&row, &client) {
                if r.state == tally_store::usage_push::state::PENDING {
                    row = usage_push::push_invoice(state, c, &inv.id).await?;
                }
            }
        }
        let eligible = match &row {
            Some(_) => true,
            None => state
                .store
                .get_subscription(&inv.customer_id)
                .await?
                .is_some_and(|s| s.source == "stripe"),
        };
        let (st, stripe_invoice, error, request_id) = match &row {
            Some(r) => (
                r.state.clone(),
                r.stripe_invoice().map(str::to_owned),
                r.last_error.clone(),
                r.request_id.clone(),
            ),
            None if eligible => ("not_pushed".to_owned(), None, None, None),
            None => ("no_stripe_subscription".to_owned(), None, None, None),
        };
        out.push(SyncInvoice {
            customer: inv.customer_id.clone(),
            invoice: inv.id.clone(),
            period_start: inv.period_start,
            period_end: inv.period_end,
            currency: inv.currency.clone(),
            lines,
            amount,
            state: st,
            stripe_invoice,
            error,
            request_id,
        });
    }
    let mut totals: BTreeMap<String, SyncTotal> = BTreeMap::new();
    for i in out.iter().filter(|i| i.state != "no_stripe_subscription") {
        let t = totals
            .entry(i.currency.clone())
            .or_insert_with(|| SyncTotal {
                currency: i.currency.clone(),
                ..Default::default()
            });
        t.invoices += 1;
        t.amount = t.amount.saturating_add(i.amount);
    }
    let failed = if commit {
        out.iter()
            .filter(|i| i.state == "pending" || i.state == "failed")
            .count()
    } else {
        0
    };
    Ok(SyncReport {
        period: ym.to_owned(),
        dry_run: !commit,
        invoices: out,
        totals: totals.into_values().collect(),
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::month;

    #[test]
    fn months_parse_strictly() {
        let (a, b) = month("2026-12").unwrap();
        assert_eq!(a.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            assert!(month(bad).is_none(), "{bad}");
        }
    }
}
