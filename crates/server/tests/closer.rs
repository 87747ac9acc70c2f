//! The period closer on both backends: subscribed customers, and customers without a subscription,
//! who are billed on the catalog's free plan.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_core::catalog::Catalog;
use tally_core::period::{allowance_period, Period};
use tally_server::config::parse_catalog;
use tally_server::service::closer;
use tally_store::{CustomerUpsert, StoredInvoice, SubscriptionUpsert};

#[macro_use]
mod common;

use common::{app_on, App, Db};

on_both_backends!(
    free_customers_are_invoiced_once_per_period_and_late_usage_is_adjusted,
    a_customer_created_mid_period_is_first_invoiced_for_the_period_it_was_created_in,
    free_periods_without_charges_are_invoiced_at_zero_and_no_free_plan_invoices_nothing,
    periods_before_a_subscription_are_billed_on_the_free_plan,
    every_customer_is_closed_once_across_pages_and_concurrent_closers,
    a_customer_that_cannot_be_rated_is_counted_and_skipped,
);

/// A free plan that charges overage and passes API spend through, beside a paid plan.
const CHARGING_FREE_PLAN: &str = r#"
[catalog]
name = "Closer test"
currency = "eur"

[metrics.compute_hours]
name = "Compute hours"
unit = "hour"
aggregation = "sum"
kind = "metered"

[metrics.api_spend]
name = "API spend"
unit = "eur"
aggregation = "sum"
kind = "metered"

[plans.free]
name = "Free"

[plans.free.metrics.compute_hours]
included = "10"
overage = { model = "per_unit", unit_price = "0.25" }

[plans.free.metrics.api_spend]
included = "0"
overage = { model = "pass_through", markup_percent = "20" }

[plans.pro]
name = "Pro"
prices.month = { amount = "20.00", lookup_key = "closer_test_pro_monthly" }

[plans.pro.metrics.compute_hours]
included = "100"
overage = { model = "per_unit", unit_price = "0.10" }
"#;

/// [`CHARGING_FREE_PLAN`] with `free` as its free plan. The catalog check refuses a free plan that
/// charges (the plan a canceled subscription falls back to must not bill), so it is set after the
/// check: the closer's rating of customers without a subscription then shows in the amounts.
fn charging_free_catalog() -> Catalog {
    let mut catalog = parse_catalog(CHARGING_FREE_PLAN, "closer-test.toml").unwrap();
    assert!(catalog.plan("free").is_some());
    catalog.free_plan = Some("free".into());
    catalog
}

/// The app on `db` with `catalog`, a one-hour grace window, and the background closer ticking
/// too rarely to race the test's own [`closer::close_due`] calls.
async fn app_with_catalog(db: Db, catalog: Option<Catalog>) -> Option<App> {
    app_on(db, move |c| {
        if let Some(catalog) = catalog {
            c.catalog = std::sync::Arc::new(catalog);
        }
        c.grace = std::time::Duration::from_secs(3600);
        c.close_every = std::time::Duration::from_secs(3600);
    })
    .await
}

/// Whole seconds `ago` before now. Customers are created at such instants: the server closes due
/// periods once when it starts, so a customer whose first period already ended could be closed
/// by that run instead of the test's; and the usage events sent must not be in the future.
fn ago(ago: Duration) -> DateTime<Utc> {
    let t = Utc::now() - ago;
    Utc.timestamp_opt(t.timestamp(), 0).unwrap()
}

/// The allowance period `n` periods after the one starting at `anchor` (n = 0 is the first).
fn nth_period(anchor: DateTime<Utc>, n: usize) -> Period {
    let mut p = allowance_period(anchor, anchor);
    for _ in 0..n {
        p = allowance_period(anchor, p.end);
    }
    p
}

