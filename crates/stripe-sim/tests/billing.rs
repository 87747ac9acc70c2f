//! Billing behaviour: prorations, previews, trials, coupons, cancellation, the portal, checkout
//! declines, refunds, and the state file.

mod common;
use common::*;
use serde_json::Value;

const APR1: i64 = JAN1 + 90 * DAY;

async fn catalog(env: &Env) -> (String, String, String) {
    let prod = env.post("/v1/products", &[("name", "Basic")]).await;
    let prem = env.post("/v1/products", &[("name", "Premium")]).await;
    let basic = env
        .post(
            "/v1/prices",
            &[
                ("product", prod["id"].as_str().unwrap()),
                ("currency", "usd"),
                ("unit_amount", "1000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let premium = env
        .post(
            "/v1/prices",
            &[
                ("product", prem["id"].as_str().unwrap()),
                ("currency", "usd"),
                ("unit_amount", "3000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    (
        prod["id"].as_str().unwrap().into(),
        basic["id"].as_str().unwrap().into(),
        premium["id"].as_str().unwrap().into(),
    )
}

async fn customer_on_clock(env: &Env, t: i64, pm: &str) -> (String, String) {
    let clock = env.clock(t).await;
    let c = env
        .post(
            "/v1/customers",
            &[
                ("email", "b@example.com"),
                ("test_clock", &clock),
                ("payment_method", pm),
                ("invoice_settings[default_payment_method]", pm),
            ],
        )
        .await;
    (clock, c["id"].as_str().unwrap().into())
}

#[tokio::test]
async fn upgrade_mid_period_prorates_by_time() {
    let env = start().await;
    let (_, basic, premium) = catalog(&env).await;
    let (clock, cid) = customer_on_clock(&env, APR1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[("customer", &cid), ("items[0][price]", &basic)],
        )
        .await;
    assert_eq!(sub["status"], "active");
    let sid = sub["id"].as_str().unwrap().to_string();
    let si = sub["items"]["data"][0]["id"].as_str().unwrap().to_string();
    env.advance(&clock, APR1 + 15 * DAY).await;

    let preview = env
        .post(
            "/v1/invoices/create_preview",
            &[
                ("subscription", &sid),
                ("subscription_details[items][0][id]", &si),
                ("subscription_details[items][0][price]", &premium),
            ],
        )
        .await;
    let amounts: Vec<i64> = preview["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![3000, -500, 1500]);
    assert_eq!(preview["total"], 4000);
    assert_eq!(preview["id"], Value::Null);
    assert_eq!(
        env.get(&format!("/v1/invoiceitems?customer={cid}")).await["data"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "a preview changes nothing"
    );

    let up = env
        .post(
            &format!("/v1/subscriptions/{sid}"),
            &[
                ("items[0][id]", &si),
                ("items[0][price]", &premium),
                ("proration_behavior", "always_invoice"),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    let inv = &up["latest_invoice"];
    assert_eq!(inv["billing_reason"], "subscription_update");
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["total"], 1000);
    let lines = inv["lines"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["amount"].as_i64(), lines[1]["amount"].as_i64()),
        (Some(-500), Some(1500))
    );
    assert_eq!(
        lines[0]["description"],
        "Unused time on Basic after 2026-04-16"
    );
    assert_eq!(
        lines[1]["description"],
        "Remaining time on Premium after 2026-04-16"
    );
    assert_eq!(
        lines[0]["parent"]["invoice_item_details"]["proration"],
        true
    );
    assert_eq!(lines[0]["period"]["start"], APR1 + 15 * DAY);
    assert_eq!(lines[0]["period"]["end"], APR1 + 30 * DAY);
    assert_eq!(up["items"]["data"][0]["price"]["id"], premium.as_str());
    assert_eq!(
        up["items"]["data"][0]["current_period_end"],
        APR1 + 30 * DAY
    );

    // Downgrade with create_prorations: the credit waits for the next renewal invoice.
    env.advance(&clock, APR1 + 20 * DAY).await;
    env.post(
        &format!("/v1/subscriptions/{sid}"),
        &[("items[0][id]", &si), ("items[0][price]", &basic)],
    )
    .await;
    let pending = env
        .get(&format!("/v1/invoiceitems?customer={cid}&pending=true"))
        .await;
    let mut p: Vec<i64> = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["amount"].as_i64().unwrap())
        .collect();
    p.sort();
    assert_eq!(p, vec![-1000, 333]);
    env.advance(&clock, APR1 + 30 * DAY + 2 * 3600).await;
    let invs = env
        .get(&format!("/v1/invoices?subscription={sid}&limit=1"))
        .await;
    let renewal = &invs["data"][0];
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    // Basic for the new period (1000), the credit for 10 unused days of Premium (−1000) and
    // the charge for 10 days of Basic (333).
    assert_eq!(renewal["subtotal"], 333);
    assert_eq!(renewal["amount_paid"], 333);
}

#[tokio::test]
async fn interval_change_restarts_the_cycle_and_invoices_now() {
    let env = start().await;
    let (prod, basic, _) = catalog(&env).await;
    let yearly = env
        .post(
            "/v1/prices",
            &[
                ("product", &prod),
                ("currency", "usd"),
                ("unit_amount", "10000"),
                ("recurring[interval]", "year"),
            ],
        )
        .await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[("customer", &cid), ("items[0][price]", &basic)],
        )
        .await;
    let sid = sub["id"].as_str().unwrap();
    env.advance(&clock, JAN1 + 10 * DAY).await;
    let up = env
        .post(
            &format!("/v1/subscriptions/{sid}"),
            &[
                (
                    "items[0][id]",
                    sub["items"]["data"][0]["id"].as_str().unwrap(),
                ),
                ("items[0][price]", yearly["id"].as_str().unwrap()),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    assert_eq!(up["billing_cycle_anchor"], JAN1 + 10 * DAY);
    assert_eq!(
        up["items"]["data"][0]["current_period_end"],
        JAN1 + 10 * DAY + 365 * DAY
    );
    let inv = &up["latest_invoice"];
    // 21 of 31 days unused on the monthly price: 1000 × 21/31 = 677.4 → 677 credited.
    assert_eq!(inv["total"], 10000 - 677);
    assert_eq!(inv["status"], "paid");
}

#[tokio::test]
async fn trial_then_first_paid_period() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", &basic),
                ("trial_period_days", "14"),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    assert_eq!(sub["status"], "trialing");
    assert_eq!(sub["trial_end"], JAN1 + 14 * DAY);
    assert_eq!(sub["latest_invoice"]["total"], 0);
    assert_eq!(sub["latest_invoice"]["status"], "paid");
    let sid = sub["id"].as_str().unwrap().to_string();
    let n0 = env.events().await.len();
    env.advance(&clock, JAN1 + 12 * DAY).await;
    let t: Vec<String> = env.events().await[n0..]
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        t,
        vec![
            "test_helpers.test_clock.advancing",
            "invoice.upcoming",
            "customer.subscription.trial_will_end",
            "test_helpers.test_clock.ready"
        ]
    );
    env.advance(&clock, JAN1 + 15 * DAY).await;
    let s = env
        .get(&format!("/v1/subscriptions/{sid}?expand[]=latest_invoice"))
        .await;
    assert_eq!(s["status"], "active");
    assert_eq!(
        s["items"]["data"][0]["current_period_start"],
        JAN1 + 14 * DAY
    );
    assert_eq!(
        s["items"]["data"][0]["current_period_end"],
        JAN1 + 14 * DAY + 31 * DAY
    );
    assert_eq!(s["latest_invoice"]["amount_paid"], 1000);
    assert_eq!(s["latest_invoice"]["billing_reason"], "subscription_cycle");
}

#[tokio::test]
async fn coupons_and_promotion_codes() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let price2k = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Pro"),
                ("currency", "usd"),
                ("unit_amount", "2000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let pct = env
        .post(
            "/v1/coupons",
            &[
                ("percent_off", "25.5"),
                ("duration", "repeating"),
                ("duration_in_months", "3"),
            ],
        )
        .await;
    assert_eq!(pct["percent_off"], 25.5);
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", price2k["id"].as_str().unwrap()),
                ("discounts[0][coupon]", pct["id"].as_str().unwrap()),
            ],
        )
        .await;
    let sid = sub["id"].as_str().unwrap();
    for m in 1..=3 {
        env.advance(&clock, stripe_sim::util::add_months(JAN1, m) + 2 * 3600)
            .await;
    }
    let invs = env.get(&format!("/v1/invoices?subscription={sid}")).await;
    let totals: Vec<i64> = invs["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|i| i["total"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, vec![1490, 1490, 1490, 2000]);
    let first = invs["data"].as_array().unwrap().last().unwrap();
    assert_eq!(first["total_discount_amounts"][0]["amount"], 510);
    assert_eq!(
        first["lines"]["data"][0]["discount_amounts"][0]["amount"],
        510
    );

    let once = env
        .post(
            "/v1/coupons",
            &[
                ("id", "ONCE10"),
                ("amount_off", "1000"),
                ("currency", "usd"),
                ("duration", "once"),
                ("max_redemptions", "1"),
            ],
        )
        .await;
    assert_eq!(once["id"], "ONCE10");
    env.post(
        "/v1/promotion_codes",
        &[
            ("promotion[type]", "coupon"),
            ("promotion[coupon]", "ONCE10"),
            ("code", "HELLO"),
        ],
    )
    .await;
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", &basic),
                ("line_items[0][quantity]", "2"),
                ("success_url", "https://x.example/ok"),
                ("allow_promotion_codes", "true"),
            ],
        )
        .await;
    let (st, _, body) = pay_checkout(
        &env,
        cs["url"].as_str().unwrap(),
        "4242424242424242",
        Some("nope"),
    )
    .await;
    assert_eq!(st, 402);
    assert!(body.contains("This code is invalid."));
    let (st, _, body) = pay_checkout(
        &env,
        cs["url"].as_str().unwrap(),
        "4242424242424242",
        Some("hello"),
    )
    .await;
    assert_eq!(st, 303, "{body}");
    let done = env
        .get(&format!(
            "/v1/checkout/sessions/{}",
            cs["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(done["amount_total"], 1000);
    assert_eq!(done["total_details"]["amount_discount"], 1000);
    let s2 = env
        .get(&format!(
            "/v1/subscriptions/{}?expand[]=latest_invoice",
            done["subscription"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s2["latest_invoice"]["amount_paid"], 1000);
    assert_eq!(env.get("/v1/coupons/ONCE10").await["times_redeemed"], 1);
    assert_eq!(env.get("/v1/coupons/ONCE10").await["valid"], false);
    let (st, v) = env
        .try_post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", &basic),
                ("discounts[0][coupon]", "ONCE10"),
            ],
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("coupon_expired"))
    );
    let expired = env
        .post(
            "/v1/coupons",
            &[
                ("percent_off", "5"),
                ("redeem_by", &(JAN1 - DAY).to_string()),
            ],
        )
        .await;
    let (st, _) = env
        .try_post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", &basic),
                ("discounts[0][coupon]", expired["id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn portal_cancels_at_period_end_switches_prices_and_period_end_cancels() {
    let env = start().await;
    let (_, basic, premium) = catalog(&env).await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let prem_prod = env.get(&format!("/v1/prices/{premium}")).await["product"]
        .as_str()
        .unwrap()
        .to_string();
    let basic_prod = env.get(&format!("/v1/prices/{basic}")).await["product"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = env
        .post(
            "/v1/billing_portal/configurations",
            &[
                ("features[subscription_cancel][enabled]", "true"),
                ("features[subscription_cancel][mode]", "at_period_end"),
                ("features[subscription_update][enabled]", "true"),
                ("features[subscription_update][proration_behavior]", "none"),
                (
                    "features[subscription_update][products][0][product]",
                    &basic_prod,
                ),
                (
                    "features[subscription_update][products][0][prices][0]",
                    &basic,
                ),
                (
                    "features[subscription_update][products][1][product]",
                    &prem_prod,
                ),
                (
                    "features[subscription_update][products][1][prices][0]",
                    &premium,
                ),
                ("features[payment_method_update][enabled]", "true"),
                ("features[invoice_history][enabled]", "true"),
            ],
        )
        .await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[("customer", &cid), ("items[0][price]", &basic)],
        )
        .await;
    let sid = sub["id"].as_str().unwrap().to_string();
    let ps = env
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", &cid),
                ("configuration", cfg["id"].as_str().unwrap()),
                ("return_url", "https://app.example/account"),
            ],
        )
        .await;
    let url = ps["url"].as_str().unwrap().to_string();
    let html = env.html(&url).await;
    assert!(
        html.contains("Switch to Premium")
            && html.contains("Cancel subscription")
            && html.contains("$10.00")
            && html.contains("https://app.example/account"),
        "{html}"
    );
    let post = |action: &str, pairs: Vec<(&str, String)>| {
        let u = format!("{url}/{action}");
        let body = form(
            &pairs
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        );
        let http = env.http.clone();
        async move {
            http.post(u)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(
            "switch",
            vec![("subscription", sid.clone()), ("price", premium.clone())]
        )
        .await,
        303
    );
    let s = env.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s["items"]["data"][0]["price"]["id"], premium.as_str());
    assert_eq!(
        env.get(&format!("/v1/invoiceitems?customer={cid}")).await["data"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "proration_behavior=none"
    );
    assert_eq!(
        post("cancel", vec![("subscription", sid.clone())]).await,
        303
    );
    let s = env.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s["cancel_at_period_end"], true);
    assert_eq!(s["status"], "active");
    let ev = env
        .get("/v1/events?type=customer.subscription.updated&limit=1")
        .await;
    assert_eq!(
        ev["data"][0]["data"]["previous_attributes"]["cancel_at_period_end"],
        false
    );
    let n0 = env.events().await.len();
    env.advance(&clock, JAN1 + 32 * DAY).await;
    let t: Vec<String> = env.events().await[n0..]
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        t,
        vec![
            "test_helpers.test_clock.advancing",
            "customer.subscription.deleted",
            "test_helpers.test_clock.ready"
        ]
    );
    let s = env.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s["status"], "canceled");
    assert_eq!(s["ended_at"], JAN1 + 31 * DAY);
}

#[tokio::test]
async fn checkout_declines_and_failing_cards() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", &basic),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
            ],
        )
        .await;
    let url = cs["url"].as_str().unwrap();
    let (st, _, body) = pay_checkout(&env, url, "4000 0000 0000 0002", None).await;
    assert_eq!(st, 402);
    assert!(body.contains("Your card was declined."));
    let (st, _, body) = pay_checkout(&env, url, "4000 0000 0000 0341", None).await;
    assert_eq!(
        st, 402,
        "a card that cannot be charged fails the first payment"
    );
    assert!(body.contains("Your card was declined."));
    assert_eq!(
        env.get(&format!(
            "/v1/checkout/sessions/{}",
            cs["id"].as_str().unwrap()
        ))
        .await["status"],
        "open"
    );
    assert_eq!(
        env.get("/v1/subscriptions").await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (st, loc, _) = pay_checkout(&env, url, "4242424242424242", None).await;
    assert_eq!((st, loc.as_deref()), (303, Some("https://x.example/ok")));
    let (st, _, _) = pay_checkout(&env, url, "4242424242424242", None).await;
    assert_eq!(st, 402, "a completed session cannot be paid twice");

    // With a trial, 0341 is accepted; the charge at the trial's end fails.
    let clock = env.clock(JAN1).await;
    let c = env.post("/v1/customers", &[("test_clock", &clock)]).await;
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", c["id"].as_str().unwrap()),
                ("line_items[0][price]", &basic),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
                ("subscription_data[trial_period_days]", "7"),
            ],
        )
        .await;
    let (st, _, _) =
        pay_checkout(&env, cs["url"].as_str().unwrap(), "4000000000000341", None).await;
    assert_eq!(st, 303);
    let done = env
        .get(&format!(
            "/v1/checkout/sessions/{}",
            cs["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(done["payment_status"], "no_payment_required");
    env.advance(&clock, JAN1 + 8 * DAY).await;
    let s = env
        .get(&format!(
            "/v1/subscriptions/{}",
            done["subscription"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s["status"], "past_due");

    // Off-session top-up with a card that attaches but fails later.
    let (st, e) = env
        .try_post(
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "usd"),
                ("customer", c["id"].as_str().unwrap()),
                (
                    "payment_method",
                    s["default_payment_method"].as_str().unwrap(),
                ),
                ("off_session", "true"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(st, 402);
    assert_eq!(e["error"]["decline_code"], "generic_decline");
}

#[tokio::test]
async fn payment_intents_and_refunds() {
    let env = start().await;
    let c = env
        .post("/v1/customers", &[("payment_method", "pm_card_visa")])
        .await;
    let pm = env
        .get(&format!(
            "/v1/customers/{}/payment_methods",
            c["id"].as_str().unwrap()
        ))
        .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pi = env
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "usd"),
                ("customer", c["id"].as_str().unwrap()),
                ("payment_method", &pm),
                ("off_session", "true"),
                ("confirm", "true"),
                ("metadata[credits]", "500"),
            ],
        )
        .await;
    assert_eq!(
        (pi["status"].as_str(), pi["amount_received"].as_i64()),
        (Some("succeeded"), Some(5000))
    );
    let r1 = env
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", pi["id"].as_str().unwrap()),
                ("amount", "2000"),
            ],
        )
        .await;
    assert_eq!(
        (r1["amount"].as_i64(), r1["status"].as_str()),
        (Some(2000), Some("succeeded"))
    );
    let ch = env
        .get(&format!(
            "/v1/charges/{}",
            pi["latest_charge"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (ch["amount_refunded"].as_i64(), ch["refunded"].as_bool()),
        (Some(2000), Some(false))
    );
    env.post("/v1/refunds", &[("charge", ch["id"].as_str().unwrap())])
        .await;
    let ch = env
        .get(&format!("/v1/charges/{}", ch["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (ch["amount_refunded"].as_i64(), ch["refunded"].as_bool()),
        (Some(5000), Some(true))
    );
    let (st, v) = env
        .try_post("/v1/refunds", &[("charge", ch["id"].as_str().unwrap())])
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
    let ev = env.get("/v1/events?type=charge.refunded").await;
    assert_eq!(ev["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        ev["data"][1]["data"]["previous_attributes"]["amount_refunded"],
        0
    );
    let unconfirmed = env
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "usd"),
                ("customer", c["id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(unconfirmed["status"], "requires_payment_method");
    let ok = env
        .post(
            &format!(
                "/v1/payment_intents/{}/confirm",
                unconfirmed["id"].as_str().unwrap()
            ),
            &[("payment_method", &pm)],
        )
        .await;
    assert_eq!(ok["status"], "succeeded");
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile_dir();
    let path = dir.join("state.json");
    let cfg = stripe_sim::Config {
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let env = start_with(cfg.clone()).await;
    let c = env
        .post("/v1/customers", &[("email", "keep@example.com")])
        .await;
    env.sim.shutdown().await;
    let env = start_with(cfg).await;
    let back = env
        .get(&format!("/v1/customers/{}", c["id"].as_str().unwrap()))
        .await;
    assert_eq!(back["email"], "keep@example.com");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "stripe-sim-state-{}-{}",
        std::process::id(),
        stripe_sim::util::random_chars(6)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn binary_prints_help_and_rejects_bad_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--state-file"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-sim"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn error_if_incomplete_refuses_and_leaves_no_subscription() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let c = env
        .post(
            "/v1/customers",
            &[
                ("payment_method", "pm_card_chargeCustomerFail"),
                (
                    "invoice_settings[default_payment_method]",
                    "pm_card_chargeCustomerFail",
                ),
            ],
        )
        .await;
    let cid = c["id"].as_str().unwrap();
    let (st, e) = env
        .try_post(
            "/v1/subscriptions",
            &[
                ("customer", cid),
                ("items[0][price]", &basic),
                ("payment_behavior", "error_if_incomplete"),
            ],
        )
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (402, Some("card_declined"))
    );
    assert_eq!(
        env.get(&format!("/v1/subscriptions?customer={cid}&status=all"))
            .await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        env.get(&format!("/v1/invoices?customer={cid}")).await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let types = env.event_types().await;
    assert!(
        !types
            .iter()
            .any(|t| t.starts_with("customer.subscription.") || t.starts_with("invoice.")),
        "{types:?}"
    );
    // allow_incomplete (the default) keeps an incomplete subscription with an open invoice.
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cid),
                ("items[0][price]", &basic),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    assert_eq!(sub["status"], "incomplete");
    assert_eq!(sub["latest_invoice"]["status"], "open");
    // Paying it with a good card activates the subscription.
    let inv = sub["latest_invoice"]["id"].as_str().unwrap();
    let paid = env
        .post(
            &format!("/v1/invoices/{inv}/pay"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(
        env.get(&format!(
            "/v1/subscriptions/{}",
            sub["id"].as_str().unwrap()
        ))
        .await["status"],
        "active"
    );
}

#[tokio::test]
async fn exhausted_retries_can_leave_the_subscription_unpaid() {
    let env = start_with(stripe_sim::Config {
        after_retries: stripe_sim::AfterRetries::Unpaid,
        retry_schedule_days: vec![2],
        ..Default::default()
    })
    .await;
    let (_, basic, _) = catalog(&env).await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[("customer", &cid), ("items[0][price]", &basic)],
        )
        .await;
    let sid = sub["id"].as_str().unwrap().to_string();
    let bad = env
        .post(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", &cid)],
        )
        .await;
    env.post(
        &format!("/v1/customers/{cid}"),
        &[(
            "invoice_settings[default_payment_method]",
            bad["id"].as_str().unwrap(),
        )],
    )
    .await;
    env.advance(&clock, JAN1 + 31 * DAY + 2 * 3600).await;
    assert_eq!(
        env.get(&format!("/v1/subscriptions/{sid}")).await["status"],
        "past_due"
    );
    env.advance(&clock, JAN1 + 34 * DAY).await;
    let s = env.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s["status"], "unpaid");
    let failed = env.get("/v1/events?type=invoice.payment_failed").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        failed["data"][0]["data"]["object"]["next_payment_attempt"],
        Value::Null
    );
    // While unpaid, renewals are drafted and left alone.
    env.advance(&clock, JAN1 + 59 * DAY + 2 * 3600).await;
    let inv = env
        .get(&format!("/v1/invoices?subscription={sid}&limit=1"))
        .await;
    assert_eq!(inv["data"][0]["status"], "draft");
    assert_eq!(inv["data"][0]["auto_advance"], false);
}

#[tokio::test]
async fn binary_serves_on_a_random_port_as_a_child_process() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-sim"))
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/customers"))
        .bearer_auth(KEY)
        .form(&[("email", "child@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("cus_"));
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn tiered_volume_and_package_prices() {
    let env = start().await;
    let prod = env.post("/v1/products", &[("name", "Storage")]).await;
    let pid = prod["id"].as_str().unwrap();
    let gb = env.sum_meter("GB", "gb").await;
    let calls = env.sum_meter("Calls", "calls").await;
    let graduated = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", gb["id"].as_str().unwrap()),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "graduated"),
                ("tiers[0][up_to]", "1000"),
                ("tiers[0][unit_amount]", "0"),
                ("tiers[1][up_to]", "5000"),
                ("tiers[1][unit_amount_decimal]", "0.5"),
                ("tiers[1][flat_amount]", "100"),
                ("tiers[2][up_to]", "inf"),
                ("tiers[2][unit_amount_decimal]", "0.25"),
                ("expand[]", "tiers"),
            ],
        )
        .await;
    assert_eq!(graduated["billing_scheme"], "tiered");
    assert_eq!(graduated["unit_amount"], Value::Null);
    assert_eq!(graduated["tiers"][1]["up_to"], 5000);
    assert_eq!(graduated["tiers"][2]["up_to"], Value::Null);
    let package = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "300"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", calls["id"].as_str().unwrap()),
                ("transform_quantity[divide_by]", "1000"),
                ("transform_quantity[round]", "up"),
            ],
        )
        .await;
    assert_eq!(package["transform_quantity"]["divide_by"], 1000);
    let volume = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "volume"),
                ("tiers[0][up_to]", "10"),
                ("tiers[0][unit_amount]", "500"),
                ("tiers[1][up_to]", "inf"),
                ("tiers[1][unit_amount]", "400"),
            ],
        )
        .await;
    let (st, _) = env
        .try_post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "volume"),
                ("tiers[0][up_to]", "10"),
                ("tiers[0][unit_amount]", "5"),
            ],
        )
        .await;
    assert_eq!(st, 400, "the last tier must be up_to=inf");

    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", volume["id"].as_str().unwrap()),
                ("items[0][quantity]", "12"),
                ("items[1][price]", graduated["id"].as_str().unwrap()),
                ("items[2][price]", package["id"].as_str().unwrap()),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    assert_eq!(sub["latest_invoice"]["amount_paid"], 12 * 400);
    env.advance(&clock, JAN1 + 5 * DAY).await;
    for (name, v, id) in [("gb", "6000", "g1"), ("calls", "2500", "c1")] {
        env.post(
            "/v1/billing/meter_events",
            &[
                ("event_name", name),
                ("payload[stripe_customer_id]", &cid),
                ("payload[value]", v),
                ("identifier", id),
            ],
        )
        .await;
    }
    env.advance(&clock, JAN1 + 31 * DAY + 2 * 3600).await;
    let inv = env
        .get(&format!(
            "/v1/invoices?subscription={}&limit=1",
            sub["id"].as_str().unwrap()
        ))
        .await;
    let lines: Vec<(i64, Value)> = inv["data"][0]["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["amount"].as_i64().unwrap(), l["quantity"].clone()))
        .collect();
    // 12 seats at the volume rate; 1000 free GB, 4000 at 0.5¢ plus a 100¢ flat fee, 1000 at 0.25¢;
    // 2500 calls billed as 3 packs of 1000.
    assert_eq!(
        lines,
        vec![
            (4800, Value::from(12)),
            (2350, Value::from(6000)),
            (900, Value::from(2500))
        ]
    );
    assert_eq!(inv["data"][0]["total"], 4800 + 2350 + 900);
}

