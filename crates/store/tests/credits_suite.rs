//! The credit ledger, notification outbox and flag overrides, run against both backends.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_core::credits::EntryKind;
use tally_store::{CreditOutcome, CreditRequest, FlagOverride, NewEvent, UsageNotification};

#[macro_use]
mod common;

use common::{customer, t0, Ctx};

suite!(
    expiring_grants_are_consumed_first_and_expired_credits_written_off,
    a_short_balance_changes_nothing,
    debits_empty_buckets_exactly_in_order,
    idempotency_keys_replay_or_conflict,
    idempotency_keys_survive_reopening,
    consumption_by_metric_records_the_event_in_the_same_transaction,
    concurrent_debits_never_overdraw,
    notifications_are_queued_once,
    flag_overrides_are_set_and_removed,
);

fn req(id: &str, kind: EntryKind, amount: Decimal, at: DateTime<Utc>) -> CreditRequest {
    CreditRequest {
        entry_id: id.into(),
        customer_id: "c1".into(),
        kind,
        amount,
        expires_at: None,
        reason: None,
        idempotency_key: Some(id.into()),
        fingerprint: format!("{kind:?}{amount}"),
        actor: Some("key_1".into()),
        audit: false,
        event: None,
        quantity: None,
        now: at,
        notify: None,
    }
}

fn applied(o: CreditOutcome) -> tally_store::CreditEntryRecord {
    match o {
        CreditOutcome::Applied(e) => e,
        other => panic!("not applied: {other:?}"),
    }
}

async fn expiring_grants_are_consumed_first_and_expired_credits_written_off(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    applied(
        s.credit_apply(req("pack", EntryKind::Purchase, dec!(500), t0()))
            .await
            .unwrap(),
    );
    let mut late = req("late", EntryKind::Grant, dec!(100), t0());
    late.expires_at = Some(t0() + Duration::days(30));
    applied(s.credit_apply(late).await.unwrap());
    let mut soon = req("soon", EntryKind::Grant, dec!(100), t0());
    soon.expires_at = Some(t0() + Duration::days(10));
    applied(s.credit_apply(soon).await.unwrap());
    // 150 credits: all of "soon", then 50 of "late"; the purchase is untouched.
    let e = applied(
        s.credit_apply(req(
            "use1",
            EntryKind::Consume,
            dec!(-150),
            t0() + Duration::days(1),
        ))
        .await
        .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(550));
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    let left: Vec<(String, Decimal)> = acct
        .buckets
        .iter()
        .map(|b| (b.entry_id.clone(), b.remaining))
        .collect();
    assert_eq!(
        left,
        vec![
            ("late".to_owned(), dec!(50)),
            ("pack".to_owned(), dec!(500))
        ]
    );
    // After "late" expires, the next debit writes its 50 off first, then draws on the purchase.
    let at = t0() + Duration::days(31);
    assert_eq!(acct.balance(at), dec!(500));
    let e = applied(
        s.credit_apply(req("use2", EntryKind::Consume, dec!(-1), at))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(499));
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    let kinds: Vec<(&str, Decimal)> = acct
        .entries
        .iter()
        .map(|e| (e.kind.as_str(), e.amount))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("consume", dec!(-1)),
            ("expire", dec!(-50)),
            ("consume", dec!(-150)),
            ("grant", dec!(100)),
            ("grant", dec!(100)),
            ("purchase", dec!(500)),
        ]
    );
    assert_eq!(acct.balance(at), dec!(499));
    // Paging: two at a time, newest first.
    let p1 = s.credit_account("c1", 2, None).await.unwrap();
    assert!(p1.has_more);
    let p2 = s
        .credit_account("c1", 2, Some(p1.entries[1].seq))
        .await
        .unwrap();
    assert_eq!(p2.entries[0].kind, "consume");
    assert_eq!(p2.entries[0].amount, dec!(-150));
}

async fn a_short_balance_changes_nothing(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    applied(
        s.credit_apply(req("g", EntryKind::Grant, dec!(10), t0()))
            .await
            .unwrap(),
    );
    let out = s
        .credit_apply(req("x", EntryKind::Consume, dec!(-10.5), t0()))
        .await
        .unwrap();
    assert_eq!(
        out,
        CreditOutcome::Insufficient {
            balance: dec!(10),
            required: dec!(10.5)
        }
    );
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    assert_eq!(acct.entries.len(), 1);
    assert_eq!(acct.balance(t0()), dec!(10));
    // The key of a refused debit is not taken: it may be retried once credits arrive.
    applied(
        s.credit_apply(req("g2", EntryKind::Grant, dec!(1), t0()))
            .await
            .unwrap(),
    );
    let e = applied(
        s.credit_apply(req("x", EntryKind::Consume, dec!(-10.5), t0()))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(0.5));
}

