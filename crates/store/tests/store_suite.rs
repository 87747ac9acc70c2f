//! One suite, run against both backends: every test below exists once per backend.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_core::period::AllowanceAnchor;
use tally_store::{
    AuditContext, AuditFilter, CustomerUpsert, NewApiKey, NewEvent, NewInvoice, StoreError,
    SubscriptionUpsert,
};

#[macro_use]
mod common;

use common::{customer, t0, Ctx};

suite!(
    customers_are_created_then_updated,
    customers_are_listed_in_pages_by_id,
    subscriptions_need_a_customer_and_are_replaced,
    ingest_counts_duplicates_within_and_across_batches,
    concurrent_identical_batches_count_once,
    overlapping_concurrent_batches_count_each_event_once,
    a_total_out_of_range_stores_nothing_of_its_batch,
    rollups_keep_every_aggregation,
    dedup_survives_reopening,
    a_period_is_invoiced_once_and_late_events_move_to_the_next,
    api_keys_are_found_by_hash_until_revoked,
    every_audited_change_writes_one_row_and_repeats_none,
    migrations_are_idempotent,
    leases_have_one_holder_until_they_expire,
);

fn ev(customer: &str, id: &str, metric: &str, value: Decimal, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        customer_id: customer.into(),
        event_id: id.into(),
        metric: metric.into(),
        value,
        timestamp: at,
        properties: None,
        period_start: t0(),
        unique_key: None,
    }
}

async fn customers_are_created_then_updated(ctx: Ctx) {
    let s = &*ctx.store;
    let (c, created) = s
        .upsert_customer(CustomerUpsert {
            email_opt_out: None,
            id: "cus_1".into(),
            email: Some("a@example.com".into()),
            name: Some("Ada".into()),
            metadata: Some(serde_json::json!({"tier": "gold"})),
            now: t0(),
        })
        .await
        .unwrap();
    assert!(created);
    assert_eq!(c.billing_anchor, t0());
    let later = t0() + Duration::days(3);
    let (c2, created) = s
        .upsert_customer(CustomerUpsert {
            email_opt_out: None,
            id: "cus_1".into(),
            email: Some("b@example.com".into()),
            name: None,
            metadata: None,
            now: later,
        })
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(c2.email.as_deref(), Some("b@example.com"));
    assert_eq!(c2.name.as_deref(), Some("Ada"));
    assert_eq!(c2.metadata, serde_json::json!({"tier": "gold"}));
    assert_eq!(c2.billing_anchor, t0(), "an update keeps the anchor");
    assert_eq!(c2.updated_at, later);
    assert_eq!(s.get_customer("cus_1").await.unwrap(), Some(c2));
    assert_eq!(s.get_customer("nobody").await.unwrap(), None);
    let anchors = s
        .customer_anchors(&["cus_1".into(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(
        anchors,
        vec![("cus_1".to_string(), t0(), AllowanceAnchor::fixed(t0()))]
    );
    // A Stripe subscription's anchor takes over: once, and the version moves once.
    let v0 = s.anchor_version().await.unwrap();
    let stripe_anchor = t0() + chrono::Duration::days(14);
    assert!(s
        .set_allowance_anchor("cus_1", stripe_anchor)
        .await
        .unwrap());
    assert!(!s
        .set_allowance_anchor("cus_1", stripe_anchor)
        .await
        .unwrap());
    assert!(!s
        .set_allowance_anchor("nobody", stripe_anchor)
        .await
        .unwrap());
    assert_eq!(s.anchor_version().await.unwrap(), v0 + 1);
    let moved = AllowanceAnchor {
        anchor: stripe_anchor,
        previous: Some(t0()),
    };
    let c3 = s.get_customer("cus_1").await.unwrap().unwrap();
    assert_eq!(c3.allowance(), moved);
    assert_eq!(c3.created_at, t0());
    assert_eq!(
        s.customer_anchors(&["cus_1".into()]).await.unwrap(),
        vec![("cus_1".to_string(), t0(), moved)]
    );
}

async fn customers_are_listed_in_pages_by_id(ctx: Ctx) {
    let s = &*ctx.store;
    assert!(s.list_customers_after(None, 10).await.unwrap().is_empty());
    // Created out of order; lowercase letters and digits sort the same under every collation.
    for id in ["c05", "c01", "c07", "c03", "c02", "c06", "c04"] {
        customer(s, id).await;
    }
    let mut walked = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let page = s.list_customers_after(after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        pages += 1;
        walked.extend(page.into_iter().map(|c| c.id));
    }
    assert_eq!(walked, ["c01", "c02", "c03", "c04", "c05", "c06", "c07"]);
    assert_eq!(pages, 3, "3 + 3 + 1");

    // A page holds whole customers, and the cursor need not be an existing id.
    let page = s.list_customers_after(Some("c035"), 2).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c04", "c05"]);
    assert_eq!(Some(page[0].clone()), s.get_customer("c04").await.unwrap());
    assert!(s
        .list_customers_after(Some("c07"), 5)
        .await
        .unwrap()
        .is_empty());
    assert!(s.list_customers_after(None, 0).await.unwrap().is_empty());
}

fn sub(customer: &str, plan: &str) -> SubscriptionUpsert {
    SubscriptionUpsert {
        customer_id: customer.into(),
        plan: plan.into(),
        interval: "month".into(),
        status: "active".into(),
        source: "local".into(),
        now: t0(),
    }
}

async fn subscriptions_need_a_customer_and_are_replaced(ctx: Ctx) {
    let s = &*ctx.store;
    let err = s.put_subscription(sub("ghost", "pro")).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    customer(s, "cus_1").await;
    s.put_subscription(sub("cus_1", "starter")).await.unwrap();
    let got = s.put_subscription(sub("cus_1", "pro")).await.unwrap();
    assert_eq!(got.plan, "pro");
    assert_eq!(got.id, "sub_cus_1");
    let all = s.list_subscriptions().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(s.get_subscription("cus_1").await.unwrap(), Some(got));
}

async fn ingest_counts_duplicates_within_and_across_batches(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    let batch = vec![
        ev("cus_1", "e1", "api_calls", dec!(1.5), t0()),
        ev("cus_1", "e2", "api_calls", dec!(2.25), t0()),
        ev("cus_1", "e1", "api_calls", dec!(100), t0()),
    ];
    let out = s.ingest(batch.clone()).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (2, 1));
    let out = s.ingest(batch).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 3));
    assert_eq!(s.event_count().await.unwrap(), 2);
    assert_eq!(s.event_ids("cus_1").await.unwrap(), vec!["e1", "e2"]);
    let usage = s.usage("cus_1", t0()).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].sum, dec!(3.75));
    assert_eq!(usage[0].count, 2);
    // The same event id for another customer is a different event.
    customer(s, "cus_2").await;
    let out = s
        .ingest(vec![ev("cus_2", "e1", "api_calls", dec!(1), t0())])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    // A batch naming an unknown customer stores nothing.
    let err = s
        .ingest(vec![
            ev("cus_1", "e9", "api_calls", dec!(1), t0()),
            ev("ghost", "e1", "api_calls", dec!(1), t0()),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(s.event_count().await.unwrap(), 3);
    let out = s
        .ingest(vec![ev("cus_1", "e9", "api_calls", dec!(1), t0())])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1, "a failed batch leaves no dedup trace");
}

