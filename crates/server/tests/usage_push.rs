//! Usage to Stripe at period close, against the Stripe simulator with a test clock, the real
//! server on a random port, on SQLite and PostgreSQL: Magic Box Pro monthly with 350 compute
//! hours and EUR 180 of API spend lands on Stripe's renewal invoice as 199.00 + 2.00 + 34.50 and
//! is paid; a late close bills a standalone invoice; faults, a kill half-way and two processes
//! at once still leave every line on Stripe exactly once.

#[macro_use]
mod common;
use std::time::Duration;

use common::usage_world::*;
use common::Db;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::service::{reconcile, usage_push};
use tally_server::AppState;

/// The Magic Box scenario: the period's invoice is written 15 minutes after its end (10 minutes
/// of grace), while Stripe's renewal is a draft; its two usage lines go onto the renewal, which
/// Stripe then finalizes and charges: 199.00 + 2.00 + 34.50 = 235.50, paid.
async fn usage_lands_on_the_renewal_invoice_and_is_paid(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let written = w.close(at("2026-02-15T00:15:00Z")).await;
    assert_eq!(written.len(), 1);
    let inv = &written[0];
    assert_eq!(inv.total, 19900 + 200 + 3450);
    let lines = usage_push::push_lines(inv);
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.line_id.as_str(), l.amount))
            .collect::<Vec<_>>(),
        vec![("L1", 200), ("L2", 3450)]
    );

    let renewal = w.renewal_at(at(PERIOD_END)).await;
    let renewal_id = renewal["id"].as_str().unwrap().to_owned();
    assert_eq!(renewal["status"], "draft");
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);

    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "sent");
    assert_eq!(push.renewal_invoice.as_deref(), Some(renewal_id.as_str()));
    assert_eq!(push.standalone_invoice, None);
    assert_eq!((push.lines, push.amount), (2, 3650));
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (renewal_id.clone(), "L1".into(), 200),
            (renewal_id.clone(), "L2".into(), 3450)
        ]
    );
    let draft = w.invoice(&renewal_id).await;
    let mut amounts: Vec<i64> = draft["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(amounts, vec![200, 3450, 19900]);
    assert_eq!(draft["total"], 23550);

    // A second round changes nothing.
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 0);
    assert_eq!(w.stripe_lines_of(&inv.id).len(), 2);

    // Stripe finalizes and charges the renewal an hour after the period's end.
    w.advance_stripe(at("2026-02-15T01:30:00Z")).await;
    let paid = w.invoice(&renewal_id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_paid"], 23550);
    w.clock.set(at("2026-02-15T01:31:00Z"));
    w.deliver("invoice.paid").await;
    let shown = w.tally_invoice(&inv.id).await;
    assert_eq!(shown["total"], 23550);
    assert_eq!(shown["stripe"]["state"], "paid", "{shown}");
    assert_eq!(shown["stripe"]["invoice"], renewal_id.as_str());
    assert_eq!(shown["stripe"]["lines"], 2);
    assert_eq!(shown["stripe"]["amount"], 3650);
    assert_eq!(shown["stripe"]["last_error"], Value::Null);
    // Stripe's hosted page of the invoice, kept from its events, shows that invoice, paid.
    let hosted = paid["hosted_invoice_url"].as_str().unwrap();
    assert_eq!(shown["stripe"]["hosted_invoice_url"], hosted);
    let page = w.http.get(hosted).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    let number = paid["number"].as_str().unwrap();
    assert!(
        text.contains(&format!("<h1>Invoice {number}</h1>")),
        "{text}"
    );
    assert!(text.contains("<p>Status: paid</p>"), "{text}");

    // Tally, Stripe and the reconciliation agree; the revenue of each month.
    let jan = reconcile::reconcile(w.state(), "2026-01").await.unwrap();
    assert_eq!(jan.discrepancies, vec![], "{jan:?}");
    assert_eq!(
        (
            jan.invoices_checked,
            jan.payments_checked,
            jan.subscriptions_checked
        ),
        (1, 1, 1)
    );
    let rev = serde_json::to_value(&jan.revenue).unwrap();
    assert_eq!(
        rev,
        json!([{"currency": "eur", "invoiced": 19900, "collected": 19900, "refunded": 0, "outstanding": 0}])
    );
    let feb = reconcile::reconcile(w.state(), "2026-02").await.unwrap();
    assert_eq!(feb.discrepancies, vec![], "{feb:?}");
    let rev = serde_json::to_value(&feb.revenue).unwrap();
    assert_eq!(
        rev,
        json!([{"currency": "eur", "invoiced": 23550, "collected": 23550, "refunded": 0, "outstanding": 0}])
    );
    assert_eq!(reconcile::daily(w.state()).await.unwrap(), Some(0));
    assert!(w
        .state()
        .metrics
        .render()
        .contains("tally_reconcile_discrepancies 0\n"));
    assert!(w
        .state()
        .metrics
        .render()
        .contains("tally_period_close_lines_pushed_total 2\n"));
}