#[tokio::test]
async fn default_incomplete_waits_for_the_payment_intent_to_be_confirmed() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let c = env
        .post("/v1/customers", &[("email", "elements@example.com")])
        .await;
    let cid = c["id"].as_str().unwrap();
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cid),
                ("items[0][price]", &basic),
                ("payment_behavior", "default_incomplete"),
                ("expand[]", "latest_invoice.payments"),
            ],
        )
        .await;
    assert_eq!(sub["status"], "incomplete");
    let inv = &sub["latest_invoice"];
    assert_eq!(inv["status"], "open");
    let pi = &env
        .get(&format!(
            "/v1/payment_intents/{}",
            inv["payments"]["data"][0]["payment"]["payment_intent"]
                .as_str()
                .unwrap()
        ))
        .await;
    assert_eq!(pi["status"], "requires_payment_method");
    assert_eq!(pi["amount"], 1000);
    assert!(pi["client_secret"]
        .as_str()
        .unwrap()
        .starts_with(pi["id"].as_str().unwrap()));
    let (st, e) = env
        .try_post(
            &format!("/v1/payment_intents/{}/confirm", pi["id"].as_str().unwrap()),
            &[("payment_method", "pm_card_chargeDeclined")],
        )
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (402, Some("card_declined"))
    );
    assert_eq!(
        env.get(&format!(
            "/v1/subscriptions/{}",
            sub["id"].as_str().unwrap()
        ))
        .await["status"],
        "incomplete"
    );
    let ok = env
        .post(
            &format!("/v1/payment_intents/{}/confirm", pi["id"].as_str().unwrap()),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(
        env.get(&format!("/v1/invoices/{}", inv["id"].as_str().unwrap()))
            .await["status"],
        "paid"
    );
    assert_eq!(
        env.get(&format!(
            "/v1/subscriptions/{}",
            sub["id"].as_str().unwrap()
        ))
        .await["status"],
        "active"
    );
}

