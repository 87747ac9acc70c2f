//! Dunning end to end, on SQLite and PostgreSQL: the real server with `--stripe-test-clocks` and
//! a frozen clock, the Stripe simulator's retry schedule (3, 5 and 7 days) moved by
//! `POST /v1/clock/advance`, and the hosted checkout and portal pages posted as a browser would.
//!
//! A card that attaches but fails every charge (4000 0000 0000 0341) → the renewal fails → past
//! due since that instant, one `invoice.payment_failed` → Stripe's retry fails too, the grace
//! still counts from the first failure → past the grace the free plan's entitlements (also after
//! a restart) → the card
//! replaced in the portal → Stripe retries at once and it is paid → the plan is back. A hard
//! decline (lost card) notifies at once and is not retried. Retries exhausted → canceled or
//! unpaid (Stripe's two end settings) → the free plan, a notification, and a new checkout works.

#[macro_use]
mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::stripe_world::{stripe_world, StripeWorld};
use common::Db;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CATALOG: &str = include_str!("../../../catalogs/devflowhub.toml");

/// 2026-01-15 10:00 UTC: the renewal is on 2026-02-15 10:00, charged an hour later.
fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
}

fn ts(s: &str) -> Value {
    json!(s)
}

async fn world(db: Db, after: stripe_sim::AfterRetries, grace_days: u64) -> Option<StripeWorld> {
    stripe_world(
        db,
        stripe_sim::Config {
            after_retries: after,
            ..Default::default()
        },
        CATALOG,
        t0(),
        |c| c.past_due_grace = Duration::from_secs(grace_days * 86_400),
    )
    .await
}

/// The customer's saved card is replaced (through Stripe's API, as the app's own card form
/// would) by `pm_card_chargeCustomerFail`: it attaches, then every charge fails.
async fn card_starts_failing(w: &StripeWorld, sub: &Value) {
    let sub_id = sub["stripe"]["subscription"].as_str().unwrap();
    let cus = sub["stripe"]["customer"].as_str().unwrap();
    let pm = w
        .sim_post(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", cus)],
        )
        .await;
    w.sim_post(
        &format!("/v1/subscriptions/{sub_id}"),
        &[("default_payment_method", pm["id"].as_str().unwrap())],
    )
    .await;
}

fn kinds(n: &[(String, Value)], kind: &str) -> Vec<Value> {
    n.iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, p)| p.clone())
        .collect()
}

