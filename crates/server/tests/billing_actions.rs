//! The billing page's actions against the Stripe simulator, through the real server on both
//! backends: the plan cards (monthly/yearly, the yearly saving), Checkout of a plan paid with
//! 4242 on the simulator's page and the return to the page (waiting for the webhook, then the
//! new plan), an upgrade confirmed after Stripe's invoice preview, a downgrade that says when
//! it applies, a credit pack bought (new balance, payments section), the portal, the cancel
//! return, and the policy that lets the forms lead to Stripe.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::json;
use tally_server::config::parse_catalog;
use tally_store::InboxFilter;
use tally_stripe::{Client, EventFilter};

#[macro_use]
mod common;

use common::{app_on, App, Db};

const CATALOG: &str = include_str!("../../../catalogs/demo.toml");
const SECRET: &str = "whsec_billing_actions";
const SK: &str = "sk_test_tally";

struct Env {
    app: App,
    sim: stripe_sim::SimHandle,
    stripe: Client,
    browser: reqwest::Client,
    delivered: BTreeSet<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    csp: Option<String>,
    body: String,
}

impl Env {
    async fn send(&self, r: reqwest::RequestBuilder) -> Page {
        let r = r.send().await.unwrap();
        Page {
            status: r.status(),
            location: r
                .headers()
                .get(LOCATION)
                .map(|v| v.to_str().unwrap().to_owned()),
            csp: r
                .headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&self, url: &str) -> Page {
        self.send(self.browser.get(url)).await
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.browser.post(url).form(form)).await
    }

