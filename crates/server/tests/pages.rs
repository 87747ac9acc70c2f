//! The customer billing page through the real server on both backends: page-session links (one
//! use, 15 minutes; sessions 60 minutes idle, 12 hours at most, revocable), the figures the JSON
//! API gives, money per locale, security headers, and isolation between customers.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tally_server::service::closer;
use tally_server::service::keys::{self, Scope};
use tally_store::clock::Clock;
use tally_store::{CustomerUpsert, InvoicePush, StripeInvoiceRecord, SubscriptionUpsert};

#[macro_use]
mod common;

use common::{app_on, App, Db};

const EXPIRED: &str = "This link has expired";

/// The app on `db` with a clock the test moves, and the background closer idle (the test closes
/// periods itself).
async fn app(db: Db) -> Option<App> {
    app_on(db, |c| {
        c.clock = Clock::starting_at(Utc::now());
        c.close_every = std::time::Duration::from_secs(3600);
    })
    .await
}

/// A page answer: status, headers, body.
struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl App {
    fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn page(&self, url: &str) -> Page {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            self.url(url)
        };
        let r = self.browser().get(url).send().await.unwrap();
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// Mints a link for `customer`; returns (session id, url).
    async fn mint(&self, customer: &str, body: Value) -> (String, String) {
        let (s, b) = self
            .post(&format!("/v1/customers/{customer}/page-sessions"), body)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let now = self.server.state().clock.now();
        let expires: DateTime<Utc> = b["expires_at"].as_str().unwrap().parse().unwrap();
        assert!(expires > now + Duration::minutes(14) && expires <= now + Duration::minutes(15));
        let url = b["url"].as_str().unwrap().to_owned();
        assert!(
            url.starts_with(&format!("{}/billing/start/", self.base)),
            "{url}"
        );
        (b["id"].as_str().unwrap().to_owned(), url)
    }

    /// Uses a link: the session's page path.
    async fn open(&self, url: &str) -> String {
        let p = self.page(url).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        let to = p.headers["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/billing/s/"), "{to}");
        to
    }

    /// A customer anchored `days` ago on `plan`, written to the store (so its periods are past).
    async fn customer_since(&self, id: &str, name: &str, plan: &str, days: i64) {
        let t = Utc::now() - Duration::days(days);
        let at = Utc.timestamp_opt(t.timestamp(), 0).unwrap();
        let store = &self.server.state().store;
        store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: id.into(),
                email: Some(format!("{id}@example.com")),
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

    async fn usage(&self, customer: &str, events: &[(&str, &str, &str)]) {
        let now = self.server.state().clock.now().to_rfc3339();
        let events: Vec<Value> = events
            .iter()
            .map(|(id, metric, value)| {
                json!({"id": id, "customer": customer, "metric": metric, "value": value,
                       "timestamp": now})
            })
            .collect();
        let (s, b) = self.post("/v1/events", json!({ "events": events })).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // Rollups are written in the background on SQLite: wait until the API sees them.
        for _ in 0..100 {
            let (_, u) = self.get(&format!("/v1/customers/{customer}/usage")).await;
            if u["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["used"] != "0")
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn expired(p: &Page) {
    assert_eq!(p.status, StatusCode::GONE, "{}", p.body);
    assert!(p.body.contains(EXPIRED), "{}", p.body);
}

/// The text of the element with `id="…"` up to its first `<`, after its opening tag.
fn text_of<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

/// A `data-…="…"` value inside the element with `id`.
fn data_of<'a>(body: &'a str, id: &str, attr: &str) -> &'a str {
    let at = body.find(&format!("id=\"{id}\"")).unwrap();
    let rest = &body[at..];
    let key = format!("{attr}=\"");
    let s = rest.find(&key).unwrap() + key.len();
    let e = rest[s..].find('"').unwrap() + s;
    &rest[s..e]
}

/// A link opens the customer's page once; the page shows the plan, usage, upcoming invoice and
/// credits exactly as `GET /v1/customers/{id}/billing` and `/credits` give them, money in the
/// session's locale, with the security headers.
async fn a_link_opens_the_page_with_the_apis_figures(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("acme", "Acme GmbH", "pro", 1).await;
    // Pro includes 300 compute hours and 150 EUR of API spend: 250 h is 83.33 % (warning),
    // 149 EUR is 99.33 % (critical).
    app.usage(
        "acme",
        &[("e1", "compute_hours", "250"), ("e2", "api_spend", "149")],
    )
    .await;
    let (s, b) = app
        .post(
            "/v1/customers/acme/credits/grants",
            json!({"amount": "1234.5", "reason": "welcome", "idempotency_key": "g1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, link) = app
        .mint(
            "acme",
            json!({"locale": "de", "return_url": "https://app.example.com/settings"}),
        )
        .await;
    let path = app.open(&link).await;
    // The link works once.
    expired(&app.page(&link).await);

    let p = app.page(&path).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        p.headers["content-security-policy"],
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    assert_eq!(p.headers["referrer-policy"], "no-referrer");
    assert_eq!(p.headers["cache-control"], "no-store");
    assert!(p.body.contains("<html lang=\"de\">"));

    let (s, api) = app.get("/v1/customers/acme/billing").await;
    assert_eq!(s, StatusCode::OK, "{api}");
    assert_eq!(text_of(&p.body, "plan-name"), "Pro");
    assert_eq!(text_of(&p.body, "status"), "active");
    for m in api["usage"]["metrics"].as_array().unwrap() {
        let id = format!("meter-{}", m["metric"].as_str().unwrap());
        assert_eq!(
            data_of(&p.body, &id, "data-used"),
            m["used"].as_str().unwrap()
        );
    }
    assert_eq!(data_of(&p.body, "meter-compute_hours", "data-used"), "250");
    assert_eq!(data_of(&p.body, "meter-api_spend", "data-used"), "149");
    assert!(p
        .body
        .contains(r#"<div class="meter warn" id="meter-compute_hours""#));
    assert!(p
        .body
        .contains(r#"<div class="meter crit" id="meter-api_spend""#));
    assert!(p
        .body
        .contains(r#"<progress id="progress-compute_hours" max="100" value="83.33""#));
    assert!(p.body.contains("83,33 %"), "percent in de");
    // Upcoming invoice: 199 EUR base, nothing beyond the included quantities yet.
    assert_eq!(api["upcoming_invoice"]["total"], 19900);
    assert_eq!(text_of(&p.body, "upcoming-total"), "199,00\u{a0}€");
    // Credits: the API's balance, grouped for de.
    let (_, credits) = app.get("/v1/customers/acme/credits").await;
    assert_eq!(credits["balance"], "1234.5");
    assert_eq!(data_of(&p.body, "credit-balance", "data-balance"), "1234.5");
    assert_eq!(text_of(&p.body, "credit-balance"), "1.234,5");
    assert!(
        p.body.contains("welcome"),
        "the ledger shows the grant's reason"
    );
    assert!(p
        .body
        .contains(r#"href="https://app.example.com/settings" target="_top" id="back""#));

    // The stylesheet is embedded and allowed by the policy ('self').
    let css = app.page("/assets/tally.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert!(css.body.contains("prefers-color-scheme: dark"));
    let weight = p.body.len() + css.body.len();
    assert!(weight < 100 * 1024, "page weight {weight} bytes");
    println!(
        "billing page weight: {} B html + {} B css",
        p.body.len(),
        css.body.len()
    );
    app.server.shutdown().await.unwrap();
}

/// Forged, malformed, used, expired and revoked links, and sessions past their idle or absolute
/// limit, all answer the same "link expired" page.
async fn links_and_sessions_expire(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("acme", "Acme", "pro", 1).await;
    let clock = &app.server.state().clock;

    expired(
        &app.page(&format!("/billing/start/{}", "ab".repeat(32)))
            .await,
    );
    expired(&app.page("/billing/start/not-a-code").await);
    expired(&app.page(&format!("/billing/s/{}", "cd".repeat(32))).await);
    expired(&app.page("/billing/s/x").await);

    // Unused for 15 minutes.
    let (_, link) = app.mint("acme", json!({})).await;
    clock.advance(Duration::minutes(15) + Duration::seconds(1));
    expired(&app.page(&link).await);

    // Revoked before use, and after.
    let (id, link) = app.mint("acme", json!({})).await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/page-sessions/{id}")))
        .bearer_auth(common::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expired(&app.page(&link).await);
    let (id, link) = app.mint("acme", json!({})).await;
    let path = app.open(&link).await;
    assert_eq!(app.page(&path).await.status, StatusCode::OK);
    let (s, b) = app
        .send(
            Method::DELETE,
            &format!("/v1/page-sessions/{id}"),
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    expired(&app.page(&path).await);
    let (s, b) = app
        .send(
            Method::DELETE,
            &format!("/v1/page-sessions/{id}"),
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "page_session_not_found");

    // Idle: 59 minutes between requests keep it alive; 61 end it.
    let (_, link) = app.mint("acme", json!({})).await;
    let path = app.open(&link).await;
    clock.advance(Duration::minutes(59));
    assert_eq!(app.page(&path).await.status, StatusCode::OK);
    clock.advance(Duration::minutes(61));
    expired(&app.page(&path).await);

    // Absolute: used every 50 minutes, it still ends 12 hours after it started.
    let (_, link) = app.mint("acme", json!({})).await;
    let path = app.open(&link).await;
    for _ in 0..14 {
        clock.advance(Duration::minutes(50));
        assert_eq!(app.page(&path).await.status, StatusCode::OK);
    }
    // 14 × 50 min = 11 h 40 min; 30 more minutes pass the 12 hours.
    clock.advance(Duration::minutes(30));
    expired(&app.page(&path).await);

    // The audit log has the mints and revocations.
    let (_, audit) = app.get("/v1/audit?customer=acme").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .filter(|a| a.starts_with("page_session."))
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "page_session.created")
            .count(),
        5
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "page_session.revoked")
            .count(),
        2
    );
    app.server.shutdown().await.unwrap();
}

/// A session sees its own customer only: another customer's invoice is 404 with it, a key limited
/// to one customer cannot mint or revoke for another, and the page names nothing of the other.
async fn a_session_sees_only_its_customer(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("a", "Alpha Ltd", "starter", 40).await;
    app.customer_since("b", "Beta Inc", "pro", 40).await;
    let state = app.server.state();
    // The server's own first closer run may race this one: together they close each period once.
    closer::close_due(state, state.clock.now()).await.unwrap();
    let (_, inv_a) = app.get("/v1/customers/a/invoices").await;
    let (_, inv_b) = app.get("/v1/customers/b/invoices").await;
    assert_eq!(inv_a["data"].as_array().unwrap().len(), 1, "{inv_a}");
    assert_eq!(inv_b["data"].as_array().unwrap().len(), 1, "{inv_b}");
    let inv_a = inv_a["data"][0]["id"].as_str().unwrap().to_owned();
    let inv_b = inv_b["data"][0]["id"].as_str().unwrap().to_owned();

    let (_, link) = app.mint("a", json!({"locale": "en"})).await;
    let path = app.open(&link).await;
    let p = app.page(&path).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(text_of(&p.body, "plan-name"), "Starter");
    assert!(!p.body.contains("Beta") && !p.body.contains(&inv_b));
    let own = app.page(&format!("{path}/invoices/{inv_a}")).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(text_of(&own.body, "invoice-total"), "€99.00");
    assert!(p.body.contains(&format!("{path}/invoices/{inv_a}")));
    for other in [inv_b.as_str(), "b", "..%2F..%2Fb", "%00"] {
        let r = app.page(&format!("{path}/invoices/{other}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{other}: {}", r.body);
        assert!(!r.body.contains("Beta"));
    }

    // Keys limited to customer a.
    let (_, a_key) = keys::create(
        &*state.store,
        "a",
        Scope::App,
        Some("a"),
        None,
        state.clock.now(),
    )
    .await
    .unwrap();
    let (b_session, _) = app.mint("b", json!({})).await;
    let r = app
        .http
        .post(app.url("/v1/customers/b/page-sessions"))
        .bearer_auth(&a_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .http
        .delete(app.url(&format!("/v1/page-sessions/{b_session}")))
        .bearer_auth(&a_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .http
        .post(app.url("/v1/customers/a/page-sessions"))
        .bearer_auth(&a_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.server.shutdown().await.unwrap();
}

/// Bad bodies are refused with documented codes.
async fn minting_checks_its_input(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("acme", "Acme", "pro", 1).await;
    for (body, status, code) in [
        (json!({"locale": "fr"}), 422, "invalid_locale"),
        (
            json!({"return_url": "javascript:alert(1)"}),
            422,
            "invalid_return_url",
        ),
        (
            json!({"return_url": "https://x.example/\"><b>"}),
            422,
            "invalid_return_url",
        ),
        (json!({"colour": "red"}), 400, "malformed_json"),
    ] {
        let (s, b) = app.post("/v1/customers/acme/page-sessions", body).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str().unwrap()),
            (status, code),
            "{b}"
        );
    }
    let (s, b) = app
        .post("/v1/customers/nobody/page-sessions", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "customer_not_found");
    app.server.shutdown().await.unwrap();
}

on_both_backends!(
    a_link_opens_the_page_with_the_apis_figures,
    links_and_sessions_expire,
    a_session_sees_only_its_customer,
    minting_checks_its_input,
    invoices_show_their_stripe_state_and_page,
    stripe_invoices_without_a_tally_invoice_are_listed,
);

/// `--frame-ancestors` goes into the policy; a value that would break the header is refused.
#[tokio::test]
async fn frame_ancestors_is_configurable() {
    let app =
        common::app_with(|c| c.frame_ancestors = "'self' https://app.example.com".into()).await;
    let p = app.page("/billing/start/x").await;
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with("frame-ancestors 'self' https://app.example.com"),
        "{csp}"
    );
    app.server.shutdown().await.unwrap();
    for bad in ["", "https://a; script-src *", "a,b"] {
        let mut c = tally_server::Config::new("sqlite://x.db").unwrap();
        c.frame_ancestors = bad.into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--frame-ancestors"), "{e}");
    }
}

/// Each closed invoice shows the state of its usage push to Stripe in words and, once Stripe
/// finalized it, a link to Stripe's hosted invoice page that opens in the top window (Stripe's
/// pages refuse frames); an invoice that does not go through Stripe shows neither.
async fn invoices_show_their_stripe_state_and_page(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("acme", "Acme GmbH", "pro", 190).await;
    let state = app.server.state();
    closer::close_due(state, state.clock.now()).await.unwrap();
    let invoices = state.store.list_invoices("acme").await.unwrap();
    assert_eq!(invoices.len(), 6);
    // Newest first: the page lists them in this order.
    let states = [
        ("pending", None),
        ("sent", Some("https://invoice.stripe.com/i/in_sent")),
        ("paid", Some("https://invoice.stripe.com/i/in_paid")),
        ("failed", Some("https://invoice.stripe.com/i/in_failed")),
        ("voided", Some("https://invoice.stripe.com/i/in_voided")),
    ];
    let now = state.clock.now();
    for (inv, (st, url)) in invoices.iter().zip(states) {
        let stripe_invoice = format!("in_{st}");
        state
            .store
            .insert_push(InvoicePush {
                invoice_id: inv.id.clone(),
                customer_id: "acme".into(),
                stripe_customer: "cus_acme".into(),
                stripe_subscription: Some("sub_acme".into()),
                period_start: inv.period_start,
                period_end: inv.period_end,
                currency: inv.currency.clone(),
                lines: 1,
                amount: 100,
                state: st.into(),
                renewal_invoice: (st != "pending").then(|| stripe_invoice.clone()),
                standalone_invoice: None,
                attempts: 1,
                last_error: None,
                request_id: None,
                next_attempt_at: now,
                created_at: now,
                updated_at: now,
                hosted_invoice_url: None,
            })
            .await
            .unwrap();
        if let Some(url) = url {
            assert_eq!(
                state
                    .store
                    .set_push_hosted_url(&stripe_invoice, url)
                    .await
                    .unwrap(),
                1
            );
        }
    }
    let (_, api) = app.get("/v1/customers/acme/invoices").await;
    assert_eq!(api["data"][2]["stripe"]["state"], "paid", "{api}");
    assert_eq!(
        api["data"][2]["stripe"]["hosted_invoice_url"],
        "https://invoice.stripe.com/i/in_paid"
    );
    assert_eq!(api["data"][5].get("stripe"), None, "{api}");

    let (_, link) = app.mint("acme", json!({})).await;
    let path = app.open(&link).await;
    let p = app.page(&path).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let words = ["Pending", "Sent", "Paid", "Payment failed", "Voided"];
    for (n, ((_, url), word)) in states.iter().zip(words).enumerate() {
        let row = n + 1;
        assert_eq!(text_of(&p.body, &format!("stripe-state-{row}")), word);
        let link = format!("id=\"stripe-invoice-{row}\"");
        match url {
            Some(url) => {
                let at = p.body.find(&link).unwrap_or_else(|| panic!("{link}"));
                let tag_start = p.body[..at].rfind("<a ").unwrap();
                let tag = &p.body[tag_start..at + p.body[at..].find('>').unwrap()];
                assert!(tag.contains(&format!("href=\"{url}\"")), "{tag}");
                assert!(tag.contains("target=\"_top\""), "{tag}");
            }
            None => assert!(!p.body.contains(&link), "{}", p.body),
        }
    }
    // The oldest invoice has no push: no state, no link.
    assert!(!p.body.contains("stripe-state-6"));
    assert_eq!(p.body.matches("View in Stripe").count(), 4);
}

/// The rows of the page's invoice table, each cell's text (tags stripped) joined by " | ".
fn invoice_rows(body: &str) -> Vec<String> {
    let section = &body[body.find("id=\"invoices\"").unwrap()..];
    let tbody = &section[section.find("<tbody>").unwrap()..section.find("</tbody>").unwrap()];
    tbody
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let mut text = String::new();
                    let mut in_tag = true; // the cell starts inside its `<td …>` tag
                    for ch in cell.chars() {
                        match ch {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

fn en_date(t: DateTime<Utc>) -> String {
    t.format("%b %-d, %Y").to_string()
}

/// A mirrored Stripe invoice of `customer`, finalized at `at` unless a draft.
fn mirrored(id: &str, customer: &str, status: &str, at: DateTime<Utc>) -> StripeInvoiceRecord {
    StripeInvoiceRecord {
        id: id.into(),
        customer_id: customer.into(),
        stripe_customer: Some(format!("cus_{customer}")),
        stripe_subscription: Some(format!("sub_{customer}")),
        status: status.into(),
        collection_method: Some("charge_automatically".into()),
        currency: "eur".into(),
        total: 3000,
        amount_paid: if status == "paid" { 3000 } else { 0 },
        amount_remaining: if status == "paid" { 0 } else { 3000 },
        finalized_at: (status != "draft").then_some(at),
        due_date: None,
        period_start: Some(at),
        period_end: Some(at),
        billing_reason: Some("subscription_cycle".into()),
        hosted_invoice_url: (status != "draft")
            .then(|| format!("https://invoice.stripe.com/i/{id}")),
        number: None,
        attempt_count: 0,
        next_payment_attempt: None,
        created: at,
        event_created: at.timestamp(),
        updated_at: at,
    }
}

/// Stripe invoices no Tally invoice went onto (renewals, prorations) are listed with Tally's
/// invoices, newest first, with their state and Stripe's hosted page; a Stripe invoice that
/// carries a Tally invoice's lines is that invoice's row, not another; drafts and other
/// customers' invoices are not listed.
async fn stripe_invoices_without_a_tally_invoice_are_listed(db: Db) {
    let Some(app) = app(db).await else { return };
    app.customer_since("acme", "Acme GmbH", "pro", 70).await;
    let state = app.server.state();
    closer::close_due(state, state.clock.now()).await.unwrap();
    let tally = state.store.list_invoices("acme").await.unwrap();
    assert_eq!(tally.len(), 2);
    let (newer, older) = (&tally[0], &tally[1]);
    let now = state.clock.now();
    // The newer Tally invoice's lines went onto Stripe's renewal `in_usage`.
    state
        .store
        .insert_push(InvoicePush {
            invoice_id: newer.id.clone(),
            customer_id: "acme".into(),
            stripe_customer: "cus_acme".into(),
            stripe_subscription: Some("sub_acme".into()),
            period_start: newer.period_start,
            period_end: newer.period_end,
            currency: newer.currency.clone(),
            lines: 1,
            amount: 100,
            state: "paid".into(),
            renewal_invoice: Some("in_usage".into()),
            standalone_invoice: None,
            attempts: 1,
            last_error: None,
            request_id: None,
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            hosted_invoice_url: None,
        })
        .await
        .unwrap();
    let renew_at = now - Duration::days(2);
    let prorate_at = newer.period_end - Duration::days(5);
    let failed_at = older.period_end - Duration::days(3);
    let mut renew = mirrored("in_renew", "acme", "paid", renew_at);
    renew.number = Some("ACME-0003".into());
    let mut prorate = mirrored("in_prorate", "acme", "open", prorate_at);
    prorate.billing_reason = Some("subscription_update".into());
    prorate.total = 1250;
    prorate.amount_remaining = 1250;
    prorate.number = Some("ACME-0002".into());
    let mut failed = mirrored("in_failed", "acme", "open", failed_at);
    failed.attempt_count = 1;
    failed.hosted_invoice_url = None;
    for row in [
        mirrored("in_usage", "acme", "paid", newer.period_end),
        renew,
        prorate,
        failed,
        mirrored("in_draft", "acme", "draft", now),
        mirrored("in_other", "zeta", "paid", now),
    ] {
        assert!(state.store.put_stripe_invoice(row).await.unwrap());
    }
    // An older event of `in_renew` does not move it back.
    let mut stale = mirrored("in_renew", "acme", "open", renew_at);
    stale.event_created -= 60;
    assert!(!state.store.put_stripe_invoice(stale).await.unwrap());

    let (_, link) = app.mint("acme", json!({})).await;
    let path = app.open(&link).await;
    let p = app.page(&path).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let money = |minor: i64| {
        tally_core::money_display::format_money(
            minor,
            tally_core::money::Currency::parse(&newer.currency).unwrap(),
            tally_core::money_display::Locale::En,
        )
    };
    let period = |i: &tally_store::StoredInvoice| {
        format!(
            "{} – {}",
            en_date(i.period_start),
            en_date(i.period_end - Duration::milliseconds(1))
        )
    };
    assert_eq!(
        invoice_rows(&p.body),
        [
            format!(
                "{} | Renewal · ACME-0003 | {} | Paid View in Stripe",
                en_date(renew_at),
                money(3000)
            ),
            format!("{} | Pro | {} | Paid", period(newer), money(newer.total)),
            format!(
                "{} | Plan change (proration) · ACME-0002 | {} | Open View in Stripe",
                en_date(prorate_at),
                money(1250)
            ),
            format!("{} | Pro | {} | ", period(older), money(older.total)),
            format!(
                "{} | Renewal | {} | Payment failed",
                en_date(failed_at),
                money(3000)
            ),
        ]
    );
    assert!(p
        .body
        .contains("href=\"https://invoice.stripe.com/i/in_renew\" target=\"_top\""));
}