async fn concurrent_identical_batches_count_once(ctx: Ctx) {
    let s = ctx.store.clone();
    customer(&*s, "cus_1").await;
    let batch: Vec<NewEvent> = (0..200)
        .map(|i| ev("cus_1", &format!("e{i}"), "api_calls", dec!(1), t0()))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let b = batch.clone();
        tasks.push(tokio::spawn(async move { s.ingest(b).await.unwrap() }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for t in tasks {
        let o = t.await.unwrap();
        accepted += o.accepted;
        duplicates += o.duplicates;
    }
    assert_eq!(accepted, 200);
    assert_eq!(duplicates, 7 * 200);
    let usage = s.usage("cus_1", t0()).await.unwrap();
    assert_eq!(usage[0].sum, dec!(200));
    assert_eq!(usage[0].count, 200);
    assert_eq!(s.event_count().await.unwrap(), 200);
}

/// Batches that share some events, over several customers and metrics, in different orders, all
/// at once: each event is counted once, in the events and in the rollups.
async fn overlapping_concurrent_batches_count_each_event_once(ctx: Ctx) {
    let s = ctx.store.clone();
    for c in 0..5 {
        customer(&*s, &format!("cus_{c}")).await;
    }
    // Event i belongs to customer i % 5 and metric i % 3 (value i % 7 + 1); batch b holds events
    // [40 b, 40 b + 120), so neighbouring batches share 80 events; odd batches go backwards.
    let event = |i: usize| {
        let metric = ["api_calls", "seats", "storage"][i % 3];
        let value = Decimal::from((i % 7 + 1) as i64);
        ev(
            &format!("cus_{}", i % 5),
            &format!("e{i}"),
            metric,
            value,
            t0(),
        )
    };
    let mut tasks = Vec::new();
    for b in 0..8usize {
        let mut batch: Vec<NewEvent> = (40 * b..40 * b + 120).map(event).collect();
        if b % 2 == 1 {
            batch.reverse();
        }
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.ingest(batch).await.unwrap() }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for t in tasks {
        let o = t.await.unwrap();
        accepted += o.accepted;
        duplicates += o.duplicates;
    }
    // Events 0..400 exist once; 8 × 120 were sent.
    assert_eq!((accepted, duplicates), (400, 960 - 400));
    assert_eq!(s.event_count().await.unwrap(), 400);
    for c in 0..5 {
        let usage = s.usage(&format!("cus_{c}"), t0()).await.unwrap();
        for r in &usage {
            let m = ["api_calls", "seats", "storage"]
                .iter()
                .position(|x| *x == r.metric)
                .unwrap();
            let mine: Vec<usize> = (0..400).filter(|i| i % 5 == c && i % 3 == m).collect();
            let sum: i64 = mine.iter().map(|i| (i % 7 + 1) as i64).sum();
            assert_eq!(r.count, mine.len() as i64, "cus_{c} {}", r.metric);
            assert_eq!(r.sum, Decimal::from(sum), "cus_{c} {}", r.metric);
        }
        assert_eq!(usage.len(), 3);
    }
}

/// A batch that would take a period's total beyond what Tally holds is refused whole: none of its
/// events, not even another customer's, is stored or deduplicated.
async fn a_total_out_of_range_stores_nothing_of_its_batch(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    customer(s, "cus_2").await;
    let big = dec!(9999999999999999999);
    s.ingest(vec![ev("cus_1", "big", "api_calls", big, t0())])
        .await
        .unwrap();
    let err = s
        .ingest(vec![
            ev("cus_2", "a", "api_calls", dec!(1), t0()),
            ev("cus_1", "b", "api_calls", dec!(1), t0()),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange(_)), "{err:?}");
    assert_eq!(s.event_count().await.unwrap(), 1);
    assert!(s.usage("cus_2", t0()).await.unwrap().is_empty());
    assert_eq!(s.usage("cus_1", t0()).await.unwrap()[0].sum, big);
    let out = s
        .ingest(vec![ev("cus_2", "a", "api_calls", dec!(1), t0())])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1, "a refused batch leaves no dedup trace");
}

async fn rollups_keep_every_aggregation(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    let mut batch = vec![
        ev("cus_1", "a", "seats", dec!(3), t0() + Duration::hours(2)),
        ev("cus_1", "b", "seats", dec!(7), t0() + Duration::hours(1)),
    ];
    for (i, user) in ["u1", "u2", "u1"].iter().enumerate() {
        let mut e = ev("cus_1", &format!("mau{i}"), "mau", dec!(1), t0());
        e.unique_key = Some((*user).into());
        batch.push(e);
    }
    s.ingest(batch).await.unwrap();
    let mut e = ev("cus_1", "c", "seats", dec!(5), t0() + Duration::hours(3));
    e.properties = Some(serde_json::json!({"region": "eu"}));
    let mut u = ev("cus_1", "mau9", "mau", dec!(1), t0());
    u.unique_key = Some("u3".into());
    s.ingest(vec![e, u]).await.unwrap();
    let usage = s.usage("cus_1", t0()).await.unwrap();
    let seats = usage.iter().find(|r| r.metric == "seats").unwrap();
    assert_eq!(seats.sum, dec!(15));
    assert_eq!(seats.count, 3);
    assert_eq!(seats.max, Some(dec!(7)));
    assert_eq!(seats.latest, Some(dec!(5)));
    assert_eq!(seats.latest_at, Some(t0() + Duration::hours(3)));
    let mau = usage.iter().find(|r| r.metric == "mau").unwrap();
    assert_eq!(mau.unique_count, 3);
    assert_eq!(mau.count, 4);
}

async fn dedup_survives_reopening(ctx: Ctx) {
    customer(&*ctx.store, "cus_1").await;
    let batch = vec![
        ev("cus_1", "e1", "api_calls", dec!(1), t0()),
        ev("cus_1", "e2", "api_calls", dec!(1), t0()),
    ];
    ctx.store.ingest(batch.clone()).await.unwrap();
    ctx.store.close().await;
    drop(ctx.store);
    let reopened = tally_store::connect(&ctx.url).await.unwrap();
    let out = reopened.ingest(batch).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 2));
    let out = reopened
        .ingest(vec![ev("cus_1", "e3", "api_calls", dec!(1), t0())])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(reopened.usage("cus_1", t0()).await.unwrap()[0].sum, dec!(3));
}