/// Closed after Stripe finalized its renewal (base only): the usage goes on a standalone
/// invoice for the period, finalized and charged at once.
async fn a_late_close_bills_a_standalone_invoice(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T02:00:00Z")).await;
    let renewal = w.renewal_at(at(PERIOD_END)).await;
    assert_eq!(renewal["status"], "paid");
    assert_eq!(renewal["amount_paid"], 19900);
    let written = w.close(at("2026-02-15T02:10:00Z")).await;
    assert_eq!(written.len(), 1);
    let inv = &written[0];
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "paid", "{push:?}");
    let standalone = push.standalone_invoice.clone().unwrap();
    assert_eq!(push.renewal_invoice.as_deref(), renewal["id"].as_str());
    let s = w.invoice(&standalone).await;
    assert_eq!(s["status"], "paid");
    assert_eq!(s["amount_paid"], 3650);
    assert_eq!(s["metadata"]["tally_invoice_id"], inv.id.as_str());
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (standalone.clone(), "L1".into(), 200),
            (standalone.clone(), "L2".into(), 3450)
        ]
    );
    let shown = w.tally_invoice(&inv.id).await;
    assert_eq!(shown["stripe"]["state"], "paid");
    assert_eq!(shown["stripe"]["invoice"], standalone.as_str());
}

