//! Every kind of response the simulator gives deserializes into async-stripe's generated types
//! (1.0 series), through both of its decoders: miniserde (what its client uses) and serde.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn check<T: serde::de::DeserializeOwned + miniserde::Deserialize>(what: &str, v: &Value) {
    let s = v.to_string();
    if let Err(e) = serde_json::from_str::<T>(&s) {
        panic!(
            "{what} does not deserialize (serde) into {}: {e}\n{}",
            std::any::type_name::<T>(),
            serde_json::to_string_pretty(v).unwrap()
        );
    }
    if miniserde::json::from_str::<T>(&s).is_err() {
        panic!(
            "{what} does not deserialize (miniserde) into {}\n{}",
            std::any::type_name::<T>(),
            serde_json::to_string_pretty(v).unwrap()
        );
    }
}

fn check_list<T: serde::de::DeserializeOwned + miniserde::Deserialize>(what: &str, v: &Value) {
    assert_eq!(v["object"], "list", "{what}");
    check::<stripe_types::List<T>>(what, v);
}

/// Deserializes an object by its `object` member; returns false for kinds without a type here.
fn check_object(what: &str, v: &Value) -> bool {
    use stripe_billing as b;
    use stripe_shared as s;
    match v["object"].as_str().unwrap_or_default() {
        "customer" => check::<s::Customer>(what, v),
        "product" => check::<s::Product>(what, v),
        "price" => check::<s::Price>(what, v),
        "plan" => check::<s::Plan>(what, v),
        "subscription" => check::<s::Subscription>(what, v),
        "subscription_item" => check::<s::SubscriptionItem>(what, v),
        "invoice" => check::<s::Invoice>(what, v),
        "invoiceitem" => check::<b::InvoiceItem>(what, v),
        "invoice_payment" => check::<s::InvoicePayment>(what, v),
        "line_item" => check::<s::InvoiceLineItem>(what, v),
        "payment_intent" => check::<s::PaymentIntent>(what, v),
        "payment_method" => check::<s::PaymentMethod>(what, v),
        "charge" => check::<s::Charge>(what, v),
        "refund" => check::<s::Refund>(what, v),
        "checkout.session" => check::<s::CheckoutSession>(what, v),
        "item" => check::<s::CheckoutSessionItem>(what, v),
        "coupon" => check::<s::Coupon>(what, v),
        "promotion_code" => check::<s::PromotionCode>(what, v),
        "discount" => check::<s::Discount>(what, v),
        "test_helpers.test_clock" => check::<s::TestHelpersTestClock>(what, v),
        "event" => check::<s::Event>(what, v),
        "billing.meter" => check::<b::BillingMeter>(what, v),
        "billing.meter_event" => check::<b::BillingMeterEvent>(what, v),
        "billing.meter_event_adjustment" => check::<b::BillingMeterEventAdjustment>(what, v),
        "billing.meter_event_summary" => check::<b::BillingMeterEventSummary>(what, v),
        "billing_portal.session" => check::<b::BillingPortalSession>(what, v),
        "billing_portal.configuration" => check::<b::BillingPortalConfiguration>(what, v),
        "webhook_endpoint" => check::<stripe_misc::WebhookEndpoint>(what, v),
        "subscription_schedule" => check::<s::SubscriptionSchedule>(what, v),
        _ => return false,
    }
    true
}