fn invoice_for(total: i64) -> tally_store::InvoiceBuilder {
    Box::new(move |usage| {
        let used: Decimal = usage.iter().map(|r| r.sum).sum();
        Ok(NewInvoice {
            id: format!("in_{total}"),
            customer_id: String::new(),
            plan: "pro".into(),
            interval: "month".into(),
            period_start: t0(),
            period_end: t0(),
            currency: "eur".into(),
            subtotal: total,
            discount: 0,
            total,
            body: serde_json::json!({ "used": used.to_string() }),
            created_at: t0(),
        })
    })
}

async fn a_period_is_invoiced_once_and_late_events_move_to_the_next(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "cus_1").await;
    let p1 = t0();
    let p2 = t0() + Duration::days(31);
    s.ingest(vec![ev("cus_1", "e1", "api_calls", dec!(4), p1)])
        .await
        .unwrap();
    let billed_through = |c: Option<tally_store::Customer>| c.and_then(|c| c.billed_through);
    assert_eq!(billed_through(s.get_customer("cus_1").await.unwrap()), None);
    let inv = s
        .close_period("cus_1", p1, p2, invoice_for(1000))
        .await
        .unwrap()
        .expect("first close writes the invoice");
    assert_eq!(inv.customer_id, "cus_1");
    assert_eq!(inv.period_start, p1);
    assert_eq!(inv.period_end, p2);
    assert_eq!(inv.body, serde_json::json!({"used": "4"}));
    assert!(s
        .close_period("cus_1", p1, p2, invoice_for(2000))
        .await
        .unwrap()
        .is_none());
    let invoices = s.list_invoices("cus_1").await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].total, 1000);
    // Where the closer resumes, also as customers are listed.
    assert_eq!(
        billed_through(s.get_customer("cus_1").await.unwrap()),
        Some(p2)
    );
    let listed = s.list_customers_after(None, 1).await.unwrap();
    assert_eq!(billed_through(listed.into_iter().next()), Some(p2));

    // A late event of the invoiced period lands in the next period, labelled by its origin.
    s.ingest(vec![ev("cus_1", "late", "api_calls", dec!(2), p1)])
        .await
        .unwrap();
    assert_eq!(s.usage("cus_1", p1).await.unwrap()[0].sum, dec!(4));
    let next = s.usage("cus_1", p2).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].is_adjustment());
    assert_eq!(next[0].usage_period_start, p1);
    assert_eq!(next[0].billed_period_start, p2);
    assert_eq!(next[0].sum, dec!(2));
}

