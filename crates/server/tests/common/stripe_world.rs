//! A Stripe world for end-to-end tests: the simulator (webhooks delivered to Tally), a catalog
//! pushed to it, and the real server with a frozen clock and `--stripe-test-clocks`, driven only
//! from the outside — the hosted checkout and portal pages as a browser posts them, Tally's API,
//! and `POST /v1/clock/advance`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_store::clock::Clock;

use super::{app_on, App, Db};

pub const SECRET: &str = "whsec_world_secret";
pub const SK: &str = "sk_test_world";

pub struct StripeWorld {
    pub app: App,
    pub sim: stripe_sim::SimHandle,
    /// A browser: it does not follow redirects, so tests see them.
    pub browser: reqwest::Client,
}

/// The world on `db`: `sim` configures the simulator (its port is picked here), `catalog` (TOML)
/// is pushed to it, Tally's clock is frozen at `t0`, and `f` adjusts Tally's config last.
pub async fn stripe_world(
    db: Db,
    sim: stripe_sim::Config,
    catalog: &str,
    t0: DateTime<Utc>,
    f: impl FnOnce(&mut tally_server::Config),
) -> Option<StripeWorld> {
    let sim = stripe_sim::spawn(stripe_sim::Config { port: 0, ..sim })
        .await
        .unwrap();
    let base = sim.base_url();
    let catalog = tally_server::config::parse_catalog(catalog, "catalog.toml").unwrap();
    let client =
        tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&client, &catalog, true, Utc::now().timestamp())
        .await
        .unwrap();
    let app = app_on(db, |c| {
        c.catalog = Arc::new(catalog);
        c.clock = Clock::frozen(t0);
        c.stripe_webhook_secrets = vec![SECRET.into()];
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.test_clocks = true;
        c.stripe.success_url = Some("https://app.test/ok".into());
        c.stripe.cancel_url = Some("https://app.test/pricing".into());
        c.stripe.portal_return_url = Some("https://app.test/account".into());
        f(c)
    })
    .await?;
    let url = app.url("/webhooks/stripe");
    sim.with(|s| {
        let seq = s.w.next_seq();
        s.w.webhook_endpoints.insert(
            "we_world".into(),
            stripe_sim::state::WebhookEndpoint {
                id: "we_world".into(),
                seq,
                created: Utc::now().timestamp(),
                url,
                enabled_events: vec!["*".into()],
                secret: SECRET.into(),
                status: "enabled".into(),
                description: None,
                metadata: Default::default(),
                api_version: None,
            },
        );
    })
    .unwrap();
    Some(StripeWorld {
        app,
        sim,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    })
}

impl StripeWorld {
    /// Restarts Tally on the same database and config (a new port; Stripe's webhook endpoint
    /// follows it): what was stored, the moved clock included, must hold across it.
    pub async fn restart(self) -> StripeWorld {
        let StripeWorld { app, sim, browser } = self;
        let mut config = (*app.server.state().config).clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.public_url = None;
        let (http, dir) = (app.http, app._dir);
        app.server.shutdown().await.unwrap();
        let server = tally_server::spawn(config).await.unwrap();
        let app = super::App {
            base: format!("http://{}", server.addr()),
            server,
            http,
            _dir: dir,
        };
        let url = app.url("/webhooks/stripe");
        sim.with(|s| {
            if let Some(e) = s.w.webhook_endpoints.get_mut("we_world") {
                e.url = url;
            }
        })
        .unwrap();
        StripeWorld { app, sim, browser }
    }

    /// Polls `path` (GET, admin key) until `ok` holds: webhooks arrive asynchronously.
    pub async fn get_until(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (s, b) = self.app.get(path).await;
            if s == StatusCode::OK && ok(&b) {
                return b;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{path} never matched: {s} {b}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls Tally's subscription of `customer` until `ok` holds.
    pub async fn subscription_until(&self, customer: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.get_until(&format!("/v1/customers/{customer}/subscription"), ok)
            .await
    }

    /// `POST /v1/clock/advance` (Stripe's test clocks move with it).
    pub async fn advance(&self, by: &str) -> Value {
        let (s, b) = self.app.post("/v1/clock/advance", json!({"by": by})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    /// Creates `customer` and subscribes it to `plan` monthly through the hosted checkout page,
    /// paying with `card`; returns Tally's subscription once it is active.
    pub async fn subscribe(&self, customer: &str, plan: &str, card: &str) -> Value {
        let (s, b) = self
            .app
            .put(&format!("/v1/customers/{customer}"), json!({}))
            .await;
        assert!(s.is_success(), "{s} {b}");
        self.checkout(customer, plan, card).await;
        self.subscription_until(customer, |b| b["plan"] == plan && b["status"] == "active")
            .await
    }

    /// A subscription checkout for an existing customer, completed with `card` on the hosted page.
    pub async fn checkout(&self, customer: &str, plan: &str, card: &str) {
        let (s, b) = self
            .app
            .post(
                "/v1/checkout-sessions",
                json!({"customer": customer, "plan": plan, "interval": "month"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let url = b["url"].as_str().unwrap().to_owned();
        let r = self
            .browser
            .post(&url)
            .form(&[
                ("email", format!("{customer}@app.test").as_str()),
                ("name", customer),
                ("card_number", card),
                ("card_expiry", "12 / 34"),
                ("card_cvc", "123"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }

    /// A POST to the simulator's API with the secret key; returns the JSON body.
    pub async fn sim_post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .browser
            .post(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(SK)
            .form(form)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Replaces the card in the simulator's Customer Portal, as a browser posts the page's form.
    pub async fn portal_replace_card(&self, customer: &str, card: &str) {
        let (s, b) = self
            .app
            .post("/v1/portal-sessions", json!({"customer": customer}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let portal = b["url"].as_str().unwrap().to_owned();
        let r = self
            .browser
            .post(format!("{portal}/card"))
            .form(&[("card_number", card), ("card_expiry", "12 / 34")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap()
        );
    }

    /// `POST /v1/entitlements/check` for a feature.
    pub async fn check(&self, customer: &str, feature: &str) -> Value {
        let (s, b) = self
            .app
            .post(
                "/v1/entitlements/check",
                json!({"customer": customer, "feature": feature}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    /// The notifications queued for `customer`, oldest first: (type, payload).
    pub async fn notifications(&self, customer: &str) -> Vec<(String, Value)> {
        let mut v = self
            .app
            .server
            .state()
            .store
            .list_notifications(tally_store::NotificationFilter {
                customer_id: Some(customer.into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        v.sort_by_key(|n| n.seq);
        v.into_iter().map(|n| (n.kind, n.payload)).collect()
    }
}