/// A debit that ends exactly at a bucket's end closes that bucket and leaves the next untouched;
/// one spanning several takes them in order (expiring first, earliest expiry first, then oldest).
async fn debits_empty_buckets_exactly_in_order(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    applied(
        s.credit_apply(req("forever", EntryKind::Purchase, dec!(30), t0()))
            .await
            .unwrap(),
    );
    let mut later = req("later", EntryKind::Grant, dec!(20), t0());
    later.expires_at = Some(t0() + Duration::days(20));
    applied(s.credit_apply(later).await.unwrap());
    let mut sooner = req("sooner", EntryKind::Grant, dec!(10), t0());
    sooner.expires_at = Some(t0() + Duration::days(10));
    applied(s.credit_apply(sooner).await.unwrap());
    let left = |acct: tally_store::CreditAccount| -> Vec<(String, Decimal)> {
        acct.buckets
            .iter()
            .map(|b| (b.entry_id.clone(), b.remaining))
            .collect()
    };
    let at = t0() + Duration::days(1);
    let e = applied(
        s.credit_apply(req("d1", EntryKind::Consume, dec!(-10), at))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(50));
    assert_eq!(
        left(s.credit_account("c1", 10, None).await.unwrap()),
        vec![
            ("forever".to_owned(), dec!(30)),
            ("later".to_owned(), dec!(20))
        ]
    );
    let e = applied(
        s.credit_apply(req("d2", EntryKind::Consume, dec!(-45.5), at))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(4.5));
    assert_eq!(
        left(s.credit_account("c1", 10, None).await.unwrap()),
        vec![("forever".to_owned(), dec!(4.5))]
    );
    let e = applied(
        s.credit_apply(req("d3", EntryKind::Consume, dec!(-4.5), at))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(0));
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    assert_eq!(acct.balance(at), dec!(0));
    assert_eq!(left(acct), vec![]);
    assert_eq!(
        s.credit_apply(req("d4", EntryKind::Consume, dec!(-1), at))
            .await
            .unwrap(),
        CreditOutcome::Insufficient {
            balance: dec!(0),
            required: dec!(1)
        }
    );
}

async fn idempotency_keys_replay_or_conflict(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    let first = applied(
        s.credit_apply(req("g", EntryKind::Grant, dec!(10), t0()))
            .await
            .unwrap(),
    );
    let mut again = req("g", EntryKind::Grant, dec!(10), t0());
    again.entry_id = "other-id".into();
    assert_eq!(
        s.credit_apply(again).await.unwrap(),
        CreditOutcome::Replayed(first)
    );
    let mut different = req("g", EntryKind::Grant, dec!(11), t0());
    different.entry_id = "third-id".into();
    assert_eq!(
        s.credit_apply(different).await.unwrap(),
        CreditOutcome::IdempotencyConflict
    );
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    assert_eq!(acct.entries.len(), 1);
    assert_eq!(acct.balance(t0()), dec!(10));
}

async fn idempotency_keys_survive_reopening(ctx: Ctx) {
    customer(&*ctx.store, "c1").await;
    customer(&*ctx.store, "c2").await;
    let grant = applied(
        ctx.store
            .credit_apply(req("g", EntryKind::Grant, dec!(10), t0()))
            .await
            .unwrap(),
    );
    let used = applied(
        ctx.store
            .credit_apply(req("u", EntryKind::Consume, dec!(-4), t0()))
            .await
            .unwrap(),
    );
    // Refused for a short balance: the key stays free, across the restart too.
    let short = ctx
        .store
        .credit_apply(req("x", EntryKind::Consume, dec!(-7), t0()))
        .await
        .unwrap();
    assert!(matches!(short, CreditOutcome::Insufficient { .. }));
    ctx.store.close().await;
    drop(ctx.store);
    let s = tally_store::connect(&ctx.url).await.unwrap();
    for (first, id, amount) in [(&grant, "g", dec!(10)), (&used, "u", dec!(-4))] {
        let kind = if amount > Decimal::ZERO {
            EntryKind::Grant
        } else {
            EntryKind::Consume
        };
        let mut again = req(id, kind, amount, t0());
        again.entry_id = format!("{id}-retry");
        assert_eq!(
            s.credit_apply(again).await.unwrap(),
            CreditOutcome::Replayed(first.clone())
        );
        let mut different = req(id, kind, amount * dec!(2), t0());
        different.entry_id = format!("{id}-other");
        assert_eq!(
            s.credit_apply(different).await.unwrap(),
            CreditOutcome::IdempotencyConflict
        );
    }
    // The same key for another customer is another request.
    let mut other = req("g", EntryKind::Grant, dec!(10), t0());
    other.customer_id = "c2".into();
    other.entry_id = "g-c2".into();
    applied(s.credit_apply(other).await.unwrap());
    applied(
        s.credit_apply(req("g2", EntryKind::Grant, dec!(1), t0()))
            .await
            .unwrap(),
    );
    let e = applied(
        s.credit_apply(req("x", EntryKind::Consume, dec!(-7), t0()))
            .await
            .unwrap(),
    );
    assert_eq!(e.balance_after, dec!(0));
    let acct = s.credit_account("c1", 10, None).await.unwrap();
    assert_eq!(acct.entries.len(), 4);
}

