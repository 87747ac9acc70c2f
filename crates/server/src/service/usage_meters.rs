//! Meter mode of the usage push (`[catalog] stripe_usage = "meters"`): a closed period's usage
//! lines whose metric has a metered price on the customer's plan are reported to Stripe as
//! Billing Meter events, and Stripe rates them on the renewal invoice of the period.
//!
//! - **Value.** The period's quantity of the metric — the included quantity plus the billable
//!   quantity of the Tally line; the metered price's first tier holds the included quantity for
//!   free — in thousandths of the unit (`tally_core::catalog::meters::METER_SCALE`), as Stripe
//!   takes integer values.
//! - **Once.** The push row is committed first; each event's `identifier` is
//!   `tally:<customer>:<metric>:<period start, unix seconds>` and its idempotency key comes from
//!   it, so a resend (a rerun, a retry after a timeout, a second process) is counted once by
//!   Stripe.
//! - **When.** Stripe bills a period's events on its renewal while that is still a draft (about
//!   an hour after the period's end), so the pusher sends them only once it has found the
//!   renewal as a draft; otherwise the lines go on a standalone invoice as invoice items, rated
//!   by Tally, as in the default mode.

use rust_decimal::Decimal;
use serde_json::Value;
use tally_core::catalog::meters::meter_value;
use tally_core::catalog::{Allowance, Catalog};
use tally_store::{InvoicePush, StoredInvoice};
use tally_stripe::{Client, IdempotencyKey, MeterEventOutcome, NewMeterEvent};

use super::usage_push::PushLine;

/// A usage line billed through a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterLine {
    /// The Tally line it replaces (`L<index>`).
    pub line_id: String,
    pub metric: String,
    pub event_name: String,
    /// The lookup key of the metered price that rates it.
    pub lookup_key: String,
    /// Meter units (thousandths of the metric's unit).
    pub value: i64,
}

/// The lines of `inv` that Stripe rates through meters (none outside meter mode, on yearly
/// plans, or for charges without a metered price).
pub fn meter_lines(catalog: &Catalog, inv: &StoredInvoice, lines: &[PushLine]) -> Vec<MeterLine> {
    let Some(interval) = tally_core::period::Interval::parse(&inv.interval) else {
        return Vec::new();
    };
    let keys = tally_stripe::push_meters::metered_lookup_keys(catalog, &inv.plan, interval);
    if keys.is_empty() {
        return Vec::new();
    }
    let Some(plan) = catalog.plan(&inv.plan) else {
        return Vec::new();
    };
    let body_lines = inv.body.get("lines").and_then(Value::as_array);
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l.kind == "usage") {
        let Some(raw) = l
            .line_id
            .strip_prefix('L')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| body_lines.and_then(|b| b.get(i)))
        else {
            continue;
        };
        let Some(metric) = raw.get("metric").and_then(Value::as_str) else {
            continue;
        };
        let Some(pm) = plan.metrics.get(metric) else {
            continue;
        };
        let Allowance::Quantity(included) = pm.included else {
            continue;
        };
        let billable = raw
            .get("quantity")
            .and_then(|q| match q {
                Value::String(s) => s.parse::<Decimal>().ok(),
                Value::Number(n) => n.to_string().parse::<Decimal>().ok(),
                _ => None,
            })
            .unwrap_or(Decimal::ZERO);
        let lookup_key = plan
            .prices
            .get(&interval)
            .map(|p| tally_stripe::push_meters::metered_lookup_key(&p.lookup_key, metric))
            .filter(|k| keys.contains(k));
        let value = included.checked_add(billable).and_then(meter_value);
        if let (Some(lookup_key), Some(value)) = (lookup_key, value) {
            out.push(MeterLine {
                line_id: l.line_id.clone(),
                metric: metric.to_owned(),
                event_name: tally_stripe::push_meters::meter_event_name(catalog, metric),
                lookup_key,
                value,
            });
        }
    }
    out
}

/// The identifier Stripe deduplicates a period's event of a metric by.
pub fn identifier(row: &InvoicePush, metric: &str) -> String {
    format!(
        "tally:{}:{metric}:{}",
        row.customer_id,
        row.period_start.timestamp()
    )
}

/// Sends the meter events of a push (each once, however often this runs). Returns how many
/// Stripe recorded now, and the last request id.
pub async fn send(
    client: &Client,
    row: &InvoicePush,
    lines: &[MeterLine],
) -> Result<(u64, Option<String>), tally_stripe::Error> {
    let mut recorded = 0;
    let mut request_id = None;
    // The last second of the period: inside it, and as recent as the period allows.
    let timestamp = row.period_end.timestamp().saturating_sub(1);
    for l in lines {
        let id = identifier(row, &l.metric);
        let e = NewMeterEvent {
            event_name: l.event_name.clone(),
            stripe_customer: row.stripe_customer.clone(),
            value: l.value,
            timestamp,
            identifier: id.clone(),
        };
        let r = client
            .create_meter_event(&e, &IdempotencyKey::from_row("meter_event", &id, 0))
            .await?;
        if r.value == MeterEventOutcome::Recorded && !r.meta.replayed {
            recorded += 1;
        }
        request_id = r.meta.request_id;
    }
    Ok((recorded, request_id))
}
