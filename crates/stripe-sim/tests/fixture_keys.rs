//! Each resource's JSON carries every top-level key of its example in the Stripe fixtures
//! (`tests/fixtures/openapi/`, copied from the shared Stripe fixtures).

mod common;
use common::*;
use serde_json::Value;

/// Keys the examples still carry but the current API no longer sends.
const REMOVED: &[(&str, &str)] = &[
    // Removed from invoices in 2025-03-31.basil (now under `parent.subscription_details`).
    ("invoice", "subscription"),
];

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/openapi/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

fn assert_keys(name: &str, actual: &Value) {
    let want = fixture(name);
    let mut missing = vec![];
    for k in want.as_object().unwrap().keys() {
        if REMOVED.contains(&(name, k.as_str())) {
            continue;
        }
        if actual.get(k).is_none() {
            missing.push(k.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{name}: missing top-level keys {missing:?}\n{}",
        serde_json::to_string_pretty(actual).unwrap()
    );
    assert_eq!(actual.get("object"), want.get("object"), "{name}: object");
}

#[tokio::test]
async fn every_resource_carries_the_example_keys() {
    let env = start().await;
    let mut checked = vec![];
    let mut check = |name: &str, v: &Value| {
        assert_keys(name, v);
        checked.push(name.to_string());
    };
    let cus = env
        .post(
            "/v1/customers",
            &[
                ("email", "k@example.com"),
                ("payment_method", "pm_card_visa"),
                ("invoice_settings[default_payment_method]", "pm_card_visa"),
            ],
        )
        .await;
    check("customer", &cus);
    let cid = cus["id"].as_str().unwrap();
    let prod = env.post("/v1/products", &[("name", "Pro")]).await;
    check("product", &prod);
    let price = env
        .post(
            "/v1/prices",
            &[
                ("product", prod["id"].as_str().unwrap()),
                ("currency", "usd"),
                ("unit_amount", "2000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    check("price", &price);
    let meter = env
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Calls"),
                ("event_name", "calls"),
                ("default_aggregation[formula]", "count"),
            ],
        )
        .await;
    check("billing.meter", &meter);
    let ev = env
        .post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "calls"),
                ("payload[stripe_customer_id]", cid),
                ("identifier", "x1"),
            ],
        )
        .await;
    check("billing.meter_event", &ev);
    check(
        "billing.meter_event_adjustment",
        &env.post(
            "/v1/billing/meter_event_adjustments",
            &[("event_name", "calls"), ("cancel[identifier]", "x1")],
        )
        .await,
    );
    let now = stripe_sim::util::wall_now();
    let summ = env
        .get(&format!(
            "/v1/billing/meters/{}/event_summaries?customer={cid}&start_time={}&end_time={}",
            meter["id"].as_str().unwrap(),
            now - 3600,
            now + 3600
        ))
        .await;
    check("billing.meter_event_summary", &summ["data"][0]);
    let coupon = env
        .post(
            "/v1/coupons",
            &[("percent_off", "10"), ("duration", "forever")],
        )
        .await;
    check("coupon", &coupon);
    check(
        "promotion_code",
        &env.post(
            "/v1/promotion_codes",
            &[
                ("promotion[type]", "coupon"),
                ("promotion[coupon]", coupon["id"].as_str().unwrap()),
            ],
        )
        .await,
    );
    let ii = env
        .post(
            "/v1/invoiceitems",
            &[("customer", cid), ("amount", "300"), ("currency", "usd")],
        )
        .await;
    check("invoiceitem", &ii);
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cid),
                ("items[0][price]", price["id"].as_str().unwrap()),
                ("discounts[0][coupon]", coupon["id"].as_str().unwrap()),
                ("expand[]", "discounts"),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    check("subscription", &sub);
    check("subscription_item", &sub["items"]["data"][0]);
    check("plan", &sub["items"]["data"][0]["plan"]);
    check("discount", &sub["discounts"][0]);
    check("invoice", &sub["latest_invoice"]);
    check("line_item", &sub["latest_invoice"]["lines"]["data"][0]);
    let extra = env
        .post(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &[
                ("items[0][price]", price["id"].as_str().unwrap()),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    let added = extra["items"]["data"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    check(
        "deleted_subscription_item",
        &env.delete(&format!(
            "/v1/subscription_items/{added}?proration_behavior=none"
        ))
        .await,
    );
    let pi = env
        .post(
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd")],
        )
        .await;
    check("payment_intent", &pi);
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "500"),
                ("line_items[0][price_data][product_data][name]", "Pack"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/"),
            ],
        )
        .await;
    check("checkout.session", &cs);
    let cfg = env
        .post(
            "/v1/billing_portal/configurations",
            &[("features[subscription_cancel][enabled]", "true")],
        )
        .await;
    check("billing_portal.configuration", &cfg);
    check(
        "billing_portal.session",
        &env.post("/v1/billing_portal/sessions", &[("customer", cid)])
            .await,
    );
    let events = env.get("/v1/events?limit=1").await;
    check("event", &events["data"][0]);
    let other = env.post("/v1/customers", &[]).await;
    check(
        "deleted_customer",
        &env.delete(&format!("/v1/customers/{}", other["id"].as_str().unwrap()))
            .await,
    );

    let dir = format!("{}/tests/fixtures/openapi", env!("CARGO_MANIFEST_DIR"));
    for f in std::fs::read_dir(dir).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        let name = name.trim_end_matches(".json");
        if name.ends_with(".pre_basil") {
            continue;
        }
        assert!(
            checked.iter().any(|c| c == name),
            "fixture {name} not checked"
        );
    }
}
