//! Numbers through the real server on both backends: event values follow Tally's one decimal
//! grammar and limits (refused at the door, never rounded or stored), usage before a customer
//! existed is refused, figures too large to compute exactly answer `422 usage_out_of_range`
//! instead of a dropped connection, and the background notifier survives a failing customer.

use std::sync::Arc;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::period::allowance_period;
use tally_server::config::parse_catalog;
use tally_server::service::{entitlements, worker};
use tally_store::NewEvent;

#[macro_use]
mod common;

use common::{App, Db};

const CATALOG: &str = include_str!("fixtures/credits.toml");

/// The app on `db` with the credits catalog (metric `builds`: sum, limit 100 on the free plan,
/// warnings at 80 % and 95 %).
async fn app(db: Db) -> Option<App> {
    common::app_on(db, |c| {
        c.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/credits.toml").unwrap());
    })
    .await
}

impl App {
    async fn customer(&self, id: &str) {
        let (s, b) = self.put(&format!("/v1/customers/{id}"), json!({})).await;
        assert!(s.is_success(), "{s} {b}");
    }

    async fn events(&self, events: Value) -> (StatusCode, Value) {
        self.post("/v1/events", json!({ "events": events })).await
    }

    /// `used` of `builds` in the customer's usage report.
    async fn builds_used(&self, id: &str) -> Value {
        let (s, b) = self.get(&format!("/v1/customers/{id}/usage")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let m = b["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == "builds")
            .unwrap()
            .clone();
        m["used"].clone()
    }
}

const SYNTAX: &str =
    "is not a decimal number (digits, an optional leading - and .digits; no +, _, spaces or exponent)";

/// Each value the grammar or its limits refuse, as JSON text, with the message of its invalid item.
fn refused() -> Vec<(&'static str, String)> {
    vec![
        (
            "79228162514264337593543950335",
            "value 79228162514264337593543950335 is too large: at most 15 integer digits".into(),
        ),
        (
            "0.123456789012345678901234567890",
            "value 0.123456789012345678901234567890 has too many decimal places: at most 9".into(),
        ),
        (
            "\"1234567890123.123456\"",
            "value \"1234567890123.123456\" has too many significant digits: at most 18".into(),
        ),
        (
            "1e15",
            "value 1e15 is too large: at most 15 integer digits".into(),
        ),
        ("\"1_000\"", format!("value \"1_000\" {SYNTAX}")),
        ("\"+5\"", format!("value \"+5\" {SYNTAX}")),
        ("\" 5 \"", format!("value \" 5 \" {SYNTAX}")),
        ("\"5.\"", format!("value \"5.\" {SYNTAX}")),
        ("\"1e3\"", format!("value \"1e3\" {SYNTAX}")),
        ("\"\\u0035\"", format!("value \"\\u0035\" {SYNTAX}")),
        (
            "null",
            "value must not be null (leave it out to count one)".into(),
        ),
    ]
}

impl App {
    /// `POST /v1/events` with `body` sent as it is (numbers exactly as written).
    async fn post_raw(&self, body: String) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(common::KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

async fn values_outside_the_grammar_are_refused_and_nothing_is_stored(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c1").await;
    let values = refused();
    // The common shape (read in one pass) and a shape only serde_json reads (with properties)
    // answer the same.
    for extra in ["", ",\"properties\":{}"] {
        let events: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, (v, _))| {
                format!(r#"{{"id":"e{i}","customer":"c1","metric":"builds","value":{v}{extra}}}"#)
            })
            .collect();
        let (s, b) = app
            .post_raw(format!("{{\"events\":[{}]}}", events.join(",")))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["code"], "invalid_events");
        assert_eq!(
            b["error"]["message"],
            format!(
                "{n} of {n} events are invalid; nothing was stored",
                n = values.len()
            ),
            "{b}"
        );
        let invalid = b["error"]["invalid"].as_array().unwrap();
        assert_eq!(invalid.len(), values.len());
        for (i, (item, (_, message))) in invalid.iter().zip(&values).enumerate() {
            assert_eq!(item["index"], i);
            assert_eq!(item["code"], "invalid_value");
            assert_eq!(item["param"], "value");
            assert_eq!(item["message"], message.as_str());
        }
    }
    assert_eq!(app.builds_used("c1").await, "0");
    // The usage report, the billing summary and an entitlement check all answer.
    let (s, b) = app.get("/v1/customers/c1/billing").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .post(
            "/v1/entitlements/check",
            json!({"customer": "c1", "metric": "builds"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["allowed"].clone(), b["used"].clone()),
        (json!(true), json!("0"))
    );
    app.server.shutdown().await.unwrap();
}

/// The reported attack: one event of 79228162514264337593543950335 was taken with 200, and then
/// the usage report, the billing summary and every entitlement check of the customer ended with
/// an empty reply. It is refused at the door; every read answers.
async fn the_reported_huge_value_is_refused_and_every_read_answers(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c0").await;
    let (s, b) = app
        .post_raw(
            r#"{"events":[{"id":"e","customer":"c0","metric":"builds","value":79228162514264337593543950335}]}"#
                .into(),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["invalid"][0]["code"], "invalid_value");
    assert_eq!(app.builds_used("c0").await, "0");
    let (s, b) = app.get("/v1/customers/c0/billing").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for _ in 0..2 {
        let (s, b) = app
            .post(
                "/v1/entitlements/check",
                json!({"customer": "c0", "metric": "builds", "quantity": 1}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            (
                b["allowed"].clone(),
                b["used"].clone(),
                b["percent"].clone()
            ),
            (json!(true), json!("0"), json!("0"))
        );
    }
    app.server.shutdown().await.unwrap();
}

async fn values_within_the_limits_are_stored_and_summed_exactly(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c2").await;
    let (s, b) = app
        .post_raw(
            r#"{"events":[
            {"id":"a","customer":"c2","metric":"builds","value":"999999999999999.999"},
            {"id":"b","customer":"c2","metric":"builds","value":1e-9},
            {"id":"c","customer":"c2","metric":"builds","value":-0},
            {"id":"d","customer":"c2","metric":"builds","properties":{"k":1},"value":1.5E+0},
            {"id":"e","customer":"c2","metric":"builds","value":0.123456789}]}"#
                .into(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"accepted": 5, "duplicates": 0}));
    assert_eq!(app.builds_used("c2").await, "1000000000000001.622456790");
    app.server.shutdown().await.unwrap();
}

async fn events_from_before_the_customer_are_refused(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c3").await;
    let before = (Utc::now() - Duration::days(10)).to_rfc3339();
    let (s, b) = app
        .events(json!([
            {"id": "old", "customer": "c3", "metric": "builds", "value": 7, "timestamp": before},
            {"id": "new", "customer": "c3", "metric": "builds", "value": 5},
        ]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let invalid = b["error"]["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 1, "{b}");
    assert_eq!(invalid[0]["index"], 0);
    assert_eq!(invalid[0]["code"], "timestamp_before_customer");
    assert_eq!(invalid[0]["param"], "timestamp");
    let message = invalid[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("timestamp is before the customer was created (20"),
        "{message}"
    );
    assert_eq!(app.builds_used("c3").await, "0");
    // The same event once the anchor is cached (the first answer above cached it).
    let (s, b) = app
        .events(json!([{"id": "old", "customer": "c3", "metric": "builds", "value": 7, "timestamp": before}]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(
        b["error"]["invalid"][0]["code"],
        "timestamp_before_customer"
    );
    let (s, b) = app
        .events(json!([{"id": "new", "customer": "c3", "metric": "builds", "value": 5}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.builds_used("c3").await, "5");
    app.server.shutdown().await.unwrap();
}

/// Usage stored before the event limits existed (written straight to the store here) that a
/// figure cannot be computed from exactly: the reads answer a documented 422, never a dropped
/// connection or a rounded number, and the notifier still notifies the other customer.
async fn usage_that_cannot_be_computed_exactly_answers_422_not_a_panic(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c4").await;
    app.customer("c5").await;
    let state = app.server.state();
    let now = Utc::now();
    let mut stored = Vec::new();
    for id in ["c4", "c5"] {
        let c = state.store.get_customer(id).await.unwrap().unwrap();
        stored.push(NewEvent {
            period_start: allowance_period(c.billing_anchor, now).start,
            customer_id: id.into(),
            event_id: "legacy".into(),
            metric: "builds".into(),
            // 28 decimal places: within a period total's limits, but 100 − it needs 31 digits.
            value: if id == "c4" {
                "0.1234567890123456789012345678".parse().unwrap()
            } else {
                Decimal::from(96)
            },
            timestamp: now,
            properties: None,
            unique_key: None,
        });
    }
    state.store.ingest(stored).await.unwrap();
    for path in ["/v1/customers/c4/usage", "/v1/customers/c4/billing"] {
        let (s, b) = app.get(path).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {b}");
        assert_eq!(
            b["error"],
            json!({
                "type": "invalid_request_error",
                "code": "usage_out_of_range",
                "message": "the usage of builds cannot be computed exactly within Tally's limits",
                "param": "metric"
            }),
            "{path}"
        );
    }
    let (s, b) = app
        .post(
            "/v1/entitlements/check",
            json!({"customer": "c4", "metric": "builds"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["code"], "usage_out_of_range");
    assert_eq!(b["error"]["param"], "metric");
    // The notifier goes through both customers; the other one is notified.
    entitlements::usage_changed(state, &[("c4", "builds"), ("c5", "builds")]);
    let mut got = Vec::new();
    for _ in 0..50 {
        got = state.store.notifications("c5").await.unwrap();
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t: Vec<u32> = got.iter().map(|n| n.threshold).collect();
    assert_eq!(t, vec![80, 95]);
    app.server.shutdown().await.unwrap();
}

/// One customer that fails (here: marked changed but not in the store) does not stop the notifier:
/// it is counted in `tally_worker_failures_total{worker="notifier"}` and the others are notified,
/// in this round and the next.
async fn the_notifier_keeps_notifying_after_a_failing_customer(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("ok1").await;
    app.customer("ok2").await;
    let state = app.server.state();
    let failures = || state.metrics.worker_failures(worker::NOTIFIER);
    assert_eq!(failures(), 0);
    for (round, customer) in ["ok1", "ok2"].into_iter().enumerate() {
        // "a_ghost" sorts first: the notifier meets it before the real customer.
        entitlements::usage_changed(state, &[("a_ghost", "builds")]);
        let (s, b) = app
            .events(json!([{"id": "e", "customer": customer, "metric": "builds", "value": 96}]))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let mut got = Vec::new();
        for _ in 0..50 {
            got = state.store.notifications(customer).await.unwrap();
            if got.len() >= 2 && failures() > round as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let t: Vec<u32> = got.iter().map(|n| n.threshold).collect();
        assert_eq!(t, vec![80, 95], "{customer}");
        assert_eq!(failures(), round as u64 + 1);
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tally_worker_failures_total{worker=\"notifier\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("tally_worker_failures_total{worker=\"closer\"} 0\n"),
        "{text}"
    );
    app.server.shutdown().await.unwrap();
}

/// A period's total stays below 10^19: a batch that would take it there is refused whole, with
/// `422 usage_out_of_range`, and the stored figures stay as they were.
async fn a_total_beyond_the_period_limit_is_refused_at_the_door(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer("c6").await;
    app.customer("c7").await;
    let state = app.server.state();
    let c = state.store.get_customer("c6").await.unwrap().unwrap();
    let now = Utc::now();
    state
        .store
        .ingest(vec![NewEvent {
            period_start: allowance_period(c.billing_anchor, now).start,
            customer_id: "c6".into(),
            event_id: "seed".into(),
            metric: "builds".into(),
            value: "9999999999999999999".parse().unwrap(),
            timestamp: now,
            properties: None,
            unique_key: None,
        }])
        .await
        .unwrap();
    let (s, b) = app
        .events(json!([
            {"id": "x", "customer": "c7", "metric": "builds", "value": 2},
            {"id": "y", "customer": "c6", "metric": "builds", "value": 1},
        ]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(
        b["error"],
        json!({
            "type": "invalid_request_error",
            "code": "usage_out_of_range",
            "message": "the usage of builds in one period would reach 10^19 or need more than 28 \
                        digits; nothing was stored"
        })
    );
    assert_eq!(app.builds_used("c6").await, "9999999999999999999");
    assert_eq!(app.builds_used("c7").await, "0");
    // The same events are taken once the total has room.
    let (s, b) = app
        .events(json!([{"id": "x", "customer": "c7", "metric": "builds", "value": 2}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(app.builds_used("c7").await, "2");
    app.server.shutdown().await.unwrap();
}

on_both_backends!(
    the_reported_huge_value_is_refused_and_every_read_answers,
    a_total_beyond_the_period_limit_is_refused_at_the_door,
    values_outside_the_grammar_are_refused_and_nothing_is_stored,
    values_within_the_limits_are_stored_and_summed_exactly,
    events_from_before_the_customer_are_refused,
    usage_that_cannot_be_computed_exactly_answers_422_not_a_panic,
    the_notifier_keeps_notifying_after_a_failing_customer,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_item_is_counted_and_skipped() {
    let Some(app) = app(Db::Sqlite).await else {
        return;
    };
    let state = app.server.state();
    let panicked: Option<()> =
        worker::run_item(state, worker::CLOSER, "c", async { panic!("boom") }).await;
    assert_eq!(panicked, None);
    let failed: Option<()> = worker::run_item(state, worker::CLOSER, "c", async {
        Err(tally_server::ApiError::internal("down"))
    })
    .await;
    assert_eq!(failed, None);
    let ok = worker::run_item(state, worker::CLOSER, "c", async { Ok(7) }).await;
    assert_eq!(ok, Some(7));
    assert_eq!(state.metrics.worker_failures(worker::CLOSER), 2);
    assert_eq!(state.metrics.worker_failures(worker::NOTIFIER), 0);
    app.server.shutdown().await.unwrap();
}
