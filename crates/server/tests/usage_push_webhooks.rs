//! The push state under webhook faults, against the Stripe simulator with a test clock, the real
//! server, on SQLite and PostgreSQL. Three Magic Box Pro periods are pushed: the first renewal's
//! charge fails and it is then voided in Stripe, the second is paid, the third period is closed late onto a standalone
//! invoice whose card declines. A clean run delivers each `invoice.*` event once, as it happens;
//! the faulty run delivers every one of them three times, newest first, at the end. Both end with
//! the same `stripe` state on every Tally invoice (voided, paid, failed), the same payments, and
//! each usage line once on Stripe.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::usage_world::*;
use common::Db;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::service::usage_push;

/// The invoice events the pushes react to.
const TYPES: [&str; 5] = [
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
];

/// The simulator's events of [`TYPES`] not in `seen`, oldest first.
async fn new_events(w: &World, seen: &mut BTreeSet<String>) -> Vec<Value> {
    let list = w.sim_get("/v1/events?type=invoice.*&limit=100").await;
    let mut out: Vec<Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| TYPES.contains(&e["type"].as_str().unwrap_or_default()))
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .cloned()
        .collect();
    out.reverse();
    out
}

async fn usage(w: &World, n: u32, at_: &str) {
    w.clock.set(at(at_));
    let body = json!({"events": [
        {"id": format!("c{n}"), "customer": CUSTOMER, "metric": "compute_hours", "value": "350", "timestamp": at_},
        {"id": format!("a{n}"), "customer": CUSTOMER, "metric": "api_spend", "value": "180.00", "timestamp": at_},
    ]});
    let (s, b) = w.app.post("/v1/events", body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"], 2, "{b}");
}

/// Makes a new card of this test id the subscription's; returns the card it had.
async fn set_card(w: &World, card: &str) -> String {
    let sub = w
        .sim_get(&format!("/v1/subscriptions/{}", w.subscription))
        .await;
    let pm = w
        .sim_post(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", &w.stripe_customer)],
        )
        .await;
    w.sim_post(
        &format!("/v1/subscriptions/{}", w.subscription),
        &[("default_payment_method", pm["id"].as_str().unwrap())],
    )
    .await;
    sub["default_payment_method"].as_str().unwrap().to_owned()
}

async fn step(w: &World, clean: bool, seen: &mut BTreeSet<String>) {
    if clean {
        let evs = new_events(w, seen).await;
        w.deliver_events(&evs).await;
    }
}

/// Plays the three periods; in a clean run the new events are delivered once after each step.
/// Returns the Tally invoices in period order.
async fn scenario(w: &World, clean: bool) -> Vec<String> {
    let mut seen = BTreeSet::new();
    // 1: on the renewal, which Stripe then voids.
    usage(w, 1, "2026-01-20T10:00:00Z").await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv1 = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let r1 = w
        .state()
        .store
        .get_push(&inv1.id)
        .await
        .unwrap()
        .unwrap()
        .renewal_invoice
        .unwrap();
    step(w, clean, &mut seen).await;
    // Its charge fails (failed), then it is voided in Stripe (voided): delivered newest first,
    // the failure must not undo the void.
    let good = set_card(w, "pm_card_chargeCustomerFail").await;
    w.advance_stripe(at("2026-02-15T01:30:00Z")).await;
    assert_eq!(w.invoice(&r1).await["status"], "open");
    step(w, clean, &mut seen).await;
    w.sim_post(&format!("/v1/invoices/{r1}/void"), &[]).await;
    step(w, clean, &mut seen).await;
    w.sim_post(
        &format!("/v1/subscriptions/{}", w.subscription),
        &[("default_payment_method", &good)],
    )
    .await;
    // 2: on the renewal, paid an hour later.
    usage(w, 2, "2026-02-20T10:00:00Z").await;
    w.advance_stripe(at("2026-03-15T00:05:00Z")).await;
    let inv2 = w.close(at("2026-03-15T00:15:00Z")).await.remove(0);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    step(w, clean, &mut seen).await;
    w.advance_stripe(at("2026-03-15T01:30:00Z")).await;
    step(w, clean, &mut seen).await;
    // 3: the card now declines; closed late, on a standalone invoice that is not paid.
    set_card(w, "pm_card_chargeCustomerFail").await;
    usage(w, 3, "2026-03-20T10:00:00Z").await;
    w.advance_stripe(at("2026-04-15T02:00:00Z")).await;
    let inv3 = w.close(at("2026-04-15T02:10:00Z")).await.remove(0);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    step(w, clean, &mut seen).await;
    vec![inv1.id, inv2.id, inv3.id]
}

/// A mirrored Stripe invoice as a run ends with it: status, billing reason, total, paid,
/// remaining, attempts, whether it has a number and a hosted page.
type Mirrored = (String, Option<String>, i64, i64, i64, i64, bool, bool);

/// The customer's Stripe invoice mirror, each row checked against the simulator's invoice as it
/// is now (the latest state, whatever order the events came in).
async fn mirror(w: &World) -> Vec<Mirrored> {
    let rows = w
        .state()
        .store
        .stripe_invoices_of_customer(CUSTOMER)
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in rows {
        let now = w.sim_get(&format!("/v1/invoices/{}", r.id)).await;
        assert_eq!(r.status, now["status"].as_str().unwrap(), "{now}");
        assert_eq!(r.total, now["total"].as_i64().unwrap(), "{now}");
        assert_eq!(r.amount_paid, now["amount_paid"].as_i64().unwrap(), "{now}");
        assert_eq!(
            r.amount_remaining,
            now["amount_remaining"].as_i64().unwrap(),
            "{now}"
        );
        assert_eq!(r.attempt_count, now["attempt_count"].as_i64().unwrap());
        assert_eq!(
            r.finalized_at.map(|t| t.timestamp()),
            now["status_transitions"]["finalized_at"].as_i64()
        );
        out.push((
            r.status,
            r.billing_reason,
            r.total,
            r.amount_paid,
            r.amount_remaining,
            r.attempt_count,
            r.number.is_some(),
            r.hosted_invoice_url.is_some(),
        ));
    }
    out.sort();
    out
}

/// What a run ends with: each invoice's Stripe state and invoice, its lines on Stripe, and the
/// customer's payments.
async fn outcome(w: &World, invoices: &[String]) -> (Vec<(String, usize)>, Vec<(String, i64)>) {
    let mut states = Vec::new();
    for id in invoices {
        let shown = w.tally_invoice(id).await;
        let lines = w.stripe_lines_of(id);
        let ids: BTreeSet<String> = lines.iter().map(|l| l.1.clone()).collect();
        // Each line once on Stripe, wherever it is.
        assert_eq!(ids.len(), lines.len(), "{lines:?}");
        states.push((
            shown["stripe"]["state"].as_str().unwrap().to_owned(),
            lines.len(),
        ));
    }
    let (s, b) = w
        .app
        .get(&format!("/v1/customers/{CUSTOMER}/transactions"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut payments: Vec<(String, i64)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap_or_default().to_owned(),
                t["amount"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    payments.sort();
    (states, payments)
}

async fn duplicated_and_reordered_webhooks_end_as_a_clean_run(db: Db) {
    let Some(clean) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    let invoices = scenario(&clean, true).await;
    let expected = outcome(&clean, &invoices).await;
    assert_eq!(
        expected.0,
        vec![
            ("voided".to_owned(), 2),
            ("paid".to_owned(), 2),
            ("failed".to_owned(), 2)
        ]
    );
    let mirrored = mirror(&clean).await;
    // Every Stripe invoice of the customer: the first payment, the voided renewal, the paid
    // one, the third renewal and the standalone usage invoice (both declined).
    let row = |st: &str, reason: &str, total, paid, rest, attempts| {
        (
            st.to_owned(),
            Some(reason.to_owned()),
            total,
            paid,
            rest,
            attempts,
            true,
            true,
        )
    };
    assert_eq!(
        mirrored,
        vec![
            row("open", "manual", 3650, 0, 3650, 2),
            row("open", "subscription_cycle", 19900, 0, 19900, 1),
            row("paid", "subscription_create", 19900, 19900, 0, 1),
            row("paid", "subscription_cycle", 23550, 23550, 0, 1),
            row("void", "subscription_cycle", 23550, 0, 0, 1),
        ]
    );
    drop(clean);

    let Some(faulty) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    let invoices = scenario(&faulty, false).await;
    let mut all = new_events(&faulty, &mut BTreeSet::new()).await;
    let types: BTreeSet<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, TYPES.into_iter().collect::<BTreeSet<_>>());
    all.reverse();
    let tripled: Vec<Value> = all
        .iter()
        .flat_map(|e| [e.clone(), e.clone(), e.clone()])
        .collect();
    faulty.deliver_events(&tripled).await;
    assert_eq!(outcome(&faulty, &invoices).await, expected);
    // The invoice mirror ends as the clean run's, every row in Stripe's latest state.
    assert_eq!(mirror(&faulty).await, mirrored);
    // A second round of the pusher changes nothing either.
    assert_eq!(usage_push::round(faulty.state()).await.unwrap(), 0);
    assert_eq!(outcome(&faulty, &invoices).await, expected);
}

on_both_backends!(duplicated_and_reordered_webhooks_end_as_a_clean_run);