#[tokio::test]
async fn hard_declines_wait_for_a_new_card_in_the_portal() {
    let env = start().await;
    let (_, basic, _) = catalog(&env).await;
    let (clock, cid) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[("customer", &cid), ("items[0][price]", &basic)],
        )
        .await;
    let sid = sub["id"].as_str().unwrap().to_string();
    // The saved card is reported lost after it was saved.
    env.sim
        .with(|s| {
            for pm in s.w.payment_methods.values_mut() {
                pm.behavior = stripe_sim::state::CardBehavior::Declines {
                    code: "card_declined".into(),
                    decline_code: "lost_card".into(),
                    message: "Your card was declined.".into(),
                };
            }
        })
        .unwrap();
    env.advance(&clock, JAN1 + 31 * DAY + 2 * 3600).await;
    let s = env.get(&format!("/v1/subscriptions/{sid}")).await;
    assert_eq!(s["status"], "past_due");
    let inv = env
        .get(
            s["latest_invoice"]
                .as_str()
                .map(|i| format!("/v1/invoices/{i}"))
                .unwrap()
                .as_str(),
        )
        .await;
    assert_eq!(inv["status"], "open");
    assert_eq!(inv["attempt_count"], 1);
    assert_eq!(inv["next_payment_attempt"], Value::Null);
    let pi = env
        .get(&format!(
            "/v1/invoice_payments?invoice={}",
            inv["id"].as_str().unwrap()
        ))
        .await;
    let pi = pi["data"][0]["payment"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let pi = env.get(&format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(pi["last_payment_error"]["decline_code"], "lost_card");
    // Not retried: three weeks on, still one attempt and past due.
    env.advance(&clock, JAN1 + 52 * DAY).await;
    let again = env
        .get(&format!("/v1/invoices/{}", inv["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (again["status"].clone(), again["attempt_count"].clone()),
        ("open".into(), 1.into())
    );
    assert_eq!(
        env.get(&format!("/v1/subscriptions/{sid}")).await["status"],
        "past_due"
    );
    // A new card in the portal: the open invoice is retried at once and paid.
    let ps = env
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", &cid),
                ("return_url", "https://app.example/account"),
            ],
        )
        .await;
    let url = format!("{}/card", ps["url"].as_str().unwrap());
    let status = env
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("card_number", "4242424242424242"),
            ("card_expiry", "12 / 34"),
        ]))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 303);
    let paid = env
        .get(&format!("/v1/invoices/{}", inv["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (
            paid["status"].clone(),
            paid["attempt_count"].clone(),
            paid["amount_paid"].clone()
        ),
        ("paid".into(), 2.into(), 1000.into())
    );
    assert_eq!(
        env.get(&format!("/v1/subscriptions/{sid}")).await["status"],
        "active"
    );
}