/// An annual plan renews once a year: each monthly usage period goes on its own standalone
/// invoice; the first period's invoice also holds the yearly base, which Stripe billed at the
/// start and Tally does not send.
async fn yearly_plan_bills_each_month_on_a_standalone_invoice(db: Db) {
    let Some(w) = world(db, "magicbox_pro_yearly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let written = w.close(at("2026-02-15T00:15:00Z")).await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].total, 199000 + 200 + 3450);
    // The second month: 320 compute hours, no API spend beyond the included.
    w.clock.set(at("2026-03-01T00:00:00Z"));
    let (s, b) = w
        .app
        .post(
            "/v1/events",
            json!({"events": [{"id": "e3", "customer": CUSTOMER, "metric": "compute_hours",
                "value": "320", "timestamp": "2026-02-28T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    w.advance_stripe(at("2026-03-15T00:05:00Z")).await;
    let second = w.close(at("2026-03-15T00:15:00Z")).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].total, 80);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 2);
    for (inv, amount) in [(&written[0], 3650), (&second[0], 80)] {
        let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
        assert_eq!(push.state, "paid", "{push:?}");
        assert_eq!(push.renewal_invoice, None);
        let s = w.invoice(push.standalone_invoice.as_deref().unwrap()).await;
        assert_eq!(
            (s["status"].as_str(), s["amount_paid"].as_i64()),
            (Some("paid"), Some(amount))
        );
    }
    // Stripe billed the yearly base once, at the start.
    let all = w
        .sim_get(&format!("/v1/invoices?customer={}", w.stripe_customer))
        .await;
    let bases: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["billing_reason"] == "subscription_create")
        .map(|i| i["amount_paid"].as_i64().unwrap())
        .collect();
    assert_eq!(bases, vec![199000]);
}

/// 429s and 500s on every kind of call of the push (within the gateway's retries), then failures
/// past them half-way (the attempt fails and is retried later), then a hang past the client's
/// timeout: every line ends on the renewal exactly once.
async fn faults_never_bill_a_line_twice(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(1)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    for (path, method, kind) in [
        ("/v1/invoices", "GET", "429"),
        ("/v1/subscriptions", "GET", "500"),
        ("/v1/invoiceitems", "POST", "429"),
        ("/v1/invoiceitems", "POST", "500"),
    ] {
        w.fault(json!({"path": path, "method": method, "kind": kind, "count": 1}))
            .await;
    }
    // The second item fails past the retries (three attempts): the attempt fails.
    w.fault(json!({"path": "/v1/invoiceitems", "method": "POST", "kind": "500", "count": 3, "after": 1}))
        .await;
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "pending");
    assert_eq!(push.attempts, 1);
    assert!(
        push.last_error.as_deref().unwrap().contains("Stripe"),
        "{push:?}"
    );
    assert!(push.request_id.is_some(), "{push:?}");
    let renewal = push.renewal_invoice.clone().unwrap();
    assert_eq!(w.stripe_lines_of(&inv.id).len(), 1);
    let shown = w.tally_invoice(&inv.id).await;
    assert_eq!(shown["stripe"]["state"], "pending");
    assert_eq!(shown["stripe"]["attempts"], 1);

    // Not due yet: nothing happens; then due, with a hang past the client's timeout on the
    // item's create (the simulator still creates it; the retry replays it).
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 0);
    w.clock.set(at("2026-02-15T00:20:00Z"));
    w.fault(json!({"path": "/v1/invoiceitems", "method": "POST", "kind": "timeout", "hang_ms": 1500, "count": 1}))
        .await;
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "sent", "{push:?}");
    assert_eq!(push.last_error, None);
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (renewal.clone(), "L1".into(), 200),
            (renewal.clone(), "L2".into(), 3450)
        ]
    );
    assert_eq!(w.live_items_of(&inv.id), 2);
    w.clear_faults().await;
    w.advance_stripe(at("2026-02-15T01:30:00Z")).await;
    assert_eq!(w.invoice(&renewal).await["amount_paid"], 23550);
}

