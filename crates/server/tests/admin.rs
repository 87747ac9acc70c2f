//! The admin console through the real server on both backends: sign-in with an admin key only,
//! the session cookie's attributes, redirects without a session, search and filters, a manual
//! credit adjustment (audited with the admin's key, one entry on double submit), CSRF and
//! cross-site refusals, opening a customer's billing page, sign-out.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use tally_server::service::keys::{self, Caller, Scope};

#[macro_use]
mod common;

use common::{app_on, App, Db, KEY};

/// A browser without cookies of its own: the test carries the session cookie.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.unwrap();
    Answer {
        status: r.status(),
        location: r
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned()),
        set_cookie: r
            .headers()
            .get(SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body: r.text().await.unwrap(),
    }
}

/// The `value="…"` of the input named `name`.
fn input(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    let rest = &body[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

impl App {
    async fn sign_in(&self, key: &str) -> Answer {
        answer(
            client()
                .post(self.url("/admin/sign-in"))
                .form(&[("key", key)]),
        )
        .await
    }

    /// Signs in with the admin key; returns the `Cookie` header value.
    async fn admin_cookie(&self) -> String {
        let a = self.sign_in(KEY).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location.as_deref(), Some("/admin/customers"));
        a.set_cookie.unwrap().split(';').next().unwrap().to_owned()
    }

    async fn admin_get(&self, cookie: &str, path: &str) -> Answer {
        answer(client().get(self.url(path)).header(COOKIE, cookie)).await
    }

    async fn admin_post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        answer(
            client()
                .post(self.url(path))
                .header(COOKIE, cookie)
                .form(form),
        )
        .await
    }

    async fn seed(&self) {
        for (id, email, name, plan) in [
            ("acme", "billing@acme.test", "Acme GmbH", "pro"),
            ("beta", "ops@beta.test", "Beta Inc", "starter"),
            ("gamma", "hi@gamma.test", "Gamma", "starter"),
        ] {
            let (s, b) = self
                .put(
                    &format!("/v1/customers/{id}"),
                    json!({"email": email, "name": name}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            let (s, b) = self
                .put(
                    &format!("/v1/customers/{id}/subscription"),
                    json!({"plan": plan}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        // Past due comes from Stripe: written to the store as the Stripe mirror would.
        let state = self.server.state();
        state
            .store
            .put_subscription(tally_store::SubscriptionUpsert {
                customer_id: "gamma".into(),
                plan: "starter".into(),
                interval: "month".into(),
                status: "past_due".into(),
                source: "stripe".into(),
                now: state.clock.now(),
            })
            .await
            .unwrap();
    }
}

fn to_sign_in(a: &Answer) {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location.as_deref(), Some("/admin/sign-in"));
}

/// Only an admin key signs in; the cookie is HttpOnly, SameSite=Strict, scoped to /admin; pages
/// without a session (or with a signed-out one) redirect to sign-in.
async fn sign_in_takes_an_admin_key(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    app.seed().await;
    for path in ["/admin", "/admin/customers", "/admin/customers/acme"] {
        to_sign_in(&answer(client().get(app.url(path))).await);
        to_sign_in(&app.admin_get("tally_admin=forged", path).await);
    }
    to_sign_in(
        &answer(
            client()
                .post(app.url("/admin/customers/acme/credits"))
                .form(&[("amount", "5"), ("reason", "x")]),
        )
        .await,
    );
    let form = answer(client().get(app.url("/admin/sign-in"))).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="key""#));

    let bad = app.sign_in("not-a-key").await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.set_cookie.is_none());
    let state = app.server.state();
    let (_, app_key) = keys::create(
        &*state.store,
        "app",
        Scope::App,
        None,
        None,
        state.clock.now(),
    )
    .await
    .unwrap();
    let not_admin = app.sign_in(&app_key).await;
    assert_eq!(not_admin.status, StatusCode::UNAUTHORIZED);
    assert!(not_admin.body.contains("needs an admin key"));

    let a = app.sign_in(KEY).await;
    let cookie = a.set_cookie.unwrap();
    assert!(cookie.starts_with("tally_admin="));
    assert!(
        cookie.ends_with("; Path=/admin; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let list = app.admin_get(&cookie, "/admin/customers").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.matches(r#"<tr class="customer">"#).count(), 3);

    // Sign out: needs the CSRF token; afterwards the cookie no longer works.
    let csrf = input(&list.body, "csrf");
    let refused = app.admin_post(&cookie, "/admin/sign-out", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = app
        .admin_post(&cookie, "/admin/sign-out", &[("csrf", &csrf)])
        .await;
    to_sign_in(&out);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    to_sign_in(&app.admin_get(&cookie, "/admin/customers").await);
    app.server.shutdown().await.unwrap();
}

/// Search by id, email and name; filters by plan and status (past due).
async fn customers_search_and_filters(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    app.seed().await;
    let cookie = app.admin_cookie().await;
    for (query, want) in [
        ("q=acme", vec!["acme"]),
        ("q=OPS%40beta", vec!["beta"]),
        ("q=gamma", vec!["gamma"]),
        ("q=inc", vec!["beta"]),
        ("plan=starter", vec!["beta", "gamma"]),
        ("status=past_due", vec!["gamma"]),
        ("plan=pro&status=past_due", vec![]),
        ("q=", vec!["acme", "beta", "gamma"]),
    ] {
        let a = app
            .admin_get(&cookie, &format!("/admin/customers?{query}"))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let got: Vec<&str> = a
            .body
            .split(r#"<tr class="customer"><td><a href="/admin/customers/"#)
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert_eq!(got, want, "{query}");
    }
    app.server.shutdown().await.unwrap();
}

/// A manual adjustment goes through the audited credits path with the admin's key id; the same
/// form submitted twice writes one entry; CSRF and cross-site posts change nothing.
async fn credit_adjustment_is_audited_and_idempotent(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    app.seed().await;
    let cookie = app.admin_cookie().await;
    let page = app.admin_get(&cookie, "/admin/customers/acme").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = input(&page.body, "csrf");
    let nonce = input(&page.body, "nonce");
    let path = "/admin/customers/acme/credits";
    let form = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("amount", "25"),
        ("reason", "goodwill"),
    ];

    // Refused: no CSRF token, a wrong one, another site's Origin, a cross-site fetch.
    let no_csrf = app.admin_post(&cookie, path, &form[1..]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let mut wrong = form;
    wrong[0].1 = "00";
    assert_eq!(
        app.admin_post(&cookie, path, &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    let cross = answer(
        client()
            .post(app.url(path))
            .header(COOKIE, &cookie)
            .header("origin", "http://evil.example")
            .form(&form),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let cross = answer(
        client()
            .post(app.url(path))
            .header(COOKIE, &cookie)
            .header("sec-fetch-site", "cross-site")
            .form(&form),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let (_, credits) = app.get("/v1/customers/acme/credits").await;
    assert_eq!(credits["balance"], "0", "nothing changed: {credits}");

    // Accepted, twice: one entry.
    for _ in 0..2 {
        let ok = answer(
            client()
                .post(app.url(path))
                .header(COOKIE, &cookie)
                .header("origin", &app.base)
                .form(&form),
        )
        .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
        assert_eq!(
            ok.location.as_deref(),
            Some("/admin/customers/acme?done=adjusted")
        );
    }
    let (_, credits) = app.get("/v1/customers/acme/credits").await;
    assert_eq!(credits["balance"], "25", "{credits}");
    let admin_id = Caller::env(KEY).key_id;
    let (_, audit) = app.get("/v1/audit?customer=acme").await;
    let grants: Vec<_> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("credit"))
        .collect();
    assert_eq!(grants.len(), 1, "{audit}");
    assert_eq!(grants[0]["actor"], admin_id.as_str());
    assert_eq!(grants[0]["idempotency_key"], format!("admin-{nonce}"));
    let after = app
        .admin_get(&cookie, "/admin/customers/acme?done=adjusted")
        .await;
    assert!(after.body.contains("Adjustment recorded."));
    assert!(after
        .body
        .contains(r#"<span id="credit-balance">25</span>"#));
    assert!(after.body.contains("goodwill"));

    // A refused adjustment says why and writes nothing.
    let fresh = input(&after.body, "nonce");
    let bad = app
        .admin_post(
            &cookie,
            path,
            &[
                ("csrf", &csrf),
                ("nonce", &fresh),
                ("amount", "abc"),
                ("reason", "x"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let (_, credits) = app.get("/v1/customers/acme/credits").await;
    assert_eq!(credits["balance"], "25");
    app.server.shutdown().await.unwrap();
}

/// "Open this customer's billing page" mints a link (audited with the admin's key) that opens
/// that customer's page.
async fn admin_opens_a_customers_billing_page(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    app.seed().await;
    let cookie = app.admin_cookie().await;
    let page = app.admin_get(&cookie, "/admin/customers/beta").await;
    let csrf = input(&page.body, "csrf");
    let a = app
        .admin_post(
            &cookie,
            "/admin/customers/beta/billing-page",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let link = a.location.unwrap();
    assert!(
        link.starts_with(&format!("{}/billing/start/", app.base)),
        "{link}"
    );
    let start = answer(client().get(&link)).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let billing = answer(client().get(app.url(&start.location.unwrap()))).await;
    assert_eq!(billing.status, StatusCode::OK);
    assert!(billing.body.contains(r#"id="plan-name">Starter<"#));
    let (_, audit) = app.get("/v1/audit?customer=beta").await;
    let row = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "page_session.created")
        .unwrap()
        .clone();
    assert_eq!(row["actor"], Caller::env(KEY).key_id.as_str());
    let missing = app.admin_get(&cookie, "/admin/customers/nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    app.server.shutdown().await.unwrap();
}

on_both_backends!(
    sign_in_takes_an_admin_key,
    customers_search_and_filters,
    credit_adjustment_is_audited_and_idempotent,
    admin_opens_a_customers_billing_page,
);

/// Behind https (`--public-url https://…`) the cookie is also `Secure`.
#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let app = common::app_with(|c| c.public_url = Some("https://billing.example.com".into())).await;
    let a = app.sign_in(KEY).await;
    assert!(a
        .set_cookie
        .unwrap()
        .ends_with("; Path=/admin; HttpOnly; SameSite=Strict; Secure"));
    app.server.shutdown().await.unwrap();
}
