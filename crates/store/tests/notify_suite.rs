//! The notification outbox and webhook deliveries, run against both backends.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tally_store::{
    Backend, DeliveryAttempt, NewNotification, NewWebhookEndpoint, NotificationFilter,
};

#[macro_use]
mod common;

use common::{t0, Ctx};

suite!(
    a_moment_enqueues_once_and_fans_out_to_subscribed_endpoints,
    deliveries_are_claimed_once_in_order_per_customer,
    failures_retry_and_replay_delivers_again,
    rotation_keeps_the_previous_secret_for_the_grace_period,
);

fn note(kind: &str, customer: &str, key: &str, at: DateTime<Utc>) -> NewNotification {
    NewNotification {
        kind: kind.into(),
        customer_id: Some(customer.into()),
        payload: json!({"customer": customer, "key": key}),
        dedup_key: key.into(),
        created_at: at,
    }
}

fn endpoint(id: &str, events: &[&str]) -> NewWebhookEndpoint {
    NewWebhookEndpoint {
        id: id.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: format!("whsec_{id}"),
        created_at: t0(),
    }
}

async fn a_moment_enqueues_once_and_fans_out_to_subscribed_endpoints(ctx: Ctx) {
    let s = &*ctx.store;
    let all = s
        .create_webhook_endpoint_audited(endpoint("we_all", &["*"]), None)
        .await
        .unwrap();
    assert_eq!(all.events, vec!["*"]);
    assert_eq!(all.status, "enabled");
    s.create_webhook_endpoint_audited(
        endpoint("we_credits", &["credits.low", "credits.granted"]),
        None,
    )
    .await
    .unwrap();
    assert!(s
        .enqueue_notification(note("credits.granted", "c1", "k1", t0()))
        .await
        .unwrap());
    assert!(!s
        .enqueue_notification(note("credits.granted", "c1", "k1", t0()))
        .await
        .unwrap());
    assert!(s
        .enqueue_notification(note("invoice.closed", "c1", "k2", t0()))
        .await
        .unwrap());
    let listed = s
        .list_notifications(NotificationFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, tally_store::notify::notification_id("k1"));
    assert_eq!(listed[0].payload, json!({"customer": "c1", "key": "k1"}));
    assert_eq!(s.webhook_deliveries("we_all", 10).await.unwrap().len(), 2);
    let credits = s.webhook_deliveries("we_credits", 10).await.unwrap();
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0].kind, "credits.granted");
    assert_eq!(credits[0].status, "pending");
    assert_eq!(
        s.list_webhook_endpoints().await.unwrap()[1].events,
        vec!["credits.granted", "credits.low"]
    );
    assert!(s
        .delete_webhook_endpoint_audited("we_credits", t0(), None)
        .await
        .unwrap());
    assert!(s
        .get_webhook_endpoint("we_credits")
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.oldest_pending_delivery().await.unwrap(), Some(t0()));
}

async fn deliveries_are_claimed_once_in_order_per_customer(ctx: Ctx) {
    let s = &*ctx.store;
    s.create_webhook_endpoint_audited(endpoint("we_1", &["*"]), None)
        .await
        .unwrap();
    for (i, c) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        s.enqueue_notification(note("t", c, &format!("k{i}"), t0()))
            .await
            .unwrap();
    }
    let now = t0() + Duration::seconds(1);
    let until = now + Duration::seconds(60);
    // One head per customer.
    let first = s.claim_deliveries("w1", now, until, 10).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|d| d.notification.dedup_key.as_str())
            .collect::<Vec<_>>(),
        vec!["k0", "k1"]
    );
    let ok = |seq, holder: &str| DeliveryAttempt {
        delivery_seq: seq,
        endpoint_id: "we_1".into(),
        holder: holder.into(),
        at: now,
        status_code: Some(200),
        failure: None,
    };
    if s.backend() == Backend::Postgres {
        // Leased: no other process gets them, and the next of each customer waits for its head.
        assert!(s
            .claim_deliveries("w2", now, until, 10)
            .await
            .unwrap()
            .is_empty());
        // A worker that does not hold the lease records nothing.
        assert_eq!(
            s.finish_delivery(ok(first[0].seq, "w2")).await.unwrap(),
            None
        );
    } else {
        // The next of each customer waits for its head.
        assert!(s
            .claim_deliveries("w1", now, until, 10)
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(
        s.finish_delivery(ok(first[0].seq, "w1")).await.unwrap(),
        Some(None)
    );
    let next = s.claim_deliveries("w1", now, until, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].notification.dedup_key, "k2");
    // An expired lease is claimable again (its worker died).
    let later = until + Duration::seconds(1);
    let again = s
        .claim_deliveries("w3", later, later + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .map(|d| d.notification.dedup_key.as_str())
            .collect::<Vec<_>>(),
        vec!["k1", "k2"]
    );
    if s.backend() == Backend::Sqlite {
        // The process holding the ingest lock is the only one delivering: another holder's
        // lease is a dead process's, taken over at once.
        let taken = s.claim_deliveries("w4", later, later, 10).await.unwrap();
        assert_eq!(taken.len(), 2);
    }
}