/// A push killed while Stripe holds its second call, then taken over by another process once
/// the claim expires; and a line planted twice on the draft (a duplicate) is removed: once each.
async fn a_push_killed_half_way_is_finished_once(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(5)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    usage_push::enqueue(w.state()).await.unwrap();
    w.fault(json!({"path": "/v1/invoiceitems", "method": "POST", "kind": "timeout", "hang_ms": 800, "count": 1, "after": 1}))
        .await;
    let state = w.state().clone();
    let client = state.stripe.clone().unwrap();
    let id = inv.id.clone();
    let task = tokio::spawn(async move { usage_push::push_invoice(&state, &client, &id).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    task.abort();
    // The held request completes in Stripe after the kill.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.stripe_lines_of(&inv.id).len(), 2);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "pending");

    // Another process (its own instance id) on the same database: the claim keeps it off
    // until it expires.
    let other = AppState::new((*w.state().config).clone(), w.state().store.clone());
    let client = other.stripe.clone().unwrap();
    let busy = usage_push::push_invoice(&other, &client, &inv.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(busy.state, "pending");
    // Plant a duplicate of L1 on the draft, as a confused earlier run might have.
    let renewal = push.renewal_invoice.clone().unwrap();
    w.sim_post(
        "/v1/invoiceitems",
        &[
            ("customer", &w.stripe_customer),
            ("amount", "200"),
            ("currency", "eur"),
            ("invoice", &renewal),
            ("metadata[tally_invoice_id]", &inv.id),
            ("metadata[tally_line_id]", "L1"),
        ],
    )
    .await;
    assert_eq!(w.stripe_lines_of(&inv.id).len(), 3);
    w.clock.set(at("2026-02-15T00:21:00Z"));
    let done = usage_push::push_invoice(&other, &client, &inv.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, "sent", "{done:?}");
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (renewal.clone(), "L1".into(), 200),
            (renewal.clone(), "L2".into(), 3450)
        ]
    );
    assert_eq!(w.live_items_of(&inv.id), 2);
}

/// Two processes with their own connections push at once, each through the worker's round and
/// directly (as `tally sync --commit` does next to a server): each line once.
async fn two_processes_push_once(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    let config = (*w.state().config).clone();
    let store = match db {
        Db::Sqlite => w.state().store.clone(),
        Db::Postgres => tally_store::connect(&config.database_url).await.unwrap(),
    };
    let other = AppState::new(config, store);
    let (a, b, c, d) = tokio::join!(
        usage_push::round(w.state()),
        usage_push::round(&other),
        async {
            usage_push::enqueue(&other).await.unwrap();
            let client = other.stripe.clone().unwrap();
            usage_push::push_invoice(&other, &client, &inv.id).await
        },
        async {
            usage_push::enqueue(w.state()).await.unwrap();
            let client = w.state().stripe.clone().unwrap();
            usage_push::push_invoice(w.state(), &client, &inv.id).await
        },
    );
    for r in [a.map(|_| ()), b.map(|_| ()), c.map(|_| ()), d.map(|_| ())] {
        r.unwrap();
    }
    // Whoever lost the claim finishes on its next attempt.
    w.clock.set(at("2026-02-15T00:30:00Z"));
    usage_push::round(w.state()).await.unwrap();
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "sent", "{push:?}");
    let renewal = push.renewal_invoice.unwrap();
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (renewal.clone(), "L1".into(), 200),
            (renewal.clone(), "L2".into(), 3450)
        ]
    );
    assert_eq!(w.live_items_of(&inv.id), 2);
}

/// `tally sync` (the service behind it): a dry run reports the lines and totals and sends
/// nothing; `--commit` sends, again and next to the pusher, each line once.
async fn sync_dry_run_then_commit_bills_once(db: Db) {
    use tally_server::service::usage_sync;
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    w.clock.set(at("2026-02-15T00:15:00Z"));
    // Not closed yet: a dry run has nothing to report.
    let dry = usage_sync::sync(w.state(), "2026-01", None, false)
        .await
        .unwrap();
    assert!(dry.invoices.is_empty());
    w.close(at("2026-02-15T00:15:00Z")).await;
    let dry = usage_sync::sync(w.state(), "2026-01", None, false)
        .await
        .unwrap();
    let v = serde_json::to_value(&dry).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["invoices"].as_array().unwrap().len(), 1);
    let i = &v["invoices"][0];
    assert_eq!(i["customer"], CUSTOMER);
    assert_eq!(i["state"], "not_pushed");
    assert_eq!(i["amount"], 3650);
    assert_eq!(
        i["lines"],
        json!([
            {"line_id": "L1", "kind": "usage", "description": dry.invoices[0].lines[0].description, "amount": 200},
            {"line_id": "L2", "kind": "usage", "description": dry.invoices[0].lines[1].description, "amount": 3450}
        ])
    );
    assert_eq!(
        v["totals"],
        json!([{"currency": "eur", "invoices": 1, "amount": 3650}])
    );
    let inv = dry.invoices[0].invoice.clone();
    assert!(w.stripe_lines_of(&inv).is_empty());
    assert!(w.state().store.get_push(&inv).await.unwrap().is_none());
    // Another month has nothing; another customer neither.
    assert!(usage_sync::sync(w.state(), "2026-02", None, false)
        .await
        .unwrap()
        .invoices
        .is_empty());
    assert!(usage_sync::sync(w.state(), "2026-01", Some("other"), false)
        .await
        .unwrap()
        .invoices
        .is_empty());

    // Commit, next to the pusher, then again.
    let (a, b) = tokio::join!(
        usage_sync::sync(w.state(), "2026-01", None, true),
        usage_push::round(w.state()),
    );
    a.unwrap();
    b.unwrap();
    w.clock.set(at("2026-02-15T00:25:00Z"));
    let again = usage_sync::sync(w.state(), "2026-01", None, true)
        .await
        .unwrap();
    assert_eq!(again.failed, 0, "{again:?}");
    assert_eq!(again.invoices[0].state, "sent");
    let renewal = again.invoices[0].stripe_invoice.clone().unwrap();
    assert_eq!(
        w.stripe_lines_of(&inv),
        vec![
            (renewal.clone(), "L1".into(), 200),
            (renewal.clone(), "L2".into(), 3450)
        ]
    );
    assert_eq!(w.live_items_of(&inv), 2);
    // Bad input.
    assert_eq!(
        usage_sync::sync(w.state(), "2026-1", None, false)
            .await
            .unwrap_err()
            .code,
        "invalid_period"
    );
}