impl App {
    /// A customer created (and so anchored) at `at`, written straight to the store so that it can
    /// be in the past.
    async fn customer_at(&self, id: &str, at: DateTime<Utc>) {
        let (c, created) = self
            .server
            .state()
            .store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: id.into(),
                email: None,
                name: None,
                metadata: None,
                now: at,
            })
            .await
            .unwrap();
        assert!(created);
        assert_eq!(c.billing_anchor, at);
    }

    async fn subscribe_at(&self, id: &str, plan: &str, at: DateTime<Utc>) {
        self.server
            .state()
            .store
            .put_subscription(SubscriptionUpsert {
                customer_id: id.into(),
                plan: plan.into(),
                interval: "month".into(),
                status: "active".into(),
                source: "local".into(),
                now: at,
            })
            .await
            .unwrap();
    }

    /// Sends one usage event through the API.
    async fn usage_at(
        &self,
        id: &str,
        customer: &str,
        metric: &str,
        value: &str,
        at: DateTime<Utc>,
    ) {
        let body = json!({"events": [{"id": id, "customer": customer, "metric": metric,
                                      "value": value, "timestamp": at.to_rfc3339()}]});
        let (s, b) = self.post("/v1/events", body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["accepted"], 1, "{b}");
    }

    /// The customer's closed invoices through the API, newest first.
    async fn invoices(&self, customer: &str) -> Vec<Value> {
        let (s, b) = self
            .get(&format!("/v1/customers/{customer}/invoices"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"].as_array().unwrap().clone()
    }

    async fn close_at(&self, now: DateTime<Utc>) -> Vec<StoredInvoice> {
        closer::close_due(self.server.state(), now).await.unwrap()
    }
}

fn period_start(invoice: &Value) -> DateTime<Utc> {
    invoice["period"]["start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `(customer, period start, total)` of each invoice, sorted.
fn summary(written: &[StoredInvoice]) -> Vec<(String, DateTime<Utc>, i64)> {
    let mut s: Vec<_> = written
        .iter()
        .map(|i| (i.customer_id.clone(), i.period_start, i.total))
        .collect();
    s.sort();
    s
}

fn line_amounts(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let what = l["metric"].as_str().unwrap_or(l["kind"].as_str().unwrap());
            (what.to_owned(), l["amount"].as_i64().unwrap())
        })
        .collect()
}

fn adjustments(invoice: &Value) -> Vec<Value> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "adjustment")
        .cloned()
        .collect()
}

