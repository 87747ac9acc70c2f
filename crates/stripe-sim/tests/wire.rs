//! Wire format: authentication, errors, idempotency, pagination, expansion, search, the
//! catalog's lookup keys, meters, and fault injection.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn authentication_and_error_shapes() {
    let env = start().await;
    let r = env
        .http
        .get(format!("{}/v1/customers", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = env
        .http
        .get(format!("{}/v1/customers", env.base))
        .bearer_auth("sk_live_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = env
        .http
        .get(format!("{}/v1/customers", env.base))
        .basic_auth("sk_test_basic", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .headers()
        .get("request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("req_"));

    let (st, v) = env.try_get("/v1/nothing_here").await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (st, v) = env.try_get("/v1/customers/cus_nope").await;
    assert_eq!(
        (
            st,
            v["error"]["code"].as_str(),
            v["error"]["param"].as_str()
        ),
        (404, Some("resource_missing"), Some("id"))
    );
    assert_eq!(v["error"]["message"], "No such customer: 'cus_nope'");
    let (st, v) = env
        .try_post(
            "/v1/subscriptions",
            &[("customer", "cus_nope"), ("items[0][price]", "price_x")],
        )
        .await;
    assert_eq!((st, v["error"]["param"].as_str()), (404, Some("customer")));
    let (st, v) = env
        .try_post("/v1/customers", &[("emial", "typo@example.com")])
        .await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("emial")));
    assert_eq!(v["error"]["message"], "Received unknown parameter: emial");
    let (st, v) = env.try_post("/v1/prices", &[("currency", "usd")]).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("parameter_missing"))
    );
    let (st, v) = env
        .try_post(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_chargeDeclined"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(st, 402);
    assert_eq!(v["error"]["type"], "card_error");
    assert_eq!(v["error"]["code"], "card_declined");
    assert_eq!(v["error"]["decline_code"], "generic_decline");
    assert_eq!(
        v["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
}

#[tokio::test]
async fn idempotency_replays_and_rejects_changed_parameters() {
    let env = start().await;
    let (st1, a) = env
        .req(
            Method::POST,
            "/v1/customers",
            &[("email", "i@example.com")],
            Some("key-1"),
        )
        .await;
    let r = env
        .http
        .post(format!("{}/v1/customers", env.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "key-1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=i%40example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let b: Value = r.json().await.unwrap();
    assert_eq!((st1, &a["id"]), (200, &b["id"]));
    let (st, c) = env
        .req(
            Method::POST,
            "/v1/customers",
            &[("email", "other@example.com")],
            Some("key-1"),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(c["error"]["type"], "idempotency_error");
    let list = env.get("/v1/customers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // A declined charge is replayed too, without charging again.
    let p = [
        ("amount", "900"),
        ("currency", "usd"),
        ("payment_method", "pm_card_chargeDeclined"),
        ("confirm", "true"),
    ];
    let (s1, e1) = env
        .req(Method::POST, "/v1/payment_intents", &p, Some("pay-1"))
        .await;
    let (s2, e2) = env
        .req(Method::POST, "/v1/payment_intents", &p, Some("pay-1"))
        .await;
    assert_eq!((s1, s2), (402, 402));
    assert_eq!(e1, e2);
    assert_eq!(
        env.get("/v1/charges").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn pagination_expansion_and_search() {
    let env = start().await;
    let mut ids = vec![];
    for i in 0..5 {
        let c = env
            .post(
                "/v1/customers",
                &[
                    ("email", &format!("p{i}@example.com")),
                    ("metadata[tally_id]", &format!("t{i}")),
                ],
            )
            .await;
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = vec![];
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/v1/customers?limit=2&starting_after={a}"),
            None => "/v1/customers?limit=2".into(),
        };
        let page = env.get(&q).await;
        assert_eq!(page["object"], "list");
        assert_eq!(page["url"], "/v1/customers");
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        after = data.last().map(|c| c["id"].as_str().unwrap().to_string());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen, ids);
    let before = env
        .get(&format!("/v1/customers?limit=2&ending_before={}", ids[3]))
        .await;
    let got: Vec<&str> = before["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(before["has_more"], true);

    let s = env
        .get("/v1/customers/search?query=metadata%5B%27tally_id%27%5D%3A%27t3%27")
        .await;
    assert_eq!(s["object"], "search_result");
    assert_eq!(s["data"].as_array().unwrap().len(), 1);
    assert_eq!(s["data"][0]["email"], "p3@example.com");
    let s = env.get("/v1/customers/search?query=email%3A%27p1%40example.com%27%20OR%20email%3A%27p2%40example.com%27").await;
    assert_eq!(s["data"].as_array().unwrap().len(), 2);
    let l = env.get("/v1/customers?email=p4%40example.com").await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);

    let price = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Basic"),
                ("currency", "usd"),
                ("unit_amount", "500"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let cid = &ids[0];
    let sub = env
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cid),
                ("items[0][price]", price["id"].as_str().unwrap()),
                ("collection_method", "send_invoice"),
                ("days_until_due", "30"),
                ("expand[]", "customer"),
                ("expand[]", "latest_invoice"),
                ("expand[]", "items.data.price.product"),
            ],
        )
        .await;
    assert_eq!(sub["customer"]["email"], "p4@example.com");
    assert_eq!(sub["latest_invoice"]["object"], "invoice");
    assert_eq!(sub["items"]["data"][0]["price"]["product"]["name"], "Basic");
    let (st, v) = env
        .try_get(&format!(
            "/v1/subscriptions/{}?expand[]=nonsense",
            sub["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("expand")));
    let subs = env
        .get(&format!(
            "/v1/subscriptions?customer={cid}&expand[]=data.customer"
        ))
        .await;
    assert_eq!(subs["data"][0]["customer"]["id"], cid.as_str());
}

#[tokio::test]
async fn prices_lookup_keys_and_transfer() {
    let env = start().await;
    let prod = env.post("/v1/products", &[("name", "Team")]).await;
    let pid = prod["id"].as_str().unwrap();
    let a = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "1000"),
                ("recurring[interval]", "month"),
                ("lookup_key", "team_monthly"),
            ],
        )
        .await;
    let y = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "10000"),
                ("recurring[interval]", "year"),
                ("lookup_key", "team_yearly"),
            ],
        )
        .await;
    assert_eq!(y["recurring"]["interval"], "year");
    let one = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "2500"),
            ],
        )
        .await;
    assert_eq!(
        (one["type"].as_str(), one["recurring"].is_null()),
        (Some("one_time"), true)
    );
    let (st, v) = env
        .try_post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "1200"),
                ("recurring[interval]", "month"),
                ("lookup_key", "team_monthly"),
            ],
        )
        .await;
    assert_eq!(
        (st, v["error"]["param"].as_str()),
        (400, Some("lookup_key"))
    );
    let b = env
        .post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "1200"),
                ("recurring[interval]", "month"),
                ("lookup_key", "team_monthly"),
                ("transfer_lookup_key", "true"),
            ],
        )
        .await;
    let old = env
        .get(&format!("/v1/prices/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(old["lookup_key"], Value::Null);
    let l = env
        .get("/v1/prices?lookup_keys[]=team_monthly&lookup_keys[]=team_yearly")
        .await;
    let mut got: Vec<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    got.sort();
    let mut want = vec![b["id"].as_str().unwrap(), y["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(got, want);
    let (st, v) = env
        .try_post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "1"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
            ],
        )
        .await;
    assert_eq!(
        (st, v["error"]["param"].as_str()),
        (400, Some("recurring[meter]"))
    );
    let (st, v) = env
        .try_post(
            "/v1/prices",
            &[
                ("product", pid),
                ("currency", "usd"),
                ("unit_amount", "1"),
                ("recurring[interval]", "month"),
                ("recurring[aggregate_usage]", "sum"),
            ],
        )
        .await;
    assert_eq!(st, 400, "{v}");
}

#[tokio::test]
async fn request_faults_rate_limit_error_and_hang() {
    let env = start().await;
    assert_eq!(
        env.fault(json!({"path": "/v1/customers", "method": "POST", "kind": "429", "count": 2}))
            .await,
        200
    );
    for _ in 0..2 {
        let r = env
            .http
            .post(format!("{}/v1/customers", env.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers().get("stripe-should-retry").unwrap(), "true");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit");
    }
    env.post("/v1/customers", &[]).await;
    env.fault(json!({"path": "/v1/customers", "kind": "500"}))
        .await;
    let (st, v) = env.try_get("/v1/customers").await;
    assert_eq!((st, v["error"]["type"].as_str()), (500, Some("api_error")));
    env.get("/v1/customers").await;
    env.fault(json!({"path": "/v1/customers", "kind": "timeout", "hang_ms": 600}))
        .await;
    let t = Instant::now();
    let r = env
        .http
        .get(format!("{}/v1/customers", env.base))
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(r.is_err(), "the client times out");
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(env.fault(json!({"kind": "explode"})).await, 400);
}

#[tokio::test]
async fn webhooks_retry_with_backoff_and_faults_drop_duplicate_reorder() {
    let env = start().await;
    let rx = Receiver::start(3).await;
    env.webhook_endpoint(&rx, &["customer.created"]).await;
    let c = env
        .post("/v1/customers", &[("email", "r@example.com")])
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["object"]["id"], c["id"]);
    let ev = env.get("/v1/events?type=customer.created").await;
    let eid = ev["data"][0]["id"].as_str().unwrap().to_string();
    for _ in 0..40 {
        if env.get(&format!("/v1/events/{eid}")).await["pending_webhooks"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        env.get(&format!("/v1/events/{eid}")).await["pending_webhooks"],
        0
    );

    let rx2 = Receiver::start(0).await;
    env.webhook_endpoint(&rx2, &["product.created"]).await;
    for (kind, n) in [("drop", 1), ("duplicate", 1), ("reorder", 1)] {
        env.fault(json!({"kind": kind, "count": n})).await;
    }
    let mut ids = vec![];
    for name in ["dropped", "twice", "late", "early"] {
        ids.push(
            env.post("/v1/products", &[("name", name)]).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let got = rx2.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let names: Vec<String> = rx2
        .deliveries()
        .iter()
        .map(|d| {
            d.json()["data"]["object"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(names, vec!["twice", "twice", "early", "late"]);
}

#[tokio::test]
async fn meter_event_rules_and_summaries() {
    let env = start().await;
    let m = env
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Tokens"),
                ("event_name", "tokens"),
                ("default_aggregation[formula]", "sum"),
                ("value_settings[event_payload_key]", "tokens"),
            ],
        )
        .await;
    let (st, _) = env
        .try_post(
            "/v1/billing/meters",
            &[
                ("display_name", "Dup"),
                ("event_name", "tokens"),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await;
    assert_eq!(st, 400);
    let clock = env.clock(JAN1 + 40 * DAY).await;
    let c = env.post("/v1/customers", &[("test_clock", &clock)]).await;
    let cid = c["id"].as_str().unwrap();
    let post = |ts: i64, v: &str, id: &str| {
        let (env, cid, v, id) = (&env, cid.to_string(), v.to_string(), id.to_string());
        async move {
            env.try_post(
                "/v1/billing/meter_events",
                &[
                    ("event_name", "tokens"),
                    ("payload[stripe_customer_id]", &cid),
                    ("payload[tokens]", &v),
                    ("identifier", &id),
                    ("timestamp", &ts.to_string()),
                ],
            )
            .await
        }
    };
    let now = JAN1 + 40 * DAY;
    assert_eq!(post(now - 36 * DAY, "1", "old").await.0, 400);
    assert_eq!(post(now + 301, "1", "future").await.0, 400);
    assert_eq!(post(now + 299, "1.5", "soon").await.0, 200);
    assert_eq!(post(now - 3600, "2.25", "h1").await.0, 200);
    assert_eq!(post(now - 30 * DAY, "10", "d30").await.0, 200);
    assert_eq!(post(now - 3600, "2", "h1").await.0, 400);
    assert_eq!(post(now - 60, "1234567890123456", "toolong").await.0, 400);
    let url = format!(
        "/v1/billing/meters/{}/event_summaries?customer={cid}&start_time={}&end_time={}",
        m["id"].as_str().unwrap(),
        now - 31 * DAY,
        now + 3600
    );
    assert_eq!(
        env.get(&url).await["data"][0]["aggregated_value"],
        json!(13.75)
    );
    let daily = env.get(&format!("/v1/billing/meters/{}/event_summaries?customer={cid}&start_time={}&end_time={}&value_grouping_window=day", m["id"].as_str().unwrap(), now - 2 * DAY, now)).await;
    let vals: Vec<Value> = daily["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["aggregated_value"].clone())
        .collect();
    assert_eq!(vals, vec![json!(2.25), json!(0)]);
}

#[tokio::test]
async fn a_webhook_endpoint_can_be_registered_at_start() {
    let rx = Receiver::start(0).await;
    let secret = "whsec_demo_secret_0123456789";
    let env = start_with(stripe_sim::Config {
        webhook: Some((rx.url(), secret.into())),
        ..Default::default()
    })
    .await;
    env.post("/v1/customers", &[("email", "demo@example.com")])
        .await;
    let got = rx.wait_for(1).await;
    let (t, v1) = got[0].signature.split_once(",v1=").unwrap();
    let t: i64 = t.trim_start_matches("t=").parse().unwrap();
    assert_eq!(v1, stripe_sim::sign(secret, t, &got[0].body));
    assert_eq!(got[0].json()["type"], "customer.created");
}

#[tokio::test]
async fn a_request_that_hangs_past_the_client_timeout_still_happens_once() {
    let env = start().await;
    env.fault(
        json!({"path": "/v1/customers", "method": "POST", "kind": "timeout", "hang_ms": 300}),
    )
    .await;
    let r = env
        .http
        .post(format!("{}/v1/customers", env.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "slow-1")
        .form(&[("email", "slow@example.com")])
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(r.is_err(), "the client gives up");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let list = env.get("/v1/customers").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "the request was executed"
    );
    let (st, again) = env
        .req(
            Method::POST,
            "/v1/customers",
            &[("email", "slow@example.com")],
            Some("slow-1"),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        again["id"], list["data"][0]["id"],
        "the retry is answered from the idempotency cache"
    );
    assert_eq!(
        env.get("/v1/customers").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn lock_timeouts_conflicts_retry_overrides_delayed_faults_and_the_request_log() {
    let env = start().await;
    env.fault(json!({"path": "/v1/products", "kind": "lock_timeout"}))
        .await;
    env.fault(json!({"path": "/v1/products", "kind": "409"}))
        .await;
    env.fault(json!({"path": "/v1/products", "kind": "500", "should_retry": false}))
        .await;
    let (st, v) = env.try_get("/v1/products").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (429, Some("lock_timeout"))
    );
    let (st, _) = env.try_get("/v1/products").await;
    assert_eq!(st, 409);
    let r = env
        .http
        .get(format!("{}/v1/products", env.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(r.headers().get("stripe-should-retry").unwrap(), "false");
    env.get("/v1/products").await;

    // `after`: two requests pass, the third fails.
    env.fault(json!({"path": "/v1/customers", "method": "POST", "kind": "500", "after": 2}))
        .await;
    let (a, _) = env.req(Method::POST, "/v1/customers", &[], None).await;
    let (b, _) = env.req(Method::POST, "/v1/customers", &[], None).await;
    let (c, _) = env.req(Method::POST, "/v1/customers", &[], None).await;
    let (d, _) = env.req(Method::POST, "/v1/customers", &[], None).await;
    assert_eq!((a, b, c, d), (200, 200, 500, 200));

    let log = env.sim.with(|s| s.faults.log.clone()).unwrap();
    assert_eq!(log.iter().filter(|l| *l == "GET /v1/products").count(), 4);
    assert_eq!(log.iter().filter(|l| *l == "POST /v1/customers").count(), 4);
}

#[tokio::test]
async fn a_retry_while_the_first_request_is_held_answers_409() {
    let env = start().await;
    env.fault(
        json!({"path": "/v1/customers", "method": "POST", "kind": "timeout", "hang_ms": 400}),
    )
    .await;
    let http = env.http.clone();
    let url = format!("{}/v1/customers", env.base);
    let first = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(KEY)
            .header("Idempotency-Key", "held-1")
            .form(&[("email", "held@example.com")])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = env
        .http
        .post(format!("{}/v1/customers", env.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "held-1")
        .form(&[("email", "held@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.headers().get("stripe-should-retry").unwrap(), "true");
    assert_eq!(first.await.unwrap(), 200);
    let (st, _) = env
        .req(
            Method::POST,
            "/v1/customers",
            &[("email", "held@example.com")],
            Some("held-1"),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        env.get("/v1/customers").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The pinned version is spoken and echoed; another is refused clearly and changes nothing.
#[tokio::test]
async fn stripe_version_is_answered_as_stripe_does() {
    let env = start().await;
    let r = env
        .http
        .post(format!("{}/v1/customers", env.base))
        .bearer_auth("sk_test_v")
        .header("Stripe-Version", "2025-08-27.basil")
        .form(&[("email", "a@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["stripe-version"], "2025-08-27.basil");
    let r = env
        .http
        .post(format!("{}/v1/customers", env.base))
        .bearer_auth("sk_test_v")
        .header("Stripe-Version", "2024-06-20")
        .form(&[("email", "b@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "api_version_unsupported");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("2025-08-27.basil") && msg.contains("2024-06-20"),
        "{msg}"
    );
    let r = env
        .http
        .get(format!("{}/v1/customers", env.base))
        .bearer_auth("sk_test_v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}
