//! The scripted end-to-end flow: checkout with 4242, renewal with metered usage, a failing card,
//! retries and the end of the subscription — with exact amounts, states and event sequences.

mod common;
use common::*;
use serde_json::Value;

fn types_since(all: &[Value], from: usize) -> Vec<String> {
    all[from..]
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn checkout_renewal_with_usage_then_failed_payments() {
    let env = start().await;
    let rx = Receiver::start(0).await;
    let ep = env.webhook_endpoint(&rx, &["*"]).await;
    assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));

    let prod = env.post("/v1/products", &[("name", "Pro")]).await;
    let pid = prod["id"].as_str().unwrap();
    let base = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "2000"),
                ("recurring[interval]", "month"),
                ("lookup_key", "pro_monthly"),
            ],
        )
        .await;
    let meter = env.sum_meter("API calls", "api_call").await;
    let metered = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "5"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", meter["id"].as_str().unwrap()),
            ],
        )
        .await;

    let clock = env.clock(JAN1).await;
    let cus = env
        .post(
            "/v1/customers",
            &[("email", "ada@example.com"), ("test_clock", &clock)],
        )
        .await;
    let cid = cus["id"].as_str().unwrap();

    let sess = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", cid),
                ("line_items[0][price]", base["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("line_items[1][price]", metered["id"].as_str().unwrap()),
                (
                    "success_url",
                    "https://app.example/done?session={CHECKOUT_SESSION_ID}",
                ),
                ("cancel_url", "https://app.example/cancel"),
                ("client_reference_id", "user_42"),
                ("metadata[plan]", "pro"),
            ],
        )
        .await;
    let sid = sess["id"].as_str().unwrap().to_string();
    assert!(sid.starts_with("cs_test_"));
    assert_eq!(sess["status"], "open");
    assert_eq!(sess["amount_total"], 2000);
    let url = sess["url"].as_str().unwrap().to_string();
    let page = env.html(&url).await;
    assert!(
        page.contains("Subscribe") && page.contains("$20.00"),
        "{page}"
    );

    let before = env.events().await.len();
    let (st, loc, _) = pay_checkout(&env, &url, "4242 4242 4242 4242", None).await;
    assert_eq!(st, 303);
    assert_eq!(
        loc.as_deref(),
        Some(format!("https://app.example/done?session={sid}").as_str())
    );

    let events = env.events().await;
    assert_eq!(
        types_since(&events, before),
        vec![
            "payment_method.attached",
            "customer.subscription.created",
            "invoice.created",
            "invoice.finalized",
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "invoice.paid",
            "invoice.payment_succeeded",
            "checkout.session.completed",
        ]
    );
    let completed = events.last().unwrap();
    let cs = &completed["data"]["object"];
    assert_eq!(cs["payment_status"], "paid");
    assert_eq!(cs["status"], "complete");
    assert_eq!(cs["client_reference_id"], "user_42");
    assert_eq!(cs["metadata"]["plan"], "pro");
    assert_eq!(cs["customer"], cid);
    assert_eq!(cs["amount_total"], 2000);
    let sub_id = cs["subscription"].as_str().unwrap().to_string();
    let created = &events[before + 1]["data"]["object"];
    assert_eq!(created["id"], sub_id.as_str());
    assert_eq!(created["status"], "active");
    let paid = &events[before + 7]["data"]["object"];
    assert_eq!(paid["amount_paid"], 2000);
    assert_eq!(paid["billing_reason"], "subscription_create");
    assert_eq!(
        paid["parent"]["subscription_details"]["subscription"],
        sub_id.as_str()
    );

    let sub = env.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(sub["status"], "active");
    let feb1 = 1_769_904_000; // 2026-02-01
    assert_eq!(sub["items"]["data"][0]["current_period_start"], JAN1);
    assert_eq!(sub["items"]["data"][0]["current_period_end"], feb1);
    assert_eq!(sub["items"]["data"].as_array().unwrap().len(), 2);

    // Usage during January: 100 + 250 + 50 = 400 calls at 5 cents; one event from before the
    // period (ignored) and one cancelled adjustment.
    env.advance(&clock, JAN1 + 10 * DAY).await;
    for (i, v) in [("a", "100"), ("b", "250"), ("c", "50")] {
        let t = (JAN1 + 3 * DAY).to_string();
        env.post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "api_call"),
                ("payload[stripe_customer_id]", cid),
                ("payload[value]", v),
                ("identifier", i),
                ("timestamp", &t),
            ],
        )
        .await;
    }
    let (st, dup) = env
        .try_post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "api_call"),
                ("payload[stripe_customer_id]", cid),
                ("payload[value]", "999"),
                ("identifier", "a"),
            ],
        )
        .await;
    assert_eq!(st, 400, "{dup}");
    assert_eq!(dup["error"]["code"], "resource_already_exists");
    let t = (JAN1 + 4 * DAY).to_string();
    env.post(
        "/v1/billing/meter_events",
        &[
            ("event_name", "api_call"),
            ("payload[stripe_customer_id]", cid),
            ("payload[value]", "7"),
            ("identifier", "oops"),
            ("timestamp", &t),
        ],
    )
    .await;
    env.post(
        "/v1/billing/meter_event_adjustments",
        &[
            ("event_name", "api_call"),
            ("type", "cancel"),
            ("cancel[identifier]", "oops"),
        ],
    )
    .await;
    let (st, fut) = env
        .try_post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "api_call"),
                ("payload[stripe_customer_id]", cid),
                ("payload[value]", "1"),
                ("timestamp", &(JAN1 + 10 * DAY + 301).to_string()),
            ],
        )
        .await;
    assert_eq!(
        (st, fut["error"]["param"].as_str()),
        (400, Some("timestamp"))
    );
    let summ = env
        .get(&format!(
            "/v1/billing/meters/{}/event_summaries?customer={cid}&start_time={JAN1}&end_time={}",
            meter["id"].as_str().unwrap(),
            JAN1 + 10 * DAY
        ))
        .await;
    assert_eq!(summ["data"][0]["aggregated_value"], 400);

    let before = env.events().await.len();
    env.advance(&clock, feb1 + 2 * 3600).await;
    let events = env.events().await;
    assert_eq!(
        types_since(&events, before),
        vec![
            "test_helpers.test_clock.advancing",
            "invoice.upcoming",
            "invoice.created",
            "customer.subscription.updated",
            "invoice.finalized",
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "invoice.paid",
            "invoice.payment_succeeded",
            "test_helpers.test_clock.ready",
        ]
    );
    let upd = &events[before + 3]["data"];
    assert!(upd["previous_attributes"]["latest_invoice"].is_string());
    assert_eq!(
        upd["previous_attributes"]["items"]["data"][0]["current_period_end"],
        feb1
    );
    assert_eq!(
        upd["object"]["items"]["data"][0]["current_period_start"],
        feb1
    );
    let renewal = &events[before + 8]["data"]["object"];
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    assert_eq!(renewal["total"], 4000);
    assert_eq!(renewal["amount_paid"], 4000);
    let lines = renewal["lines"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["amount"], 2000);
    assert_eq!(lines[0]["period"]["start"], feb1);
    assert_eq!(lines[1]["amount"], 2000);
    assert_eq!(lines[1]["quantity"], 400);
    assert_eq!(lines[1]["period"]["start"], JAN1);
    assert_eq!(lines[1]["period"]["end"], feb1);
    assert_eq!(lines[1]["pricing"]["price_details"]["price"], metered["id"]);

    // The customer replaces the card with one that attaches but fails every charge.
    let ps = env
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", cid),
                ("return_url", "https://app.example/account"),
            ],
        )
        .await;
    let purl = ps["url"].as_str().unwrap().to_string();
    let html = env.html(&purl).await;
    assert!(html.contains("visa •••• 4242"), "{html}");
    let r = env
        .http
        .post(format!("{purl}/card"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("card_number", "4000 0000 0000 0341"),
            ("card_expiry", "12 / 34"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let html = env.html(&purl).await;
    assert!(html.contains("visa •••• 0341"), "{html}");

    let mar1 = 1_772_323_200; // 2026-03-01
    let before = env.events().await.len();
    env.advance(&clock, mar1 + 2 * 3600).await;
    let events = env.events().await;
    let t = types_since(&events, before);
    assert_eq!(
        t,
        vec![
            "test_helpers.test_clock.advancing",
            "invoice.upcoming",
            "invoice.created",
            "customer.subscription.updated",
            "invoice.finalized",
            "payment_intent.created",
            "charge.failed",
            "payment_intent.payment_failed",
            "invoice.payment_failed",
            "customer.subscription.updated",
            "test_helpers.test_clock.ready",
        ]
    );
    let failed = &events[before + 8]["data"]["object"];
    assert_eq!(failed["attempt_count"], 1);
    assert_eq!(failed["status"], "open");
    assert_eq!(failed["amount_due"], 2000);
    assert_eq!(failed["next_payment_attempt"], mar1 + 3600 + 3 * DAY);
    let past_due = &events[before + 9]["data"];
    assert_eq!(past_due["object"]["status"], "past_due");
    assert_eq!(past_due["previous_attributes"]["status"], "active");
    let sub = env.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(sub["status"], "past_due");
    let cust = env.get(&format!("/v1/customers/{cid}")).await;
    assert_eq!(cust["delinquent"], true);

    // Retries on days 3, 8 and 15 fail too; then the subscription is canceled.
    let before = env.events().await.len();
    env.advance(&clock, mar1 + 20 * DAY).await;
    let events = env.events().await;
    let t = types_since(&events, before);
    assert_eq!(
        t.iter().filter(|x| *x == "invoice.payment_failed").count(),
        3
    );
    assert_eq!(
        t.iter()
            .filter(|x| *x == "customer.subscription.deleted")
            .count(),
        1
    );
    let inv = env
        .get(&format!("/v1/invoices/{}", failed["id"].as_str().unwrap()))
        .await;
    assert_eq!(inv["attempt_count"], 4);
    assert_eq!(inv["next_payment_attempt"], Value::Null);
    let sub = env.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(sub["status"], "canceled");
    assert_eq!(sub["cancellation_details"]["reason"], "payment_failed");

    // Every event was delivered, signed, in order.
    let n = env
        .events()
        .await
        .iter()
        .filter(|e| e["type"] != "x")
        .count();
    let got = rx.wait_for(n).await;
    let sent: Vec<String> = env
        .events()
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let recv: Vec<String> = got
        .iter()
        .map(|d| d.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recv, sent);
    let secret = ep["secret"].as_str().unwrap();
    for d in &got {
        let (t, v1) = d.signature.split_once(",v1=").unwrap();
        let t: i64 = t.trim_start_matches("t=").parse().unwrap();
        assert_eq!(v1, stripe_sim::sign(secret, t, &d.body));
    }
}