async fn free_customers_are_invoiced_once_per_period_and_late_usage_is_adjusted(db: Db) {
    let Some(a) = app_with_catalog(db, Some(charging_free_catalog())).await else {
        return;
    };
    let t0 = ago(Duration::days(1));
    let (p1, p2, p3) = (nth_period(t0, 0), nth_period(t0, 1), nth_period(t0, 2));
    a.customer_at("free_1", t0).await;
    a.customer_at("pro_1", t0).await;
    a.subscribe_at("pro_1", "pro", t0).await;
    let hour = Duration::hours(1);
    a.usage_at("f1", "free_1", "compute_hours", "14", t0 + hour)
        .await;
    a.usage_at("f2", "free_1", "api_spend", "12.5", t0 + hour * 2)
        .await;
    a.usage_at("p1", "pro_1", "compute_hours", "110", t0 + hour)
        .await;

    assert!(
        a.close_at(p1.end + Duration::minutes(30)).await.is_empty(),
        "nothing closes within the grace window"
    );
    let after_p2 = p2.end + Duration::hours(2);
    let written = a.close_at(after_p2).await;
    assert_eq!(
        summary(&written),
        vec![
            // p1: 4 h over 10 included × 0.25 = 1.00; 12.50 of API spend + 20 % = 15.00.
            ("free_1".into(), p1.start, 100 + 1500),
            // p2: no usage: a zero invoice, written all the same.
            ("free_1".into(), p2.start, 0),
            // 20.00 base + 10 h over 100 included × 0.10.
            ("pro_1".into(), p1.start, 2000 + 100),
            ("pro_1".into(), p2.start, 2000),
        ]
    );
    assert!(
        a.close_at(after_p2).await.is_empty(),
        "a rerun writes nothing"
    );

    let free = a.invoices("free_1").await;
    assert_eq!(free.len(), 2);
    assert_eq!(free[1]["plan"], "free");
    assert_eq!(free[1]["currency"], "eur");
    assert_eq!(period_start(&free[1]), p1.start);
    assert_eq!(
        line_amounts(&free[1]),
        vec![("compute_hours".into(), 100), ("api_spend".into(), 1500)]
    );
    assert_eq!(free[1]["total"], 1600);
    assert_eq!(
        line_amounts(&free[0]),
        vec![("compute_hours".into(), 0), ("api_spend".into(), 0)]
    );
    let pro = a.invoices("pro_1").await;
    assert_eq!(pro.len(), 2, "the subscribed customer is closed once");
    assert!(pro.iter().all(|i| i["plan"] == "pro"), "{pro:?}");

    // 6 more hours of p1 arrive after p1 and p2 are invoiced: billed in p3 as what they add to p1
    // (20 h: 10 over included, 2.50, instead of 1.00).
    a.usage_at("f3", "free_1", "compute_hours", "6", t0 + hour * 3)
        .await;
    let after_p3 = p3.end + Duration::hours(2);
    let written = a.close_at(after_p3).await;
    assert_eq!(
        summary(&written),
        vec![
            ("free_1".into(), p3.start, 150),
            ("pro_1".into(), p3.start, 2000),
        ]
    );
    assert!(
        a.close_at(after_p3).await.is_empty(),
        "a rerun writes nothing"
    );
    let free = a.invoices("free_1").await;
    assert_eq!(free.len(), 3);
    assert_eq!(period_start(&free[0]), p3.start);
    let adjustment = &adjustments(&free[0])[..];
    assert_eq!(adjustment.len(), 1, "{}", free[0]);
    let adjustment = &adjustment[0];
    assert_eq!(adjustment["amount"], 150);
    assert_eq!(
        adjustment["description"],
        format!(
            "Late usage of Compute hours from the period starting {}",
            p1.start.format("%Y-%m-%d")
        )
    );
    assert_eq!(a.invoices("pro_1").await.len(), 3);
}

async fn a_customer_created_mid_period_is_first_invoiced_for_the_period_it_was_created_in(db: Db) {
    let Some(a) = app_with_catalog(db, Some(charging_free_catalog())).await else {
        return;
    };
    let t0 = ago(Duration::days(10));
    let (p1, p2) = (nth_period(t0, 0), nth_period(t0, 1));
    a.customer_at("early", t0).await;
    // Created in the middle of the early customer's first period: its own periods start here.
    let joined = ago(Duration::hours(3));
    a.customer_at("mid", joined).await;
    let own = nth_period(joined, 0);
    assert_eq!(own.start, joined);
    assert!(p1.start < joined && joined < p1.end);
    assert!(p1.end < own.end && own.end < p2.end);
    a.usage_at(
        "m1",
        "mid",
        "compute_hours",
        "12",
        joined + Duration::hours(1),
    )
    .await;

    // The early customer's first period is due; the new customer's first one has not ended.
    let written = a.close_at(p1.end + Duration::hours(2)).await;
    assert_eq!(summary(&written), vec![("early".into(), p1.start, 0)]);
    assert!(a.invoices("mid").await.is_empty());

    let after_own = own.end + Duration::hours(2);
    let written = a.close_at(after_own).await;
    // 2 h over 10 included × 0.25; nothing before the customer existed.
    assert_eq!(summary(&written), vec![("mid".into(), joined, 50)]);
    assert!(
        a.close_at(after_own).await.is_empty(),
        "a rerun writes nothing"
    );
    let mid = a.invoices("mid").await;
    assert_eq!(mid.len(), 1);
    assert_eq!(period_start(&mid[0]), joined);
    assert_eq!(mid[0]["total"], 50);
}