/// Reconciliation finds each discrepancy planted in Stripe: a line deleted, an amount changed, a
/// line Tally never sent, the invoice voided, the subscription canceled only in Stripe.
async fn reconcile_finds_each_planted_discrepancy(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(10)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    usage_push::round(w.state()).await.unwrap();
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    let renewal = push.renewal_invoice.clone().unwrap();
    let items: Vec<(String, String)> = w
        .sim
        .with(|s| {
            let mut v: Vec<(String, String)> =
                s.w.invoice_items
                    .values()
                    .filter(|i| !i.deleted && i.metadata.contains_key("tally_line_id"))
                    .map(|i| (i.metadata["tally_line_id"].clone(), i.id.clone()))
                    .collect();
            v.sort();
            v
        })
        .unwrap();
    assert_eq!(items.len(), 2);
    // L1 deleted, L2 changed, an L9 Tally never had.
    let r = w
        .http
        .delete(format!(
            "{}/v1/invoiceitems/{}",
            w.sim.base_url(),
            items[0].1
        ))
        .bearer_auth(SK)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    w.sim_post(
        &format!("/v1/invoiceitems/{}", items[1].1),
        &[("amount", "3500")],
    )
    .await;
    w.sim_post(
        "/v1/invoiceitems",
        &[
            ("customer", &w.stripe_customer),
            ("amount", "999"),
            ("currency", "eur"),
            ("invoice", &renewal),
            ("metadata[tally_invoice_id]", &inv.id),
            ("metadata[tally_line_id]", "L9"),
        ],
    )
    .await;
    // Finalized without collecting, then voided; the subscription canceled.
    w.sim_post(
        &format!("/v1/invoices/{renewal}/finalize"),
        &[("auto_advance", "false")],
    )
    .await;
    w.sim_post(&format!("/v1/invoices/{renewal}/void"), &[])
        .await;
    let r = w
        .http
        .delete(format!(
            "{}/v1/subscriptions/{}",
            w.sim.base_url(),
            w.subscription
        ))
        .bearer_auth(SK)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Tally has recorded the first payment (so payments agree).
    w.deliver("invoice.paid").await;

    let report = reconcile::reconcile(w.state(), "2026-01").await.unwrap();
    type Found = (String, Option<String>, Option<String>, Option<String>);
    let mut found: Vec<Found> = report
        .discrepancies
        .iter()
        .map(|x| {
            (
                x.kind.clone(),
                x.line.clone(),
                x.tally.clone(),
                x.stripe.clone(),
            )
        })
        .collect();
    found.sort();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        found,
        vec![
            ("amount_differs".into(), s("L2"), s("3450"), s("3500")),
            ("extra_in_stripe".into(), s("L9"), None, s("999")),
            ("missing_in_stripe".into(), s("L1"), s("200"), None),
            ("status_differs".into(), None, s("sent"), s("void")),
            (
                "subscription_state_differs".into(),
                None,
                s("active"),
                s("canceled")
            ),
        ],
        "{report:?}"
    );
    for x in &report.discrepancies {
        assert_eq!(x.customer, CUSTOMER);
        assert!(x.stripe_id.is_some(), "{x:?}");
    }
    let status = report
        .discrepancies
        .iter()
        .find(|x| x.kind == "status_differs")
        .unwrap();
    assert_eq!(status.stripe_id.as_deref(), Some(renewal.as_str()));
    assert_eq!(status.tally_id.as_deref(), Some(inv.id.as_str()));
    let sub = report
        .discrepancies
        .iter()
        .find(|x| x.kind == "subscription_state_differs")
        .unwrap();
    assert_eq!(sub.stripe_id.as_deref(), Some(w.subscription.as_str()));
    // The daily job counts this month's and last month's.
    w.clock.set(at("2026-02-16T00:00:00Z"));
    assert_eq!(reconcile::daily(w.state()).await.unwrap(), Some(5));
    assert!(w
        .state()
        .metrics
        .render()
        .contains("tally_reconcile_discrepancies 5\n"));
}