/// (kind, status, amount) of the customer's transactions, newest first.
async fn payments(w: &StripeWorld, c: &str) -> Vec<(String, String, i64)> {
    let (s, b) = w.app.get(&format!("/v1/customers/{c}/transactions")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
                t["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn failing_card_grace_portal_restores(db: Db) {
    let Some(w) = world(db, stripe_sim::AfterRetries::Cancel, 4).await else {
        return;
    };
    let c = "dun1";
    let sub = w.subscribe(c, "starter", "4242424242424242").await;
    card_starts_failing(&w, &sub).await;

    // Past the renewal (Feb 15 10:00) and its charge an hour later, which fails.
    w.advance("32d").await;
    let sub = w.subscription_until(c, |b| b["status"] == "past_due").await;
    assert_eq!(sub["past_due_since"], ts("2026-02-15T11:00:00Z"));
    let n = w.notifications(c).await;
    let failed = kinds(&n, "invoice.payment_failed");
    assert_eq!(failed.len(), 1, "{n:?}");
    assert_eq!(failed[0]["amount"], 3000);
    assert_eq!(failed[0]["currency"], "usd");
    assert_eq!(failed[0]["hard_decline"], false);
    assert_eq!(failed[0]["decline_code"], "generic_decline");
    assert_eq!(failed[0]["past_due_since"], "2026-02-15T11:00:00+00:00");
    // Stripe retries 3 days after the failure; Tally charges nothing itself.
    assert_eq!(
        failed[0]["next_payment_attempt"],
        "2026-02-18T11:00:00+00:00"
    );
    assert_eq!(kinds(&n, "payment.action_required").len(), 0);
    // Within the grace (4 days): the plan's entitlements.
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["allowed"].clone(), e["plan"].clone()),
        (json!(true), json!("starter"))
    );
    assert_eq!(e["restricted"], Value::Null);

    // Feb 19 13:00: Stripe's retry on Feb 18 11:00 failed as well; the grace still counts from
    // the episode's first failure (4 days 2 hours ago), so the free plan applies.
    w.advance("75h").await;
    w.get_until(&format!("/v1/customers/{c}/transactions"), |b| {
        b["data"].as_array().is_some_and(|d| d.len() == 3)
    })
    .await;
    let sub = w.subscription_until(c, |b| b["status"] == "past_due").await;
    assert_eq!(sub["past_due_since"], ts("2026-02-15T11:00:00Z"));
    let failed = kinds(&w.notifications(c).await, "invoice.payment_failed");
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[1]["next_payment_attempt"],
        "2026-02-23T11:00:00+00:00"
    );
    let e = w.check(c, "core_agents").await;
    assert_eq!(e["allowed"], false);
    assert_eq!(e["plan"], "free");
    assert_eq!(e["restricted"], "past_due");
    // A restart changes nothing: the episode's start and the moved clock are stored.
    let w = w.restart().await;
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["plan"].clone(), e["restricted"].clone()),
        (json!("free"), json!("past_due"))
    );
    let (s, b) = w.app.get(&format!("/v1/customers/{c}/billing")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            b["plan"].clone(),
            b["entitled_plan"].clone(),
            b["restricted"].clone()
        ),
        (json!("starter"), json!("free"), json!("past_due"))
    );

    // The customer replaces the card in the portal: Stripe retries the open invoice at once.
    // Only the invoice's events reach Tally now: `invoice.paid` alone must bring the plan back.
    w.sim
        .with(|s| {
            s.w.webhook_endpoints
                .get_mut("we_world")
                .unwrap()
                .enabled_events = vec!["invoice.paid".into(), "invoice.payment_succeeded".into()];
        })
        .unwrap();
    w.portal_replace_card(c, "4242424242424242").await;
    let attempts = w
        .sim
        .with(|s| {
            s.w.invoices
                .values()
                .filter(|i| i.billing_reason == "subscription_cycle")
                .map(|i| (i.status.clone(), i.attempt_count, i.amount_paid))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(attempts, vec![("paid".to_owned(), 3, 3000)]);
    w.subscription_until(c, |b| {
        b["status"] == "active" && b["past_due_since"].is_null()
    })
    .await;
    // The plan came back with the payment's own event (`invoice.paid`, or its twin
    // `invoice.payment_succeeded`), not with the subscription's.
    let renewal = w
        .sim
        .with(|s| {
            s.w.invoices
                .values()
                .find(|i| i.billing_reason == "subscription_cycle")
                .map(|i| i.id.clone())
        })
        .unwrap()
        .unwrap();
    // The outcome is written just after the event is applied: wait for it.
    let start = std::time::Instant::now();
    let paid = loop {
        let inbox = w
            .app
            .server
            .state()
            .store
            .inbox_list(tally_store::InboxFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let paid: Vec<_> = inbox
            .iter()
            .filter(|e| {
                matches!(
                    e.event_type.as_str(),
                    "invoice.paid" | "invoice.payment_succeeded"
                ) && e.object_id.as_deref() == Some(&renewal)
            })
            .map(|e| e.outcome.clone().unwrap_or_default())
            .collect();
        if paid.iter().all(|o| !o.is_empty()) || start.elapsed() > Duration::from_secs(20) {
            break paid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Whichever of the two (one payment) is applied first records it and restores the plan.
    let mut paid = paid;
    paid.sort();
    assert_eq!(
        paid,
        vec![
            "payment already recorded".to_owned(),
            "payment recorded; subscription mirrored: starter month active".to_owned()
        ]
    );
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["allowed"].clone(), e["plan"].clone()),
        (json!(true), json!("starter"))
    );
    assert_eq!(e["restricted"], Value::Null);
    let (_, b) = w.app.get(&format!("/v1/customers/{c}/billing")).await;
    assert_eq!(
        (b["entitled_plan"].clone(), b["restricted"].clone()),
        (json!("starter"), Value::Null)
    );
    let p = payments(&w, c).await;
    let row = |k: &str, s: &str| (k.to_owned(), s.to_owned(), 3000);
    assert_eq!(
        p,
        vec![
            row("subscription_payment", "succeeded"),
            row("payment_failed", "failed"),
            row("payment_failed", "failed"),
            row("subscription_payment", "succeeded"),
        ]
    );
    let n = w.notifications(c).await;
    assert_eq!(kinds(&n, "invoice.payment_failed").len(), 2);
    assert_eq!(kinds(&n, "invoice.paid").len(), 2);
}

async fn hard_decline_notifies_at_once(db: Db) {
    let Some(w) = world(db, stripe_sim::AfterRetries::Cancel, 7).await else {
        return;
    };
    let c = "dun2";
    let sub = w.subscribe(c, "starter", "4242424242424242").await;
    // The saved card is reported lost after it was saved.
    let cus = sub["stripe"]["customer"].as_str().unwrap().to_owned();
    w.sim
        .with(|s| {
            for pm in s.w.payment_methods.values_mut() {
                if pm.customer.as_deref() == Some(cus.as_str()) {
                    pm.behavior = stripe_sim::state::CardBehavior::Declines {
                        code: "card_declined".into(),
                        decline_code: "lost_card".into(),
                        message: "Your card was declined.".into(),
                    };
                }
            }
        })
        .unwrap();
    w.advance("32d").await;
    w.subscription_until(c, |b| b["status"] == "past_due").await;
    let n = w
        .get_until(&format!("/v1/customers/{c}/transactions"), |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 2)
        })
        .await;
    assert_eq!(n["data"][0]["kind"], "payment_failed");
    let n = w.notifications(c).await;
    let failed = kinds(&n, "invoice.payment_failed");
    assert_eq!(failed.len(), 1, "{n:?}");
    assert_eq!(failed[0]["hard_decline"], true);
    assert_eq!(failed[0]["decline_code"], "lost_card");
    assert_eq!(failed[0]["next_payment_attempt"], Value::Null);
    let action = kinds(&n, "payment.action_required");
    assert_eq!(action.len(), 1);
    assert_eq!(action[0]["reason"], "hard_decline");
    assert_eq!(action[0]["decline_code"], "lost_card");
    assert_eq!(action[0]["code"], "card_declined");
    assert_eq!(action[0]["amount"], 3000);
    // Stripe does not retry a hard decline: ten days on, still one attempt.
    w.advance("10d").await;
    let attempts = w
        .sim
        .with(|s| {
            s.w.invoices
                .values()
                .filter(|i| i.billing_reason == "subscription_cycle")
                .map(|i| (i.status.clone(), i.attempt_count, i.next_payment_attempt))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(attempts, vec![("open".to_owned(), 1, None)]);
    // Past the 7-day grace: the free plan; a new card in the portal collects it at once.
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["plan"].clone(), e["restricted"].clone()),
        (json!("free"), json!("past_due"))
    );
    w.portal_replace_card(c, "5555555555554444").await;
    w.subscription_until(c, |b| b["status"] == "active").await;
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["allowed"].clone(), e["plan"].clone()),
        (json!(true), json!("starter"))
    );
    assert_eq!(
        kinds(&w.notifications(c).await, "payment.action_required").len(),
        1
    );
}