async fn api_keys_are_found_by_hash_until_revoked(ctx: Ctx) {
    let s = &*ctx.store;
    let hash = tally_store::hash_api_secret("tly_secret");
    let by = |at| AuditContext {
        actor: "cli".into(),
        idempotency_key: None,
        at,
    };
    s.create_api_key_audited(
        NewApiKey {
            id: "key_1".into(),
            name: "ci".into(),
            scope: "app".into(),
            customer_id: Some("cus_1".into()),
            secret_hash: hash.clone(),
            created_at: t0(),
        },
        Some(by(t0())),
    )
    .await
    .unwrap();
    let found = s.find_api_key(&hash).await.unwrap().unwrap();
    assert_eq!(found.id, "key_1");
    assert_eq!(found.scope, "app");
    assert_eq!(found.customer_id.as_deref(), Some("cus_1"));
    assert!(s.find_api_key("nope").await.unwrap().is_none());
    let t1 = t0() + chrono::Duration::seconds(1);
    assert!(s
        .revoke_api_key_audited("key_1", t1, Some(by(t1)))
        .await
        .unwrap());
    assert!(!s
        .revoke_api_key_audited("key_1", t1, Some(by(t1)))
        .await
        .unwrap());
    assert!(s.find_api_key(&hash).await.unwrap().is_none());
    assert_eq!(s.list_api_keys().await.unwrap()[0].revoked_at, Some(t1));

    // One row per change (the second revocation changed nothing), newest first.
    let page = s
        .audit_log(AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["api_key.revoked", "api_key.created"]);
    assert!(!page.has_more);
    let revoked = &page.records[0];
    assert_eq!(revoked.actor.as_deref(), Some("cli"));
    assert_eq!(revoked.target.kind, "api_key");
    assert_eq!(revoked.target.id.as_deref(), Some("key_1"));
    assert_eq!(revoked.customer_id.as_deref(), Some("cus_1"));
    assert_eq!(revoked.at, t1);
    assert_eq!(
        revoked.before.as_ref().unwrap()["revoked_at"],
        serde_json::Value::Null
    );
    assert_eq!(
        revoked.after.as_ref().unwrap()["revoked_at"],
        serde_json::json!(t1)
    );
    assert_eq!(page.records[1].before, None);
    assert_eq!(page.records[1].after.as_ref().unwrap()["scope"], "app");
}