async fn consumption_by_metric_records_the_event_in_the_same_transaction(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    applied(
        s.credit_apply(req("g", EntryKind::Grant, dec!(5), t0()))
            .await
            .unwrap(),
    );
    let event = |id: &str, q: Decimal| NewEvent {
        customer_id: "c1".into(),
        event_id: id.into(),
        metric: "chat".into(),
        value: q,
        timestamp: t0(),
        properties: None,
        period_start: t0(),
        unique_key: None,
    };
    let mut r = req("u1", EntryKind::Consume, dec!(-3), t0());
    r.event = Some(event("ev1", dec!(3)));
    r.quantity = Some(dec!(3));
    let e = applied(s.credit_apply(r).await.unwrap());
    assert_eq!(e.event_id.as_deref(), Some("ev1"));
    assert_eq!(e.metric.as_deref(), Some("chat"));
    // Refused: neither the debit nor the event is stored.
    let mut r = req("u2", EntryKind::Consume, dec!(-3), t0());
    r.event = Some(event("ev2", dec!(3)));
    assert!(matches!(
        s.credit_apply(r).await.unwrap(),
        CreditOutcome::Insufficient { .. }
    ));
    assert_eq!(s.event_ids("c1").await.unwrap(), vec!["ev1".to_owned()]);
    let usage = s.usage("c1", t0()).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].sum, usage[0].count), (dec!(3), 1));
}

async fn concurrent_debits_never_overdraw(ctx: Ctx) {
    let s = ctx.store.clone();
    customer(&*s, "c1").await;
    applied(
        s.credit_apply(req("g", EntryKind::Grant, dec!(100), t0()))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.credit_apply(req(&format!("d{i}"), EntryKind::Consume, dec!(-3), t0()))
                .await
                .unwrap()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            CreditOutcome::Applied(_) => ok += 1,
            CreditOutcome::Insufficient { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 33);
    assert_eq!(
        s.credit_account("c1", 0, None).await.unwrap().balance(t0()),
        dec!(1)
    );
}

async fn notifications_are_queued_once(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    let n = |t: u32, period: DateTime<Utc>| UsageNotification {
        id: format!("n{t}{}", period.timestamp()),
        customer_id: "c1".into(),
        metric: "builds".into(),
        period_start: period,
        threshold: t,
        used: dec!(80),
        limit: dec!(100),
        created_at: t0(),
        delivered_at: None,
    };
    assert!(s.record_notification(n(80, t0())).await.unwrap());
    let mut dup = n(80, t0());
    dup.id = "another".into();
    assert!(!s.record_notification(dup).await.unwrap());
    assert!(s.record_notification(n(95, t0())).await.unwrap());
    assert!(s
        .record_notification(n(80, t0() + Duration::days(31)))
        .await
        .unwrap());
    let all = s.notifications("c1").await.unwrap();
    assert_eq!(
        all.iter().map(|n| n.threshold).collect::<Vec<_>>(),
        vec![80, 95, 80]
    );
    assert_eq!(all[0].limit, dec!(100));
}

async fn flag_overrides_are_set_and_removed(ctx: Ctx) {
    let s = &*ctx.store;
    customer(s, "c1").await;
    let o = |enabled| FlagOverride {
        customer_id: "c1".into(),
        flag: "beta".into(),
        enabled,
        updated_at: t0(),
    };
    s.put_flag_override(o(true)).await.unwrap();
    s.put_flag_override(o(false)).await.unwrap();
    assert_eq!(s.flag_overrides("c1").await.unwrap(), vec![o(false)]);
    assert!(s.delete_flag_override("c1", "beta").await.unwrap());
    assert!(!s.delete_flag_override("c1", "beta").await.unwrap());
    assert!(s.flag_overrides("c1").await.unwrap().is_empty());
}
