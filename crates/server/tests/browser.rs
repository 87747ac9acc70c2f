//! The billing page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by scripts/test.sh), driven over WebDriver with fantoccini: the figures the API
//! gives, the expired page, isolation, a cross-site iframe, screenshots at 1280 and 390 px (kept
//! under the target dir) and no horizontal scroll at 390 px.
//!
//! Without Chromium the test fails under `CI=true` and is skipped (loudly) otherwise.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_store::clock::Clock;
use tally_store::{CustomerUpsert, SubscriptionUpsert};

mod common;

use common::App;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The whole browser test must finish within this.
const TEST_TIME: Duration = Duration::from_secs(180);

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, once it answers; `None` (after a loud message) when Chromium is
/// not installed outside CI.
async fn start_driver() -> Option<(Driver, String)> {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present {
        let msg = "Chromium is not installed: apt-get install chromium chromium-driver \
                   (scripts/test.sh does it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("!!! SKIPPING browser test: {msg}");
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{url}/status")).await {
            if r.status().is_success() {
                return Some((driver, url));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

async fn browser(driver_url: &str, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a Chromium session")
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn attr(c: &Client, css: &str, name: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn js_u64(c: &Client, script: &str) -> u64 {
    c.execute(script, vec![]).await.unwrap().as_u64().unwrap()
}

/// Saves a screenshot under the target dir's test tmp dir (kept after the run).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

impl App {
    async fn seed(&self, id: &str, name: &str, plan: &str) {
        let store = &self.server.state().store;
        let at = self.server.state().clock.now() - chrono::Duration::days(40);
        store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: id.into(),
                email: None,
                name: Some(name.into()),
                metadata: None,
                now: at,
            })
            .await
            .unwrap();
        store
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

    async fn link(&self, customer: &str, locale: &str) -> String {
        let (s, b) = self
            .post(
                &format!("/v1/customers/{customer}/page-sessions"),
                json!({ "locale": locale }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["url"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_billing_page_in_chromium() {
    tokio::time::timeout(TEST_TIME, scenario())
        .await
        .expect("the browser test finishes in time");
}

async fn scenario() {
    let Some((_driver, driver_url)) = start_driver().await else {
        return;
    };
    let app = common::app_with(|c| {
        c.clock = Clock::starting_at(chrono::Utc::now());
        c.close_every = Duration::from_secs(3600);
    })
    .await;
    app.seed("acme", "Acme GmbH", "pro").await;
    app.seed("beta", "Beta Inc", "starter").await;
    let state = app.server.state();
    tally_server::service::closer::close_due(state, state.clock.now())
        .await
        .unwrap();
    let now = state.clock.now().to_rfc3339();
    let (s, b) = app
        .post(
            "/v1/events",
            json!({"events": [
                {"id": "e1", "customer": "acme", "metric": "compute_hours", "value": "250", "timestamp": now},
                {"id": "e2", "customer": "acme", "metric": "api_spend", "value": "149", "timestamp": now},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .post(
            "/v1/customers/acme/credits/grants",
            json!({"amount": "1234.5", "reason": "welcome", "idempotency_key": "g1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Rollups are written in the background on SQLite: wait until the API sees the usage.
    let mut api = Value::Null;
    for _ in 0..100 {
        api = app.get("/v1/customers/acme/billing").await.1;
        if api["usage"]["metrics"][0]["used"] != "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, credits) = app.get("/v1/customers/acme/credits").await;
    let (_, beta_invoices) = app.get("/v1/customers/beta/invoices").await;
    let beta_invoice = beta_invoices["data"][0]["id"].as_str().unwrap().to_owned();

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;

    // The link opens the page; plan, usage and credits are the API's.
    let link = app.link("acme", "en").await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&link).await.unwrap();
    let page = c.current_url().await.unwrap();
    assert!(page.path().starts_with("/billing/s/"), "{page}");
    assert_eq!(text(&c, "#plan-name").await, "Pro");
    for m in api["usage"]["metrics"].as_array().unwrap() {
        let id = m["metric"].as_str().unwrap();
        assert_eq!(
            attr(&c, &format!("#meter-{id} .used"), "data-used").await,
            m["used"].as_str().unwrap()
        );
    }
    assert_eq!(text(&c, "#meter-compute_hours .used").await, "250 hour");
    assert_eq!(
        attr(&c, "#meter-compute_hours", "class").await,
        "meter warn"
    );
    assert_eq!(attr(&c, "#meter-api_spend", "class").await, "meter crit");
    assert_eq!(
        attr(&c, "#credit-balance", "data-balance").await,
        credits["balance"].as_str().unwrap()
    );
    assert_eq!(text(&c, "#credit-balance").await, "1,234.5");
    assert_eq!(text(&c, "#upcoming-total").await, "€199.00");
    screenshot(&c, "billing-1280.png").await;

    // 390 px wide: no horizontal scroll.
    c.set_window_size(390, 844).await.unwrap();
    let width = js_u64(&c, "return document.documentElement.clientWidth").await;
    assert!(width <= 390, "viewport {width}");
    let scroll = js_u64(&c, "return document.documentElement.scrollWidth").await;
    assert!(scroll <= 390, "scrollWidth {scroll} at 390 px");
    screenshot(&c, "billing-390.png").await;

    // Another customer's invoice through this session: not found.
    c.goto(&format!("{page}/invoices/{beta_invoice}"))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Not found");

    // A used link and a forged one: the expired page.
    c.goto(&link).await.unwrap();
    assert_eq!(text(&c, "h1").await, "This link has expired");
    c.goto(&app.url(&format!("/billing/start/{}", "0f".repeat(32))))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "This link has expired");

    c.close().await.unwrap();
    app.server.shutdown().await.unwrap();
}

/// The page works inside a cross-site iframe (the app on `localhost`, Tally on `127.0.0.1`: two
/// sites) when `--frame-ancestors` allows the app, with no cookie involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_billing_page_in_a_cross_site_iframe() {
    tokio::time::timeout(TEST_TIME, iframe_scenario())
        .await
        .expect("the browser test finishes in time");
}

async fn iframe_scenario() {
    let Some((_driver, driver_url)) = start_driver().await else {
        return;
    };
    // The embedding app: one HTML page on its own port, reached as `localhost`.
    let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = host.local_addr().unwrap().port();
    let app = common::app_with(|c| {
        c.frame_ancestors = format!("http://localhost:{host_port}");
    })
    .await;
    app.seed("acme", "Acme GmbH", "pro").await;
    let link = app.link("acme", "de").await;
    let html = format!(
        "<!doctype html><title>App</title><h1>My app</h1>\
         <iframe src=\"{link}\" width=\"800\" height=\"600\"></iframe>"
    );
    let serve = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = host.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let res = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = s.write_all(res.as_bytes()).await;
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    c.goto(&format!("http://localhost:{host_port}/"))
        .await
        .unwrap();
    let frame = c.find(Locator::Css("iframe")).await.unwrap();
    frame.enter_frame().await.unwrap();
    let mut plan = String::new();
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css("#plan-name")).await {
            plan = e.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(plan, "Pro");
    // WebDriver reads the no-break space as a space.
    assert_eq!(text(&c, "#upcoming-total").await, "199,00 €");
    c.close().await.unwrap();
    serve.abort();
    app.server.shutdown().await.unwrap();
}

/// An admin signs in, adjusts a customer's credits with the form, and the adjustment shows on the
/// customer's billing page and in the console's audit log; console pages without a session go to
/// sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_console_in_chromium() {
    tokio::time::timeout(TEST_TIME, admin_scenario())
        .await
        .expect("the browser test finishes in time");
}

async fn admin_scenario() {
    let Some((_driver, driver_url)) = start_driver().await else {
        return;
    };
    let app = common::app_with(|_| {}).await;
    app.seed("acme", "Acme GmbH", "pro").await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    c.set_window_size(1280, 900).await.unwrap();

    c.goto(&app.url("/admin/customers/acme")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/admin/sign-in");
    c.find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(common::KEY)
        .await
        .unwrap();
    c.find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(landed_on(&c, "/admin/customers").await, "/admin/customers");
    c.find(Locator::LinkText("acme"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        landed_on(&c, "/admin/customers/acme").await,
        "/admin/customers/acme"
    );
    c.find(Locator::Css("#amount"))
        .await
        .unwrap()
        .send_keys("42.5")
        .await
        .unwrap();
    c.find(Locator::Css("#reason"))
        .await
        .unwrap()
        .send_keys("support goodwill")
        .await
        .unwrap();
    c.find(Locator::Css("#adjust-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "#notice").await, "Adjustment recorded.");
    assert_eq!(text(&c, "#credit-balance").await, "42.5");
    let audit = text(&c, "#audit").await;
    let admin = tally_server::service::keys::Caller::env(common::KEY).key_id;
    assert!(audit.contains(&format!("credits.grant {admin}")), "{audit}");
    screenshot(&c, "admin-customer-1280.png").await;

    // The customer's page shows the new balance and the entry.
    let link = app.link("acme", "en").await;
    c.goto(&link).await.unwrap();
    assert_eq!(text(&c, "#credit-balance").await, "42.5");
    assert!(text(&c, "#ledger").await.contains("support goodwill"));

    // Signed out, the console is closed again.
    c.goto(&app.url("/admin/customers")).await.unwrap();
    c.find(Locator::Css("#sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(landed_on(&c, "/admin/sign-in").await, "/admin/sign-in");
    c.goto(&app.url("/admin/customers/acme")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/admin/sign-in");
    c.close().await.unwrap();
    app.server.shutdown().await.unwrap();
}

/// The page's path once a click's navigation (a form post and its redirect) has landed on
/// `want`, or whatever path it shows after 5 s.
async fn landed_on(c: &fantoccini::Client, want: &str) -> String {
    let mut path = String::new();
    for _ in 0..100 {
        path = c.current_url().await.unwrap().path().to_owned();
        if path == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    path
}

/// The simulator's Checkout page: pays with `card`.
async fn pay_on_checkout(c: &Client, card: &str) {
    c.find(Locator::Css("input[name=card_number]"))
        .await
        .unwrap()
        .send_keys(card)
        .await
        .unwrap();
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url_change(c, &before).await;
}

async fn wait_url_change(c: &Client, before: &str) {
    for _ in 0..200 {
        if c.current_url().await.unwrap().as_str() != before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page stayed at {before}");
}

/// Clicks `css` and waits for the navigation it starts.
async fn click_and_wait(c: &Client, css: &str) {
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    wait_url_change(c, &before).await;
}

/// Polls the page (which reloads itself while Tally waits for Stripe's webhook) until `css`'s
/// attribute or text satisfies `ok`.
async fn wait_for(c: &Client, what: &str, mut ok: impl FnMut(String) -> bool, read: &str) {
    for _ in 0..300 {
        if let Ok(e) = c.find(Locator::Css(read)).await {
            let v = if what == "text" {
                e.text().await.unwrap_or_default()
            } else {
                e.attr(what).await.ok().flatten().unwrap_or_default()
            };
            if ok(v) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{read} never reached the expected {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_and_credits_through_the_simulators_checkout_in_chromium() {
    tokio::time::timeout(TEST_TIME, checkout_scenario())
        .await
        .expect("the Checkout browser test took too long");
}

async fn checkout_scenario() {
    let Some((_driver, driver_url)) = start_driver().await else {
        return;
    };
    // Tally's port is chosen first: the simulator delivers its webhooks there, signed.
    let port = free_port();
    let secret = "whsec_browser_checkout";
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        webhook: Some((
            format!("http://127.0.0.1:{port}/webhooks/stripe"),
            secret.into(),
        )),
        ..Default::default()
    })
    .await
    .unwrap();
    let sim_base = sim.base_url();
    let catalog = tally_server::config::parse_catalog(
        include_str!("../../../catalogs/demo.toml"),
        "demo.toml",
    )
    .unwrap();
    let stripe =
        tally_stripe::Client::new(tally_stripe::Config::new("sk_test_b").with_base_url(&sim_base))
            .unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    let app = common::app_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.catalog = std::sync::Arc::new(catalog);
        c.stripe_webhook_secrets = vec![secret.into()];
        c.stripe.api_key = Some("sk_test_b".into());
        c.stripe.api_base = Some(sim_base.clone());
    })
    .await;
    let (s, b) = app
        .put("/v1/customers/initech", json!({"name": "Initech"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .put(
            "/v1/customers/initech/subscription",
            json!({"plan": "free"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let link = app.link("initech", "en").await;

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&link).await.unwrap();
    let page = c.current_url().await.unwrap();
    assert_eq!(text(&c, "#plan-name").await, "Free");

    // Upgrade → the simulator's Checkout in the top window → 4242 → back on the page, on Pro.
    click_and_wait(&c, "#choose-pro").await;
    let at = c.current_url().await.unwrap();
    assert!(
        at.as_str().starts_with(&format!("{sim_base}/c/pay/")),
        "{at}"
    );
    pay_on_checkout(&c, "4242 4242 4242 4242").await;
    let back = c.current_url().await.unwrap();
    assert_eq!(back.path(), page.path(), "{back}");
    wait_for(&c, "text", |t| t == "Pro", "#plan-name").await;
    assert_eq!(
        text(&c, "#notice").await,
        "Thank you: your new plan is active."
    );
    assert!(text(&c, "#plan-pro").await.contains("Current plan"));
    screenshot(&c, "billing-upgraded-1280.png").await;
    c.set_window_size(390, 844).await.unwrap();
    let width = js_u64(&c, "return document.documentElement.clientWidth").await;
    assert!(width <= 390, "{width}");
    let scroll = js_u64(&c, "return document.documentElement.scrollWidth").await;
    assert!(scroll <= 390, "horizontal scroll at 390 px: {scroll}");
    screenshot(&c, "billing-upgraded-390.png").await;

    // Buy a credit pack: the balance grows by the pack's 100 credits.
    c.set_window_size(1280, 900).await.unwrap();
    let (_, credits) = app.get("/v1/customers/initech/credits").await;
    let before: i64 = credits["balance"].as_str().unwrap().parse().unwrap();
    click_and_wait(&c, "#pack-images_100").await;
    let at = c.current_url().await.unwrap();
    assert!(
        at.as_str().starts_with(&format!("{sim_base}/c/pay/")),
        "{at}"
    );
    pay_on_checkout(&c, "4242 4242 4242 4242").await;
    let want = (before + 100).to_string();
    wait_for(&c, "data-balance", |b| b == want, "#credit-balance").await;
    assert_eq!(
        text(&c, "#notice").await,
        "Thank you: your credits were added."
    );
    screenshot(&c, "billing-credits-1280.png").await;
    c.close().await.unwrap();
    app.server.shutdown().await.unwrap();
    sim.shutdown().await;
}
