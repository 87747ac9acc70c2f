//! DevFlowHub / "Module 6" end to end, on SQLite and PostgreSQL: the real server with
//! `--stripe-test-clocks` and a frozen clock, the Stripe simulator delivering its webhooks, and
//! only what a browser and an operator do from the outside — the hosted checkout page, Tally's
//! plan-change routes, the portal page's cancel form, and `POST /v1/clock/advance`.
//!
//! Monthly → yearly (invoiced at once), an upgrade mid-period prorated by Stripe (exact amounts
//! from the simulator's invoice), a downgrade scheduled for the period end and applied at the
//! renewal, a cancellation at period end through the portal page, then the clock advanced past
//! the renewal: canceled, and the free plan's entitlements.

#[macro_use]
mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::stripe_world::{stripe_world, StripeWorld, SK};
use common::{app_on, App, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_store::clock::Clock;

const CATALOG: &str = include_str!("../../../catalogs/devflowhub.toml");

type World = StripeWorld;

/// Tally's time at the start: fixed, so the proration amounts are exact.
fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
}

async fn world(db: Db) -> Option<World> {
    let w = stripe_world(db, Default::default(), CATALOG, t0(), |c| {
        c.stripe.success_url = Some("https://devflowhub.test/ok".into());
        c.stripe.cancel_url = Some("https://devflowhub.test/pricing".into());
        c.stripe.portal_return_url = Some("https://devflowhub.test/account".into());
    })
    .await?;
    Some(w)
}

/// A simulator invoice: its lines (amount, proration), total and status.
type UpdateInvoice = (Vec<(i64, bool)>, i64, String);

/// Stripe's rounding of a proration: half away from zero.
fn prorate(full: i64, num: i64, den: i64) -> i64 {
    let (f, n, d) = (i128::from(full), i128::from(num), i128::from(den));
    i64::try_from((2 * f * n + d) / (2 * d)).unwrap()
}