async fn free_periods_without_charges_are_invoiced_at_zero_and_no_free_plan_invoices_nothing(
    db: Db,
) {
    // DevFlowHub's free plan has hard limits and no charge, as the catalog check requires.
    let devflowhub = parse_catalog(
        include_str!("../../../catalogs/devflowhub.toml"),
        "catalogs/devflowhub.toml",
    )
    .unwrap();
    let Some(a) = app_with_catalog(db, Some(devflowhub)).await else {
        return;
    };
    let t0 = ago(Duration::days(1));
    let (p1, p2) = (nth_period(t0, 0), nth_period(t0, 1));
    a.customer_at("dev", t0).await;
    a.usage_at("b1", "dev", "build_hours", "3", t0 + Duration::hours(1))
        .await;
    let written = a.close_at(p1.end + Duration::hours(2)).await;
    assert_eq!(summary(&written), vec![("dev".into(), p1.start, 0)]);
    let inv = a.invoices("dev").await;
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["plan"], "free");
    assert_eq!(inv[0]["currency"], "usd");
    assert_eq!(inv[0]["lines"], json!([]));

    // The zero invoice closed p1: a late build hour of p1 is labelled in p2, not lost in p1.
    a.usage_at("b2", "dev", "build_hours", "1", t0 + Duration::hours(2))
        .await;
    let written = a.close_at(p2.end + Duration::hours(2)).await;
    assert_eq!(summary(&written), vec![("dev".into(), p2.start, 0)]);
    let inv = a.invoices("dev").await;
    assert_eq!(inv.len(), 2);
    let adjustment = adjustments(&inv[0]);
    assert_eq!(adjustment.len(), 1, "{}", inv[0]);
    assert_eq!(adjustment[0]["amount"], 0);
    assert_eq!(
        adjustment[0]["description"],
        format!(
            "Late usage of Build hours from the period starting {}",
            p1.start.format("%Y-%m-%d")
        )
    );

    // Without a free plan (Magic Box), a customer without a subscription is not invoiced.
    let Some(b) = app_with_catalog(db, None).await else {
        return;
    };
    assert!(b.server.state().catalog.free_plan.is_none());
    b.customer_at("nosub", t0).await;
    b.usage_at(
        "c1",
        "nosub",
        "compute_hours",
        "50",
        t0 + Duration::hours(1),
    )
    .await;
    assert!(b.close_at(p2.end + Duration::hours(2)).await.is_empty());
    assert!(b.invoices("nosub").await.is_empty());
}