async fn failures_retry_and_replay_delivers_again(ctx: Ctx) {
    let s = &*ctx.store;
    s.create_webhook_endpoint_audited(endpoint("we_1", &["*"]), None)
        .await
        .unwrap();
    s.enqueue_notification(note("t", "a", "k0", t0()))
        .await
        .unwrap();
    let now = t0();
    let d = s
        .claim_deliveries("w1", now, now + Duration::seconds(60), 10)
        .await
        .unwrap();
    let retry_at = now + Duration::seconds(30);
    let failing = s
        .finish_delivery(DeliveryAttempt {
            delivery_seq: d[0].seq,
            endpoint_id: "we_1".into(),
            holder: "w1".into(),
            at: now,
            status_code: Some(500),
            failure: Some(("HTTP 500".into(), retry_at)),
        })
        .await
        .unwrap();
    assert_eq!(failing, Some(Some(now)));
    assert!(s
        .claim_deliveries("w1", now, now + Duration::seconds(60), 10)
        .await
        .unwrap()
        .is_empty());
    let d = s
        .claim_deliveries("w1", retry_at, retry_at + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(d[0].attempts, 1);
    s.finish_delivery(DeliveryAttempt {
        delivery_seq: d[0].seq,
        endpoint_id: "we_1".into(),
        holder: "w1".into(),
        at: retry_at,
        status_code: Some(204),
        failure: None,
    })
    .await
    .unwrap();
    let log = s.webhook_deliveries("we_1", 10).await.unwrap();
    assert_eq!(log[0].status, "succeeded");
    assert_eq!(log[0].attempts, 2);
    assert_eq!(log[0].last_status_code, Some(204));
    assert_eq!(log[0].delivered_at, Some(retry_at));
    assert_eq!(
        s.get_webhook_endpoint("we_1")
            .await
            .unwrap()
            .unwrap()
            .failing_since,
        None
    );
    let id = tally_store::notify::notification_id("k0");
    assert_eq!(s.replay_notification(&id, retry_at).await.unwrap(), Some(1));
    assert_eq!(
        s.replay_notification("evt_none", retry_at).await.unwrap(),
        None
    );
    assert_eq!(
        s.claim_deliveries("w1", retry_at, retry_at + Duration::seconds(60), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn rotation_keeps_the_previous_secret_for_the_grace_period(ctx: Ctx) {
    let s = &*ctx.store;
    s.create_webhook_endpoint_audited(endpoint("we_1", &["*"]), None)
        .await
        .unwrap();
    let until = t0() + Duration::hours(24);
    let e = s
        .rotate_webhook_endpoint_secret_audited("we_1", "whsec_new", until, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.signing_secrets(t0()), vec!["whsec_new", "whsec_we_1"]);
    assert_eq!(e.signing_secrets(until), vec!["whsec_new"]);
    assert!(s
        .rotate_webhook_endpoint_secret_audited("we_x", "whsec_x", until, None)
        .await
        .unwrap()
        .is_none());
}
