//! Meter mode (`[catalog] stripe_usage = "meters"`), against the Stripe simulator with a test
//! clock, the real server, on SQLite and PostgreSQL: `tally stripe push` makes the meters and
//! metered prices; the same Magic Box Pro monthly scenario as `usage_push.rs` (350 compute hours,
//! EUR 180 of API spend) is reported as meter events and rated by Stripe on the renewal to the
//! same 235.50 as Tally's invoice; a resent event counts once; reconcile agrees.

#[macro_use]
mod common;

use std::time::Duration;

use common::usage_world::*;
use common::Db;
use serde_json::{json, Value};
use tally_server::service::{reconcile, usage_meters, usage_push};

fn meter_catalog() -> String {
    let src = include_str!("../../../catalogs/magicbox.toml");
    src.replace(
        "currency = \"eur\"\n",
        "currency = \"eur\"\nstripe_usage = \"meters\"\n",
    )
}

async fn stripe_rates_the_same_total(db: Db) {
    let catalog = meter_catalog();
    let Some(w) = world_with(
        db,
        &catalog,
        "magicbox_pro_monthly",
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    // The push made one meter per billed metric and a metered price per plan's monthly price.
    let (meters, metered) = w
        .sim
        .with(|s| {
            let mut m: Vec<(String, String)> =
                s.w.meters
                    .values()
                    .map(|m| (m.event_name.clone(), m.formula.clone()))
                    .collect();
            m.sort();
            let mut p: Vec<String> =
                s.w.prices
                    .values()
                    .filter(|p| p.is_metered())
                    .filter_map(|p| p.lookup_key.clone())
                    .collect();
            p.sort();
            (m, p)
        })
        .unwrap();
    assert_eq!(
        meters,
        vec![
            ("tally_magic_box_api_spend".to_owned(), "sum".to_owned()),
            ("tally_magic_box_compute_hours".to_owned(), "sum".to_owned())
        ]
    );
    assert_eq!(
        metered,
        vec![
            "magicbox_enterprise_monthly_api_spend",
            "magicbox_pro_monthly_api_spend",
            "magicbox_pro_monthly_compute_hours",
            "magicbox_starter_monthly_api_spend",
            "magicbox_starter_monthly_compute_hours",
        ]
    );
    // A second push finds everything in place.
    let parsed = tally_server::config::parse_catalog(&catalog, "magicbox.toml").unwrap();
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(w.sim.base_url()))
            .unwrap();
    let again = tally_stripe::push::push(&client, &parsed, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    assert_eq!(again.changes, vec![], "{again:?}");

    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T00:05:00Z")).await;
    let inv = w.close(at("2026-02-15T00:15:00Z")).await.remove(0);
    assert_eq!(inv.total, 23550);
    let renewal = w.renewal_at(at(PERIOD_END)).await;
    let renewal_id = renewal["id"].as_str().unwrap().to_owned();
    assert_eq!(renewal["status"], "draft");
    // Drafted at the period's end, before Tally reported anything: base only so far.
    assert_eq!(renewal["total"], 19900);

    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "sent");
    assert_eq!(push.renewal_invoice.as_deref(), Some(renewal_id.as_str()));
    assert_eq!((push.lines, push.amount), (2, 3650));
    // No invoice items: the usage went as meter events, in thousandths, timestamped in the period.
    assert_eq!(w.stripe_lines_of(&inv.id), vec![]);
    let events = w
        .sim
        .with(|s| {
            let mut v: Vec<(String, String, String, i64)> =
                s.w.meter_events
                    .iter()
                    .map(|e| {
                        (
                            e.identifier.clone(),
                            e.event_name.clone(),
                            e.value.to_string(),
                            e.timestamp,
                        )
                    })
                    .collect();
            v.sort();
            v
        })
        .unwrap();
    let end = at(PERIOD_END).timestamp();
    let start = at("2026-01-15T00:00:00Z").timestamp();
    assert_eq!(
        events,
        vec![
            (
                format!("tally:{CUSTOMER}:api_spend:{start}"),
                "tally_magic_box_api_spend".to_owned(),
                "180000".to_owned(),
                end - 1
            ),
            (
                format!("tally:{CUSTOMER}:compute_hours:{start}"),
                "tally_magic_box_compute_hours".to_owned(),
                "350000".to_owned(),
                end - 1
            ),
        ]
    );

    // A resent event (a rerun after the row was reset) is counted once.
    let sent = usage_meters::send(
        w.state().stripe.as_ref().unwrap(),
        &push,
        &usage_meters::meter_lines(&w.state().catalog, &inv, &usage_push::push_lines(&inv)),
    )
    .await
    .unwrap();
    assert_eq!(sent.0, 0);
    let raw = w
        .http
        .post(format!("{}/v1/billing/meter_events", w.sim.base_url()))
        .bearer_auth(SK)
        .form(&[
            ("event_name", "tally_magic_box_compute_hours"),
            ("payload[stripe_customer_id]", w.stripe_customer.as_str()),
            ("payload[value]", "350000"),
            ("timestamp", &(end - 1).to_string()),
            (
                "identifier",
                &format!("tally:{CUSTOMER}:compute_hours:{start}"),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_already_exists");
    assert_eq!(w.sim.with(|s| s.w.meter_events.len()).unwrap(), 2);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 0);

    // Stripe rates the meters at finalization, an hour after the period's end, and charges.
    w.advance_stripe(at("2026-02-15T01:30:00Z")).await;
    let paid = w.invoice(&renewal_id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["total"], 23550);
    assert_eq!(paid["amount_paid"], 23550);
    let mut amounts: Vec<(i64, Value)> = paid["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["amount"].as_i64().unwrap(), l["quantity"].clone()))
        .collect();
    amounts.sort_by_key(|a| a.0);
    assert_eq!(
        amounts,
        vec![
            (200, json!(350000)),
            (3450, json!(180000)),
            (19900, json!(1))
        ]
    );
    w.clock.set(at("2026-02-15T01:31:00Z"));
    w.deliver("invoice.paid").await;
    let shown = w.tally_invoice(&inv.id).await;
    assert_eq!(shown["total"], 23550);
    assert_eq!(shown["stripe"]["state"], "paid", "{shown}");
    assert_eq!(shown["stripe"]["invoice"], renewal_id.as_str());

    // Reconcile compares Stripe's metered lines with Tally's usage lines.
    let jan = reconcile::reconcile(w.state(), "2026-01").await.unwrap();
    assert_eq!(jan.discrepancies, vec![], "{jan:?}");
    assert_eq!(jan.invoices_checked, 1);
    let feb = reconcile::reconcile(w.state(), "2026-02").await.unwrap();
    assert_eq!(feb.discrepancies, vec![], "{feb:?}");
    let rev = serde_json::to_value(&feb.revenue).unwrap();
    assert_eq!(
        rev,
        json!([{"currency": "eur", "invoiced": 23550, "collected": 23550, "refunded": 0, "outstanding": 0}])
    );
}

/// Closed after Stripe finalized its renewal: meter events would no longer be billed on it, so
/// the usage goes on a standalone invoice as invoice items, rated by Tally; nothing is metered.
async fn a_late_close_falls_back_to_invoice_items(db: Db) {
    let catalog = meter_catalog();
    let Some(w) = world_with(
        db,
        &catalog,
        "magicbox_pro_monthly",
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    w.use_magic_box().await;
    w.advance_stripe(at("2026-02-15T02:00:00Z")).await;
    let inv = w.close(at("2026-02-15T02:10:00Z")).await.remove(0);
    assert_eq!(usage_push::round(w.state()).await.unwrap(), 1);
    let push = w.state().store.get_push(&inv.id).await.unwrap().unwrap();
    assert_eq!(push.state, "paid");
    assert_eq!(push.renewal_invoice, None);
    let standalone = push.standalone_invoice.clone().unwrap();
    assert_eq!(
        w.stripe_lines_of(&inv.id),
        vec![
            (standalone.clone(), "L1".into(), 200),
            (standalone.clone(), "L2".into(), 3450)
        ]
    );
    assert_eq!(w.sim.with(|s| s.w.meter_events.len()).unwrap(), 0);
    let renewal = w.renewal_at(at(PERIOD_END)).await;
    assert_eq!(renewal["total"], 19900);
}

/// The lookup keys of a subscription's items (or a schedule phase's), in order.
fn keys_of(items: &Value) -> Vec<(String, Value)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["price"]["lookup_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                i["quantity"].clone(),
            )
        })
        .collect()
}

/// Checkout sells the plan with its metered prices; an upgrade swaps them for the new plan's; a
/// downgrade's schedule carries the current ones, then the new plan's.
async fn subscriptions_carry_the_metered_prices(db: Db) {
    let catalog = meter_catalog();
    let Some(w) = world_with(
        db,
        &catalog,
        "magicbox_pro_monthly",
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let now = w.clock.now();
    w.state()
        .store
        .claim_stripe_customer(CUSTOMER, now)
        .await
        .unwrap();
    w.state()
        .store
        .set_stripe_customer(CUSTOMER, &w.stripe_customer, now)
        .await
        .unwrap();

    // A second customer's checkout: the base price and the plan's two metered prices.
    let (s, b) = w
        .app
        .put("/v1/customers/mb_2", json!({"email": "two@magicbox.test"}))
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{b}");
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": "mb_2", "plan": "pro", "interval": "month",
                "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{b}");
    let session = w.sim_get("/v1/checkout/sessions?limit=1").await;
    let id = session["data"][0]["id"].as_str().unwrap().to_owned();
    let items = w
        .sim_get(&format!(
            "/v1/checkout/sessions/{id}/line_items?expand[]=data.price"
        ))
        .await;
    let mut got: Vec<(String, Value)> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["price"]["lookup_key"].as_str().unwrap().to_owned(),
                l["quantity"].clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("magicbox_pro_monthly".to_owned(), json!(1)),
            // Metered lines carry no quantity (the session shows 0).
            ("magicbox_pro_monthly_api_spend".to_owned(), json!(0)),
            ("magicbox_pro_monthly_compute_hours".to_owned(), json!(0)),
        ]
    );

    // Upgrade to Enterprise: its base price and its one metered price (compute is unlimited).
    let (s, b) = w
        .app
        .post(
            &format!("/v1/customers/{CUSTOMER}/subscription/change"),
            json!({"plan": "enterprise", "interval": "month"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{b}");
    let sub = w
        .sim_get(&format!(
            "/v1/subscriptions/{}?expand[]=items.data.price",
            w.subscription
        ))
        .await;
    assert_eq!(
        keys_of(&sub["items"]["data"]),
        vec![
            ("magicbox_enterprise_monthly".to_owned(), json!(1)),
            (
                "magicbox_enterprise_monthly_api_spend".to_owned(),
                Value::Null
            ),
        ]
    );

    // Downgrade to Starter at the period end: a schedule whose next phase has Starter's prices.
    let (s, b) = w
        .app
        .post(
            &format!("/v1/customers/{CUSTOMER}/subscription/change"),
            json!({"plan": "starter", "interval": "month"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{b}");
    assert_eq!(b["pending_change"]["plan"], "starter", "{b}");
    let sub = w
        .sim_get(&format!("/v1/subscriptions/{}", w.subscription))
        .await;
    let sched = w
        .sim_get(&format!(
            "/v1/subscription_schedules/{}?expand[]=phases.items.price",
            sub["schedule"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        keys_of(&sched["phases"][0]["items"]),
        vec![
            ("magicbox_enterprise_monthly".to_owned(), json!(1)),
            (
                "magicbox_enterprise_monthly_api_spend".to_owned(),
                Value::Null
            ),
        ]
    );
    assert_eq!(
        keys_of(&sched["phases"][1]["items"]),
        vec![
            ("magicbox_starter_monthly".to_owned(), json!(1)),
            (
                "magicbox_starter_monthly_compute_hours".to_owned(),
                Value::Null
            ),
            ("magicbox_starter_monthly_api_spend".to_owned(), Value::Null),
        ]
    );
}

on_both_backends!(
    stripe_rates_the_same_total,
    a_late_close_falls_back_to_invoice_items,
    subscriptions_carry_the_metered_prices
);