/// Four failed attempts (Feb 15, 18, 23 and Mar 2) end the dunning as `after` says.
async fn exhaust(w: &StripeWorld, c: &str) {
    let sub = w.subscribe(c, "starter", "4242424242424242").await;
    card_starts_failing(w, &sub).await;
    w.advance("32d").await;
    w.subscription_until(c, |b| b["status"] == "past_due").await;
    w.advance("16d").await;
}

async fn retries_exhausted_cancel(db: Db) {
    let Some(w) = world(db, stripe_sim::AfterRetries::Cancel, 30).await else {
        return;
    };
    let c = "dun3";
    exhaust(&w, c).await;
    let sub = w.subscription_until(c, |b| b["status"] == "canceled").await;
    let old = sub["stripe"]["subscription"].as_str().unwrap().to_owned();
    let n = w.notifications(c).await;
    assert_eq!(kinds(&n, "invoice.payment_failed").len(), 4, "{n:?}");
    assert_eq!(kinds(&n, "subscription.canceled").len(), 1);
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["allowed"].clone(), e["plan"].clone()),
        (json!(false), json!("free"))
    );
    assert_eq!(e["restricted"], Value::Null);
    // The customer subscribes again.
    w.checkout(c, "starter", "4242424242424242").await;
    let sub = w
        .subscription_until(c, |b| b["status"] == "active" && b["plan"] == "starter")
        .await;
    assert_ne!(sub["stripe"]["subscription"], json!(old));
    assert_eq!(w.check(c, "core_agents").await["allowed"], true);
}

async fn retries_exhausted_unpaid(db: Db) {
    let Some(w) = world(db, stripe_sim::AfterRetries::Unpaid, 30).await else {
        return;
    };
    let c = "dun4";
    exhaust(&w, c).await;
    let sub = w.subscription_until(c, |b| b["status"] == "unpaid").await;
    let old = sub["stripe"]["subscription"].as_str().unwrap().to_owned();
    let n = w.notifications(c).await;
    assert_eq!(kinds(&n, "invoice.payment_failed").len(), 4, "{n:?}");
    let unpaid: Vec<Value> = kinds(&n, "subscription.updated")
        .into_iter()
        .filter(|p| p["status"] == "unpaid")
        .collect();
    assert_eq!(unpaid.len(), 1);
    // Unpaid: the free plan at once, although the 30-day grace has not passed.
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (
            e["allowed"].clone(),
            e["plan"].clone(),
            e["restricted"].clone()
        ),
        (json!(false), json!("free"), json!("unpaid"))
    );
    // No 409: the customer subscribes again, and the unpaid subscription ends in Stripe.
    w.checkout(c, "starter", "4242424242424242").await;
    let sub = w
        .subscription_until(c, |b| b["status"] == "active" && b["plan"] == "starter")
        .await;
    assert_ne!(sub["stripe"]["subscription"], json!(old));
    // Ended when Tally applies the checkout's completion (the new subscription's own events may
    // be mirrored first).
    let start = std::time::Instant::now();
    loop {
        let status = w
            .sim
            .with(|s| s.w.subscriptions.get(&old).map(|x| x.status.clone()))
            .unwrap();
        if status.as_deref() == Some("canceled") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{status:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The old subscription's cancellation, processed after, leaves the new one in place.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, sub) = w.app.get(&format!("/v1/customers/{c}/subscription")).await;
    assert_eq!(sub["status"], "active");
    assert_ne!(sub["stripe"]["subscription"], json!(old));
    let e = w.check(c, "core_agents").await;
    assert_eq!(
        (e["allowed"].clone(), e["restricted"].clone()),
        (json!(true), Value::Null)
    );
}

on_both_backends!(
    failing_card_grace_portal_restores,
    hard_decline_notifies_at_once,
    retries_exhausted_cancel,
    retries_exhausted_unpaid,
);