    /// Pays a Checkout page of the simulator with `card`; returns where it sends the browser.
    async fn pay(&self, checkout_url: &str, card: &str) -> String {
        let p = self
            .post(
                checkout_url,
                &[
                    ("email", "ada@acme.test"),
                    ("name", "Ada"),
                    ("card_number", card),
                    ("card_expiry", "12 / 34"),
                    ("card_cvc", "123"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        p.location.unwrap()
    }

    /// Delivers the simulator's new events to Tally, signed, and waits for the inbox.
    async fn deliver(&mut self) {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stripe
                .raw_events(&EventFilter {
                    starting_after: after.clone(),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .unwrap()
                .value;
            after = page.data.last().map(|e| e.id.clone());
            all.extend(page.data);
            if !page.has_more {
                break;
            }
        }
        all.reverse();
        for e in all {
            if !self.delivered.insert(e.id.clone()) {
                continue;
            }
            let t = chrono::Utc::now().timestamp();
            let r = self
                .app
                .http
                .post(self.app.url("/webhooks/stripe"))
                .header("content-type", "application/json")
                .header(
                    "Stripe-Signature",
                    stripe_sim::webhooks::signature_header(SECRET, t, e.body.as_bytes()),
                )
                .body(e.body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let start = Instant::now();
        loop {
            let inbox = self
                .app
                .server
                .state()
                .store
                .inbox_list(InboxFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if inbox.iter().all(|e| e.status != "pending") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "inbox not settled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn balance(&self) -> String {
        let (s, b) = self.app.get("/v1/customers/acme/credits").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().unwrap().to_owned()
    }
}

/// The text of the element with `id` up to its first closing `</div>` (a plan card).
fn card<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id} in {body}"));
    let rest = &body[at..];
    &rest[..rest.find("</div>").unwrap()]
}

async fn page_actions(db: Db) {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let catalog = parse_catalog(CATALOG, "demo.toml").unwrap();
    let stripe = Client::new(tally_stripe::Config::new(SK).with_base_url(&base)).unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    let Some(app) = app_on(db, |c| {
        c.catalog = Arc::new(catalog);
        c.stripe_webhook_secrets = vec![SECRET.into()];
        c.stripe.api_key = Some(SK.into());
        c.stripe.api_base = Some(base.clone());
    })
    .await
    else {
        return;
    };
    let mut env = Env {
        app,
        sim,
        stripe,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        delivered: BTreeSet::new(),
    };
    let (s, b) = env
        .app
        .put(
            "/v1/customers/acme",
            json!({"email": "ada@acme.test", "name": "Acme"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = env
        .app
        .put("/v1/customers/acme/subscription", json!({"plan": "free"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, link) = env
        .app
        .post("/v1/customers/acme/page-sessions", json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    let start = env.get(link["url"].as_str().unwrap()).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let page_path = start.location.unwrap();
    let page_url = env.app.url(&page_path);

    // Plan cards, monthly by default; the yearly toggle shows each saving (12 × 19 − 190).
    let p = env.get(&page_url).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let csp = p.csp.unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {base};")),
        "{csp}"
    );
    assert!(card(&p.body, "plan-starter").contains("$19.00 / month"));
    // Free has no price: no card.
    assert!(!p.body.contains("id=\"plan-free\""));
    assert!(card(&p.body, "plan-pro").contains(">Upgrade</button>"));
    assert!(p.body.contains("target=\"_top\""));
    let y = env.get(&format!("{page_url}?interval=year")).await;
    assert!(card(&y.body, "plan-starter").contains("$190.00 / year"));
    assert!(card(&y.body, "plan-starter").contains("Save $38.00 a year"));
    assert!(card(&y.body, "plan-pro").contains("Save $98.00 a year"));

    // Checkout of Pro monthly, paid with 4242 on the simulator's page.
    let co = env
        .post(
            &format!("{page_url}/checkout"),
            &[("plan", "pro"), ("interval", "month")],
        )
        .await;
    assert_eq!(co.status, StatusCode::SEE_OTHER, "{}", co.body);
    let checkout_url = co.location.unwrap();
    assert!(
        checkout_url.starts_with(&format!("{base}/c/pay/")),
        "{checkout_url}"
    );
    let back = env.pay(&checkout_url, "4242 4242 4242 4242").await;
    assert!(
        back.starts_with(&format!("{page_url}?done=subscribed&plan=pro&session=cs_")),
        "{back}"
    );
    // Before Stripe's webhook: a notice and a reload; after it, the new plan.
    let waiting = env.get(&back).await;
    assert!(
        waiting.body.contains("your new plan appears in a moment"),
        "{}",
        waiting.body
    );
    assert!(waiting.body.contains("http-equiv=\"refresh\""));
    env.deliver().await;
    let done = env.get(&back).await;
    assert!(
        done.body.contains("Thank you: your new plan is active."),
        "{}",
        done.body
    );
    assert!(!done.body.contains("http-equiv=\"refresh\""));
    assert!(done
        .body
        .contains("<span class=\"plan\" id=\"plan-name\">Pro</span>"));
    assert!(card(&done.body, "plan-pro").contains("Current plan"));
    // Starter is cheaper: it applies at the period's end. Payments show the subscription.
    assert!(card(&done.body, "plan-starter").contains("Applies at the end of this period"));
    assert!(done.body.contains("Subscription payment"), "{}", done.body);
    assert!(done.body.contains("$49.00"));

    // Pro yearly is an upgrade: Stripe's preview first, then the change.
    let y = env.get(&format!("{page_url}?interval=year")).await;
    let href = format!("{page_path}/change?plan=pro&#38;interval=year");
    assert!(card(&y.body, "plan-pro").contains(&href), "{}", y.body);
    let confirm = env
        .get(&format!("{page_url}/change?plan=pro&interval=year"))
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let due_at = confirm.body.find("<strong id=\"due-today\">$").unwrap();
    assert!(confirm.body[due_at..].contains("</strong>"));
    let changed = env
        .post(
            &format!("{page_url}/change"),
            &[("plan", "pro"), ("interval", "year")],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(
        changed.location.unwrap(),
        format!("{page_path}?done=changed")
    );
    env.deliver().await;
    let after = env.get(&format!("{page_url}?done=changed")).await;
    assert!(after.body.contains("Your plan was changed."));
    assert!(
        after.body.contains("<span class=\"muted\">(year)</span>"),
        "{}",
        after.body
    );

    // A credit pack: 100 more credits once Stripe's webhook arrives.
    let before = env.balance().await;
    let co = env
        .post(&format!("{page_url}/checkout"), &[("pack", "images_100")])
        .await;
    assert_eq!(co.status, StatusCode::SEE_OTHER, "{}", co.body);
    let back = env.pay(&co.location.unwrap(), "4242424242424242").await;
    assert!(
        back.starts_with(&format!("{page_url}?done=credits&session=cs_")),
        "{back}"
    );
    env.deliver().await;
    let after = env.balance().await;
    let delta: i64 = after.parse::<i64>().unwrap() - before.parse::<i64>().unwrap();
    assert_eq!(delta, 100, "{before} → {after}");
    let p = env.get(&back).await;
    assert!(p.body.contains("Thank you: your credits were added."));
    assert!(
        p.body.contains(&format!("data-balance=\"{after}\"")),
        "{}",
        p.body
    );
    assert!(p.body.contains("Credit purchase"));
    assert!(p.body.contains("$5.00"));

    // Starter monthly is a downgrade: confirmed on the page, scheduled for the period's end,
    // and shown as pending once Stripe's webhook arrives.
    let confirm = env
        .get(&format!("{page_url}/change?plan=starter&interval=month"))
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("nothing is charged today"));
    assert!(!confirm.body.contains("due-today"));
    let scheduled = env
        .post(
            &format!("{page_url}/change"),
            &[("plan", "starter"), ("interval", "month")],
        )
        .await;
    assert_eq!(
        scheduled.status,
        StatusCode::SEE_OTHER,
        "{}",
        scheduled.body
    );
    env.deliver().await;
    let pending = env.get(&page_url).await;
    assert!(
        pending
            .body
            .contains("<p id=\"renewal\">Change pending: Starter (month) from "),
        "{}",
        pending.body
    );
    assert!(
        pending.body.contains("<span class=\"muted\">(year)</span>"),
        "the plan stays Pro yearly until the period ends"
    );

    // The portal, in the top window; a canceled checkout says so.
    let portal = env.post(&format!("{page_url}/portal"), &[]).await;
    assert_eq!(portal.status, StatusCode::SEE_OTHER, "{}", portal.body);
    assert!(portal
        .location
        .unwrap()
        .starts_with(&format!("{base}/p/session/")));
    let c = env.get(&format!("{page_url}?done=canceled")).await;
    assert!(c
        .body
        .contains("Checkout was canceled: nothing was charged."));

    // A session that does not exist acts on nothing.
    let forged = format!("/billing/s/{}", "ab".repeat(32));
    for (path, form) in [
        (format!("{forged}/checkout"), vec![("plan", "pro")]),
        (format!("{forged}/portal"), vec![]),
        (format!("{forged}/change"), vec![("plan", "pro")]),
    ] {
        let r = env.post(&env.app.url(&path), &form).await;
        assert_eq!(r.status, StatusCode::GONE, "{path}");
    }
    let checkouts = env.sim.with(|s| s.w.checkout_sessions.len()).unwrap();
    assert_eq!(checkouts, 2);
    env.app.server.shutdown().await.unwrap();
}

on_both_backends!(page_actions);
