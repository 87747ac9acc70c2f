//! The subscription history on both backends: one row per change, written with the change (local
//! assignments and the Stripe mirror alike), none for a write that changes nothing; and the
//! facts the business metrics read (every customer's transactions and invoices by time).

use chrono::Duration;
use serde_json::json;
use tally_store::{NewTransaction, StripeSubscriptionUpsert, SubscriptionUpsert};

#[macro_use]
mod common;

use common::{customer, t0, Ctx};

suite!(
    each_change_is_one_history_row,
    transactions_are_read_before_an_instant,
);

/// (minutes after t0, plan, interval, status, source, coupon, cancel at period end)
type Row<'a> = (
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    bool,
);

fn local(plan: &str, interval: &str, minutes: i64) -> SubscriptionUpsert {
    SubscriptionUpsert {
        customer_id: "cus_1".into(),
        plan: plan.into(),
        interval: interval.into(),
        status: "active".into(),
        source: "local".into(),
        now: t0() + Duration::minutes(minutes),
    }
}

async fn each_change_is_one_history_row(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    customer(s, "cus_2").await;
    s.put_subscription(local("starter", "month", 1))
        .await
        .unwrap();
    // The same facts again: no row.
    s.put_subscription(local("starter", "month", 2))
        .await
        .unwrap();
    s.put_subscription(local("pro", "month", 3)).await.unwrap();
    s.put_subscription(local("pro", "year", 4)).await.unwrap();
    // The mirror: dated by the Stripe event, with Stripe's coupon, trial end and cancellation.
    let event_at = t0() + Duration::minutes(5);
    let stripe = |status: &str, cancel: bool| StripeSubscriptionUpsert {
        customer_id: "cus_1".into(),
        plan: "pro".into(),
        interval: "year".into(),
        status: status.into(),
        stripe: json!({"subscription": "sub_x", "coupon": "HALF", "cancel_at_period_end": cancel,
                       "trial_end": "2026-01-20T00:00:00Z"}),
        past_due_at: None,
        changed_at: event_at,
        now: t0() + Duration::minutes(9),
        allowance_anchor: None,
    };
    s.put_stripe_subscription(stripe("trialing", false))
        .await
        .unwrap();
    s.put_stripe_subscription(stripe("trialing", false))
        .await
        .unwrap();
    s.put_stripe_subscription(stripe("trialing", true))
        .await
        .unwrap();
    s.put_subscription(SubscriptionUpsert {
        customer_id: "cus_2".into(),
        ..local("starter", "month", 6)
    })
    .await
    .unwrap();

    let h = s.subscription_history(Some("cus_1")).await.unwrap();
    let got: Vec<Row> = h
        .iter()
        .map(|r| {
            (
                (r.at - t0()).num_minutes(),
                r.plan.as_str(),
                r.interval.as_str(),
                r.status.as_str(),
                r.source.as_str(),
                r.coupon.as_deref(),
                r.cancel_at_period_end,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "starter", "month", "active", "local", None, false),
            (3, "pro", "month", "active", "local", None, false),
            (4, "pro", "year", "active", "local", None, false),
            (5, "pro", "year", "trialing", "stripe", Some("HALF"), false),
            (5, "pro", "year", "trialing", "stripe", Some("HALF"), true),
        ]
    );
    assert_eq!(
        h[3].trial_end.map(|t| t.to_rfc3339()),
        Some("2026-01-20T00:00:00+00:00".to_owned())
    );
    let all = s.subscription_history(None).await.unwrap();
    assert_eq!(all.len(), 6);
    // Every customer's, in the order the changes took effect.
    assert_eq!(all[4].customer_id, "cus_1");
    assert_eq!(all.last().map(|r| r.customer_id.as_str()), Some("cus_2"));
}

async fn transactions_are_read_before_an_instant(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    customer(s, "cus_2").await;
    for (i, (cust, minutes)) in [("cus_2", 2), ("cus_1", 1), ("cus_1", 3)]
        .iter()
        .enumerate()
    {
        s.record_transaction(NewTransaction {
            id: format!("txn_{i}"),
            key: format!("k{i}"),
            customer_id: (*cust).into(),
            kind: "subscription_payment".into(),
            status: "succeeded".into(),
            amount: 100,
            currency: "usd".into(),
            description: None,
            stripe_invoice: Some(format!("in_{i}")),
            stripe_payment_intent: None,
            stripe_charge: None,
            stripe_checkout_session: None,
            stripe_subscription: None,
            occurred_at: t0() + Duration::minutes(*minutes),
            created_at: t0(),
        })
        .await
        .unwrap();
    }
    let before = s
        .transactions_before(t0() + Duration::minutes(3))
        .await
        .unwrap();
    let ids: Vec<&str> = before.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["txn_1", "txn_0"]);
    assert!(s
        .invoices_between(t0(), t0() + Duration::days(1))
        .await
        .unwrap()
        .is_empty());
}