async fn every_audited_change_writes_one_row_and_repeats_none(ctx: Ctx) {
    let s = &*ctx.store;
    let by = |actor: &str, key: Option<&str>| AuditContext {
        actor: actor.into(),
        idempotency_key: key.map(str::to_owned),
        at: t0(),
    };
    let upsert = |name: &str| CustomerUpsert {
        email_opt_out: None,
        id: "cus_1".into(),
        email: None,
        name: Some(name.into()),
        metadata: None,
        now: t0(),
    };
    s.upsert_customer_audited(upsert("A"), Some(by("key_a", Some("i1"))))
        .await
        .unwrap();
    // The same change again (a retry) changes nothing and records nothing.
    s.upsert_customer_audited(upsert("A"), Some(by("key_a", Some("i1"))))
        .await
        .unwrap();
    s.upsert_customer_audited(upsert("B"), Some(by("key_b", None)))
        .await
        .unwrap();
    // Unaudited writes (seeding, Stripe sync) record nothing.
    s.upsert_customer(upsert("C")).await.unwrap();
    s.put_subscription_audited(sub("cus_1", "pro"), Some(by("key_a", None)))
        .await
        .unwrap();
    s.put_subscription_audited(sub("cus_1", "pro"), Some(by("key_a", None)))
        .await
        .unwrap();
    s.put_subscription_audited(sub("cus_1", "starter"), Some(by("key_a", None)))
        .await
        .unwrap();
    // A failed change records nothing.
    assert!(s
        .put_subscription_audited(sub("ghost", "pro"), Some(by("key_a", None)))
        .await
        .is_err());
    let flag = |enabled| tally_store::FlagOverride {
        customer_id: "cus_1".into(),
        flag: "beta".into(),
        enabled,
        updated_at: t0(),
    };
    s.put_flag_override_audited(flag(true), Some(by("key_a", None)))
        .await
        .unwrap();
    s.put_flag_override_audited(flag(true), Some(by("key_a", None)))
        .await
        .unwrap();
    assert!(s
        .delete_flag_override_audited("cus_1", "beta", Some(by("key_a", None)))
        .await
        .unwrap());
    assert!(!s
        .delete_flag_override_audited("cus_1", "beta", Some(by("key_a", None)))
        .await
        .unwrap());

    let all = s
        .audit_log(AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = all.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "flag_override.deleted",
            "flag_override.created",
            "subscription.updated",
            "subscription.created",
            "customer.updated",
            "customer.created",
        ]
    );
    let created = &all.records[5];
    assert_eq!(created.idempotency_key.as_deref(), Some("i1"));
    assert_eq!(created.before, None);
    assert_eq!(created.after.as_ref().unwrap()["name"], "A");
    let updated = &all.records[4];
    assert_eq!(updated.actor.as_deref(), Some("key_b"));
    assert_eq!(updated.before.as_ref().unwrap()["name"], "A");
    assert_eq!(updated.after.as_ref().unwrap()["name"], "B");
    let plan_change = &all.records[2];
    assert_eq!(plan_change.target.id.as_deref(), Some("sub_cus_1"));
    assert_eq!(plan_change.before.as_ref().unwrap()["plan"], "pro");
    assert_eq!(plan_change.after.as_ref().unwrap()["plan"], "starter");
    assert_eq!(all.records[0].after, None);
    assert_eq!(all.records[0].before.as_ref().unwrap()["enabled"], true);

    // Filters and pages.
    let by_b = s
        .audit_log(AuditFilter {
            actor: Some("key_b".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_b.records.len(), 1);
    let first = s
        .audit_log(AuditFilter {
            customer_id: Some("cus_1".into()),
            limit: 4,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(first.records.len(), 4);
    assert!(first.has_more);
    let last_seq = tally_store::audit::audit_seq(&first.records[3].id).unwrap();
    let second = s
        .audit_log(AuditFilter {
            customer_id: Some("cus_1".into()),
            before_seq: Some(last_seq),
            limit: 4,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = second.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [all.records[4].id.as_str(), all.records[5].id.as_str()]
    );
    assert!(!second.has_more);
    let none = s
        .audit_log(AuditFilter {
            since: Some(t0() + chrono::Duration::seconds(1)),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(none.records.is_empty());
    // A row on its own (an action outside the database, e.g. a call to Stripe).
    s.record_audit(tally_store::AuditEntry {
        action: "refund.created".into(),
        target_type: "refund".into(),
        target_id: "re_1".into(),
        customer_id: None,
        before: None,
        after: Some(serde_json::json!({"amount": 500})),
        context: by("key_b", Some("r1")),
    })
    .await
    .unwrap();
    let by_b = s
        .audit_log(AuditFilter {
            actor: Some("key_b".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_b.records.len(), 2);
    let refund = &by_b.records[0];
    assert_eq!(refund.action, "refund.created");
    assert_eq!(refund.target.id.as_deref(), Some("re_1"));
    assert_eq!(refund.customer_id, None);
    assert_eq!(refund.after, Some(serde_json::json!({"amount": 500})));
    assert_eq!(refund.idempotency_key.as_deref(), Some("r1"));
    let other = s
        .audit_log(AuditFilter {
            customer_id: Some("cus_2".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(other.records.is_empty());
}

async fn migrations_are_idempotent(ctx: Ctx) {
    customer(&*ctx.store, "cus_1").await;
    let again = tally_store::connect_admin(&ctx.url).await.unwrap();
    assert!(again.get_customer("cus_1").await.unwrap().is_some());
    again.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_urls_take_a_durability_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let store = tally_store::connect(&format!("sqlite://{}?synchronous=full", path.display()))
        .await
        .unwrap();
    customer(&*store, "c").await;
    store.close().await;
    let err = tally_store::connect(&format!("sqlite://{}?cache=big", path.display()))
        .await
        .err()
        .expect("unknown option");
    assert!(err.to_string().contains("synchronous=normal|full"), "{err}");
    let err = tally_store::connect("mysql://x")
        .await
        .err()
        .expect("bad scheme");
    assert!(matches!(err, StoreError::InvalidUrl(_)));
}

#[tokio::test]
async fn only_one_process_ingests_into_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let first = tally_store::connect(&url).await.unwrap();
    customer(&*first, "c1").await;
    let err = tally_store::connect(&url)
        .await
        .err()
        .expect("second ingesting store");
    assert!(
        err.to_string().contains("in use by another Tally process"),
        "{err}"
    );
    // An admin store works beside it but cannot ingest.
    let admin = tally_store::connect_admin(&url).await.unwrap();
    assert!(admin.get_customer("c1").await.unwrap().is_some());
    let err = admin
        .ingest(vec![ev("c1", "e1", "api_calls", dec!(1), t0())])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    admin.close().await;
    // Once the first store is closed, another may ingest.
    first.close().await;
    let next = tally_store::connect(&url).await.unwrap();
    let out = next
        .ingest(vec![ev("c1", "e1", "api_calls", dec!(1), t0())])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
}

async fn leases_have_one_holder_until_they_expire(ctx: Ctx) {
    let s = &*ctx.store;
    let later = t0() + Duration::seconds(60);
    assert!(s.acquire_lease("closer", "a", t0(), later).await.unwrap());
    assert!(!s
        .acquire_lease("closer", "b", t0() + Duration::seconds(30), later)
        .await
        .unwrap());
    // The holder renews.
    let renewed = t0() + Duration::seconds(120);
    assert!(s
        .acquire_lease("closer", "a", t0() + Duration::seconds(30), renewed)
        .await
        .unwrap());
    assert!(!s
        .acquire_lease("closer", "b", later, later + Duration::seconds(60))
        .await
        .unwrap());
    // Once expired, another takes it.
    assert!(s
        .acquire_lease("closer", "b", renewed, renewed + Duration::seconds(60))
        .await
        .unwrap());
    assert!(!s
        .acquire_lease("closer", "a", renewed, renewed + Duration::seconds(60))
        .await
        .unwrap());
    // Leases are independent by name.
    assert!(s.acquire_lease("other", "a", t0(), later).await.unwrap());
}