impl World {
    async fn change(&self, customer: &str, plan: &str, interval: &str) -> Value {
        let (s, b) = self
            .app
            .post(
                &format!("/v1/customers/{customer}/subscription/change"),
                json!({"plan": plan, "interval": interval}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    /// The lines of the simulator's `subscription_update` invoices, newest last.
    fn update_invoices(&self, sub: &str) -> Vec<UpdateInvoice> {
        self.sim
            .with(|s| {
                let mut v: Vec<_> =
                    s.w.invoices
                        .values()
                        .filter(|i| {
                            i.subscription.as_deref() == Some(sub)
                                && i.billing_reason == "subscription_update"
                        })
                        .map(|i| {
                            (
                                i.seq,
                                i.lines.iter().map(|l| (l.amount, l.proration)).collect(),
                                i.total(),
                                i.status.clone(),
                            )
                        })
                        .collect();
                v.sort_by_key(|x| x.0);
                v.into_iter().map(|(_, a, b, c)| (a, b, c)).collect()
            })
            .unwrap()
    }

    async fn allowed(&self, customer: &str, feature: &str) -> bool {
        let (s, b) = self
            .app
            .post(
                "/v1/entitlements/check",
                json!({"customer": customer, "feature": feature}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["allowed"].as_bool().unwrap()
    }
}

async fn module6(db: Db) {
    let Some(w) = world(db).await else {
        return;
    };
    let c = "dev1";
    let (s, b) = w
        .app
        .put(
            &format!("/v1/customers/{c}"),
            json!({"email": "dev1@devflowhub.test", "name": "Dev One"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Starter monthly through the hosted checkout page, as a browser posts it.
    let (s, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": c, "plan": "starter", "interval": "month"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let url = b["url"].as_str().unwrap().to_owned();
    // The Stripe customer lives on its own test clock, made at Tally's time.
    let (clocks, on_clock) = w
        .sim
        .with(|s| {
            let clocks: Vec<(String, Option<String>, i64)> =
                s.w.test_clocks
                    .values()
                    .map(|k| (k.id.clone(), k.name.clone(), k.frozen_time))
                    .collect();
            let cus: Vec<Option<String>> =
                s.w.customers
                    .values()
                    .map(|x| x.test_clock.clone())
                    .collect();
            (clocks, cus)
        })
        .unwrap();
    assert_eq!(clocks.len(), 1, "{clocks:?}");
    assert_eq!(clocks[0].1.as_deref(), Some("tally:dev1"));
    assert_eq!(clocks[0].2, t0().timestamp());
    assert_eq!(on_clock, vec![Some(clocks[0].0.clone())]);
    let r = w
        .browser
        .post(&url)
        .form(&[
            ("email", "dev1@devflowhub.test"),
            ("name", "Dev One"),
            ("card_number", "4242 4242 4242 4242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sub = w
        .subscription_until(c, |b| b["plan"] == "starter" && b["status"] == "active")
        .await;
    assert_eq!(sub["interval"], "month");
    let sub_id = sub["stripe"]["subscription"].as_str().unwrap().to_owned();
    assert!(w.allowed(c, "core_agents").await);
    assert!(!w.allowed(c, "advanced_agents").await);

    // Monthly → yearly at once: the whole unused month credited, a new yearly cycle invoiced.
    let b = w.change(c, "starter", "year").await;
    assert_eq!(
        (b["plan"].as_str(), b["interval"].as_str()),
        (Some("starter"), Some("year"))
    );
    assert_eq!(b["pending_change"], Value::Null);
    let inv = w.update_invoices(&sub_id);
    assert_eq!(inv.len(), 1, "{inv:?}");
    let mut lines = inv[0].0.clone();
    lines.sort();
    assert_eq!(lines, vec![(-3000, true), (29880, false)]);
    assert_eq!((inv[0].1, inv[0].2.as_str()), (26880, "paid"));
    w.subscription_until(c, |b| b["interval"] == "year").await;

    // A month later: the upgrade to Pro yearly is prorated by the second over the year left.
    let moved = w.advance("1M").await;
    let t1 = Utc.with_ymd_and_hms(2026, 2, 15, 10, 0, 0).unwrap();
    assert_eq!(moved["now"], json!(t1));
    assert_eq!(moved["stripe_test_clocks"], 1);
    let clock_time = w
        .sim
        .with(|s| s.w.test_clocks.values().next().unwrap().frozen_time)
        .unwrap();
    assert_eq!(clock_time, t1.timestamp());
    let b = w.change(c, "pro", "year").await;
    assert_eq!(
        (b["plan"].as_str(), b["interval"].as_str()),
        (Some("pro"), Some("year"))
    );
    let year_end = Utc.with_ymd_and_hms(2027, 1, 15, 10, 0, 0).unwrap();
    let (left, whole) = (
        (year_end - t1).num_seconds(),
        (year_end - t0()).num_seconds(),
    );
    let credit = -prorate(29880, left, whole);
    let charge = prorate(59760, left, whole);
    assert_eq!((credit, charge), (-27342, 54684));
    let inv = w.update_invoices(&sub_id);
    assert_eq!(inv.len(), 2, "{inv:?}");
    let mut lines = inv[1].0.clone();
    lines.sort();
    assert_eq!(lines, vec![(credit, true), (charge, true)]);
    assert_eq!((inv[1].1, inv[1].2.as_str()), (27342, "paid"));
    w.subscription_until(c, |b| b["plan"] == "pro").await;
    assert!(w.allowed(c, "advanced_agents").await);

    // Down to Starter monthly: at the period end; Pro stays until then.
    let b = w.change(c, "starter", "month").await;
    let pending = json!({"plan": "starter", "interval": "month", "effective_at": year_end});
    assert_eq!(b["plan"], "pro");
    assert_eq!(b["pending_change"], pending);
    assert_eq!(b["pending_cancellation"], Value::Null);
    let sub = w
        .subscription_until(c, |b| b["stripe"]["pending_change"] == pending)
        .await;
    assert_eq!(sub["plan"], "pro");
    let (s, billing) = w.app.get(&format!("/v1/customers/{c}/billing")).await;
    assert_eq!(s, StatusCode::OK, "{billing}");
    assert_eq!(billing["subscription"]["stripe"]["pending_change"], pending);
    assert!(w.allowed(c, "advanced_agents").await);

    // Past the renewal: Starter monthly from the period end, billed at its price.
    let moved = w.advance("11M").await;
    assert_eq!(moved["now"], json!(year_end));
    let sub = w
        .subscription_until(c, |b| b["plan"] == "starter" && b["interval"] == "month")
        .await;
    assert_eq!(sub["stripe"]["pending_change"], Value::Null);
    assert!(!w.allowed(c, "advanced_agents").await);
    let (renewal, schedule) = w
        .sim
        .with(|s| {
            let x = &s.w.subscriptions[&sub_id];
            let inv = x.latest_invoice.clone().unwrap();
            let i = &s.w.invoices[&inv];
            ((i.billing_reason.clone(), i.total()), x.schedule.clone())
        })
        .unwrap();
    assert_eq!(renewal, ("subscription_cycle".to_owned(), 3000));
    // The schedule's last phase began: Tally released it, so the portal may cancel.
    assert_eq!(schedule, None);

    // Cancel at period end through the portal page, as a browser posts its form.
    let (s, b) = w
        .app
        .post("/v1/portal-sessions", json!({"customer": c}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let portal = b["url"].as_str().unwrap().to_owned();
    let page = w.browser.get(&portal).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let action = html
        .split("action=\"")
        .skip(1)
        .filter_map(|x| x.split('"').next())
        .find(|a| a.ends_with("/cancel"))
        .unwrap_or_else(|| panic!("no cancel form: {html}"))
        .to_owned();
    let r = w
        .browser
        .post(format!("{}{action}", w.sim.base_url()))
        .form(&[("subscription", sub_id.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let next_end = Utc.with_ymd_and_hms(2027, 2, 15, 10, 0, 0).unwrap();
    let sub = w
        .subscription_until(c, |b| b["stripe"]["cancel_at_period_end"] == true)
        .await;
    assert_eq!(
        sub["stripe"]["pending_cancellation"],
        json!({"effective_at": next_end})
    );
    assert!(w.allowed(c, "core_agents").await);

    // Past the renewal: canceled, and the free plan's entitlements.
    let moved = w.advance("1M").await;
    assert_eq!(moved["now"], json!(next_end));
    w.subscription_until(c, |b| b["status"] == "canceled").await;
    assert!(!w.allowed(c, "core_agents").await);
    assert!(w.allowed(c, "community_support").await);
    let status = w
        .sim
        .with(|s| s.w.subscriptions[&sub_id].status.clone())
        .unwrap();
    assert_eq!(status, "canceled");

    // Every payment recorded once: the first month, the yearly switch, the upgrade, the renewal.
    let (_, txns) = w.app.get(&format!("/v1/customers/{c}/transactions")).await;
    let mut paid: Vec<i64> = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "subscription_payment")
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    paid.sort();
    assert_eq!(paid, vec![3000, 3000, 26880, 27342]);
}

/// An upgrade whose prorated invoice cannot be paid leaves the old plan in force: Stripe keeps
/// the change as `pending_update`, Tally answers 402 and its mirror stays on the old plan.
async fn failed_upgrade_payment_keeps_the_old_plan(db: Db) {
    let Some(w) = world(db).await else {
        return;
    };
    let c = "dev2";
    let (s, b) = w.app.put(&format!("/v1/customers/{c}"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, b) = w
        .app
        .post(
            "/v1/checkout-sessions",
            json!({"customer": c, "plan": "starter", "interval": "month"}),
        )
        .await;
    let url = b["url"].as_str().unwrap().to_owned();
    let r = w
        .browser
        .post(&url)
        .form(&[
            ("email", "dev2@devflowhub.test"),
            ("name", "Dev Two"),
            ("card_number", "4242424242424242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sub = w
        .subscription_until(c, |b| b["plan"] == "starter" && b["status"] == "active")
        .await;
    let sub_id = sub["stripe"]["subscription"].as_str().unwrap().to_owned();
    let cus = sub["stripe"]["customer"].as_str().unwrap().to_owned();
    // The customer's card now declines every charge (4000 0000 0000 0341).
    let sim = |path: String, form: Vec<(&'static str, String)>| {
        let http = w.browser.clone();
        let url = format!("{}{path}", w.sim.base_url());
        async move {
            let r = http
                .post(url)
                .bearer_auth(SK)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.json::<Value>().await.unwrap()
        }
    };
    let pm = sim(
        "/v1/payment_methods/pm_card_chargeCustomerFail/attach".into(),
        vec![("customer", cus)],
    )
    .await;
    sim(
        format!("/v1/subscriptions/{sub_id}"),
        vec![(
            "default_payment_method",
            pm["id"].as_str().unwrap().to_owned(),
        )],
    )
    .await;
    let (s, b) = w
        .app
        .post(
            &format!("/v1/customers/{c}/subscription/change"),
            json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{b}");
    assert_eq!(b["error"]["code"], "upgrade_payment_failed");
    let starter = w
        .sim
        .with(|s| {
            s.w.prices
                .values()
                .find(|p| p.lookup_key.as_deref() == Some("devflowhub_starter_monthly"))
                .unwrap()
                .id
                .clone()
        })
        .unwrap();
    let (price, pending, status, inv_status) = w
        .sim
        .with(|s| {
            let x = &s.w.subscriptions[&sub_id];
            let inv = x.latest_invoice.clone().unwrap();
            (
                x.items[0].price.clone(),
                x.pending_update
                    .as_ref()
                    .map(|p| p.after.items[0].price.clone()),
                x.status.clone(),
                s.w.invoices[&inv].status.clone(),
            )
        })
        .unwrap();
    assert_eq!(price, starter);
    assert!(pending.is_some_and(|p| p != starter));
    assert_eq!((status.as_str(), inv_status.as_str()), ("active", "open"));
    // Tally's mirror stays on Starter and active; a second try waits for the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sub = w.subscription_until(c, |_| true).await;
    assert_eq!(
        (&sub["plan"], &sub["status"]),
        (&json!("starter"), &json!("active"))
    );
    assert!(!w.allowed(c, "advanced_agents").await);
    let (s, b) = w
        .app
        .post(
            &format!("/v1/customers/{c}/subscription/change"),
            json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "plan_change_pending_payment");
}

/// The clock is not movable unless the server is started so: 409, and nothing moves.
async fn advance_refused_on_the_system_clock(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    let (s, b) = app.post("/v1/clock/advance", json!({"by": "1M"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "clock_not_movable");
}

/// The offset survives a restart: a second server on the same database starts where the first
/// was moved to.
async fn offset_persists_across_restarts(db: Db) {
    let Some(app) = app_on(db, |c| {
        c.movable_clock = true;
        c.clock = Clock::frozen(t0());
    })
    .await
    else {
        return;
    };
    let (s, b) = app.post("/v1/clock/advance", json!({"by": "7d"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["now"], json!(t0() + chrono::Duration::days(7)));
    assert_eq!(b["offset_seconds"], 7 * 86_400);
    let (s, b) = app.post("/v1/clock/advance", json!({"by": "1.5d"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "invalid_duration");
    let url = app.server.state().config.database_url.clone();
    let App { server, _dir, .. } = app;
    server.shutdown().await.unwrap();
    let again = common::app_on_url(url, _dir, |c| {
        c.movable_clock = true;
        c.clock = Clock::frozen(t0());
    })
    .await;
    assert_eq!(
        again.server.state().clock.now(),
        t0() + chrono::Duration::days(7)
    );
}

on_both_backends!(
    module6,
    failed_upgrade_payment_keeps_the_old_plan,
    advance_refused_on_the_system_clock,
    offset_persists_across_restarts
);