/// The standalone path under faults: a 500 on the invoice's create, a 429 on reading it back, and
/// a hang past the client's timeout on its finalization (the simulator, like Stripe, completes it
/// anyway; the retry replays it): one standalone invoice, each line once, charged once.
async fn standalone_faults_bill_once(db: Db) {
    let Some(w) = world(db, "magicbox_pro_monthly", Duration::from_secs(1)).await else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T02:00:00Z")).await;
    let inv = w.close(at("2026-02-15T02:10:00Z")).await.remove(0);
    w.fault(json!({"path": "/v1/invoices", "method": "POST", "kind": "500", "count": 1}))
        .await;
    w.fault(
        json!({"path": "/v1/invoices/", "method": "GET", "kind": "429", "count": 1, "after": 2}),
    )
    .await;
    w.fault(json!({"path": "/v1/invoices/", "method": "POST", "kind": "timeout", "hang_ms": 1500, "count": 1}))
        .await;
    // Should the retries run out while Stripe still holds the request, the next round finishes.
    let mut push = None;
    for minute in [10, 20, 30] {
        w.clock
            .set(at("2026-02-15T02:10:00Z") + chrono::Duration::minutes(minute));
        usage_push::round(w.state()).await.unwrap();
        let p = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
        if p.state != "pending" {
            push = Some(p);
            break;
        }
    }
    let push = push.expect("pushed within three rounds");
    assert_eq!(push.state, "paid", "{push:?}");
    let standalone = push.standalone_invoice.clone().unwrap();
    let tally_id = inv.id.clone();
    let made: Vec<(String, String, i64)> = w
        .sim
        .with(move |s| {
            s.w.invoices
                .values()
                .filter(|i| i.metadata.get("tally_invoice_id") == Some(&tally_id))
                .map(|i| (i.id.clone(), i.status.clone(), i.amount_paid))
                .collect()
        })
        .unwrap();
    assert_eq!(made, vec![(standalone.clone(), "paid".into(), 3650)]);
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (standalone.clone(), "L1".into(), 200),
            (standalone.clone(), "L2".into(), 3450)
        ]
    );
    let log = w.sim.with(|s| s.faults.log.clone()).unwrap();
    let count = |what: &str| log.iter().filter(|l| l.as_str() == what).count();
    assert_eq!(count("POST /v1/invoices"), 2, "{log:?}");
    assert!(
        count(&format!("POST /v1/invoices/{standalone}/finalize")) >= 2,
        "{log:?}"
    );
    let charges = w
        .sim
        .with(|s| s.w.charges.values().filter(|c| c.amount == 3650).count())
        .unwrap();
    assert_eq!(charges, 1);
}

on_both_backends!(
    usage_lands_on_the_renewal_invoice_and_is_paid,
    a_late_close_bills_a_standalone_invoice,
    yearly_plan_bills_each_month_on_a_standalone_invoice,
    faults_never_bill_a_line_twice,
    a_push_killed_half_way_is_finished_once,
    two_processes_push_once,
    sync_dry_run_then_commit_bills_once,
    reconcile_finds_each_planted_discrepancy,
    standalone_faults_bill_once,
);
