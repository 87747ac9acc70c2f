//! The simulator's events have the envelopes and object members of the captured and assembled
//! Stripe events in `tests/fixtures/events/`, including `previous_attributes` on updates.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// Members the fixtures carry that the current API removed: `invoice.subscription` (basil moved
/// it under `parent`) and `plan.aggregate_usage` (basil removed legacy usage aggregation).
const REMOVED: &[(&str, &str)] = &[("invoice", "subscription"), ("plan", "aggregate_usage")];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every member of `want` exists in `got`; where both hold objects (other than user metadata),
/// one level further too.
fn assert_covers(what: &str, want: &Value, got: &Value) {
    let (w, g) = (keys(want), keys(got));
    let missing: Vec<_> = w
        .difference(&g)
        .filter(|k| {
            !REMOVED
                .iter()
                .any(|(o, r)| got["object"] == *o && k.as_str() == *r)
        })
        .collect();
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
    for k in w.iter().filter(|k| *k != "metadata") {
        if let (Some(a), Some(b)) = (want[k].as_object(), got[k].as_object()) {
            let missing: Vec<_> = a.keys().filter(|x| !b.contains_key(*x)).collect();
            assert!(missing.is_empty(), "{what}.{k}: missing {missing:?}");
        }
    }
}

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[tokio::test]
async fn events_match_real_envelopes_and_objects() {
    let env = start().await;
    let meter = env.sum_meter("Calls", "calls").await;
    let price = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Basic"),
                ("currency", "usd"),
                ("unit_amount", "4999"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let pack = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Credits"),
                ("currency", "usd"),
                ("unit_amount", "5000"),
            ],
        )
        .await;
    let _ = meter;
    let clock = env.clock(JAN1).await;
    let c = env
        .post(
            "/v1/customers",
            &[("email", "real@example.com"), ("test_clock", &clock)],
        )
        .await;
    let cid = c["id"].as_str().unwrap();
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", cid),
                ("line_items[0][price]", price["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
            ],
        )
        .await;
    assert_eq!(
        pay_checkout(&env, cs["url"].as_str().unwrap(), "4242424242424242", None)
            .await
            .0,
        303
    );
    let cs2 = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("customer", cid),
                ("line_items[0][price]", pack["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
            ],
        )
        .await;
    assert_eq!(
        pay_checkout(&env, cs2["url"].as_str().unwrap(), "4242424242424242", None)
            .await
            .0,
        303
    );
    let sub = env
        .get(&format!(
            "/v1/checkout/sessions/{}",
            cs["id"].as_str().unwrap()
        ))
        .await["subscription"]
        .as_str()
        .unwrap()
        .to_string();
    env.advance(&clock, JAN1 + 31 * DAY + 2 * 3600).await;
    env.post(
        &format!("/v1/subscriptions/{sub}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    let bad = env
        .post(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", cid)],
        )
        .await;
    env.post(
        &format!("/v1/subscriptions/{sub}"),
        &[
            ("cancel_at_period_end", "false"),
            ("default_payment_method", bad["id"].as_str().unwrap()),
        ],
    )
    .await;
    env.advance(&clock, JAN1 + 59 * DAY + 2 * 3600).await;
    env.delete(&format!("/v1/subscriptions/{sub}")).await;
    let events = env.events().await;
    let find = |t: &str, pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .rev()
            .find(|e| e["type"] == t && pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {t} event"))
    };

    for (file, pred) in [
        (
            "billing.meter.created.synth.json",
            &(|_: &Value| true) as &dyn Fn(&Value) -> bool,
        ),
        (
            "checkout.session.completed.payment.synth.json",
            &|e: &Value| e["data"]["object"]["mode"] == "payment",
        ),
        (
            "checkout.session.completed.subscription.synth.json",
            &|e: &Value| e["data"]["object"]["mode"] == "subscription",
        ),
        (
            "customer.subscription.deleted.basil.synth.json",
            &|_: &Value| true,
        ),
        (
            "customer.subscription.updated.basil.real.json",
            &|e: &Value| e["data"]["previous_attributes"].get("items").is_some(),
        ),
        (
            "customer.subscription.updated.cancel_at_period_end.synth.json",
            &|e: &Value| e["data"]["object"]["cancel_at_period_end"] == true,
        ),
        ("invoice.paid.basil.synth.json", &|e: &Value| {
            e["data"]["object"]["billing_reason"] == "subscription_create"
        }),
        ("invoice.payment_failed.basil.synth.json", &|_: &Value| true),
        ("invoice.payment_succeeded.basil.real.json", &|e: &Value| {
            e["data"]["object"]["billing_reason"] == "subscription_cycle"
        }),
        ("plan.created.openapi_fixture.json", &|_: &Value| true),
    ] {
        let want = fixture(file);
        let got = find(want["type"].as_str().unwrap(), pred);
        assert_eq!(keys(&want), keys(&got), "{file}: envelope");
        assert_eq!(
            keys(&want["request"]),
            keys(&got["request"]),
            "{file}: request"
        );
        assert_eq!(keys(&want["data"]), keys(&got["data"]), "{file}: data");
        assert_covers(file, &want["data"]["object"], &got["data"]["object"]);
        if let Some(prev) = want["data"].get("previous_attributes") {
            let mine = &got["data"]["previous_attributes"];
            for k in keys(prev) {
                assert!(
                    mine.get(&k).is_some(),
                    "{file}: previous_attributes.{k} missing in {mine}"
                );
            }
        }
    }
    let cape = find("customer.subscription.updated", &|e: &Value| {
        e["data"]["object"]["cancel_at_period_end"] == true
    });
    let prev = &cape["data"]["previous_attributes"];
    assert_eq!(
        (
            &prev["cancel_at_period_end"],
            &prev["cancel_at"],
            &prev["cancellation_details"]["reason"]
        ),
        (&Value::Bool(false), &Value::Null, &Value::Null)
    );
    assert_eq!(
        cape["data"]["object"]["cancel_at"],
        cape["data"]["object"]["items"]["data"][0]["current_period_end"]
    );
    let renewal = find("customer.subscription.updated", &|e: &Value| {
        e["data"]["previous_attributes"].get("items").is_some()
    });
    assert_eq!(
        renewal["request"]["id"],
        Value::Null,
        "clock-driven changes have no request"
    );
}
