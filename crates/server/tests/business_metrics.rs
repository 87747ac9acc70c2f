//! `GET /v1/metrics/business` over a scripted history, on SQLite and PostgreSQL, with the real
//! server and the Stripe simulator: every figure is computed by hand below.
//!
//! Two months back ("S") local subscriptions go through new, upgrade, downgrade, churn,
//! reactivation and a forever coupon, and a closed invoice carries usage; this month ("M") Stripe
//! subscriptions start with trials — one converted, one canceled while trialing, one whose first
//! payment fails (overdue) — and a payment is partly refunded. Stripe's events are read from the
//! simulator and delivered to Tally signed, as Stripe delivers them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_server::service::closer;
use tally_store::clock::Clock;
use tally_store::InboxFilter;
use tally_stripe::{Client, EventFilter};

#[macro_use]
mod common;

use common::{app_on, App, Db};

const CATALOG: &str = r#"
[catalog]
name = "Metrics"
currency = "usd"
free_plan = "free"

[metrics.calls]
name = "Calls"
unit = "call"
aggregation = "count"
kind = "metered"

[plans.free]
name = "Free"

[plans.basic]
name = "Basic"
prices.month = { amount = "10.00", lookup_key = "m_basic_monthly" }
prices.year = { amount = "96.00", lookup_key = "m_basic_yearly" }

[plans.basic.metrics.calls]
included = "100"
overage = { model = "per_unit", unit_price = "0.05" }

[plans.pro]
name = "Pro"
trial_days = 14
prices.month = { amount = "30.00", lookup_key = "m_pro_monthly" }

[coupons.HALF]
name = "Half, forever"
percent_off = "50"
duration = "forever"
"#;

const SECRET: &str = "whsec_business_metrics";
const SK: &str = "sk_test_tally";

struct Env {
    app: App,
    sim: stripe_sim::SimHandle,
    stripe: Client,
    http: reqwest::Client,
    delivered: BTreeSet<String>,
}

fn month_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.with_day(1).unwrap().and_hms_opt(0, 0, 0).unwrap())
}

fn day(from: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    from + chrono::Duration::days(days)
}

impl Env {
    async fn at(&self, t: DateTime<Utc>) {
        self.app.server.state().clock.set(t);
    }