/// Usage of the ended period reported while its renewal is a draft (Stripe's hour before
/// finalization) is billed on that renewal, rated by the graduated tiers; an identifier is
/// counted once; an event older than 35 days is refused.
#[tokio::test]
async fn meter_events_in_the_draft_hour_are_billed_on_the_renewal() {
    let env = start().await;
    let (prod, basic, _) = catalog(&env).await;
    let meter = env.sum_meter("Compute", "compute").await;
    let metered = env
        .post(
            "/v1/prices",
            &[
                ("product", &prod),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", meter["id"].as_str().unwrap()),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "graduated"),
                ("tiers[0][up_to]", "300000"),
                ("tiers[0][unit_amount_decimal]", "0"),
                ("tiers[1][up_to]", "inf"),
                ("tiers[1][unit_amount_decimal]", "0.004"),
            ],
        )
        .await;
    let (clock, cus) = customer_on_clock(&env, JAN1, "pm_card_visa").await;
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cus),
                ("items[0][price]", &basic),
                ("items[1][price]", metered["id"].as_str().unwrap()),
            ],
        )
        .await;
    let feb1 = JAN1 + 31 * DAY;
    env.advance(&clock, feb1 + 60).await;
    let list = env
        .get(&format!(
            "/v1/invoices?subscription={}",
            sub["id"].as_str().unwrap()
        ))
        .await;
    let renewal = list["data"][0].clone();
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    assert_eq!(renewal["status"], "draft");
    assert_eq!(renewal["total"], 1000);
    let event = |id: &'static str, ts: i64| {
        let cus = cus.clone();
        let env = &env;
        async move {
            env.try_post(
                "/v1/billing/meter_events",
                &[
                    ("event_name", "compute"),
                    ("payload[stripe_customer_id]", &cus),
                    ("payload[value]", "350000"),
                    ("timestamp", &ts.to_string()),
                    ("identifier", id),
                ],
            )
            .await
        }
    };
    assert_eq!(event("jan", feb1 - 1).await.0, 200);
    let (status, dup) = event("jan", feb1 - 1).await;
    assert_eq!(status, 400);
    assert_eq!(dup["error"]["code"], "resource_already_exists");
    let (status, old) = event("old", JAN1 - 10 * DAY).await;
    assert_eq!(status, 400);
    assert_eq!(old["error"]["code"], "timestamp_too_far_in_past");
    env.advance(&clock, feb1 + 2 * 3600).await;
    let paid = env
        .get(&format!("/v1/invoices/{}", renewal["id"].as_str().unwrap()))
        .await;
    assert_eq!(paid["status"], "paid");
    // 1000 base + (350000 − 300000) × 0.004 = 200.
    assert_eq!(paid["total"], 1200);
    assert_eq!(paid["amount_paid"], 1200);
}
