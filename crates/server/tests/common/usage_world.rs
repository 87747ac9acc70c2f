//! The usage-push world: Magic Box pushed to the Stripe simulator, Tally on a frozen clock, a
//! customer with a Stripe subscription on a test clock (see `tests/usage_push.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::{app_on, App, Db};
use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::service::closer;
use tally_server::AppState;
use tally_store::clock::{Clock, SharedClock};
use tally_store::StripeSubscriptionUpsert;

pub const CATALOG: &str = include_str!("../../../../catalogs/magicbox.toml");
pub const SK: &str = "sk_test_tally";
pub const SECRET: &str = "whsec_usage_push_test";
pub const CUSTOMER: &str = "mb_1";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap()
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub struct World {
    pub app: App,
    pub sim: stripe_sim::SimHandle,
    pub http: reqwest::Client,
    pub clock: SharedClock,
    /// The simulator's test clock of the customer.
    pub test_clock: String,
    pub stripe_customer: String,
    pub subscription: String,
}

/// Magic Box pushed to the simulator; Tally on `db` with its clock frozen at 2026-01-15; the
/// customer `mb_1` created then, with a Stripe customer on a test clock starting then, a card,
/// and a subscription to `lookup_key` mirrored onto Tally.
pub async fn world(db: Db, lookup_key: &str, timeout: Duration) -> Option<World> {
    world_with(db, CATALOG, lookup_key, timeout).await
}

/// [`world`] with another catalog: in meter mode the subscription also carries the plan's
/// metered prices (as Tally's checkout makes it).
pub async fn world_with(
    db: Db,
    catalog: &str,
    lookup_key: &str,
    timeout: Duration,
) -> Option<World> {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let parsed = tally_server::config::parse_catalog(catalog, "magicbox.toml").unwrap();
    let interval = if lookup_key.ends_with("yearly") {
        tally_core::period::Interval::Year
    } else {
        tally_core::period::Interval::Month
    };
    let metered_keys = tally_stripe::push_meters::metered_lookup_keys(&parsed, "pro", interval);
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&client, &parsed, true, Utc::now().timestamp())
        .await
        .unwrap();
    let clock = Clock::frozen(t0());
    let c2 = clock.clone();
    let app = app_on(db, move |c| {
        c.catalog = Arc::new(parsed);
        c.clock = c2;
        c.grace = Duration::from_secs(600);
        // The test drives the closer and the pusher itself.
        c.close_every = Duration::from_secs(3600);
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.timeout = timeout;
        c.stripe_webhook_secrets = vec![SECRET.into()];
    })
    .await?;
    let mut w = World {
        app,
        sim,
        http: reqwest::Client::new(),
        clock,
        test_clock: String::new(),
        stripe_customer: String::new(),
        subscription: String::new(),
    };
    let (s, b) = w
        .app
        .put(
            &format!("/v1/customers/{CUSTOMER}"),
            json!({"email": "ops@magicbox.test", "name": "Magic Box user"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let tc = w
        .sim_post(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &t0().timestamp().to_string())],
        )
        .await;
    w.test_clock = tc["id"].as_str().unwrap().to_owned();
    let cus = w
        .sim_post(
            "/v1/customers",
            &[
                ("email", "ops@magicbox.test"),
                ("test_clock", &w.test_clock),
                ("metadata[tally_customer_id]", CUSTOMER),
            ],
        )
        .await;
    w.stripe_customer = cus["id"].as_str().unwrap().to_owned();
    let pm = w
        .sim_post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &w.stripe_customer)],
        )
        .await;
    let price = w.price_id(lookup_key);
    let metered: Vec<(String, String)> = metered_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("items[{}][price]", i + 1), w.price_id(k)))
        .collect();
    let mut form: Vec<(&str, &str)> = vec![
        ("customer", &w.stripe_customer),
        ("items[0][price]", &price),
        ("default_payment_method", pm["id"].as_str().unwrap()),
        ("metadata[tally_customer_id]", CUSTOMER),
    ];
    form.extend(metered.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let sub = w.sim_post("/v1/subscriptions", &form).await;
    assert_eq!(sub["status"], "active", "{sub}");
    w.subscription = sub["id"].as_str().unwrap().to_owned();
    let interval = if lookup_key.ends_with("yearly") {
        "year"
    } else {
        "month"
    };
    w.state()
        .store
        .put_stripe_subscription(StripeSubscriptionUpsert {
            customer_id: CUSTOMER.into(),
            plan: "pro".into(),
            interval: interval.into(),
            status: "active".into(),
            stripe: json!({"subscription": w.subscription, "customer": w.stripe_customer}),
            past_due_at: None,
            changed_at: t0(),
            now: t0(),
            allowance_anchor: None,
        })
        .await
        .unwrap();
    Some(w)
}

impl World {
    pub fn state(&self) -> &AppState {
        self.app.server.state()
    }

    pub async fn sim_post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
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