async fn periods_before_a_subscription_are_billed_on_the_free_plan(db: Db) {
    let Some(a) = app_with_catalog(db, Some(charging_free_catalog())).await else {
        return;
    };
    let t0 = ago(Duration::days(1));
    let (p1, p2, p3) = (nth_period(t0, 0), nth_period(t0, 1), nth_period(t0, 2));
    for c in ["early_sub", "late_sub"] {
        a.customer_at(c, t0).await;
        a.usage_at(c, c, "compute_hours", "14", t0 + Duration::hours(1))
            .await;
    }
    // Subscribed after p1 ended but within its grace window, before any invoice was written.
    a.subscribe_at("early_sub", "pro", p1.end + Duration::minutes(20))
        .await;
    let written = a.close_at(p1.end + Duration::hours(2)).await;
    assert_eq!(
        summary(&written),
        vec![
            // Free: 4 h over 10 included × 0.25.
            ("early_sub".into(), p1.start, 100),
            ("late_sub".into(), p1.start, 100),
        ]
    );
    // Subscribed within p2's grace window, after p1's free invoice.
    a.subscribe_at("late_sub", "pro", p2.end + Duration::minutes(20))
        .await;
    let written = a.close_at(p3.end + Duration::hours(2)).await;
    assert_eq!(
        summary(&written),
        vec![
            ("early_sub".into(), p2.start, 2000),
            ("early_sub".into(), p3.start, 2000),
            ("late_sub".into(), p2.start, 0),
            ("late_sub".into(), p3.start, 2000),
        ]
    );
    let plans = |inv: Vec<Value>| -> Vec<String> {
        inv.iter()
            .rev()
            .map(|i| i["plan"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(plans(a.invoices("early_sub").await), ["free", "pro", "pro"]);
    assert_eq!(plans(a.invoices("late_sub").await), ["free", "free", "pro"]);
    assert!(a.close_at(p3.end + Duration::hours(2)).await.is_empty());
}

async fn every_customer_is_closed_once_across_pages_and_concurrent_closers(db: Db) {
    let Some(a) = app_with_catalog(db, Some(charging_free_catalog())).await else {
        return;
    };
    // More customers than the closer reads at a time (500), some of them subscribed, one of those
    // the only customer of the second page.
    let t0 = ago(Duration::days(1));
    let ids: Vec<String> = (0..=500).map(|i| format!("c{i:04}")).collect();
    for id in &ids {
        a.customer_at(id, t0).await;
    }
    for id in ["c0250", "c0500"] {
        a.subscribe_at(id, "pro", t0).await;
    }
    let after_p1 = nth_period(t0, 0).end + Duration::hours(2);
    // Two closers at once (as when a lease changes hands mid-run) still write each invoice once.
    let (mut written, other) = tokio::join!(a.close_at(after_p1), a.close_at(after_p1));
    written.extend(other);
    assert_eq!(written.len(), ids.len());
    let closed: std::collections::BTreeSet<&str> =
        written.iter().map(|i| i.customer_id.as_str()).collect();
    assert_eq!(closed.len(), ids.len(), "each customer once");
    let pro: Vec<(&str, i64)> = written
        .iter()
        .filter(|i| i.plan == "pro")
        .map(|i| (i.customer_id.as_str(), i.total))
        .collect();
    assert_eq!(pro.len(), 2);
    assert!(pro.contains(&("c0250", 2000)) && pro.contains(&("c0500", 2000)));
    assert!(written
        .iter()
        .filter(|i| i.plan == "free")
        .all(|i| i.total == 0));
    assert!(
        a.close_at(after_p1).await.is_empty(),
        "a rerun writes nothing"
    );
}

/// A customer whose period cannot be rated (usage stored before the value limits existed, written
/// straight to the store here) is logged, counted in `tally_worker_failures_total{worker="closer"}`
/// and skipped: the other customers are invoiced in the same run, and the failing one is tried
/// again at the next.
async fn a_customer_that_cannot_be_rated_is_counted_and_skipped(db: Db) {
    let Some(a) = app_with_catalog(db, Some(charging_free_catalog())).await else {
        return;
    };
    let t0 = ago(Duration::days(1));
    let p1 = nth_period(t0, 0);
    a.customer_at("a_huge", t0).await;
    a.customer_at("b_fine", t0).await;
    let state = a.server.state();
    state
        .store
        .ingest(vec![tally_store::NewEvent {
            period_start: p1.start,
            customer_id: "a_huge".into(),
            event_id: "huge".into(),
            metric: "compute_hours".into(),
            // Within a period total's limits, but 2.5 × 10^20 cents do not fit an invoice line.
            value: "9999999999999999999".parse().unwrap(),
            timestamp: t0 + Duration::hours(1),
            properties: None,
            unique_key: None,
        }])
        .await
        .unwrap();
    a.usage_at(
        "f1",
        "b_fine",
        "compute_hours",
        "14",
        t0 + Duration::hours(1),
    )
    .await;
    let failures = || {
        state
            .metrics
            .worker_failures(tally_server::service::worker::CLOSER)
    };
    let before = failures();
    let after_p1 = p1.end + Duration::hours(2);
    let written = a.close_at(after_p1).await;
    // 4 h over 10 included × 0.25.
    assert_eq!(summary(&written), vec![("b_fine".into(), p1.start, 100)]);
    assert_eq!(failures(), before + 1);
    assert!(a.invoices("a_huge").await.is_empty());
    assert!(a.close_at(after_p1).await.is_empty());
    assert_eq!(failures(), before + 2);
    a.server.shutdown().await.unwrap();
}