#[tokio::test]
async fn every_response_deserializes_into_async_stripe_types() {
    let env = start().await;
    let rx = Receiver::start(0).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut obj = |what: &str, v: &Value| {
        assert!(
            check_object(what, v),
            "no oracle type for {what}: {}",
            v["object"]
        );
        *seen
            .entry(v["object"].as_str().unwrap().to_string())
            .or_default() += 1;
    };

    let we = env.webhook_endpoint(&rx, &["*"]).await;
    obj("webhook endpoint", &we);
    obj(
        "webhook endpoint retrieve",
        &env.get(&format!(
            "/v1/webhook_endpoints/{}",
            we["id"].as_str().unwrap()
        ))
        .await,
    );
    check_list::<stripe_misc::WebhookEndpoint>(
        "webhook endpoints",
        &env.get("/v1/webhook_endpoints").await,
    );
    let clock = env.clock(JAN1).await;
    obj(
        "test clock",
        &env.get(&format!("/v1/test_helpers/test_clocks/{clock}"))
            .await,
    );
    let cus = env
        .post(
            "/v1/customers",
            &[
                ("email", "o@example.com"),
                ("name", "Oracle"),
                ("test_clock", &clock),
                ("payment_method", "pm_card_visa"),
                ("invoice_settings[default_payment_method]", "pm_card_visa"),
                ("metadata[k]", "v"),
            ],
        )
        .await;
    obj("customer", &cus);
    let cid = cus["id"].as_str().unwrap().to_string();
    obj(
        "customer update",
        &env.post(&format!("/v1/customers/{cid}"), &[("description", "x")])
            .await,
    );
    let prod = env
        .post(
            "/v1/products",
            &[
                ("name", "Pro"),
                ("default_price_data[currency]", "usd"),
                ("default_price_data[unit_amount]", "900"),
                ("default_price_data[recurring][interval]", "month"),
            ],
        )
        .await;
    obj("product", &prod);
    let pid = prod["id"].as_str().unwrap().to_string();
    let monthly = env
        .post(
            "/v1/prices",
            &[
                ("product", &pid),
                ("currency", "usd"),
                ("unit_amount", "2000"),
                ("recurring[interval]", "month"),
                ("lookup_key", "pro_m"),
            ],
        )
        .await;
    obj("price", &monthly);
    let monthly2 = env
        .post(
            "/v1/prices",
            &[
                ("product", &pid),
                ("currency", "usd"),
                ("unit_amount", "3000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let once = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Credits"),
                ("currency", "usd"),
                ("unit_amount_decimal", "1000.5"),
            ],
        )
        .await;
    obj("one-time price", &once);
    let meter = env
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Calls"),
                ("event_name", "call"),
                ("default_aggregation[formula]", "sum"),
                ("customer_mapping[event_payload_key]", "stripe_customer_id"),
                ("customer_mapping[type]", "by_id"),
            ],
        )
        .await;
    obj("meter", &meter);
    let mid = meter["id"].as_str().unwrap().to_string();
    let metered = env
        .post(
            "/v1/prices",
            &[
                ("product", &pid),
                ("currency", "usd"),
                ("unit_amount_decimal", "0.5"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", &mid),
            ],
        )
        .await;
    obj("metered price", &metered);

    let tiered = env
        .post(
            "/v1/prices",
            &[
                ("product", &pid),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "graduated"),
                ("tiers[0][up_to]", "5"),
                ("tiers[0][unit_amount]", "100"),
                ("tiers[0][flat_amount]", "50"),
                ("tiers[1][up_to]", "inf"),
                ("tiers[1][unit_amount_decimal]", "80.5"),
                ("expand[]", "tiers"),
            ],
        )
        .await;
    obj("tiered price", &tiered);
    let package = env
        .post(
            "/v1/prices",
            &[
                ("product", &pid),
                ("currency", "usd"),
                ("unit_amount", "1000"),
                ("transform_quantity[divide_by]", "10"),
                ("transform_quantity[round]", "down"),
            ],
        )
        .await;
    obj("package price", &package);
    obj(
        "meter event",
        &env.post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "call"),
                ("payload[stripe_customer_id]", &cid),
                ("payload[value]", "3"),
                ("identifier", "e1"),
            ],
        )
        .await,
    );
    obj(
        "meter adjustment",
        &env.post(
            "/v1/billing/meter_event_adjustments",
            &[("event_name", "call"), ("cancel[identifier]", "e1")],
        )
        .await,
    );
    obj(
        "meter update",
        &env.post(
            &format!("/v1/billing/meters/{mid}"),
            &[("display_name", "Calls!")],
        )
        .await,
    );
    let summaries = env.get(&format!("/v1/billing/meters/{mid}/event_summaries?customer={cid}&start_time={JAN1}&end_time={}&value_grouping_window=day", JAN1 + 2 * DAY)).await;
    check_list::<stripe_billing::BillingMeterEventSummary>("summaries", &summaries);
    check_list::<stripe_billing::BillingMeter>("meters", &env.get("/v1/billing/meters").await);

    let pct = env
        .post(
            "/v1/coupons",
            &[
                ("percent_off", "25.5"),
                ("duration", "repeating"),
                ("duration_in_months", "3"),
                ("name", "Launch"),
            ],
        )
        .await;
    obj("coupon percent", &pct);
    let amt = env
        .post(
            "/v1/coupons",
            &[
                ("id", "TENOFF"),
                ("amount_off", "1000"),
                ("currency", "usd"),
                ("duration", "once"),
                ("max_redemptions", "5"),
                ("redeem_by", &(JAN1 + 3650 * DAY).to_string()),
            ],
        )
        .await;
    obj("coupon amount", &amt);
    let promo = env
        .post(
            "/v1/promotion_codes",
            &[
                ("promotion[type]", "coupon"),
                ("promotion[coupon]", "TENOFF"),
                ("code", "WELCOME"),
                ("restrictions[first_time_transaction]", "true"),
            ],
        )
        .await;
    obj("promotion code", &promo);
    check_list::<stripe_shared::PromotionCode>(
        "promos",
        &env.get("/v1/promotion_codes?code=WELCOME").await,
    );
    check_list::<stripe_shared::Coupon>("coupons", &env.get("/v1/coupons").await);

    obj(
        "invoice item",
        &env.post(
            "/v1/invoiceitems",
            &[
                ("customer", &cid),
                ("amount", "500"),
                ("currency", "usd"),
                ("description", "Setup"),
            ],
        )
        .await,
    );
    obj(
        "invoice item by price",
        &env.post(
            "/v1/invoiceitems",
            &[
                ("customer", &cid),
                ("pricing[price]", once["id"].as_str().unwrap()),
                ("quantity", "2"),
            ],
        )
        .await,
    );

    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", monthly["id"].as_str().unwrap()),
                ("items[1][price]", metered["id"].as_str().unwrap()),
                ("discounts[0][coupon]", pct["id"].as_str().unwrap()),
                ("expand[]", "latest_invoice"),
                ("expand[]", "discounts"),
            ],
        )
        .await;
    obj("subscription", &sub);
    obj("expanded latest invoice", &sub["latest_invoice"]);
    obj("expanded discount", &sub["discounts"][0]);
    let sid = sub["id"].as_str().unwrap().to_string();
    let si = sub["items"]["data"][0]["id"].as_str().unwrap().to_string();
    obj(
        "subscription item",
        &env.get(&format!("/v1/subscription_items/{si}")).await,
    );
    check_list::<stripe_shared::SubscriptionItem>(
        "subscription items",
        &env.get(&format!("/v1/subscription_items?subscription={sid}"))
            .await,
    );
    let preview = env
        .post(
            "/v1/invoices/create_preview",
            &[
                ("customer", &cid),
                ("subscription", &sid),
                ("subscription_details[items][0][id]", &si),
                (
                    "subscription_details[items][0][price]",
                    monthly2["id"].as_str().unwrap(),
                ),
            ],
        )
        .await;
    obj("preview", &preview);
    obj(
        "upgrade",
        &env.post(
            &format!("/v1/subscriptions/{sid}"),
            &[
                ("items[0][id]", &si),
                ("items[0][price]", monthly2["id"].as_str().unwrap()),
                ("proration_behavior", "always_invoice"),
            ],
        )
        .await,
    );
    obj(
        "cancel at period end",
        &env.post(
            &format!("/v1/subscriptions/{sid}"),
            &[("cancel_at_period_end", "true")],
        )
        .await,
    );
    let trial = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", monthly["id"].as_str().unwrap()),
                ("trial_period_days", "14"),
            ],
        )
        .await;
    obj("trialing subscription", &trial);
    let tiered_sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &cid),
                ("items[0][price]", tiered["id"].as_str().unwrap()),
                ("items[0][quantity]", "7"),
                ("expand[]", "latest_invoice"),
                ("expand[]", "items.data.price.tiers"),
                ("expand[]", "items.data.plan.tiers"),
            ],
        )
        .await;
    obj("tiered subscription", &tiered_sub);
    assert_eq!(tiered_sub["latest_invoice"]["total"], 5 * 100 + 50 + 161);
    check_list::<stripe_shared::Subscription>(
        "subscriptions",
        &env.get(&format!("/v1/subscriptions?customer={cid}&status=all"))
            .await,
    );
    // A downgrade at the period end: a schedule from the subscription, two phases, released.
    let sched = env
        .post(
            "/v1/subscription_schedules",
            &[("from_subscription", tiered_sub["id"].as_str().unwrap())],
        )
        .await;
    obj("subscription schedule", &sched);
    let sid = sched["id"].as_str().unwrap().to_owned();
    let start = sched["phases"][0]["start_date"].to_string();
    let end = sched["phases"][0]["end_date"].to_string();
    let phased = env
        .post(
            &format!("/v1/subscription_schedules/{sid}"),
            &[
                ("phases[0][items][0][price]", tiered["id"].as_str().unwrap()),
                ("phases[0][items][0][quantity]", "7"),
                ("phases[0][start_date]", &start),
                ("phases[0][end_date]", &end),
                (
                    "phases[1][items][0][price]",
                    monthly["id"].as_str().unwrap(),
                ),
                ("phases[1][iterations]", "1"),
                ("end_behavior", "release"),
                ("proration_behavior", "none"),
                ("expand[]", "phases.items.price"),
            ],
        )
        .await;
    obj("subscription schedule with phases", &phased);
    assert_eq!(phased["phases"].as_array().map(Vec::len), Some(2));
    obj(
        "subscription with a schedule",
        &env.get(&format!(
            "/v1/subscriptions/{}",
            tiered_sub["id"].as_str().unwrap()
        ))
        .await,
    );
    let released = env
        .post(&format!("/v1/subscription_schedules/{sid}/release"), &[])
        .await;
    obj("released subscription schedule", &released);
    assert_eq!(released["status"], "released");
    check_list::<stripe_shared::SubscriptionSchedule>(
        "subscription schedules",
        &env.get(&format!("/v1/subscription_schedules?customer={cid}"))
            .await,
    );

    env.post(
        "/v1/invoiceitems",
        &[
            ("customer", &cid),
            ("amount", "1200"),
            ("currency", "usd"),
            ("description", "Overage"),
        ],
    )
    .await;
    let inv = env
        .post(
            "/v1/invoices",
            &[
                ("customer", &cid),
                ("pending_invoice_items_behavior", "include"),
                ("description", "Manual"),
            ],
        )
        .await;
    assert_eq!(inv["total"], 1200);
    obj("draft invoice", &inv);
    let iid = inv["id"].as_str().unwrap().to_string();
    check_list::<stripe_shared::InvoiceLineItem>(
        "invoice lines",
        &env.get(&format!("/v1/invoices/{iid}/lines")).await,
    );
    obj(
        "finalized invoice",
        &env.post(&format!("/v1/invoices/{iid}/finalize"), &[]).await,
    );
    obj(
        "paid invoice",
        &env.post(&format!("/v1/invoices/{iid}/pay"), &[]).await,
    );
    let with_payments = env
        .get(&format!(
            "/v1/invoices/{iid}?expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    obj("invoice with payments", &with_payments);
    let ip = &with_payments["payments"]["data"][0];
    obj("invoice payment", ip);
    assert_eq!(
        (ip["status"].as_str(), ip["amount_paid"].as_i64()),
        (Some("paid"), Some(1200))
    );
    assert_eq!(ip["payment"]["payment_intent"]["status"], "succeeded");
    check_list::<stripe_shared::InvoicePayment>(
        "invoice payments",
        &env.get(&format!("/v1/invoice_payments?invoice={iid}"))
            .await,
    );
    let inv2 = env.post("/v1/invoices", &[("customer", &cid)]).await;
    env.post(
        "/v1/invoiceitems",
        &[
            ("customer", &cid),
            ("amount", "700"),
            ("currency", "usd"),
            ("invoice", inv2["id"].as_str().unwrap()),
        ],
    )
    .await;
    env.post(
        &format!("/v1/invoices/{}/finalize", inv2["id"].as_str().unwrap()),
        &[],
    )
    .await;
    obj(
        "void invoice",
        &env.post(
            &format!("/v1/invoices/{}/void", inv2["id"].as_str().unwrap()),
            &[],
        )
        .await,
    );
    check_list::<stripe_shared::Invoice>(
        "invoices",
        &env.get(&format!("/v1/invoices?customer={cid}&limit=100"))
            .await,
    );
    check_list::<stripe_billing::InvoiceItem>("invoice items", &env.get("/v1/invoiceitems").await);

    let pi = env
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "usd"),
                ("customer", &cid),
                (
                    "payment_method",
                    cus["invoice_settings"]["default_payment_method"]
                        .as_str()
                        .unwrap(),
                ),
                ("confirm", "true"),
                ("off_session", "true"),
                ("metadata[topup]", "1"),
                ("expand[]", "latest_charge"),
            ],
        )
        .await;
    obj("payment intent", &pi);
    obj("expanded charge", &pi["latest_charge"]);
    let refund = env
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", pi["id"].as_str().unwrap()),
                ("amount", "1000"),
            ],
        )
        .await;
    obj("refund", &refund);
    obj(
        "charge after refund",
        &env.get(&format!(
            "/v1/charges/{}",
            pi["latest_charge"]["id"].as_str().unwrap()
        ))
        .await,
    );
    let (st, err) = env
        .try_post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_chargeDeclinedInsufficientFunds"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(st, 402);
    check::<stripe_shared::ApiErrors>("card error", &err["error"]);
    obj(
        "payment intent in card error",
        &err["error"]["payment_intent"],
    );
    let pending = env
        .post(
            "/v1/payment_intents",
            &[("amount", "800"), ("currency", "usd")],
        )
        .await;
    obj(
        "canceled payment intent",
        &env.post(
            &format!(
                "/v1/payment_intents/{}/cancel",
                pending["id"].as_str().unwrap()
            ),
            &[],
        )
        .await,
    );
    let pm = env
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2031"),
            ],
        )
        .await;
    obj("payment method", &pm);
    check_list::<stripe_shared::PaymentMethod>(
        "payment methods",
        &env.get(&format!("/v1/customers/{cid}/payment_methods"))
            .await,
    );
    check_list::<stripe_shared::Refund>("refunds", &env.get("/v1/refunds").await);
    check_list::<stripe_shared::Charge>("charges", &env.get("/v1/charges").await);
    check_list::<stripe_shared::PaymentIntent>(
        "payment intents",
        &env.get("/v1/payment_intents").await,
    );

    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "1500"),
                ("line_items[0][price_data][product_data][name]", "Top-up"),
                ("line_items[0][quantity]", "2"),
                ("success_url", "https://x.example/ok"),
                ("customer_email", "walkin@example.com"),
                ("customer_creation", "always"),
                ("expand[]", "line_items"),
            ],
        )
        .await;
    obj("open payment session", &cs);
    check_list::<stripe_shared::CheckoutSessionItem>("expanded line items", &cs["line_items"]);
    let (st, _, _) =
        pay_checkout(&env, cs["url"].as_str().unwrap(), "4242424242424242", None).await;
    assert_eq!(st, 303);
    obj(
        "complete payment session",
        &env.get(&format!(
            "/v1/checkout/sessions/{}?expand[]=payment_intent",
            cs["id"].as_str().unwrap()
        ))
        .await,
    );
    let cs2 = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", monthly["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
                ("allow_promotion_codes", "true"),
                ("subscription_data[trial_period_days]", "7"),
            ],
        )
        .await;
    let (st, _, body) = pay_checkout(
        &env,
        cs2["url"].as_str().unwrap(),
        "4242424242424242",
        Some("WELCOME"),
    )
    .await;
    assert_eq!(st, 303, "{body}");
    obj(
        "complete subscription session",
        &env.get(&format!(
            "/v1/checkout/sessions/{}?expand[]=subscription&expand[]=customer",
            cs2["id"].as_str().unwrap()
        ))
        .await,
    );
    check_list::<stripe_shared::CheckoutSessionItem>(
        "session line items",
        &env.get(&format!(
            "/v1/checkout/sessions/{}/line_items",
            cs2["id"].as_str().unwrap()
        ))
        .await,
    );
    check_list::<stripe_shared::CheckoutSession>(
        "sessions",
        &env.get("/v1/checkout/sessions").await,
    );
    let cs3 = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price]", once["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://x.example/ok"),
            ],
        )
        .await;
    obj(
        "expired session",
        &env.post(
            &format!(
                "/v1/checkout/sessions/{}/expire",
                cs3["id"].as_str().unwrap()
            ),
            &[],
        )
        .await,
    );

    let cfg = env
        .post(
            "/v1/billing_portal/configurations",
            &[
                ("features[subscription_update][enabled]", "true"),
                ("features[subscription_update][products][0][product]", &pid),
                (
                    "features[subscription_update][products][0][prices][0]",
                    monthly["id"].as_str().unwrap(),
                ),
                (
                    "features[subscription_update][products][0][prices][1]",
                    monthly2["id"].as_str().unwrap(),
                ),
                (
                    "features[subscription_update][default_allowed_updates][]",
                    "price",
                ),
                ("features[subscription_cancel][enabled]", "true"),
                ("features[payment_method_update][enabled]", "true"),
                ("default_return_url", "https://x.example/account"),
            ],
        )
        .await;
    obj("portal configuration", &cfg);
    obj(
        "portal session",
        &env.post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", &cid),
                ("configuration", cfg["id"].as_str().unwrap()),
            ],
        )
        .await,
    );

    env.advance(&clock, JAN1 + 40 * DAY).await;
    check_list::<stripe_shared::Customer>("customers", &env.get("/v1/customers?limit=2").await);
    check::<stripe_types::SearchList<stripe_shared::Customer>>(
        "search",
        &env.get("/v1/customers/search?query=email%3A%27o%40example.com%27")
            .await,
    );
    check_list::<stripe_shared::Product>("products", &env.get("/v1/products").await);
    check_list::<stripe_shared::Price>("prices", &env.get("/v1/prices?lookup_keys[]=pro_m").await);
    check_list::<stripe_shared::TestHelpersTestClock>(
        "clocks",
        &env.get("/v1/test_helpers/test_clocks").await,
    );
    let other = env
        .post("/v1/customers", &[("email", "gone@example.com")])
        .await;
    check::<stripe_shared::DeletedCustomer>(
        "deleted customer",
        &env.delete(&format!("/v1/customers/{}", other["id"].as_str().unwrap()))
            .await,
    );
    let (st, missing) = env.try_get("/v1/customers/cus_missing").await;
    assert_eq!(st, 404);
    check::<stripe_shared::ApiErrors>("resource_missing", &missing["error"]);
    obj(
        "canceled subscription",
        &env.delete(&format!(
            "/v1/subscriptions/{}",
            trial["id"].as_str().unwrap()
        ))
        .await,
    );

    // Every event, and the object inside it.
    let events = env.events().await;
    check_list::<stripe_shared::Event>("events", &env.get("/v1/events?limit=100").await);
    let mut kinds = BTreeMap::new();
    for e in &events {
        obj("event", e);
        let o = &e["data"]["object"];
        assert!(
            check_object(&format!("{} object", e["type"]), o),
            "no oracle type for event object {}",
            o["object"]
        );
        *kinds
            .entry(e["type"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    for must in [
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.upcoming",
        "invoice.voided",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
        "customer.updated",
        "customer.deleted",
        "billing.meter.created",
        "test_helpers.test_clock.ready",
        "invoiceitem.created",
        "customer.subscription.trial_will_end",
    ] {
        assert!(kinds.contains_key(must), "no {must} event; got {kinds:?}");
    }
    // Deliveries carry the same envelopes.
    let got = rx.wait_for(events.len()).await;
    for d in got {
        check::<stripe_shared::Event>("delivered event", &d.json());
    }
    for k in [
        "customer",
        "product",
        "price",
        "subscription",
        "invoice",
        "invoiceitem",
        "payment_intent",
        "charge",
        "refund",
        "payment_method",
        "checkout.session",
        "coupon",
        "promotion_code",
        "billing.meter",
        "billing_portal.session",
        "billing_portal.configuration",
        "test_helpers.test_clock",
        "discount",
        "subscription_item",
        "billing.meter_event",
        "billing.meter_event_adjustment",
        "invoice_payment",
    ] {
        assert!(seen.contains_key(k), "response kind {k} not exercised");
    }
}