    pub async fn sim_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(SK)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.json().await.unwrap()
    }

    pub fn price_id(&self, lookup_key: &str) -> String {
        self.sim
            .with(|s| {
                s.w.prices
                    .values()
                    .find(|p| p.lookup_key.as_deref() == Some(lookup_key))
                    .map(|p| p.id.clone())
            })
            .unwrap()
            .unwrap()
    }

    pub async fn advance_stripe(&self, to: DateTime<Utc>) {
        self.sim_post(
            &format!("/v1/test_helpers/test_clocks/{}/advance", self.test_clock),
            &[("frozen_time", &to.timestamp().to_string())],
        )
        .await;
    }

    pub async fn fault(&self, body: Value) {
        let r = self
            .http
            .post(format!("{}/_sim/faults", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    pub async fn clear_faults(&self) {
        self.http
            .delete(format!("{}/_sim/faults", self.sim.base_url()))
            .send()
            .await
            .unwrap();
    }

    /// 350 compute hours and EUR 180 of API spend on 2026-01-20.
    pub async fn use_magic_box(&self) {
        self.clock.set(at("2026-01-20T12:00:00Z"));
        let ts = "2026-01-20T10:00:00Z";
        let body = json!({"events": [
            {"id": "e1", "customer": CUSTOMER, "metric": "compute_hours", "value": "350", "timestamp": ts},
            {"id": "e2", "customer": CUSTOMER, "metric": "api_spend", "value": "180.00", "timestamp": ts},
        ]});
        let (s, b) = self.app.post("/v1/events", body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["accepted"], 2, "{b}");
    }

    /// Closes the due periods at Tally's `now`; returns the invoices written.
    pub async fn close(&self, now: DateTime<Utc>) -> Vec<tally_store::StoredInvoice> {
        self.clock.set(now);
        closer::close_due(self.state(), now).await.unwrap()
    }

    /// Every invoice line on Stripe that carries this Tally invoice's metadata, as
    /// (Stripe invoice, line id, amount), across every invoice of the Stripe customer.
    pub fn stripe_lines_of(&self, tally_invoice: &str) -> Vec<(String, String, i64)> {
        let tally_invoice = tally_invoice.to_owned();
        self.sim
            .with(move |s| {
                let mut out = Vec::new();
                for inv in s.w.invoices.values() {
                    for l in &inv.lines {
                        if l.metadata.get("tally_invoice_id") == Some(&tally_invoice) {
                            out.push((
                                inv.id.clone(),
                                l.metadata.get("tally_line_id").cloned().unwrap_or_default(),
                                l.amount,
                            ));
                        }
                    }
                }
                out.sort();
                out
            })
            .unwrap()
    }

    /// Live invoice items (deleted ones excluded) carrying this Tally invoice's metadata.
    pub fn live_items_of(&self, tally_invoice: &str) -> usize {
        let tally_invoice = tally_invoice.to_owned();
        self.sim
            .with(move |s| {
                s.w.invoice_items
                    .values()
                    .filter(|i| !i.deleted)
                    .filter(|i| i.metadata.get("tally_invoice_id") == Some(&tally_invoice))
                    .count()
            })
            .unwrap()
    }

    /// The renewal invoice Stripe drafted for the subscription at `end`.
    pub async fn renewal_at(&self, end: DateTime<Utc>) -> Value {
        let list = self
            .sim_get(&format!("/v1/invoices?subscription={}", self.subscription))
            .await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| {
                i["billing_reason"] == "subscription_cycle" && i["period_end"] == end.timestamp()
            })
            .cloned()
            .unwrap_or_else(|| panic!("no renewal at {end}: {list}"))
    }

    pub async fn invoice(&self, id: &str) -> Value {
        self.sim_get(&format!("/v1/invoices/{id}")).await
    }

    /// The Tally invoice as the API shows it.
    pub async fn tally_invoice(&self, id: &str) -> Value {
        let (s, b) = self
            .app
            .get(&format!("/v1/customers/{CUSTOMER}/invoices"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap()
    }

    /// Delivers the simulator's events of `type` to Tally's webhook endpoint, signed at Tally's
    /// now, and waits until the inbox has applied them.
    pub async fn deliver(&self, event_type: &str) {
        let list = self
            .sim_get(&format!("/v1/events?type={event_type}&limit=100"))
            .await;
        self.deliver_events(list["data"].as_array().unwrap()).await;
    }

    /// Delivers these events, in this order, to Tally's webhook endpoint, signed at Tally's now,
    /// and waits until the inbox has applied them.
    pub async fn deliver_events(&self, events: &[Value]) {
        let t = self.clock.now().timestamp();
        for ev in events {
            let body = serde_json::to_vec(ev).unwrap();
            let sig = stripe_sim::webhooks::signature_header(SECRET, t, &body);
            let r = self
                .http
                .post(self.app.url("/webhooks/stripe"))
                .header("Stripe-Signature", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        for _ in 0..200 {
            let pending = self
                .state()
                .store
                .inbox_list(tally_store::InboxFilter {
                    failed: false,
                    since: None,
                    limit: 1000,
                })
                .await
                .unwrap()
                .iter()
                .filter(|e| e.status == "pending")
                .count();
            if pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the inbox did not drain");
    }
}

pub const PERIOD_END: &str = "2026-02-15T00:00:00Z";
