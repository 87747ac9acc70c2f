//! The console's dashboard, webhooks view and subscription timeline through the real server on
//! both backends: redirects without a session, the dashboard's figures equal to
//! `GET /v1/metrics/business`, its SVG charts, a failed Stripe event with its reason and a
//! CSRF-protected replay (audited), and a customer's timeline from the subscription history.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use tally_core::money::Currency;
use tally_core::money_display::{format_money, Locale};
use tally_store::{AuditFilter, NewInboxEvent};

#[macro_use]
mod common;

use common::{app_on, App, Db, KEY};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn send(r: reqwest::RequestBuilder) -> (StatusCode, Option<String>, String) {
    let r = r.send().await.unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.text().await.unwrap())
}

fn input(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    let rest = &body[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The text of the table row with `id`.
fn row(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row {id} in {body}"));
    let rest = &body[at..];
    rest[..rest.find("</tr>").unwrap()].to_owned()
}

impl App {
    async fn cookie(&self) -> String {
        let r = client()
            .post(self.url("/admin/sign-in"))
            .form(&[("key", KEY)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }

    async fn page(&self, cookie: &str, path: &str) -> (StatusCode, Option<String>, String) {
        send(client().get(self.url(path)).header(COOKIE, cookie)).await
    }
}

/// Audit rows of replays of `evt_broken`.
async fn replays(app: &App) -> usize {
    let page = app
        .server
        .state()
        .store
        .audit_log(AuditFilter {
            customer_id: None,
            actor: None,
            since: None,
            before_seq: None,
            limit: 100,
        })
        .await
        .unwrap();
    page.records
        .iter()
        .filter(|r| {
            r.action == "stripe_event.replayed" && r.target.id.as_deref() == Some("evt_broken")
        })
        .count()
}

async fn console_pages(db: Db) {
    let Some(app) = app_on(db, |_| {}).await else {
        return;
    };
    // Without a session every new page and action redirects to sign-in.
    for path in ["/admin/dashboard", "/admin/webhooks"] {
        let (s, loc, _) = send(client().get(app.url(path))).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(loc.as_deref(), Some("/admin/sign-in"), "{path}");
    }
    let (s, loc, _) = send(
        client()
            .post(app.url("/admin/webhooks/evt_x/replay"))
            .form(&[("csrf", "x")]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some("/admin/sign-in"));

    // acme on Pro monthly (199.00); beta on Starter monthly, then Pro yearly (1,990.00 / 12).
    for (id, plan, interval) in [
        ("acme", "pro", "month"),
        ("beta", "starter", "month"),
        ("beta", "pro", "year"),
    ] {
        let (s, b) = app.put(&format!("/v1/customers/{id}"), json!({})).await;
        assert!(s.is_success(), "{b}");
        let (s, b) = app
            .put(
                &format!("/v1/customers/{id}/subscription"),
                json!({"plan": plan, "interval": interval}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, api) = app.get("/v1/metrics/business").await;
    assert_eq!(s, StatusCode::OK, "{api}");
    let eur = &api["currencies"][0];
    assert_eq!(eur["currency"], "eur");
    assert_eq!(eur["committed_mrr"], 19900 + 16583);
    assert_eq!(eur["mrr_movements"]["new"], 19900 + 9900);
    assert_eq!(eur["mrr_movements"]["expansion"], 16583 - 9900);

    let cookie = app.cookie().await;
    let (s, _, page) = app.page(&cookie, "/admin/dashboard").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let money = |v: i64| format_money(v, Currency::parse("eur").unwrap(), Locale::En);
    assert!(
        row(&page, "eur-committed-mrr").contains(&money(36483)),
        "{page}"
    );
    assert!(row(&page, "eur-arpu").contains(&money(18242)), "{page}"); // 36,483 / 2
    assert!(row(&page, "eur-subscribers").contains(">2<"), "{page}");
    assert!(row(&page, "eur-ltv").contains("n/a"), "{page}");
    // Two server-drawn charts: 12 monthly revenue bars, and the movements' waterfall.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2, "{page}");
    assert_eq!(
        page.matches("<rect class=\"bar\"").count(),
        12 + 2,
        "{page}"
    );
    assert_eq!(page.matches("<rect class=\"up\"").count(), 2, "{page}"); // new, expansion
    assert_eq!(page.matches("<rect class=\"zero\"").count(), 3, "{page}");
    assert!(!page.contains("<script"), "{page}");
    let month = api["month"].as_str().unwrap();
    assert!(page.contains(&format!("<span id=\"month\">{month}</span>")));
    let (s, _, _) = app.page(&cookie, "/admin/dashboard?month=2026-13").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The timeline of beta: two changes, newest first.
    let (s, _, page) = app.page(&cookie, "/admin/customers/beta").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page.matches("<tr class=\"change\">").count(), 2, "{page}");
    let first = page.find("pro (year)").unwrap();
    let second = page.find("starter (month)").unwrap();
    assert!(first < second, "{page}");

    // A Stripe event the worker cannot read is parked with its reason.
    let state = app.server.state();
    state
        .store
        .inbox_insert(NewInboxEvent {
            event_id: "evt_broken".into(),
            event_type: "customer.subscription.updated".into(),
            object_id: Some("sub_broken".into()),
            created: 1,
            body: "{\"not\": \"an event\"}".into(),
            source: "webhook".into(),
            received_at: state.clock.now(),
        })
        .await
        .unwrap();
    let start = Instant::now();
    let parked = loop {
        let e = state.store.inbox_get("evt_broken").await.unwrap().unwrap();
        if e.status == "parked" {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = parked.last_error.clone().unwrap();
    let (s, _, page) = app.page(&cookie, "/admin/webhooks").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        page.matches("<tr class=\"failed-event\">").count(),
        1,
        "{page}"
    );
    assert!(page.contains("evt_broken"), "{page}");
    let escaped = reason
        .replace('&', "&amp;")
        .replace('"', "&#34;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;");
    assert!(
        page.contains(&escaped) || page.contains(&reason),
        "{reason} in {page}"
    );
    assert!(page.contains("<strong id=\"pending\">0</strong>"), "{page}");
    let csrf = input(&page, "csrf");

    // Replay: refused without the CSRF token or from another site; then queued and audited.
    let replay = app.url("/admin/webhooks/evt_broken/replay");
    let (s, _, _) = send(
        client()
            .post(&replay)
            .header(COOKIE, &cookie)
            .form(&[("csrf", "wrong")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(
        client()
            .post(&replay)
            .header(COOKIE, &cookie)
            .header("Origin", "https://evil.example")
            .form(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(replays(&app).await, 0);
    let before = state.store.inbox_get("evt_broken").await.unwrap().unwrap();
    let (s, loc, _) = send(
        client()
            .post(&replay)
            .header(COOKIE, &cookie)
            .form(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some("/admin/webhooks?done=replayed"));
    assert_eq!(replays(&app).await, 1);
    // Processed again (and parked again: its body is still unreadable).
    let start = Instant::now();
    loop {
        let e = state.store.inbox_get("evt_broken").await.unwrap().unwrap();
        if e.attempts > before.attempts && e.status == "parked" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _, _) = send(
        client()
            .post(app.url("/admin/webhooks/evt_unknown/replay"))
            .header(COOKIE, &cookie)
            .form(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.server.shutdown().await.unwrap();
}

on_both_backends!(console_pages);