    async fn local(&self, customer: &str, plan: &str, interval: &str, coupon: Option<&str>) {
        let mut body = json!({"plan": plan, "interval": interval});
        if let Some(c) = coupon {
            body["coupon"] = json!(c);
        }
        let (s, b) = self
            .app
            .put(&format!("/v1/customers/{customer}/subscription"), body)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn customer(&self, id: &str) {
        let (s, b) = self
            .app
            .put(&format!("/v1/customers/{id}"), json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    async fn sim(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url()))
            .bearer_auth(SK)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A Tally customer and its Stripe customer, subscribed to Pro with its trial, paying with
    /// `pm`. Returns the subscription id.
    async fn stripe_trial(&self, id: &str, pm: &str, clock: &str) -> String {
        self.customer(id).await;
        let cus = self
            .sim(
                reqwest::Method::POST,
                "/v1/customers",
                &[
                    ("email", &format!("{id}@example.com")),
                    ("metadata[tally_customer_id]", id),
                    ("payment_method", pm),
                    ("test_clock", clock),
                ],
            )
            .await;
        let cus_id = cus["id"].as_str().unwrap();
        let pms = self
            .sim(
                reqwest::Method::GET,
                &format!("/v1/customers/{cus_id}/payment_methods"),
                &[],
            )
            .await;
        let pm = pms["data"][0]["id"].as_str().unwrap().to_owned();
        let price = self
            .stripe
            .prices_by_lookup_keys(&["m_pro_monthly".to_owned()])
            .await
            .unwrap()[0]
            .id
            .clone();
        let sub = self
            .sim(
                reqwest::Method::POST,
                "/v1/subscriptions",
                &[
                    ("customer", cus["id"].as_str().unwrap()),
                    ("items[0][price]", &price),
                    ("trial_period_days", "14"),
                    ("default_payment_method", &pm),
                    ("metadata[tally_customer_id]", id),
                ],
            )
            .await;
        assert_eq!(sub["status"], "trialing", "{sub}");
        sub["id"].as_str().unwrap().to_owned()
    }

    /// Delivers every simulator event not delivered yet, signed, oldest first, and waits until
    /// Tally has processed them.
    async fn deliver(&mut self) {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stripe
                .raw_events(&EventFilter {
                    starting_after: after.clone(),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .unwrap()
                .value;
            after = page.data.last().map(|e| e.id.clone());
            all.extend(page.data);
            if !page.has_more {
                break;
            }
        }
        all.reverse();
        for e in all {
            if !self.delivered.insert(e.id.clone()) {
                continue;
            }
            let t = chrono::Utc::now().timestamp();
            let r = self
                .app
                .http
                .post(self.app.url("/webhooks/stripe"))
                .header("content-type", "application/json")
                .header(
                    "Stripe-Signature",
                    stripe_sim::webhooks::signature_header(SECRET, t, e.body.as_bytes()),
                )
                .body(e.body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{}", e.body);
        }
        let store = &self.app.server.state().store;
        let start = Instant::now();
        loop {
            let inbox = store
                .inbox_list(InboxFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if inbox.iter().all(|e| e.status != "pending") {
                let parked: Vec<_> = inbox
                    .iter()
                    .filter(|e| e.status == "parked")
                    .map(|e| (&e.event_type, &e.last_error))
                    .collect();
                assert!(parked.is_empty(), "{parked:?}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "inbox not settled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self, month: &str) -> Value {
        let (s, b) = self
            .app
            .get(&format!("/v1/metrics/business?month={month}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["month"], month, "{b}");
        assert_eq!(b["currencies"].as_array().unwrap().len(), 1, "{b}");
        assert_eq!(b["currencies"][0]["currency"], "usd", "{b}");
        b["currencies"][0].clone()
    }
}

async fn scripted_history(db: Db) {
    let today = Utc::now().date_naive();
    let m = month_start(today);
    let s = month_start(today.checked_sub_months(Months::new(2)).unwrap());
    let b = month_start(today.checked_sub_months(Months::new(3)).unwrap());
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let catalog = parse_catalog(CATALOG, "metrics.toml").unwrap();
    let stripe = Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, Utc::now().timestamp())
        .await
        .unwrap();
    let Some(app) = app_on(db, |c| {
        c.catalog = Arc::new(catalog);
        c.clock = Clock::frozen(b);
        c.grace = Duration::from_secs(3600);
        c.close_every = Duration::from_secs(3600);
        c.stripe_webhook_secrets = vec![SECRET.into()];
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
    })
    .await
    else {
        return;
    };
    let mut env = Env {
        app,
        sim,
        stripe,
        http: reqwest::Client::new(),
        delivered: BTreeSet::new(),
    };

    // B, the month before S: d (with usage), a and b start on Basic monthly (1,000 each).
    env.at(day(b, 1)).await;
    env.customer("d").await;
    env.local("d", "basic", "month", None).await;
    env.at(day(b, 2)).await;
    for c in ["a", "b"] {
        env.customer(c).await;
        env.local(c, "basic", "month", None).await;
    }
    // 150 calls in d's first period: 50 over the 100 included, at $0.05 = 250.
    env.at(day(b, 10)).await;
    let events: Vec<Value> = (0..150)
        .map(|i| json!({"id": format!("call-{i}"), "customer": "d", "metric": "calls", "value": 1}))
        .collect();
    let (st, body) = env.app.post("/v1/events", json!({"events": events})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 150, "{body}");

    // S. d's first period ([B+1d, S+1d)) closes: its invoice (written in S) has the usage line.
    let close = day(s, 1) + chrono::Duration::hours(2);
    env.at(close).await;
    let written = closer::close_due(env.app.server.state(), close)
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].customer_id, "d");
    assert_eq!(written[0].total, 1250);
    env.at(day(s, 3)).await;
    env.local("a", "pro", "month", None).await; // expansion 1,000 → 3,000
    env.at(day(s, 4)).await;
    env.local("b", "free", "month", None).await; // churn 1,000
    env.at(day(s, 5)).await;
    env.local("a", "basic", "year", None).await; // contraction 3,000 → 800 (9,600 / 12)
    env.at(day(s, 6)).await;
    env.local("b", "basic", "month", None).await; // reactivation 1,000
    env.at(day(s, 7)).await;
    env.customer("c").await;
    env.local("c", "pro", "month", Some("HALF")).await; // new 1,500 (forever 50 % off)
    env.at(day(s, 8)).await;
    env.customer("e").await;
    env.local("e", "basic", "month", None).await; // new 1,000
    env.at(day(s, 9)).await;
    env.local("e", "free", "month", None).await; // churn 1,000

    // The history API answers each change once, in order.
    let history = env
        .app
        .server
        .state()
        .store
        .subscription_history(Some("a"))
        .await
        .unwrap();
    let plans: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.plan.as_str(), h.interval.as_str()))
        .collect();
    assert_eq!(
        plans,
        [("basic", "month"), ("pro", "month"), ("basic", "year")]
    );
    let history_c = env
        .app
        .server
        .state()
        .store
        .subscription_history(Some("c"))
        .await
        .unwrap();
    assert_eq!(history_c.len(), 1);
    assert_eq!(history_c[0].coupon.as_deref(), Some("HALF"));

    let label = |t: DateTime<Utc>| t.format("%Y-%m").to_string();
    // Read from now, S is a complete month.
    env.at(Utc::now()).await;
    let x = env.metrics(&label(s)).await;
    // start: a 1,000 + b 1,000 + d 1,000. end: a 800 + b 1,000 + c 1,500 + d 1,000.
    assert_eq!(
        x["mrr_movements"],
        json!({"start": 3000, "new": 2500, "reactivation": 1000, "expansion": 2000,
               "contraction": 2200, "churn": 2000, "end": 4300})
    );
    assert_eq!(
        x["subscribers"],
        json!({"start": 3, "end": 4, "gained": 3, "churned": 2})
    );
    assert_eq!(x["committed_mrr"], 4300);
    assert_eq!(x["churned_revenue"], 4200);
    assert_eq!(x["gross_mrr_churn_rate"], "1.4"); // 4,200 / 3,000
                                                  // The 30 days up to S's end hold every change of S: 2 churned of 3 + 3.
    assert_eq!(x["subscriber_churn_rate"], "0.333333");
    assert_eq!(x["arpu"], 1075); // 4,300 / 4
    assert_eq!(x["ltv"], 3225); // 1,075 / 0.333333
    assert_eq!(x["usage_run_rate"], 250);
    assert_eq!(x["usage_by_metric"], json!({"calls": 250}));
    assert_eq!(x["usage_run_rate_month"], label(s));
    assert_eq!(x["total_recurring_run_rate"], 4550);
    assert_eq!(x["trial_conversion_rate"], Value::Null);
    assert_eq!(x["trials_converted"], 0);
    assert_eq!(x["trials_canceled"], 0);
    assert_eq!(x["gross_revenue"], 0);
    assert_eq!(x["overdue_balance"], 0);
    assert_eq!(x["failed_payments"], json!({"count": 0, "amount": 0}));
    assert_eq!(x["failing_invoices"], json!([]));

    // M: three Stripe trials of Pro (3,000), on a test clock that starts within M (3 hours ago,
    // or just after M began) so that Stripe's hour-long invoice drafts can be moved past.
    let t0 = (Utc::now() - chrono::Duration::hours(3)).max(m + chrono::Duration::minutes(1));
    let clock = env
        .sim(
            reqwest::Method::POST,
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &t0.timestamp().to_string())],
        )
        .await;
    let clock = clock["id"].as_str().unwrap().to_owned();
    let t1 = env.stripe_trial("t1", "pm_card_visa", &clock).await;
    let t2 = env.stripe_trial("t2", "pm_card_visa", &clock).await;
    let f = env
        .stripe_trial("f", "pm_card_chargeCustomerFail", &clock)
        .await;
    env.deliver().await;
    for (sub, form) in [(&t1, "now"), (&f, "now")] {
        env.sim(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{sub}"),
            &[("trial_end", form)],
        )
        .await;
    }
    env.sim(
        reqwest::Method::DELETE,
        &format!("/v1/subscriptions/{t2}"),
        &[],
    )
    .await;
    // Past the draft hour: the first invoices are finalized and charged.
    let t1_paid = t0 + chrono::Duration::hours(2);
    env.sim(
        reqwest::Method::POST,
        &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
        &[("frozen_time", &t1_paid.timestamp().to_string())],
    )
    .await;
    env.deliver().await;
    // t1's payment of 3,000, refunded in part (1,000).
    let charges = env.sim(reqwest::Method::GET, "/v1/charges", &[]).await;
    let paid: Vec<&Value> = charges["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "succeeded" && c["amount"] == 3000)
        .collect();
    assert_eq!(paid.len(), 1, "{charges}");
    env.sim(
        reqwest::Method::POST,
        "/v1/refunds",
        &[
            ("charge", paid[0]["id"].as_str().unwrap()),
            ("amount", "1000"),
        ],
    )
    .await;
    env.deliver().await;
    let statuses: Vec<String> = {
        let mut v = Vec::new();
        for c in ["t1", "t2", "f"] {
            let sub = env
                .app
                .server
                .state()
                .store
                .get_subscription(c)
                .await
                .unwrap();
            v.push(sub.map(|s| s.status).unwrap_or_default());
        }
        v
    };
    assert_eq!(statuses, ["active", "canceled", "past_due"]);

    env.at(Utc::now().max(t1_paid + chrono::Duration::seconds(1)))
        .await;
    let x = env.metrics(&label(m)).await;
    // t1 and f pay 3,000 each from now (past due still counts); t2 never paid.
    assert_eq!(
        x["mrr_movements"],
        json!({"start": 4300, "new": 6000, "reactivation": 0, "expansion": 0,
               "contraction": 0, "churn": 0, "end": 10300})
    );
    assert_eq!(
        x["subscribers"],
        json!({"start": 4, "end": 6, "gained": 2, "churned": 0})
    );
    assert_eq!(x["committed_mrr"], 10300);
    assert_eq!(x["churned_revenue"], 0);
    assert_eq!(x["gross_mrr_churn_rate"], "0");
    assert_eq!(x["subscriber_churn_rate"], "0");
    assert_eq!(x["arpu"], 1717); // 10,300 / 6 = 1,716.67
    assert_eq!(x["ltv"], Value::Null); // no churn: n/a
                                       // t1 converted, t2 canceled while trialing; f's first payment failed (neither).
    assert_eq!(x["trial_conversion_rate"], "0.5");
    assert_eq!(x["trials_converted"], 1);
    assert_eq!(x["trials_canceled"], 1);
    // Invoices of the month: t1's 3,000 (paid) and f's 3,000 (failed), minus the refund. Each
    // trial start also finalized a 0 invoice that Stripe marked paid: 4 paid invoices.
    assert_eq!(x["gross_revenue"], 5000);
    assert_eq!(
        x["collection"],
        json!({"pending": {"count": 0, "amount": 0},
               "succeeded": {"count": 4, "amount": 3000},
               "failed": {"count": 1, "amount": 3000}})
    );
    assert_eq!(x["failed_payments"], json!({"count": 1, "amount": 3000}));
    assert_eq!(x["overdue_balance"], 3000);
    assert_eq!(x["failing_invoices"].as_array().unwrap().len(), 1);
    assert_eq!(x["failing_invoices"][0]["customer"], "f");
    assert_eq!(x["failing_invoices"][0]["amount_due"], 3000);
    // No invoice closed this month or last: the run-rate adds last month's usage, 0.
    assert_eq!(x["usage_run_rate"], 0);
    assert_eq!(
        x["usage_run_rate_month"],
        label(month_start(
            today.checked_sub_months(Months::new(1)).unwrap()
        ))
    );
    assert_eq!(x["total_recurring_run_rate"], 10300);

    // A `send_invoice` invoice of 2,000 to t1, due a day after its creation, finalized and
    // never attempted; and one of 500, finalized and voided.
    let cus_t1 = env
        .sim(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{t1}"),
            &[],
        )
        .await["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sent = Vec::new();
    for amount in ["2000", "500"] {
        env.sim(
            reqwest::Method::POST,
            "/v1/invoiceitems",
            &[
                ("customer", &cus_t1),
                ("amount", amount),
                ("currency", "usd"),
            ],
        )
        .await;
        let inv = env
            .sim(
                reqwest::Method::POST,
                "/v1/invoices",
                &[
                    ("customer", &cus_t1),
                    ("collection_method", "send_invoice"),
                    ("days_until_due", "1"),
                    ("pending_invoice_items_behavior", "include"),
                ],
            )
            .await;
        let id = inv["id"].as_str().unwrap().to_owned();
        let fin = env
            .sim(
                reqwest::Method::POST,
                &format!("/v1/invoices/{id}/finalize"),
                &[],
            )
            .await;
        assert_eq!(fin["status"], "open", "{fin}");
        assert_eq!(fin["attempt_count"], 0, "{fin}");
        sent.push((id, fin["due_date"].as_i64().unwrap()));
    }
    env.sim(
        reqwest::Method::POST,
        &format!("/v1/invoices/{}/void", sent[1].0),
        &[],
    )
    .await;
    env.deliver().await;
    let due = Utc.timestamp_opt(sent[0].1, 0).unwrap();
    assert_eq!(sent[0].1, t1_paid.timestamp() + 86_400);
    // Not due yet: still only f's failed invoice is overdue.
    env.at(due - chrono::Duration::minutes(1)).await;
    let x = env
        .metrics(&label(due - chrono::Duration::minutes(1)))
        .await;
    assert_eq!(x["overdue_balance"], 3000);
    // Past its due date the open invoice is overdue (no attempt needed); the voided one never.
    let past = due + chrono::Duration::minutes(1);
    env.at(past).await;
    let x = env.metrics(&label(past)).await;
    assert_eq!(x["overdue_balance"], 5000);
    assert_eq!(x["failing_invoices"].as_array().unwrap().len(), 1);
    if label(past) == label(m) {
        // Finalized in M: 5,000 as before + 2,000; the voided 500 is not revenue.
        assert_eq!(x["gross_revenue"], 7000);
        assert_eq!(
            x["collection"],
            json!({"pending": {"count": 1, "amount": 2000},
                   "succeeded": {"count": 4, "amount": 3000},
                   "failed": {"count": 1, "amount": 3000}})
        );
    }

    // A malformed month is refused.
    let (st, body) = env.app.get("/v1/metrics/business?month=2026-13").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_month");
    env.app.server.shutdown().await.unwrap();
}

on_both_backends!(scripted_history);
